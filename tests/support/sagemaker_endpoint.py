"""A SageMaker endpoint on the test double (``tests/support/moto_sagemaker.py``) for a model.

AWS itself cannot exist here: boto3 talks over HTTP to the double, whose InvokeEndpoint hands
the body to the real stock MLflow scoring server serving the model archive (what the
``mlflow-pyfunc`` image runs) and turns its 4xx/5xx into ``ModelError``.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
import time
import uuid

import boto3
import mlflow
from botocore.exceptions import ClientError

from tests.support.moto_sagemaker import ACCOUNT_ID

ROLE = f"arn:aws:iam::{ACCOUNT_ID}:role/sagemaker-execution"
IMAGE = f"{ACCOUNT_ID}.dkr.ecr.us-east-1.amazonaws.com/mlflow-pyfunc:{mlflow.__version__}"


def client(service: str, url: str):
    """A boto3 client of the double at ``url``."""
    return boto3.client(service, endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def _archive(model_uri: str) -> bytes:
    """The model's files at the root of a ``model.tar.gz``, as SageMaker containers expect."""
    local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(local, arcname=".")
    return buf.getvalue()


def create_endpoint(url: str, model_uri: str) -> str:
    """Push the model's archive to (moto) S3 and create an endpoint for it; return its name.

    The double starts the endpoint's scoring server in the background, as SageMaker
    provisions; :func:`wait_in_service` waits for it.
    """
    bucket, name = f"models-{uuid.uuid4().hex[:8]}", f"ep-{uuid.uuid4().hex[:8]}"
    s3, sm = client("s3", url), client("sagemaker", url)
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key=f"{name}/model.tar.gz", Body=_archive(model_uri))
    sm.create_model(ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer={
        "Image": IMAGE, "ModelDataUrl": f"s3://{bucket}/{name}/model.tar.gz"})
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[{
        "VariantName": "primary", "ModelName": name, "InitialInstanceCount": 1,
        "InstanceType": "ml.m5.large"}])
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    return name


def wait_in_service(url: str, name: str, timeout: float = 180) -> None:
    """Wait until the endpoint is ``InService``."""
    sm = client("sagemaker", url)
    deadline = time.monotonic() + timeout
    while sm.describe_endpoint(EndpointName=name)["EndpointStatus"] != "InService":
        assert time.monotonic() < deadline, f"endpoint {name} did not come in service"
        time.sleep(0.2)


def invoke(url: str, name: str, content_type: str, body: bytes) -> tuple[int, object]:
    """InvokeEndpoint: (200, the JSON answer) or (the model's status, ModelError's message)."""
    try:
        resp = client("sagemaker-runtime", url).invoke_endpoint(
            EndpointName=name, ContentType=content_type, Body=body)
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "ModelError", exc
        message = exc.response["Error"]["Message"]
        status = re.search(r"client error \((\d+)\)", message)
        return (int(status.group(1)) if status else 424), message
    return 200, json.loads(resp["Body"].read())
