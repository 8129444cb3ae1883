"""The user's own code, referenced from settings as ``path/to/file.py:function``.

Feature functions, estimator factories, metric functions and ingest loaders live in the data
scientist's files, not in this project (as ``steps/*.py`` did in MLflow Recipes). One module
resolves such a reference, so the workflow (which calls the code and hashes it into its cache
keys), the metric catalogue (custom metrics) and the model packaging (``code_paths``) agree
on which file a reference names.

A referenced file is imported under its own stem (``steps/features.py`` is module
``features``): a model ships the file in its ``code/`` folder, which MLflow puts on
``sys.path`` when loading, so the pickled references resolve there too, without this
repository.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

_REF = re.compile(r"^(?P<path>[^:]+\.py):(?P<name>[A-Za-z_][A-Za-z0-9_]*)$")


class UserCodeError(Exception):
    """A reference that names no file or no function; the message is one line."""


def is_reference(value: object) -> bool:
    """Whether ``value`` reads as ``path/to/file.py:function``."""
    return isinstance(value, str) and bool(_REF.match(value.strip()))


def split_reference(ref: str, base: Path | None = None) -> tuple[Path, str]:
    """``(absolute file, function name)`` of ``ref``; relative paths start at ``base`` (cwd).

    Raises:
        UserCodeError: not of the form ``file.py:function``.
    """
    match = _REF.match(ref.strip()) if isinstance(ref, str) else None
    if not match:
        raise UserCodeError(f"{ref!r}: expected path/to/file.py:function")
    path = Path(match["path"]).expanduser()
    if not path.is_absolute():
        path = (base or Path.cwd()) / path
    return path.resolve(), match["name"]


def module_name(path: Path) -> str:
    """The module name a user file is imported (and shipped with a model) under: its stem."""
    return Path(path).stem


def _import_file(path: Path):
    name = module_name(path)
    loaded = sys.modules.get(name)
    if loaded is not None:
        if Path(getattr(loaded, "__file__", "") or "").resolve() == path:
            return loaded
        raise UserCodeError(
            f"{path}: module name {name!r} is already taken by {loaded.__name__} "
            f"({getattr(loaded, '__file__', 'built in')}); rename the file"
        )
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UserCodeError(f"{path}: cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserCodeError(f"{path}: importing it failed: {type(exc).__name__}: {first}") from exc
    return module


def load(ref: str, base: Path | None = None) -> Callable:
    """The callable ``ref`` names, its file imported once per process.

    Raises:
        UserCodeError: no such file, the import failed, or no such function (one line).
    """
    path, name = split_reference(ref, base)
    if not path.is_file():
        raise UserCodeError(f"{ref}: no such file {path}")
    module = _import_file(path)
    func = getattr(module, name, None)
    if func is None or not callable(func):
        known = sorted(n for n, v in vars(module).items()
                       if callable(v) and not n.startswith("_")
                       and getattr(v, "__module__", None) == module.__name__)
        raise UserCodeError(f"{ref}: {path.name} defines no function {name!r}"
                            f" (it defines: {', '.join(known) or 'nothing callable'})")
    return func


def files(refs: Iterable[str], base: Path | None = None) -> list[Path]:
    """The distinct files ``refs`` name, in order (what a model ships as ``code_paths``)."""
    out: list[Path] = []
    for ref in refs:
        path, _ = split_reference(ref, base)
        if path not in out:
            out.append(path)
    return out


def digest(refs: Iterable[str], base: Path | None = None) -> str:
    """Hash of the content of every file ``refs`` name (a step's cache key part).

    A missing file hashes as missing: the step that loads it then says which file.
    """
    h = hashlib.sha256()
    for path in files(refs, base):
        h.update(str(path.name).encode() + b"\0")
        h.update(path.read_bytes() if path.is_file() else b"<missing>")
        h.update(b"\0")
    return h.hexdigest()[:16]
