"""The follow service's metrics: the alias it sees, rollouts by outcome, webhook deliveries,
answered over HTTP as Prometheus scrapes them."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid

import pytest
from mlflow.webhooks.delivery import _generate_hmac_signature
from prometheus_client.parser import text_string_to_metric_families

from serving.online import webhooks
from serving.sagemaker import metrics
from tests.support.processes import free_port

SECRET = "metrics-test-secret"
P = metrics.FOLLOW_PREFIX


@pytest.fixture(scope="module")
def served():
    """The follow metrics on a real port (the process's registry: created once)."""
    port = free_port()
    m = metrics.serve_follow_metrics(port, host="127.0.0.1")
    try:
        yield f"http://127.0.0.1:{port}/metrics"
    finally:
        metrics._follow = None
        del m


def _scrape(url: str) -> dict[tuple, float]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def _delivery(secret: str) -> tuple[dict, bytes]:
    """A delivery exactly as MLflow's tracking server signs it."""
    body = json.dumps({"entity": "model_version_alias", "action": "created",
                       "timestamp": "2026-12-02T03:00:00+00:00",
                       "data": {"name": "churn", "alias": "champion", "version": "4"}})
    delivery_id, stamp = str(uuid.uuid4()), str(int(time.time()))
    return {"Content-Type": "application/json", "X-MLflow-Delivery-Id": delivery_id,
            "X-MLflow-Timestamp": stamp,
            "X-MLflow-Signature": _generate_hmac_signature(secret, delivery_id, stamp,
                                                           body)}, body.encode()


def test_alias_moves_and_rollouts_are_counted(served):
    metrics.follow_alias_seen("churn", "champion", "3")
    assert _scrape(served)[(P + "alias_moved_timestamp_seconds", ())] == 0  # first sight
    before = time.time()
    metrics.follow_alias_seen("churn", "champion", "4")
    for outcome in ("started", "succeeded", "started", "reverted"):
        metrics.follow_rollout(outcome)
    got = _scrape(served)
    assert got[(P + "alias_version", (("alias", "champion"), ("model_name", "churn")))] == 4
    assert got[(P + "alias_moved_timestamp_seconds", ())] >= int(before)
    assert got[(P + "rollouts_total", (("outcome", "started"),))] == 2
    assert got[(P + "rollouts_total", (("outcome", "succeeded"),))] == 1
    assert got[(P + "rollouts_total", (("outcome", "reverted"),))] == 1
    assert got[(P + "rollouts_total", (("outcome", "rolled_back"),))] == 0


def test_webhook_deliveries_accepted_and_refused(served):
    receiver = webhooks.Receiver("127.0.0.1", 0, lambda event: None, SECRET,
                                on_delivery=metrics.follow_webhook).start()
    url = f"http://127.0.0.1:{receiver.port}{webhooks.DEFAULT_PATH}"

    def post(headers, body) -> int:
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code

    try:
        assert post(*_delivery(SECRET)) == 204
        assert post(*_delivery(SECRET)) == 204
        assert post(*_delivery("not-the-secret")) == 401
        assert post({"Content-Type": "application/json"}, b"{}") == 401
    finally:
        receiver.stop()
    got = _scrape(served)
    assert got[(P + "webhook_deliveries_total", (("result", "accepted"),))] == 2
    assert got[(P + "webhook_deliveries_total", (("result", "refused"),))] == 2


def test_a_taken_port_is_an_os_error(served):
    port = int(served.rsplit(":", 1)[1].split("/")[0])
    with pytest.raises(OSError):
        metrics.serve_follow_metrics(port, host="127.0.0.1")
