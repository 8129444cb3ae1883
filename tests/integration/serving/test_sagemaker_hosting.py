"""Serverless and asynchronous SageMaker endpoints against the test double (moto 5.2.5, extended).

AWS itself cannot exist here: moto stands in (see ``tests/support/moto_sagemaker``). moto
validates a variant's ``ServerlessConfig`` (memory sizes) and keeps what it is sent, so the
configs asserted below are the ones SageMaker would receive, after botocore's own validation.
The registry, the models and the scoring server answering invocations are real.
"""

from __future__ import annotations

import json
import uuid

import boto3
import pytest

from tests.integration.serving.test_sagemaker import cli, predict
from tests.support.sagemaker_registry import MODEL

pytestmark = pytest.mark.integration


def _config(endpoint: str) -> dict:
    sm = boto3.client("sagemaker")
    name = sm.describe_endpoint(EndpointName=endpoint)["EndpointConfigName"]
    return sm.describe_endpoint_config(EndpointConfigName=name)


def _names(endpoint: str) -> tuple[set[str], set[str]]:
    sm = boto3.client("sagemaker")
    models = {m["ModelName"] for m in sm.list_models(NameContains=endpoint,
                                                     MaxResults=100)["Models"]}
    configs = {c["EndpointConfigName"] for c in sm.list_endpoint_configs(
        NameContains=endpoint, MaxResults=100)["EndpointConfigs"]}
    return models, configs


@pytest.mark.parametrize(("flags", "message"), [
    (["--serverless", "1500"], "error: 1500 MB is not a serverless memory size (1024, 2048, "
     "3072, 4096, 5120, 6144: 1 GB steps); fix: use --serverless 1024:20\n"),
    (["--serverless", "2048:500"], "error: max concurrency 500 is outside 1-200; fix: use "
     "--serverless 2048:200\n"),
    (["--serverless", "2048", "--instance-type", "ml.g4dn.xlarge"],
     "error: serverless endpoints run on CPU only; ml.g4dn.xlarge is an accelerator instance; "
     "fix: drop --instance-type/--instance-count, or drop --serverless to run on instances\n"),
    (["--serverless", "2048", "--data-capture", "s3://bucket/capture"],
     "error: serverless endpoints do not capture data; fix: drop --data-capture, or deploy on "
     "instances to capture\n"),
])
def test_serverless_limits_are_refused_before_any_aws_call(monkeypatch, flags, message):
    # nothing answers on port 1: any AWS call would end in a connection error instead
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    result = cli("--region", "us-east-1", "deploy", f"{MODEL}/1", "--endpoint", "tiny", *flags)
    assert (result.exit_code, result.stderr) == (1, message)


