"""``python -m serving sagemaker`` against an honest test double of AWS.

AWS itself is mocked — it cannot exist here: S3, SageMaker, CloudWatch, IAM, STS, ECR and
Application Auto Scaling are moto 5.2.5, extended in-process (``tests/support/moto_sagemaker``:
``UpdateEndpoint`` with guardrail rollbacks, ``InvokeEndpoint`` and transform jobs answered by
the pushed model archive served with the real MLflow scoring server) and driven by boto3 over
HTTP. The MLflow registry, the models and the scoring servers are real.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass

import boto3
import mlflow
import pandas as pd
import pytest
from botocore.exceptions import ClientError
from click.testing import CliRunner

from core.aliases import move_alias, read_history
from serving.sagemaker.cli import main
from tests.support.moto_sagemaker import ACCOUNT_ID
from tests.support.processes import REPO, child_env
from tests.support.sagemaker_registry import DEPLOYER, IMAGE, MODEL, ROLE  # noqa: F401

pytestmark = pytest.mark.integration

@dataclass(frozen=True)
class Ran:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def cli(*args: str) -> Ran:
    """``python -m serving sagemaker ARGS`` in-process: exit code and what it printed."""
    with CliRunner().isolation() as (out, err, _):
        code = main(list(args))
    return Ran(code, out.getvalue().decode(), err.getvalue().decode())


def registry_history(monkeypatch) -> list[list[str]]:
    """``python -m registry history cancer --output json``: each move as the table's cells."""
    from registry.cli import main as registry_main

    with CliRunner().isolation() as (out, err, _):
        code = registry_main(["history", MODEL, "--alias", "champion", "--output", "json"])
    assert code == 0, err.getvalue().decode()
    return [[a["at"], a["alias"], a["kind"], a["version"] or "-", a["previous"] or "-", a["by"],
             a["outcome"], "yes" if a["forced"] else "no", a["reason"]]
            for a in json.loads(out.getvalue().decode())["attempts"]]


def champion() -> str:
    return str(mlflow.MlflowClient().get_model_version_by_alias(MODEL, "champion").version)


def predict(endpoint: str, rows: pd.DataFrame, tmp_path) -> list:
    path = tmp_path / "rows.csv"
    rows.to_csv(path, index=False)
    result = cli("predict", "--endpoint", endpoint, "--input", str(path))
    assert result.exit_code == 0, result.output + result.stderr
    return json.loads(result.stdout)["predictions"]


def _alarm_when_updating(endpoint: str, alarm: str, stop: threading.Event) -> None:
    """What CloudWatch does when the canary answers 5xx: the guardrail alarm fires."""
    sm, cw = boto3.client("sagemaker"), boto3.client("cloudwatch")
    while not stop.is_set():
        if sm.describe_endpoint(EndpointName=endpoint)["EndpointStatus"] == "Updating":
            cw.set_alarm_state(AlarmName=alarm, StateValue="ALARM",
                               StateReason="canary answered 5xx (test)")
            return
        time.sleep(0.1)


