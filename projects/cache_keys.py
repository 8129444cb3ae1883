"""The step cache keys: what a step's outputs depend on, hashed.

A computed step carries ``mlops.cache_key``: a hash of everything its outputs depend on:

* its code: the source of every module of this repository (``projects``, ``core``) the step
  imports, found by walking the imports with :mod:`ast` from the step's module and from the
  step's methods in the step chain (:class:`projects.workflow.Workflow` and the modules of its
  base classes), transitively (see :func:`step_code_files`);
* its settings, as canonical JSON (mappings sorted, lists in order): :func:`settings_hash`;
* its input: the data's fingerprint for ``ingest``, the key of the step whose outputs it reads
  after that (``register`` reads evaluate's metrics, so it follows ``evaluate``);
* the installed versions of the packages that shape the model (:data:`MODEL_PACKAGES`).

The step chain looks a finished run with the same key up in the experiment and reuses it: the
cache is thus the tracking store (a whole team shares it on a shared server; a new store starts
cold).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import sys
from pathlib import Path

from core import names
from core.settings import Settings
from projects import STEPS

#: The repository's root: the packages whose code goes into the cache keys live under it.
REPO_ROOT = Path(__file__).resolve().parents[1]
#: Packages of this repository whose modules a step's code hash covers.
PROJECT_PACKAGES = ("projects", "core")
#: Installed packages whose versions shape a model: part of every step's key.
MODEL_PACKAGES = ("scikit-learn", "numpy", "pandas", "scipy", "mlflow")
#: The step chain: its class's methods (and its base classes', one module each) are parsed one
#: by one, so that a step's key covers its own methods and not the other steps'.
WORKFLOW_MODULE = "projects.workflow"
WORKFLOW_CLASS = "Workflow"
#: Settings sections (dotted) each step's outputs depend on.
SETTINGS_KEYS = {
    "ingest": ("data.source", "data.query", "data.table", "data.target"),
    "validate": ("data", "clean"),
    "prepare": ("data.target", "data.task", "split", "clean.outliers", "clean.outlier_iqr"),
    "train": ("data.task", "data.target", "data.positive_class", "split.seed",
              "train.candidates", "train.tuning", "metric", "clean", "features", "metrics"),
    "evaluate": ("data.task", "data.target", "metric", "register.model_name",
                 "register.champion_alias", "metrics"),
    "register": ("register", "metric", "metrics"),
}
#: Settings that only say why a run was started: recorded with the alias moves, no output
#: depends on them, so a retraining run still reuses unchanged steps.
SETTINGS_IGNORED = ("register.trigger", "register.trigger_reason")
CACHE_TAG = names.CACHE_KEY_TAG
STEP_TAG = names.STEP_TAG


def digest(obj, length: int = 16) -> str:
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


def _closure(roots: set[str], root: Path, per_step: set[str]) -> dict[str, Path]:
    """Every module of this repository that importing ``roots`` runs, with its file.

    The modules in ``per_step`` (the step chain's) are not followed: they are counted per step
    (their module level and the step's own methods), never whole, so that a helper importing
    the chain back does not pull every step's imports into each step.
    """
    found: dict[str, Path] = {}
    todo = sorted(roots)
    while todo:
        module = todo.pop()
        if module in found or module in per_step:
            continue
        path = _module_file(root, module)
        if path is None:  # outside the repository, or an attribute (from a import name)
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


def _sha(source: bytes) -> str:
    return hashlib.sha256(source).hexdigest()


@functools.lru_cache(maxsize=256)
def _file_imports(module: str, is_package: bool, source: bytes) -> frozenset[str]:
    # keyed on the source itself: an edited file is parsed again
    key = f"{module}|{int(is_package)}|{_sha(source)}"
    return frozenset(_IMPORT_SETS.get(key, lambda: sorted(
        _imported_names(ast.parse(source), module, is_package))))


def step_code_files(step: str, root: Path | None = None) -> dict[str, Path]:
    """The source files a step's outputs depend on, by module name (computed, not listed).

    The step's module (``projects.<step>``), the imports of the step chain's module level, of
    the step's methods and of the helpers they reach, each followed transitively through the
    modules of this repository; plus the step chain's files that hold those methods or code
    every step runs (:func:`_workflow_files`).

    Args:
        step: one of :data:`projects.STEPS`.
        root: the repository to read (default: the one this module lives in).
    """
    root = Path(root) if root else REPO_ROOT
    modules = _workflow_files(root)
    sources = tuple((module, path.read_bytes()) for module, path in modules.items())
    shared, by_step, files = _workflow_import_map(sources)
    files_found = _closure({f"projects.{step}", *shared, *by_step.get(step, ())}, root,
                           set(modules))
    files_found.update({module: path for module, path in modules.items()
                        if step in files[module]})
    _IMPORT_SETS.save()
    return dict(sorted(files_found.items()))


def _workflow_files(root: Path) -> dict[str, Path]:
    """The step chain's module and the modules of its class's bases (the steps' methods)."""
    path = _module_file(root, WORKFLOW_MODULE)
    if path is None:
        return {}
    source = path.read_bytes()
    bases = _IMPORT_SETS.get(f"{WORKFLOW_MODULE}#bases|{_sha(source)}",
                             lambda: _base_modules(source))
    out = {WORKFLOW_MODULE: path}
    for module in bases:
        if (base := _module_file(root, module)) is not None:
            out[module] = base
    return out


def _base_modules(source: bytes) -> list[str]:
    """The modules the step chain's class takes its bases from (``from m import Base``)."""
    tree = ast.parse(source)
    package = WORKFLOW_MODULE.rpartition(".")[0]
    imported = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                module = ".".join(p for p in (package, module) if p)
            imported.update({alias.asname or alias.name: module for alias in node.names})
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == WORKFLOW_CLASS:
            return sorted({imported[base.id] for base in node.bases
                           if isinstance(base, ast.Name) and base.id in imported})
    return []


@functools.lru_cache(maxsize=8)
def _workflow_import_map(sources: tuple[tuple[str, bytes], ...]) -> tuple[
        frozenset[str], dict[str, frozenset[str]], dict[str, frozenset[str]]]:
    """The step chain's imports: shared, per step, and the steps each of its files counts for."""
    # parsed once per set of sources, not once per step: a re-run computes six keys
    key = "#steps|" + _sha(b"\0".join(m.encode() + b"\0" + s for m, s in sources))
    stored = _IMPORT_SETS.get(key, lambda: _parse_workflow_imports(sources))
    return (frozenset(stored["shared"]),
            {step: frozenset(names) for step, names in stored["steps"].items()},
            {module: frozenset(steps) for module, steps in stored["files"].items()})


def _parse_workflow_imports(sources: tuple[tuple[str, bytes], ...]) -> dict:
    shared: set[str] = set()
    functions: list[tuple[str, ast.FunctionDef]] = []
    for module, source in sources:
        tree = ast.parse(source)
        shared |= _imported_names(tree, module, False, skip_definitions=True)
        functions += [(module, n) for n in tree.body if isinstance(n, ast.FunctionDef)]
        for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
            functions += [(module, n) for n in cls.body if isinstance(n, ast.FunctionDef)]
    steps_reaching = _steps_reaching([node for _, node in functions])
    by_step: dict[str, set[str]] = {}
    # a file without functions is all module level: every step runs it
    files: dict[str, set[str]] = {module: set() if any(m == module for m, _ in functions)
                                  else set(STEPS) for module, _ in sources}
    for module, node in functions:
        # the step's own method, and the helpers only steps reach, are those steps'; every
        # other function's imports, and its file, are every step's
        names = _imported_names(node, module, False)
        steps = steps_reaching.get(node.name) or set(STEPS)
        for step in steps:
            by_step.setdefault(step, set()).update(names)
        files[module] |= steps
    return {"shared": sorted(shared), "steps": {k: sorted(v) for k, v in by_step.items()},
            "files": {k: sorted(v) for k, v in files.items()}}


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
    hashed = hashlib.sha256()
    for module, path in step_code_files(step, root).items():
        hashed.update(module.encode() + b"\0")
        hashed.update(path.read_bytes() + b"\0")
    return hashed.hexdigest()[:16]


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
    return digest(picked)


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
        "packages": digest(package_versions()),
    }
    refs = settings.user_code(step)
    if refs:  # the user's own files (features, estimators, metrics, loader), by content
        from core import usercode

        parts["user_code"] = usercode.digest(refs)
    return parts


def key_of(parts: dict[str, str]) -> str:
    """The cache key of a step from its parts (:func:`cache_parts`)."""
    return digest(parts, length=24)


def cache_key(step: str, settings: Settings, upstream: str, root: Path | None = None) -> str:
    """The cache key of a step: its code, its settings, its input and the model packages."""
    return key_of(cache_parts(step, settings, upstream, root))
