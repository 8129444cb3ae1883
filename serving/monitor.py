"""Watch a served model: compare captured traffic with the version's training data.

Per feature: the population stability index (PSI) and a two-sample test (Kolmogorov-Smirnov for
numeric columns, chi-square for categorical ones); the same for the predictions; and, given a
labelled batch, the live metric against the version's test metric. Pure functions: the CLI reads
the files, the MLflow run and the thresholds and hands them in.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import pandas as pd

from core import metrics

# Bins with no reference or live rows get this share instead of 0 (PSI takes logs).
_EPS = 1e-4


class MonitorError(ValueError):
    """Input the monitor cannot judge (no captured rows, unknown columns); one line."""


@dataclass(frozen=True)
class Gate:
    """One threshold check: its name, the measured value, the limit, and whether it passed."""

    name: str
    value: float
    limit: float
    passed: bool
    detail: str = ""


# ---------------------------------------------------------------------------- reading captures
def read_capture_lines(path: str, s3_client=None) -> list[bytes]:
    """All JSON lines under a local folder/file or an ``s3://bucket/prefix``."""
    lines: list[bytes] = []
    if path.startswith("s3://"):
        bucket, _, prefix = path.removeprefix("s3://").partition("/")
        paginator = s3_client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                if obj["Key"].endswith((".jsonl", ".json")):
                    body = s3_client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
                    lines.extend(body.splitlines())
    else:
        root = Path(path)
        if not root.exists():
            raise MonitorError(f"captured data {path!r}: no such file or folder")
        files = [root] if root.is_file() else sorted(root.rglob("*.jsonl"))
        for file in files:
            lines.extend(file.read_bytes().splitlines())
    return [line for line in lines if line.strip()]


def _sagemaker_record(rec: dict) -> tuple[bytes, str, bytes]:
    """A SageMaker data-capture line: (request body, content type, response body)."""
    data = rec["captureData"]

    def body(part):
        raw = part.get("data", "")
        return base64.b64decode(raw) if part.get("encoding") == "BASE64" else raw.encode()

    inp, out = data["endpointInput"], data.get("endpointOutput", {})
    return body(inp), inp.get("observedContentType", "application/json"), body(out)


def captured_frames(lines: list[bytes], parse) -> tuple[pd.DataFrame, np.ndarray]:
    """Captured inputs as one DataFrame and the predictions the server answered.

    Args:
        lines: JSON lines written by the capture (ours or SageMaker's data capture).
        parse: ``parse(body: bytes, content_type: str) -> DataFrame`` (the scoring protocol).
    """
    frames, predictions = [], []
    for line in lines:
        rec = orjson.loads(line)
        if "captureData" in rec:
            body, ctype, response = _sagemaker_record(rec)
            resp = orjson.loads(response) if response else {}
        else:
            ctype = rec.get("content_type", "application/json")
            req = rec["request"]
            if isinstance(req, dict) and "base64" in req:
                body = base64.b64decode(req["base64"])
            elif isinstance(req, str):
                body = req.encode()
            else:
                body = orjson.dumps(req)
            resp = rec.get("response") or {}
        frame = parse(body, ctype)
        frames.append(frame)
        preds = resp.get("predictions", resp) if isinstance(resp, dict) else resp
        preds = np.asarray(preds)
        if preds.ndim == 2 and preds.shape[1] == 1:
            preds = preds[:, 0]
        if preds.ndim == 1 and len(preds) == len(frame):
            predictions.append(preds)
    if not frames:
        raise MonitorError("no captured requests found")
    inputs = pd.concat(frames, ignore_index=True)
    preds = np.concatenate(predictions) if predictions else np.array([])
    return inputs, preds


# ------------------------------------------------------------------------------- statistics
def _is_numeric(s: pd.Series) -> bool:
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
    if _is_numeric(ref) and _is_numeric(cur) and ref.nunique() > bins:
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
    if _is_numeric(ref) and _is_numeric(cur):
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


