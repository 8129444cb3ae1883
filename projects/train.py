"""train: a sweep of candidate pipelines, scored on the validation split, the best kept."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import ParameterGrid
from sklearn.pipeline import Pipeline

from projects.prepare import FeatureTypes, build_preprocessor

# Metrics where lower is better; every other metric is maximised.
LOWER_IS_BETTER = frozenset({"rmse", "mae", "log_loss"})


@dataclass
class CandidateResult:
    """One fitted candidate: its spec, validation metrics and timings."""

    estimator: str
    params: dict
    metrics: dict[str, float]
    fit_seconds: float
    predict_seconds: float
    model: Pipeline | None = None


def make_estimator(task: str, estimator: str, params: dict, seed: int):
    """An unfitted scikit-learn estimator for ``estimator`` with ``params``.

    ``linear`` is LogisticRegression for classification and Ridge for regression (its ``C`` is
    the inverse regularisation strength in both: Ridge gets ``alpha = 1 / C``).
    """
    params = dict(params)
    if task == "classification":
        from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
        from sklearn.linear_model import LogisticRegression

        factories = {
            "linear": lambda p: LogisticRegression(max_iter=2000, random_state=seed, **p),
            "random_forest": lambda p: RandomForestClassifier(random_state=seed, n_jobs=1, **p),
            "gradient_boosting": lambda p: HistGradientBoostingClassifier(random_state=seed, **p),
        }
    else:
        from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor
        from sklearn.linear_model import Ridge

        if "C" in params:
            params["alpha"] = 1.0 / float(params.pop("C"))
        factories = {
            "linear": lambda p: Ridge(random_state=seed, **p),
            "random_forest": lambda p: RandomForestRegressor(random_state=seed, n_jobs=1, **p),
            "gradient_boosting": lambda p: HistGradientBoostingRegressor(random_state=seed, **p),
        }
    return factories[estimator](params)


def make_pipeline(task: str, types: FeatureTypes, estimator: str, params: dict, seed: int):
    """The one factory of unfitted model pipelines: preprocessing + estimator."""
    return Pipeline(
        [
            ("preprocess", build_preprocessor(types)),
            ("model", make_estimator(task, estimator, params, seed)),
        ]
    )


def expand_candidates(candidates) -> list[tuple[str, dict]]:
    """Expand each candidate's grid into (estimator, params) pairs, in settings order."""
    out = []
    for cand in candidates:
        for params in ParameterGrid(dict(cand.grid)) if cand.grid else [{}]:
            out.append((cand.estimator, dict(sorted(params.items()))))
    return out


def score(task: str, model, X: pd.DataFrame, y: pd.Series) -> tuple[dict[str, float], float]:
    """Metrics of ``model`` on (X, y) and the seconds spent predicting."""
    from sklearn import metrics as m

    start = time.perf_counter()
    pred = model.predict(X)
    out: dict[str, float] = {}
    if task == "classification":
        proba = model.predict_proba(X) if hasattr(model, "predict_proba") else None
        elapsed = time.perf_counter() - start
        classes = list(getattr(model, "classes_", np.unique(y)))
        binary = len(classes) == 2
        out["accuracy"] = m.accuracy_score(y, pred)
        out["f1"] = m.f1_score(y, pred, average="binary" if binary else "macro",
                               pos_label=classes[-1] if binary else 1)
        if proba is not None and len(np.unique(y)) == len(classes):
            if binary:
                out["roc_auc"] = m.roc_auc_score(y == classes[-1], proba[:, 1])
            else:
                out["roc_auc"] = m.roc_auc_score(y, proba, multi_class="ovr", labels=classes)
            out["log_loss"] = m.log_loss(y, proba, labels=classes)
    else:
        elapsed = time.perf_counter() - start
        out["rmse"] = float(np.sqrt(m.mean_squared_error(y, pred)))
        out["mae"] = m.mean_absolute_error(y, pred)
        out["r2"] = m.r2_score(y, pred)
    return {k: float(v) for k, v in out.items()}, elapsed


def fit_candidate(task, types, estimator, params, seed, train, val, target) -> CandidateResult:
    """Fit one candidate on the train split and score it on the validation split."""
    model = make_pipeline(task, types, estimator, params, seed)
    start = time.perf_counter()
    model.fit(train.drop(columns=[target]), train[target])
    fit_seconds = time.perf_counter() - start
    metrics, predict_seconds = score(task, model, val.drop(columns=[target]), val[target])
    return CandidateResult(estimator, params, metrics, fit_seconds, predict_seconds, model)


def train_candidates(
    task: str,
    types: FeatureTypes,
    candidates: list[tuple[str, dict]],
    train: pd.DataFrame,
    val: pd.DataFrame,
    target: str,
    seed: int,
    n_jobs: int,
) -> list[CandidateResult]:
    """Fit every candidate, in parallel over the cores (joblib), in candidate order."""
    from joblib import Parallel, delayed

    jobs = min(len(candidates), n_jobs if n_jobs > 0 else (os.cpu_count() or 1))
    if jobs <= 1:
        return [fit_candidate(task, types, e, p, seed, train, val, target) for e, p in candidates]
    return Parallel(n_jobs=jobs)(
        delayed(fit_candidate)(task, types, e, p, seed, train, val, target) for e, p in candidates
    )


def pick_best(results: list[CandidateResult], metric: str) -> CandidateResult:
    """The best candidate by ``metric`` (lower is better for errors and log loss)."""
    scored = [r for r in results if metric in r.metrics and np.isfinite(r.metrics[metric])]
    if not scored:
        raise ValueError(f"no candidate produced the selection metric {metric!r}")
    sign = 1 if metric in LOWER_IS_BETTER else -1
    return min(scored, key=lambda r: sign * r.metrics[metric])


def is_better(metric: str, new: float, old: float) -> bool:
    """Whether ``new`` beats ``old`` on ``metric``."""
    return new < old if metric in LOWER_IS_BETTER else new > old
