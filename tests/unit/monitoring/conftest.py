"""Monitoring unit tests log their models into the test's own folder."""

from __future__ import annotations

import mlflow
import pytest


@pytest.fixture(autouse=True)
def own_experiment(isolated_tracking, tmp_path):
    """An experiment whose artifacts live under tmp_path (the template store's default
    experiment points at the checkout's ./mlruns)."""
    exp = mlflow.MlflowClient().create_experiment(
        "monitoring-unit", artifact_location=(tmp_path / "artifacts").as_uri()
    )
    mlflow.set_experiment(experiment_id=exp)
    yield
