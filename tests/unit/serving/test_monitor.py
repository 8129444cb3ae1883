import base64
import time

import numpy as np
import orjson
import pandas as pd
import pytest

from serving import monitor as mon
from serving.capture import CaptureWriter


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


def test_capture_files_round_trip_into_frames(tmp_path):
    writer = CaptureWriter(str(tmp_path / "cap"))
    frame = batch(3, 0)
    body = orjson.dumps({"dataframe_split": frame.to_dict(orient="split") | {"index": None}})
    writer.record(body, "application/json", b'{"predictions": [0, 1, 0]}', "m", "1")
    writer.record(frame.to_csv(index=False).encode(), "text/csv", b'{"predictions": [1, 1, 1]}',
                  "m", "1")
    writer.close()
    assert writer.stats.written == 2 and writer.stats.files == 1
    lines = mon.read_capture_lines(str(tmp_path / "cap"))
    first = orjson.loads(lines[0])
    assert first["model"] == "m" and first["request"]["dataframe_split"]["columns"] == list(frame)

    def parse(body, ctype):
        if ctype == "text/csv":
            return pd.read_csv(__import__("io").BytesIO(body))
        return pd.DataFrame(**{k: v for k, v in orjson.loads(body)["dataframe_split"].items()
                               if k != "index"})

    inputs, preds = mon.captured_frames(lines, parse)
    assert len(inputs) == 6 and list(preds) == [0, 1, 0, 1, 1, 1]


def test_sagemaker_data_capture_lines_are_read(tmp_path):
    frame = batch(2, 0)
    line = {"captureData": {
        "endpointInput": {"observedContentType": "text/csv", "mode": "INPUT", "encoding": "BASE64",
                          "data": base64.b64encode(frame.to_csv(index=False).encode()).decode()},
        "endpointOutput": {"observedContentType": "application/json", "mode": "OUTPUT",
                           "encoding": "JSON", "data": '{"predictions": [1, 0]}'}},
        "eventMetadata": {"eventId": "x"}}
    inputs, preds = mon.captured_frames(
        [orjson.dumps(line)], lambda b, c: pd.read_csv(__import__("io").BytesIO(b)))
    assert len(inputs) == 2 and list(preds) == [1, 0]


def test_capture_is_sampled_and_size_bounded(tmp_path):
    writer = CaptureWriter(str(tmp_path), sample_rate=0.0)
    writer.record(b"{}", "application/json", b"{}", "m", "1")
    writer.close()
    assert writer.stats.written == 0 and writer.stats.seen == 1
    small = CaptureWriter(str(tmp_path / "small"), max_file_bytes=400, max_total_bytes=1000)
    for _ in range(20):
        small.record(b'{"inputs": [[1, 2, 3]]}', "application/json", b'{"predictions": [1]}',
                     "m", "1")
    small.close()
    assert small.stats.bytes_written <= 1000
    assert small.stats.dropped_size_limit > 0
    assert small.stats.files >= 2


def test_record_never_blocks_the_caller(tmp_path):
    writer = CaptureWriter(str(tmp_path), queue_size=10)
    start = time.perf_counter()
    for _ in range(5000):
        writer.record(b'{"inputs": [[1]]}', "application/json", b'{"predictions": [1]}', "m", "1")
    per_call = (time.perf_counter() - start) / 5000
    writer.close()
    assert per_call < 1e-4  # well under the 1 ms budget, even when the queue overflows
    assert writer.stats.written + writer.stats.dropped_queue_full == 5000


def test_missing_capture_folder_is_a_one_line_error(tmp_path):
    with pytest.raises(mon.MonitorError, match="no such file or folder"):
        mon.read_capture_lines(str(tmp_path / "nope"))
