"""Monitoring: drift statistics, gates, the report, and reading what serving captured.

The captured lines are written by the scoring server's own writer (serving.online.capture):
the capture record (core.capture) is the interface between the two packages, and these tests
read what the writer wrote.
"""

import base64

import numpy as np
import orjson
import pandas as pd
import pytest

from monitoring import drift as mon
from monitoring.capture import (
    captured_frames,
    read_capture_lines,
    request_rows,
    v2_request_rows,
)
from monitoring.errors import MonitorError
from monitoring.report import report_html
from serving.online.capture import CaptureWriter


def batch(n, seed, shift=0.0, colour_p=(0.5, 0.3, 0.2)):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "a": rng.normal(size=n) + shift,
        "b": rng.normal(size=n),
        "colour": rng.choice(["red", "green", "blue"], size=n, p=colour_p),
    })


def test_drift_is_found_in_the_shifted_batch_only_on_the_right_features():
    reference = batch(3000, 0)
    same = mon.feature_drift(reference, batch(800, 1), 0.2, 0.001)
    assert not same["drifted"].any(), same
    shifted = mon.feature_drift(reference, batch(800, 2, shift=1.0, colour_p=(0.1, 0.2, 0.7)),
                                0.2, 0.001)
    assert shifted.set_index("feature")["drifted"].to_dict() == {"a": True, "b": False,
                                                                 "colour": True}
    assert set(shifted["test"]) == {"ks", "chi2"}


def test_psi_is_zero_for_identical_and_grows_with_shift():
    ref = pd.Series(np.random.default_rng(0).normal(size=5000))
    assert mon.psi(ref, ref) == pytest.approx(0, abs=1e-9)
    assert mon.psi(ref, ref + 0.5) < mon.psi(ref, ref + 1.0)
    assert mon.psi(pd.Series(["x"] * 10), pd.Series(["y"] * 10)) > 1  # unseen category


def test_metric_gate_fails_on_a_drop_beyond_the_allowance():
    assert mon.metric_gate("accuracy", 0.93, 0.95, 0.05).passed
    assert not mon.metric_gate("accuracy", 0.80, 0.95, 0.05).passed
    assert not mon.metric_gate("rmse", 12.0, 10.0, 1.0).passed
    assert mon.metric_gate("rmse", 10.5, 10.0, 1.0).passed
    gate = mon.metric_gate("log_loss", 0.5, 0.3, 0.1)  # lower is better: a rise is a drop
    assert not gate.passed and gate.limit == pytest.approx(0.4)
    assert gate.detail == "test log_loss 0.3000, live 0.5000, drop +0.2000 (allowed 0.1)"


def test_live_metric_is_never_replaced_by_another():
    y = np.array([0, 1, 1, 0])
    assert mon.live_metric("classification", "accuracy", y, np.array([0, 1, 0, 0])) == 0.75
    with pytest.raises(MonitorError, match="roc_auc needs class probabilities"):
        mon.live_metric("classification", "roc_auc", y, y)  # the old monitor gave accuracy
    with pytest.raises(MonitorError, match="not a classification one"):
        mon.live_metric("classification", "rmse", y, y)


def test_capture_files_round_trip_into_frames(tmp_path):
    writer = CaptureWriter(str(tmp_path / "cap"))
    frame = batch(3, 0)
    body = orjson.dumps({"dataframe_split": frame.to_dict(orient="split") | {"index": None}})
    writer.record(body, "application/json", b'{"predictions": [0, 1, 0]}', "m", "1")
    writer.record(frame.to_csv(index=False).encode(), "text/csv", b'{"predictions": [1, 1, 1]}',
                  "m", "1")
    writer.close()
    assert writer.stats.written == 2 and writer.stats.files == 1
    lines = read_capture_lines(str(tmp_path / "cap"))
    first = orjson.loads(lines[0])
    assert first["model"] == "m" and first["request"]["dataframe_split"]["columns"] == list(frame)

    def parse(body, ctype):
        if ctype == "text/csv":
            return pd.read_csv(__import__("io").BytesIO(body))
        return pd.DataFrame(**{k: v for k, v in orjson.loads(body)["dataframe_split"].items()
                               if k != "index"})

    inputs, preds = captured_frames(lines, parse)
    assert len(inputs) == 6 and list(preds) == [0, 1, 0, 1, 1, 1]