@pytest.mark.slow
def test_deploy_predict_rollback_rollout_delete(aws, versions, tmp_path, monkeypatch):
    X, models = versions
    rows = X.sample(25, random_state=0)
    v1, v2 = (models[v][0].predict(rows).tolist() for v in ("1", "2"))
    assert v1 != v2
    endpoint = f"cancer-{uuid.uuid4().hex[:6]}"
    sm = boto3.client("sagemaker")

    # deploy the champion: archive, model, config, endpoint, tags
    result = cli("deploy", f"{MODEL}@champion", "--endpoint", endpoint)
    assert result.exit_code == 0, result.stderr
    assert f"endpoint {endpoint} created: {MODEL} version 1" in result.stdout
    desc = sm.describe_endpoint(EndpointName=endpoint)
    assert desc["EndpointStatus"] == "InService"
    first_config = desc["EndpointConfigName"]
    tags = {t["Key"]: t["Value"] for t in sm.list_tags(ResourceArn=desc["EndpointArn"])["Tags"]}
    assert tags["mlops.model_name"] == MODEL
    assert tags["mlops.model_version"] == "1"
    assert tags["mlops.run_id"] == models["1"][1]
    assert predict(endpoint, rows, tmp_path) == v1

    # roll out the challenger; the canary trips the 5xx alarm: rollback, alias stays
    # (the double runs 5 bake minutes in 15 s: time enough for the alarm to fire)
    stop = threading.Event()
    tripper = threading.Thread(
        target=_alarm_when_updating, args=(endpoint, f"{endpoint}-guardrail-5xx", stop)
    )
    tripper.start()
    try:
        result = cli("rollout", f"{MODEL}@challenger", "--endpoint", endpoint,
                     "--canary", "10", "--bake-minutes", "5")
    finally:
        stop.set()
        tripper.join()
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert "rolled back" in result.stderr and f"{endpoint}-guardrail-5xx" in result.stderr
    assert "alias champion stays on version 1" in result.stderr
    assert champion() == "1"
    desc = sm.describe_endpoint(EndpointName=endpoint)
    assert (desc["EndpointStatus"], desc["EndpointConfigName"]) == ("InService", first_config)
    assert predict(endpoint, rows, tmp_path) == v1

    update = aws.updates_for(endpoint)[-1]
    assert update.outcome == "RolledBack"
    policy = update.deployment_config["BlueGreenUpdatePolicy"]
    assert policy["TrafficRoutingConfiguration"] == {
        "Type": "CANARY", "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 10},
        "WaitIntervalInSeconds": 300,
    }
    assert update.alarms == [f"{endpoint}-guardrail-5xx", f"{endpoint}-guardrail-latency"]
    alarms = boto3.client("cloudwatch").describe_alarms(AlarmNames=update.alarms)["MetricAlarms"]
    assert {a["MetricName"] for a in alarms} == {"Invocation5XXErrors", "ModelLatency"}

    # roll out again with healthy alarms: the endpoint takes v2, then the alias moves
    result = cli("rollout", f"{MODEL}@challenger", "--endpoint", endpoint,
                 "--canary", "10", "--bake-minutes", "0.5", "--termination-wait-seconds", "0")
    assert result.exit_code == 0, result.stderr
    assert "alias champion -> version 2" in result.stdout
    assert champion() == "2"
    assert aws.updates_for(endpoint)[-1].outcome == "Succeeded"
    # the move is THE alias move: in the registry's history, by whom, why, kind rollout
    when, alias, kind, version, previous, by, outcome = registry_history(monkeypatch)[-1][:7]
    assert (alias, kind, version, previous, by, outcome) == (
        "champion", "rollout", "2", "1", DEPLOYER, "won")
    moved = read_history(mlflow.MlflowClient(), MODEL, "champion")[-1]
    assert (moved.kind, moved.version, moved.outcome) == ("rollout", "2", "won")
    assert moved.reason.startswith(f"SageMaker rollout to endpoint {endpoint}: canary 10%, "
                                   "bake 0.5 min, rollback at 1 5xx/min or p99 1000 ms; ")
    recorded = json.loads(moved.reason.split("deployment config ", 1)[1])
    assert recorded == aws.updates_for(endpoint)[-1].deployment_config
    tags = mlflow.MlflowClient().get_model_version(MODEL, "2").tags
    assert (tags["mlops.promotion.champion.kind"], tags["mlops.promotion.champion.by"]) == (
        "rollout", DEPLOYER)
    assert predict(endpoint, rows, tmp_path) == v2
    status = cli("status", "--endpoint", endpoint)
    assert status.exit_code == 0
    assert f"{MODEL} version 2" in status.stdout and "InService" in status.stdout

    # delete: endpoint, configs, models and alarms go
    result = cli("delete", "--endpoint", endpoint, "--yes")
    assert result.exit_code == 0, result.stderr
    assert sm.list_endpoints(NameContains=endpoint)["Endpoints"] == []
    assert not [c for c in sm.list_endpoint_configs(NameContains=endpoint)["EndpointConfigs"]]
    gone = cli("status", "--endpoint", endpoint)
    assert gone.exit_code == 1
    assert gone.stderr == f"error: endpoint {endpoint} does not exist; create it with " \
        f"`python -m serving sagemaker deploy NAME@ALIAS --endpoint {endpoint}`\n"


