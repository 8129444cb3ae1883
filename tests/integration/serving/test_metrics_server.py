"""GET /metrics on a real 2-worker scoring server: every worker's counts add up exactly.

The test sends a known mix of requests (and a 431 refused before the app) on fresh connections
(so the kernel spreads them over both workers), then reads /metrics as Prometheus would: the
totals must be exactly what was sent, whichever worker answers the scrape. Then the alias moves
(the version gauge follows), a worker is killed (its counts stay, it is marked dead), and when
the server stops its metrics directory is gone.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest
import requests
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from serving.online import metrics
from tests.support.processes import free_port, running
from tests.support.serving_models import cancer_data, fit_pipeline, log_sklearn_version

pytestmark = pytest.mark.integration

P = "mlops_serving_"
MAX_BODY = 20_000


def _samples(url: str) -> dict[tuple, float]:
    response = requests.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    out = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _requests(got: dict, status_class: str, fmt: str) -> float:
    return got.get((P + "requests_total", (("format", fmt), ("status_class", status_class))), 0)


def _split(frame) -> str:
    return json.dumps({"dataframe_split": json.loads(frame.to_json(orient="split", index=False))})


@pytest.fixture(scope="module")
def server(module_store, tmp_path_factory):
    X, y = cancer_data()
    client = module_store.client
    v1 = log_sklearn_version(client, "tumours", fit_pipeline(X, y, C=1.0), X)
    first = client.get_model_version("tumours", v1)  # the same model again: a new version
    v2 = str(client.create_model_version("tumours", first.source, first.run_id).version)
    client.set_registered_model_alias("tumours", "champion", v1)
    tmp = tmp_path_factory.mktemp("metrics-tmp")  # the server makes its metrics folder here
    port = free_port()
    cmd = [sys.executable, "-m", "serving", "serve", "tumours@champion", "--port", str(port),
           "--workers", "2", "--poll-seconds", "0.5", "--max-body-bytes", str(MAX_BODY),
           "--no-access-log"]
    env = {"MLFLOW_TRACKING_URI": module_store.uri, "TMPDIR": str(tmp)}
    state = {"X": X, "client": client, "v1": v1, "v2": v2, "tmp": tmp}
    with running(cmd, f"http://127.0.0.1:{port}/ping", "serving-metrics", env=env,
                 cwd=module_store.path) as proc:
        state.update(url=f"http://127.0.0.1:{port}", proc=proc)
        yield state
    state["stopped"] = True


def _folder(tmp: Path) -> Path:
    (folder,) = tmp.glob("mlops-serving-metrics-*")
    return folder


def _requests_by_pid(folder: Path) -> dict[int, float]:
    """Scoring requests each worker wrote to its own file."""
    out = {}
    for path in folder.glob("counter_*.db"):
        pid = int(path.stem.split("_")[1])
        values = MmapedDict.read_all_values_from_file(str(path))
        out[pid] = sum(v for key, v, *_ in values if json.loads(key)[1] == P + "requests_total")
    return out


def _raw(url: str, request: str) -> bytes:
    host, port = url.rsplit("/", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request.encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_counters_are_exactly_what_was_sent_across_two_workers(server):
    url, X = server["url"], server["X"]
    one = [_split(X.iloc[[i]]) for i in range(30)]
    three = [_split(X.iloc[i : i + 3]) for i in range(0, 18, 3)]
    csv = [X.iloc[i : i + 2].to_csv(index=False) for i in range(0, 16, 2)]
    bad = ['{"dataframe_split": ', "[1, 2"] * 2
    sent_bytes = 0
    for body in one + three + bad:  # a new connection each: both workers get some
        r = requests.post(f"{url}/invocations", data=body,
                          headers={"content-type": "application/json"}, timeout=10)
        assert r.status_code == (400 if body in bad else 200), r.text
        sent_bytes += len(body)
    for body in csv:
        r = requests.post(f"{url}/invocations", data=body, headers={"content-type": "text/csv"},
                          timeout=10)
        assert r.status_code == 200, r.text
        sent_bytes += len(body)
    for _ in range(3):
        r = requests.post(f"{url}/invocations", data=one[0],
                          headers={"content-type": "text/plain"}, timeout=10)
        assert r.status_code == 415
        sent_bytes += len(one[0])
    for _ in range(2):  # refused on its declared length: never read, so no bytes counted
        r = requests.post(f"{url}/invocations", data=b"x" * (MAX_BODY + 1),
                          headers={"content-type": "application/json"}, timeout=10)
        assert r.status_code == 413
    for path in ("/ping", "/health", "/version", "/model", "/metrics") * 2:
        assert requests.get(f"{url}{path}", timeout=10).status_code == 200
    for _ in range(2):  # refused before the app: counted as rejected, not as a request
        assert _raw(url, "POST /invocations HTTP/1.1\r\nHost: x\r\n"
                         + "".join(f"X-H{i}: v\r\n" for i in range(150)) + "\r\n"
                    ).startswith(b"HTTP/1.1 431")

    deadline = time.monotonic() + metrics.FLUSH_SECONDS + 10
    while time.monotonic() < deadline:  # each worker adds its counts within FLUSH_SECONDS
        got = _samples(url)
        if got.get((P + "request_seconds_count", ())) == 36 + 8 + 4 + 3 + 2:
            break
        time.sleep(0.2)
    for _ in range(4):  # whichever worker answers the scrape, the same totals
        got = _samples(url)
        assert _requests(got, "2xx", "json") == 36
        assert _requests(got, "2xx", "csv") == 8
        assert _requests(got, "4xx", "json") == 4 + 2
        assert _requests(got, "4xx", "other") == 3
        assert _requests(got, "5xx", "json") == 0
        assert got[(P + "rejected_requests_total", (("reason", "400"),))] == 4
        assert got[(P + "rejected_requests_total", (("reason", "415"),))] == 3
        assert got[(P + "rejected_requests_total", (("reason", "413"),))] == 2
        assert got[(P + "rejected_requests_total", (("reason", "431"),))] == 2
        assert got[(P + "request_seconds_count", ())] == 36 + 8 + 4 + 3 + 2
        assert got[(P + "scoring_seconds_count", ())] == 36 + 8
        assert got[(P + "rows_scored_total", ())] == 30 + 18 + 16
        assert got[(P + "request_bytes_total", ())] == sent_bytes
        assert got[(P + "requests_in_flight", ())] == 0
        assert got[(P + "scored_requests_total", (("path", "fast"),))] == 36 + 8
        key = (("alias", "champion"), ("model_name", "tumours"), ("model_version", server["v1"]))
        assert got[(P + "model_info", key)] == 1
    by_pid = _requests_by_pid(_folder(server["tmp"]))
    # both workers keep a file; which of them took the requests is the kernel's choice (a worker
    # still loading its model when the mix is sent takes none), the totals are what count
    assert len(by_pid) == 2, by_pid
    assert sum(by_pid.values()) == 36 + 8 + 4 + 3 + 2


def test_an_alias_move_changes_the_version_gauge_on_every_worker(server):
    url, v1, v2 = server["url"], server["v1"], server["v2"]
    server["client"].set_registered_model_alias("tumours", "champion", v2)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        got = _samples(url)
        if got.get((P + "model_swaps_total", ())) == 2:  # each worker swapped once
            break
        time.sleep(0.2)
    key = (("alias", "champion"), ("model_name", "tumours"))
    assert got[(P + "model_swaps_total", ())] == 2
    assert got[(P + "model_info", (*key, ("model_version", v2)))] == 1
    assert got[(P + "model_info", (*key, ("model_version", v1)))] == 0


def test_a_dead_workers_counts_stay_and_its_gauges_go(server):
    url, folder = server["url"], _folder(server["tmp"])
    before = _samples(url)
    victim = next(iter(_requests_by_pid(folder)))
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # restarted: a new worker wrote its files
        pids = set(_requests_by_pid(folder)) - {victim}
        if len(pids) == 2 and not list(folder.glob(f"gauge_live*_{victim}.db")):
            break
        time.sleep(0.2)
    assert not list(folder.glob(f"gauge_live*_{victim}.db")), "the dead worker still counts"
    after = _samples(url)
    for name in ("requests_total", "rejected_requests_total", "rows_scored_total"):
        assert {k: v for k, v in after.items() if k[0] == P + name} == {
            k: v for k, v in before.items() if k[0] == P + name}
    assert after[(P + "requests_in_flight", ())] == 0


def test_the_metrics_folder_is_removed_when_the_server_stops(server, request):
    folder = _folder(server["tmp"])
    assert folder.is_dir()
    server["proc"].send_signal(signal.SIGTERM)
    server["proc"].wait(30)
    assert not folder.exists()