def live_metric(task: str, metric: str, y_true, y_pred, proba=None, classes=None) -> float:
    """Metric ``metric`` on labelled live data, as the metric catalogue computes it.

    Args:
        task: ``classification`` or ``regression``.
        metric: a catalogue name of that task.
        y_true: the live labels.
        y_pred: what the model predicted for them.
        proba: class probabilities, if the model gives them.
        classes: the model's ``classes_`` (its probability-column order), if known.

    Raises:
        MonitorError: unknown metric, a metric of the other task, or one these inputs cannot
            give (say, ``roc_auc`` without probabilities); never another metric instead.
    """
    try:
        metrics.resolve(metric, task)
        return metrics.compute_one(metric, y_true, y_pred, proba, classes)
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
                        proba=None, classes=None) -> MetricComparison:
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

    Raises:
        MonitorError: no metric can be computed on both sides.
    """
    try:
        wanted = metrics.resolve(wanted, task)
    except metrics.MetricError as exc:
        raise MonitorError(f"selection metric: {exc}") from None
    why = None
    if wanted not in reference:
        why = f"the version has no test {wanted} (tag mlops.metric.test_{wanted})"
    else:
        try:
            value = metrics.compute_one(wanted, y_true, y_pred, proba, classes)
            return MetricComparison(wanted, value, reference[wanted])
        except metrics.MetricUnavailable as exc:
            why = f"{wanted} is not computable on the live data: {exc}"
    live = metrics.compute(task, y_true, y_pred, proba, classes)
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


# ---------------------------------------------------------------------------------- report
#: The monitoring report; Jinja2 escapes every value (feature names come from user data).
_REPORT_PAGE = """<html><head><meta charset="utf-8"><style>body{font-family:sans-serif;\
font-size:13px}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}
.bad{background:#fdd}.ok{background:#efe}</style></head><body>
<h2>{{ title }}</h2><h3>Gates</h3><table><tr><th>gate</th><th>value</th><th>limit</th>
<th>result</th><th>detail</th></tr>
{% for g in gates %}<tr class="{{ 'ok' if g.passed else 'bad' }}"><td>{{ g.name }}</td>
<td>{{ '%.4g'|format(g.value) }}</td><td>{{ '%.4g'|format(g.limit) }}</td>
<td>{{ 'pass' if g.passed else 'FAIL' }}</td><td>{{ g.detail }}</td></tr>
{% endfor %}</table>
<h3>Feature drift</h3><table><thead><tr>{% for h in header %}<th>{{ h }}</th>{% endfor %}</tr>
</thead><tbody>{% for row in rows %}<tr>{% for cell in row %}<td>{{ cell }}</td>{% endfor %}</tr>
{% endfor %}</tbody></table>
<h3>Distributions (training vs live)</h3>
{% for png in plots %}<img src="data:image/png;base64,{{ png }}">{% endfor %}
</body></html>
"""


def _report_cell(value) -> str:
    if isinstance(value, float | np.floating):
        return "" if np.isnan(value) else f"{value:.4g}"
    return str(value)


def report_html(title: str, drift: pd.DataFrame, gates: list[Gate], reference: pd.DataFrame,
                live: pd.DataFrame, pred_ref=None, pred_live=None) -> str:
    """A readable HTML report: gates, the per-feature table and overlaid distributions."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    def figure_png(fig) -> str:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=72)
        return base64.b64encode(buf.getvalue()).decode()

    shown = list(drift.sort_values("psi", ascending=False)["feature"][:12])
    plots = []
    for col in shown + (["prediction"] if pred_ref is not None and len(pred_live) else []):
        ref = pd.Series(pred_ref) if col == "prediction" else reference[col]
        cur = pd.Series(pred_live) if col == "prediction" else live[col]
        fig = Figure(figsize=(3.4, 2.2))
        ax = fig.subplots()
        if _is_numeric(ref) and _is_numeric(cur):
            both = np.concatenate([ref.dropna().to_numpy(float), cur.dropna().to_numpy(float)])
            edges = np.histogram_bin_edges(both, bins=30)
            ax.hist(ref.dropna(), bins=edges, density=True, alpha=0.5, label="training")
            ax.hist(cur.dropna(), bins=edges, density=True, alpha=0.5, label="live")
        else:
            r = ref.astype(str).value_counts(normalize=True)
            c = cur.astype(str).value_counts(normalize=True)
            cats = list(dict.fromkeys([*r.index[:8], *c.index[:8]]))
            x = np.arange(len(cats))
            ax.bar(x - 0.2, r.reindex(cats, fill_value=0), 0.4, label="training")
            ax.bar(x + 0.2, c.reindex(cats, fill_value=0), 0.4, label="live")
            ax.set_xticks(x, cats, fontsize=6, rotation=30)
        ax.set_title(str(col)[:40], fontsize=8)
        ax.tick_params(labelsize=6)
        ax.legend(fontsize=6)
        fig.tight_layout()
        plots.append(figure_png(fig))
    # drifted features first, then by PSI: what needs a look is at the top
    ordered = drift.sort_values(["drifted", "psi"], ascending=[False, False])
    rows = [[_report_cell(v) for v in row]
            for row in ordered.itertuples(index=False, name=None)]
    from jinja2 import Environment

    template = Environment(autoescape=True).from_string(_REPORT_PAGE)
    return template.render(title=title, gates=gates, header=[str(c) for c in ordered.columns],
                           rows=rows, plots=plots)