def test_model_error_is_reported_and_endpoint_keeps_serving(aws, versions, tmp_path):
    X, models = versions
    endpoint = f"errors-{uuid.uuid4().hex[:6]}"
    bucket = aws.bucket
    assert cli("deploy", f"{MODEL}/1", "--endpoint", endpoint,
               "--data-capture", f"s3://{bucket}/capture").exit_code == 0
    sm = boto3.client("sagemaker")
    config = sm.describe_endpoint_config(
        EndpointConfigName=sm.describe_endpoint(EndpointName=endpoint)["EndpointConfigName"])
    assert config["DataCaptureConfig"]["DestinationS3Uri"] == f"s3://{bucket}/capture"
    assert config["DataCaptureConfig"]["InitialSamplingPercentage"] == 100
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"dataframe_split": {"columns": ["nope"], "data": [[1]]}}))
    result = cli("predict", "--endpoint", endpoint, "--input", str(bad))
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: endpoint {endpoint}: ModelError: ")
    rows = X.head(5)
    assert predict(endpoint, rows, tmp_path) == models["1"][0].predict(rows).tolist()
    # the endpoint's data capture holds the answered request, readable by the monitor
    from monitoring import capture as monitor
    from serving.online import protocol

    s3 = boto3.client("s3")
    captured = monitor.read_capture_lines(f"s3://{bucket}/capture/{endpoint}", s3)
    assert len(captured) == 1  # the answered request; the refused one was not captured
    columns = protocol.columns_from_schema(models["1"][0].metadata.get_input_schema())
    inputs, preds = monitor.captured_frames(captured, lambda body, ctype: protocol.parse_frame(
        body, protocol.split_content_type(ctype), columns))
    pd.testing.assert_frame_equal(inputs, rows.reset_index(drop=True), check_dtype=False)
    assert preds.tolist() == models["1"][0].predict(rows).tolist()
    assert cli("delete", "--endpoint", endpoint, "--yes").exit_code == 0
    missing = cli("rollout", f"{MODEL}/2", "--endpoint", endpoint)
    assert (missing.exit_code, missing.stderr.split(";")[0]) == (
        1, f"error: endpoint {endpoint} does not exist")
    assert champion() == "1"
    bad_ref = cli("deploy", "not a ref", "--endpoint", endpoint)
    assert bad_ref.exit_code == 2  # bad usage, as in every command line
    assert bad_ref.stderr == ("error: 'not a ref' is not a model reference; "
                              "use NAME@ALIAS, NAME/VERSION\n")
    unknown = cli("deploy", f"{MODEL}@nobody", "--endpoint", endpoint)
    assert (unknown.exit_code, unknown.stderr) == (
        1, f"error: model '{MODEL}' has no alias 'nobody'\n")


@pytest.mark.slow
def test_promotion_during_rollout_wins_and_rollout_exits_3(aws, versions, tmp_path,
                                                            monkeypatch):
    """A release manager moves champion while the canary bakes: the rollout loses the race."""
    X, models = versions
    client = mlflow.MlflowClient()
    if "3" not in {str(v.version) for v in client.search_model_versions(f"name='{MODEL}'")}:
        v1 = client.get_model_version(MODEL, "1")
        client.create_model_version(MODEL, v1.source, v1.run_id)
    endpoint = f"race-{uuid.uuid4().hex[:6]}"
    assert cli("deploy", f"{MODEL}@champion", "--endpoint", endpoint).exit_code == 0
    sm = boto3.client("sagemaker")
    promoted = []

    def promote_when_updating():
        try:
            while sm.describe_endpoint(EndpointName=endpoint)["EndpointStatus"] != "Updating":
                time.sleep(0.05)
            promoted.append(move_alias(client, MODEL, "3", "champion", by="alice",
                                       reason="hotfix: v3 is the release"))
        finally:
            aws.release(endpoint)  # the canary's bake ends after the promotion, however slow

    aws.hold(endpoint)
    promoter = threading.Thread(target=promote_when_updating)
    promoter.start()
    try:
        result = cli("rollout", f"{MODEL}@challenger", "--endpoint", endpoint, "--canary", "10",
                     "--bake-minutes", "0.5", "--termination-wait-seconds", "0")
    finally:
        promoter.join(timeout=60)
        aws.release(endpoint)
    assert promoted and promoted[0].status == "promoted"
    assert result.exit_code == 3, result.output
    assert result.stderr == (
        f"error: endpoint {endpoint} serves {MODEL} version 2 (rolled out), but alias champion "
        "was moved to version 3 during the rollout and stays there; to make the rollout win: "
        f"`python -m registry promote {MODEL}/2 --to champion --reason ...`\n")
    assert champion() == "3"
    # the endpoint keeps what it rolled out
    assert aws.updates_for(endpoint)[-1].outcome == "Succeeded"
    rows = X.head(10)
    assert predict(endpoint, rows, tmp_path) == models["2"][0].predict(rows).tolist()
    # the history shows the promotion that won and the rollout that lost
    rows = registry_history(monkeypatch)
    assert [r[1:7] for r in rows[-2:]] == [
        ["champion", "promote", "3", "1", "alice", "won"],
        ["champion", "rollout", "2", "1", DEPLOYER, "lost"],
    ]
    assert cli("delete", "--endpoint", endpoint, "--yes").exit_code == 0


