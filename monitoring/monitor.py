"""Judge captured traffic against a version: drift, the live metric, a monitoring run.

:func:`run_monitor` reads what it needs through MLflow (the version's lineage tags, its
training split, the model) and the captured lines, hands them to the drift statistics
(:mod:`monitoring.drift`), and logs a run with the HTML report (:mod:`monitoring.report`). The
command line (:mod:`monitoring.cli`) prints the verdict and may start the retrain trigger
(:mod:`monitoring.retrain`).
"""

from __future__ import annotations

import logging
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core import names
from core.models import resolve_model
from core.plan import planned_model
from core.uris import ModelRef
from monitoring.capture import captured_frames, read_capture_lines, request_rows
from monitoring.drift import Gate, compare_live_metric, feature_drift, metric_gate, psi
from monitoring.errors import MonitorError
from monitoring.report import report_html

_logger = logging.getLogger(__name__)

#: Prefix of the tags holding a version's test metrics (written by the register step).
TEST_METRIC_TAG = names.metric_tag("test_")


@dataclass
class MonitorResult:
    """What the monitor found, for the CLI's output and exit code."""

    name: str
    version: str
    rows: int
    drift: pd.DataFrame
    gates: list[Gate]
    run_id: str
    prediction_psi: float | None = None
    target: str = "target"

    @property
    def crossed(self) -> bool:
        """Whether any threshold was crossed."""
        return not all(g.passed for g in self.gates)


def _read_table(path: str) -> pd.DataFrame:
    p = Path(path)
    if not p.is_file():
        raise MonitorError(f"{path!r}: no such file")
    return pd.read_parquet(p) if p.suffix.lower() in {".parquet", ".pq"} else pd.read_csv(p)


def _metric_name(feature: str) -> str:
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", feature)[:200]


def _test_metrics(tags: dict[str, str]) -> dict[str, float]:
    """The version's test metrics from its ``mlops.metric.test_<name>`` tags."""
    out = {}
    for key, value in tags.items():
        if key.startswith(TEST_METRIC_TAG):
            try:
                out[key.removeprefix(TEST_METRIC_TAG)] = float(value)
            except ValueError:
                continue
    return out


def run_monitor(client, ref: ModelRef, captured: str, settings, labels: str | None = None,
                s3_client=None) -> MonitorResult:
    """Compare captured inputs/predictions (and labels) with the version; log a monitoring run.

    Raises:
        ModelNotFound: unknown model/alias/version.
        MonitorError: unreadable or too little captured data, missing lineage.
    """
    import mlflow

    info = resolve_model(client, ref)
    mv = client.get_model_version(info.name, info.version)
    tags = mv.tags
    target = tags.get(names.TARGET_TAG, "target")
    task = tags.get(names.TASK_TAG, "classification")
    # the metric train selected on; "auto" (the task's default) when the tag is missing
    metric = tags.get(names.SELECTION_METRIC_TAG) or "auto"
    train_uri = tags.get(names.TRAIN_DATA_TAG) or tags.get(names.TEST_DATA_TAG, "").replace(
        "test.parquet", "train.parquet")
    if not train_uri:
        raise MonitorError(
            f"{info.name}/{info.version} has no {names.TRAIN_DATA_TAG} lineage tag")
    with tempfile.TemporaryDirectory() as tmp:
        reference = pd.read_parquet(mlflow.artifacts.download_artifacts(train_uri, dst_path=tmp))
    reference = reference.drop(columns=[target], errors="ignore")

    model = mlflow.pyfunc.load_model(info.uri)
    # the workflow's pipeline scores the reference and test rows with its verified plan (the
    # same answers as pyfunc's, proven at load; any other model as it is)
    model = planned_model(model)[0] or model
    schema = model.metadata.get_input_schema()

    def parse(body: bytes, content_type: str):
        # as the server parsed it: also the bodies pyfunc answered (nulls, extra columns)
        return request_rows(body, content_type, schema)

    live, live_pred = captured_frames(read_capture_lines(captured, s3_client), parse)
    m = settings.monitor
    if len(live) < m.min_rows:
        raise MonitorError(f"only {len(live)} captured rows; at least {m.min_rows} needed "
                               "(monitor.min_rows)")
    drift = feature_drift(reference, live[reference.columns], m.psi_threshold, m.p_value)
    drifted = drift.loc[drift["drifted"], "feature"].tolist()
    gates = [Gate("drifted features", len(drifted), m.max_drifted_features,
                      len(drifted) <= m.max_drifted_features, ", ".join(drifted) or "none")]
    pred_psi, ref_pred = None, None
    if len(live_pred):
        ref_pred = np.asarray(model.predict(reference))
        pred_psi = psi(pd.Series(ref_pred), pd.Series(live_pred))
        gates.append(Gate("prediction PSI", pred_psi, m.prediction_psi_threshold,
                              pred_psi < m.prediction_psi_threshold))
    live_value = None
    if labels:
        labelled = _read_table(labels)
        if target not in labelled.columns:
            raise MonitorError(f"labels {labels!r} lack the target column {target!r}")
        X, y = labelled[reference.columns], labelled[target]
        raw = model.get_raw_model() if hasattr(model, "get_raw_model") else None
        proba = raw.predict_proba(X) if hasattr(raw, "predict_proba") else None
        # the model's class order, as train and evaluate used it for the test metrics
        classes = getattr(raw, "classes_", None)
        # the class the version's test f1/roc_auc scored, so live and test are the same metric
        positive = tags.get(names.POSITIVE_CLASS_TAG)
        compared = compare_live_metric(task, metric, y, np.asarray(model.predict(X)),
                                       _test_metrics(tags), proba, classes, positive)
        if compared.note:
            _logger.warning("%s/%s: %s", info.name, info.version, compared.note)
        metric, live_value = compared.metric, compared.live
        gates.append(metric_gate(metric, live_value, compared.reference, m.max_metric_drop,
                                     compared.note))

    exp = client.get_experiment_by_name(m.experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(m.experiment)
    title = f"Monitoring {info.name} v{info.version} ({len(live)} captured rows)"
    page = report_html(title, drift, gates, reference, live, ref_pred, live_pred)
    with mlflow.start_run(experiment_id=exp_id, run_name=f"monitor-{info.name}-v{info.version}",
                          tags={names.MODEL_NAME_TAG: info.name,
                                names.MODEL_VERSION_TAG: info.version,
                                names.MONITOR_VERDICT_TAG: "ok" if all(g.passed for g in gates)
                                else "threshold crossed"}) as run:
        mlflow.log_params({"model": info.name, "version": info.version,
                           "captured": captured[:500], "labels": (labels or "")[:500],
                           "rows": len(live)})
        metrics = {f"psi.{_metric_name(r.feature)}": r.psi for r in drift.itertuples()
                   if np.isfinite(r.psi)}
        metrics["drifted_features"] = len(drifted)
        if pred_psi is not None:
            metrics["prediction_psi"] = pred_psi
        if live_value is not None:
            metrics[f"live_{metric}"] = live_value
        mlflow.log_metrics(metrics)
        mlflow.log_text(page, "monitoring/report.html")
        mlflow.log_table(drift, "monitoring/feature_drift.json")
    return MonitorResult(info.name, info.version, len(live), drift, gates, run.info.run_id,
                         pred_psi, target)
