"""train: a sweep of candidate pipelines, scored on the validation split, the best kept."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
from sklearn.model_selection import ParameterGrid
from sklearn.pipeline import Pipeline

from core import metrics
from projects.errors import WorkflowError
from projects.prepare import FeatureTypes, Preprocessing, build_preprocessor

_logger = logging.getLogger(__name__)


@dataclass
class CandidateResult:
    """One candidate: its spec, validation metrics and timings, or why it failed."""

    estimator: str
    params: dict
    metrics: dict[str, float]
    fit_seconds: float
    predict_seconds: float
    model: Pipeline | None = None
    #: ``TypeError: ...``: the one-line reason the candidate failed (None: it fitted)
    error: str | None = None

    @property
    def label(self) -> str:
        """``gradient_boosting learning_rate=0.1``: the candidate as messages name it."""
        return " ".join([self.estimator, *(f"{k}={v}" for k, v in self.params.items())])


def make_estimator(task: str, estimator: str, params: dict, seed: int):
    """An unfitted scikit-learn estimator for ``estimator`` with ``params``.

    ``linear`` is LogisticRegression for classification and Ridge for regression (its ``C`` is
    the inverse regularisation strength in both: Ridge gets ``alpha = 1 / C``).
    """
    params = dict(params)
    if ":" in estimator:
        return _user_estimator(estimator, params, seed)
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


def _user_estimator(ref: str, params: dict, seed: int):
    """The user's factory's estimator, the grid's parameters set, seeded when it has a seed.

    Raises:
        WorkflowError: the factory cannot be loaded or called, its result is no estimator, or
            a grid parameter is not one of the estimator's.
    """
    from core import usercode

    try:
        factory = usercode.load(ref)
        model = factory()
    except usercode.UserCodeError as exc:
        raise WorkflowError(f"train.candidates: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - the user's factory failed: one line
        raise WorkflowError(f"train.candidates: {ref}: {type(exc).__name__}: {exc}") from None
    if not (hasattr(model, "fit") and hasattr(model, "predict") and hasattr(model, "set_params")):
        raise WorkflowError(f"train.candidates: {ref} returned {type(model).__name__}, not a "
                            "scikit-learn estimator (fit, predict, set_params)")
    known = model.get_params()
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise WorkflowError(f"train.candidates: {ref}: grid parameter(s) {', '.join(unknown)} "
                            f"unknown to {type(model).__name__}")
    if "random_state" in known and known["random_state"] is None and "random_state" not in params:
        params["random_state"] = seed
    return model.set_params(**params)


def make_pipeline(task: str, prep: Preprocessing | FeatureTypes | None, estimator: str,
                  params: dict, seed: int):
    """The one factory of unfitted model pipelines: the user's features, preprocessing, model.

    The steps are flattened (``feature*``, ``tidy``, ``encode``, ``model``): every one of them
    is fitted on the train split only and ships inside the logged model.
    """
    model = make_estimator(task, estimator, params, seed)
    preprocess = build_preprocessor(prep, encoding_for(model))
    return Pipeline([*preprocess.steps, ("model", model)])


def encoding_for(model) -> str:
    """How text categories are encoded for ``model`` (one of :data:`prepare.ENCODINGS`).

    Histogram gradient boosting gets category codes for its native categorical support; any
    other estimator gets one-hot columns, sparse when its scikit-learn tags say it takes
    sparse input, dense otherwise (an estimator without tags: dense, which every one takes).
    """
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.utils import get_tags

    hist = (HistGradientBoostingClassifier, HistGradientBoostingRegressor)
    if isinstance(model, hist) and getattr(model, "categorical_features", None) == "from_dtype":
        return "native"
    try:
        return "sparse" if get_tags(model).input_tags.sparse else "dense"
    except Exception:  # noqa: BLE001 - no scikit-learn tags: dense input works everywhere
        return "dense"


def model_signature(model, X: pd.DataFrame, example: pd.DataFrame):
    """The logged model's signature: input types, and which columns a client may omit.

    A column is optional when any training row lacks it (all of ``X``, not a sample: gaps
    late in a file count) or when the model never reads it (the fitted ``tidy`` step's
    ``dropped_``: identifiers, free text, dropped datetimes); both MLflow's scoring server
    and ``python -m serving`` then accept a row without it. The types come from the first
    1,000 rows (MLflow inspects every cell of a text column: ~15 s for 200,000 rows), where
    ``X``'s dtypes already hold for the whole column.

    Args:
        model: the fitted pipeline.
        X: every training row, without the target, nullable types made numpy ones.
        example: the input example, whose predictions type the output.
    """
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types.schema import ColSpec, Schema

    signature = infer_signature(X.head(1000), model.predict(example))
    steps = getattr(model, "named_steps", {})
    optional = {str(c) for c in X.columns[X.isna().any().to_numpy()]}
    optional |= {str(c) for c in getattr(steps.get("tidy"), "dropped_", {}) or {}}
    inputs = signature.inputs
    if inputs is None or not inputs.has_input_names():
        return signature
    specs = [ColSpec(c.type, c.name, required=c.required and c.name not in optional)
             if isinstance(c, ColSpec) else c for c in inputs.inputs]
    return ModelSignature(Schema(specs), signature.outputs, signature.params)


def expand_candidates(candidates) -> list[tuple[str, dict]]:
    """Expand each candidate's grid into (estimator, params) pairs, in settings order."""
    out = []
    for cand in candidates:
        for params in ParameterGrid(dict(cand.grid)) if cand.grid else [{}]:
            out.append((cand.estimator, dict(sorted(params.items()))))
    return out


