"""The model's own data handling, the user's code, and the data rules' messages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core import metrics
from core.settings import load_settings
from projects.artifacts import input_example, schema_frame
from projects.errors import DataError, WorkflowError
from projects.features import TidyFrame
from projects.prepare import Preprocessing, feature_steps, split_data
from projects.train import fit_candidate, make_pipeline, pick_best, train_candidates
from projects.validate import check_data, check_types, infer_task


@pytest.fixture(autouse=True)
def catalogue_as_found():
    """Custom metrics registered by a test leave the process-wide catalogue afterwards."""
    before = dict(metrics.METRICS)
    yield
    metrics.METRICS.clear()
    metrics.METRICS.update(before)


def messy(n=200, seed=0) -> pd.DataFrame:
    """Real-world shapes: dates as text, numbers as text, booleans, Int64 with gaps, free text."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    return pd.DataFrame({
        "when": pd.date_range("2021-01-01", periods=n, freq="37h").strftime("%Y-%m-%d %H:%M"),
        "amount": [f"{v:.2f}" for v in rng.normal(100, 10, n)],
        "flag": rng.choice([True, False], n),
        "count": pd.array([None if i % 7 == 0 else i % 5 for i in range(n)], dtype="Int64"),
        "note": [f"free text number {i} {rng.integers(1e9)}" for i in range(n)],
        "colour": rng.choice(["red", "green", "blue"], n),
        "x": x,
        "target": (x + rng.normal(scale=0.5, size=n) > 0).astype(int),
    })


def test_real_world_columns_become_features_inside_the_model():
    df = messy()
    tidy = TidyFrame().fit(df.drop(columns="target"))
    assert tidy.kinds_["when"] == "datetime" and tidy.kinds_["amount"] == "numeric"
    assert tidy.kinds_["flag"] == "bool" and tidy.kinds_["count"] == "numeric"
    assert tidy.dropped_ == {"note": "free text or identifier (200 distinct values in 200 rows)"}
    out = tidy.transform(df.drop(columns="target"))
    assert {"when_year", "when_month", "when_weekday", "when_hour"} <= set(out.columns)
    assert "note" not in out.columns and out["amount"].dtype == float
    assert out["count"].isna().sum() == df["count"].isna().sum()
    # the whole pipeline fits and predicts on such a table, no traceback
    model = make_pipeline("classification", Preprocessing(), "linear", {}, 0)
    model.fit(df.drop(columns="target"), df["target"])
    assert len(model.predict(df.drop(columns="target").head(3))) == 3
    dropped = TidyFrame(datetimes="drop").fit(df.drop(columns="target")).dropped_
    assert dropped["when"] == "datetime column (clean.datetimes: drop)"


def test_a_value_planted_only_in_the_test_split_never_shapes_the_fitted_statistics():
    df = messy(300)
    splits = split_data(df, "target", "classification", 0.2, 0.2, 0)

    def fitted(test):
        res = fit_candidate("classification", Preprocessing(), "linear", {}, 0,
                            splits["train"], test, "target")
        numeric = res.model.named_steps["encode"].named_transformers_["numeric"]
        tidy = res.model.named_steps["tidy"]
        return (tidy.low_["x"], tidy.high_["x"], *numeric.named_steps["impute"].statistics_,
                *numeric.named_steps["scale"].mean_)

    planted = splits["val"].copy()
    planted.loc[0, "x"] = 1e9
    planted.loc[1, "x"] = np.nan
    assert fitted(splits["val"]) == fitted(planted)


def test_an_outlier_sent_to_the_model_is_clipped_as_in_training():
    df = messy(300)
    model = make_pipeline("classification", Preprocessing(), "linear", {}, 0)
    model.fit(df.drop(columns="target"), df["target"])
    high = model.named_steps["tidy"].high_["x"]
    row = df.drop(columns="target").head(1)
    far, fence = row.assign(x=1e12), row.assign(x=high)
    assert model.predict_proba(far).tolist() == model.predict_proba(fence).tolist()


def test_a_mostly_numeric_column_with_bad_cells_fails_naming_them_or_coerces():
    df = messy(50).drop(columns=["note"])
    df.loc[[3, 17], "amount"] = ["n/a", "12,5kg"]
    with pytest.raises(DataError) as err:
        check_data(df, "target", "classification")
    assert str(err.value) == (
        "column 'amount': rule 'numeric' failed: 2 of 50 cells are not numbers: 'n/a' (row 4), "
        "'12,5kg' (row 18); fix them, or set clean.coerce=true to make them missing")
    assert check_types(df, "target", {}, 0.9, coerce=True) == {"amount": 2}
    # a declared type names the cells too
    with pytest.raises(DataError, match=r"column 'amount': rule 'type float' failed: 2 of 50 "
                                        r"cells are not numbers: 'n/a' \(row 4\)"):
        check_data(df, "target", "classification", {"amount": "float"})


