"""Unit-test fixtures several packages' tests share."""

from __future__ import annotations

import mlflow
import pytest


@pytest.fixture
def own_experiment(isolated_tracking, tmp_path, request):
    """An experiment whose artifacts live under tmp_path, named for the test's package.

    The template store's default experiment points at the checkout's ./mlruns; a package's
    conftest makes this autouse where its tests log models.
    """
    package = request.path.parent.name
    exp = mlflow.MlflowClient().create_experiment(
        f"{package}-unit", artifact_location=(tmp_path / "artifacts").as_uri()
    )
    mlflow.set_experiment(experiment_id=exp)
    yield
