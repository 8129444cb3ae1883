"""``python -m serving sagemaker status``: one JSON document for scripts, a plain table in a pipe.

The endpoint's description is a fixed answer (what ``endpoint_status`` reads from SageMaker);
what is asserted is what the user's script or terminal receives.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from serving.sagemaker.cli import main

RUN_ID = "0123456789abcdef0123456789abcdef"
INFO = {
    "endpoint": "churn-prod",
    "status": "InService",
    "endpoint_config": "churn-prod-config-3",
    "model_name": "mlops-registry-model",
    "model_version": "3",
    "run_id": RUN_ID,
    "failure_reason": "",
    "variants": [{"name": "AllTraffic", "instances": 2, "weight": 1.0}],
    "last_deployment": {"BlueGreenUpdatePolicy": {"TrafficRoutingConfiguration": {
        "Type": "CANARY", "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 10},
        "WaitIntervalInSeconds": 300}}, "AutoRollbackConfiguration": {"Alarms": [
            {"AlarmName": "churn-prod-5xx"}]}},
    "alarms": {"churn-prod-5xx": "OK"},
    "hosting": {"kind": "real-time", "serverless": None, "async": None},
}
KEYS = ["endpoint", "status", "endpoint_config", "model_name", "model_version", "run_id",
        "failure_reason", "variants", "last_deployment", "alarms", "hosting"]


@pytest.fixture
def described(monkeypatch):
    import serving.sagemaker.endpoints as endpoints

    seen = []

    def endpoint_status(sm, endpoint, cloudwatch=None):
        seen.append(endpoint)
        return {**INFO, "endpoint": endpoint}

    monkeypatch.setattr(endpoints, "endpoint_status", endpoint_status)
    return seen


def _run(*args: str) -> tuple[int, str, str]:
    with CliRunner().isolation() as (out, err, _):
        code = main(["--region", "us-east-1", "status", "--endpoint", "churn-prod", *args])
    return code, out.getvalue().decode(), err.getvalue().decode()


@pytest.mark.parametrize("flags", [("--output", "json"), ("--json",)])
def test_status_json_is_one_document_with_documented_keys(described, flags):
    code, out, err = _run(*flags)
    assert (code, err) == (0, "")
    document = json.loads(out)
    assert list(document) == KEYS
    assert document["model_version"] == "3" and document["run_id"] == RUN_ID
    assert document["failure_reason"] is None
    assert document["variants"] == [{"name": "AllTraffic", "instances": 2, "weight": 1.0}]
    assert document["last_deployment"] == {
        "blue_green_update_policy": {"traffic_routing_configuration": {
            "type": "CANARY", "canary_size": {"type": "CAPACITY_PERCENT", "value": 10},
            "wait_interval_in_seconds": 300}},
        "auto_rollback_configuration": {"alarms": [{"alarm_name": "churn-prod-5xx"}]}}
    assert document["alarms"] == {"churn-prod-5xx": "OK"}
    assert document["hosting"] == {"kind": "real-time", "serverless": None, "async": None}
    assert described == ["churn-prod"]


def test_status_table_in_a_pipe_is_plain_with_a_short_run_id(described):
    code, out, _ = _run()
    assert code == 0
    assert not set("│┃━─┏┓┗┛") & set(out) and "\x1b[" not in out
    rows = {line.split(None, 1)[0]: line.split() for line in out.splitlines()[1:] if line}
    assert rows["model"][1:] == ["mlops-registry-model", "version", "3"]
    assert rows["run"][2:] == [RUN_ID[:8]]
    assert rows["status"][1] == "InService"


def test_status_output_rejects_an_unknown_format(described):
    code, out, err = _run("--output", "yaml")
    assert code == 2 and out == ""
    assert "'yaml' is not one of 'table', 'json'" in err
    assert described == []