def test_sagemaker_data_capture_lines_are_read(tmp_path):
    frame = batch(2, 0)
    line = {"captureData": {
        "endpointInput": {"observedContentType": "text/csv", "mode": "INPUT", "encoding": "BASE64",
                          "data": base64.b64encode(frame.to_csv(index=False).encode()).decode()},
        "endpointOutput": {"observedContentType": "application/json", "mode": "OUTPUT",
                           "encoding": "JSON", "data": '{"predictions": [1, 0]}'}},
        "eventMetadata": {"eventId": "x"}}
    inputs, preds = captured_frames(
        [orjson.dumps(line)], lambda b, c: pd.read_csv(__import__("io").BytesIO(b)))
    assert len(inputs) == 2 and list(preds) == [1, 0]


def test_captured_requests_are_parsed_as_mlflow_parses_them():
    frame = batch(3, 0)
    split = orjson.dumps({"dataframe_split": frame.to_dict(orient="split") | {"index": None}})
    pd.testing.assert_frame_equal(request_rows(split, "application/json"), frame)
    csv = request_rows(frame.to_csv(index=False).encode(), "text/csv; charset=utf-8")
    pd.testing.assert_frame_equal(csv, frame)
    records = request_rows(b'{"dataframe_records": [{"a": 1, "b": null}]}', "application/json")
    assert list(records.columns) == ["a", "b"] and records["b"].isna().all()
    with pytest.raises(MonitorError, match="a captured request cannot be read"):
        request_rows(b'{"neither": 1}', "application/json")


def test_missing_capture_folder_is_a_one_line_error(tmp_path):
    with pytest.raises(MonitorError, match="no such file or folder"):
        read_capture_lines(str(tmp_path / "nope"))


def _monitored_version(tmp_path, name, estimator, selection_metric, test_metrics):
    """Register ``estimator`` (fitted on a simple batch) with the register step's tags."""
    import mlflow
    from mlflow.models import infer_signature

    rng = np.random.default_rng(0)
    train = pd.DataFrame({"a": rng.normal(size=300), "b": rng.normal(size=300)})
    y = (train["a"] + train["b"] > 0).astype(int)
    estimator.fit(train, y)
    train_file = tmp_path / f"{name}-train.parquet"
    train.assign(target=y).to_parquet(train_file)
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            estimator, name="model", registered_model_name=name,
            signature=infer_signature(train, estimator.predict(train)),
            pip_requirements=[f"mlflow=={mlflow.__version__}"],
            serialization_format="cloudpickle")
    client = mlflow.MlflowClient()
    version = str(info.registered_model_version)
    tags = {"mlops.target": "target", "mlops.task": "classification",
            "mlops.selection_metric": selection_metric, "mlops.train_data": str(train_file),
            **{f"mlops.metric.test_{k}": f"{v:.6g}" for k, v in test_metrics.items()}}
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    live = pd.DataFrame({"a": rng.normal(size=80), "b": rng.normal(size=80)})
    live["target"] = (live["a"] + live["b"] > 0).astype(int)
    writer = CaptureWriter(str(tmp_path / f"{name}-capture"))
    features = live.drop(columns=["target"])
    body = orjson.dumps({"dataframe_split": {"columns": list(features),
                                             "data": features.to_numpy().tolist()}})
    preds = orjson.dumps({"predictions": estimator.predict(features).tolist()})
    writer.record(body, "application/json", preds, name, version)
    writer.close()
    live.to_csv(tmp_path / f"{name}-labels.csv", index=False)
    return client, live


