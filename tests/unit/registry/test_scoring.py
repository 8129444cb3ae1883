"""Scoring versions: their code runs in a child, no download folder stays (local SQLite)."""

from __future__ import annotations

import tempfile

import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from registry.errors import RegistryError
from registry.scoring import score_version, score_versions

PINNED = [f"mlflow=={mlflow.__version__}"]


class _Doubler(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input["a"] * 2


@pytest.fixture
def versions(tmp_path):
    """A pyfunc-only version ``double/1`` and a scikit-learn version ``clf/1``."""
    client = mlflow.MlflowClient()
    exp = client.create_experiment("scoring-unit",
                                   artifact_location=(tmp_path / "artifacts").as_uri())
    X = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0]})
    with mlflow.start_run(experiment_id=exp):
        mlflow.pyfunc.log_model(name="double", python_model=_Doubler(),
                                registered_model_name="double", pip_requirements=PINNED)
        mlflow.sklearn.log_model(LogisticRegression().fit(X, [0, 0, 1, 1]), name="clf",
                                 registered_model_name="clf", pip_requirements=PINNED,
                                 serialization_format="cloudpickle")
    return client, X


def _folders(root):
    return sorted(p.name for p in root.iterdir())


def test_scoring_runs_the_models_in_a_child_and_leaves_no_folder(versions, tmp_path, monkeypatch):
    client, X = versions
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    y = pd.Series([0, 0, 1, 1])

    got = score_versions(client, "clf", {"1": None, "9": None}, X, y, "classification")
    assert set(got["1"]) == {"roc_auc", "accuracy", "f1", "log_loss"}
    assert np.isfinite(got["1"]["log_loss"])  # the model's classes came back from the child
    assert isinstance(got["9"], RegistryError) and "cannot be downloaded" in str(got["9"])
    assert _folders(temp) == []

    with pytest.raises(RegistryError, match="version 1 needs input columns the test split "
                                            "lacks: b"):
        score_version(client, "double", "1", X, y, "regression", inputs={"b": "double"})
    assert _folders(temp) == []
