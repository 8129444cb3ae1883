"""Unit tests of the SageMaker layer's pure parts: names, URIs, deployment config, checks.

No AWS here at all; the few AWS clients are plain fakes standing in for boto3 clients.
"""

from __future__ import annotations

import datetime
import json
import urllib.parse
from dataclasses import dataclass

import pytest
from botocore.exceptions import ClientError, NoCredentialsError
from click.testing import CliRunner

from core.errors import MlopsError
from serving.sagemaker.aws import SageMakerError, as_sagemaker_error
from serving.sagemaker.batch import sweep_batch_models, wait_batch
from serving.sagemaker.cli import main, sagemaker
from serving.sagemaker.endpoints import wait_for_endpoint
from serving.sagemaker.preflight import (
    TRUST_POLICY,
    _trusts_sagemaker,
    check_credentials,
    check_region,
)
from serving.sagemaker.rollout import deployment_config
from serving.sagemaker.target import (
    check_name,
    default_image_url,
    parse_image_url,
    parse_s3_uri,
    resource_name,
)


def test_canary_deployment_config_has_guardrails():
    config = deployment_config(canary_percent=10, bake_minutes=5, alarms=["a-5xx", "a-lat"])
    policy = config["BlueGreenUpdatePolicy"]
    assert policy["TrafficRoutingConfiguration"] == {
        "Type": "CANARY",
        "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 10},
        "WaitIntervalInSeconds": 300,
    }
    assert 600 <= policy["MaximumExecutionTimeoutInSeconds"] <= 28800
    assert policy["MaximumExecutionTimeoutInSeconds"] > 300 + policy["TerminationWaitInSeconds"]
    assert config["AutoRollbackConfiguration"] == {
        "Alarms": [{"AlarmName": "a-5xx"}, {"AlarmName": "a-lat"}]
    }