def test_batch_transform_over_s3(aws, versions):
    X, models = versions
    rows = X.sample(40, random_state=1)
    s3 = boto3.client("s3")
    for i, part in enumerate((rows.iloc[:20], rows.iloc[20:])):
        s3.put_object(Bucket=aws.bucket, Key=f"batch/in/part-{i}.csv",
                      Body=part.to_csv(index=False).encode())
    result = cli("batch", f"{MODEL}/1", "--input", f"s3://{aws.bucket}/batch/in",
                 "--output", f"s3://{aws.bucket}/batch/out")
    assert result.exit_code == 0, result.stderr
    assert "Completed" in result.stdout
    answers = []
    for i in range(2):
        body = s3.get_object(Bucket=aws.bucket, Key=f"batch/out/part-{i}.csv.out")["Body"]
        answers += json.loads(body.read())["predictions"]
    assert answers == models["1"][0].predict(rows).tolist()
    # The job's model went with the job: SageMaker holds no model for it any more.
    job = next(line for line in result.stdout.splitlines()
               if line.startswith("transform job")).split()[2]
    assert not model_exists(boto3.client("sagemaker").describe_transform_job(
        TransformJobName=job)["ModelName"])


def model_exists(name: str) -> bool:
    """``DescribeModel``: does SageMaker still hold the model?"""
    try:
        boto3.client("sagemaker").describe_model(ModelName=name)
        return True
    except ClientError as exc:
        assert "Could not find model" in str(exc)
        return False


def batch_models() -> set[str]:
    """Every model ``ListModels`` shows that was made for a transform job."""
    sm = boto3.client("sagemaker")
    names, kwargs = set(), {"NameContains": "-batch-model-"}
    while True:
        page = sm.list_models(**kwargs)
        names.update(m["ModelName"] for m in page["Models"])
        if not page.get("NextToken"):
            return names
        kwargs["NextToken"] = page["NextToken"]


def job_model(job: str, *, until_done: bool = False) -> str:
    """The model a transform job runs (after the job ended, with ``until_done``)."""
    sm = boto3.client("sagemaker")
    deadline = time.monotonic() + 120
    while True:
        desc = sm.describe_transform_job(TransformJobName=job)
        if not until_done or desc["TransformJobStatus"] in ("Completed", "Failed", "Stopped"):
            return desc["ModelName"]
        assert time.monotonic() < deadline, f"{job} still {desc['TransformJobStatus']}"
        time.sleep(0.2)


def put_batch_input(bucket: str, prefix: str, rows: pd.DataFrame) -> None:
    boto3.client("s3").put_object(Bucket=bucket, Key=f"{prefix}/in/part-0.csv",
                                  Body=rows.to_csv(index=False).encode())


