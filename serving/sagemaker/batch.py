"""Batch scoring on SageMaker: a transform job over an ``s3://`` prefix.

Every object under the input prefix is sent to the model container in the scoring protocol
(CSV with a header by default, one object per request); answers land under the output prefix
as ``<object>.out``.

The SageMaker model a job runs is made for that job alone, named ``STEM-vVERSION-batch-model-
STAMP`` and tagged ``mlops.transform_job=JOB``. It must outlive the job's start (SageMaker reads
it while the job runs) and nothing else uses it, so it goes as soon as the job has ended: at once
when ``batch`` waits for the job, else through :func:`wait_batch` (``batch --wait JOB``) or the
sweep at the start of every later ``batch`` (:func:`sweep_batch_models`).
"""

from __future__ import annotations

import datetime
import logging
import re
import time
from collections.abc import Callable, Iterable

from core.names import TRANSFORM_JOB_TAG
from serving.sagemaker.aws import SageMakerError, client_error_code
from serving.sagemaker.package import create_model, resolve_model, upload_archive
from serving.sagemaker.resources import endpoint_tags
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
#: Tag of a batch model: the transform job it was made for.
TAG_TRANSFORM_JOB = TRANSFORM_JOB_TAG
#: Name marker of batch models (``ListModels NameContains`` finds them); the tag decides.
BATCH_MODEL_KIND = "batch-model"
# A batch model whose job does not exist is removed only once this old: a `batch` running
# elsewhere may have made it and not yet started its job.
ORPHAN_GRACE_SECONDS = 3600


def _stem(model_name: str) -> str:
    stem = re.sub(r"[^a-zA-Z0-9]+", "-", model_name).strip("-") or "model"
    return stem[:30].rstrip("-")


def _missing(exc: BaseException) -> bool:
    """SageMaker's "Could not find ..." (a ``ValidationException``)."""
    return client_error_code(exc) == "ValidationException" and "not find" in str(exc).lower()


def _model_job(sm, model: str) -> str | None:
    """The transform job a batch model was made for (``None``: gone, or not a batch model)."""
    try:
        arn = sm.describe_model(ModelName=model)["ModelArn"]
    except Exception as exc:  # botocore ClientError
        if _missing(exc):
            return None
        raise
    return endpoint_tags(sm, arn).get(TAG_TRANSFORM_JOB)


def _delete_model(sm, model: str) -> bool:
    try:
        sm.delete_model(ModelName=model)
    except Exception as exc:  # botocore ClientError: deleted meanwhile (another sweep)
        if _missing(exc):
            return False
        raise
    _logger.info("deleted SageMaker model %s", model)
    return True


def _describe_job(sm, job: str) -> dict | None:
    try:
        return sm.describe_transform_job(TransformJobName=job)
    except Exception as exc:  # botocore ClientError
        if _missing(exc):
            return None
        raise


def _batch_models(sm) -> Iterable[dict]:
    kwargs: dict = {"NameContains": f"-{BATCH_MODEL_KIND}-", "MaxResults": 100}
    while True:
        page = sm.list_models(**kwargs)
        yield from page.get("Models", [])
        if not page.get("NextToken"):
            return
        kwargs["NextToken"] = page["NextToken"]


def sweep_batch_models(sm, *, now: datetime.datetime | None = None) -> list[str]:
    """Delete the models made for transform jobs that have ended; return their names.

    A model made by :func:`batch` (name marker and ``mlops.transform_job`` tag) goes when its
    job is ``Completed``, ``Failed`` or ``Stopped``; a job still running keeps its model. A
    model whose job does not exist (the job was never created) goes once it is
    :data:`ORPHAN_GRACE_SECONDS` old. Models without the tag are never touched.

    Args:
        sm: boto3 SageMaker client.
        now: the current time (tests pass one).
    """
    now = now or datetime.datetime.now(datetime.UTC)
    deleted = []
    for summary in list(_batch_models(sm)):
        model = summary["ModelName"]
        job = _model_job(sm, model)
        if not job:
            continue
        desc = _describe_job(sm, job)
        if desc is not None and desc.get("ModelName") == model:
            if desc["TransformJobStatus"] not in _DONE:
                continue
        else:
            created = summary.get("CreationTime")
            age = (now - created).total_seconds() if created else ORPHAN_GRACE_SECONDS
            if age < ORPHAN_GRACE_SECONDS:
                continue
        if _delete_model(sm, model):
            deleted.append(model)
    return deleted


def _try_sweep(sm) -> list[str]:
    """:func:`sweep_batch_models`, as housekeeping: AWS refusing it never stops a batch."""
    try:
        swept = sweep_batch_models(sm)
    except Exception as exc:  # botocore ClientError, e.g. no sagemaker:ListModels permission
        if not client_error_code(exc):
            raise
        _logger.warning("models of ended transform jobs not removed: %s", exc)
        return []
    if swept:
        _logger.info("removed %d model(s) of ended transform jobs: %s", len(swept),
                     ", ".join(swept))
    return swept


