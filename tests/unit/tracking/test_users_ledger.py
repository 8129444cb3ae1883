"""Granting a user the ledger experiment makes the ledger whole, never an empty experiment."""

from __future__ import annotations

import mlflow

from core.aliases import move_alias
from core.ledger import LEDGER_EXPERIMENT, find_ledger
from tracking.auth import _experiment_id


def test_users_apply_creates_the_ledger_with_its_run():
    client = mlflow.MlflowClient()
    exp_id = _experiment_id(client, LEDGER_EXPERIMENT)
    assert client.get_experiment_by_name(LEDGER_EXPERIMENT).experiment_id == exp_id
    ledger = find_ledger(client)
    assert ledger is not None  # one run, ready for the first move
    assert _experiment_id(client, LEDGER_EXPERIMENT) == exp_id  # applying again changes nothing
    client.create_registered_model("m")
    with mlflow.start_run() as run:
        mlflow.log_param("x", 1)
    client.create_model_version("m", f"runs:/{run.info.run_id}/model", run.info.run_id)
    # with an empty ledger experiment this would wait for a run nobody makes, then fail
    outcome = move_alias(client, "m", "1", "champion", reason="first", by="alice")
    assert outcome.status == "promoted"
