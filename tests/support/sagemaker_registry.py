"""The SageMaker tests' shared registry and AWS environment (fixtures for the conftest).

One registry with two versions of one model, and boto3 sent to the one SageMaker double of the
session. The serving integration conftest imports the fixtures, so every SageMaker test module
shares one double, one registry and the double's scoring servers (a test module that imported
them itself would get its own copies of these session fixtures: another moto server patching
the same classes, another registry, more scoring servers).
"""

from __future__ import annotations

import shutil
import uuid

import boto3
import mlflow
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from core.aliases import move_alias
from tests.support.moto_sagemaker import ACCOUNT_ID

ROLE = f"arn:aws:iam::{ACCOUNT_ID}:role/sagemaker-execution"
IMAGE = f"{ACCOUNT_ID}.dkr.ecr.us-east-1.amazonaws.com/mlflow-pyfunc:{mlflow.__version__}"
MODEL = "cancer"
DEPLOYER = "svc-deployer"


@pytest.fixture(scope="session")
def registry(tmp_path_factory, template_sqlite_db, sagemaker_moto):
    """A registry with two versions of one model, v1 and v2.

    v2 learns the flipped target, so which version answered is plain in every prediction.
    Shared by the SageMaker test modules so the double's scoring servers (one per archive)
    are shared too.
    """
    folder = tmp_path_factory.mktemp("sagemaker-registry")
    shutil.copy(template_sqlite_db, folder / "mlflow.db")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment("sagemaker", artifact_location=(folder / "a").as_uri())
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    client.create_registered_model(MODEL)
    models = {}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        for version, target in (("1", y), ("2", 1 - y)):
            pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
            pipe.fit(X, target)
            with mlflow.start_run(experiment_id=experiment) as run:
                info = mlflow.sklearn.log_model(
                    pipe, name="model", input_example=X.head(3),
                    pip_requirements=["scikit-learn", "pandas"],
                )
            mv = client.create_model_version(MODEL, info.model_uri, run.info.run_id,
                                             tags={"mlops.task": "classification"})
            assert str(mv.version) == version
            pyfunc = mlflow.pyfunc.load_model(f"models:/{MODEL}/{version}")
            models[version] = (pyfunc, run.info.run_id)
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
    bucket = f"models-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=sagemaker_moto.url, region_name="us-east-1",
                 aws_access_key_id="testing", aws_secret_access_key="testing",
                 ).create_bucket(Bucket=bucket)
    return uri, X, models, bucket


@pytest.fixture
def aws(monkeypatch, sagemaker_moto, registry):
    """boto3 sent to the double, MLflow to the module's registry; one bucket per module."""
    for key in ("AWS_PROFILE", "AWS_REGION", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", sagemaker_moto.url)
    monkeypatch.setenv("MLOPS_SAGEMAKER_EXECUTION_ROLE_ARN", ROLE)
    monkeypatch.setenv("MLFLOW_SAGEMAKER_DEPLOY_IMG_URL", IMAGE)
    sagemaker_moto.bucket = registry[3]
    monkeypatch.setenv("MLOPS_SAGEMAKER_BUCKET", registry[3])
    uri = registry[0]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    # who the alias moves record (core.aliases.current_user)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", DEPLOYER)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return sagemaker_moto


@pytest.fixture
def versions(aws, registry):
    """The module's two versions with champion on v1 and challenger on v2."""
    client = mlflow.MlflowClient()
    for alias, version in (("champion", "1"), ("challenger", "2")):
        move_alias(client, MODEL, version, alias, reason="test setup", by="alice")
    return registry[1], registry[2]
