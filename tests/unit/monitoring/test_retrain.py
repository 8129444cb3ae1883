"""The retrain trigger's contract with the workflow: the MLproject entry point, its documented
``-P`` names and the settings keys, checked against the files that define them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from core.settings import load_settings
from monitoring import retrain

REPO = Path(__file__).resolve().parents[3]


def _documented_parameters() -> set[str]:
    """The ``-P`` names MLproject's header documents (``#   name   what it is``)."""
    header = (REPO / "MLproject").read_text().split("\nname:", 1)[0]
    names = set()
    for line in header.splitlines():
        if m := re.match(r"#   (\w+(?:, \w+)*)\s{2,}", line):
            names.update(n.strip() for n in m.group(1).split(","))
    return names


def test_the_entry_point_exists_and_every_parameter_used_is_documented():
    project = yaml.safe_load((REPO / "MLproject").read_text())
    assert retrain.ENTRY_POINT in project["entry_points"]
    assert set(retrain.PARAMETERS) <= _documented_parameters()
    params = retrain.workflow_parameters("new.csv", "team", "churn", "label", "why")
    assert set(params) <= set(retrain.PARAMETERS)


def test_the_settings_it_passes_are_real_settings_and_say_retrain():
    params = retrain.workflow_parameters("new.csv", "local", "churn",
                                         reason=retrain.trigger_reason("abc123"))
    settings = load_settings("local", params["set"].split(";"))
    assert settings.register.trigger == retrain.TRIGGER
    assert settings.register.trigger_reason == ("retraining after monitoring run abc123 "
                                                "crossed a threshold")


@pytest.mark.parametrize("reason", ["a; b", "x;y;z"])
def test_a_reason_cannot_break_the_set_list(reason):
    params = retrain.workflow_parameters("d.csv", "local", "m", reason=reason)
    settings = load_settings("local", params["set"].split(";"))
    assert ";" not in settings.register.trigger_reason


def test_the_outcome_is_read_from_mlflow_not_from_printed_lines(isolated_tracking):
    import mlflow

    client = mlflow.MlflowClient()
    exp = client.create_experiment("retrain-outcome")
    register = client.create_run(exp, tags={"mlops.crowned": "False",
                                            "mlops.crown_reason": "not better"})
    workflow = client.create_run(exp, tags={"mlops.model_version": "1",
                                            "mlops.register_run": register.info.run_id})
    client.create_registered_model("churn")
    client.create_model_version("churn", "file:///nowhere", run_id=workflow.info.run_id)
    client.set_registered_model_alias("churn", "challenger", "1")
    outcome = retrain.read_outcome(client, workflow.info.run_id, "churn")
    assert (outcome.version, outcome.aliases, outcome.crowned, outcome.crown_reason) == (
        "1", ("challenger",), False, "not better")
    empty = client.create_run(exp)
    assert retrain.read_outcome(client, empty.info.run_id, "churn").version is None


def test_the_workflow_gets_the_boundarys_environment_and_its_own_identity(tmp_path):
    monitor = {"PATH": "/venv/bin", "MLFLOW_TRACKING_URI": "https://mlflow.example.com",
               "MLFLOW_TRACKING_USERNAME": "monitor", "MLFLOW_TRACKING_PASSWORD": "m0n1tor",
               "AWS_SECRET_ACCESS_KEY": "x", "MLOPS_WEBHOOK_SECRET": "y"}
    env = retrain.workflow_environment(tmp_path, monitor)
    assert env["MLFLOW_TRACKING_URI"] == env["MLFLOW_REGISTRY_URI"] == monitor[
        "MLFLOW_TRACKING_URI"]  # it registers on the monitor's server...
    assert not {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",  # ...not as the monitor
                "AWS_SECRET_ACCESS_KEY", "MLOPS_WEBHOOK_SECRET"} & set(env)
    assert env["HOME"] == str(tmp_path / "home") and env["PATH"] == "/venv/bin"

    monitor.update({retrain.RETRAIN_USERNAME: "retrainer", retrain.RETRAIN_PASSWORD: "r3train"})
    env = retrain.workflow_environment(tmp_path, monitor)
    assert (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"]) == (
        "retrainer", "r3train")
    assert retrain.RETRAIN_USERNAME not in env and retrain.RETRAIN_PASSWORD not in env