def test_full_canary_is_all_at_once():
    routing = deployment_config(canary_percent=100, bake_minutes=0, alarms=[])[
        "BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]
    assert routing == {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 0}


@pytest.mark.parametrize(("canary", "bake", "message"), [
    (0, 5, "--canary 0: use 1 to 50 (SageMaker's largest canary), or 100 for all at once"),
    (51, 5, "--canary 51: use 1 to 50"),
    (99, 5, "--canary 99: use 1 to 50"),
    (10, 61, "--bake-minutes 61: use 0 to 60 (SageMaker's limit)"),
])
def test_deployment_config_rejects_out_of_range(canary, bake, message):
    with pytest.raises(SageMakerError, match=message.replace("(", r"\(").replace(")", r"\)")):
        deployment_config(canary_percent=canary, bake_minutes=bake, alarms=[])


def test_termination_wait_is_checked_against_sagemakers_limit():
    assert deployment_config(canary_percent=50, bake_minutes=1, alarms=[],
                             termination_wait_seconds=3600)
    with pytest.raises(SageMakerError, match=r"--termination-wait-seconds 3601: use 0 to 3600"):
        deployment_config(canary_percent=10, bake_minutes=1, alarms=[],
                          termination_wait_seconds=3601)


def test_archive_key_names_the_model_not_only_its_version():
    from serving.sagemaker.package import ModelSource, archive_key

    a = ModelSource("churn", "1", "r1", "churn/1", model_id="m-aaa")
    b = ModelSource("churn", "1", "r2", "churn/1", model_id="m-bbb")
    assert archive_key(a, "p") == "p/churn/v1/m-aaa/model.tar.gz"
    assert archive_key(a, "p") != archive_key(b, "p")
    bare = ModelSource("churn", "1", "r1", "churn/1")
    assert archive_key(bare, "p", checksum="abc") == "p/churn/v1/sha256-abc/model.tar.gz"
    with pytest.raises(ValueError):
        archive_key(bare, "p")


def test_image_urls_parse_and_default():
    url = default_image_url("123456789012", "eu-west-1", "3.17.2")
    assert url == "123456789012.dkr.ecr.eu-west-1.amazonaws.com/mlflow-pyfunc:3.17.2"
    assert parse_image_url(url) == ("123456789012", "eu-west-1", "mlflow-pyfunc", "3.17.2")
    assert parse_image_url(url.rsplit(":", 1)[0])[3] == "latest"
    with pytest.raises(SageMakerError, match="is not an ECR URI"):
        parse_image_url("docker.io/library/python:3.11")


def test_s3_uris():
    assert parse_s3_uri("s3://bucket/in/part") == ("bucket", "in/part")
    assert parse_s3_uri("s3://bucket") == ("bucket", "")
    with pytest.raises(SageMakerError, match="is not an s3:// URI"):
        parse_s3_uri("/local/path")


def test_resource_names_fit_sagemaker_limits():
    name = resource_name("e" * 80, "123", "config")
    assert len(name) <= 63 and check_name(name) == name
    assert resource_name("churn", "4", "model").startswith("churn-v4-model-")
    with pytest.raises(SageMakerError, match="name 'bad_name' is not valid"):
        check_name("bad_name")


def test_trust_policy_parsing_accepts_aws_forms():
    assert _trusts_sagemaker(json.loads(TRUST_POLICY))
    assert _trusts_sagemaker(urllib.parse.quote(TRUST_POLICY))  # IAM's URL-encoded form
    listed = {"Statement": [{"Effect": "Allow", "Action": ["sts:AssumeRole"],
                             "Principal": {"Service": ["ec2.amazonaws.com",
                                                       "sagemaker.amazonaws.com"]}}]}
    assert _trusts_sagemaker(listed)
    denied = json.loads(TRUST_POLICY.replace("Allow", "Deny"))
    assert not _trusts_sagemaker(denied)
    assert not _trusts_sagemaker(TRUST_POLICY.replace("sagemaker", "lambda"))


def test_region_check():
    assert check_region("us-east-1", ["us-east-1"]).ok
    missing = check_region(None, ["us-east-1"])
    assert (missing.status, missing.fix) == (
        "fail", "set AWS_DEFAULT_REGION (or pass --region), e.g. us-east-1")
    assert check_region("mars-1", ["us-east-1"]).detail == "mars-1 has no SageMaker"


class _Sts:
    def __init__(self, exc):
        self.exc = exc

    def get_caller_identity(self):
        raise self.exc


def test_credentials_check_names_the_fix():
    check, identity = check_credentials(_Sts(NoCredentialsError()))
    assert identity is None and check.status == "fail"
    assert check.fix.startswith("configure them: aws configure")
    expired = ClientError({"Error": {"Code": "ExpiredToken", "Message": "x"}}, "GetCallerIdentity")
    check, _ = check_credentials(_Sts(expired))
    assert check.detail == "credentials rejected (ExpiredToken)"


class _Endpoint:
    def __init__(self, statuses):
        self.statuses = list(statuses)

    def describe_endpoint(self, EndpointName):  # noqa: N803 - boto3's argument name
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return {"EndpointStatus": status, "EndpointConfigName": "c", "EndpointArn": "arn"}


def test_wait_returns_the_settled_state_and_times_out():
    now = [0.0]
    clock = lambda: now[0]  # noqa: E731

    def sleep(seconds):
        now[0] += seconds

    sm = _Endpoint(["Creating", "Creating", "InService"])
    assert wait_for_endpoint(sm, "e", timeout_seconds=60, sleep=sleep, clock=clock)[
        "EndpointStatus"] == "InService"
    with pytest.raises(SageMakerError, match="endpoint e still Updating after 30s"):
        wait_for_endpoint(_Endpoint(["Updating"]), "e", timeout_seconds=30, sleep=sleep,
                          clock=clock)


@pytest.mark.parametrize("command", [
    "preflight", "deploy", "status", "predict", "rollout", "autoscale", "batch", "delete",
])
def test_every_command_has_help(command):
    result = CliRunner().invoke(sagemaker, [command, "--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.output


@dataclass(frozen=True)
class Ran:
    exit_code: int
    stdout: str
    stderr: str


def run(entry, *args: str) -> Ran:
    """Run a command line's ``main(argv)`` as a user would, capturing what it prints."""
    with CliRunner().isolation() as (out, err, _):
        code = entry(list(args))
    return Ran(code, out.getvalue().decode(), err.getvalue().decode())


def _serving_main(argv):
    """``python -m serving sagemaker ...``: the same group mounted in serving's command line."""
    from serving.cli import main as serving_main

    return serving_main(["sagemaker", *argv])


ENTRY_POINTS = pytest.mark.parametrize("entry", [main, _serving_main],
                                       ids=["serving.sagemaker", "serving sagemaker"])


@ENTRY_POINTS
def test_bad_endpoint_name_is_one_error_line(entry):
    result = run(entry, "status", "--endpoint", "no_underscores")
    assert result.exit_code == 1
    assert result.stderr == (
        "error: endpoint name 'no_underscores' is not valid: "
        "use 1-63 letters, digits and single hyphens\n"
    )


def test_sagemaker_errors_share_the_one_exit_code_mapping():
    assert issubclass(SageMakerError, MlopsError)
    denied = ClientError({"Error": {"Code": "AccessDeniedException",
                                    "Message": "User: bob is not\n authorized"}}, "DescribeEndpoint")
    assert str(as_sagemaker_error(denied)) == "AWS AccessDeniedException: User: bob is not authorized"
    assert str(as_sagemaker_error(NoCredentialsError())) == "AWS: Unable to locate credentials"
    assert as_sagemaker_error(ValueError("a bug")) is None


@ENTRY_POINTS
def test_aws_client_error_is_one_line_exit_1(entry, monkeypatch):
    import serving.sagemaker.endpoints as endpoints

    def denied(*args, **kwargs):
        raise ClientError({"Error": {"Code": "AccessDeniedException",
                                     "Message": "User: bob is not authorized to perform: "
                                                "sagemaker:DescribeEndpoint"}},
                          "DescribeEndpoint")

    monkeypatch.setattr(endpoints, "endpoint_status", denied)
    result = run(entry, "--region", "us-east-1", "status", "--endpoint", "e1")
    assert (result.exit_code, result.stderr) == (
        1, "error: AWS AccessDeniedException: User: bob is not authorized to perform: "
           "sagemaker:DescribeEndpoint\n")


@ENTRY_POINTS
def test_lost_race_exits_3_and_a_bug_keeps_its_traceback(entry, monkeypatch):
    import serving.sagemaker.endpoints as endpoints
    from core.errors import LostRace

    def lost(*args, **kwargs):
        raise LostRace("alias champion was moved to version 3 during the rollout")

    monkeypatch.setattr(endpoints, "endpoint_status", lost)
    result = run(entry, "--region", "us-east-1", "status", "--endpoint", "e1")
    assert (result.exit_code, result.stderr) == (
        3, "error: alias champion was moved to version 3 during the rollout\n")

    def bug(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(endpoints, "endpoint_status", bug)
    with pytest.raises(ZeroDivisionError):
        run(entry, "--region", "us-east-1", "status", "--endpoint", "e1")


def _sagemaker_imports() -> dict[str, set[str]]:
    """Which serving.sagemaker modules each one imports (also inside functions), per grimp."""
    import grimp

    graph = grimp.build_graph("serving", cache_dir=None)
    package = "serving.sagemaker"
    modules = {m for m in graph.find_children(package)} | {package}
    return {m: graph.find_modules_directly_imported_by(m) & modules for m in modules}


def test_sagemaker_modules_import_no_circle():
    import graphlib

    imports = _sagemaker_imports()
    try:
        order = list(graphlib.TopologicalSorter(imports).static_order())
    except graphlib.CycleError as exc:
        pytest.fail(f"import circle in serving/sagemaker: {' -> '.join(exc.args[1])}")
    # the bottom of the layers comes first: aws, then target, ..., the command line last
    assert order.index("serving.sagemaker.aws") < order.index("serving.sagemaker.target")
    assert order[-1] in ("serving.sagemaker.cli", "serving.sagemaker.__main__")


class _BatchModels:
    """A fake SageMaker client holding batch models and transform jobs (ListModels pages of 2)."""

    def __init__(self, models: dict[str, tuple[str | None, datetime.datetime]],
                 jobs: dict[str, tuple[str, str]]):
        self.models = models  # name -> (tagged job, creation time)
        self.jobs = jobs  # job -> (status, model name)

    @staticmethod
    def _missing(what: str) -> ClientError:
        return ClientError({"Error": {"Code": "ValidationException",
                                      "Message": f"Could not find {what}"}}, "Describe")

    def list_models(self, NameContains, MaxResults, NextToken="0"):  # noqa: N803 - boto3's
        names = sorted(n for n in self.models if NameContains in n)
        start = int(NextToken)
        page = {"Models": [{"ModelName": n, "CreationTime": self.models[n][1]}
                           for n in names[start:start + 2]]}
        if start + 2 < len(names):
            page["NextToken"] = str(start + 2)
        return page

    def describe_model(self, ModelName):  # noqa: N803
        if ModelName not in self.models:
            raise self._missing(f"model {ModelName}")
        return {"ModelArn": f"arn:model/{ModelName}"}

    def list_tags(self, ResourceArn):  # noqa: N803
        job = self.models[ResourceArn.split("/")[-1]][0]
        return {"Tags": [{"Key": "mlops.transform_job", "Value": job}] if job else []}

    def describe_transform_job(self, TransformJobName):  # noqa: N803
        if TransformJobName not in self.jobs:
            raise self._missing(f"transform job {TransformJobName}")
        status, model = self.jobs[TransformJobName]
        return {"TransformJobStatus": status, "ModelName": model,
                "TransformOutput": {"S3OutputPath": "s3://b/out"}}

    def delete_model(self, ModelName):  # noqa: N803
        del self.models[ModelName]


NOW = datetime.datetime(2026, 12, 1, 12, 0, tzinfo=datetime.UTC)


def test_sweep_deletes_models_of_ended_jobs_only():
    old, recent = NOW - datetime.timedelta(hours=2), NOW - datetime.timedelta(minutes=5)
    sm = _BatchModels(
        models={
            "m-v1-batch-model-done": ("done", recent),
            "m-v1-batch-model-failed": ("failed", recent),
            "m-v1-batch-model-stopped": ("stopped", recent),
            "m-v1-batch-model-running": ("running", old),
            "m-v1-batch-model-orphan-old": ("never-made", old),
            "m-v1-batch-model-orphan-new": ("never-made-yet", recent),
            "m-v1-batch-model-untagged": (None, old),
            "m-v1-model-endpoint": ("done", old),  # an endpoint's model: not listed
        },
        jobs={"done": ("Completed", "m-v1-batch-model-done"),
              "failed": ("Failed", "m-v1-batch-model-failed"),
              "stopped": ("Stopped", "m-v1-batch-model-stopped"),
              "running": ("InProgress", "m-v1-batch-model-running")},
    )
    deleted = sweep_batch_models(sm, now=NOW)
    assert sorted(deleted) == ["m-v1-batch-model-done", "m-v1-batch-model-failed",
                               "m-v1-batch-model-orphan-old", "m-v1-batch-model-stopped"]
    assert sorted(sm.models) == ["m-v1-batch-model-orphan-new", "m-v1-batch-model-running",
                                 "m-v1-batch-model-untagged", "m-v1-model-endpoint"]


def test_wait_batch_timeout_says_the_model_stays_and_how_it_goes():
    sm = _BatchModels(models={"m-batch-model-1": ("j", NOW)},
                      jobs={"j": ("InProgress", "m-batch-model-1")})
    with pytest.raises(SageMakerError) as err:
        wait_batch(sm, "j", timeout_seconds=0, sleep=lambda s: None)
    assert str(err.value).startswith(
        "transform job j still InProgress after 0s; its model m-batch-model-1 stays until the "
        "job ends, then `python -m serving sagemaker batch --wait j` or the next `batch` "
        "deletes it")
    assert "m-batch-model-1" in sm.models
    sm.jobs["j"] = ("Failed", "m-batch-model-1")
    with pytest.raises(SageMakerError, match="transform job j failed"):
        wait_batch(sm, "j", timeout_seconds=0, sleep=lambda s: None)
    assert sm.models == {}  # a failed job's model goes too


def test_wait_batch_leaves_a_model_it_did_not_make():
    sm = _BatchModels(models={"theirs": (None, NOW)}, jobs={"j": ("Completed", "theirs")})
    assert wait_batch(sm, "j", timeout_seconds=0)["model"] == ""
    assert "theirs" in sm.models


@pytest.mark.parametrize("args, message", [
    (["batch", "--wait", "j", "cancer@champion"], "--wait JOB takes no REF"),
    (["batch", "--wait", "j", "--async"], "--wait JOB takes no --async"),
    (["batch", "cancer@champion", "--output", "s3://b/o"], "missing --input"),
    (["batch", "--input", "s3://b/i", "--output", "s3://b/o"], "missing REF"),
])
def test_batch_usage_errors_exit_2(args, message):
    result = run(main, *args)
    assert result.exit_code == 2
    assert message in result.stderr