def test_serverless_endpoint_and_the_switch_to_instances_and_back(aws, versions, tmp_path):
    X, models = versions
    rows = X.head(8)
    expected = models["1"][0].predict(rows).tolist()
    endpoint = f"lean-{uuid.uuid4().hex[:6]}"
    sm = boto3.client("sagemaker")

    created = cli("deploy", f"{MODEL}/1", "--endpoint", endpoint, "--serverless", "2048:5")
    assert created.exit_code == 0, created.output
    assert created.stdout.strip().endswith("InService on serverless 2048 MB, up to 5 at once")
    # exactly the variant botocore validated and moto accepted: the inner ServerlessConfig
    variant = _config(endpoint)["ProductionVariants"][0]
    assert variant["ServerlessConfig"] == {"MemorySizeInMB": 2048, "MaxConcurrency": 5}
    assert "InstanceType" not in variant and "InitialInstanceCount" not in variant
    assert predict(endpoint, rows, tmp_path) == expected
    status = json.loads(cli("status", "--endpoint", endpoint, "--output", "json").stdout)
    assert status["hosting"] == {"kind": "serverless", "async": None,
                                 "serverless": {"memory_mb": 2048, "max_concurrency": 5}}
    again = cli("deploy", f"{MODEL}/1", "--endpoint", endpoint)  # keeps its hosting
    assert "nothing changed" in again.stdout, again.output

    # canary rollouts need instances: refused with the command that does update it
    refused = cli("rollout", f"{MODEL}/1", "--endpoint", endpoint)
    assert refused.exit_code == 1
    assert refused.stderr.startswith(
        f"error: endpoint {endpoint} is serverless: SageMaker's deployment guardrails (canary, "
        "alarm rollback) do not run on serverless endpoints; update it all at once with "
        f"`python -m serving sagemaker deploy {MODEL}/1 --endpoint {endpoint}`")

    followed = cli("follow", f"{MODEL}@champion", "--endpoint", endpoint, "--once")
    assert (followed.exit_code, followed.stderr.split(":")[:2]) == (
        1, ["error", f" endpoint {endpoint} is serverless"])
    scaled = cli("autoscale", "--endpoint", endpoint, "--min", "1", "--max", "3",
                 "--target-invocations", "100")
    assert (scaled.exit_code, scaled.stderr.split(";")[0]) == (
        1, f"error: endpoint {endpoint} is serverless: it scales itself up to its max "
           "concurrency")

    # a switch to instances that SageMaker cannot provision: the serverless fleet serves on
    before_names, before_config = _names(endpoint), _config(endpoint)["EndpointConfigName"]
    aws.fail_next_update(endpoint, "Unable to provision requested ML compute capacity.")
    failed = cli("deploy", f"{MODEL}/1", "--endpoint", endpoint, "--instance-count", "2")
    assert failed.exit_code == 1 and "Unable to provision" in failed.stderr
    desc = sm.describe_endpoint(EndpointName=endpoint)
    assert (desc["EndpointStatus"], desc["EndpointConfigName"]) == ("InService", before_config)
    assert _names(endpoint) == before_names
    assert predict(endpoint, rows, tmp_path) == expected

    switched = cli("deploy", f"{MODEL}/1", "--endpoint", endpoint, "--instance-count", "2")
    assert switched.exit_code == 0, switched.output
    assert (f"endpoint {endpoint} replaced (serverless 2048 MB, up to 5 at once -> 2 x "
            "ml.m5.large)") in switched.stdout
    variant = _config(endpoint)["ProductionVariants"][0]
    assert (variant["InstanceType"], variant["InitialInstanceCount"]) == ("ml.m5.large", 2)
    assert "ServerlessConfig" not in variant
    assert predict(endpoint, rows, tmp_path) == expected

    # back to serverless: the instance autoscaling goes first (serverless scales itself)
    assert cli("autoscale", "--endpoint", endpoint, "--min", "1", "--max", "3",
               "--target-invocations", "100").exit_code == 0
    rid = f"endpoint/{endpoint}/variant/AllTraffic"
    scaling = boto3.client("application-autoscaling")
    aws.fail_next_update(endpoint, "Unable to provision requested ML compute capacity.")
    failed = cli("deploy", f"{MODEL}/1", "--endpoint", endpoint, "--serverless", "1024")
    assert failed.exit_code == 1
    assert failed.stderr.endswith(f"; its instance autoscaling is back: {rid}\n")
    # the instance endpoint serves on, scaled as before
    assert [(t["MinCapacity"], t["MaxCapacity"]) for t in scaling.describe_scalable_targets(
        ServiceNamespace="sagemaker", ResourceIds=[rid])["ScalableTargets"]] == [(1, 3)]
    assert [p["TargetTrackingScalingPolicyConfiguration"]["TargetValue"] for p in
            scaling.describe_scaling_policies(ServiceNamespace="sagemaker",
                                              ResourceId=rid)["ScalingPolicies"]] == [100.0]
    back = cli("deploy", f"{MODEL}/1", "--endpoint", endpoint, "--serverless", "1024")
    assert back.exit_code == 0, back.output
    assert "replaced (2 x ml.m5.large -> serverless 1024 MB, up to 20 at once)" in back.stdout
    assert f"instance autoscaling removed (serverless endpoints scale themselves): {rid}" \
        in back.stdout
    assert scaling.describe_scalable_targets(
        ServiceNamespace="sagemaker", ResourceIds=[rid])["ScalableTargets"] == []
    assert predict(endpoint, rows, tmp_path) == expected
    assert cli("delete", "--endpoint", endpoint, "--yes").exit_code == 0


