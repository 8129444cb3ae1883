"""The team shape: PostgreSQL backend with artifacts proxied to S3.

AWS cannot exist here: S3 is a moto server driven over HTTP (boto3 and MLflow's S3 client point
at it through ``MLFLOW_S3_ENDPOINT_URL``/``AWS_ENDPOINT_URL``). Everything else is real.
"""

from __future__ import annotations

import contextlib
import uuid

import boto3
import mlflow
import pytest

from tests.integration.tracking.conftest import assert_workflow_logged, launched, run_workflow
from tests.support.postgres import fresh_pg_database

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory, moto_server, pg_template):
    bucket = f"mlflow-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client("s3", endpoint_url=moto_server, **_boto_kwargs())
    s3.create_bucket(Bucket=bucket)
    env = {**AWS, "MLFLOW_S3_ENDPOINT_URL": moto_server, "AWS_ENDPOINT_URL": moto_server}
    tmp = tmp_path_factory.mktemp("s3")
    with contextlib.ExitStack() as stack:
        backend = stack.enter_context(fresh_pg_database(pg_template))
        url, proc = stack.enter_context(
            launched(backend, f"s3://{bucket}/mlflow", env=env, cwd=tmp, name="tracking-s3")
        )
        yield {"url": url, "bucket": bucket, "s3": s3, "env": env, "backend": backend,
               "log": proc.log_path}  # fmt: skip


def _boto_kwargs():
    return {
        "aws_access_key_id": AWS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": AWS["AWS_SECRET_ACCESS_KEY"],
        "region_name": AWS["AWS_DEFAULT_REGION"],
    }


def test_artifacts_land_in_the_bucket_through_the_server(s3_server, tmp_path):
    client = mlflow.MlflowClient(tracking_uri=s3_server["url"])
    experiment_id = client.create_experiment(f"s3-{uuid.uuid4().hex[:6]}")
    run_id = client.create_run(experiment_id).info.run_id
    local = tmp_path / "report.txt"
    local.write_text("auc 0.99")
    # The client needs no AWS credentials: the server proxies the upload.
    client.log_artifact(run_id, str(local), "reports")
    client.set_terminated(run_id)

    keys = [
        o["Key"]
        for o in s3_server["s3"].list_objects_v2(Bucket=s3_server["bucket"]).get("Contents", [])
    ]
    matching = [k for k in keys if k.endswith(f"{run_id}/artifacts/reports/report.txt")]
    assert len(matching) == 1 and matching[0].startswith("mlflow/")
    body = s3_server["s3"].get_object(Bucket=s3_server["bucket"], Key=matching[0])["Body"].read()
    assert body == b"auc 0.99"

    back = client.download_artifacts(run_id, "reports/report.txt", str(tmp_path / "dl"))
    assert open(back).read() == "auc 0.99"


@pytest.mark.slow
def test_workflow_main_runs_end_to_end(s3_server, tmp_path):
    offset = s3_server["log"].stat().st_size  # the server is shared: only this run's requests
    done = run_workflow(s3_server["url"], tmp_path)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert_workflow_logged(s3_server["url"], s3_server["log"], offset)
    keys = [
        o["Key"]
        for o in s3_server["s3"].list_objects_v2(Bucket=s3_server["bucket"]).get("Contents", [])
    ]
    assert any(k.endswith("/MLmodel") for k in keys), keys
