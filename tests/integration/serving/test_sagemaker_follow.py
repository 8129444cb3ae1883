"""``python -m serving sagemaker follow``: the endpoint follows the alias; a rollback reverts it.

AWS itself is mocked (it cannot exist here): SageMaker, S3 and CloudWatch are the extended
moto of ``tests/support/moto_sagemaker`` (``UpdateEndpoint`` with guardrail rollbacks) over
HTTP. The registry, its history and the follower process are real. The long-running service
taking a real tracking server's webhooks is tested in ``test_shadow_and_webhook.py``.
"""

from __future__ import annotations

import threading
import uuid

import boto3
import mlflow
import pytest

from core.aliases import move_alias, read_history
from tests.integration.serving.test_sagemaker import (
    _alarm_when_updating,
    champion,
    cli,
    registry_history,
)
from tests.support.sagemaker_registry import MODEL

pytestmark = pytest.mark.integration

FAST = ("--canary", "10", "--bake-minutes", "0.5", "--termination-wait-seconds", "0",
        "--poll-seconds", "0.2")


def endpoint_tags(endpoint: str) -> dict[str, str]:
    sm = boto3.client("sagemaker")
    arn = sm.describe_endpoint(EndpointName=endpoint)["EndpointArn"]
    return {t["Key"]: t["Value"] for t in sm.list_tags(ResourceArn=arn)["Tags"]}


def deployed(endpoint: str) -> None:
    result = cli("deploy", f"{MODEL}@champion", "--endpoint", endpoint)
    assert result.exit_code == 0, result.output


def test_promote_rollout_alarm_reverts_the_alias(aws, versions, monkeypatch):
    endpoint = f"follow-bad-{uuid.uuid4().hex[:6]}"
    deployed(endpoint)
    client = mlflow.MlflowClient()
    move_alias(client, MODEL, "2", "champion", reason="v2 validated", by="rita")
    stop = threading.Event()
    tripper = threading.Thread(target=_alarm_when_updating,
                               args=(endpoint, f"{endpoint}-guardrail-5xx", stop))
    tripper.start()
    try:
        result = cli("follow", f"{MODEL}@champion", "--endpoint", endpoint, "--once",
                     "--canary", "10", "--bake-minutes", "2")
    finally:
        stop.set()
        tripper.join()
    assert result.exit_code == 1, result.output
    assert result.stderr == (
        f"error: rollout of {MODEL} version 2 to {endpoint} rolled back (alarm "
        f"{endpoint}-guardrail-5xx); alias champion reverted to version 1\n")
    assert champion() == "1"
    moves = read_history(client, MODEL, "champion")[-2:]
    assert [(m.kind, m.version, m.previous, m.by, m.outcome) for m in moves] == [
        ("promote", "2", "1", "rita", "won"), ("revert", "1", "2", "svc-deployer", "won")]
    assert moves[1].reason == (f"SageMaker rolled back endpoint {endpoint}: alarm "
                               f"{endpoint}-guardrail-5xx (rollout of version 2)")
    # what `python -m registry history` shows: the promotion, then its revert
    assert [row[1:7] for row in registry_history(monkeypatch)[-2:]] == [
        ["champion", "promote", "2", "1", "rita", "won"],
        ["champion", "revert", "1", "2", "svc-deployer", "won"]]
    tags = endpoint_tags(endpoint)
    assert tags["mlops.model_version"] == "1" and tags["mlops.follow.version"] == ""
    # the next pass finds the endpoint where the alias is: nothing to do
    again = cli("follow", f"{MODEL}@champion", "--endpoint", endpoint, "--once")
    assert (again.exit_code, again.stdout.strip()) == (
        0, f"endpoint {endpoint} serves {MODEL}@champion (version 1)")
    cloudwatch = boto3.client("cloudwatch")
    cloudwatch.set_alarm_state(AlarmName=f"{endpoint}-guardrail-5xx", StateValue="OK",
                               StateReason="test over")
    assert cli("delete", "--endpoint", endpoint, "--yes").exit_code == 0


def test_promote_rollout_success_tags_the_endpoint(aws, versions):
    endpoint = f"follow-ok-{uuid.uuid4().hex[:6]}"
    deployed(endpoint)
    move_alias(mlflow.MlflowClient(), MODEL, "2", "champion", reason="v2 validated", by="rita")
    result = cli("follow", f"{MODEL}@champion", "--endpoint", endpoint, "--once", *FAST[:6])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"endpoint {endpoint} rolled out {MODEL} version 2",
        f"endpoint {endpoint} serves {MODEL}@champion (version 2)",
    ]
    tags = endpoint_tags(endpoint)
    assert (tags["mlops.model_version"], tags["mlops.run_id"]) == ("2", versions[1]["2"][1])
    update = aws.updates_for(endpoint)[-1]
    assert update.outcome == "Succeeded" and update.canary_percent == 10
    assert champion() == "2"  # the promotion stands; the rollout made no move of its own
    assert read_history(mlflow.MlflowClient(), MODEL, "champion")[-1].kind == "promote"
    assert cli("delete", "--endpoint", endpoint, "--yes").exit_code == 0


def test_restart_mid_rollout_finishes_it(aws, versions):
    """A follower stops while the canary bakes; the next one finishes from the endpoint's tags.

    The first follower gives up waiting (``--timeout-seconds``) and exits, leaving the rollout
    under way exactly as a crash would: the endpoint's ``mlops.follow.*`` tags are written
    before the wait begins.
    """
    endpoint = f"follow-crash-{uuid.uuid4().hex[:6]}"
    deployed(endpoint)
    aws.hold(endpoint)
    move_alias(mlflow.MlflowClient(), MODEL, "2", "champion", reason="v2", by="rita")
    try:
        first = cli("follow", f"{MODEL}@champion", "--endpoint", endpoint, "--once",
                    *FAST[:6], "--timeout-seconds", "1")
        assert first.exit_code == 1, first.output
        assert f"endpoint {endpoint} still Updating" in first.stderr
        tags = endpoint_tags(endpoint)
        assert (tags["mlops.follow.version"], tags["mlops.follow.previous"]) == ("2", "1")
        assert boto3.client("sagemaker").describe_endpoint(
            EndpointName=endpoint)["EndpointStatus"] == "Updating"
        # a release manager moves the alias again while the orphaned rollout bakes
        move_alias(mlflow.MlflowClient(), MODEL, "1", "champion", reason="back to v1",
                   by="rita")
    finally:
        aws.release(endpoint)
    result = cli("follow", f"{MODEL}@champion", "--endpoint", endpoint, "--once", *FAST[:6])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"endpoint {endpoint} rolled out {MODEL} version 2; champion moved to version 1 "
        "meanwhile: that rollout comes next",
        f"endpoint {endpoint} rolled out {MODEL} version 1",
        f"endpoint {endpoint} serves {MODEL}@champion (version 1)",
    ]
    assert [u.outcome for u in aws.updates_for(endpoint)] == ["Succeeded", "Succeeded"]
    tags = endpoint_tags(endpoint)
    assert (tags["mlops.model_version"], tags["mlops.follow.version"]) == ("1", "")
    assert cli("delete", "--endpoint", endpoint, "--yes").exit_code == 0


def test_follow_refuses_a_reference_without_alias(aws):
    result = cli("follow", f"{MODEL}/2", "--endpoint", "x")
    assert result.exit_code == 2
    assert "names no alias to follow" in result.stderr
    result = cli("follow", f"{MODEL}@champion", "--endpoint", "x", "--canary", "60")
    assert result.exit_code == 2