def test_async_batch_model_goes_once_its_job_ends(aws, versions):
    """An --async job keeps its model while it runs; the first batch after it ended deletes it.

    The double holds job A InProgress (``hold_transform``) as a long job would stay.
    """
    X, models = versions
    rows = X.sample(10, random_state=2)
    prefix = f"async-{uuid.uuid4().hex[:6]}"
    put_batch_input(aws.bucket, prefix, rows)
    io = ["--input", f"s3://{aws.bucket}/{prefix}/in"]
    first, second, third = (f"{prefix}-{n}" for n in ("a", "b", "c"))
    aws.hold_transform(first)
    try:
        started = cli("batch", f"{MODEL}/1", *io, "--output", f"s3://{aws.bucket}/{prefix}/a",
                      "--job-name", first, "--async")
        assert started.exit_code == 0, started.output
        model_a = job_model(first)
        assert f"transform job {first} InProgress" in started.stdout
        assert (f"model {model_a} stays until the job ends; `python -m serving sagemaker "
                f"batch --wait {first}` waits and deletes it") in started.stdout
        tags = boto3.client("sagemaker").list_tags(
            ResourceArn=boto3.client("sagemaker").describe_model(ModelName=model_a)["ModelArn"])
        assert {"Key": "mlops.transform_job", "Value": first} in tags["Tags"]

        # A batch while A still runs leaves A's model alone and removes its own.
        during = cli("batch", f"{MODEL}/2", *io, "--output", f"s3://{aws.bucket}/{prefix}/b",
                     "--job-name", second)
        assert during.exit_code == 0, during.output
        assert "deleted" not in during.stdout
        model_b = job_model(second)
        assert model_b != model_a
        assert model_exists(model_a)
        assert not model_exists(model_b)
    finally:
        aws.release_transform(first)
    assert job_model(first, until_done=True) == model_a
    assert model_exists(model_a)  # nobody has looked since it ended

    after = cli("batch", f"{MODEL}/1", *io, "--output", f"s3://{aws.bucket}/{prefix}/c",
                "--job-name", third)
    assert after.exit_code == 0, after.output
    assert f"deleted 1 model(s) of ended transform jobs: {model_a}" in after.stdout
    assert f"transform job {third} Completed" in after.stdout
    model_c = job_model(third)
    assert not model_exists(model_a)
    assert not model_exists(model_c)
    assert not {model_a, model_b, model_c} & batch_models()
    # Every job ran on its own model: the answers are there.
    s3 = boto3.client("s3")
    for out, version in (("a", "1"), ("b", "2"), ("c", "1")):
        body = s3.get_object(Bucket=aws.bucket, Key=f"{prefix}/{out}/part-0.csv.out")["Body"]
        assert json.loads(body.read())["predictions"] == models[version][0].predict(rows).tolist()


def test_timed_out_batch_says_what_becomes_of_its_model_and_wait_removes_it(aws, versions):
    X, models = versions
    rows = X.sample(10, random_state=3)
    prefix = f"late-{uuid.uuid4().hex[:6]}"
    put_batch_input(aws.bucket, prefix, rows)
    job = f"{prefix}-job"
    aws.hold_transform(job)
    try:
        late = cli("batch", f"{MODEL}/1", "--input", f"s3://{aws.bucket}/{prefix}/in",
                   "--output", f"s3://{aws.bucket}/{prefix}/out", "--job-name", job,
                   "--timeout-seconds", "1")
        assert late.exit_code == 1
        model = job_model(job)
        assert (f"error: transform job {job} still InProgress after 1s; its model {model} "
                f"stays until the job ends, then `python -m serving sagemaker batch --wait "
                f"{job}` or the next `batch` deletes it") in late.stderr
        assert model_exists(model)
        assert model in batch_models()

        still = cli("batch", "--wait", job, "--timeout-seconds", "1")
        assert still.exit_code == 1
        assert f"its model {model} stays until the job ends" in still.stderr
        assert model_exists(model)
    finally:
        aws.release_transform(job)

    waited = cli("batch", "--wait", job)
    assert waited.exit_code == 0, waited.output
    assert waited.stdout.strip() == (f"transform job {job} Completed: answers in "
                                     f"s3://{aws.bucket}/{prefix}/out; model {model} deleted")
    assert not model_exists(model)
    assert model not in batch_models()
    body = boto3.client("s3").get_object(Bucket=aws.bucket,
                                         Key=f"{prefix}/out/part-0.csv.out")["Body"]
    assert json.loads(body.read())["predictions"] == models["1"][0].predict(rows).tolist()

    again = cli("batch", "--wait", job)  # nothing left to delete: still a plain answer
    assert again.exit_code == 0, again.output
    assert "deleted" not in again.stdout
    missing = cli("batch", "--wait", f"{prefix}-nope")
    assert missing.exit_code == 1
    assert f"transform job {prefix}-nope does not exist" in missing.stderr


