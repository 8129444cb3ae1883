"""THE trust boundary: a model version's code runs in a child process that holds no credentials.

A registered version carries code its author wrote: a custom ``PythonModel``, a models-from-code
file, pickled objects whose classes run on load, the step files a re-run executes. The release
manager's tools (``registry validate``, ``promote``'s gates, ``reproduce``, the monitor and its
retrain trigger) run that code, and the release manager's process holds what the author lacks:
a tracking password or token that may move ``champion``, AWS keys, the project's secrets.

So the code never runs there. The parent (trusted: this project's code) downloads the model
files and the data; a child Python process loads and runs them with an environment built from
an allow-list (:data:`KEPT_VARIABLES`): no ``MLFLOW_TRACKING_*`` credentials, no ``AWS_*``, no
``MLOPS_*`` secrets, no tokens of any kind; ``HOME`` is a fresh empty folder (MLflow's and
boto3's credential files are found through it); the tracking and registry URIs point at a
throwaway SQLite store in the child's own folder, which goes with it; AWS's credential files
point at nothing and its instance-metadata lookup is off. Only files and JSON cross back:
predictions as Parquet, never a pickle.

What it does not do (the README says so): it is not an operating-system sandbox. The child runs
as the same user, so a file that user can read (a credentials file at an absolute path, a
``.netrc``) stays readable, and the network is open (a cloud instance role is reachable). Run
the release manager's tools as a user, container or machine that keeps no credential files.

The child's job (:func:`predict_models`, run as ``python -m core.sandbox REQUEST ANSWER``):
load each model folder and predict on Parquet files, writing labels and class probabilities to
Parquet. Callers that need a longer-lived child (a workflow re-run) take
:func:`child_environment` and start it themselves.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from core.errors import MlopsError

_logger = logging.getLogger(__name__)

#: The only variables of the parent's environment a child keeps (with those starting with
#: :data:`KEPT_PREFIXES`): where programs are, the locale, the terminal, the CA bundles. All
#: else is dropped, whatever its name: an allow-list cannot miss a credential named a new way.
KEPT_VARIABLES = (
    "PATH", "LANG", "LANGUAGE", "TZ", "TERM", "COLUMNS", "LINES", "VIRTUAL_ENV",
    "LD_LIBRARY_PATH", "JAVA_HOME", "SYSTEMROOT", "TMPDIR", "TEMP", "TMP", "PYTHONHASHSEED",
    "MLFLOW_LOGGING_LEVEL", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
)
#: The locale, and the numerical libraries' settings (threads, kernels, cache sizes): they
#: decide the last bits of a model's numbers, so a re-run without them would differ.
KEPT_PREFIXES = ("LC_", "OPENBLAS_", "OMP_", "MKL_", "KMP_", "GOTO", "BLIS_", "NPY_")
#: Seconds a prediction child may take before it is stopped.
PREDICT_TIMEOUT_SECONDS = 1800
#: The child's throwaway tracking store, inside its own folder.
_STORE = "sandbox-mlflow.db"


class SandboxError(MlopsError):
    """The child failed as a whole (it could not start, or died); the message is one line."""


def throwaway_store(workdir: str | Path) -> str:
    """The tracking URI of the child's own store in ``workdir`` (SQLite; gone with the folder)."""
    return f"sqlite:///{Path(workdir).resolve() / _STORE}"


def prepared_store(workdir: str | Path) -> str:
    """:func:`throwaway_store` of ``workdir`` with its schema in place; its URI.

    A new SQLite store spends seconds in MLflow's migrations, so a migrated empty one is kept
    in the user's cache (:mod:`core.usercache`, one per MLflow version) and copied; a cache
    that cannot be read or written means migrating every time.
    """
    import shutil

    import mlflow

    from core import usercache

    target = Path(workdir) / _STORE
    uri = throwaway_store(workdir)
    if target.exists():
        return uri
    target.parent.mkdir(parents=True, exist_ok=True)
    cached = usercache.cache_dir() / f"sandbox-store-mlflow-{mlflow.__version__}.db"
    try:
        shutil.copyfile(cached, target)
        return uri
    except OSError:
        target.unlink(missing_ok=True)
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    # creates and migrates it; the Default experiment's files in the child's folder, never in
    # the working directory (a relative ./mlruns would resolve against it)
    SqlAlchemyStore(uri, (Path(workdir).resolve() / "artifacts").as_uri()).engine.dispose()
    tmp = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(target, tmp)
        tmp.replace(cached)  # atomically: a concurrent reader copies a whole store or none
    except OSError:
        tmp.unlink(missing_ok=True)
    return uri


