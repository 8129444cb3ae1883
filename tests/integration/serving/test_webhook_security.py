"""A real scoring server's ``POST /webhooks/mlflow``: signed, fresh, once, or refused.

Real processes (``python -m serving serve``), a real registry. Deliveries are signed with
MLflow's own signer, as its tracking server sends them (a real tracking server delivering to a
real server is tested in test_shadow_and_webhook.py). What a user sees is checked: the answer
(204 or 401), the version that answers requests, and the server's log of model loads.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from mlflow.webhooks.delivery import _generate_hmac_signature

from tests.support.processes import free_port, running
from tests.support.serving_models import cancer_data, fit_pipeline, log_sklearn_version

pytestmark = pytest.mark.integration

SECRET = "webhook-secret-for-the-test"
NAME = "guarded"


@pytest.fixture(scope="module")
def versions(module_store):
    """Three versions of one model; ``champion`` on the first."""
    X, y = cancer_data()
    client = module_store.client
    found = [log_sklearn_version(client, NAME, fit_pipeline(X, y, C=c), X)
             for c in (1.0, 0.1, 0.01)]
    client.set_registered_model_alias(NAME, "champion", found[0])
    body = json.dumps({"dataframe_split": json.loads(X.head(1).to_json(orient="split",
                                                                        index=False))})
    return client, found, body


def serve(store, *args: str, secret: str = "", workers: int = 1):
    """``serve guarded@champion`` polling every 10 minutes: only deliveries make it look."""
    port = free_port()
    cmd = [sys.executable, "-m", "serving", "serve", f"{NAME}@champion", "--port", str(port),
           "--workers", str(workers), "--poll-seconds", "600", *args]
    env = {"MLFLOW_TRACKING_URI": store.uri, "MLOPS_WEBHOOK_SECRET": secret}
    return port, running(cmd, f"http://127.0.0.1:{port}/ping", "serving-webhooks", env=env,
                         cwd=store.path)


def delivery(version: str, secret: str | None = SECRET, at: int | None = None,
             delivery_id: str | None = None) -> tuple[dict, str]:
    """Headers and body of a ``model_version_alias.created`` delivery (unsigned: no secret)."""
    payload = json.dumps({"entity": "model_version_alias", "action": "created",
                          "timestamp": "2026-12-02T03:00:00+00:00",
                          "data": {"name": NAME, "alias": "champion", "version": version}})
    delivery_id, stamp = delivery_id or str(uuid.uuid4()), str(at or int(time.time()))
    headers = {"Content-Type": "application/json", "X-MLflow-Delivery-Id": delivery_id,
               "X-MLflow-Timestamp": stamp, "Connection": "close"}
    if secret:
        headers["X-MLflow-Signature"] = _generate_hmac_signature(secret, delivery_id, stamp,
                                                                 payload)
    return headers, payload


def post(port: int, headers: dict, payload: str) -> int:
    return requests.post(f"http://127.0.0.1:{port}/webhooks/mlflow", data=payload,
                         headers=headers, timeout=10).status_code


def answering(port: int, body: str, n: int = 20) -> set[str]:
    """The versions that answer ``n`` requests on fresh connections (every worker's)."""
    return {requests.post(f"http://127.0.0.1:{port}/invocations", data=body, timeout=10,
                          headers={"Content-Type": "application/json", "Connection": "close"}
                          ).headers["X-Model-Version"] for _ in range(n)}


def wait_answering(port: int, body: str, version: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while answering(port, body) != {version}:
        assert time.monotonic() < deadline, f"version {version} never answered alone"
        time.sleep(0.1)


def log_records(proc) -> list[dict]:
    records = []
    for line in proc.log_path.read_text(errors="replace").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def loads(proc) -> list[str]:
    """The versions the server started loading, in order (one line per worker and load)."""
    return [r["to_version"] for r in log_records(proc) if r.get("msg") == "alias moved; loading"]


def test_unsigned_stale_and_replayed_deliveries_get_401_and_load_nothing(module_store, versions):
    client, (v1, v2, _), body = versions
    port, server = serve(module_store, secret=SECRET, workers=2)
    with server as proc:
        client.set_registered_model_alias(NAME, "champion", v2)  # no delivery yet
        refused = [
            post(port, *delivery(v2, secret=None)),  # unsigned
            post(port, *delivery(v2, secret="not the secret")),  # another secret
            post(port, *delivery(v2, at=int(time.time()) - 600)),  # signed 10 minutes ago
        ]
        time.sleep(1.0)  # a woken worker would look within 50 ms
        before = (answering(port, body), loads(proc))
        headers, payload = delivery(v2)
        assert post(port, headers, payload) == 204
        wait_answering(port, body, v2)  # both workers: the one reached and the other
        # the alias moves back without a delivery; the old delivery, sent again to both
        # workers (fresh connections), must not make them look
        client.set_registered_model_alias(NAME, "champion", v1)
        replays = {post(port, headers, payload) for _ in range(10)}
        time.sleep(1.0)
        after = (answering(port, body), loads(proc))
        refusals = [r["msg"] for r in log_records(proc)
                    if str(r.get("msg", "")).startswith("webhook refused")]
        client.set_registered_model_alias(NAME, "champion", v1)
    assert refused == [401, 401, 401]
    assert before == ({v1}, [])
    assert replays == {401}
    assert after == ({v2}, [v2, v2])  # one load per worker, none after the replay
    assert sum("replayed delivery" in m for m in refusals) == 10, refusals


def test_insecure_takes_unsigned_deliveries_and_a_burst_leaves_one_load(module_store, versions):
    client, (v1, v2, v3), body = versions
    port, server = serve(module_store, "--webhook-insecure")
    with server as proc:
        start = log_records(proc)
        client.set_registered_model_alias(NAME, "champion", v2)
        # 200 deliveries at once, each naming some version: the registry names v2
        announced = [(v2, v3, "999", v1)[i % 4] for i in range(200)]
        with ThreadPoolExecutor(max_workers=32) as pool:
            answers = list(pool.map(lambda v: post(port, *delivery(v, secret=None)), announced))
        wait_answering(port, body, v2)
        time.sleep(1.0)  # any queued load would have started by now
        loaded = loads(proc)
        client.set_registered_model_alias(NAME, "champion", v1)
    warnings = [r for r in start if r.get("level") == "WARNING"
                and "--webhook-insecure" in r.get("msg", "")]
    assert len(warnings) == 1, start  # said once at start, for the server
    assert "accepted without a signature" in warnings[0]["msg"]
    assert answers == [204] * 200
    assert loaded == [v2], loaded  # one load, of the version the registry names


def test_without_a_secret_the_route_refuses_every_delivery(module_store, versions):
    client, (v1, v2, _), body = versions
    port, server = serve(module_store)
    with server as proc:
        notes = [r["msg"] for r in log_records(proc)
                 if "/webhooks/mlflow" in str(r.get("msg", ""))]
        client.set_registered_model_alias(NAME, "champion", v2)
        answers = [post(port, *delivery(v2)), post(port, *delivery(v2, secret=None))]
        time.sleep(1.0)
        served, loaded = answering(port, body), loads(proc)
        client.set_registered_model_alias(NAME, "champion", v1)
    assert notes == ["POST /webhooks/mlflow refuses every delivery (401): $MLOPS_WEBHOOK_SECRET "
                     "is not set (--webhook-insecure accepts unsigned ones); the registry is "
                     "polled"]
    assert answers == [401, 401]
    assert (served, loaded) == ({v1}, [])
