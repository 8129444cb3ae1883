"""Loading a version to score it leaves no download folder behind (local SQLite store)."""

from __future__ import annotations

import gc
import tempfile

import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from registry.scoring import load_model, score_version

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


def test_load_model_keeps_its_folder_only_as_long_as_the_model(versions, tmp_path, monkeypatch):
    client, X = versions
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))

    model = load_model(client, "double", "1")
    assert len(_folders(temp)) == 1  # a pyfunc model may read its files lazily
    assert list(model.predict(X)) == [0.0, 2.0, 4.0, 6.0]
    del model
    gc.collect()
    assert _folders(temp) == []

    clf = load_model(client, "clf", "1")
    assert hasattr(clf, "predict_proba") and _folders(temp) == []  # fully in memory

    with pytest.raises(Exception):  # noqa: B017 - whatever MLflow raises, the folder goes
        load_model(client, "double", "9")
    assert _folders(temp) == []

    for _ in range(3):
        score_version(client, "clf", "1", X, pd.Series([0, 0, 1, 1]), "classification")
    assert _folders(temp) == []


def test_score_version_uses_the_models_classes(versions):
    client, X = versions
    got = score_version(client, "clf", "1", X, pd.Series([0, 0, 1, 1]), "classification")
    assert set(got) == {"roc_auc", "accuracy", "f1", "log_loss"}
    assert np.isfinite(got["log_loss"])
