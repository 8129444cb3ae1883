"""Drift statistics and the gates they feed: training data against what was served.

Per feature: the population stability index (PSI) and a two-sample test (Kolmogorov-Smirnov for
numeric columns, chi-square for categorical ones); the same PSI for the predictions; and, given
a labelled batch, the live metric against the version's test metric (both computed by the metric
catalogue, :mod:`core.metrics`). Pure functions: :mod:`monitoring.monitor` reads the files, the
MLflow run and the thresholds and hands them in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from core import metrics, names
from monitoring.errors import MonitorError

# Bins with no reference or live rows get this share instead of 0 (PSI takes logs).
_EPS = 1e-4


@dataclass(frozen=True)
class Gate:
    """One threshold check: its name, the measured value, the limit, and whether it passed."""

    name: str
    value: float
    limit: float
    passed: bool
    detail: str = ""


def is_numeric(s: pd.Series) -> bool:
    """Numbers to bin (booleans are categories)."""
    return pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)


def psi(reference: pd.Series, live: pd.Series, bins: int = 10) -> float:
    """Population stability index of ``live`` against ``reference``.

    Numeric columns use the reference's quantile bins (open-ended at both ends); others use the
    reference's categories plus one bin for unseen values.
    """
    ref, cur = reference.dropna(), live.dropna()
    if ref.empty or cur.empty:
        return float("nan")
    # few distinct values (class labels, flags, counts): compare them as categories
    if is_numeric(ref) and is_numeric(cur) and ref.nunique() > bins:
        edges = np.unique(np.quantile(ref.to_numpy(dtype=float), np.linspace(0, 1, bins + 1)))
        edges = np.concatenate([[-np.inf], edges[1:-1], [np.inf]])
        ref_share = np.histogram(ref.to_numpy(dtype=float), edges)[0] / len(ref)
        cur_share = np.histogram(cur.to_numpy(dtype=float), edges)[0] / len(cur)
    else:
        ref_counts = ref.astype(str).value_counts(normalize=True)
        cur_counts = cur.astype(str).value_counts(normalize=True)
        cats = list(ref_counts.index)
        ref_share = np.append(ref_counts.reindex(cats).to_numpy(), 0.0)
        unseen = cur_counts[~cur_counts.index.isin(cats)].sum()
        cur_share = np.append(cur_counts.reindex(cats, fill_value=0).to_numpy(), unseen)
    ref_share = np.clip(ref_share, _EPS, None)
    cur_share = np.clip(cur_share, _EPS, None)
    return float(np.sum((cur_share - ref_share) * np.log(cur_share / ref_share)))


def two_sample_test(reference: pd.Series, live: pd.Series) -> tuple[str, float, float]:
    """(test name, statistic, p-value): KS for numeric columns, chi-square for categorical."""
    from scipy import stats

    ref, cur = reference.dropna(), live.dropna()
    if ref.empty or cur.empty:
        return "none", float("nan"), float("nan")
    if is_numeric(ref) and is_numeric(cur):
        res = stats.ks_2samp(ref.to_numpy(dtype=float), cur.to_numpy(dtype=float))
        return "ks", float(res.statistic), float(res.pvalue)
    cats = sorted(set(ref.astype(str)) | set(cur.astype(str)))
    table = np.array([
        ref.astype(str).value_counts().reindex(cats, fill_value=0).to_numpy(),
        cur.astype(str).value_counts().reindex(cats, fill_value=0).to_numpy(),
    ])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return "chi2", 0.0, 1.0
    chi2, p, _, _ = stats.chi2_contingency(table)
    return "chi2", float(chi2), float(p)


def feature_drift(
    reference: pd.DataFrame, live: pd.DataFrame, psi_threshold: float, p_value: float
) -> pd.DataFrame:
    """Per feature: PSI, test, statistic, p-value and whether it drifted.

    A feature drifted when its PSI reaches ``psi_threshold``, or its test's p-value is below
    ``p_value`` while its PSI is at least half the threshold (a significant *and* material
    shift: on large samples tiny shifts are significant but harmless).
    """
    missing = [c for c in reference.columns if c not in live.columns]
    if missing:
        raise MonitorError(f"captured inputs lack the training columns {missing}")
    rows = []
    for col in reference.columns:
        value = psi(reference[col], live[col])
        test, stat, p = two_sample_test(reference[col], live[col])
        drifted = bool(value >= psi_threshold or (p < p_value and value >= psi_threshold / 2))
        rows.append({"feature": col, "psi": value, "test": test, "statistic": stat,
                     "p_value": p, "drifted": drifted})
    return pd.DataFrame(rows)


def live_metric(task: str, metric: str, y_true, y_pred, proba=None, classes=None,
                positive=None) -> float:
    """Metric ``metric`` on labelled live data, as the metric catalogue computes it.

    Args:
        task: ``classification`` or ``regression``.
        metric: a catalogue name of that task.
        y_true: the live labels.
        y_pred: what the model predicted for them.
        proba: class probabilities, if the model gives them.
        classes: the model's ``classes_`` (its probability-column order), if known.
        positive: the positive class of a binary task (the version's ``mlops.positive_class``);
            None: the last of ``classes``.

    Raises:
        MonitorError: unknown metric, a metric of the other task, or one these inputs cannot
            give (say, ``roc_auc`` without probabilities); never another metric instead.
    """
    try:
        metrics.resolve(metric, task)
        return metrics.compute_one(metric, y_true, y_pred, proba, classes, positive)
    except metrics.MetricError as exc:
        raise MonitorError(str(exc)) from None


@dataclass(frozen=True)
class MetricComparison:
    """One metric measured on live data and on the version's test split.

    Attributes:
        metric: the metric compared (the same on both sides).
        live: its value on the labelled live data.
        reference: its value on the version's test split.
        note: why this is not the selection metric ("" when it is).
    """

    metric: str
    live: float
    reference: float
    note: str = ""


def compare_live_metric(task: str, wanted: str, y_true, y_pred, reference: dict[str, float],
                        proba=None, classes=None, positive=None) -> MetricComparison:
    """The live value of a metric next to the version's test value of the same metric.

    ``wanted`` (the version's selection metric) when both sides have it; else the first metric
    of the catalogue for ``task`` that both sides have, with a note saying why.

    Args:
        task: ``classification`` or ``regression``.
        wanted: the metric to compare (``auto`` for the task's default).
        y_true: the live labels.
        y_pred: what the model predicted for them.
        reference: test metrics of the version by name (from its ``mlops.metric.test_*`` tags).
        proba: class probabilities, if the model gives them.
        classes: the model's ``classes_``, if known.
        positive: the positive class the version's test metrics scored (its
            ``mlops.positive_class``); None: the last of ``classes``.

    Raises:
        MonitorError: no metric can be computed on both sides.
    """
    try:
        wanted = metrics.resolve(wanted, task)
    except metrics.MetricError as exc:
        raise MonitorError(f"selection metric: {exc}") from None
    why = None
    if wanted not in reference:
        why = f"the version has no test {wanted} (tag {names.metric_tag('test_' + wanted)})"
    else:
        try:
            value = metrics.compute_one(wanted, y_true, y_pred, proba, classes, positive)
            return MetricComparison(wanted, value, reference[wanted])
        except metrics.MetricUnavailable as exc:
            why = f"{wanted} is not computable on the live data: {exc}"
    live = metrics.compute(task, y_true, y_pred, proba, classes, positive)
    for name in metrics.names(task):
        if name in live and name in reference:
            return MetricComparison(name, live[name], reference[name],
                                    f"compared {name} instead of {wanted}: {why}")
    raise MonitorError(f"no metric to compare: {why}, and no other {task} metric is on "
                       "both the live data and the version's tags")


def metric_gate(metric: str, live: float, reference: float, max_drop: float,
                note: str = "") -> Gate:
    """Live metric vs the version's test value of the same metric.

    Fails when the live value is worse by more than ``max_drop`` in the metric's direction.
    """
    entry = metrics.get(metric)
    drop = entry.worse_by(live, reference)
    limit = reference - max_drop if entry.greater_is_better else reference + max_drop
    detail = (f"test {metric} {reference:.4f}, live {live:.4f}, drop {drop:+.4f} "
              f"(allowed {max_drop})")
    return Gate(f"live {metric}", live, limit, drop <= max_drop,
                f"{detail}; {note}" if note else detail)
