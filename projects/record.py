"""Record on the workflow run what reproducing its model needs (names in :mod:`core.lineage`).

What the steps' cache keys already hold (code hash, settings hash, input fingerprint, package
versions per step) says *whether* something changed; this record says *what it was*, so that
``python -m registry reproduce`` can rebuild the tree and the settings and re-run them:

* the commit and whether the tree was dirty; when it was, ``git diff`` against the commit as
  an artifact: tracked changes, plus the untracked files the workflow runs (a new module the
  steps import, a step file or settings file the settings name) and nothing else untracked.
  A file whose hunk holds a secret (as detect-secrets sees it) is left out of the artifact, with
  one warning naming it; the record lists it under ``diff_withheld``;
* the resolved settings as an artifact (every section, as validated; a password in a URL is
  replaced by ``***``);
* the Python and package versions (the cache key's :data:`~projects.cache_keys.MODEL_PACKAGES`
  plus what loads and stores the model);
* the data source, and the SHA-256 of a data file;
* the user's own files the settings name (``path/to/file.py`` or ``file.py:function``), by
  content hash.

Recorded when the workflow run starts, so a run that fails still says what it ran.
"""

from __future__ import annotations

import codecs
import json
import logging
import os
import platform
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from core import lineage
from core.redaction import redact_url
from core.usercode import is_reference, split_reference

_logger = logging.getLogger(__name__)

#: Beyond the cache key's packages: what pickles, stores and reads the model and the data.
EXTRA_PACKAGES = ("cloudpickle", "skops", "joblib", "threadpoolctl", "pyarrow")
#: A file's section of a ``git diff`` starts with this line (never inside a section: hunk lines
#: start with ' ', '+', '-' or '\\', and a binary patch's base85 lines hold no space).
_FILE_HEADER = b"diff --git "
_SECTION = re.compile(rb"^diff --git ", re.MULTILINE)
#: What a false positive's line carries so that detect-secrets lets it through.
ALLOWLIST_PRAGMA = "pragma: allowlist secret"
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


# One section per path (no rename pairs) with the a/ b/ prefixes `git apply` expects, whatever
# the user's diff.renames / diff.noprefix settings say.
_DIFF = ["diff", "--binary", "--no-color", "--no-ext-diff", "--no-renames", "--src-prefix=a/",
         "--dst-prefix=b/", "HEAD"]


