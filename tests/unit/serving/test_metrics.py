"""The scoring app's metrics driven directly: what is counted, what is not, and /metrics."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from serving.online import metrics
from serving.online.app import ModelHolder, ScoringApp, Served
from serving.online.model import ModelVersionInfo, Scorer


class TwoRows(Scorer):
    kind = "pyfunc"

    def __init__(self):
        pass

    def score(self, body, content_type):
        if body == b"bad":
            from serving.online.protocol import RequestError

            raise RequestError(400, "bad input")
        if (m := metrics.current()) is not None:  # as Scorer.score_pyfunc counts
            m.pyfunc(metrics.rows_in_answer(b'{"predictions": [1, 0]}'))
        return b'{"predictions": [1, 0]}'


@pytest.fixture
def active():
    """Metrics on, in a registry of the test's own (the process's stays untouched)."""
    m = metrics.ServingMetrics(CollectorRegistry())
    metrics._active = m
    try:
        yield m
    finally:
        metrics._active = None


def _call(app, path="/invocations", method="POST", body=b"{}", ctype="application/json"):
    sent = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive():
        return messages.pop(0)

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path,
             "headers": [(b"content-type", ctype.encode())], "client": ("127.0.0.1", 1)}
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], dict(sent[0]["headers"]), sent[1]["body"]


def _info(version: str) -> ModelVersionInfo:
    return ModelVersionInfo(uri=f"models:/m/{version}", name="m", version=version,
                            alias="champion")


def _samples(text: bytes) -> dict[tuple, float]:
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_requests_are_counted_by_status_class_format_and_rejection(active):
    app = ScoringApp(ModelHolder(Served(_info("3"), TwoRows())), max_body_bytes=100)
    for _ in range(3):
        assert _call(app)[0] == 200
    assert _call(app, body=b"a,b\n1,2", ctype="text/csv")[0] == 200
    assert _call(app, body=b"bad")[0] == 400
    assert _call(app, body=b"x" * 101)[0] == 413
    assert _call(app, method="GET")[0] == 405
    status, headers, text = _call(app, path="/metrics", method="GET")
    assert status == 200 and headers[b"content-type"].startswith(b"text/plain; version=0.0.4")
    got = _samples(text)
    p = metrics.PREFIX
    assert got[(p + "requests_total", (("format", "json"), ("status_class", "2xx")))] == 3
    assert got[(p + "requests_total", (("format", "csv"), ("status_class", "2xx")))] == 1
    assert got[(p + "requests_total", (("format", "json"), ("status_class", "4xx")))] == 3
    assert got[(p + "rejected_requests_total", (("reason", "400"),))] == 1
    assert got[(p + "rejected_requests_total", (("reason", "413"),))] == 1
    assert got[(p + "rejected_requests_total", (("reason", "405"),))] == 1
    assert got[(p + "request_seconds_count", ())] == 7
    assert got[(p + "scoring_seconds_count", ())] == 4  # the ones that reached the model
    assert got[(p + "rows_scored_total", ())] == 8
    assert got[(p + "scored_requests_total", (("path", "pyfunc"),))] == 4
    assert got[(p + "request_bytes_total", ())] == 3 * 2 + 7 + 3  # the 413's body is not read
    assert got[(p + "requests_in_flight", ())] == 0


def test_metrics_needs_no_model_and_is_not_scoring_traffic(active):
    class NoModel:  # the route must not touch the model
        current = None

    app = ScoringApp(NoModel())
    for _ in range(3):
        status, _, text = _call(app, path="/metrics", method="GET")
        assert status == 200
    got = _samples(text)
    assert sum(v for (name, _), v in got.items() if name.endswith("requests_total")) == 0
    assert got[(metrics.PREFIX + "request_seconds_count", ())] == 0


def test_a_swap_moves_the_version_gauge(active):
    holder = ModelHolder(Served(_info("3"), TwoRows()))
    holder.swap(Served(_info("4"), TwoRows()))
    got = _samples(metrics.render())
    p = metrics.PREFIX
    key = (("alias", "champion"), ("model_name", "m"))
    assert got[(p + "model_info", (*key[:1], *key[1:], ("model_version", "3")))] == 0
    assert got[(p + "model_info", (*key, ("model_version", "4")))] == 1
    assert got[(p + "model_swaps_total", ())] == 1


def test_metrics_off_is_a_404_and_counts_nothing():
    assert metrics.current() is None
    app = ScoringApp(ModelHolder(Served(_info("3"), TwoRows())))
    assert _call(app)[0] == 200
    assert _call(app, path="/metrics", method="GET")[0] == 404


@pytest.mark.parametrize(("ctype", "fmt"), [
    ("application/json", "json"), ("application/json; charset=utf-8", "json"),
    ("text/csv", "csv"), ("Text/CSV; charset=utf-8", "csv"), ("text/plain", "other"),
    (None, "other"),
])
def test_input_format(ctype, fmt):
    assert metrics.input_format(ctype) == fmt


def test_rows_in_answer():
    assert metrics.rows_in_answer(b'{"predictions": [1, 2, 3]}') == 3
    assert metrics.rows_in_answer('{"predictions": {"a": [1]}}') is None
    assert metrics.rows_in_answer(b"not json") is None


def _value(name: str, labels: tuple = ()) -> float:
    return _samples(metrics.render()).get((metrics.PREFIX + name, labels), 0)


def test_shadow_counts_requests_rows_agreement_and_drops(active):
    import orjson

    from serving.shadow.run import Shadow

    shadow = Shadow(lambda body, ctype: orjson.dumps({"predictions": [1, 0, 0]}), None,
                    name="m", champion_version="1", challenger_version="2")
    shadow.compare(b"{}", None, orjson.dumps({"predictions": [1, 1, 0]}), 0.001)
    for _ in range(1001):  # not started: nothing drains its queue of 1000
        shadow.record(b"{}", None, b'{"predictions": [1]}', 0.001)
    assert _value("shadow_requests_total") == 1
    assert _value("shadow_rows_total") == 3
    assert _value("shadow_agreed_rows_total") == 2
    assert _value("shadow_dropped_total") == 1


def test_capture_counts_written_and_dropped_lines(active, tmp_path):
    from serving.online.capture import CaptureWriter

    writer = CaptureWriter(str(tmp_path), max_total_bytes=1000)
    for _ in range(5):  # about 300 bytes a line: three fit in 1000
        writer.record(b'{"dataframe_split": {"columns": ["a"], "data": [[1]]}}' + b" " * 100,
                      "application/json", b'{"predictions": [1]}', "m", "1")
    assert writer.close()
    written = writer.stats.written
    assert 0 < written < 5
    assert _value("capture_lines_total") == written
    assert _value("capture_dropped_total", (("reason", "size_limit"),)) == 5 - written


def test_the_run_folder_is_in_memory_and_removed(monkeypatch):
    import os

    monkeypatch.delenv(metrics.ENV_DIR, raising=False)
    monkeypatch.delenv("TMPDIR", raising=False)
    path = metrics.prepare_dir()
    try:
        assert os.environ[metrics.ENV_DIR] == path and os.path.isdir(path)
        if os.access("/dev/shm", os.W_OK):
            assert path.startswith(f"/dev/shm/mlops-serving-metrics-{os.getpid()}-")
    finally:
        metrics.remove_dir(path)
    assert not os.path.exists(path) and metrics.ENV_DIR not in os.environ
    monkeypatch.setenv(metrics.ENV_DIR, "/srv/operators-own")
    assert metrics.prepare_dir() is None  # the operator's folder: used, never removed


def test_a_killed_servers_folder_is_removed_by_the_next(monkeypatch, tmp_path):
    import os
    import subprocess
    import sys

    monkeypatch.delenv(metrics.ENV_DIR, raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))  # read once per process
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    orphan = tmp_path / f"{metrics.DIR_PREFIX}{dead}-abc"
    orphan.mkdir()
    alive = tmp_path / f"{metrics.DIR_PREFIX}{os.getpid()}-def"  # a running server's
    alive.mkdir()
    path = metrics.prepare_dir()
    try:
        assert not orphan.exists() and alive.exists() and path.startswith(str(tmp_path))
    finally:
        metrics.remove_dir(path)
