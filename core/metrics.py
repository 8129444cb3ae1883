"""The metric catalogue: every metric the project computes, defined once.

Train's candidate selection, evaluate's test metrics, the registry's policy gates and the
monitor's live metric all compute and compare metrics through this module, so they agree on
the numbers, on the direction (greater or lower is better), on the positive class of a binary
task and on the ``labels`` given to ``log_loss`` and ``roc_auc``.

Class order: the model's ``classes_`` when known (the order of its ``predict_proba`` columns),
else the sorted labels seen in ``y_true`` and ``y_pred``. In a binary task the positive class is
the one the caller names (``positive``: the workflow's ``data.positive_class``, by default the
minority class of the training target, :func:`minority_class`), else the last of them
(``classes[-1]``, the second probability column, as scikit-learn has it). Every metric that has
a positive class (``f1``, ``roc_auc``) takes the same one.

Custom metrics join the catalogue only when a command registers them (:func:`register_declared`
with the settings' ``metrics``); the catalogue never reads the settings. Nothing heavy is
imported here at import time (the settings validate names against :data:`BUILT_IN`); numpy and
scikit-learn load on the first computation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

CLASSIFICATION = "classification"
REGRESSION = "regression"
TASKS = (CLASSIFICATION, REGRESSION)

T = TypeVar("T")


class MetricError(ValueError):
    """An unknown metric name, or a metric asked of the wrong task; the message is one line."""


class MetricUnavailable(MetricError):
    """A metric that cannot be computed on these inputs (no probabilities, one class, ...)."""


@dataclass(frozen=True)
class Metric:
    """One metric of the catalogue.

    Attributes:
        name: the name used in settings, policies, tags (``mlops.metric.test_<name>``) and runs.
        task: ``classification`` or ``regression``.
        greater_is_better: the direction; False for errors and losses.
        needs_proba: whether it is computed from class probabilities, not predicted labels.
        multiclass: how a multi-class task is averaged: ``macro`` (unweighted mean over the
            classes in ``y_true`` and ``y_pred``), ``ovr-macro`` (one-vs-rest, unweighted mean
            over ``classes``), or None (defined for any number of classes, or regression).
        positive_class: whether a binary task scores the positive class (the caller's
            ``positive``, else ``classes[-1]``).
        uses_labels: whether ``labels=classes`` is passed to scikit-learn, so a class absent
            from ``y_true`` still has its probability column.
        description: one line for help texts.
    """

    name: str
    task: str
    greater_is_better: bool
    needs_proba: bool = False
    multiclass: str | None = None
    positive_class: bool = False
    uses_labels: bool = False
    description: str = ""
    #: a custom metric's function, ``path/to/file.py:function`` (None: a built-in)
    function: str | None = None

    def is_better(self, new: float, old: float) -> bool:
        """Whether ``new`` is strictly better than ``old``."""
        return new > old if self.greater_is_better else new < old

    def sort_key(self, value: float) -> float:
        """A key that sorts the best value first (ascending)."""
        return -value if self.greater_is_better else value

    def worse_by(self, value: float, reference: float) -> float:
        """How much worse ``value`` is than ``reference`` (negative when it is better)."""
        return reference - value if self.greater_is_better else value - reference


_CATALOGUE = (
    Metric("roc_auc", CLASSIFICATION, True, needs_proba=True, multiclass="ovr-macro",
           positive_class=True, uses_labels=True,
           description="area under the ROC curve (one-vs-rest, macro, for multi-class)"),
    Metric("accuracy", CLASSIFICATION, True, description="share of correct labels"),
    Metric("f1", CLASSIFICATION, True, multiclass="macro", positive_class=True,
           description="F1 of the positive class (macro F1 for multi-class)"),
    Metric("log_loss", CLASSIFICATION, False, needs_proba=True, uses_labels=True,
           description="cross-entropy of the predicted probabilities"),
    Metric("rmse", REGRESSION, False, description="root mean squared error"),
    Metric("mae", REGRESSION, False, description="mean absolute error"),
    Metric("r2", REGRESSION, True, description="coefficient of determination"),
)

#: Every metric by name, in catalogue order (the order of ``compute``'s result).
METRICS: dict[str, Metric] = {m.name: m for m in _CATALOGUE}

#: The built-in metric names (a custom metric may not take one).
BUILT_IN: tuple[str, ...] = tuple(m.name for m in _CATALOGUE)

#: The metric ``auto`` stands for, per task.
AUTO = {CLASSIFICATION: "roc_auc", REGRESSION: "rmse"}


def register_custom(name: str, task: str, greater_is_better: bool, function: str,
                    needs_proba: bool = False, description: str = "") -> Metric:
    """Add the user's metric to the catalogue (selection, evaluation, policies, monitoring).

    ``function`` is ``path/to/file.py:function``, called as ``function(y_true, y_pred)`` (or
    ``function(y_true, proba)`` with ``needs_proba``: one column per class, in class order) and
    returning a number. It is imported on the first computation, not here. Registering the
    same definition again is a no-op.

    Raises:
        MetricError: the name is a built-in, or already registered differently.
    """
    from core import usercode

    if not usercode.is_reference(function):
        raise MetricError(f"metric {name!r}: function {function!r}: expected "
                          "path/to/file.py:function")
    metric = Metric(name, _check_task(task), bool(greater_is_better), needs_proba=needs_proba,
                    description=description or f"custom metric ({function})", function=function)
    known = METRICS.get(name)
    if known is not None and known != metric:
        what = "a built-in metric" if known.function is None else f"already {known.function}"
        raise MetricError(f"metric {name!r} is {what}; pick another name")
    METRICS[name] = metric
    return metric


def register_declared(declared: Iterable[Any]) -> tuple[Metric, ...]:
    """Register the custom metrics a user's settings declare.

    The catalogue never reads the settings: each command that loads them and then selects,
    scores or gates on metrics (the workflow, the registry's policy gates, the monitor) passes
    ``settings.metrics`` here once. Registering the same definitions again is a no-op.

    Args:
        declared: entries with ``name``, ``task``, ``greater_is_better``, ``function`` and
            ``needs_proba`` (:class:`core.settings.CustomMetric`, already validated).

    Returns:
        The catalogue entries, in declared order.

    Raises:
        MetricError: a name is a built-in, or is already registered differently.
    """
    return tuple(register_custom(d.name, d.task, d.greater_is_better, d.function,
                                 needs_proba=d.needs_proba) for d in declared)


def _check_task(task: str) -> str:
    if task not in TASKS:
        raise MetricError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    return task


def get(name: str) -> Metric:
    """The catalogue entry of ``name`` (a built-in, or a custom metric registered before).

    Raises:
        MetricError: unknown name; the message lists the known ones.
    """
    try:
        return METRICS[name]
    except (KeyError, TypeError):
        raise MetricError(f"unknown metric {name!r}; known: {', '.join(METRICS)}") from None


def names(task: str | None = None) -> tuple[str, ...]:
    """The metric names of ``task`` (all of them when None), in catalogue order."""
    if task is None:
        return tuple(METRICS)
    _check_task(task)
    return tuple(m.name for m in METRICS.values() if m.task == task)


def auto_metric(task: str) -> str:
    """The metric ``auto`` selects for ``task``."""
    return AUTO[_check_task(task)]


def resolve(name: str, task: str) -> str:
    """``name`` with ``auto`` resolved for ``task``.

    Raises:
        MetricError: unknown name, or a metric of the other task.
    """
    if name == "auto":
        return auto_metric(task)
    metric = get(name)
    if metric.task != _check_task(task):
        raise MetricError(f"metric {name!r} is a {metric.task} metric, not a {task} one")
    return name


def is_better(name: str, new: float, old: float) -> bool:
    """Whether ``new`` is strictly better than ``old`` on metric ``name``."""
    return get(name).is_better(new, old)


def sort_key(name: str) -> Callable[[float], float]:
    """A key function sorting values of ``name`` best first (ascending)."""
    return get(name).sort_key


def best(name: str, items: Iterable[T], value: Callable[[T], Any] = lambda x: x) -> T:
    """The item with the best finite ``value(item)`` on metric ``name`` (the first on ties).

    Raises:
        MetricError: no item has a finite value.
    """
    metric = get(name)
    scored = []
    for item in items:
        v = value(item)
        if v is not None and math.isfinite(float(v)):
            scored.append((item, float(v)))
    if not scored:
        raise MetricError(f"nothing has a finite {name}")
    return min(scored, key=lambda pair: metric.sort_key(pair[1]))[0]


# ------------------------------------------------------------------------------ computing
def class_order(y_true, y_pred=None, classes=None) -> list:
    """The classes in probability-column order: ``classes`` if given, else the sorted labels.

    Args:
        y_true: true labels.
        y_pred: predicted labels (their classes count too when ``classes`` is None).
        classes: the model's ``classes_``, when known.
    """
    import numpy as np

    if classes is not None:
        return list(np.asarray(classes).tolist())
    seen = [np.asarray(y_true).ravel()]
    if y_pred is not None:
        seen.append(np.asarray(y_pred).ravel())
    return list(np.unique(np.concatenate(seen)).tolist())


def positive_class(classes, positive=None) -> Any:
    """The positive class of a binary task: ``positive`` if given, else the last of ``classes``.

    Args:
        classes: the classes in probability-column order.
        positive: the class to score, as the class itself or its text (``"1"`` names ``1``:
            settings and run params hold text).

    Raises:
        MetricError: ``positive`` is not one of ``classes`` (one line naming them).
    """
    classes = list(classes)
    if positive is None:
        return classes[-1]
    for value in classes:
        if value == positive or str(value) == str(positive):
            return value
    raise MetricError(f"positive class {str(positive)!r} is not a class of the target; the "
                      f"classes are: {', '.join(map(str, classes))}")


def minority_class(y) -> Any:
    """The least frequent class of ``y`` (the default positive class of a binary task).

    In a binary task the rare class is usually the one to find (a churner, a fraud, a
    malignant tumour), and f1 of the majority class flatters any model. On a tie the last
    class in sorted order wins (the positive class scikit-learn would pick).
    """
    import numpy as np

    values, counts = np.unique(np.asarray(y), return_counts=True)
    fewest = counts.min()
    return [v for v, c in zip(values.tolist(), counts.tolist(), strict=True) if c == fewest][-1]


@dataclass(frozen=True)
class _Inputs:
    y_true: Any
    y_pred: Any
    proba: Any
    classes: list
    positive: Any = None


def _probabilities(metric: Metric, inputs: _Inputs):
    """``(proba, labels)`` with the columns put in sorted label order.

    scikit-learn's ``log_loss`` sorts ``labels`` and takes the columns in that order, and its
    multi-class ``roc_auc_score`` refuses unsorted ``labels``: a model whose ``classes_`` are
    not sorted would otherwise be scored on the wrong columns.
    """
    import numpy as np

    if inputs.proba is None:
        raise MetricUnavailable(f"{metric.name} needs class probabilities; none were given")
    proba = np.asarray(inputs.proba, dtype=float)
    if proba.ndim == 1 and len(inputs.classes) == 2:
        proba = np.column_stack([1.0 - proba, proba])  # one column: P(positive class)
    if proba.ndim != 2 or proba.shape[1] != len(inputs.classes):
        raise MetricUnavailable(
            f"{metric.name}: probabilities have shape {proba.shape} but there are "
            f"{len(inputs.classes)} classes"
        )
    order = np.argsort(np.asarray(inputs.classes), kind="stable")
    return proba[:, order], [inputs.classes[i] for i in order]


def _roc_auc(inputs: _Inputs) -> float:
    import numpy as np
    from sklearn import metrics as m

    proba, labels = _probabilities(METRICS["roc_auc"], inputs)
    y = np.asarray(inputs.y_true)
    absent = [c for c in inputs.classes if not np.any(y == c)]
    if absent:
        # one-vs-rest needs positives of every class; a ROC curve of a class never seen is void
        raise MetricUnavailable(
            f"roc_auc is undefined: class {', '.join(map(str, absent))} absent from y_true"
        )
    if len(labels) == 2:
        positive = positive_class(inputs.classes, inputs.positive)
        return m.roc_auc_score(y == positive, proba[:, labels.index(positive)])
    return m.roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=labels)


def _log_loss(inputs: _Inputs) -> float:
    from sklearn import metrics as m

    proba, labels = _probabilities(METRICS["log_loss"], inputs)
    return m.log_loss(inputs.y_true, proba, labels=labels)


def _f1(inputs: _Inputs) -> float:
    from sklearn import metrics as m

    if len(inputs.classes) == 2:
        return m.f1_score(inputs.y_true, inputs.y_pred, average="binary",
                          pos_label=positive_class(inputs.classes, inputs.positive),
                          zero_division=0.0)
    return m.f1_score(inputs.y_true, inputs.y_pred, average="macro", zero_division=0.0)


def _accuracy(inputs: _Inputs) -> float:
    from sklearn import metrics as m

    return m.accuracy_score(inputs.y_true, inputs.y_pred)


def _rmse(inputs: _Inputs) -> float:
    from sklearn import metrics as m

    return math.sqrt(m.mean_squared_error(inputs.y_true, inputs.y_pred))


def _mae(inputs: _Inputs) -> float:
    from sklearn import metrics as m

    return m.mean_absolute_error(inputs.y_true, inputs.y_pred)


def _r2(inputs: _Inputs) -> float:
    from sklearn import metrics as m

    if len(inputs.y_true) < 2:
        raise MetricUnavailable("r2 needs at least two samples")
    return m.r2_score(inputs.y_true, inputs.y_pred)


_FUNCTIONS: dict[str, Callable[[_Inputs], float]] = {
    "roc_auc": _roc_auc,
    "accuracy": _accuracy,
    "f1": _f1,
    "log_loss": _log_loss,
    "rmse": _rmse,
    "mae": _mae,
    "r2": _r2,
}


def _inputs(task: str, y_true, y_pred, proba, classes, positive=None) -> _Inputs:
    import numpy as np

    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if task == CLASSIFICATION:
        classes = class_order(y_true, y_pred, classes)
        if positive is not None and len(classes) == 2:
            positive = positive_class(classes, positive)  # the class itself, checked once
    return _Inputs(y_true, y_pred, proba, classes or [], positive)


def _custom(metric: Metric, inputs: _Inputs) -> float:
    """A user metric: ``function(y_true, y_pred)``, or ``(y_true, proba)`` with needs_proba."""
    import numpy as np

    from core import usercode

    func = usercode.load(metric.function)
    if metric.needs_proba:
        if inputs.proba is None:
            raise MetricUnavailable(f"{metric.name} needs class probabilities; none were given")
        return func(inputs.y_true, np.asarray(inputs.proba, dtype=float))
    return func(inputs.y_true, inputs.y_pred)


def _run(metric: Metric, inputs: _Inputs) -> float:
    try:
        if metric.function is not None:
            value = float(_custom(metric, inputs))
        else:
            value = float(_FUNCTIONS[metric.name](inputs))
    except MetricUnavailable:
        raise
    except ValueError as exc:  # scikit-learn's refusals: unknown labels, wrong shapes
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise MetricUnavailable(f"{metric.name} cannot be computed: {first}") from None
    except Exception as exc:  # a custom metric's own bug: one line naming it, not a traceback
        if metric.function is None:
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise MetricError(f"custom metric {metric.name} ({metric.function}) failed: "
                          f"{type(exc).__name__}: {first}") from exc
    if not math.isfinite(value):
        raise MetricUnavailable(f"{metric.name} is not finite on these inputs")
    return value


def compute_one(name: str, y_true, y_pred, proba=None, classes=None, positive=None) -> float:
    """Metric ``name`` of the predictions.

    Args:
        name: a catalogue name.
        y_true: true labels or values.
        y_pred: predicted labels (classification) or values (regression).
        proba: class probabilities, one column per class in ``classes`` order (or one column,
            the positive class's, for a binary task).
        classes: the model's ``classes_``; None: the sorted labels of ``y_true`` and ``y_pred``.
        positive: the positive class of a binary task (None: ``classes[-1]``).

    Raises:
        MetricError: unknown name, or a ``positive`` that is not a class.
        MetricUnavailable: it cannot be computed here (say, probabilities needed, none given).
    """
    metric = get(name)
    import warnings

    with warnings.catch_warnings():
        # undefined cases are reported as MetricUnavailable, not as warnings on stderr
        warnings.simplefilter("ignore")
        return _run(metric, _inputs(metric.task, y_true, y_pred, proba, classes, positive))


def compute(task: str, y_true, y_pred, proba=None, classes=None,
            positive=None) -> dict[str, float]:
    """Every metric of ``task`` that can be computed from these predictions.

    Args:
        task: ``classification`` or ``regression``.
        y_true: true labels or values.
        y_pred: predicted labels (classification) or values (regression).
        proba: class probabilities in ``classes`` order, if the model gives them.
        classes: the model's ``classes_``; None: the sorted labels of ``y_true`` and ``y_pred``.
        positive: the positive class of a binary task (None: ``classes[-1]``).

    Returns:
        ``{name: value}`` in catalogue order; metrics that cannot be computed are left out
        (:func:`compute_one` says why).
    """
    import warnings

    inputs = _inputs(_check_task(task), y_true, y_pred, proba, classes, positive)
    out: dict[str, float] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in names(task):
            try:
                out[name] = _run(METRICS[name], inputs)
            except MetricUnavailable:
                continue
    return out
