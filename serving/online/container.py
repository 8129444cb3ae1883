"""Serving a model folder baked into a container image, on every platform's contract.

One image (``python -m serving image``) runs on SageMaker, KServe, Cloud Run or a plain VM:

- SageMaker runs ``docker run IMAGE serve`` and sends ``GET /ping`` and ``POST /invocations``
  to port 8080; the model is at ``/opt/ml/model``.
- KServe sends the Open Inference Protocol (``/v2/...``) to the container port (8080 by
  default, ``$PORT`` when its manifest sets one) and probes ``/v2/health/ready``.
- Cloud Run sets ``$PORT`` and sends whatever the client sends.

The model folder holds the MLflow model (its MLmodel file); its registered name and version,
which the V2 routes answer to and every response names, come from the image's environment
(:data:`ENV_NAME`, :data:`ENV_VERSION`), written by ``python -m serving image``.
"""

from __future__ import annotations

import os
from pathlib import Path

from core.models import ResolvedModel

# The model folder SageMaker mounts the model at, and where the image carries it.
MODEL_DIR = "/opt/ml/model"
DEFAULT_PORT = 8080
ENV_MODEL_DIR = "MLOPS_MODEL_DIR"
ENV_NAME = "MLOPS_MODEL_NAME"
ENV_VERSION = "MLOPS_MODEL_VERSION"
ENV_WORKERS = "MLOPS_WORKERS"
# Cloud Run's and KServe's port variable.
ENV_PORT = "PORT"


def local_model(path: str) -> ResolvedModel | None:
    """The model folder at ``path`` as the served model, or None when ``path`` is not one."""
    if not Path(path, "MLmodel").is_file():
        return None
    return ResolvedModel(
        uri=str(Path(path).resolve()),
        name=os.environ.get(ENV_NAME) or None,
        version=os.environ.get(ENV_VERSION) or None,
    )


def model_dir() -> str:
    """The folder of the image's model: ``$MLOPS_MODEL_DIR`` or SageMaker's /opt/ml/model."""
    return os.environ.get(ENV_MODEL_DIR) or MODEL_DIR


def port() -> int:
    """The port to listen on: ``$PORT`` (Cloud Run, KServe) or 8080 (SageMaker, KServe)."""
    value = os.environ.get(ENV_PORT, "").strip()
    if not value:
        return DEFAULT_PORT
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        from core.errors import UsageError

        raise UsageError(f"${ENV_PORT} is {value!r}; expected a TCP port (1-65535)")
    return int(value)
