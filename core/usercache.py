"""Answers that are slow to compute and keyed by what decides them, kept between runs.

They live in the user's cache folder (``$XDG_CACHE_HOME/mlops-registry``, else
``~/.cache/mlops-registry``) as small JSON files. A cache file is a shortcut, never a source
of truth: a missing, unreadable or corrupt file reads as empty and the answer is computed
again; a read-only home means computing every time.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

#: Folder name under the user's cache folder.
APP_DIR = "mlops-registry"


def cache_dir() -> Path:
    """The project's folder in the user's cache folder (not created here)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / APP_DIR


def read_json(name: str):
    """The JSON value stored under ``name``, or None when there is none (or it is unreadable)."""
    try:
        return json.loads((cache_dir() / name).read_text())
    except (OSError, ValueError):
        return None


def write_json(name: str, value) -> None:
    """Store ``value`` under ``name``, atomically: a concurrent reader sees a whole file or none.

    A failure to write (read-only home, full disk) is not an error: the answer is computed
    again next time.
    """
    path = cache_dir() / name
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # keys in the order given: a caller's insertion order (oldest first) survives a reload
        tmp.write_text(json.dumps(value, separators=(",", ":")))
        tmp.replace(path)
    except OSError:
        tmp.unlink(missing_ok=True)
