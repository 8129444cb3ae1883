"""``python -m serving image``: a container build context that serves one model version anywhere.

The folder holds a Dockerfile on a slim Python base, the project's locked runtime requirements,
the scoring server's code (``core`` and ``serving``: serving imports nothing else of the
project), the model's files at ``/opt/ml/model``, and KServe manifests (a ``ServingRuntime`` and
an ``InferenceService``) for the image. The image's entrypoint is ``python -m serving
container`` (see :mod:`serving.online.container` for each platform's contract).
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from core.errors import MlopsError
from serving.online import container

# The project's checkout (the lock file and the packages copied into the image).
PROJECT = Path(__file__).resolve().parents[1]
LOCK_FILE = "requirements.lock"
PACKAGES = ("core", "serving")
RUNTIME_PREFIX = "mlops-registry-"
# KServe's name for the container it routes traffic to.
KSERVE_CONTAINER = "kserve-container"


class ImageError(MlopsError):
    """The build context cannot be written (exit 1)."""


@dataclass(frozen=True)
class BuildContext:
    """What :func:`write_context` wrote: the folder, the image tag and the manifests."""

    folder: Path
    image: str
    runtime: Path
    inference_service: Path


def default_image(name: str, version: str) -> str:
    """The image reference the manifests name unless told otherwise."""
    return f"{_k8s_name(name)}:{version}"


def write_context(info, output: Path, image: str | None = None) -> BuildContext:
    """Write the build context for the resolved model version ``info`` into ``output``.

    Args:
        info: the :class:`core.models.ResolvedModel` to serve (a registered version).
        output: a folder that does not exist yet or is empty.
        image: the image reference the manifests name (default: NAME:VERSION).

    Raises:
        ImageError: the folder holds files already, or the lock file is missing.
    """
    import mlflow.artifacts

    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ImageError(f"{output} exists and is not an empty folder; choose a new --output")
    lock = PROJECT / LOCK_FILE
    if not lock.is_file():
        raise ImageError(f"{lock} not found: the image installs the project's locked "
                         "requirements; run from the project's checkout")
    output.mkdir(parents=True, exist_ok=True)
    image = image or default_image(info.name, info.version)
    mlflow.artifacts.download_artifacts(artifact_uri=info.uri, dst_path=str(output / "model"))
    shutil.copy(lock, output / LOCK_FILE)
    for package in PACKAGES:
        shutil.copytree(PROJECT / package, output / "app" / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (output / "Dockerfile").write_text(dockerfile(info.name, info.version))
    (output / ".dockerignore").write_text("**/__pycache__\n**/*.pyc\n")
    runtime_doc, isvc_doc = kserve_manifests(info.name, info.version, image)
    (output / "kserve").mkdir()
    runtime = output / "kserve" / "servingruntime.yaml"
    isvc = output / "kserve" / "inferenceservice.yaml"
    runtime.write_text(yaml.safe_dump(runtime_doc, sort_keys=False))
    isvc.write_text(yaml.safe_dump(isvc_doc, sort_keys=False))
    return BuildContext(output, image, runtime, isvc)


def dockerfile(name: str, version: str) -> str:
    """The Dockerfile: slim Python of this interpreter's version, the lock, code, model."""
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    return f"""\
# Written by `python -m serving image`: serves {name} version {version}.
# SageMaker: `serve` on port 8080, model at /opt/ml/model. KServe: V2 on $PORT or 8080.
# Cloud Run: $PORT.
FROM python:{python}-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \\
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY {LOCK_FILE} /app/{LOCK_FILE}
RUN pip install --no-deps -r /app/{LOCK_FILE}
COPY app /app
COPY model {container.MODEL_DIR}
ENV PYTHONPATH=/app {container.ENV_MODEL_DIR}={container.MODEL_DIR} \\
    {container.ENV_NAME}={name} {container.ENV_VERSION}={version} \\
    MLFLOW_TRACKING_URI=sqlite:////tmp/mlflow.db
WORKDIR /app
EXPOSE {container.DEFAULT_PORT}
USER 1000
ENTRYPOINT ["python", "-m", "serving", "container"]
"""


def kserve_manifests(name: str, version: str, image: str) -> tuple[dict, dict]:
    """A KServe ``ServingRuntime`` for the image and an ``InferenceService`` that uses it."""
    runtime_name = _k8s_name(RUNTIME_PREFIX + name)
    probe = {"httpGet": {"path": "/v2/health/ready", "port": container.DEFAULT_PORT}}
    runtime = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ServingRuntime",
        "metadata": {"name": runtime_name},
        "spec": {
            "supportedModelFormats": [{"name": "mlflow", "version": "3", "autoSelect": False}],
            "protocolVersions": ["v2"],
            "containers": [
                {
                    "name": KSERVE_CONTAINER,
                    "image": image,
                    "args": ["serve"],
                    "env": [{"name": container.ENV_PORT, "value": str(container.DEFAULT_PORT)}],
                    "ports": [{"containerPort": container.DEFAULT_PORT, "protocol": "TCP"}],
                    "readinessProbe": probe,
                    "livenessProbe": {
                        "httpGet": {"path": "/v2/health/live", "port": container.DEFAULT_PORT}
                    },
                    "resources": {
                        "requests": {"cpu": "1", "memory": "1Gi"},
                        "limits": {"cpu": "2", "memory": "2Gi"},
                    },
                }
            ],
        },
    }
    isvc = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": _k8s_name(name),
            "annotations": {"mlops-registry/model-version": str(version)},
        },
        "spec": {
            "predictor": {
                "model": {
                    "modelFormat": {"name": "mlflow", "version": "3"},
                    "protocolVersion": "v2",
                    "runtime": runtime_name,
                }
            }
        },
    }
    return runtime, isvc


def _k8s_name(text: str) -> str:
    """A Kubernetes object name (RFC 1123 label: lowercase letters, digits, '-')."""
    import re

    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return name[:63].rstrip("-") or "model"
