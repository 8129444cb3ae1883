"""MLServer + mlserver-mlflow, the reference V2 server, in an environment of its own, cached.

MLServer is not a dependency of the project (nor of its tests' lock): the environment is made
by the test set-up on first use and cached (tests/support/cached_env.py). Only MLServer,
mlserver-mlflow and the packages they need in other versions than the project's (fastapi,
starlette, protobuf, grpcio, opentelemetry ...) are installed into it. First build: about 5 s
and 90 MB from a warm pip cache.

MLServer 1.7.1 with mlserver-mlflow 1.7.1 loads and serves MLflow 3.18 models as they are; its
inference worker processes need an older uvloop than the project's (:data:`UVLOOP_VERSION`).
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.cached_env import cached_venv

MLSERVER_VERSION = "1.7.1"
MLSERVER_MLFLOW_VERSION = "1.7.1"
# MLServer's inference workers (parallel_workers >= 1, its default) call
# asyncio.get_event_loop() in a fresh process, which uvloop 0.22 and later refuse
# ("There is no current event loop"): the worker dies and the model never loads. The project's
# uvloop is newer, so this env carries the last uvloop that allows it.
UVLOOP_VERSION = "0.21.0"
REQUIREMENTS = (f"mlserver=={MLSERVER_VERSION}", f"mlserver-mlflow=={MLSERVER_MLFLOW_VERSION}",
                f"uvloop=={UVLOOP_VERSION}")


def mlserver_bin() -> Path:
    """The ``mlserver`` executable of the cached environment; built first if there is none."""
    return cached_venv(f"mlserver-{MLSERVER_VERSION}", REQUIREMENTS) / "bin" / "mlserver"


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