def score(task: str, model, X: pd.DataFrame, y: pd.Series,
          positive=None) -> tuple[dict[str, float], float]:
    """The catalogue's metrics of ``model`` on (X, y) and the seconds spent predicting.

    The model's ``classes_`` give the class order (the ``log_loss`` labels); ``positive`` is the
    positive class of a binary task (None: the last class), the one evaluate scores too.
    """
    start = time.perf_counter()
    pred = model.predict(X)
    proba = None
    if task == "classification" and hasattr(model, "predict_proba"):
        proba = model.predict_proba(X)
    elapsed = time.perf_counter() - start
    classes = getattr(model, "classes_", None) if task == "classification" else None
    return metrics.compute(task, y, pred, proba, classes, positive), elapsed


def fit_candidate(task, types, estimator, params, seed, train, val, target,
                  custom_metrics=(), positive=None) -> CandidateResult:
    """Fit one candidate on the train split and score it on the validation split.

    ``custom_metrics`` are the catalogue's user metrics, registered again in a worker process
    (which never loaded the settings) so that they are scored there too.

    A candidate whose fit or scoring fails comes back with ``error`` (one line, no model):
    the sweep goes on without it. The user's code that cannot be loaded and a broken custom
    metric still raise (a settings problem, the same for every candidate).
    """
    for metric in custom_metrics:
        metrics.METRICS[metric.name] = metric
    model = make_pipeline(task, types, estimator, params, seed)
    start = time.perf_counter()
    try:
        model.fit(train.drop(columns=[target]), train[target])
        fit_seconds = time.perf_counter() - start
        scores, predict_seconds = score(task, model, val.drop(columns=[target]), val[target],
                                        positive)
    except (WorkflowError, metrics.MetricError):
        raise
    except Exception as exc:  # noqa: BLE001 - one line naming the candidate, no traceback
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return CandidateResult(estimator, params, {}, time.perf_counter() - start, 0.0,
                               error=f"{type(exc).__name__}: {first[:300]}".rstrip(": "))
    return CandidateResult(estimator, params, scores, fit_seconds, predict_seconds, model)


def train_candidates(
    task: str,
    types: FeatureTypes,
    candidates: list[tuple[str, dict]],
    train: pd.DataFrame,
    val: pd.DataFrame,
    target: str,
    seed: int,
    n_jobs: int,
    on_done: Callable[[CandidateResult], None] | None = None,
    positive=None,
) -> list[CandidateResult]:
    """Fit every candidate, in parallel over the cores (joblib), in candidate order.

    A failed candidate is kept in the results with its ``error`` and one WARNING line;
    :func:`pick_best` chooses among the others.

    Args:
        task: classification or regression.
        types: the feature types (for the preprocessor).
        candidates: (estimator, params) pairs, in order.
        train: the train split; val the validation split that scores.
        val: the validation split.
        target: the target column.
        seed: the estimators' seed.
        n_jobs: parallel jobs (-1: every core).
        on_done: called with each result as it arrives (progress on a terminal).
        positive: the positive class of a binary task (f1, roc_auc); None: the last class.
    """
    from joblib import Parallel, delayed

    from core import usercode

    # the user's modules imported here too: the fitted models that come back from the
    # workers refer to them by module name, and this process unpickles them
    refs = [*getattr(types, "features", ()), *(e for e, _ in candidates if ":" in e)]
    for ref in dict.fromkeys(refs):
        try:
            usercode.load(ref)
        except usercode.UserCodeError as exc:
            raise WorkflowError(f"train: {exc}") from None
    # the workers get absolute references: their working directory may not be this one
    custom = tuple(dataclasses.replace(m, function=_absolute(m.function))
                   for m in metrics.METRICS.values() if m.function is not None)
    if isinstance(types, Preprocessing):
        types = dataclasses.replace(types, features=tuple(map(_absolute, types.features)))
    jobs = min(len(candidates), n_jobs if n_jobs > 0 else (os.cpu_count() or 1))
    if jobs <= 1:
        results = (fit_candidate(task, types, _absolute(e), p, seed, train, val, target, custom,
                                 positive)
                   for e, p in candidates)
    else:
        # a generator (in candidate order): each result is reported as soon as it is in
        results = Parallel(n_jobs=jobs, return_as="generator")(
            delayed(fit_candidate)(task, types, _absolute(e), p, seed, train, val, target,
                                   custom, positive)
            for e, p in candidates
        )
    out = []
    for (estimator, _), res in zip(candidates, results, strict=True):
        res.estimator = estimator  # as the settings name it (runs, tags, messages)
        if res.error:
            _logger.warning("candidate %s failed, skipped: %s", res.label, res.error)
        out.append(res)
        if on_done is not None:
            on_done(res)
    return out


def _absolute(ref: str) -> str:
    """A user reference with its file as an absolute path (a built-in name is kept)."""
    from core import usercode

    if not usercode.is_reference(ref):
        return ref
    path, name = usercode.split_reference(ref)
    return f"{path}:{name}"


def pick_best(results: list[CandidateResult], metric: str) -> CandidateResult:
    """The best candidate by ``metric``, in the catalogue's direction (first one on ties).

    Failed candidates are passed over.

    Raises:
        WorkflowError: every candidate failed (one line, each with its reason).
    """
    metrics.get(metric)  # an unknown name fails with the catalogue's one-line error
    fitted = [r for r in results if r.error is None]
    if results and not fitted:
        raise WorkflowError("every candidate failed: "
                            + "; ".join(f"{r.label}: {r.error}" for r in results))
    try:
        return metrics.best(metric, fitted, lambda r: r.metrics.get(metric))
    except metrics.MetricError:
        raise ValueError(f"no candidate produced the selection metric {metric!r}") from None
