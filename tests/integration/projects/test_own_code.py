"""The user's own code and real-world tables, end to end, on data nobody here wrote.

The example of the repository (``examples/penguins``: loader, feature function, fitted feature,
estimator factory and custom metric) is run as its README says; the model it registers is then
loaded from another directory where neither this repository nor the user's files can be
imported (a ``sitecustomize`` refuses them), by MLflow's pyfunc loader and by stock
``mlflow models predict -t csv`` on the user's raw CSV: both must answer, and agree.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from tests.support.processes import REPO, child_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Imported first by every Python started with it on PYTHONPATH: the project's packages and the
# user's step files cannot be imported from anywhere but the model's own code/ folder.
_BLOCKER = """
import sys
class _Refuse:
    blocked = ("projects", "core", "tracking", "serving", "registry")
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.blocked:
            raise ImportError(f"{name} is not importable here (no repository)")
        if name.startswith("penguin_"):
            for entry in sys.path:
                if entry.endswith("code"):
                    return None  # the model's code/ folder: the shipped copy
            raise ImportError(f"{name} is not importable here (no user files)")
        return None
sys.meta_path.insert(0, _Refuse())
"""


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "projects", *args], cwd=cwd, env=child_env(),
                          capture_output=True, text=True, timeout=600)


def elsewhere(tmp_path: Path, model_uri: str) -> tuple[Path, dict]:
    """The model copied to a fresh folder, and an environment without the repository."""
    where = tmp_path / "elsewhere"
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(_BLOCKER)
    mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(where / "model"))
    env = child_env({"PYTHONPATH": str(blocker)})
    env["PYTHONPATH"] = str(blocker)  # and nothing else: not the repository
    return where, env


def stock_predict_csv(where: Path, env: dict, raw_csv: Path) -> list:
    """``mlflow models predict -t csv`` on the user's raw file, as MLflow ships it."""
    out = where / "predictions.json"
    done = subprocess.run(
        [str(Path(sys.executable).parent / "mlflow"), "models", "predict", "-m", "model",
         "-i", str(raw_csv), "-t", "csv", "-o", str(out), "--env-manager", "local"],
        cwd=where, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())["predictions"]


def test_the_example_trains_ships_its_code_and_answers_without_the_repository(tmp_path):
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    first = run_cli("main", "--settings", "examples/penguins/settings.yaml", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "task           classification (auto: non-numeric target with 3 classes)" in \
        first.stdout
    assert "model version  penguins v1" in first.stdout
    client = mlflow.MlflowClient()
    version = client.get_model_version("penguins", "1")
    train = client.get_run(client.get_run(version.run_id).data.tags["mlops.train_run"])
    # the custom metric chose among the built-in and the user's estimator
    assert train.data.params["selection_metric"] == "balanced_accuracy"
    assert "best_val_balanced_accuracy" in train.data.metrics
    assert train.data.tags["mlops.cache.user_code"]

    from palmerpenguins import load_penguins

    table = load_penguins().drop(columns=["species"])
    raw = pd.concat([table[table.isna().any(axis=1)], table.iloc[::10]])  # gaps included
    assert raw.isna().any(axis=None)
    raw_csv = tmp_path / "raw.csv"
    raw.to_csv(raw_csv, index=False)
    where, env = elsewhere(tmp_path, "models:/penguins/1")
    assert sorted(p.name for p in (where / "model" / "code").iterdir()) == [
        "penguin_estimators.py", "penguin_features.py", "penguin_metrics.py"]
    # stock `mlflow models predict` loads it (pyfunc) in a process that cannot import either
    stock = stock_predict_csv(where, env, raw_csv)
    assert set(stock) <= {"Adelie", "Chinstrap", "Gentoo"} and len(stock) == len(raw)
    here = mlflow.pyfunc.load_model("models:/penguins/1").predict(pd.read_csv(raw_csv))
    assert list(here) == stock
    # (a re-run reusing every step: test_workflow.py's end-to-end test; the user's files in
    # the keys, an edited one re-running train: tests/unit/projects/test_features.py)


@pytest.mark.parametrize(("dataset", "target", "task"), [
    ("seattle_weather", "weather", "classification"),  # dates written as text in the CSV
    ("cars", "Miles_per_Gallon", "regression"),  # free text, ints, missing values, dates
])
def test_public_tables_train_register_and_score_like_stock_mlflow(tmp_path, dataset, target,
                                                                  task):
    from vega_datasets import local_data

    table = getattr(local_data, dataset)()
    data_csv = tmp_path / f"{dataset}.csv"
    table.to_csv(data_csv, index=False)
    done = run_cli("main", "--source", str(data_csv), "--target", target, "--model-name",
                   dataset, "--estimators", "linear", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"task           {task} (auto: " in done.stdout
    if dataset == "cars":
        assert "column 'Name' dropped from the model: free text or identifier" in done.stderr
    client = mlflow.MlflowClient()
    version = client.get_model_version(dataset, "1")
    inputs = {c["name"]: c["type"] for c in json.loads(
        mlflow.models.get_model_info(f"models:/{dataset}/1").signature.to_dict()["inputs"])}
    if dataset == "cars":  # the user's ints stay long; a column with gaps is double
        assert inputs["Cylinders"] == "long" and inputs["Weight_in_lbs"] == "long"
        assert inputs["Horsepower"] == "double" and inputs["Year"] == "string"
    else:
        assert inputs["date"] == "string" and inputs["precipitation"] == "double"
    plots = {a.path for a in client.list_artifacts(
        client.get_run(version.run_id).data.tags["mlops.evaluate_run"], "plots")}
    assert ("plots/confusion_matrix.png" if task == "classification"
            else "plots/residuals.png") in plots

    raw = table.drop(columns=[target]).iloc[::10]
    raw_csv = tmp_path / "raw.csv"
    raw.to_csv(raw_csv, index=False)  # the user's raw file, as they would send it
    where, env = elsewhere(tmp_path, f"models:/{dataset}/1")
    stock = stock_predict_csv(where, env, raw_csv)
    ours = mlflow.pyfunc.load_model(f"models:/{dataset}/1").predict(pd.read_csv(raw_csv))
    if task == "regression":
        np.testing.assert_allclose(stock, ours, rtol=1e-9)
    else:
        assert stock == list(ours)
