"""Record on the workflow run what reproducing its model needs (names in :mod:`core.lineage`).

What the steps' cache keys already hold (code hash, settings hash, input fingerprint, package
versions per step) says *whether* something changed; this record says *what it was*, so that
``python -m registry reproduce`` can rebuild the tree and the settings and re-run them:

* the commit and whether the tree was dirty; when it was, ``git diff`` against the commit as
  an artifact (tracked changes, plus new untracked code files: a user's new step file counts);
* the resolved settings as an artifact (every section, as validated; a password in a URL is
  replaced by ``***``);
* the Python and package versions (the cache key's :data:`~projects.pipeline.MODEL_PACKAGES`
  plus what loads and stores the model);
* the data source, and the SHA-256 of a data file;
* the user's own files the settings name (``path/to/file.py`` or ``file.py:function``), by
  content hash.

Recorded when the workflow run starts, so a run that fails still says what it ran.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from core import lineage
from core.usercode import is_reference, split_reference

_logger = logging.getLogger(__name__)

#: Beyond the cache key's packages: what pickles, stores and reads the model and the data.
EXTRA_PACKAGES = ("cloudpickle", "skops", "joblib", "threadpoolctl", "pyarrow")
#: Untracked files that count as code (a new step file), and the largest one recorded.
CODE_SUFFIXES = (".py", ".yaml", ".yml", ".toml", ".cfg", ".json", ".sql")
MAX_UNTRACKED_BYTES = 1 << 20
_USER_FILE = re.compile(r"^(?P<path>[^\s:]+\.py)(?::[A-Za-z_][A-Za-z0-9_.]*)?$")
_GIT_TIMEOUT = 30
#: The checkout this code runs from: the code that trains is what reproduction checks out.
CODE_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class GitState:
    """The checkout a run came from: commit, whether it was dirty, and the diff."""

    commit: str
    dirty: bool
    diff: bytes = b""
    root: Path | None = None


def _git(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=_GIT_TIMEOUT,
                          env={**os.environ, **(env or {})})


_DIFF = ["diff", "--binary", "--no-color", "--no-ext-diff", "HEAD"]


def git_state(project_dir: Path) -> GitState:
    """The commit of ``project_dir``'s checkout and its diff (``unknown`` outside git).

    The diff is taken through a temporary copy of the index, so the user's staging area is
    never touched: new untracked code files are added there as intent-to-add and show up as
    new files in ``git diff --binary HEAD``. Without such files the plain diff is the same,
    so it is taken alongside the listing of untracked files (one git process less to wait for
    on every workflow start).
    """
    try:
        # one process for the checkout's root, its index file and the commit
        where = _git(["rev-parse", "--path-format=absolute", "--show-toplevel", "--git-path",
                      "index", "HEAD"], project_dir)
        lines = where.stdout.decode().splitlines()
        if where.returncode != 0 or len(lines) != 3:
            return GitState(os.environ.get("MLFLOW_GIT_COMMIT", "unknown"), False)
        root, index_file, commit = Path(lines[0]), Path(lines[1]), lines[2].strip()
        plain = subprocess.Popen(["git", *_DIFF], cwd=root, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)
        try:
            untracked = [
                name for name in _git(["ls-files", "--others", "--exclude-standard", "-z"],
                                      root).stdout.decode(errors="surrogateescape").split("\0")
                if name.endswith(CODE_SUFFIXES) and (root / name).is_file()
                and (root / name).stat().st_size <= MAX_UNTRACKED_BYTES
            ]
            out, err = plain.communicate(timeout=_GIT_TIMEOUT)
        finally:
            if plain.poll() is None:
                plain.kill()
                plain.wait()
        diff = subprocess.CompletedProcess(plain.args, plain.returncode, out, err)
        if untracked and index_file.is_file():
            with tempfile.TemporaryDirectory(prefix="mlops-index-") as tmp:
                copy = Path(tmp) / "index"
                copy.write_bytes(index_file.read_bytes())
                env = {"GIT_INDEX_FILE": str(copy)}
                _git(["add", "--intent-to-add", "--", *untracked], root, env)
                diff = _git(_DIFF, root, env)
        if diff.returncode != 0:
            _logger.warning("git diff failed: %s", diff.stderr.decode()[:300])
        return GitState(commit, bool(diff.stdout), diff.stdout, root)
    except (OSError, subprocess.SubprocessError) as exc:
        _logger.warning("git state unknown: %s", exc)
        return GitState("unknown", False)


def redact_url(text: str) -> str:
    """``text`` with the password of a URL replaced by ``***`` (settings are stored as is)."""
    try:
        parts = urlsplit(text)
    except ValueError:
        return text
    if not parts.password:
        return text
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _redacted(node):
    if isinstance(node, dict):
        return {k: _redacted(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_redacted(v) for v in node]
    return redact_url(node) if isinstance(node, str) and "://" in node else node


def user_files(settings_dump: dict, project_dir: Path, root: Path | None) -> dict[str, str]:
    """The files the settings name (``x.py``, or ``x.py:function``) by SHA-256.

    A ``file.py:function`` reference resolves as :mod:`core.usercode` resolves it for the run.

    Paths inside the checkout are given relative to its root (the diff carries their changes);
    others stay absolute (reproduction checks they still hash the same).
    """
    found: dict[str, str] = {}

    def walk(node):
        if isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list | tuple):
            for value in node:
                walk(value)
        elif isinstance(node, str) and (m := _USER_FILE.match(node.strip())):
            path = ((split_reference(node, project_dir)[0]) if is_reference(node)
                    else (project_dir / m["path"]).resolve())
            if path.is_file():
                shown = str(path)
                if root is not None and path.is_relative_to(root.resolve()):
                    shown = str(path.relative_to(root.resolve()))
                found[shown] = lineage.file_sha256(path)

    walk(settings_dump)
    return dict(sorted(found.items()))


def data_record(settings) -> dict:
    """The data source: as set, its kind and location, and a data file's SHA-256."""
    data = settings.data
    out: dict = {"source": redact_url(data.source), "kind": None, "location": None}
    try:
        from projects.ingest import parse_source

        source = parse_source(data.source, data.query, data.table)
    except Exception as exc:  # noqa: BLE001 - ingest reports a bad source with its own line
        _logger.debug("data source not recorded: %s", exc)
        return out
    out["kind"] = source.kind
    out["location"] = redact_url(source.location)
    if source.kind == "file":
        out["file_sha256"] = lineage.file_sha256(source.location)
    return out


