"""From a registry reference to SageMaker resources: model archive in S3, model, endpoint config.

The archive is the MLflow model directory as ``model.tar.gz`` (``MLmodel`` at its root), the
layout the ``mlflow-pyfunc`` serving image unpacks into ``/opt/ml/model``.
"""

from __future__ import annotations

import logging
import os
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from core.models import resolve_model as core_resolve_model
from core.uris import version_uri
from serving.sagemaker.aws import SageMakerError, client_error_code
from serving.sagemaker.target import (
    TAG_ENDPOINT,
    TAG_MODEL_NAME,
    TAG_MODEL_URI,
    TAG_MODEL_VERSION,
    TAG_RUN_ID,
    VARIANT_NAME,
    AsyncOutput,
    Serverless,
    Target,
    resource_name,
)

_logger = logging.getLogger(__name__)

# The container's contract, as mlflow.sagemaker sets it: which flavor to load, where it runs.
_FLAVOR = "python_function"
_MISSING = ("404", "NoSuchBucket", "NoSuchKey", "NotFound")
_CONTAINER_ENV = {"MLFLOW_DEPLOYMENT_FLAVOR_NAME": _FLAVOR, "SERVING_ENVIRONMENT": "SageMaker"}


@dataclass(frozen=True)
class ModelSource:
    """A registered model version resolved from ``NAME@ALIAS`` or ``NAME/VERSION``."""

    name: str
    version: str
    run_id: str
    ref: str
    #: MLflow 3's logged-model id (``m-...``) the version was registered from; "" for a
    #: version registered from a plain artifact path (its archive is keyed by checksum then).
    model_id: str = ""

    @property
    def uri(self) -> str:
        """``models:/NAME/VERSION`` (pinned, whatever alias was used to find it)."""
        return version_uri(self.name, self.version)

    def tags(self, endpoint: str) -> list[dict[str, str]]:
        """SageMaker tags naming the model version a resource serves."""
        values = {
            TAG_ENDPOINT: endpoint,
            TAG_MODEL_NAME: self.name,
            TAG_MODEL_VERSION: self.version,
            TAG_RUN_ID: self.run_id or "",
            TAG_MODEL_URI: self.uri,
        }
        return [{"Key": key, "Value": value} for key, value in values.items()]


def resolve_model(client, ref: str) -> ModelSource:
    """Look up ``NAME@ALIAS`` / ``NAME/VERSION`` in the registry (the one resolver of core).

    Args:
        client: ``mlflow.MlflowClient`` of the registry.
        ref: the model reference.

    Raises:
        ModelRefError: the reference is malformed (bad usage, exit 2).
        ModelNotFound: the registry has no such model, alias or version (exit 1).
    """
    # runs:/ references name no registered version: SageMaker resources are tagged with one.
    info = core_resolve_model(client, ref, allow_run=False)
    model_id = getattr(info.model_version, "model_id", None) or ""
    source = str(getattr(info.model_version, "source", "") or "")
    if not model_id and source.startswith("models:/m-") and "/" not in source[len("models:/"):]:
        model_id = source[len("models:/"):]  # registered from the logged model's own URI
    return ModelSource(name=info.name, version=info.version, run_id=info.run_id or "", ref=ref,
                       model_id=str(model_id))


def archive_key(source: ModelSource, prefix: str, checksum: str = "") -> str:
    """S3 key of a version's archive, shared by every endpoint and job that serves it.

    Name and version alone do not identify a model: two registries sharing a bucket, or a
    store recreated after ``make clean``, both have a ``v1``. The key therefore ends with
    the version's logged-model id (unique per model, MLflow 3) or, for a version without one,
    the SHA-256 of the archive's content: ``PREFIX/NAME/vVERSION/ID/model.tar.gz``.
    """
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in source.name)
    unique = source.model_id or (f"sha256-{checksum}" if checksum else "")
    if not unique:
        raise ValueError("an archive key needs the model id or the content checksum")
    return f"{prefix.strip('/')}/{safe}/v{source.version}/{unique}/model.tar.gz"


def _make_archive(model_dir: Path, out: Path) -> None:
    if not (model_dir / "MLmodel").exists():
        raise SageMakerError(f"{model_dir} has no MLmodel file: not an MLflow model")
    with tarfile.open(out, "w:gz") as tar:
        for entry in sorted(os.listdir(model_dir)):
            tar.add(model_dir / entry, arcname=entry)


