"""Chain the steps as MLflow runs, with step caching (the Kedro ``pipeline.py`` of the project).

Every step is a nested child run of the workflow run, tagged ``mlops.step``. A computed step
carries ``mlops.cache_key``: a hash of everything its outputs depend on:

* its code: the source of every module of this repository (``projects``, ``core``) the step
  imports, found by walking the imports with :mod:`ast` from the step's module and from the
  step's method here, transitively, plus this file;
* its settings, as canonical JSON (mappings sorted, lists in order);
* its input: the data's fingerprint for ``ingest``, the key of the step whose outputs it reads
  after that (``register`` reads evaluate's metrics, so it follows ``evaluate``);
* the installed versions of the packages that shape the model (:data:`MODEL_PACKAGES`).

When a finished run with the same key exists in the experiment, the step is reused: the
workflow run's tags ``mlops.<step>_run`` (that run) and ``mlops.<step>_reused`` record it, and
its outputs are read from that run. The cache
is thus the tracking store: it serves a whole team on a shared server, and a new store starts
cold.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from core.runs import reap_dead_runs, run_with_status
from core.settings import Settings
from core.uris import run_uri, version_uri
from projects import STEPS
from projects.errors import WorkflowError
from projects.presentation import (
    EXPERIMENT_KIND_TAG,
    MODEL_TRAINING_KIND,
    candidate_run_name,
    data_name,
    failed_run_name,
    failure_note,
    model_name_for_data,
    version_description,
    workflow_run_name,
)

_logger = logging.getLogger(__name__)
_HERE = Path(__file__).resolve().parent
#: The repository's root: the packages whose code goes into the cache keys live under it.
REPO_ROOT = _HERE.parent
#: Packages of this repository whose modules a step's code hash covers.
PROJECT_PACKAGES = ("projects", "core")
#: Installed packages whose versions shape a model: part of every step's key.
MODEL_PACKAGES = ("scikit-learn", "numpy", "pandas", "scipy", "mlflow")
# Settings sections (dotted) each step's outputs depend on.
SETTINGS_KEYS = {
    "ingest": ("data.source", "data.query", "data.table", "data.target"),
    "validate": ("data", "clean"),
    "prepare": ("data.target", "data.task", "split", "clean.outliers", "clean.outlier_iqr"),
    "train": ("data.task", "data.target", "data.positive_class", "split.seed",
              "train.candidates", "metric", "clean", "features", "metrics"),
    "evaluate": ("data.task", "data.target", "metric", "register.model_name",
                 "register.champion_alias", "metrics"),
    "register": ("register", "metric", "metrics"),
}
# Settings that only say why a run was started: recorded with the alias moves, no output
# depends on them, so a retraining run still reuses unchanged steps.
SETTINGS_IGNORED = ("register.trigger", "register.trigger_reason")
CACHE_TAG = "mlops.cache_key"
STEP_TAG = "mlops.step"
PIP_PACKAGES = ("mlflow", "scikit-learn", "pandas", "numpy", "scipy", "cloudpickle", "skops")


def _digest(obj, length: int = 16) -> str:
    """Hash of canonical JSON: key order of mappings does not count, order of lists does."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _module_file(root: Path, module: str) -> Path | None:
    """The source file of ``module`` under ``root`` if it belongs to this repository."""
    parts = module.split(".")
    if parts[0] not in PROJECT_PACKAGES:
        return None
    base = root.joinpath(*parts)
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def _imported_names(node: ast.AST, module: str, is_package: bool,
                    skip_definitions: bool = False) -> set[str]:
    """Module names an AST imports (``from a import b`` gives ``a`` and ``a.b``).

    Imports inside functions count too (steps import lazily); with ``skip_definitions`` the
    bodies of functions and classes are skipped (what importing the module itself runs).
    """
    names: set[str] = set()
    todo = [node]
    while todo:
        current = todo.pop()
        for child in ast.iter_child_nodes(current):
            if skip_definitions and isinstance(
                    child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                continue
            if isinstance(child, ast.Import):
                names.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:  # relative: resolved against the importing package
                    package = module.split(".") if is_package else module.split(".")[:-1]
                    package = package[: len(package) - (child.level - 1)]
                    base = ".".join([*package, *([base] if base else [])])
                names.add(base)
                names.update(f"{base}.{alias.name}" for alias in child.names)
            todo.append(child)
    return names


def _closure(roots: set[str], root: Path) -> dict[str, Path]:
    """Every module of this repository that importing ``roots`` runs, with its file."""
    found: dict[str, Path] = {}
    todo = sorted(roots)
    while todo:
        module = todo.pop()
        if module in found:
            continue
        path = _module_file(root, module)
        if path is None:  # outside the repository, or an attribute (from a import name)
            continue
        if module == "projects.pipeline":
            # counted per step (its module level and the step's own method), never whole:
            # a helper importing it back must not pull every step's imports into each step
            continue
        found[module] = path
        parts = module.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parents run first
        todo.extend(_file_imports(module, path.name == "__init__.py", path.read_bytes()))
    return found


class _ImportSets:
    """The import sets of parsed files, kept in the user's cache folder between runs.

    Parsing every module of a step's closure with :mod:`ast` is most of the cost of computing
    the keys (~0.2 s of a re-run that reuses every step). An entry is keyed by the module, the
    file's SHA-256 and the digest of this file (which holds the parser): an edited module, or
    an edited parser, is parsed again. Only which files a step covers comes from here; the
    key still hashes every covered file's current bytes.
    """

    FILE = f"imports-py{sys.version_info[0]}{sys.version_info[1]}.json"
    #: Entries kept (the oldest go first): a few checkouts' worth of edits.
    LIMIT = 4000

    def __init__(self):
        self._sets: dict[str, list] | None = None
        self._parser = ""
        self._changed = False

    def _load(self) -> dict[str, list]:
        if self._sets is None:
            from core import usercache

            self._parser = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()
            stored = usercache.read_json(self.FILE)
            ok = (isinstance(stored, dict) and stored.get("parser") == self._parser
                  and isinstance(stored.get("sets"), dict))
            self._sets = stored["sets"] if ok else {}
        return self._sets

    def get(self, key: str, compute):
        """The stored value under ``key``, else ``compute()`` (stored on :meth:`save`)."""
        sets = self._load()
        value = sets.get(key)
        if value is None:
            value = sets[key] = compute()
            self._changed = True
        return value

    def save(self) -> None:
        """Write the new entries (atomically; a read-only home keeps them in memory only)."""
        if not self._changed:
            return
        from core import usercache

        sets = self._load()
        for old in list(sets)[: max(0, len(sets) - self.LIMIT)]:
            del sets[old]
        usercache.write_json(self.FILE, {"parser": self._parser, "sets": sets})
        self._changed = False


_IMPORT_SETS = _ImportSets()


@functools.lru_cache(maxsize=256)
def _file_imports(module: str, is_package: bool, source: bytes) -> frozenset[str]:
    # keyed on the source itself: an edited file is parsed again
    key = f"{module}|{int(is_package)}|{hashlib.sha256(source).hexdigest()}"
    return frozenset(_IMPORT_SETS.get(key, lambda: sorted(
        _imported_names(ast.parse(source), module, is_package))))


def step_code_files(step: str, root: Path | None = None) -> dict[str, Path]:
    """The source files a step's outputs depend on, by module name (computed, not listed).

    The step's module (``projects.<step>``), the imports of its method in :class:`Workflow`
    and of this module's shared code (module level and helpers), each followed transitively
    through the modules of this repository; plus this file itself.
    """
    root = Path(root) if root else REPO_ROOT
    pipeline = root / "projects" / "pipeline.py"
    files = _closure({f"projects.{step}", *_pipeline_imports(step, pipeline.read_bytes())}, root)
    files["projects.pipeline"] = pipeline
    _IMPORT_SETS.save()
    return dict(sorted(files.items()))


@functools.lru_cache(maxsize=64)
def _pipeline_imports(step: str, source: bytes) -> frozenset[str]:
    """What this module imports for ``step``: module level, the step's method, the helpers."""
    shared, by_step = _pipeline_import_map(source)
    return shared | by_step.get(step, frozenset())


@functools.lru_cache(maxsize=8)
def _pipeline_import_map(source: bytes) -> tuple[frozenset[str], dict[str, frozenset[str]]]:
    # parsed once per source, not once per step: a re-run computes six keys
    stored = _IMPORT_SETS.get(f"projects.pipeline#steps|{hashlib.sha256(source).hexdigest()}",
                              lambda: _parse_pipeline_imports(source))
    return (frozenset(stored["shared"]),
            {step: frozenset(names) for step, names in stored["steps"].items()})


def _parse_pipeline_imports(source: bytes) -> dict:
    tree = ast.parse(source)
    shared = _imported_names(tree, "projects.pipeline", False, skip_definitions=True)
    functions = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        functions += [n for n in cls.body if isinstance(n, ast.FunctionDef)]
    steps_reaching = _steps_reaching(functions)
    by_step: dict[str, set[str]] = {}
    for node in functions:
        # the step's own method, and the helpers only steps reach, are those steps'; every
        # other function's imports are shared (other steps' methods are theirs)
        names = _imported_names(node, "projects.pipeline", False)
        for step in steps_reaching.get(node.name) or ():
            by_step.setdefault(step, set()).update(names)
        if not steps_reaching.get(node.name):
            shared |= names
    return {"shared": sorted(shared), "steps": {k: sorted(v) for k, v in by_step.items()}}


def _steps_reaching(functions: list[ast.FunctionDef]) -> dict[str, set[str]]:
    """The steps that alone reach each function, through calls by name (``f()``, ``self.f()``).

    A step's method maps to itself; a helper reached only from step methods (the champion
    lookup is evaluate's) maps to those steps; a helper that anything else reaches (``run``,
    a function nothing here calls) maps to an empty set, and counts for every step.
    """
    calls: dict[str, set[str]] = {}
    for node in functions:
        called = calls.setdefault(node.name, set())
        for call in (c for c in ast.walk(node) if isinstance(c, ast.Call)):
            if isinstance(call.func, ast.Name):
                called.add(call.func.id)
            elif isinstance(call.func, ast.Attribute) and isinstance(call.func.value, ast.Name) \
                    and call.func.value.id == "self":
                called.add(call.func.attr)
    called_at_all = {name for caller, names in calls.items() for name in names - {caller}}
    roots = {name for name in calls if name in STEPS or name not in called_at_all}
    reached_from: dict[str, set[str]] = {name: set() for name in calls}
    for root in roots:
        todo, seen = [root], set()
        while todo:
            name = todo.pop()
            if name in seen or name not in calls or (name in STEPS and name != root):
                continue
            seen.add(name)
            reached_from[name].add(root)
            todo += calls[name]
    return {name: (roots_ if roots_ <= set(STEPS) else set())
            for name, roots_ in reached_from.items()}


def code_hash(step: str, root: Path | None = None) -> str:
    """Hash of the source of every repository module a step runs (see :func:`step_code_files`).

    Args:
        step: one of :data:`projects.STEPS`.
        root: the repository to read (default: the one this module lives in).
    """
    digest = hashlib.sha256()
    for module, path in step_code_files(step, root).items():
        digest.update(module.encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@functools.cache  # installed versions do not change under a process
def _installed_version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def package_versions() -> dict[str, str]:
    """Installed versions of :data:`MODEL_PACKAGES` (an upgrade re-runs every step)."""
    return {package: _installed_version(package) for package in MODEL_PACKAGES}


def settings_hash(settings: Settings, step: str) -> str:
    """Hash of the settings a step depends on, as canonical JSON.

    Mappings are hashed with sorted keys (reordering a grid or ``data.columns`` in a settings
    file keeps the key); lists keep their order (``train.candidates`` is tried in order).
    """
    dumped = settings.model_dump(mode="json")
    dumped["metric"] = settings.metric
    for dotted in SETTINGS_IGNORED:
        *parents, last = dotted.split(".")
        node = dumped
        for part in parents:
            node = node.get(part, {})
        node.pop(last, None)
    picked = {}
    for dotted in SETTINGS_KEYS[step]:
        node = dumped
        for part in dotted.split("."):
            node = node[part]
        picked[dotted] = node
    return _digest(picked)


def cache_parts(step: str, settings: Settings, upstream: str,
                root: Path | None = None) -> dict[str, str]:
    """What a step's cache key is made of (tagged ``mlops.cache.*``: why a step ran again).

    Args:
        step: one of :data:`projects.STEPS`.
        settings: the resolved settings.
        upstream: the step's input: the data's fingerprint, or the key of the step it reads.
        root: the repository whose code is hashed (default: this one).
    """
    parts = {
        "step": step,
        "code": code_hash(step, root),
        "settings": settings_hash(settings, step),
        "input": upstream,
        "packages": _digest(package_versions()),
    }
    refs = settings.user_code(step)
    if refs:  # the user's own files (features, estimators, metrics, loader), by content
        from core import usercode

        parts["user_code"] = usercode.digest(refs)
    return parts


def cache_key(step: str, settings: Settings, upstream: str, root: Path | None = None) -> str:
    """The cache key of a step: its code, its settings, its input and the model packages."""
    return _digest(cache_parts(step, settings, upstream, root), length=24)


def git_commit(cwd: Path | None = None) -> str:
    """The project's git commit (``+dirty`` when there are uncommitted changes), or unknown."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5
        )
        if head.returncode != 0:
            return os.environ.get("MLFLOW_GIT_COMMIT", "unknown")
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd, capture_output=True, text=True, timeout=5,
        ).stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def pinned_requirements() -> list[str]:
    """Exact versions of what the model needs at load time (no ~5 s inference subprocess)."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for pkg in PIP_PACKAGES:
        try:
            out.append(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:
            continue
    return out


def input_example(X, rows: int = 5):
    """Real training rows for the model's input example, one with missing values if any."""
    example = X.head(rows)
    gaps = X.isna().any(axis=1)
    if len(X) > rows and gaps.any() and not gaps.head(rows).any():
        example = X.head(rows - 1).copy()
        example.loc[gaps.idxmax()] = X.loc[gaps.idxmax()]
    return schema_frame(example)


def schema_frame(X):
    """``X`` with nullable pandas types as numpy ones (Int64 with gaps → float64)."""
    import pandas as pd

    changes = {}
    for name in X.columns:
        dtype = X[name].dtype
        if isinstance(dtype, pd.api.extensions.ExtensionDtype) and dtype.kind in "iuf":
            changes[name] = "float64" if X[name].isna().any() else dtype.numpy_dtype
        elif isinstance(dtype, pd.api.extensions.ExtensionDtype) and dtype.kind == "b":
            changes[name] = "object" if X[name].isna().any() else "bool"
        elif isinstance(dtype, pd.StringDtype):
            changes[name] = "object"
    return X.astype(changes) if changes else X


@dataclass
class StepOutcome:
    """What a step left behind: its run, its cache key, whether it was reused."""

    step: str
    run_id: str
    key: str
    reused: bool
    tags: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    #: the reused run's inputs (datasets), as the cache lookup returned them
    inputs: object | None = None


@dataclass
class WorkflowResult:
    """The outcome of a workflow run, for the CLI's summary."""

    run_id: str
    experiment_id: str
    steps: dict[str, StepOutcome]
    model_name: str | None = None
    model_version: str | None = None
    aliases: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    crowned: bool | None = None
    crown_reason: str | None = None
    #: "data source" (named after the data) or "register.model_name" (set)
    model_name_from: str | None = None


class Workflow:
    """Runs the steps up to ``until`` under one parent run, reusing cached steps."""

    def __init__(self, settings: Settings, client, s3_client_factory=None, project_dir=None,
                 settings_file=None):
        # the model's name decided once, before anything is recorded (the run's settings
        # artifact, which reproduction re-runs, holds the name used)
        self.model_name_from = "register.model_name"
        if not settings.register.model_name:
            from core.settings import DataSettings

            name = model_name_for_data(settings.data.source, settings.data.table,
                                       DataSettings.model_fields["source"].default)
            settings = settings.model_copy(update={"register": settings.register.model_copy(
                update={"model_name": name})})
            self.model_name_from = "data source"
        self.settings = settings
        self.client = client
        self._s3_factory = s3_client_factory
        self.project_dir = Path(project_dir or Path.cwd())
        self.settings_file = settings_file  # the user's --settings file: the diff may carry it
        self.frames: dict = {}
        self.model = None
        self.outcomes: dict[str, StepOutcome] = {}
        self.timings: dict[str, float] = {}
        self._tmp = tempfile.TemporaryDirectory(prefix="mlops-")
        self.experiment_id: str | None = None
        self.run_id: str | None = None
        # the champion evaluate compared against (its version), for register's compare-and-set
        self._champion_seen: str | None = None
        self._champion_is_this_model = False
        self._parts: dict[str, dict] = {}
        self._parent_params: dict[str, str] = {}
        self._step: str | None = None  # the step running (a failure names it)


    # ----------------------------------------------------------------- plumbing
    def _lookup(self, key: str):
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{CACHE_TAG}` = '{key}' and attributes.status = 'FINISHED'",
            max_results=1,
            order_by=["attributes.start_time DESC"],
        )
        return runs[0] if runs else None

    def _run_step(self, step: str, key: str, compute, valid=None) -> StepOutcome:
        import mlflow

        hit = self._lookup(key) if self.settings.cache else None
        if hit is not None and (valid is None or valid(hit)):
            # recorded on the workflow run (mlops.<step>_run / _reused, see _summarise), not
            # as an empty child run per step: a re-run costs no runs and the runs table
            # stays readable
            _logger.info(
                "%-8s reused: code, settings and input unchanged (run %s)", step, hit.info.run_id
            )
            outcome = StepOutcome(step, hit.info.run_id, key, True, dict(hit.data.tags),
                                  dict(hit.data.metrics), dict(hit.data.params), hit.inputs)
        else:
            start = time.perf_counter()
            with run_with_status(run_name=step, nested=True, tags={STEP_TAG: step}) as run:
                tags, metrics, params = compute(run.info.run_id) or ({}, {}, {})
                parts = {f"mlops.cache.{k}": v[:500] for k, v in self._parts.get(step, {}).items()
                         if k != "step"}
                mlflow.set_tags({CACHE_TAG: key, **parts, **tags})
                if metrics:
                    mlflow.log_metrics(metrics)
                if params:
                    mlflow.log_params(params)
            self.timings[step] = time.perf_counter() - start
            _logger.info("%-8s done in %.2fs (run %s)", step, self.timings[step],
                         run.info.run_id)
            outcome = StepOutcome(step, run.info.run_id, key, False, tags, metrics, params)
        self.outcomes[step] = outcome
        return outcome

    def _key(self, step: str, upstream: str) -> str:
        """The step's cache key; its parts are kept for the step run's tags."""
        self._parts[step] = cache_parts(step, self.settings, upstream)
        return _digest(self._parts[step], length=24)

    def _frame(self, name: str, step: str, path: str):
        if name not in self.frames:
            import mlflow
            import pandas as pd

            local = mlflow.artifacts.download_artifacts(
                run_id=self.outcomes[step].run_id, artifact_path=path, dst_path=self._tmp.name
            )
            self.frames[name] = pd.read_parquet(local)
        return self.frames[name]

    def _log_frame(self, df, path: str):
        import mlflow

        local = Path(self._tmp.name) / Path(path).name
        df.to_parquet(local, index=False)
        mlflow.log_artifact(str(local), artifact_path=str(Path(path).parent))

    def _log_dataset(self, df, name: str, context: str, source: str):
        import mlflow
        from mlflow.data.code_dataset_source import CodeDatasetSource
        from mlflow.exceptions import MlflowException

        target = self.settings.data.target if self.settings.data.target in df.columns else None
        try:
            dataset = mlflow.data.from_pandas(df, source=source, targets=target, name=name)
        except MlflowException:  # bundled:/SQL sources have no MLflow resolver
            dataset = mlflow.data.from_pandas(
                df, source=CodeDatasetSource({"source": source}), targets=target, name=name
            )
        mlflow.log_input(dataset, context=context)

    # -------------------------------------------------------------------- steps
    def ingest(self) -> StepOutcome:
        """Read the raw data; reused when the source's content is unchanged."""
        from projects.ingest import fingerprint_source, frame_digest, ingest_data, parse_source

        data = self.settings.data
        source = parse_source(data.source, data.query, data.table)
        s3 = self._s3_factory() if source.kind == "s3" and self._s3_factory else None
        fingerprint = fingerprint_source(source, s3)
        if fingerprint is None:  # SQL: only the rows tell whether the data changed
            self.frames["raw"] = ingest_data(source, data.target, s3)
            fingerprint = frame_digest(self.frames["raw"])

        def compute(run_id):
            df = self.frames.get("raw")
            if df is None:
                df = self.frames["raw"] = ingest_data(source, data.target, s3)
            digest = frame_digest(df)[:16]
            self._log_frame(df, "data/raw.parquet")
            self._log_dataset(df, "raw", "raw", _dataset_source(source))
            return (
                {"mlops.data_digest": digest, "mlops.source": str(source)[:500]},
                {"rows": len(df), "columns": df.shape[1]},
                {"source": str(source)[:500], "source_kind": source.kind},
            )

        return self._run_step("ingest", self._key("ingest", fingerprint), compute)

    def validate(self) -> StepOutcome:
        """Profile, check and clean the raw data."""
        s = self.settings

        def compute(run_id):
            import mlflow

            from projects.validate import (
                check_data,
                check_types,
                clean_data,
                infer_task,
                profile_data,
                profile_html,
            )

            raw = self._frame("raw", "ingest", "data/raw.parquet")
            profile = profile_data(raw)
            mlflow.log_table(profile, "profile/profile.json")
            declared = dict(s.data.columns)
            task, why = s.data.task, "set in data.task"
            try:
                check_data(raw, s.data.target, "auto", declared, s.clean.numeric_share,
                           coerce=True)  # the target exists, columns, declared types
                if task == "auto":
                    task, why = infer_task(raw[s.data.target])
                    why = f"auto: {why}"
                coerced = check_types(raw, s.data.target, declared, s.clean.numeric_share,
                                      s.clean.coerce)
                check_data(raw, s.data.target, task, declared, s.clean.numeric_share,
                           s.clean.coerce)
            except Exception as exc:
                mlflow.set_tag("mlops.failed_rule", str(exc)[:500])
                raise
            _logger.info("task     %s (%s)", task, why)
            for column, count in coerced.items():
                _logger.warning("column %r: %d cell(s) are not numbers; they become missing "
                                "values (clean.coerce)", column, count)
            clean, report = clean_data(raw, s.data.target, s.clean.drop_duplicates)
            report.coerced_values = sum(coerced.values())
            for column, count in coerced.items():
                report.per_column.setdefault(column, {})["coerced"] = count
            dropped = 1 - report.rows_out / max(report.rows_in, 1)
            mlflow.log_text(profile_html(raw, profile, report), "profile/profile.html")
            mlflow.log_dict(report.per_column, "profile/cleaning.json")
            if dropped > s.clean.max_dropped_share:
                raise WorkflowError(
                    f"table: rule 'max_dropped_share' failed: cleaning dropped {dropped:.0%} "
                    f"of rows (limit {s.clean.max_dropped_share:.0%})"
                )
            # validation after cleaning: the clean table must still satisfy the rules
            check_data(clean, s.data.target, task, declared, s.clean.numeric_share,
                       s.clean.coerce)
            self.frames["clean"] = clean
            self._log_frame(clean, "data/clean.parquet")
            return ({"mlops.task": task, "mlops.task_reason": why[:500]}, report.metrics(),
                    {"task": task})

        up = self.outcomes["ingest"].key
        outcome = self._run_step("validate", self._key("validate", up), compute)
        task = outcome.tags.get("mlops.task")
        if task in ("classification", "regression") and task != s.data.task:
            # the later steps (split, metrics, plots, selection) see the task decided here
            self.settings = s.with_task(task)
        return outcome

    def prepare(self) -> StepOutcome:
        """Split the clean data into train/validation/test."""
        s = self.settings

        def compute(run_id):
            import mlflow

            from projects.prepare import SPLITS, drop_train_outliers, feature_types, split_data

            clean = self._frame("clean", "validate", "data/clean.parquet")
            splits = split_data(clean, s.data.target, s.data.task, s.split.test_size,
                                s.split.val_size, s.split.seed)
            outliers_dropped = 0
            if s.clean.outliers == "drop":  # fences of the train split, its rows only
                splits["train"], outliers_dropped = drop_train_outliers(
                    splits["train"], s.data.target, s.clean.outlier_iqr)
            types = feature_types(clean, s.data.target)
            contexts = {"train": "training", "val": "validation", "test": "testing"}
            for name in SPLITS:
                self.frames[name] = splits[name]
                self._log_frame(splits[name], f"splits/{name}.parquet")
                self._log_dataset(splits[name], name, contexts[name],
                                  mlflow.get_artifact_uri(f"splits/{name}.parquet"))
            return (
                {"mlops.numeric_features": ",".join(types.numeric)[:5000],
                 "mlops.categorical_features": ",".join(types.categorical)[:5000]},
                {**{f"rows_{n}": len(splits[n]) for n in SPLITS},
                 "outlier_rows_dropped": outliers_dropped},
                {"test_size": s.split.test_size, "val_size": s.split.val_size,
                 "seed": s.split.seed},
            )

        up = self.outcomes["validate"].key
        return self._run_step("prepare", self._key("prepare", up), compute)

    def train(self) -> StepOutcome:
        """Sweep the candidates and log the best model."""
        s = self.settings
        metric = s.metric

        def compute(run_id):
            import mlflow

            from projects.prepare import Preprocessing
            from projects.train import (
                expand_candidates,
                model_signature,
                pick_best,
                train_candidates,
            )

            train = self._frame("train", "prepare", "splits/train.parquet")
            val = self._frame("val", "prepare", "splits/val.parquet")
            types = Preprocessing.from_settings(s)
            # the model's run names the data it was fitted on (monitoring compares against it)
            self._log_dataset(train, "train", "training", run_uri(
                self.outcomes["prepare"].run_id, "splits/train.parquet"))
            from projects.progress import progress

            candidates = expand_candidates(s.train.candidates)
            positive, positive_why = self._positive_class(train[s.data.target])
            start = time.perf_counter()
            with progress("train: candidates", len(candidates)) as advance:
                results = train_candidates(s.data.task, types, candidates, train, val,
                                           s.data.target, s.split.seed, s.train.n_jobs,
                                           on_done=lambda _res: advance(), positive=positive)
            self.timings["fit_predict_sweep"] = time.perf_counter() - start
            for res in results:
                # a failed candidate's run ends FAILED with its reason; the sweep goes on
                with contextlib.suppress(_CandidateFailed), run_with_status(
                    run_name=candidate_run_name(res.estimator, res.params), nested=True,
                    tags={STEP_TAG: "train.candidate", "mlops.estimator": res.estimator},
                ):
                    mlflow.log_params({"estimator": res.estimator, **res.params})
                    mlflow.log_metrics({**{f"val_{k}": v for k, v in res.metrics.items()},
                                        "fit_seconds": res.fit_seconds})
                    if res.error:
                        mlflow.set_tag("mlops.error", res.error[:5000])
                        raise _CandidateFailed(res.error)
            best = pick_best(results, metric)
            self.model = best.model
            tidy = best.model.named_steps.get("tidy")
            dropped = dict(getattr(tidy, "dropped_", {}) or {})
            ids = dict(getattr(tidy, "identifiers_", {}) or {})
            if ids:
                _logger.info("columns %s left out of the features: identifiers (list them in "
                             "features.keep to use them)", ", ".join(map(repr, ids)))
            for column, why in dropped.items():
                if column not in ids:
                    _logger.warning("column %r dropped from the model: %s", column, why)
            start = time.perf_counter()
            X = train.drop(columns=[s.data.target])
            example = input_example(X)
            # the user's types: an integer column stays long (a column with missing values is
            # already float64, so double); nullable extension types become numpy ones. Which
            # columns may be missing: from every training row, and those the model never reads
            signature = model_signature(best.model, schema_frame(X), example)
            info = self._log_model(best.model, example, signature)
            self.timings["log_model"] = time.perf_counter() - start
            # the model's source run is the workflow run (the runs table's Model column reads
            # a logged model's source run); the step run lists it among its outputs too
            self._link_model(run_id, info.model_id)
            if dropped:
                mlflow.log_dict(dropped, "dropped_columns.json")
            binary = ({"mlops.positive_class": str(positive),
                       "mlops.positive_class_reason": positive_why}
                      if positive is not None else {})
            return (
                {"mlops.best_estimator": best.estimator, "mlops.model_uri": info.model_uri,
                 **binary,
                 **({"mlops.dropped_columns": ",".join(map(str, dropped))[:5000]}
                    if dropped else {})},
                {f"best_val_{k}": v for k, v in best.metrics.items()},
                {"best_estimator": best.estimator, "selection_metric": metric,
                 "candidates": len(results),
                 **({"positive_class": str(positive)} if positive is not None else {}),
                 **{f"best_{k}": v for k, v in best.params.items()}},
            )

        up = self.outcomes["prepare"].key
        return self._run_step("train", self._key("train", up), compute)

    def _positive_class(self, y) -> tuple[object | None, str]:
        """The positive class of a binary target and why (None: not a binary task).

        ``data.positive_class`` when set, else the minority class of the training target.

        Raises:
            WorkflowError: the setting names no class of the target (one line naming them).
        """
        from core import metrics

        s = self.settings.data
        classes = sorted(y.dropna().unique().tolist(), key=str)
        if s.task != "classification" or len(classes) != 2:
            if s.positive_class is not None:
                _logger.warning("data.positive_class=%s ignored: the task is not binary "
                                "classification", s.positive_class)
            return None, ""
        if s.positive_class is not None:
            try:
                positive = metrics.positive_class(classes, s.positive_class)
            except metrics.MetricError as exc:
                raise WorkflowError(f"data.positive_class: {exc}") from None
            why = "set in data.positive_class"
        else:
            positive = metrics.minority_class(y.dropna())
            why = (f"the minority class of the training target: {int((y == positive).sum())} "
                   f"of {int(y.notna().sum())} rows; data.positive_class chooses another")
        _logger.info("positive class %r (%s): f1 and roc_auc score it", positive, why)
        return positive, why

    def _log_model(self, model, example, signature):

        import mlflow

        from core import usercode

        code = [str(p) for p in usercode.files(self.settings.user_code("train"))]
        with _quiet_pickle_warning():
            return mlflow.sklearn.log_model(
                model,
                name="model",
                signature=signature,
                input_example=example,
                pip_requirements=pinned_requirements(),
                serialization_format="cloudpickle",
                code_paths=code or None,  # the user's files: the model loads without them here
                run_id=self.run_id,  # the workflow run: see _link_model
            )

    def _link_model(self, run_id: str, model_id: str | None) -> None:
        """List the logged model among ``run_id``'s outputs (the run page's Logged models)."""
        from mlflow.entities import LoggedModelOutput

        if model_id:
            self.client.log_outputs(run_id, [LoggedModelOutput(model_id, step=0)])

    def _load_model(self):
        if self.model is None:
            import mlflow

            self.model = mlflow.sklearn.load_model(self._model_uri())
        return self.model

    def _model_uri(self) -> str:
        train = self.outcomes["train"]
        return train.tags.get("mlops.model_uri") or run_uri(train.run_id)

    def evaluate(self) -> StepOutcome:
        """Score the best model on the test split, plot, compare with the champion."""
        s = self.settings
        champion = self._champion()
        self._champion_seen = str(champion.version) if champion is not None else None
        self._champion_is_this_model = (champion is not None
                                        and champion.source == self._model_uri())
        if self._champion_is_this_model:
            champion = None  # the champion is this very model: nothing to compare

        def compute(run_id):
            import matplotlib.pyplot as plt
            import mlflow

            from core.connection import unreachable
            from projects.evaluate import (
                champion_mismatch,
                compare_with_champion,
                evaluate_model,
                plot_evaluation,
            )

            test = self._frame("test", "prepare", "splits/test.parquet")
            if champion is not None:
                # data that lacks a column the champion requires is another model's: refused
                # before anything is scored or registered (one line naming the columns)
                name = s.register.model_name
                problem = champion_mismatch(
                    name, str(champion.version),
                    mlflow.models.get_model_info(version_uri(name, champion.version)).signature,
                    test.drop(columns=[s.data.target]),
                    data_name(s.data.source, s.data.table))
                if problem:
                    raise WorkflowError(problem)
            model = self._load_model()
            # the train step's positive class (its text; the model's class of that name)
            positive = self.outcomes["train"].tags.get("mlops.positive_class")
            start = time.perf_counter()
            metrics = evaluate_model(s.data.task, model, test, s.data.target, positive)
            self.timings["evaluate_predict"] = time.perf_counter() - start
            figures = plot_evaluation(s.data.task, model, test, s.data.target, positive)
            for name, fig in figures.items():
                mlflow.log_figure(fig, f"plots/{name}")
                plt.close(fig)
            tags = {"mlops.model_uri": self._model_uri()}
            if champion is not None:
                tags["mlops.champion_version"] = str(champion.version)
                try:
                    # the version read above, not the alias: it may move meanwhile
                    champ_model = mlflow.sklearn.load_model(
                        version_uri(s.register.model_name, champion.version))
                    champ = evaluate_model(s.data.task, champ_model, test, s.data.target,
                                           positive)
                    metrics.update(compare_with_champion(s.metric, metrics, champ))
                    tags["mlops.champion_comparison"] = "scored on this test set"
                except Exception as exc:  # noqa: BLE001 - an unscoreable champion is reported
                    if unreachable(exc):  # not the champion's fault: the workflow stops
                        raise
                    detail = " ".join(str(exc).split()) or type(exc).__name__
                    tags["mlops.champion_comparison"] = f"not comparable: {detail}"[:500]
                    _logger.warning("champion v%s could not be scored on this test set: %s",
                                    champion.version, detail[:300])
            return tags, metrics, {}

        up = self.outcomes["train"].key + f"|champion={champion.version if champion else None}"
        return self._run_step("evaluate", self._key("evaluate", up), compute)

    def _champion(self):

        from core.models import ModelNotFound, resolve_model
        from core.uris import ModelRef

        s = self.settings.register
        try:
            # the one resolver: a champion move recorded but never applied is applied first
            ref = ModelRef(name=s.model_name, alias=s.champion_alias)
            return resolve_model(self.client, ref).model_version
        except ModelNotFound:
            return None

    def _store_uris(self) -> tuple[str, str]:
        import mlflow

        return mlflow.get_tracking_uri(), mlflow.get_registry_uri()

    def _move_reason(self, why: str) -> str:
        """The reason recorded with an alias move: what started the run, and why."""
        reg = self.settings.register
        if reg.trigger == "retrain":
            started = reg.trigger_reason or "retraining"
            return f"{started} (workflow run {self.run_id}): {why}"
        return f"workflow run {self.run_id}: {why}"

    def register(self) -> StepOutcome:
        """Register the model version with lineage tags and move its aliases.

        Every new version becomes challenger; it also becomes champion when the auto-champion
        decision (:func:`projects.register.auto_champion_decision`) is on and it beats the
        champion evaluate scored on the same test set. Both moves go through THE alias move
        (compare-and-set + history) against the state read before deciding: a concurrent move
        (a release manager's promotion) wins, and the run records that the crown was lost.
        """
        from projects.register import auto_champion_decision, crown_decision

        s = self.settings
        ev = self.outcomes["evaluate"]
        test_metrics = {k: v for k, v in ev.metrics.items() if k.startswith("test_")}
        on, why_on = auto_champion_decision(s.register.auto_champion, s.profile,
                                            self._store_uris())
        kind = "retrain" if s.register.trigger == "retrain" else "auto"

        def compute(run_id):
            import mlflow

            from core.aliases import current_user, move_alias, read_state
            from core.errors import LostRace
            from projects.register import lineage_tags

            name = s.register.model_name
            champion_alias = s.register.champion_alias
            challenger_alias = s.register.challenger_alias
            tags = lineage_tags(
                data_digest=self.outcomes["ingest"].tags.get("mlops.data_digest", ""),
                git_commit=git_commit(self.project_dir),
                settings_hash=s.section_hash(),
                task=s.data.task,
                metric=s.metric,
                target=s.data.target,
                train_run_id=self.outcomes["train"].run_id,
                test_data_uri=run_uri(self.outcomes["prepare"].run_id, "splits/test.parquet"),
                train_data_uri=run_uri(self.outcomes["prepare"].run_id, "splits/train.parquet"),
                test_metrics=test_metrics,
                positive_class=self.outcomes["train"].tags.get("mlops.positive_class"),
            )
            with _quiet_unless_verbose():  # the summary names the version; MLflow prints too
                version = str(mlflow.register_model(self._model_uri(), name, tags=tags).version)
            # the states the moves compare against, read before anything is decided (and once
            # the model exists): the champion as evaluate saw it, the challenger as it is now
            challenger_state = read_state(self.client, name, challenger_alias)
            try:
                champion_state = read_state(self.client, name, champion_alias,
                                            expect=self._champion_seen or "none")
                champion_moved = None
            except LostRace as exc:
                champion_state, champion_moved = None, str(exc)
            by = current_user()
            out = {"mlops.model_name": name, "mlops.model_version": version,
                   "mlops.auto_champion": why_on}
            try:
                move_alias(self.client, name, version, challenger_alias, by=by, kind=kind,
                           reason=self._move_reason("new version"), state=challenger_state)
            except LostRace as exc:  # another workflow registered a newer one meanwhile
                out["mlops.challenger_lost"] = str(exc)[:500]
                _logger.warning("version %s is not %s: %s", version, challenger_alias, exc)
            crown, why = crown_decision(
                on, why_on, s.metric, test_metrics, champion=self._champion_seen,
                champion_is_this_model=self._champion_is_this_model,
                evaluated=ev.metrics, comparison=ev.tags.get("mlops.champion_comparison"))
            # not crowned for want of evidence, or preempted: said loudly, not just logged
            loud = (on and self._champion_seen is not None and not self._champion_is_this_model
                    and not any(k.startswith("champion_test_") for k in ev.metrics))
            if crown and champion_moved:
                crown, why, loud = False, f"a concurrent move won the race: {champion_moved}", True
            elif crown:
                try:
                    move_alias(self.client, name, version, champion_alias, by=by, kind=kind,
                               reason=self._move_reason(why), state=champion_state)
                except LostRace as exc:
                    crown, why, loud = False, f"a concurrent move won the race: {exc}", True
            if crown:
                _logger.info("register version %s: %s + %s: %s", version, challenger_alias,
                             champion_alias, why)
            elif loud:
                _logger.warning("version %s not crowned %s: %s", version, champion_alias, why)
            else:
                _logger.info("register version %s: %s only: %s", version, challenger_alias,
                             why)
            out.update({"mlops.crowned": str(crown), "mlops.crown_reason": why[:5000]})
            self.client.update_model_version(name, version, description=self._describe_version(
                run_id, test_metrics, crown, why))
            return out, {}, {}

        def valid(hit) -> bool:  # a deleted version cannot be reused
            from mlflow.exceptions import MlflowException

            try:
                self.client.get_model_version(hit.data.tags["mlops.model_name"],
                                              hit.data.tags["mlops.model_version"])
                return True
            except (MlflowException, KeyError):
                return False

        # register reads evaluate's metrics (and its champion), so it follows evaluate's key;
        # the auto-champion decision is part of its input (it decides what moves)
        up = f"{ev.key}|auto_champion={on}"
        return self._run_step("register", self._key("register", up), compute, valid)

    def _describe_version(self, register_run: str, test_metrics: dict, crowned: bool,
                          why: str) -> str:
        """The version's markdown description from what the steps left behind."""
        s, out = self.settings, self.outcomes
        ev = out["evaluate"]
        source = s.data.source
        if "://" in source and not source.startswith(("s3://", "file://")):
            source = f"{data_name(source, s.data.table)} (SQL)"  # the URL may hold a password
        ingest = out["ingest"]
        data = {"source": source, "target": s.data.target,
                "rows": str(int(ingest.metrics["rows"])) if "rows" in ingest.metrics else "",
                "digest": ingest.tags.get("mlops.data_digest", "")}
        runs = {"workflow run": self.run_id,
                **{f"{step} step": o.run_id for step, o in out.items()},
                "register step": register_run}
        return version_description(
            metric=s.metric,
            test_metrics=test_metrics,
            champion_version=self._champion_seen if not self._champion_is_this_model else None,
            champion_metrics={k.removeprefix("champion_"): v for k, v in ev.metrics.items()
                              if k.startswith("champion_test_")},
            champion_note=ev.tags.get("mlops.champion_comparison"),
            crowned=crowned,
            crown_reason=why,
            data=data,
            validation=dict(out["validate"].metrics) if "validate" in out else {},
            runs=runs,
            experiment_id=self.experiment_id,
        )

    # ---------------------------------------------------------------- the chain
    def run(self, until: str = "register") -> WorkflowResult:
        """Run the steps in order up to ``until`` inside the workflow (parent) run."""
        import mlflow

        if until not in STEPS:
            raise WorkflowError(f"unknown step {until!r}; one of: {', '.join(STEPS)}")
        # started by `mlflow run`: log into its run; consumed here so that nested
        # start_run calls create children instead of resuming the parent
        active = os.environ.pop("MLFLOW_RUN_ID", None)
        if active:
            self.experiment_id = self.client.get_run(active).info.experiment_id
            exp = self.client.get_experiment(self.experiment_id)  # `mlflow run` created it
        else:
            exp = self.client.get_experiment_by_name(self.settings.experiment)
            self.experiment_id = (exp.experiment_id if exp else self.client.create_experiment(
                self.settings.experiment, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND}))
        if exp is not None and EXPERIMENT_KIND_TAG not in (exp.tags or {}):
            # without the kind, MLflow 3.17's UI opens the GenAI layout (traces, judges);
            # a kind someone chose is theirs to keep
            self.client.set_experiment_tag(self.experiment_id, EXPERIMENT_KIND_TAG,
                                           MODEL_TRAINING_KIND)
        mlflow.set_experiment(experiment_id=self.experiment_id)  # the nested runs go there too
        reap_dead_runs(self.client, self.experiment_id, exclude=[active] if active else ())
        from projects.record import build_record, log_record, record_tags

        start = time.perf_counter()
        try:
            # what reproducing this run needs, recorded as it starts (a failed run says it too)
            record, dumped, diff = build_record(self.settings, self.project_dir,
                                                self.settings_file)
            with run_with_status(
                run_id=active or None,
                experiment_id=None if active else self.experiment_id,
                run_name=None if active else f"workflow-{until}",
                tags={"mlops.profile": self.settings.profile, "mlops.until": until,
                      **record_tags(record)},
            ) as parent:
                self.run_id = parent.info.run_id
                self._parent_params = dict(parent.data.params)  # `mlflow run` logged its own
                try:
                    log_record(self.client, self.run_id, record, dumped, diff)
                    _logger.info("model    %s (%s)", self.settings.register.model_name,
                                 "named after the data; -P model_name=NAME chooses another"
                                 if self.model_name_from == "data source"
                                 else "register.model_name")
                    self._log_params(self._effective_params())
                    for step in STEPS[: STEPS.index(until) + 1]:
                        self._step = step
                        getattr(self, step)()
                    self._step = None
                    self._summarise()
                except Exception as exc:
                    self._record_failure(exc)
                    raise
                run_id = parent.info.run_id
        finally:  # a failed or interrupted run leaves no scratch folder behind either
            self._tmp.cleanup()
        self.timings["total"] = time.perf_counter() - start
        result = WorkflowResult(run_id, self.experiment_id, self.outcomes, timings=self.timings,
                                model_name_from=self.model_name_from)
        reg = self.outcomes.get("register")
        if reg:
            result.model_name = reg.tags.get("mlops.model_name")
            result.model_version = reg.tags.get("mlops.model_version")
            result.crowned = reg.tags.get("mlops.crowned") == "True"
            result.crown_reason = reg.tags.get("mlops.crown_reason")
            mv = self.client.get_model_version(result.model_name, result.model_version)
            result.aliases = sorted(getattr(mv, "aliases", []) or [])
        return result

    def _effective_params(self) -> dict[str, str]:
        """The settings the run used, under the names ``-P`` gives them (never ``''``).

        The task, the metric and the positive class are added once the steps decide them
        (``auto`` until then).
        """
        from projects.record import redact_url

        s = self.settings
        out = {
            "profile": s.profile,
            "source": redact_url(s.data.source)[:500],
            "target": s.data.target,
            "impute": s.clean.impute,
            "outliers": s.clean.outliers,
            "outlier_iqr": s.clean.outlier_iqr,
            "test_size": s.split.test_size,
            "val_size": s.split.val_size,
            "seed": s.split.seed,
            "estimators": ",".join(dict.fromkeys(c.estimator for c in s.train.candidates)),
            "n_jobs": s.train.n_jobs,
            "model_name": s.register.model_name,
            "model_name_from": self.model_name_from,
            "auto_champion": {None: "auto", True: "true", False: "false"}[
                s.register.auto_champion],
        }
        for key, value in (("table", s.data.table), ("settings", self.settings_file)):
            if value:
                out[key] = str(value)[:500]
        if s.data.task != "auto":
            out["task"] = s.data.task
        if s.metric != "auto":
            out["metric"] = s.metric
        train = self.outcomes.get("train")
        if train is not None and train.tags.get("mlops.positive_class") is not None:
            out["positive_class"] = train.tags["mlops.positive_class"]
        return {k: str(v) for k, v in out.items()}

    def _log_params(self, params: dict[str, str]) -> None:
        """Log params on the workflow run; a name already logged keeps its value.

        MLflow refuses to change a param. A name ``mlflow run`` logged with the value the user
        typed (``task=auto``) gets the value used beside it, as ``effective_<name>``.
        """
        from mlflow.entities import Param

        new = {}
        for key, value in params.items():
            if key not in self._parent_params:
                new[key] = value
            elif self._parent_params[key] != value and key in _OWN_PARAMS:
                new[f"effective_{key}"] = value
        new = {k: v for k, v in new.items() if k not in self._parent_params}
        if new:
            self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in new.items()])
            self._parent_params.update(new)

    def _record_failure(self, exc: Exception) -> None:
        """Say on the workflow run why it failed: its name, ``mlops.error`` and a note.

        The steps and candidate runs that finished stay as they are (the next run reuses
        them). Nothing is written when the tracking server is what failed (each write would
        wait for it), and a write that fails never hides the failure itself.
        """
        from core.connection import unreachable
        from core.errors import classify, one_line

        if unreachable(exc):
            return
        try:
            from mlflow.entities import RunTag

            found = classify(exc)
            error = one_line(found[1] if found else f"{type(exc).__name__}: {exc}", 5000)
            finished = {step: o.run_id for step, o in self.outcomes.items()}
            data = self.settings.data
            tags = {
                "mlops.error": error,
                "mlops.failed_step": self._step or "",
                "mlflow.note.content": failure_note(error, self._step, finished,
                                                    self.experiment_id),
                "mlflow.runName": failed_run_name(data_name(data.source, data.table),
                                                  self._step),
                **{f"mlops.{step}_run": run_id for step, run_id in finished.items()},
            }
            self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
            self._log_params(self._effective_params())
        except Exception as write:  # noqa: BLE001 - the failure is what the user must see
            _logger.warning("the workflow run's failure could not be recorded: %s",
                            one_line(str(write)))

    def _summarise(self):
        """Put the figures a data scientist compares on the workflow run itself."""
        from projects.record import redact_url

        self._log_params(self._effective_params())
        # data_source as before (a password in a database URL never shown)
        params, metrics, tags = {"profile": self.settings.profile,
                                 "data_source": redact_url(self.settings.data.source)[:500]
                                 }, {}, {}
        for step, outcome in self.outcomes.items():
            tags[f"mlops.{step}_run"] = outcome.run_id
            tags[f"mlops.{step}_reused"] = str(outcome.reused).lower()
        if "train" in self.outcomes:
            params.update({k: v for k, v in self.outcomes["train"].params.items()})
            metrics.update(self.outcomes["train"].metrics)
        if "evaluate" in self.outcomes:
            metrics.update(self.outcomes["evaluate"].metrics)
        if "ingest" in self.outcomes:
            tags["mlops.data_digest"] = self.outcomes["ingest"].tags.get("mlops.data_digest", "")
        if "register" in self.outcomes:
            tags["mlops.model_version"] = self.outcomes["register"].tags.get(
                "mlops.model_version", "")
        train = self.outcomes.get("train")
        if train is not None:
            # the best candidate's validation metrics under the candidates' names: the chart
            # view plots workflow runs and candidates on one axis
            metrics.update({k.removeprefix("best_"): v for k, v in train.metrics.items()
                            if k.startswith("best_val_")})
            tags["mlops.best_estimator"] = train.tags.get("mlops.best_estimator", "")
            model_uri = train.tags.get("mlops.model_uri", "")
            if train.reused and model_uri.startswith("models:/"):
                # a reused model was logged by an earlier workflow run: list it here too
                self._link_model(self.run_id, model_uri.removeprefix("models:/"))
        data = self.settings.data
        tags["mlflow.runName"] = workflow_run_name(
            data_name(data.source, data.table), train.params.get("best_estimator") if train
            else None, self.settings.metric, metrics)
        existing = self._parent_params
        client = self.client
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        params = {k: str(v) for k, v in params.items() if k not in existing}
        client.log_batch(
            self.run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
            params=[Param(k, v) for k, v in params.items()],
            tags=[RunTag(k, str(v)) for k, v in tags.items()],
        )
        existing.update(params)
        self._log_parent_datasets()

    def _log_parent_datasets(self) -> None:
        """The splits the model was fitted and tested on, as the workflow run's dataset inputs.

        Re-logged from the prepare run's own inputs (no data is read): the runs table's
        Dataset column of the workflow run names them.
        """
        prepare = self.outcomes.get("prepare")
        if prepare is None:
            return
        inputs = prepare.inputs
        if inputs is None:
            inputs = self.client.get_run(prepare.run_id).inputs
        wanted = {"training", "testing"}
        datasets = [d for d in (inputs.dataset_inputs if inputs else [])
                    if any(t.key == "mlflow.data.context" and t.value in wanted for t in d.tags)]
        if datasets:
            self.client.log_inputs(self.run_id, datasets=datasets)


#: Params whose ``-P`` value may differ from the value used (``auto`` resolved, ``''`` kept
#: as the settings' value): the value used is logged beside it as ``effective_<name>``.
_OWN_PARAMS = frozenset({"task", "metric", "positive_class", "model_name", "auto_champion",
                         "impute", "outliers", "test_size", "val_size", "seed", "n_jobs",
                         "estimators", "source", "target", "profile"})


class _CandidateFailed(Exception):
    """Ends a failed candidate's run FAILED without ending the sweep."""


class _PickleWarningFilter(logging.Filter):
    """Drops MLflow's per-save warning about the pickle formats, and only it."""

    PREFIX = "Saving scikit-learn models in the pickle or cloudpickle format"

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.PREFIX)


@contextlib.contextmanager
def _quiet_pickle_warning():
    """Silence MLflow's warning on every cloudpickle save: the format is chosen on purpose.

    The workflow saves with cloudpickle because skops refuses tree models unless their types
    are trusted one by one; the models it loads are its own. With ``-v`` (debug) the warning
    is shown as MLflow prints it.
    """
    if _logger.isEnabledFor(logging.DEBUG):
        yield
        return
    target = logging.getLogger("mlflow.sklearn")
    quiet = _PickleWarningFilter()
    target.addFilter(quiet)
    try:
        yield
    finally:
        target.removeFilter(quiet)


@contextlib.contextmanager
def _quiet_unless_verbose():
    """MLflow's own prints (``Successfully registered model ...``) only with ``-v``.

    Log records still show: handlers hold the stream they were created with.
    """
    if _logger.isEnabledFor(logging.DEBUG):
        yield
        return
    import io

    with contextlib.redirect_stderr(io.StringIO()):
        yield


def _dataset_source(source) -> str:
    if source.kind == "file":
        return source.location
    if source.kind == "s3":
        return source.location
    return str(source)
