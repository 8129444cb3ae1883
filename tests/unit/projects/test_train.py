import pandas as pd
import pytest
from sklearn.base import is_classifier, is_regressor
from sklearn.datasets import load_diabetes, load_iris
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from core.metrics import is_better
from core.settings import Candidate
from projects.prepare import feature_types, split_data
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
