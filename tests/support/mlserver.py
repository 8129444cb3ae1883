"""MLServer + mlserver-mlflow, the reference V2 server, in an environment of its own, cached.

MLServer is not a dependency of the project (nor of its tests' lock): the environment is made
by the test set-up on first use and kept under the user's cache folder, keyed by the versions
and by the project environment it leans on, so later runs reuse it. It is a venv whose
site-packages reach the project's through a ``.pth`` file: only MLServer, mlserver-mlflow and
the packages they need in other versions than the project's (fastapi, starlette, protobuf,
grpcio, opentelemetry ...) are installed into it, by the project's own pip. First build: about
5 s and 90 MB from a warm pip cache.

MLServer 1.7.1 with mlserver-mlflow 1.7.1 loads and serves MLflow 3.18 models as they are; its
inference worker processes need an older uvloop than the project's (:data:`UVLOOP_VERSION`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

MLSERVER_VERSION = "1.7.1"
MLSERVER_MLFLOW_VERSION = "1.7.1"
# MLServer's inference workers (parallel_workers >= 1, its default) call
# asyncio.get_event_loop() in a fresh process, which uvloop 0.22 and later refuse
# ("There is no current event loop"): the worker dies and the model never loads. The project's
# uvloop is newer, so this env carries the last uvloop that allows it.
UVLOOP_VERSION = "0.21.0"
REQUIREMENTS = (f"mlserver=={MLSERVER_VERSION}", f"mlserver-mlflow=={MLSERVER_MLFLOW_VERSION}",
                f"uvloop=={UVLOOP_VERSION}")


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mlops-registry"


def _key() -> str:
    """The versions asked for, the interpreter, and every package of the project env."""
    installed = sorted(
        f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions()
        if d.metadata["Name"]
    )
    text = json.dumps([REQUIREMENTS, sys.prefix, sys.version, installed])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _site_packages(python: Path) -> str:
    return subprocess.check_output(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        text=True,
    ).strip()


def mlserver_bin() -> Path:
    """The ``mlserver`` executable of the cached environment; built first if there is none."""
    root = _cache_root()
    root.mkdir(parents=True, exist_ok=True)
    env = root / f"mlserver-{MLSERVER_VERSION}-{_key()}"
    done = env / ".complete"
    if done.exists():
        return env / "bin" / "mlserver"
    with open(root / ".mlserver.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test process may be building it now
        if not done.exists():
            _build(env)
            done.touch()
    return env / "bin" / "mlserver"


def _build(env: Path) -> None:
    """Build at its final path (a venv's scripts name it): a half-built one is started over."""
    shutil.rmtree(env, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    python = env / "bin" / "python"
    ours = _site_packages(Path(sys.executable))
    Path(_site_packages(python), "_project_env.pth").write_text(ours + "\n")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
         "--disable-pip-version-check", *REQUIREMENTS],
        capture_output=True, text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"installing {' '.join(REQUIREMENTS)} failed:\n{done.stderr[-3000:]}")


def write_repository(folder: Path, models: dict[str, tuple[str, str]], port: int,
                     grpc_port: int, metrics_port: int, workers: int = 0) -> None:
    """An MLServer model repository: ``models`` is {name: (local model path, version)}.

    ``workers``: MLServer's ``parallel_workers`` (0: inference in the server process, the
    quickest to start; MLServer's default is 1).
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "settings.json").write_text(json.dumps({
        "host": "127.0.0.1", "http_port": port, "grpc_port": grpc_port,
        "metrics_port": metrics_port, "parallel_workers": workers, "debug": False,
    }))
    for name, (path, version) in models.items():
        (folder / name).mkdir(exist_ok=True)
        (folder / name / "model-settings.json").write_text(json.dumps({
            "name": name, "implementation": "mlserver_mlflow.MLflowRuntime",
            "parameters": {"uri": str(path), "version": version},
        }))
