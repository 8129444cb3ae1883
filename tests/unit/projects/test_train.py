import logging

import numpy as np
import pandas as pd
import pytest
from scipy import sparse
from sklearn.base import is_classifier, is_regressor
from sklearn.datasets import load_diabetes, load_iris
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from core.metrics import is_better
from core.settings import Candidate, load_settings
from projects.errors import WorkflowError
from projects.prepare import Preprocessing, feature_types, split_data
from projects.train import (
    CandidateResult,
    expand_candidates,
    make_pipeline,
    pick_best,
    train_candidates,
)


def test_grid_expands_into_candidates_in_order():
    cands = [Candidate(estimator="linear", grid={"C": [0.1, 1.0]}),
             Candidate(estimator="random_forest")]
    assert expand_candidates(cands) == [("linear", {"C": 0.1}), ("linear", {"C": 1.0}),
                                        ("random_forest", {})]


def test_factory_returns_unfitted_pipelines_for_both_tasks():
    df = load_iris(as_frame=True).frame
    types = feature_types(df, "target")
    clf = make_pipeline("classification", types, "random_forest", {"n_estimators": 5}, 0)
    assert is_classifier(clf.named_steps["model"])
    with pytest.raises(NotFittedError):
        check_is_fitted(clf)
    reg = make_pipeline("regression", types, "linear", {"C": 2.0}, 0)
    assert is_regressor(reg.named_steps["model"])
    assert reg.named_steps["model"].alpha == 0.5


def test_split_is_stratified_and_seeded():
    df = load_iris(as_frame=True).frame
    a = split_data(df, "target", "classification", 0.2, 0.25, 1)
    b = split_data(df, "target", "classification", 0.2, 0.25, 1)
    pd.testing.assert_frame_equal(a["test"], b["test"])
    assert len(a["test"]) == 30 and len(a["val"]) == 30 and len(a["train"]) == 90
    assert a["test"]["target"].value_counts().tolist() == [10, 10, 10]


def test_sweep_fits_every_candidate_in_parallel_and_picks_the_best():
    df = load_diabetes(as_frame=True).frame
    splits = split_data(df, "target", "regression", 0.2, 0.2, 0)
    types = feature_types(df, "target")
    cands = [("linear", {"C": 1.0}), ("linear", {"C": 0.01}), ("gradient_boosting", {"max_iter": 20})]
    results = train_candidates("regression", types, cands, splits["train"], splits["val"],
                               "target", 0, n_jobs=2)
    assert [r.estimator for r in results] == ["linear", "linear", "gradient_boosting"]
    assert all({"rmse", "mae", "r2"} <= set(r.metrics) for r in results)
    best = pick_best(results, "rmse")
    assert best.metrics["rmse"] == min(r.metrics["rmse"] for r in results)


def test_lower_is_better_metrics():
    a = CandidateResult("linear", {}, {"rmse": 1.0, "r2": 0.5}, 0, 0)
    b = CandidateResult("linear", {}, {"rmse": 2.0, "r2": 0.7}, 0, 0)
    assert pick_best([a, b], "rmse") is a
    assert pick_best([a, b], "r2") is b
    assert is_better("log_loss", 0.1, 0.2) and not is_better("roc_auc", 0.1, 0.2)


def test_pick_best_names_a_metric_no_candidate_has_and_refuses_unknown_ones():
    a = CandidateResult("linear", {}, {"rmse": 1.0}, 0, 0)
    with pytest.raises(ValueError, match="no candidate produced the selection metric 'r2'"):
        pick_best([a], "r2")
    with pytest.raises(ValueError, match="unknown metric 'rsme'; known: roc_auc, accuracy"):
        pick_best([a], "rsme")


def many_levels(n=600, seed=0) -> pd.DataFrame:
    """The table of issue 22: 8 text columns of 20 levels each, one number, a numeric target."""
    r = np.random.default_rng(seed)
    d = pd.DataFrame({f"cat{i}": r.choice([f"v{j}" for j in range(20)], n) for i in range(8)})
    d["x"] = r.normal(size=n)
    d["y"] = d.x * 3 + r.normal(size=n) + d.cat0.str[1:].astype(int)
    return d


def test_the_default_sweep_trains_every_candidate_on_many_categorical_levels():
    df = many_levels()
    splits = split_data(df, "y", "regression", 0.2, 0.2, 42)
    settings = load_settings()
    results = train_candidates("regression", Preprocessing.from_settings(settings),
                               expand_candidates(settings.train.candidates), splits["train"],
                               splits["val"], "y", 42, n_jobs=2)
    assert [r.error for r in results] == [None] * 6
    assert {r.estimator for r in results} == {"linear", "random_forest", "gradient_boosting"}
    by_name = {r.estimator: r.model for r in results}
    X = splits["val"].drop(columns="y")
    # linear models and forests: one-hot columns in a sparse matrix, at most 20 per column
    onehot = by_name["linear"][:-1].transform(X)
    assert sparse.issparse(onehot) and onehot.shape[1] <= 8 * 20 + 1
    assert sparse.issparse(by_name["random_forest"][:-1].transform(X))
    # gradient boosting: one column per text column, split on as categories
    coded = by_name["gradient_boosting"][:-1].transform(X)
    assert coded.shape[1] == 9 and (coded.dtypes == "category").sum() == 8
    assert by_name["gradient_boosting"][-1].is_categorical_.sum() == 8
    # the native categories learn cat0's levels: boosting fits them (r2 near the linear one)
    scores = {r.estimator: r.metrics["r2"] for r in results}
    assert scores["gradient_boosting"] > 0.8


def test_a_wide_text_column_is_capped_at_max_categories():
    r = np.random.default_rng(1)
    df = pd.DataFrame({"code": r.choice([f"level-{i}" for i in range(200)], 1500),
                       "x": r.normal(size=1500)})
    df["y"] = (df.x > 0).astype(int)
    small = {"linear": {}, "random_forest": {"n_estimators": 3}, "gradient_boosting": {
        "max_iter": 3}}
    # 10 codes for 200 levels (the rarer ones share one), plus x
    for estimator, width in (("linear", 11), ("random_forest", 11), ("gradient_boosting", 2)):
        model = make_pipeline("classification", Preprocessing(max_categories=10), estimator,
                              small[estimator], 0).fit(df.drop(columns="y"), df.y)
        assert model[:-1].transform(df.drop(columns="y").head(5)).shape[1] == width, estimator


def test_a_failing_candidate_is_skipped_with_one_warning(caplog):
    df = load_diabetes(as_frame=True).frame
    splits = split_data(df, "target", "regression", 0.2, 0.2, 0)
    cands = [("linear", {"C": 1.0}), ("gradient_boosting", {"learning_rate": -1.0})]
    with caplog.at_level(logging.WARNING, logger="projects.train"):
        results = train_candidates("regression", Preprocessing(), cands, splits["train"],
                                   splits["val"], "target", 0, n_jobs=1)
    failed = results[1]
    assert failed.model is None and failed.metrics == {}
    assert failed.error.startswith("InvalidParameterError: The 'learning_rate' parameter")
    assert [r.getMessage() for r in caplog.records] == [
        f"candidate gradient_boosting learning_rate=-1.0 failed, skipped: {failed.error}"]
    assert pick_best(results, "rmse") is results[0]
    with pytest.raises(WorkflowError, match=r"^every candidate failed: gradient_boosting "
                                            r"learning_rate=-1.0: InvalidParameterError: "):
        pick_best([failed], "rmse")