def test_autoscale_registers_target_tracking(aws, versions):
    endpoint = f"scaled-{uuid.uuid4().hex[:6]}"
    assert cli("deploy", f"{MODEL}/1", "--endpoint", endpoint).exit_code == 0
    result = cli("autoscale", "--endpoint", endpoint, "--min", "1", "--max", "4",
                 "--target-invocations", "500")
    assert result.exit_code == 0, result.stderr
    scaling = boto3.client("application-autoscaling")
    rid = f"endpoint/{endpoint}/variant/AllTraffic"
    targets = scaling.describe_scalable_targets(ServiceNamespace="sagemaker",
                                                ResourceIds=[rid])["ScalableTargets"]
    assert [(t["MinCapacity"], t["MaxCapacity"]) for t in targets] == [(1, 4)]
    policy = scaling.describe_scaling_policies(ServiceNamespace="sagemaker",
                                               ResourceId=rid)["ScalingPolicies"][0]
    tracking = policy["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["TargetValue"] == 500.0
    assert tracking["PredefinedMetricSpecification"]["PredefinedMetricType"] == \
        "SageMakerVariantInvocationsPerInstance"
    bad = cli("autoscale", "--endpoint", endpoint, "--min", "3", "--max", "2",
              "--target-invocations", "500")
    assert (bad.exit_code, bad.stderr) == (1, "error: --max 2 is below --min 3\n")
    assert cli("delete", "--endpoint", endpoint, "--yes").exit_code == 0
    assert scaling.describe_scalable_targets(ServiceNamespace="sagemaker",
                                             ResourceIds=[rid])["ScalableTargets"] == []


# ---------------------------------------------------------------------------- preflight
TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"},
                   "Action": "sts:AssumeRole"}],
}


@pytest.fixture
def account(aws):
    """A ready account: trusted role, bucket, and the serving image in ECR."""
    iam = boto3.client("iam")
    name = f"sm-{uuid.uuid4().hex[:8]}"
    iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(TRUST))
    ecr = boto3.client("ecr")
    repo = f"mlflow-pyfunc-{uuid.uuid4().hex[:6]}"
    ecr.create_repository(repositoryName=repo)
    manifest = {"schemaVersion": 2, "mediaType":
                "application/vnd.docker.distribution.manifest.v2+json", "layers": []}
    ecr.put_image(repositoryName=repo, imageManifest=json.dumps(manifest),
                  imageTag=mlflow.__version__)
    image = f"{ACCOUNT_ID}.dkr.ecr.us-east-1.amazonaws.com/{repo}:{mlflow.__version__}"
    return {"role": f"arn:aws:iam::{ACCOUNT_ID}:role/{name}", "role_name": name,
            "bucket": aws.bucket, "image": image}


def preflight(account, **override):
    values = {**account, **override}
    return cli("preflight", "--execution-role-arn", values["role"], "--bucket",
               values["bucket"], "--image-url", values["image"])


def test_preflight_passes_on_a_ready_account(account):
    result = preflight(account)
    assert result.exit_code == 0, result.output + result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["OK", "region"], ["OK", "credentials"], ["OK", "role"], ["OK", "bucket"], ["OK", "image"]
    ]