def test_task_auto_and_plain_messages():
    assert infer_task(pd.Series(np.linspace(100, 200, 300)))[0] == "regression"
    assert infer_task(pd.Series(["a", "b"] * 10)) == (
        "classification", "non-numeric target with 2 classes")
    assert infer_task(pd.Series([0, 1, 2] * 10))[0] == "classification"
    df = pd.DataFrame({"height": np.round(np.linspace(150, 190, 120), 1), "x": range(120)})
    with pytest.raises(DataError) as err:
        split_data(df, "height", "classification", 0.2, 0.2, 0)
    assert "class 150.0 has 1 row(s)" in str(err.value)
    assert "np.float64" not in str(err.value) and "-P task=regression" in str(err.value)
    with pytest.raises(DataError, match=r"not in the data \(did you mean 'species'\?\)"):
        check_data(pd.DataFrame({"species": ["a", "b"], "x": [1, 2]}), "specie", "auto")


def test_signature_frame_keeps_ints_and_the_example_shows_missing_values():
    X = pd.DataFrame({"n": pd.array([1, 2, 3, 4, 5, 6, 7], dtype="Int64"),
                      "k": [1, 2, 3, 4, 5, 6, 7],
                      "y": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, np.nan]})
    assert str(schema_frame(X)["n"].dtype) == "int64" and str(X["k"].dtype) == "int64"
    X.loc[2, "n"] = pd.NA
    assert str(schema_frame(X)["n"].dtype) == "float64"
    example = input_example(X, rows=3)
    assert len(example) == 3 and example.isna().any(axis=1).any()


@pytest.fixture(scope="module")
def user_project(tmp_path_factory):
    """One folder for the module: a user file is imported once per process, by its stem."""
    root = tmp_path_factory.mktemp("user_project")
    (root / "steps").mkdir()
    (root / "steps" / "tf_user_code.py").write_text(
        "import pandas as pd\n"
        "from sklearn.preprocessing import FunctionTransformer\n"
        "from sklearn.linear_model import LogisticRegression\n"
        "def double_x(df):\n    return df.assign(x2=df['x'] * 2)\n"
        "def scaler():\n    return FunctionTransformer(lambda d: d.assign(x3=d['x'] * 3))\n"
        "def logistic():\n    return LogisticRegression(max_iter=500)\n"
        "def worst_class_recall(y_true, y_pred):\n"
        "    from sklearn.metrics import recall_score\n"
        "    return float(min(recall_score(y_true, y_pred, average=None)))\n")
    return root


@pytest.fixture
def steps_dir(user_project, monkeypatch):
    monkeypatch.chdir(user_project)  # references are relative to where the workflow runs
    return "steps/tf_user_code.py"


def test_user_features_estimators_and_metrics_are_used_by_the_sweep(steps_dir):
    settings = load_settings(overrides=[
        f"features=[{steps_dir}:double_x, {steps_dir}:scaler]",
        "metrics=[{name: worst_recall, function: " + steps_dir + ":worst_class_recall, "
        "greater_is_better: true, task: classification}]",
        "train.metric=worst_recall",
        "train.candidates=[{estimator: " + steps_dir + ":logistic, grid: {C: [0.01, 1.0]}}]",
    ])
    metrics.register_declared(settings.metrics)  # as the workflow's command does
    assert metrics.get("worst_recall").greater_is_better
    assert "worst_recall" in metrics.names("classification")
    df = messy(200)
    splits = split_data(df, "target", "classification", 0.2, 0.2, 0)
    prep = Preprocessing.from_settings(settings)
    assert [name for name, _ in feature_steps(prep.features)] == [
        "feature0_double_x", "feature1_scaler"]
    results = train_candidates("classification", prep, [(c.estimator, {"C": c2})
                               for c in settings.train.candidates for c2 in (0.01, 1.0)],
                               splits["train"], splits["val"], "target", 0, n_jobs=2)
    assert all("worst_recall" in r.metrics for r in results)
    best = pick_best(results, "worst_recall")
    assert best.model.named_steps["model"].C in (0.01, 1.0)
    assert {"x2", "x3"} <= set(best.model.named_steps["tidy"].kinds_)
    assert settings.user_code("train") and settings.user_code("ingest") == ()


