"""What a workflow run records for lineage and reproduction: the names both sides read.

The workflow (``projects``) writes these tags and artifacts on its workflow run; the registry's
``lineage`` and ``reproduce`` read them. The two packages may not import each other, so the
names, the record's layout and the one digest function live here.

On the workflow run:

* tags :data:`GIT_COMMIT_TAG` (the commit, no ``+dirty``) and :data:`GIT_DIRTY_TAG`
  (``true``/``false``: uncommitted changes to tracked files, or untracked files the workflow
  runs);
* artifact :data:`RECORD_ARTIFACT`: a JSON :class:`record <RECORD_KEYS>` (commit, dirty, the diff's
  digest, Python and package versions, data source and file digest, user files by content hash);
* artifact :data:`SETTINGS_ARTIFACT`: the resolved settings (every section, as validated);
* artifact :data:`DIFF_ARTIFACT`, only when the tree was dirty: ``git diff`` against the
  commit (binary-safe), the untracked files the workflow runs included (modules the steps
  import, files the settings name), so ``git apply`` rebuilds the tree; a file holding a
  secret is left out of it and named in the record's ``diff_withheld``.

Step runs keep what the step cache already records (``mlops.cache.code``, ``.settings``,
``.input``, ``.packages``) and the workflow run names them (``mlops.<step>_run``,
``mlops.<step>_reused``): reproduction compares those parts to name what changed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from core import names
from core.names import step_reused_tag, step_run_tag  # noqa: F401  (callers import them here)

#: The commit the workflow ran from (40 hex digits), or ``unknown`` outside a git checkout.
GIT_COMMIT_TAG = names.GIT_COMMIT_TAG
#: ``true`` when the tree differed from the commit (the diff is then an artifact).
GIT_DIRTY_TAG = names.GIT_DIRTY_TAG
#: The data's digest (ingest's content digest of the frame), on ingest runs and versions.
DATA_DIGEST_TAG = names.DATA_DIGEST_TAG
#: Folder of the lineage artifacts on the workflow run.
ARTIFACT_DIR = "lineage"
RECORD_ARTIFACT = f"{ARTIFACT_DIR}/record.json"
SETTINGS_ARTIFACT = f"{ARTIFACT_DIR}/settings.json"
DIFF_ARTIFACT = f"{ARTIFACT_DIR}/code.diff"
#: The record's schema version (bumped when a key changes meaning).
RECORD_FORMAT = 1
#: Keys of the record: ``format``, ``commit``, ``dirty``, ``diff`` (artifact path or None),
#: ``diff_sha256``, ``diff_withheld`` ({path: [kind of secret]}: files left out of the diff),
#: ``python``, ``packages`` ({name: version}), ``machine`` ({``platform``, ``machine``,
#: ``cpus``, ``libraries``: the BLAS/OpenMP libraries with version, CPU architecture and
#: threads}), ``data`` ({``source``, ``kind``, ``location``, ``file_sha256``
#: (files only)}), ``user_files`` ({path: sha256}), ``settings`` (artifact path), ``profile``.
RECORD_KEYS = ("format", "commit", "dirty", "diff", "diff_sha256", "diff_withheld", "python",
               "packages", "machine", "data", "user_files", "settings", "profile")
#: Steps whose runs the workflow run names (``mlops.<step>_run``), in order.
STEP_RUN_TAG = names.STEP_RUN_TAG
STEP_REUSED_TAG = names.STEP_REUSED_TAG
#: The parts of a step's cache key, tagged on each computed step run.
CACHE_PART_TAG = names.CACHE_PART_TAG
CACHE_PARTS = ("code", "settings", "input", "packages")
#: Tag on a reproduction's run: the version it reproduces (``NAME/VERSION``).
REPRODUCES_TAG = names.REPRODUCES_TAG


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes (hex): the data file's and user files' digest.

    Read in 1 MiB chunks, so a large data file is hashed without being held in memory.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def bytes_sha256(payload: bytes) -> str:
    """The SHA-256 of ``payload`` (hex)."""
    return hashlib.sha256(payload).hexdigest()


# What decides the native libraries and their thread counts, besides the installed packages
_MACHINE_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "OPENBLAS_CORETYPE", "MKL_CBWR")
_MACHINE_PACKAGES = ("numpy", "scipy", "scikit-learn", "threadpoolctl")


def machine() -> dict:
    """This machine's CPU and native math libraries: what can change a float's last bits.

    BLAS kernels (chosen per CPU architecture) and thread counts decide the order of sums in
    the linear models; a re-run elsewhere that differs only in the last bits is explained here.

    Probing them means importing scipy and scikit-learn (~2 s), which a re-run that reuses
    every step never does otherwise: the answer is kept in the user's cache folder, keyed by
    everything that decides it (platform, CPUs, interpreter, package versions, thread
    variables), so it is probed again whenever any of those changes.
    """
    from core import usercache

    name = f"machine-{_machine_key()}.json"
    cached = usercache.read_json(name)
    if isinstance(cached, dict):
        return cached
    out = _probe_machine()
    usercache.write_json(name, out)  # a read-only home: probed every time
    return out


def _machine_key() -> str:
    import json
    import os
    import platform
    import sys
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    parts = {"platform": platform.platform(), "machine": platform.machine(),
             "cpus": os.cpu_count(), "python": sys.executable, "version": sys.version,
             # OpenMP and OpenBLAS size their pools by the CPUs this process may run on
             "usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
             "packages": {name: installed(name) for name in _MACHINE_PACKAGES},
             "env": {name: os.environ.get(name) for name in _MACHINE_ENV}}
    return bytes_sha256(json.dumps(parts, sort_keys=True).encode())[:24]


def _probe_machine() -> dict:
    import os
    import platform

    out = {"platform": platform.platform(), "machine": platform.machine(),
           "cpus": os.cpu_count(), "libraries": []}
    try:
        import numpy  # noqa: F401 - loaded so that their native libraries are listed
        import scipy.linalg  # noqa: F401
        import sklearn.utils  # noqa: F401
        from threadpoolctl import threadpool_info

        out["libraries"] = sorted(
            ({k: lib.get(k) for k in ("internal_api", "version", "architecture",
                                      "threading_layer", "num_threads")}
             for lib in threadpool_info()), key=lambda lib: repr(sorted(lib.items())))
    except Exception:  # noqa: BLE001 - the record is still useful without them
        out["libraries"] = []
    return out


def dataset_schema(dataset) -> dict[str, str]:
    """``{column: type}`` of an MLflow dataset's schema (``mlflow_colspec``).

    The workflow's card and the registry's lineage read the ingest run's dataset with it.
    """
    import json

    try:
        spec = json.loads(dataset.schema or "{}").get("mlflow_colspec") or []
    except ValueError:
        return {}
    return {c.get("name", f"[{i}]"): c.get("type", "?") + ("" if c.get("required", True)
                                                          else " (optional)")
            for i, c in enumerate(spec)}
