"""Asynchronous endpoints: send a request through S3, wait for the answer, read it.

``InvokeEndpointAsync`` takes the S3 location of the input, not the input: the request is
uploaded under the endpoint's ``PREFIX/input/``, the endpoint queues it, and the answer lands
under ``PREFIX/output/`` (a failure under ``PREFIX/failure/``). MLflow's SageMaker target has no
way to call such an endpoint; :func:`predict_async` does all four steps.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from serving.sagemaker.aws import SageMakerError, client_error_code, client_error_message
from serving.sagemaker.resources import require_endpoint
from serving.sagemaker.target import POLL_MAX_SECONDS, POLL_MIN_SECONDS, AsyncOutput, parse_s3_uri

_logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_SECONDS = 900
_MISSING = ("404", "NoSuchKey", "NotFound")


@dataclass(frozen=True)
class AsyncAnswer:
    """What an asynchronous endpoint answered, and where it put it."""

    body: bytes
    inference_id: str
    input_location: str
    output_location: str
    waited_seconds: float


def async_output_of(sm, endpoint: str) -> AsyncOutput:
    """The endpoint's S3 locations, or a one-line error when it is not asynchronous."""
    desc = require_endpoint(sm, endpoint)
    config = sm.describe_endpoint_config(EndpointConfigName=desc["EndpointConfigName"])
    output = AsyncOutput.from_config(config.get("AsyncInferenceConfig"))
    if output is None:
        raise SageMakerError(f"endpoint {endpoint} is not asynchronous; predict without --async "
                             "(or deploy it with --async s3://BUCKET/PREFIX/)")
    return output


def _read(s3, uri: str) -> bytes | None:
    bucket, key = parse_s3_uri(uri)
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except Exception as exc:  # botocore ClientError: not there yet
        if client_error_code(exc) in _MISSING:
            return None
        raise


def predict_async(
    sm,
    runtime,
    s3,
    endpoint: str,
    body: bytes,
    *,
    content_type: str = "application/json",
    accept: str = "application/json",
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    progress: Callable[[str], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncAnswer:
    """Upload ``body``, ``InvokeEndpointAsync``, wait for the answer or failure, return it.

    ``progress`` is told about the upload, the queued request and, about every 10 seconds,
    the wait. Polls back off from :data:`POLL_MIN_SECONDS` to :data:`POLL_MAX_SECONDS`.

    Raises:
        SageMakerError: the endpoint is not asynchronous, the model failed (the failure
            object's text), or no answer came within ``timeout_seconds`` (the message says
            where it will appear).
    """
    say = progress or (lambda line: None)
    output = async_output_of(sm, endpoint)
    bucket, prefix = parse_s3_uri(output.input_path)
    key = f"{prefix.rstrip('/')}/{uuid.uuid4().hex}.json"
    input_location = f"s3://{bucket}/{key}"
    s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)
    say(f"uploaded the request to {input_location}")
    try:
        resp = runtime.invoke_endpoint_async(EndpointName=endpoint, InputLocation=input_location,
                                             ContentType=content_type, Accept=accept)
    except Exception as exc:  # botocore ClientError: AWS's own message on one line
        if client_error_code(exc):
            raise SageMakerError(f"endpoint {endpoint}: {client_error_code(exc)}: "
                                 f"{client_error_message(exc)}") from None
        raise
    answer_at, failure_at = resp["OutputLocation"], resp.get("FailureLocation", "")
    inference = resp.get("InferenceId", "")
    say(f"queued as {inference}; the answer will be at {answer_at}")
    start = clock()
    deadline, delay, told = start + timeout_seconds, POLL_MIN_SECONDS, start
    while True:
        got = _read(s3, answer_at)
        if got is not None:
            return AsyncAnswer(got, inference, input_location, answer_at, clock() - start)
        failed = _read(s3, failure_at) if failure_at else None
        if failed is not None:
            text = " ".join(failed.decode(errors="replace").split())[:500]
            raise SageMakerError(f"endpoint {endpoint} failed request {inference}: {text} "
                                 f"(in {failure_at})")
        now = clock()
        if now >= deadline:
            raise SageMakerError(
                f"endpoint {endpoint} has not answered request {inference} after "
                f"{timeout_seconds:g}s (it may be scaling up from zero); the answer will be "
                f"at {answer_at}, a failure at {failure_at or 'the failure path'}")
        if now - told >= 10:
            say(f"waiting for {answer_at} ({now - start:.0f}s)")
            told = now
        sleep(min(delay, max(deadline - now, 0.0)))
        delay = min(delay * 2, POLL_MAX_SECONDS)
