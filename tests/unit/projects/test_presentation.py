"""What the UI shows of a workflow: run names and the version's description."""

import pytest

from projects.presentation import (
    candidate_run_name,
    data_name,
    version_description,
    workflow_run_name,
)


@pytest.mark.parametrize(("source", "table", "name"), [
    ("bundled:breast_cancer", None, "breast_cancer"),
    ("/data/churn.csv", None, "churn"),
    ("file:///data/sales.2024.parquet", None, "sales"),
    ("s3://bucket/raw/events.parquet", None, "events"),
    ("postgresql://user:secret@db/prod", "orders", "orders"),
    ("postgresql://user:secret@db/prod", None, "sql"),
])
def test_data_name_is_short_and_never_shows_credentials(source, table, name):
    assert data_name(source, table) == name


def test_run_names():
    assert candidate_run_name("random_forest", {"n_estimators": 200, "max_depth": 8}) == (
        "random_forest n_estimators=200 max_depth=8")
    assert candidate_run_name("linear", {}) == "linear"
    metrics = {"test_roc_auc": 0.99412, "val_roc_auc": 0.98}
    assert workflow_run_name("breast_cancer", "random_forest", "roc_auc", metrics) == (
        "breast_cancer · random_forest · roc_auc 0.994")
    # before evaluate: the validation value; before train: the data only
    assert workflow_run_name("iris", "linear", "f1", {"val_f1": 0.5}) == "iris · linear · f1 0.500"
    assert workflow_run_name("iris", None, "f1", {}) == "iris"


def _describe(**changes):
    args = dict(
        metric="roc_auc",
        test_metrics={"test_roc_auc": 0.99, "test_accuracy": 0.95},
        champion_version="3",
        champion_metrics={"test_roc_auc": 0.98, "test_accuracy": 0.96},
        champion_note="scored on this test set",
        crowned=True,
        crown_reason="test_roc_auc 0.9900 beats the champion's 0.9800",
        data={"source": "bundled:breast_cancer", "rows": "569", "digest": "6b74c3002fbdbb8d",
              "target": "target"},
        validation={"rows_in": 569.0, "rows_out": 569.0},
        runs={"workflow run": "abc", "train step": "def"},
        experiment_id="7",
    )
    args.update(changes)
    return version_description(**args)


def test_description_compares_with_the_champion_and_links_the_runs():
    text = _describe()
    assert "champion (version 3)" in text
    assert "| **test_roc_auc** | 0.9900 | 0.9800 | +0.0100 |" in text
    assert "| test_accuracy | 0.9500 | 0.9600 | -0.0100 |" in text
    assert "became **champion**: test_roc_auc 0.9900 beats" in text
    assert "- rows: `569`" in text and "- digest: `6b74c3002fbdbb8d`" in text
    assert "rows_in 569" in text
    assert "[workflow run](#/experiments/7/runs/abc?workflowType=machine_learning)" in text
    assert "[train step](#/experiments/7/runs/def?workflowType=machine_learning)" in text


def test_description_without_a_champion_or_a_comparison():
    first = _describe(champion_version=None, champion_metrics={})
    assert "No champion to compare with" in first
    assert "| **test_roc_auc** | 0.9900 | – | – |" in first
    unscored = _describe(champion_metrics={}, champion_note="not comparable: missing column x",
                         crowned=False, crown_reason="the champion was not scored")
    assert "was not scored on this test set: not comparable: missing column x" in unscored
    assert "is **not** champion" in unscored


@pytest.mark.parametrize(("source", "table", "name"), [
    ("bundled:breast_cancer", None, "mlops-registry-model"),  # the default data's model
    ("bundled:diabetes", None, "diabetes"),
    ("/data/churn.csv", None, "churn"),
    ("data/My Churn (2024).csv", None, "My-Churn-2024"),
    ("s3://bucket/raw/events.parquet", None, "events"),
    ("postgresql://user:secret@db/prod", "orders", "orders"),
    ("steps/load.py:load_penguins", None, "load_penguins"),
    ("/data/@weird:name.csv", None, "weird-name"),
])
def test_a_model_is_named_after_its_data(source, table, name):
    from projects.presentation import model_name_for_data

    assert model_name_for_data(source, table, "bundled:breast_cancer") == name
