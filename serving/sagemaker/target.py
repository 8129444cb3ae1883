"""Where models run on SageMaker: the deployment target, its defaults and resource names.

Defaults are module-level constants, as in ``mlflow.sagemaker``. The CLI fills a
:class:`Target` from flags, environment variables and the settings profile.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass

from core import names
from serving.sagemaker.aws import SageMakerError

DEFAULT_REGION = "us-east-1"
DEFAULT_INSTANCE_TYPE = "ml.m5.large"
DEFAULT_INSTANCE_COUNT = 1
DEFAULT_TIMEOUT_SECONDS = 1200
DEFAULT_ARCHIVE_PREFIX = "mlflow-sagemaker"
# The repository `mlflow sagemaker build-and-push-container` pushes to (tag: mlflow's version).
DEFAULT_IMAGE_REPOSITORY = "mlflow-pyfunc"
DEFAULT_BUCKET_PREFIX = "mlflow-sagemaker"
# One stable variant name: autoscaling targets and alarm dimensions survive every update.
VARIANT_NAME = "AllTraffic"
POLL_MIN_SECONDS = 0.5
POLL_MAX_SECONDS = 15.0
# SageMaker Serverless Inference's limits (checked by preflight.check_serverless).
SERVERLESS_MEMORY_MB = (1024, 2048, 3072, 4096, 5120, 6144)
SERVERLESS_MAX_CONCURRENCY = 200
DEFAULT_SERVERLESS_CONCURRENCY = 20  # the console's default

# The AWS tags of the SageMaker models and endpoints this package makes (names in core.names).
TAG_ENDPOINT = names.ENDPOINT_TAG
TAG_MODEL_NAME = names.MODEL_NAME_TAG
TAG_MODEL_VERSION = names.MODEL_VERSION_TAG
TAG_RUN_ID = names.RUN_ID_TAG
TAG_MODEL_URI = names.MODEL_URI_TAG
# What `follow` records on the endpoint while a rollout runs, so a restart can finish it.
TAG_FOLLOW_VERSION = names.FOLLOW_VERSION_TAG
TAG_FOLLOW_PREVIOUS = names.FOLLOW_PREVIOUS_TAG
TAG_FOLLOW_CONFIG = names.FOLLOW_CONFIG_TAG
TAG_FOLLOW_MODEL = names.FOLLOW_MODEL_TAG
TAG_FOLLOW_FAILED = names.FOLLOW_FAILED_TAG

_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


@dataclass(frozen=True)
class Target:
    """Where and how a model runs on SageMaker.

    Attributes:
        region: AWS region of the endpoint, bucket and image.
        execution_role_arn: IAM role SageMaker assumes to pull the image and the model archive.
        bucket: S3 bucket that holds model archives.
        image_url: ECR URI of the serving image (``mlflow sagemaker build-and-push-container``).
        instance_type: instance type of real-time endpoints and transform jobs.
        instance_count: initial instance count.
        archive_prefix: key prefix of model archives in the bucket.
        data_capture_uri: ``s3://`` prefix where the endpoint captures requests and
            predictions (SageMaker data capture, read by ``python -m serving monitor``), or None.
        capture_percent: share of requests captured (1-100).
        serverless: the settings' serverless default for new endpoints (None: instances).
    """

    region: str
    execution_role_arn: str
    bucket: str
    image_url: str
    instance_type: str = DEFAULT_INSTANCE_TYPE
    instance_count: int = DEFAULT_INSTANCE_COUNT
    archive_prefix: str = DEFAULT_ARCHIVE_PREFIX
    data_capture_uri: str | None = None
    capture_percent: int = 100
    serverless: Serverless | None = None


@dataclass(frozen=True)
class Serverless:
    """A serverless variant: memory (MB) and the most requests it serves at once.

    ``config()`` is the ``ServerlessConfig`` of a production variant, the inner dict botocore
    accepts (MLflow's SageMaker target documents it wrapped, ``{"ServerlessConfig": {...}}``,
    which botocore's validation refuses).
    """

    memory_mb: int
    max_concurrency: int = DEFAULT_SERVERLESS_CONCURRENCY

    @classmethod
    def parse(cls, text: str) -> Serverless:
        """``MEMORY_MB[:MAX_CONCURRENCY]`` (e.g. ``2048`` or ``2048:10``); limits not checked."""
        match = re.fullmatch(r"\s*(\d+)\s*(?::\s*(\d+)\s*)?", str(text))
        if not match:
            raise SageMakerError(f"serverless {text!r}: use MEMORY_MB[:MAX_CONCURRENCY], "
                                 "e.g. 2048 or 2048:10")
        memory, concurrency = match.groups()
        return cls(int(memory), int(concurrency) if concurrency else
                   DEFAULT_SERVERLESS_CONCURRENCY)

    def config(self) -> dict:
        """The variant's ``ServerlessConfig``."""
        return {"MemorySizeInMB": self.memory_mb, "MaxConcurrency": self.max_concurrency}

    def __str__(self) -> str:
        return f"serverless {self.memory_mb} MB, up to {self.max_concurrency} at once"


@dataclass(frozen=True)
class AsyncOutput:
    """Where an asynchronous endpoint writes answers and failures, and whom it notifies.

    ``prefix`` is ``s3://BUCKET/PREFIX/``: answers go under ``PREFIX/output/``, failures under
    ``PREFIX/failure/``, and ``predict --async`` uploads inputs under ``PREFIX/input/``.
    """

    prefix: str
    success_topic: str | None = None
    error_topic: str | None = None
    max_concurrent_per_instance: int | None = None

    def __post_init__(self):
        bucket, key = parse_s3_uri(self.prefix)
        key = key.strip("/")
        object.__setattr__(self, "prefix", f"s3://{bucket}/" + (f"{key}/" if key else ""))

    @property
    def output_path(self) -> str:
        """Where answers land (``PREFIX/output``)."""
        return self.prefix + "output"

    @property
    def failure_path(self) -> str:
        """Where failures land (``PREFIX/failure``)."""
        return self.prefix + "failure"

    @property
    def input_path(self) -> str:
        """Where ``predict --async`` uploads inputs (``PREFIX/input``)."""
        return self.prefix + "input"

    def config(self) -> dict:
        """The endpoint config's ``AsyncInferenceConfig`` (the inner dict botocore accepts)."""
        output: dict = {"S3OutputPath": self.output_path, "S3FailurePath": self.failure_path}
        topics = {k: v for k, v in (("SuccessTopic", self.success_topic),
                                    ("ErrorTopic", self.error_topic)) if v}
        if topics:
            output["NotificationConfig"] = topics
        doc: dict = {"OutputConfig": output}
        if self.max_concurrent_per_instance:
            doc["ClientConfig"] = {
                "MaxConcurrentInvocationsPerInstance": self.max_concurrent_per_instance}
        return doc

    @classmethod
    def from_config(cls, doc: dict | None) -> AsyncOutput | None:
        """Read back a described ``AsyncInferenceConfig`` (None when the config has none)."""
        output = (doc or {}).get("OutputConfig") or {}
        path = output.get("S3OutputPath")
        if not path:
            return None
        prefix = path.rstrip("/")
        prefix = prefix[: -len("output")] if prefix.endswith("/output") else prefix + "/"
        notes = output.get("NotificationConfig") or {}
        return cls(prefix, notes.get("SuccessTopic"), notes.get("ErrorTopic"),
                   (doc.get("ClientConfig") or {}).get("MaxConcurrentInvocationsPerInstance"))

    def __str__(self) -> str:
        return f"asynchronous, answers in {self.output_path}"


def default_image_url(account: str, region: str, mlflow_version: str | None = None) -> str:
    """The image ``mlflow sagemaker build-and-push-container`` pushes for this mlflow version."""
    if mlflow_version is None:
        import mlflow.version

        mlflow_version = mlflow.version.VERSION
    registry = f"{account}.dkr.ecr.{region}.amazonaws.com"
    return f"{registry}/{DEFAULT_IMAGE_REPOSITORY}:{mlflow_version}"


def default_bucket(account: str, region: str) -> str:
    """The bucket mlflow's SageMaker client defaults to: ``mlflow-sagemaker-REGION-ACCOUNT``."""
    return f"{DEFAULT_BUCKET_PREFIX}-{region}-{account}"


def check_name(name: str, what: str = "endpoint") -> str:
    """Return ``name`` if SageMaker accepts it as a resource name, else raise one line."""
    if not _NAME.match(name or ""):
        raise SageMakerError(
            f"{what} name {name!r} is not valid: use 1-63 letters, digits and single hyphens"
        )
    return name


def resource_name(endpoint: str, version: str | int, kind: str) -> str:
    """A unique model/config/job name ``ENDPOINT-vVERSION-KIND-STAMP`` within 63 characters."""
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime()) + uuid.uuid4().hex[:4]
    suffix = f"-v{version}-{kind}-{stamp}"
    return endpoint[: 63 - len(suffix)].rstrip("-") + suffix


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """Split ``s3://bucket/key`` into ``(bucket, key)``; raise one line for anything else."""
    if not uri.startswith("s3://") or len(uri) <= 5:
        raise SageMakerError(f"{uri!r} is not an s3:// URI (use s3://BUCKET/PREFIX)")
    bucket, _, key = uri[5:].partition("/")
    if not bucket:
        raise SageMakerError(f"{uri!r} has no bucket (use s3://BUCKET/PREFIX)")
    return bucket, key


def parse_image_url(url: str) -> tuple[str, str, str, str]:
    """Split an ECR image URI into ``(account, region, repository, tag)``.

    Raises:
        SageMakerError: the URI is not ``ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPO[:TAG]``.
    """
    match = re.match(
        r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/"
        r"(?P<repo>[a-z0-9._/-]+?)(?::(?P<tag>[\w.-]+))?$",
        url or "",
    )
    if not match:
        raise SageMakerError(
            f"image URI {url!r} is not an ECR URI "
            "(ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPOSITORY:TAG)"
        )
    return match["account"], match["region"], match["repo"], match["tag"] or "latest"