@pytest.mark.parametrize(
    ("estimator", "selection", "compared", "note"),
    [
        # probabilities on both sides: the selection metric itself
        ("logistic", "log_loss", "log_loss", ""),
        # no predict_proba: the old monitor put a live accuracy next to the test roc_auc
        ("ridge", "roc_auc", "accuracy", "compared accuracy instead of roc_auc"),
    ],
)
def test_monitor_compares_the_same_metric_on_both_sides(tmp_path, estimator, selection,
                                                         compared, note):
    import mlflow
    from sklearn.linear_model import LogisticRegression, RidgeClassifier

    from core import metrics
    from core.settings import load_settings
    from core.uris import parse_model_ref
    from monitoring.monitor import run_monitor

    model = LogisticRegression() if estimator == "logistic" else RidgeClassifier()
    test_metrics = {"roc_auc": 0.97, "accuracy": 0.93, "log_loss": 0.21}
    client, live = _monitored_version(tmp_path, estimator, model, selection, test_metrics)
    result = run_monitor(client, parse_model_ref(f"{estimator}/1", allow_run=False),
                         str(tmp_path / f"{estimator}-capture"), load_settings(),
                         str(tmp_path / f"{estimator}-labels.csv"))
    gate = next(g for g in result.gates if g.name.startswith("live "))
    assert gate.name == f"live {compared}"
    assert f"test {compared} {test_metrics[compared]:.4f}" in gate.detail
    assert (note in gate.detail) if note else ("instead" not in gate.detail)
    X, y = live.drop(columns=["target"]), live["target"]
    proba = model.predict_proba(X) if hasattr(model, "predict_proba") else None
    assert gate.value == pytest.approx(
        metrics.compute_one(compared, y, model.predict(X), proba, model.classes_))
    logged = mlflow.MlflowClient().get_run(result.run_id).data.metrics
    assert [k for k in logged if k.startswith("live_")] == [f"live_{compared}"]


def test_report_escapes_feature_names_and_details_from_the_data():
    evil = "<script>alert('x')</script>"
    reference = batch(300, 0).rename(columns={"a": evil})
    live = batch(200, 1, shift=1.0).rename(columns={"a": evil})
    drift = mon.feature_drift(reference, live, 0.2, 0.001)
    gates = [mon.Gate("drifted features", 1, 0, False, detail=evil)]
    page = report_html(f"report of {evil}", drift, gates, reference, live,
                           pred_ref=np.zeros(300), pred_live=np.ones(200))
    assert "<script>" not in page
    assert page.count("&lt;script&gt;") >= 3  # title, gate detail, drift table
    assert page.count("<img src=\"data:image/png;base64,") == 4  # a, b, colour, prediction
    assert "<td>FAIL</td>" in page


def test_the_live_metric_scores_the_versions_positive_class():
    # the version's test f1 scored "no" (its mlops.positive_class): live f1 must score "no" too
    from sklearn.metrics import f1_score

    y = np.array(["no", "no", "yes", "yes", "yes", "no", "yes", "yes"])
    pred = np.array(["no", "yes", "yes", "yes", "no", "no", "yes", "yes"])
    on_no = mon.compare_live_metric("classification", "f1", y, pred, {"f1": 0.5}, positive="no")
    on_last = mon.compare_live_metric("classification", "f1", y, pred, {"f1": 0.5})
    assert on_no.live == pytest.approx(f1_score(y, pred, pos_label="no"))
    assert on_last.live == pytest.approx(f1_score(y, pred, pos_label="yes"))
    assert on_no.live != on_last.live


def test_v2_requests_read_back_as_rows_json_and_binary():
    json_body = orjson.dumps({"inputs": [
        {"name": "a", "datatype": "FP64", "shape": [2, 1], "data": [[1.5], [2.5]]},
        {"name": "colour", "datatype": "BYTES", "shape": [2], "data": ["red", None]}]})
    frame = v2_request_rows(json_body)
    assert frame["a"].tolist() == [1.5, 2.5] and frame["colour"][0] == "red"
    assert frame["colour"].isna().tolist() == [False, True]  # a missing value
    words = b"".join(len(w).to_bytes(4, "little") + w for w in (b"red", b"blue"))
    head = orjson.dumps({"inputs": [
        {"name": "a", "datatype": "INT32", "shape": [2], "parameters": {"binary_data_size": 8}},
        {"name": "colour", "datatype": "BYTES", "shape": [2],
         "parameters": {"binary_data_size": len(words)}}]})
    body = head + np.array([3, 4], dtype="<i4").tobytes() + words
    binary = v2_request_rows(body, len(head))
    assert binary["a"].tolist() == [3, 4] and binary["colour"].tolist() == ["red", "blue"]
    with pytest.raises(MonitorError, match="a captured V2 request cannot be read: .*not a column"):
        v2_request_rows(orjson.dumps({"inputs": [
            {"name": "m", "datatype": "FP64", "shape": [1, 2], "data": [1.0, 2.0]}]}))