@pytest.mark.parametrize(
    ("override", "check", "fix"),
    [
        ({"role": f"arn:aws:iam::{ACCOUNT_ID}:role/missing"}, "role",
         "fix: create it: aws iam create-role --role-name missing"),
        ({"bucket": "no-such-bucket-here"}, "bucket",
         "fix: create it: aws s3 mb s3://no-such-bucket-here --region us-east-1"),
        ({"image": f"{ACCOUNT_ID}.dkr.ecr.us-east-1.amazonaws.com/absent:1.0"}, "image",
         "fix: push the image: mlflow sagemaker build-and-push-container (needs Docker)"),
        ({"image": IMAGE.replace("us-east-1", "eu-west-1")}, "image",
         "fix: push it to us-east-1:"),
    ],
)
def test_preflight_failure_names_its_fix(account, override, check, fix):
    result = preflight(account, **override)
    assert result.exit_code == 1
    failed = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert len(failed) == 1 and failed[0].split()[1] == check
    assert fix in failed[0]
    assert result.stderr == f"error: 1 check(s) failed: {check}\n"


def test_preflight_checks_the_serverless_limits_with_the_account(account):
    args = ["preflight", "--execution-role-arn", account["role"], "--bucket", account["bucket"],
            "--image-url", account["image"], "--serverless"]
    ready = cli(*args, "2048:10")
    assert ready.exit_code == 0, ready.output
    assert ready.stdout.splitlines()[-1].split(None, 2) == [
        "OK", "serverless", "serverless 2048 MB, up to 10 at once"]
    odd = cli(*args, "2000")
    assert odd.exit_code == 1
    assert odd.stdout.splitlines()[-1].split(None, 2) == [
        "FAIL", "serverless", "2000 MB is not a serverless memory size (1024, 2048, 3072, 4096, "
        "5120, 6144: 1 GB steps) -- fix: use --serverless 2048:20"]
    assert odd.stderr == "error: 1 check(s) failed: serverless\n"


def test_preflight_role_not_trusted_by_sagemaker(account):
    iam = boto3.client("iam")
    lambda_only = json.loads(json.dumps(TRUST).replace("sagemaker", "lambda"))
    iam.update_assume_role_policy(RoleName=account["role_name"],
                                  PolicyDocument=json.dumps(lambda_only))
    result = preflight(account)
    assert result.exit_code == 1
    line = next(line for line in result.stdout.splitlines() if line.startswith("FAIL"))
    assert "does not trust sagemaker.amazonaws.com" in line
    assert f"aws iam update-assume-role-policy --role-name {account['role_name']}" in line