def installed_packages() -> dict[str, str]:
    """Installed versions of the packages that shape, store and load the model."""
    from importlib.metadata import PackageNotFoundError, version

    from projects.pipeline import package_versions

    out = dict(package_versions())
    for name in EXTRA_PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def build_record(settings, project_dir: Path) -> tuple[dict, dict, bytes]:
    """The record, the resolved settings and the diff (empty when the tree is clean)."""
    state = git_state(CODE_ROOT)
    if state.commit == "unknown":  # the code is installed, not checked out: the project's
        state = git_state(project_dir)
    dumped = _redacted(settings.model_dump(mode="json"))
    record = {
        "format": lineage.RECORD_FORMAT,
        "commit": state.commit,
        "dirty": state.dirty,
        "diff": lineage.DIFF_ARTIFACT if state.dirty else None,
        "diff_sha256": lineage.bytes_sha256(state.diff) if state.dirty else None,
        "python": platform.python_version(),
        "packages": installed_packages(),
        "machine": lineage.machine(),
        "data": data_record(settings),
        "user_files": user_files(dumped, project_dir, state.root),
        "settings": lineage.SETTINGS_ARTIFACT,
        "profile": settings.profile,
    }
    return record, dumped, state.diff


def record_tags(record: dict) -> dict[str, str]:
    """The workflow run's tags from the record: the commit and whether the tree was dirty."""
    return {lineage.GIT_COMMIT_TAG: record["commit"],
            lineage.GIT_DIRTY_TAG: str(record["dirty"]).lower()}


def log_record(client, run_id: str, record: dict, dumped: dict, diff: bytes) -> None:
    """Write the record, the settings and the diff (if any) on the workflow run.

    The tags (:func:`record_tags`) are written with the run's start, in the same write.
    """
    client.log_dict(run_id, record, lineage.RECORD_ARTIFACT)
    client.log_dict(run_id, dumped, lineage.SETTINGS_ARTIFACT)
    if diff:
        with tempfile.TemporaryDirectory(prefix="mlops-diff-") as tmp:
            path = Path(tmp) / Path(lineage.DIFF_ARTIFACT).name
            path.write_bytes(diff)
            client.log_artifact(run_id, str(path), lineage.ARTIFACT_DIR)
    _logger.debug("lineage recorded: %s", json.dumps({k: record[k] for k in ("commit", "dirty")}))
