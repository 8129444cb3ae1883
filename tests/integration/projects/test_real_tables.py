"""Public tables nobody here wrote, on the defaults: trained, registered, scored like stock MLflow.

Each table ships inside an installed package (palmerpenguins, vega_datasets): no download. The
workflow runs as a data scientist runs it (``python -m projects main --source --target
--model-name``) on a temporary store; the registered model then scores rows with gaps and
without the identifier columns, through ``python -m serving predict`` and stock ``mlflow models
predict`` side by side: the same answers.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from tests.integration.projects.test_workflow import parent_of, run_cli, step_runs
from tests.support.processes import REPO, child_env

pytestmark = pytest.mark.integration


def _vega(name: str) -> Path:
    import vega_datasets

    return Path(vega_datasets.__file__).parent / "_data" / name


def _penguins_raw(folder: Path) -> Path:
    """344 rows: long class names, column names with spaces and parentheses, dates as text
    ("Date Egg"), gaps, an "Individual ID"."""
    import palmerpenguins

    return Path(palmerpenguins.__file__).parent / "data" / "penguins-raw.csv"


def _airports(folder: Path) -> Path:
    """600 airports saved as pandas saves a frame (its index as "Unnamed: 0"): IATA codes
    unique per row, city names (free text), 50+ states with gaps."""
    path = folder / "airports.csv"
    pd.read_csv(_vega("airports.csv")).sample(600, random_state=0).to_csv(path)
    return path


def _seattle_weather(folder: Path) -> Path:
    """1,461 days saved as R's write.csv saves them: quoted, row names under an empty
    header; dates as text; five weather classes."""
    path = folder / "seattle-weather.csv"
    df = pd.read_csv(_vega("seattle-weather.csv"))
    df.index = pd.RangeIndex(1, len(df) + 1).astype(str)
    df.to_csv(path, index_label="", quoting=csv.QUOTE_NONNUMERIC)
    return path


def _us_employment(folder: Path) -> Path:
    """120 months as text dates and 22 integer series, each unique per row (not identifiers:
    they measure, their span is far wider than a row counter's)."""
    return _vega("us-employment.csv")


def _cars(folder: Path) -> Path:
    """406 cars with the row numbers in an "index" column (``reset_index``): model names as
    free text, model years as dates in text, gaps in mileage and horsepower."""
    path = folder / "cars.csv"
    pd.read_json(_vega("cars.json")).reset_index().to_csv(path, index=False)
    return path


# name: (file, target, identifier columns the run names, task)
TABLES = {
    "penguins-raw": (_penguins_raw, "Species", ["Individual ID"], "classification"),
    "airports": (_airports, "latitude", ["Unnamed: 0", "iata"], "regression"),
    "seattle-weather": (_seattle_weather, "weather", ["Unnamed: 0"], "classification"),
    "us-employment": (_us_employment, "nonfarm_change", [], "regression"),
    "cars": (_cars, "Origin", ["index"], "classification"),
}


def _same(a, b) -> bool:
    if isinstance(a, float | int) and isinstance(b, float | int):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return a == b


@dataclass
class Trained:
    """One table's workflow run, the rows scored, and both scorers at work on them."""

    source: Path
    run: subprocess.CompletedProcess
    rows: pd.DataFrame
    folder: Path
    ours: subprocess.Popen | None = None
    stock: subprocess.Popen | None = None


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Every table trained in turn on one store; each model's two scorers run in the
    background while the next table trains (the processes' start-up dominates)."""
    folder = tmp_path_factory.mktemp("tables")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    env = child_env({"MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(REPO)})
    out: dict[str, Trained] = {}
    try:
        for name, (make, target, ids, _) in TABLES.items():
            work = folder / name
            work.mkdir()
            source = make(work)
            run = subprocess.run(
                [sys.executable, "-m", "projects", "main", "--source", str(source), "--target",
                 target, "--model-name", name, "--experiment", "tables"],
                cwd=work, env=env, capture_output=True, text=True, timeout=600)
            # rows with gaps and without the identifiers, as a client sends them
            table = pd.read_csv(source)
            gaps = table[table.isna().any(axis=1)].head(15)
            rows = pd.concat([gaps, table.dropna().head(15)]).drop(columns=[target, *ids])
            out[name] = item = Trained(source, run, rows, work)
            if run.returncode != 0:
                continue
            rows.to_csv(work / "rows.csv", index=False)
            pipes = {"cwd": work, "env": env, "stdout": subprocess.PIPE,
                     "stderr": subprocess.PIPE, "text": True}
            item.stock = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "models", "predict", "-m", f"models:/{name}/1",
                 "-i", "rows.csv", "-t", "csv", "-o", "stock.json", "--env-manager", "local"],
                **pipes)
            item.ours = subprocess.Popen(
                [sys.executable, "-m", "serving", "predict", f"models:/{name}@champion",
                 "--input", "rows.csv", "--output", "ours.csv"], **pipes)
        yield uri, out
    finally:
        for item in out.values():
            for proc in (item.ours, item.stock):
                if proc is not None and proc.poll() is None:
                    proc.kill()
                    proc.communicate()


@pytest.mark.parametrize("name", list(TABLES))
def test_a_public_table_trains_on_defaults_and_scores_like_stock_mlflow(trained, name):
    _, target, ids, task = TABLES[name]
    uri, tables = trained
    item = tables[name]
    run = item.run
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"task           {task}" in run.stdout
    assert f"model version  {name} v1 (aliases: challenger, champion)" in run.stdout
    said = [x for x in run.stderr.splitlines() if "left out of the features: identifiers" in x]
    if ids:  # one INFO line naming them, and how to keep them
        assert len(said) == 1 and " INFO " in said[0], run.stderr[-3000:]
        assert f"columns {', '.join(map(repr, ids))} left out" in said[0]
        assert said[0].endswith("(list them in features.keep to use them)")
    else:
        assert not said
    client = mlflow.MlflowClient(tracking_uri=uri)
    train = step_runs(client, parent_of(run.stdout))["train"]
    candidates = client.search_runs(
        [train.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{train.info.run_id}'")
    assert sorted(c.info.status for c in candidates) == ["FINISHED"] * 6

    assert not set(ids) & set(item.rows.columns)
    if name in ("penguins-raw", "airports", "cars"):
        assert item.rows.isna().any(axis=1).any(), "rows with gaps"
    _, stock_err = item.stock.communicate(timeout=300)
    _, our_err = item.ours.communicate(timeout=300)
    assert item.ours.returncode == 0, our_err[-3000:]
    assert item.stock.returncode == 0, stock_err[-3000:]
    stock = json.loads((item.folder / "stock.json").read_text())["predictions"]
    ours = pd.read_csv(item.folder / "ours.csv")["prediction"].tolist()
    assert len(ours) == len(stock) == len(item.rows)
    assert all(_same(a, b) for a, b in zip(stock, ours, strict=True))
    if task == "classification":
        assert set(ours) <= set(pd.read_csv(item.source)[target].dropna())


def test_the_table_of_many_categorical_levels_trains_every_default_candidate(tmp_path):
    """Issue 22's table: 8 text columns of 20 levels each (a wide one-hot matrix)."""
    r = np.random.default_rng(0)
    n = 600
    d = pd.DataFrame({f"cat{i}": r.choice([f"v{j}" for j in range(20)], n) for i in range(8)})
    d["x"] = r.normal(size=n)
    d["y"] = d.x * 3 + r.normal(size=n) + d.cat0.str[1:].astype(int)
    d.to_csv(tmp_path / "sparse.csv", index=False)
    run = run_cli("main", "--source", str(tmp_path / "sparse.csv"), "--target", "y",
                  "--model-name", "sparse", "--experiment", "sparse", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "failed, skipped" not in run.stderr
    client = mlflow.MlflowClient()
    train = step_runs(client, parent_of(run.stdout))["train"]
    candidates = client.search_runs(
        [train.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{train.info.run_id}'")
    assert {c.info.run_name: c.info.status for c in candidates} == {
        "linear C=0.1": "FINISHED", "linear C=1": "FINISHED", "linear C=10": "FINISHED",
        "random_forest max_depth=None n_estimators=100": "FINISHED",
        "random_forest max_depth=8 n_estimators=100": "FINISHED",
        "gradient_boosting learning_rate=0.1 max_iter=100": "FINISHED"}
    boosting = next(c for c in candidates if c.data.params["estimator"] == "gradient_boosting")
    assert boosting.data.metrics["val_r2"] > 0.8


def test_a_failing_candidate_is_recorded_failed_and_the_workflow_goes_on(tmp_path):
    import palmerpenguins

    source = Path(palmerpenguins.__file__).parent / "data" / "penguins.csv"
    broken = "{estimator: gradient_boosting, grid: {learning_rate: [-1.0]}}"
    args = ["main", "--source", str(source), "--target", "species", "--model-name", "penguins",
            "--experiment", "failing"]
    run = run_cli(*args, "--candidates", f"[{{estimator: linear}}, {broken}]", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    warned = [x for x in run.stderr.splitlines() if " WARNING candidate " in x]
    assert len(warned) == 1, run.stderr[-3000:]
    assert warned[0].split(" WARNING ", 1)[1].startswith(
        "candidate gradient_boosting learning_rate=-1.0 failed, skipped: InvalidParameterError: "
        "The 'learning_rate' parameter of HistGradientBoostingClassifier must be")
    client = mlflow.MlflowClient()
    steps = step_runs(client, parent_of(run.stdout))
    candidates = {c.data.params["estimator"]: c for c in client.search_runs(
        [steps["train"].info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{steps['train'].info.run_id}'")}
    assert candidates["linear"].info.status == "FINISHED"
    failed = candidates["gradient_boosting"]
    assert failed.info.status == "FAILED"
    assert failed.data.tags["mlops.error"].startswith("InvalidParameterError: The 'learning_rate'")
    assert steps["train"].data.params["best_estimator"] == "linear"
    assert "model version  penguins v1" in run.stdout

    # every candidate failing fails the workflow, one line listing why
    run = run_cli(*args, "--candidates", f"[{broken}]", cwd=tmp_path)
    assert run.returncode == 1
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("error: every candidate failed: gradient_boosting learning_rate=-1.0: "
                           "InvalidParameterError: ")
    assert "Traceback" not in run.stderr