def upload_archive(s3, source: ModelSource, *, bucket: str, prefix: str) -> str:
    """Put the version's ``model.tar.gz`` in S3 (reused when already there); return its URI.

    Args:
        s3: boto3 S3 client.
        source: the model version.
        bucket: destination bucket.
        prefix: key prefix.

    The model is downloaded through MLflow's current registry location (the CLI's
    ``core.connection.connect`` sets it).

    Raises:
        SageMakerError: the model has no ``python_function`` flavor, or the bucket is missing.
    """
    import mlflow.artifacts
    from mlflow.models import Model

    if not _bucket_exists(s3, bucket):
        raise SageMakerError(f"bucket {bucket} does not exist; create it: aws s3 mb s3://{bucket}")
    if source.model_id:
        key = archive_key(source, prefix)
        uri = f"s3://{bucket}/{key}"
        if _object_exists(s3, bucket, key):
            _logger.info("model archive %s already in S3; reusing it", uri)
            return uri
    with tempfile.TemporaryDirectory(prefix="sagemaker-archive-") as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source.uri, dst_path=tmp))
        flavors = Model.load(str(local / "MLmodel")).flavors
        if _FLAVOR not in flavors:
            raise SageMakerError(
                f"{source.ref} has no {_FLAVOR} flavor (has {', '.join(flavors)}); "
                "the SageMaker image serves pyfunc models only"
            )
        out = Path(tmp) / "model.tar.gz"
        _make_archive(local, out)
        if not source.model_id:  # no id: the content names the archive
            key = archive_key(source, prefix, checksum=_content_checksum(local))
            uri = f"s3://{bucket}/{key}"
            if _object_exists(s3, bucket, key):
                _logger.info("model archive %s already in S3; reusing it", uri)
                return uri
        # SageMaker's managed policies only read objects tagged SageMaker=true (mlflow does too).
        s3.upload_file(str(out), bucket, key, ExtraArgs={"Tagging": "SageMaker=true"})
    _logger.info("uploaded %s as %s", source.uri, uri)
    return uri


def _content_checksum(model_dir: Path) -> str:
    """SHA-256 over the model directory's relative paths and bytes, in a stable order.

    The tarball's own bytes carry modification times, so the same model downloaded twice
    would differ; the files do not.
    """
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(model_dir)).encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def _bucket_exists(s3, bucket: str) -> bool:
    try:
        s3.head_bucket(Bucket=bucket)
        return True
    except Exception as exc:  # botocore ClientError; anything but "missing" propagates
        if client_error_code(exc) in _MISSING:
            return False
        raise


def _object_exists(s3, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
        return True
    except Exception as exc:  # botocore ClientError; anything but "missing" propagates
        if client_error_code(exc) in _MISSING:
            return False
        raise


def create_model(sm, source: ModelSource, *, endpoint: str, model_data_url: str,
                 target: Target, kind: str = "model",
                 extra_tags: dict[str, str] | None = None) -> str:
    """Create a SageMaker model serving ``source`` from ``model_data_url``; return its name.

    ``kind`` is the name's marker (``ENDPOINT-vVERSION-KIND-STAMP``); ``extra_tags`` go with
    the version's tags (a batch model names its transform job, so it can be found and removed).
    """
    name = resource_name(endpoint, source.version, kind)
    tags = source.tags(endpoint) + [
        {"Key": key, "Value": value} for key, value in (extra_tags or {}).items()
    ]
    sm.create_model(
        ModelName=name,
        PrimaryContainer={
            "Image": target.image_url,
            "ModelDataUrl": model_data_url,
            "Environment": dict(_CONTAINER_ENV),
        },
        ExecutionRoleArn=target.execution_role_arn,
        Tags=tags,
    )
    _logger.info("created SageMaker model %s", name)
    return name


def create_endpoint_config(sm, source: ModelSource, *, endpoint: str, model_name: str,
                           instance_type: str | None, instance_count: int | None,
                           data_capture_uri: str | None = None,
                           capture_percent: int = 100, serverless: Serverless | None = None,
                           async_output: AsyncOutput | None = None) -> str:
    """Create an endpoint config with one variant (:data:`VARIANT_NAME`); return its name.

    With ``data_capture_uri`` the endpoint captures requests and predictions there (SageMaker
    data capture: JSON lines per hour under ``<uri>/<endpoint>/<variant>/...``). With
    ``serverless`` the variant has a ``ServerlessConfig`` instead of instances; with
    ``async_output`` the endpoint is asynchronous (``AsyncInferenceConfig``). Both are sent
    as the inner dicts botocore validates.
    """
    name = resource_name(endpoint, source.version, "config")
    extra: dict = {}
    if async_output is not None:
        extra["AsyncInferenceConfig"] = async_output.config()
    if serverless is not None:
        variant = {"VariantName": VARIANT_NAME, "ModelName": model_name,
                   "ServerlessConfig": serverless.config(), "InitialVariantWeight": 1.0}
    else:
        variant = {"VariantName": VARIANT_NAME, "ModelName": model_name,
                   "InitialInstanceCount": instance_count, "InstanceType": instance_type,
                   "InitialVariantWeight": 1.0}
    if data_capture_uri:
        extra["DataCaptureConfig"] = {
            "EnableCapture": True,
            "InitialSamplingPercentage": int(capture_percent),
            "DestinationS3Uri": data_capture_uri,
            "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
            "CaptureContentTypeHeader": {"CsvContentTypes": ["text/csv"],
                                         "JsonContentTypes": ["application/json"]},
        }
    sm.create_endpoint_config(
        EndpointConfigName=name,
        **extra,
        ProductionVariants=[variant],
        Tags=source.tags(endpoint),
    )
    _logger.info("created endpoint config %s", name)
    return name
