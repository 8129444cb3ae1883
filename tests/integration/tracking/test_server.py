"""The team server on SQLite and on PostgreSQL: logging, concurrency, indexes, security.

One launcher-started server per backend is shared by the module's tests; each test makes its
own runs.
"""

from __future__ import annotations

import http.client
import threading
import time
import urllib.parse
import uuid

import mlflow
import pytest
import requests
import sqlalchemy
from mlflow.entities import Metric, Param

from tests.integration.tracking.conftest import assert_workflow_logged, run_workflow
from tracking.indexes import EXTRA_INDEXES

pytestmark = pytest.mark.integration

WRITERS = {"sqlite": 16, "postgres": 64}
POINTS = 50  # metric points per writer


def _experiment(client) -> str:
    return client.create_experiment(f"exp-{uuid.uuid4().hex[:8]}")


def test_batched_logging_round_trip(module_server):
    client = mlflow.MlflowClient(tracking_uri=module_server["url"])
    run = client.create_run(_experiment(client), run_name="round-trip")
    run_id = run.info.run_id
    now = int(time.time() * 1000)
    points = [Metric(key, value, now, step) for step in range(300)
              for key, value in (("loss", 1.0 / (step + 1)), ("val_auc", step / 300))]
    # one request (MLflow's log_batch takes up to 1,000 points)
    client.log_batch(run_id, metrics=points, params=[Param("C", "1.0"),
                                                     Param("estimator", "linear")])
    client.log_text(run_id, "hello", "notes/readme.txt")
    client.set_terminated(run_id)

    got = client.get_run(run_id)
    assert got.data.params == {"C": "1.0", "estimator": "linear"}
    assert got.info.status == "FINISHED"
    assert len(client.get_metric_history(run_id, "loss")) == 300
    assert got.data.metrics["val_auc"] == pytest.approx(299 / 300)
    assert [f.path for f in client.list_artifacts(run_id, "notes")] == ["notes/readme.txt"]
    # Proxied: the bytes sit in the server's artifact destination, not on the client.
    stored = list(module_server["artifacts"].rglob("readme.txt"))
    assert len(stored) == 1 and stored[0].read_text() == "hello"


def test_concurrent_writers_lose_nothing(module_server):
    """16 writers on SQLite, 64 on PostgreSQL: every metric point, param and artifact lands."""
    url = module_server["url"]
    writers = WRITERS[module_server["kind"]]
    experiment_id = _experiment(mlflow.MlflowClient(tracking_uri=url))
    errors: list[BaseException] = []
    run_ids: list[str] = []
    lock = threading.Lock()

    def write(i: int):
        try:
            client = mlflow.MlflowClient(tracking_uri=url)
            run_id = client.create_run(experiment_id, run_name=f"writer-{i}").info.run_id
            with lock:
                run_ids.append(run_id)
            now = int(time.time() * 1000)
            client.log_batch(run_id, params=[Param("writer", str(i)), Param("points", str(POINTS))],
                             metrics=[Metric("loss", 1.0 / (step + 1), now, step)
                                      for step in range(POINTS)])
            client.log_text(run_id, f"writer {i}", "out/result.txt")
            client.set_terminated(run_id)
        except BaseException as exc:  # surfaced below with the count
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:3]

    client = mlflow.MlflowClient(tracking_uri=url)
    runs = client.search_runs([experiment_id], max_results=1000)
    assert len(runs) == writers
    assert sorted(r.info.run_id for r in runs) == sorted(run_ids)
    assert {r.data.params["writer"] for r in runs} == {str(i) for i in range(writers)}
    points = sum(len(client.get_metric_history(r.info.run_id, "loss")) for r in runs)
    assert points == writers * POINTS
    files = list(module_server["artifacts"].rglob("result.txt"))
    texts = sorted(f.read_text() for f in files if f.parts[-4] in {r.info.run_id for r in runs})
    assert texts == sorted(f"writer {i}" for i in range(writers))
    assert all(r.info.status == "FINISHED" for r in runs)


def test_extra_index_exists_after_start(module_server):
    engine = sqlalchemy.create_engine(module_server["backend"])
    try:
        names = {ix["name"] for ix in sqlalchemy.inspect(engine).get_indexes("latest_metrics")}
    finally:
        engine.dispose()
    assert set(EXTRA_INDEXES) <= names


def test_runs_sorted_by_metric(module_server):
    client = mlflow.MlflowClient(tracking_uri=module_server["url"])
    experiment_id = _experiment(client)
    for value in (0.3, 0.9, 0.1):
        run_id = client.create_run(experiment_id).info.run_id
        client.log_metric(run_id, "roc_auc", value)
        client.set_terminated(run_id)
    found = client.search_runs([experiment_id], order_by=["metrics.roc_auc DESC"], max_results=2)
    assert [r.data.metrics["roc_auc"] for r in found] == [0.9, 0.3]


@pytest.mark.slow
def test_workflow_main_runs_end_to_end(module_server, tmp_path):
    offset = module_server["log"].stat().st_size  # the server is shared: only this run's requests
    done = run_workflow(module_server["url"], tmp_path)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert_workflow_logged(module_server["url"], module_server["log"], offset)
    # The model went through the server's artifact proxy into its destination.
    assert list(module_server["artifacts"].rglob("MLmodel"))


# -- security ---------------------------------------------------------------------------------


def test_foreign_host_header_is_refused(module_server):
    url = f"{module_server['url']}/api/2.0/mlflow/experiments/search"
    ok = requests.post(url, json={"max_results": 1}, timeout=10)
    foreign = requests.post(
        url, json={"max_results": 1}, headers={"Host": "evil.example.com"}, timeout=10
    )
    assert ok.status_code == 200
    assert foreign.status_code in (400, 403)


def test_cross_origin_post_is_refused(module_server):
    name = f"cors-{uuid.uuid4().hex[:8]}"
    resp = requests.post(
        f"{module_server['url']}/api/2.0/mlflow/experiments/create",
        json={"name": name},
        headers={"Origin": "https://evil.example.com"},
        timeout=10,
    )
    assert resp.status_code == 403
    client = mlflow.MlflowClient(tracking_uri=module_server["url"])
    assert client.get_experiment_by_name(name) is None


def _raw(url: str, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    """Send ``path`` byte for byte (requests/urllib3 would resolve the dot segments first)."""
    parsed = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=10)
    try:
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.mark.parametrize(
    "path",
    ["../../etc/passwd", "a/../../../etc/passwd", "%2E%2E/%2E%2E/etc/passwd", "/etc/passwd",
     "%2Fetc%2Fpasswd"],
)  # fmt: skip
def test_artifact_paths_escaping_the_store_are_refused(module_server, path):
    base = "/api/2.0/mlflow-artifacts/artifacts"
    put_status, _ = _raw(module_server["url"], "PUT", f"{base}/{path}", b"owned")
    get_status, body = _raw(module_server["url"], "GET", f"{base}/{path}")
    assert put_status == 400
    assert get_status == 400
    assert b"root:" not in body


def test_run_artifact_path_with_dotdot_is_refused(module_server):
    client = mlflow.MlflowClient(tracking_uri=module_server["url"])
    run_id = client.create_run(_experiment(client)).info.run_id
    client.set_terminated(run_id)
    resp = requests.get(
        f"{module_server['url']}/get-artifact",
        params={"run_id": run_id, "path": "../../../../etc/passwd"},
        timeout=10,
    )
    assert resp.status_code == 400
    assert b"root:" not in resp.content