def _wait(sm, job: str, *, model: str, timeout_seconds: float,
          sleep: Callable[[float], None]) -> dict:
    """Poll the job until it ends; on time-out say what becomes of its model."""
    deadline = time.monotonic() + timeout_seconds
    delay = POLL_MIN_SECONDS
    while True:
        desc = sm.describe_transform_job(TransformJobName=job)
        status = desc["TransformJobStatus"]
        if status in _DONE:
            return desc
        if time.monotonic() > deadline:
            raise SageMakerError(
                f"transform job {job} still {status} after {timeout_seconds:.0f}s; "
                f"its model {model} stays until the job ends, then "
                f"`python -m serving sagemaker batch --wait {job}` or the next `batch` "
                f"deletes it; follow the job with "
                f"`aws sagemaker describe-transform-job --transform-job-name {job}`"
            )
        sleep(delay)
        delay = min(delay * 2, POLL_MAX_SECONDS)


def _outcome(desc: dict, job: str, model: str) -> dict:
    status = desc["TransformJobStatus"]
    if status != "Completed":
        reason = desc.get("FailureReason") or "no reason given"
        raise SageMakerError(f"transform job {job} {status.lower()}: {reason}")
    output = desc.get("TransformOutput", {}).get("S3OutputPath", "")
    return {"job": job, "status": status, "output": output, "model": model, "swept": []}


def wait_batch(
    sm,
    job: str,
    *,
    timeout_seconds: float = DEFAULT_BATCH_TIMEOUT_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
) -> dict:
    """Wait for transform job ``job`` to end, then delete the model :func:`batch` made for it.

    For a job started with ``synchronous=False`` or whose wait timed out. The model is
    deleted only when it carries the job's ``mlops.transform_job`` tag (a job started by other
    tools keeps its model); it is not an error when a sweep removed it already.

    Args:
        sm: boto3 SageMaker client.
        job: transform job name.
        timeout_seconds: how long to wait.
        sleep: the pause between polls (tests pass a fake).

    Returns:
        ``{"job", "status", "output", "model", "swept"}``; ``model`` is the model deleted, or
        ``""`` when there was none to delete.

    Raises:
        SageMakerError: no such job, still running after ``timeout_seconds`` (the model stays
            until a later sweep), or the job failed or was stopped (with SageMaker's reason,
            after its model is deleted).
    """
    check_name(job, "transform job")
    desc = _describe_job(sm, job)
    if desc is None:
        raise SageMakerError(f"transform job {job} does not exist in this region")
    model = desc.get("ModelName", "")
    desc = _wait(sm, job, model=model, timeout_seconds=timeout_seconds, sleep=sleep)
    deleted = model if model and _model_job(sm, model) == job and _delete_model(sm, model) else ""
    return _outcome(desc, job, deleted)


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

    First the models of earlier jobs that have ended go (:func:`sweep_batch_models`). The
    job's own model is deleted once the job ends when ``synchronous``; otherwise (or when the
    wait times out) it stays until :func:`wait_batch` or a later ``batch`` sees the job ended.

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
        ``{"job", "status", "output", "model", "swept"}``: ``swept`` names the models of
        ended jobs deleted first.

    Raises:
        SageMakerError: bad input, the wait timed out (the message says what becomes of the
            model), or the job failed (with SageMaker's reason).
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
    swept = _try_sweep(sm)
    data_url = upload_archive(s3, source, bucket=target.bucket, prefix=target.archive_prefix)
    model = create_model(sm, source, endpoint=stem, model_data_url=data_url, target=target,
                         kind=BATCH_MODEL_KIND, extra_tags={TAG_TRANSFORM_JOB: job})
    try:
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
            TransformOutput={"S3OutputPath": output_uri, "Accept": accept,
                             "AssembleWith": "Line"},
            TransformResources={
                "InstanceType": target.instance_type,
                "InstanceCount": target.instance_count,
            },
            Tags=source.tags(stem),
        )
    except Exception as exc:
        # AWS refused the job (e.g. its name is taken): no job will ever use the model. Any
        # other error may come after the job was made, so the model is left to the sweep.
        if client_error_code(exc):
            _delete_model(sm, model)
        raise
    _logger.info("transform job %s: %s over %s -> %s", job, source.uri, input_uri, output_uri)
    if not synchronous:
        return {"job": job, "status": "InProgress", "output": output_uri, "model": model,
                "swept": swept}
    desc = _wait(sm, job, model=model, timeout_seconds=timeout_seconds, sleep=sleep)
    _delete_model(sm, model)
    result = _outcome(desc, job, model)
    result.update(output=output_uri, swept=swept)
    return result