def child_environment(workdir: str | Path, extra: Mapping[str, str] | None = None,
                      parent: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a child that runs a version's code.

    Args:
        workdir: the child's own folder (its ``HOME`` and tracking store go there).
        extra: variables the caller sets on purpose (never a credential: the caller's choice
            is visible in its code).
        parent: the environment to start from (default ``os.environ``).

    Returns:
        The allow-listed variables of ``parent`` plus the child's own ``HOME``, tracking and
        registry URI (:func:`throwaway_store`), the AWS lookups turned off, and ``extra``.
    """
    parent = os.environ if parent is None else parent
    env = {k: v for k, v in parent.items()
           if k in KEPT_VARIABLES or k.startswith(KEPT_PREFIXES)}
    home = Path(workdir) / "home"
    home.mkdir(parents=True, exist_ok=True)
    store = throwaway_store(workdir)
    env.update({
        "HOME": str(home),
        "USERPROFILE": str(home),
        "MLFLOW_TRACKING_URI": store,
        "MLFLOW_REGISTRY_URI": store,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
        "PYTHONNOUSERSITE": "1",
        "MLFLOW_LOGGING_LEVEL": parent.get("MLFLOW_LOGGING_LEVEL", "ERROR"),
    })
    env.update(extra or {})
    return env


def _project_root() -> str:
    return str(Path(__file__).resolve().parents[1])


def run_module(module: str, request: dict, workdir: str | Path,
               timeout: float = PREDICT_TIMEOUT_SECONDS) -> dict:
    """Run ``python -m MODULE REQUEST ANSWER`` in a child without credentials; its answer.

    The request and the answer are JSON files in ``workdir``; the child runs there, with
    :func:`child_environment` and this project on its ``PYTHONPATH``.

    Raises:
        SandboxError: the child exited non-zero, wrote no answer, or ran out of time.
    """
    workdir = Path(workdir)
    request_file, answer_file = workdir / "request.json", workdir / "answer.json"
    request_file.write_text(json.dumps(request))
    env = child_environment(workdir, {"PYTHONPATH": _project_root()})
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    cmd = [sys.executable, "-m", module, str(request_file), str(answer_file)]
    _logger.info("sandbox: %s in %s", module, workdir)
    try:
        proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SandboxError(f"the model's process ran longer than {timeout:.0f} s") from None
    if proc.returncode != 0 or not answer_file.is_file():
        lines = [x for x in proc.stderr.splitlines() if x.strip()]
        _logger.info("sandbox stderr:\n%s", "\n".join(lines[-100:]))
        last = lines[-1] if lines else f"exit {proc.returncode}"
        raise SandboxError(f"the model's process failed: {last}")
    return json.loads(answer_file.read_text())


# ------------------------------------------------------------------ the job: load and predict
def predict_models(models: Mapping[str, str | Path], jobs: list[dict],
                   workdir: str | Path | None = None) -> list[dict]:
    """Predict with model folders in a child process without credentials.

    Args:
        models: ``{key: local model folder}`` (the parent downloaded them).
        jobs: each ``{"model": key, "data": parquet path, "columns": [names] or None,
            "proba": bool}``: predict on the file's rows (only ``columns``, in that order,
            when given); ``proba``: also ``predict_proba`` when the model has it.
        workdir: the child's folder (default: a temporary one, removed after).

    Returns:
        One dict per job: ``{"error": one line or None, "labels": numpy array or None,
        "proba": numpy array or None, "classes": list or None}``. A model that fails to load
        or predict fails its jobs, not the call.

    Raises:
        SandboxError: the child failed as a whole.
    """
    import pandas as pd

    with tempfile.TemporaryDirectory(prefix="mlops-sandbox-") as tmp:
        where = Path(workdir or tmp)
        where.mkdir(parents=True, exist_ok=True)
        request = {"models": {k: str(Path(v).resolve()) for k, v in models.items()},
                   "jobs": [{**job, "data": str(Path(job["data"]).resolve()),
                             "out": str(where / f"predictions-{i}.parquet")}
                            for i, job in enumerate(jobs)]}
        answer = run_module("core.sandbox", request, where)
        try:  # the child ran the author's code: its answer is read as untrusted input
            return [_read_answer(job, said, pd)
                    for job, said in zip(request["jobs"], answer["jobs"], strict=True)]
        except (KeyError, TypeError, ValueError, AttributeError, OSError) as exc:
            raise SandboxError(f"the model's process answered what cannot be read: "
                               f"{_one_line(exc)}") from None


def _read_answer(job: dict, said: dict, pd) -> dict:
    if said.get("error"):
        return {"error": str(said["error"]), "labels": None, "proba": None, "classes": None}
    classes = said.get("classes")
    if classes is not None and not isinstance(classes, list):
        raise TypeError(f"classes is a {type(classes).__name__}, not a list")
    frame = pd.read_parquet(job["out"])
    proba_cols = [c for c in frame.columns if c.startswith("proba_")]
    label_cols = [c for c in frame.columns if c.startswith("label_")]
    return {
        "error": None,
        "labels": frame["label"].to_numpy() if "label" in frame.columns
        else frame[label_cols].to_numpy(),
        "proba": frame[proba_cols].to_numpy(dtype=float) if proba_cols else None,
        "classes": classes,
    }


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


def _load(path: str):
    """The model in ``path``: its scikit-learn object when it has that flavor, else pyfunc."""
    import mlflow
    from mlflow.models import Model

    if "sklearn" in Model.load(str(Path(path) / "MLmodel")).flavors:
        return mlflow.sklearn.load_model(path)
    return mlflow.pyfunc.load_model(path)


def _plain(values) -> list:
    import numpy as np

    return [v.item() if isinstance(v, np.generic) else v for v in list(values)]


def _child(argv: list[str]) -> int:
    """``python -m core.sandbox REQUEST ANSWER``: the child side of :func:`predict_models`."""
    import numpy as np
    import pandas as pd

    request = json.loads(Path(argv[0]).read_text())
    loaded: dict[str, object] = {}
    for key, path in request["models"].items():
        try:
            loaded[key] = _load(path)
        except Exception as exc:  # noqa: BLE001 - the author's code: any failure is a result
            loaded[key] = exc
    answers = []
    for job in request["jobs"]:
        model = loaded[job["model"]]
        if isinstance(model, Exception):
            answers.append({"error": _one_line(model)})
            continue
        try:
            X = pd.read_parquet(job["data"])
            if job.get("columns"):
                X = X[job["columns"]]
            labels = np.asarray(model.predict(X))
            if labels.ndim > 1:  # several outputs a row: one column each
                out = pd.DataFrame({f"label_{i}": labels[:, i] for i in range(labels.shape[1])})
            else:
                out = pd.DataFrame({"label": labels})
            classes = getattr(model, "classes_", None)
            if job.get("proba") and hasattr(model, "predict_proba"):
                proba = np.asarray(model.predict_proba(X), dtype=float)
                for i in range(proba.shape[1]):
                    out[f"proba_{i}"] = proba[:, i]
            out.to_parquet(job["out"])
            answers.append({"error": None,
                            "classes": _plain(classes) if classes is not None else None})
        except Exception as exc:  # noqa: BLE001 - the author's code: any failure is a result
            answers.append({"error": _one_line(exc)})
    Path(argv[1]).write_text(json.dumps({"jobs": answers}))
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
