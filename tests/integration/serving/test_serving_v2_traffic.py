"""V2 inference on a real scoring server: counted, captured and shadowed like /invocations.

One server (one worker, ``--capture``, ``--shadow``) takes a known mix of Open Inference Protocol requests
(JSON tensors, binary tensors, refusals), metadata and health calls, and ``/invocations``
requests. ``/metrics`` must count the inference requests exactly (format ``v2``), and the
capture must hold each answered one as sent, marked ``"protocol": "v2"``, which monitoring
reads back into the rows that were sent and the labels that were answered; ``--shadow``
mirrors them to the challenger (the same model again), which agrees on every row.
"""

from __future__ import annotations

import json
import sys
import time

import mlflow.pyfunc
import numpy as np
import orjson
import pandas as pd
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from monitoring.capture import captured_frames, read_capture_lines, request_rows
from serving.online import metrics
from tests.integration.serving.conftest import cancer_champion, using_store
from tests.support.processes import free_port, running

pytestmark = pytest.mark.integration

P = "mlops_serving_"


def _samples(url: str) -> dict[tuple, float]:
    out = {}
    for family in text_string_to_metric_families(requests.get(f"{url}/metrics", timeout=10).text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _tensors(rows: pd.DataFrame) -> dict:
    return {"inputs": [{"name": c, "datatype": "FP64", "shape": [len(rows)],
                        "data": rows[c].tolist()} for c in rows.columns]}


def _binary(rows: pd.DataFrame) -> tuple[bytes, dict]:
    """The binary tensor extension: a JSON header, then each input's little-endian bytes."""
    head = {"inputs": [{"name": c, "datatype": "FP64", "shape": [len(rows)],
                        "parameters": {"binary_data_size": 8 * len(rows)}}
                       for c in rows.columns]}
    header = orjson.dumps(head)
    tail = b"".join(rows[c].to_numpy(dtype="<f8").tobytes() for c in rows.columns)
    return header + tail, {"inference-header-content-length": str(len(header)),
                           "content-type": "application/octet-stream"}


@pytest.fixture(scope="module")
def served(module_store, tmp_path_factory):
    version, X = cancer_champion(module_store, "tumours-v2", 4)
    with using_store(module_store):
        model = mlflow.pyfunc.load_model(f"models:/tumours-v2/{version}")
    client = module_store.client
    first = client.get_model_version("tumours-v2", version)  # the same model: the challenger
    again = client.create_model_version("tumours-v2", first.source, first.run_id).version
    client.set_registered_model_alias("tumours-v2", "challenger", again)
    capture = tmp_path_factory.mktemp("v2-capture")
    port = free_port()
    cmd = [sys.executable, "-m", "serving", "serve", "tumours-v2@champion", "--port", str(port),
           "--workers", "1", "--capture", str(capture), "--no-access-log",
           "--shadow", "tumours-v2@challenger", "--shadow-sample", "1"]
    with running(cmd, f"http://127.0.0.1:{port}/ping", "serving-v2-traffic",
                 env={"MLFLOW_TRACKING_URI": module_store.uri}, cwd=module_store.path):
        yield f"http://127.0.0.1:{port}", version, X, capture, model


def test_v2_inference_is_counted_and_captured_like_invocations(served):
    url, version, X, capture, model = served
    infer = f"{url}/v2/models/tumours-v2/infer"
    sent, sent_bytes, answered = [], 0, []
    for i in range(5):  # JSON tensors, 3 rows each
        rows = X.iloc[3 * i:3 * i + 3]
        body = orjson.dumps(_tensors(rows))
        r = requests.post(infer, data=body, headers={"content-type": "application/json"},
                          timeout=30)
        assert r.status_code == 200, r.text
        sent.append(rows)
        answered.extend(r.json()["outputs"][0]["data"])
        sent_bytes += len(body)
    for i in range(2):  # binary tensors, 2 rows each
        rows = X.iloc[20 + 2 * i:22 + 2 * i]
        body, headers = _binary(rows)
        r = requests.post(infer, data=body, headers=headers, timeout=30)
        assert r.status_code == 200, r.text
        sent.append(rows)
        answered.extend(r.json()["outputs"][0]["data"])
        sent_bytes += len(body)
    missing = orjson.dumps({"inputs": _tensors(X.head(2))["inputs"][1:]})  # an input missing
    for _ in range(2):
        r = requests.post(infer, data=missing, headers={"content-type": "application/json"},
                          timeout=30)
        assert r.status_code == 400 and "error" in r.json()
        sent_bytes += len(missing)
    body = orjson.dumps(_tensors(X.head(1)))
    r = requests.post(f"{url}/v2/models/tumours-v2/versions/999/infer", data=body, timeout=30)
    assert r.status_code == 404
    sent_bytes += len(body)
    for path in ("/v2", "/v2/health/live", "/v2/health/ready", "/v2/models/tumours-v2",
                 "/v2/models/tumours-v2/ready"):  # not scoring requests: not counted
        assert requests.get(f"{url}{path}", timeout=10).status_code == 200, path
    for i in range(3):
        rows = X.iloc[[30 + i]]
        body = json.dumps({"dataframe_split": json.loads(rows.to_json(orient="split",
                                                                      index=False))})
        r = requests.post(f"{url}/invocations", data=body,
                          headers={"content-type": "application/json"}, timeout=30)
        assert r.status_code == 200
        sent.append(rows)
        answered.extend(r.json()["predictions"])
        sent_bytes += len(body)

    deadline = time.monotonic() + metrics.FLUSH_SECONDS + 10
    while time.monotonic() < deadline:  # the worker adds its counts within FLUSH_SECONDS
        got = _samples(url)
        if got.get((P + "request_seconds_count", ())) == 13:
            break
        time.sleep(0.2)
    count = {(k[1][0][1], k[1][1][1]): v for k, v in got.items()
             if k[0] == P + "requests_total" and v}
    assert count == {("v2", "2xx"): 7, ("v2", "4xx"): 3, ("json", "2xx"): 3}
    assert got[(P + "request_seconds_count", ())] == 13
    assert got[(P + "scoring_seconds_count", ())] == 10
    assert got[(P + "rejected_requests_total", (("reason", "400"),))] == 2
    assert got[(P + "rejected_requests_total", (("reason", "404"),))] == 1
    assert got[(P + "rows_scored_total", ())] == 15 + 4 + 3
    assert got[(P + "scored_requests_total", (("path", "fast"),))] == 10
    assert got[(P + "request_bytes_total", ())] == sent_bytes
    assert got[(P + "requests_in_flight", ())] == 0

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:  # the challenger loads, then scores what was queued
        got = _samples(url)
        if got.get((P + "shadow_requests_total", ())) == 10:
            break
        time.sleep(0.5)
    # every answered request, V2 (JSON and binary) and /invocations, mirrored and agreed with
    assert got[(P + "shadow_requests_total", ())] == 10
    assert got[(P + "shadow_rows_total", ())] == 22
    assert got[(P + "shadow_agreed_rows_total", ())] == 22

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the writer thread writes after the response
        lines = read_capture_lines(str(capture)) if list(capture.rglob("*.jsonl")) else []
        if len(lines) >= 10:
            break
        time.sleep(0.05)
    assert len(lines) == 10  # the answered requests; refusals are not captured
    records = [orjson.loads(line) for line in lines]
    assert [r.get("protocol") for r in records] == ["v2"] * 7 + [None] * 3
    assert records[0]["request"] == _tensors(sent[0]) and records[0]["version"] == version
    assert [r.get("header_length") is not None for r in records[5:7]] == [True, True]
    inputs, predictions = captured_frames(lines, lambda body, ctype: request_rows(body, ctype))
    pd.testing.assert_frame_equal(inputs, pd.concat(sent, ignore_index=True),
                                  check_dtype=False)
    expected = model.predict(inputs)
    assert predictions.tolist() == answered == np.asarray(expected).tolist()
