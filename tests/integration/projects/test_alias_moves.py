"""The workflow's alias moves: through THE alias move, safe by default, never on no evidence.

Real processes: the workflow as a user starts it (``python -m projects``, ``mlflow run``), a real
``mlflow server`` for the team case, ``python -m registry history`` to read what happened.
"""

from __future__ import annotations

import subprocess
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest

from tests.integration.projects.test_workflow import history_rows, registry_history, run_cli
from tests.support.processes import REPO, child_env

pytestmark = pytest.mark.integration
MODEL = "mlops-registry-model"


def _csv(path, n=300, seed=0, columns=("a", "b", "c")):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(rng.normal(size=(n, len(columns))), columns=list(columns))
    df["target"] = (df["a"] + 0.5 * df["b"] + rng.normal(scale=0.5, size=n) > 0).astype(int)
    df.to_csv(path, index=False)
    return path


def _server_cli(server, *args, cwd):
    env = child_env({"MLFLOW_TRACKING_URI": server})
    return subprocess.run([sys.executable, "-m", "projects", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_against_a_server_the_local_profile_only_sets_challenger_unless_told(
        sqlite_server, tmp_path):
    client = mlflow.MlflowClient(tracking_uri=sqlite_server, registry_uri=sqlite_server)
    first = _server_cli(sqlite_server, "main", "--estimators", "linear", "--experiment", "team",
                        cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert f"model version  {MODEL} v1 (aliases: challenger)" in first.stdout
    assert ("champion       not crowned: auto-champion is off against a tracking server "
            f"({sqlite_server})") in first.stdout
    assert client.get_model_version(MODEL, "1").aliases == ["challenger"]
    history = registry_history(MODEL, tmp_path, env={"MLFLOW_TRACKING_URI": sqlite_server})
    rows = history_rows(history.stdout)
    assert [(r[1], r[2], r[3], r[6]) for r in rows] == [("challenger", "auto", "1", "won")]

    # an explicit -P auto_champion=true wins: the data scientist asked for it
    cmd = [sys.executable, "-m", "mlflow", "run", str(REPO), "--env-manager", "local",
           "--experiment-name", "team", "-P", "estimators=linear", "-P", "auto_champion=true"]
    second = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                            env=child_env({"MLFLOW_TRACKING_URI": sqlite_server}))
    assert second.returncode == 0, second.stderr[-3000:]
    # only register ran again: the decision is part of its key, nothing upstream changed
    assert ("ingest reused, validate reused, prepare reused, train reused, evaluate reused, "
            "register ran") in second.stdout
    assert f"model version  {MODEL} v2 (aliases: challenger, champion)" in second.stdout
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == "2"
    rows = history_rows(registry_history(MODEL, tmp_path,
                                         env={"MLFLOW_TRACKING_URI": sqlite_server}).stdout)
    assert [(r[1], r[2], r[3], r[4], r[6]) for r in rows] == [
        ("challenger", "auto", "1", "-", "won"), ("challenger", "auto", "2", "1", "won"),
        ("champion", "auto", "2", "-", "won")]
    assert "register.auto_champion=true (set explicitly)" in rows[2][8]


def test_a_champion_that_cannot_be_scored_is_not_replaced(tmp_path):
    old = _csv(tmp_path / "old.csv", columns=("a", "b", "c"))
    first = run_cli("main", "--source", str(old), "--estimators", "linear", "--experiment", "x",
                    "--model-name", MODEL, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "(aliases: challenger, champion)" in first.stdout
    # the champion's (v1) model file is broken: it cannot be scored on the new test set (a
    # table lacking a column it requires would be refused outright: another model's data)
    pickles = list(tmp_path.rglob("model.pkl"))
    assert len(pickles) == 1, pickles
    pickles[0].write_bytes(b"not a model")
    new = _csv(tmp_path / "new.csv", seed=1, columns=("a", "b", "c"))
    second = run_cli("main", "--source", str(new), "--estimators", "linear", "--experiment",
                     "x", "--model-name", MODEL, cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"model version  {MODEL} v2 (aliases: challenger)" in second.stdout
    summary = next(line for line in second.stdout.splitlines() if line.startswith("champion"))
    assert summary.startswith("champion       not crowned: the champion was not scored on this "
                              "test set (test_roc_auc missing): champion version 1 not "
                              "comparable: ")
    assert summary.split("not comparable: ", 1)[1].strip()  # says what went wrong
    warnings = [line for line in second.stderr.splitlines() if " WARNING " in line]
    assert any("champion v1 could not be scored" in line for line in warnings)
    assert any("version 2 not crowned champion: the champion was not scored" in line
               for line in warnings)
    client = mlflow.MlflowClient()
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == "1"
    register = client.search_runs(
        [client.get_experiment_by_name("x").experiment_id],
        filter_string="tags.`mlops.step` = 'register'", order_by=["attributes.start_time DESC"],
    )[0]
    assert register.data.tags["mlops.crowned"] == "False"
    assert "not scored on this test set" in register.data.tags["mlops.crown_reason"]


def _workflow(*overrides):
    from core.connection import connect
    from core.settings import load_settings
    from projects.workflow import Workflow

    settings = load_settings(overrides=["train.candidates=[{estimator: linear}]",
                                        "experiment=race", *overrides])
    return Workflow(settings, connect())


def _dummy_version(client, name):
    """A version of ``name`` that predicts the prior: any real model beats it."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.dummy import DummyClassifier

    data = load_breast_cancer(as_frame=True)
    model = DummyClassifier(strategy="prior").fit(data.data, data.target)
    with mlflow.start_run(experiment_id=client.create_experiment(f"dummy-{name}-{id(model)}")):
        info = mlflow.sklearn.log_model(model, name="model", serialization_format="cloudpickle",
                                        pip_requirements=["scikit-learn"])
    return str(mlflow.register_model(info.model_uri, name).version)


def test_a_release_managers_promotion_meanwhile_wins_the_race(monkeypatch):
    from core.aliases import current_user, move_alias, read_history
    from projects.workflow import Workflow

    client = mlflow.MlflowClient()
    weak = _dummy_version(client, MODEL)  # v1, the champion the workflow will beat
    move_alias(client, MODEL, weak, "champion", reason="first release", by="rm", kind="promote")
    other = _dummy_version(client, MODEL)  # v2, what a release manager promotes meanwhile

    evaluate = Workflow.evaluate

    def evaluate_then_a_promotion(self):
        outcome = evaluate(self)
        move_alias(client, MODEL, other, "champion", reason="hotfix", by="rm", kind="promote")
        return outcome

    monkeypatch.setattr(Workflow, "evaluate", evaluate_then_a_promotion)
    result = _workflow().run()
    assert result.model_version == "3"
    assert result.crowned is False
    assert result.crown_reason.startswith("a concurrent move won the race: lost the race for "
                                          "'champion'")
    assert result.aliases == ["challenger"]  # still registered, still the challenger
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == other
    moves = [(a.alias, a.kind, a.version, a.by, a.outcome) for a in read_history(client, MODEL)]
    assert moves[-1] == ("champion", "auto", "3", current_user(), "lost")
    assert ("champion", "promote", other, "rm", "won") in moves


def test_retraining_moves_are_recorded_as_retrain(tmp_path):
    from monitoring.retrain import retrain

    data = _csv(tmp_path / "fresh.csv")
    proc = retrain(str(REPO), str(data), "local", "retrain", MODEL, "target",
                   env=child_env(), monitor_run_id="0123abcd")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = history_rows(registry_history(MODEL, tmp_path).stdout)
    assert [(r[1], r[2], r[3]) for r in rows] == [("challenger", "retrain", "1"),
                                                 ("champion", "retrain", "1")]
    assert all(r[8].startswith("retraining after monitoring run 0123abcd crossed a threshold "
                               "(workflow run ") for r in rows)