def test_cli_process_reports_one_line_errors(aws):
    """The real entry point: bad input is one ``error:`` line on stderr, no traceback."""
    env = child_env({"AWS_ENDPOINT_URL": aws.url})
    proc = subprocess.run(
        [sys.executable, "-m", "serving.sagemaker", "status", "--endpoint", "bad_name!"],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "Traceback" not in proc.stderr
    assert "endpoint name 'bad_name!' is not valid" in proc.stderr


# ---------------------------------------------------------------------- the deploy path


def _sm_names(kind: str, endpoint: str) -> set[str]:
    sm = boto3.client("sagemaker")
    if kind == "models":
        return {m["ModelName"] for m in sm.list_models(NameContains=endpoint,
                                                       MaxResults=100)["Models"]}
    return {c["EndpointConfigName"] for c in sm.list_endpoint_configs(
        NameContains=endpoint, MaxResults=100)["EndpointConfigs"]}


def test_failed_update_removes_the_model_and_config_it_made(aws, versions):
    endpoint = f"fails-{uuid.uuid4().hex[:6]}"
    assert cli("deploy", f"{MODEL}/1", "--endpoint", endpoint).exit_code == 0
    before = (_sm_names("models", endpoint), _sm_names("configs", endpoint))
    for _ in range(2):  # every failed attempt cleans up after itself
        aws.fail_next_update(endpoint, "Unable to provision requested ML compute capacity.")
        result = cli("deploy", f"{MODEL}/2", "--endpoint", endpoint)
        assert result.exit_code == 1, result.output
        assert "did not take cancer version 2" in result.stderr
        assert "Unable to provision" in result.stderr
        assert (_sm_names("models", endpoint), _sm_names("configs", endpoint)) == before
    desc = boto3.client("sagemaker").describe_endpoint(EndpointName=endpoint)
    assert desc["EndpointStatus"] == "InService"
    assert cli("delete", "--endpoint", endpoint, "--yes").exit_code == 0


def test_archives_are_keyed_by_the_model_not_name_and_version(aws, versions, tmp_path):
    """A store recreated after `make clean` has its own v1: it gets its own archive."""
    from serving.sagemaker.package import resolve_model, upload_archive

    s3 = boto3.client("s3")
    first = resolve_model(mlflow.MlflowClient(), f"{MODEL}/1")
    first_url = upload_archive(s3, first, bucket=aws.bucket, prefix="shared")
    # another registry (same model name, same version number, another model inside)
    uri = f"sqlite:///{tmp_path / 'other.db'}"
    other = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    v2 = mlflow.MlflowClient().get_model_version(MODEL, "2")
    other.create_registered_model(MODEL)
    other.create_model_version(MODEL, v2.source, v2.run_id)
    mlflow.set_registry_uri(uri)
    try:
        second = resolve_model(other, f"{MODEL}/1")
        second_url = upload_archive(s3, second, bucket=aws.bucket, prefix="shared")
    finally:
        mlflow.set_registry_uri(aws_registry_uri())
    assert (first.version, second.version) == ("1", "1")
    assert first_url != second_url
    assert first.model_id and first.model_id in first_url
    got = s3.get_object(Bucket=aws.bucket, Key=second_url.split("/", 3)[3])["Body"].read()
    assert got != s3.get_object(Bucket=aws.bucket, Key=first_url.split("/", 3)[3])["Body"].read()


def aws_registry_uri() -> str:
    import os

    return os.environ["MLFLOW_TRACKING_URI"]


def test_deploy_keeps_live_instances_and_already_serving_changes_nothing(aws, versions):
    endpoint = f"keeps-{uuid.uuid4().hex[:6]}"
    sm = boto3.client("sagemaker")
    assert cli("deploy", f"{MODEL}/1", "--endpoint", endpoint, "--instance-type",
               "ml.c5.xlarge", "--instance-count", "3").exit_code == 0
    updates = len(aws.updates_for(endpoint))
    models, configs = _sm_names("models", endpoint), _sm_names("configs", endpoint)

    again = cli("deploy", f"{MODEL}/1", "--endpoint", endpoint)
    assert again.exit_code == 0, again.output
    assert again.stdout.strip() == (f"endpoint {endpoint} already serving {MODEL} version 1 "
                                    f"(run {versions[1]['1'][1]}); nothing changed")
    assert len(aws.updates_for(endpoint)) == updates
    assert (_sm_names("models", endpoint), _sm_names("configs", endpoint)) == (models, configs)

    # a new version keeps the live type and count (autoscaling's), not the settings' defaults
    assert cli("deploy", f"{MODEL}/2", "--endpoint", endpoint).exit_code == 0
    config = sm.describe_endpoint_config(EndpointConfigName=sm.describe_endpoint(
        EndpointName=endpoint)["EndpointConfigName"])["ProductionVariants"][0]
    assert (config["InstanceType"], config["InitialInstanceCount"]) == ("ml.c5.xlarge", 3)
    # a flag still wins
    assert cli("deploy", f"{MODEL}/1", "--endpoint", endpoint,
               "--instance-count", "2").exit_code == 0
    config = sm.describe_endpoint_config(EndpointConfigName=sm.describe_endpoint(
        EndpointName=endpoint)["EndpointConfigName"])["ProductionVariants"][0]
    assert (config["InstanceType"], config["InitialInstanceCount"]) == ("ml.c5.xlarge", 2)
    assert cli("delete", "--endpoint", endpoint, "--yes").exit_code == 0


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--canary", "51", "51: use 1 to 50 (SageMaker's largest canary), or 100 for all at once"),
    ("--canary", "99", "99: use 1 to 50"),
    ("--termination-wait-seconds", "3601", "3601 is not in the range 0<=x<=3600"),
])
def test_rollout_limits_are_sagemakers(aws, flag, value, message):
    result = cli("rollout", f"{MODEL}/2", "--endpoint", "anything", flag, value)
    assert result.exit_code == 2
    assert message in result.stderr
