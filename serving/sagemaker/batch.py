"""Batch scoring on SageMaker: a transform job over an ``s3://`` prefix.

Every object under the input prefix is sent to the model container in the scoring protocol
(CSV with a header by default, one object per request); answers land under the output prefix
as ``<object>.out``.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

from serving.sagemaker.aws import SageMakerError
from serving.sagemaker.package import create_model, resolve_model, upload_archive
from serving.sagemaker.target import (
    POLL_MAX_SECONDS,
    POLL_MIN_SECONDS,
    Target,
    check_name,
    parse_s3_uri,
    resource_name,
)

_logger = logging.getLogger(__name__)

DEFAULT_BATCH_TIMEOUT_SECONDS = 3600
DEFAULT_CONTENT_TYPE = "text/csv"
# "None" sends each object whole (CSV keeps its header row); "Line" sends each line alone.
DEFAULT_SPLIT_TYPE = "None"
SPLIT_TYPES = ("None", "Line")
_DONE = ("Completed", "Failed", "Stopped")


def _stem(model_name: str) -> str:
    stem = re.sub(r"[^a-zA-Z0-9]+", "-", model_name).strip("-") or "model"
    return stem[:30].rstrip("-")


def batch(
    sm,
    s3,
    client,
    *,
    ref: str,
    input_uri: str,
    output_uri: str,
    target: Target,
    content_type: str = DEFAULT_CONTENT_TYPE,
    split_type: str = DEFAULT_SPLIT_TYPE,
    accept: str = "application/json",
    job_name: str | None = None,
    synchronous: bool = True,
    timeout_seconds: float = DEFAULT_BATCH_TIMEOUT_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
) -> dict:
    """Run a transform job of ``ref`` over ``input_uri``; answers go under ``output_uri``.

    Args:
        sm: boto3 SageMaker client.
        s3: boto3 S3 client.
        client: ``mlflow.MlflowClient`` of the registry.
        ref: ``NAME@ALIAS`` or ``NAME/VERSION``.
        input_uri: ``s3://bucket/prefix`` of the input objects.
        output_uri: ``s3://bucket/prefix`` for the answers.
        target: role, bucket, image and instances.
        content_type: content type of the input objects (``text/csv``, ``application/json``).
        split_type: ``None`` (whole objects) or ``Line``.
        accept: content type of the answers.
        job_name: transform job name (default ``MODEL-vVERSION-batch-STAMP``).
        synchronous: wait for the job to finish.
        timeout_seconds: how long to wait when ``synchronous``.
        sleep: the pause between polls (tests pass a fake).

    Returns:
        ``{"job", "status", "output", "model"}``.

    Raises:
        SageMakerError: bad input, or the job failed (with SageMaker's reason).
    """
    parse_s3_uri(input_uri)
    parse_s3_uri(output_uri)
    if split_type not in SPLIT_TYPES:
        raise SageMakerError(f"--split-type {split_type}: use one of {', '.join(SPLIT_TYPES)}")
    source = resolve_model(client, ref)
    stem = _stem(source.name)
    job = check_name(job_name, "transform job") if job_name else resource_name(
        stem, source.version, "batch"
    )
    data_url = upload_archive(s3, source, bucket=target.bucket, prefix=target.archive_prefix)
    model = create_model(sm, source, endpoint=stem, model_data_url=data_url, target=target)
    sm.create_transform_job(
        TransformJobName=job,
        ModelName=model,
        BatchStrategy="SingleRecord",
        TransformInput={
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": input_uri}},
            "ContentType": content_type,
            "SplitType": split_type,
            "CompressionType": "None",
        },
        TransformOutput={"S3OutputPath": output_uri, "Accept": accept, "AssembleWith": "Line"},
        TransformResources={
            "InstanceType": target.instance_type,
            "InstanceCount": target.instance_count,
        },
        Tags=source.tags(stem),
    )
    _logger.info("transform job %s: %s over %s -> %s", job, source.uri, input_uri, output_uri)
    result = {"job": job, "status": "InProgress", "output": output_uri, "model": model}
    if not synchronous:
        return result
    deadline = time.monotonic() + timeout_seconds
    delay = POLL_MIN_SECONDS
    while True:
        desc = sm.describe_transform_job(TransformJobName=job)
        status = desc["TransformJobStatus"]
        if status in _DONE:
            break
        if time.monotonic() > deadline:
            raise SageMakerError(
                f"transform job {job} still {status} after {timeout_seconds:.0f}s; "
                f"follow it with `aws sagemaker describe-transform-job --transform-job-name {job}`"
            )
        sleep(delay)
        delay = min(delay * 2, POLL_MAX_SECONDS)
    # The model was made for this job only.
    sm.delete_model(ModelName=model)
    result["status"] = status
    if status != "Completed":
        reason = desc.get("FailureReason") or "no reason given"
        raise SageMakerError(f"transform job {job} {status.lower()}: {reason}")
    return result