def git_state(project_dir: Path,
              wanted: Callable[[], Iterable[Path]] | Iterable[Path] = ()) -> GitState:
    """The commit of ``project_dir``'s checkout and its diff (``unknown`` outside git).

    The one git state of the project: the workflow run's tags ``mlops.git_commit`` and
    ``mlops.git_dirty`` (:func:`record_tags`) come from it, and the register step copies those
    two onto the version.

    The diff holds the changes of tracked files, and of the untracked files only those in
    ``wanted`` (the files the workflow runs: see :func:`wanted_files`); any other untracked
    file (notes, credentials, data) stays out of it and does not make the tree dirty.
    ``wanted`` may be a callable: it is called only when there are untracked files.

    The diff is taken through a temporary copy of the index, so the user's staging area is
    never touched: the wanted untracked files are added there as intent-to-add and show up as
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
            untracked = [name for name in _git(
                ["ls-files", "--others", "--exclude-standard", "-z"], root,
            ).stdout.decode(errors="surrogateescape").split("\0") if name]
            if untracked:
                keep = _relative_names(wanted() if callable(wanted) else wanted, root)
                untracked = [name for name in untracked if name in keep]
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


def _relative_names(paths: Iterable[Path], root: Path) -> set[str]:
    """``paths`` inside ``root`` as ``git ls-files`` names them (relative, ``/``-separated)."""
    real = root.resolve()
    out = set()
    for path in paths:
        path = Path(path).resolve()
        if path.is_relative_to(real) and path.is_file():
            out.add(path.relative_to(real).as_posix())
    return out


def wanted_files(settings, project_dir: Path, code_root: Path = CODE_ROOT,
                 settings_file: str | Path | None = None) -> list[Path]:
    """The files the workflow runs, so the diff may carry them even when they are untracked.

    The modules of this repository the steps import (the same import closure the steps'
    cache keys hash, :func:`projects.cache_keys.step_code_files`), the user's files the settings
    name (:func:`user_files`), and the settings files read: ``base.yaml``, the profile's file
    and the user's ``--settings`` file.
    """
    from core.settings import SETTINGS_FILE_ENV, conf_dir
    from projects import STEPS
    from projects.cache_keys import step_code_files

    out: list[Path] = []
    if (code_root / "projects" / "workflow.py").is_file():
        for step in STEPS:
            out.extend(step_code_files(step, code_root).values())
    dumped = settings.model_dump(mode="json")
    out.extend(Path(name) if Path(name).is_absolute() else project_dir / name
               for name in user_files(dumped, project_dir, None))
    conf = conf_dir()
    out += [conf / "base.yaml", conf / "profiles" / f"{settings.profile}.yaml"]
    named = settings_file or os.environ.get(SETTINGS_FILE_ENV)
    if named:
        out.append(Path(named).expanduser())
    return out


def _split_diff(diff: bytes) -> list[tuple[str, bytes]]:
    """``git diff`` output as ``(path, section)`` per file, in order: joined, they are the diff."""
    starts = [m.start() for m in _SECTION.finditer(diff)]
    out = []
    for begin, end in zip(starts, [*starts[1:], len(diff)], strict=True):
        section = diff[begin:end]
        header = section.split(b"\n", 1)[0][len(_FILE_HEADER):]
        # without renames both sides name one path: a/P b/P, or C-quoted "a/P" "b/P"
        side = header[: (len(header) - 1) // 2]
        if side.startswith(b'"') and side.endswith(b'"'):
            side = codecs.escape_decode(side[1:-1])[0]
        out.append((side[2:].decode(errors="surrogateescape"), section))
    return out


def _scanned_lines(section: bytes) -> bytes:
    """What a file's section shows of it: every hunk line (added, removed, context), unprefixed.

    Removed and context lines count too: a deleted credentials file is all ``-`` lines.
    """
    lines = section.splitlines(keepends=True)
    first = next((i for i, line in enumerate(lines) if line.startswith(b"@@")), len(lines))
    return b"".join(line[1:] for line in lines[first:] if line[:1] in (b" ", b"+", b"-"))


def find_secrets(diff: bytes) -> dict[str, list[str]]:
    """The files of ``diff`` whose hunks hold a secret, with the kinds detect-secrets found.

    Each file's hunk lines are scanned under the file's own name (detect-secrets reads YAML,
    INI and code each its own way) with its default plugins and filters, so a line ending in
    ``pragma: allowlist secret`` passes. Binary patches are not scanned (detect-secrets reads
    text only). Imported here, and only for a diff: most runs start from a clean tree.

    Raises:
        WorkflowError: detect-secrets is not installed (one line).
    """
    try:
        from detect_secrets import SecretsCollection
        from detect_secrets.settings import default_settings
    except ImportError:  # an environment made before the dependency: never upload unscanned
        from projects.errors import WorkflowError

        raise WorkflowError("detect-secrets is not installed (make venv, or pip install -r "
                            "requirements.lock): the lineage diff is never uploaded unscanned"
                            ) from None

    found: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory(prefix="mlops-scan-") as tmp, default_settings():
        for i, (path, section) in enumerate(_split_diff(diff)):
            text = _scanned_lines(section)
            if not text:
                continue
            copy = Path(tmp) / str(i) / Path(path).name
            copy.parent.mkdir()
            copy.write_bytes(text)
            secrets = SecretsCollection()
            secrets.scan_file(str(copy))
            kinds = sorted({secret.type for _name, secret in secrets})
            if kinds:
                found[path] = kinds
    return found


def withhold_secrets(diff: bytes) -> tuple[bytes, dict[str, list[str]]]:
    """``diff`` without the sections of files that hold a secret, and those files' secrets.

    Each file left out is logged as one warning naming it and the kinds of secret.
    """
    if not diff:
        return diff, {}
    found = find_secrets(diff)
    if not found:
        return diff, {}
    for path, kinds in found.items():
        _logger.warning("%s leaves out %s: it holds a secret (%s); a false positive passes "
                        "with '%s' on its line", lineage.DIFF_ARTIFACT, path, ", ".join(kinds),
                        ALLOWLIST_PRAGMA)
    kept = b"".join(section for path, section in _split_diff(diff) if path not in found)
    return kept, found


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

    from projects.cache_keys import package_versions

    out = dict(package_versions())
    for name in EXTRA_PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def build_record(settings, project_dir: Path,
                 settings_file: str | Path | None = None) -> tuple[dict, dict, bytes]:
    """The record, the resolved settings and the diff to upload (empty when there is none).

    Args:
        settings: the resolved settings.
        project_dir: where the workflow runs (relative user files start there).
        settings_file: the user's ``--settings`` file, if any (else ``$MLOPS_SETTINGS_FILE``).
    """
    def wanted(code_root: Path):
        return lambda: wanted_files(settings, project_dir, code_root, settings_file)

    state = git_state(CODE_ROOT, wanted(CODE_ROOT))
    if state.commit == "unknown":  # the code is installed, not checked out: the project's
        state = git_state(project_dir, wanted(project_dir))
    diff, withheld = withhold_secrets(state.diff)
    dumped = _redacted(settings.model_dump(mode="json"))
    record = {
        "format": lineage.RECORD_FORMAT,
        "commit": state.commit,
        # dirty even when every changed file was withheld: the commit alone is not the code
        "dirty": state.dirty,
        "diff": lineage.DIFF_ARTIFACT if diff else None,
        "diff_sha256": lineage.bytes_sha256(diff) if diff else None,
        "diff_withheld": withheld,
        "python": platform.python_version(),
        "packages": installed_packages(),
        "machine": lineage.machine(),
        "data": data_record(settings),
        "user_files": user_files(dumped, project_dir, state.root),
        "settings": lineage.SETTINGS_ARTIFACT,
        "profile": settings.profile,
    }
    return record, dumped, diff


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
