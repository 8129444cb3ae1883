"""Environments the tests need beside the project's, built on first use and cached.

Reference servers and clients (MLServer, the ``kserve`` SDK) are not dependencies of the project
nor of its tests' lock: their pins clash with it. Each is a venv under the user's cache folder,
keyed by the requirements and by the project environment it leans on, so later runs reuse it and
nothing is downloaded after the first build. Its site-packages reach the project's through a
``.pth`` file: only the requirements and the packages they need in other versions than the
project's are installed into it, by the project's own pip. A lock file lets two test processes
share one build.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

# An env not used for this long, for a project env that changed since, is removed.
UNUSED_SECONDS = 24 * 3600


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/mlops-registry`` (``~/.cache/mlops-registry`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mlops-registry"


def _key(requirements: tuple[str, ...]) -> str:
    """The versions asked for, the interpreter, and every package of the project env."""
    installed = sorted({  # a set: a folder twice on sys.path lists its packages twice
        f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions()
        if d.metadata["Name"]
    })
    text = json.dumps([requirements, sys.prefix, sys.version, installed])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _site_packages(python: Path) -> str:
    return subprocess.check_output(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        text=True,
    ).strip()


def cached_venv(name: str, requirements: tuple[str, ...]) -> Path:
    """The root of the cached venv ``name`` holding ``requirements``; built first if there is none.

    Args:
        name: the folder's prefix (e.g. ``mlserver-1.7.1``), one lock per name.
        requirements: pip requirement strings, pinned.

    Returns:
        The venv's folder (its interpreter is ``bin/python``).
    """
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    env = root / f"{name}-{_key(requirements)}"
    done = env / ".complete"
    if done.exists():
        done.touch()  # in use: kept by the pruning below
        return env
    with open(root / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test process may be building it now
        if not done.exists():
            _build(env, requirements)
            done.touch()
            _prune(root, name, keep=env)
    return env


def _prune(root: Path, name: str, keep: Path) -> None:
    """Remove the envs of ``name`` made for an older project env, unused for a day.

    The key follows every package of the project env, so each change to it makes a new env
    (MLServer's about 100 MB, kserve's about 260 MB); the old ones would pile up.
    """
    for old in root.glob(f"{name}-*"):
        marker = old / ".complete"
        used = marker.stat().st_mtime if marker.exists() else old.stat().st_mtime
        if old != keep and old.is_dir() and time.time() - used > UNUSED_SECONDS:
            shutil.rmtree(old, ignore_errors=True)


def _build(env: Path, requirements: tuple[str, ...]) -> None:
    """Build at its final path (a venv's scripts name it): a half-built one is started over."""
    shutil.rmtree(env, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    python = env / "bin" / "python"
    ours = _site_packages(Path(sys.executable))
    Path(_site_packages(python), "_project_env.pth").write_text(ours + "\n")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
         "--disable-pip-version-check", *requirements],
        capture_output=True, text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"installing {' '.join(requirements)} failed:\n{done.stderr[-3000:]}")