def test_broken_user_code_is_one_line(steps_dir):
    with pytest.raises(WorkflowError, match=r"features: steps/tf_user_code.py:nope: "
                                            r"tf_user_code.py defines no function 'nope'"):
        make_pipeline("classification", Preprocessing(features=(f"{steps_dir}:nope",)),
                      "linear", {}, 0)
    with pytest.raises(WorkflowError, match="grid parameter.s. depth unknown to "
                                            "LogisticRegression"):
        make_pipeline("classification", Preprocessing(), f"{steps_dir}:logistic",
                      {"depth": 3}, 0)
    df = messy(60)
    failed = fit_candidate("classification", Preprocessing(features=(f"{steps_dir}:double_x",)),
                           "linear", {}, 0, df.drop(columns="x"), df.drop(columns="x"), "target")
    assert failed.model is None and failed.error.startswith("KeyError: ")
    with pytest.raises(WorkflowError, match=r"^every candidate failed: linear: KeyError: "):
        pick_best([failed], "roc_auc")


def test_the_user_files_are_part_of_the_keys_of_the_steps_that_run_them(steps_dir):
    from projects.cache_keys import cache_key

    settings = load_settings(overrides=[f"features=[{steps_dir}:double_x]"])
    before = {step: cache_key(step, settings, "up") for step in ("ingest", "validate", "train")}
    path = Path(steps_dir)
    original = path.read_text()
    try:
        path.write_text(original + "\n# edited\n")
        after = {step: cache_key(step, settings, "up") for step in ("ingest", "validate", "train")}
    finally:
        path.write_text(original)
    assert before["ingest"] == after["ingest"] and before["validate"] == after["validate"]
    assert before["train"] != after["train"]


def with_identifiers(n=300, seed=0) -> pd.DataFrame:
    """Identifiers of every shape a file brings, next to look-alikes that are features."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    return pd.DataFrame({
        "Unnamed: 0": np.arange(n),                         # the index pandas or R wrote
        "customer_id": rng.integers(0, 50, n),              # named like an id, repeated
        "rowno": rng.permutation(n) + 1000,                 # numbers the rows, any name
        "ticket": [f"T{i:05d}" for i in rng.permutation(n)],  # a key: unique text
        "population": rng.permutation(n) * 997 + 10_000,    # unique integers, wide: a feature
        "when": pd.date_range("2020-01-01", periods=n).strftime("%Y-%m-%d"),  # unique dates
        "x": x,
        "target": (x > 0).astype(int),
    })


def test_identifiers_are_left_out_of_the_features_unless_kept():
    df = with_identifiers()
    X = df.drop(columns="target")
    tidy = TidyFrame().fit(X)
    assert tidy.identifiers_ == {
        "Unnamed: 0": "identifier (named like an id)",
        "customer_id": "identifier (named like an id)",
        "rowno": "identifier (integers unique per row, numbering the rows)",
        "ticket": "identifier (text unique per row)",
    }
    assert set(tidy.dropped_) == set(tidy.identifiers_)
    assert tidy.kinds_["population"] == "numeric" and tidy.kinds_["when"] == "datetime"
    # never read when scoring: a row without them gets the same features
    pd.testing.assert_frame_equal(tidy.transform(X.drop(columns=list(tidy.identifiers_))),
                                  tidy.transform(X))
    kept = TidyFrame(keep=("rowno", "ticket")).fit(X)
    assert set(kept.identifiers_) == {"Unnamed: 0", "customer_id"}
    assert kept.kinds_["rowno"] == "numeric" and kept.kinds_["ticket"] == "category"


def test_the_signature_says_which_columns_a_client_may_omit():
    from projects.train import model_signature

    df = with_identifiers(1500)
    df["late_gap"] = df["x"] * 2
    df.loc[1400, "late_gap"] = np.nan  # beyond the first thousand rows
    X = df.drop(columns="target")
    model = make_pipeline("classification", Preprocessing(), "linear", {}, 0).fit(X, df.target)
    signature = model_signature(model, schema_frame(X), input_example(X))
    optional = {c.name for c in signature.inputs.inputs if not c.required}
    assert optional == {"Unnamed: 0", "customer_id", "rowno", "ticket", "late_gap"}
    # MLflow's own check, as both scoring servers run it: a row without them is accepted
    from mlflow.models.utils import _enforce_schema

    row = X.drop(columns=sorted(optional)).head(1)
    assert list(_enforce_schema(row, signature.inputs).columns) == list(row.columns)


def test_features_keep_is_a_setting_and_a_plain_list_is_the_feature_code(steps_dir):
    settings = load_settings(overrides=["features.keep=[rowno, ticket]"])
    assert settings.features.keep == ("rowno", "ticket") and settings.features.code == ()
    assert Preprocessing.from_settings(settings).keep == ("rowno", "ticket")
    listed = load_settings(overrides=[f"features=[{steps_dir}:double_x]"])
    assert listed.features.code == (f"{steps_dir}:double_x",)
    from core.settings import SettingsError

    with pytest.raises(SettingsError, match=r"^setting features.kep: unknown key$"):
        load_settings(overrides=["features.kep=[x]"])