def test_async_endpoint_and_predict_round_trip_through_s3(aws, versions, tmp_path):
    """``deploy --async`` and ``predict --async`` against the double.

    Emulated (moto only answers with a placeholder): the endpoint reads the uploaded request,
    scores it on the real scoring server and writes the answer where SageMaker would
    (``tests/support/moto_sagemaker``). Not emulated: the backlog metrics, so the scaling set
    up here is checked as configured, not seen acting.
    """
    X, models = versions
    rows = X.sample(6, random_state=4)
    endpoint = f"queue-{uuid.uuid4().hex[:6]}"
    prefix = f"s3://{aws.bucket}/async-{endpoint}"
    topic = "arn:aws:sns:us-east-1:123456789012:answers"
    deployed = cli("deploy", f"{MODEL}/1", "--endpoint", endpoint, "--async", prefix + "/",
                   "--success-topic", topic, "--max-instances", "3")
    assert deployed.exit_code == 0, deployed.output
    assert f"InService on 1 x ml.m5.large, asynchronous, answers in {prefix}/output" \
        in deployed.stdout
    assert (f"scales 0-3 instances on its backlog (alarm {endpoint}-async-backlog scales up "
            "from zero)") in deployed.stdout
    assert _config(endpoint)["AsyncInferenceConfig"] == {"OutputConfig": {
        "S3OutputPath": f"{prefix}/output", "S3FailurePath": f"{prefix}/failure",
        "NotificationConfig": {"SuccessTopic": topic}}}

    scaling = boto3.client("application-autoscaling")
    rid = f"endpoint/{endpoint}/variant/AllTraffic"
    targets = scaling.describe_scalable_targets(ServiceNamespace="sagemaker",
                                                ResourceIds=[rid])["ScalableTargets"]
    assert [(t["MinCapacity"], t["MaxCapacity"]) for t in targets] == [(0, 3)]
    policies = {p["PolicyName"]: p for p in scaling.describe_scaling_policies(
        ServiceNamespace="sagemaker", ResourceId=rid)["ScalingPolicies"]}
    tracking = policies[f"{endpoint}-async-backlog-per-instance"][
        "TargetTrackingScalingPolicyConfiguration"]["CustomizedMetricSpecification"]
    assert (tracking["MetricName"], tracking["Dimensions"]) == (
        "ApproximateBacklogSizePerInstance", [{"Name": "EndpointName", "Value": endpoint}])
    step = policies[f"{endpoint}-async-scale-from-zero"]
    alarm = boto3.client("cloudwatch").describe_alarms(
        AlarmNames=[f"{endpoint}-async-backlog"])["MetricAlarms"][0]
    assert (alarm["MetricName"], alarm["AlarmActions"]) == (
        "HasBacklogWithoutCapacity", [step["PolicyARN"]])

    path = tmp_path / "rows.csv"
    rows.to_csv(path, index=False)
    answered = cli("predict", "--endpoint", endpoint, "--input", str(path), "--async",
                   "--timeout-seconds", "120")
    assert answered.exit_code == 0, answered.output
    assert json.loads(answered.stdout)["predictions"] == models["1"][0].predict(rows).tolist()
    assert f"uploaded the request to {prefix}/input/" in answered.stderr
    assert "answered in " in answered.stderr and f": {prefix}/output/" in answered.stderr

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"dataframe_split": {"columns": ["nope"], "data": [[1]]}}))
    failed = cli("predict", "--endpoint", endpoint, "--input", str(bad), "--async")
    assert failed.exit_code == 1
    assert failed.stderr.splitlines()[-1].startswith(f"error: endpoint {endpoint} failed request ")
    assert "Received client error (400)" in failed.stderr and f"(in {prefix}/failure/" \
        in failed.stderr

    status = json.loads(cli("status", "--endpoint", endpoint, "--output", "json").stdout)
    assert status["hosting"] == {"kind": "async", "serverless": None, "async": {
        "output": f"{prefix}/output", "failure": f"{prefix}/failure", "success_topic": topic,
        "error_topic": None}}
    assert status["alarms"] == {f"{endpoint}-async-backlog": alarm["StateValue"]}
    assert "nothing changed" in cli("deploy", f"{MODEL}/1", "--endpoint", endpoint).stdout
    refused = cli("rollout", f"{MODEL}/1", "--endpoint", endpoint)
    assert refused.exit_code == 1 and f"endpoint {endpoint} is async: " in refused.stderr

    deleted = cli("delete", "--endpoint", endpoint, "--yes")
    assert deleted.exit_code == 0, deleted.output
    assert "1 alarm(s), 1 scaling target(s)" in deleted.stdout
    assert scaling.describe_scalable_targets(ServiceNamespace="sagemaker",
                                             ResourceIds=[rid])["ScalableTargets"] == []
