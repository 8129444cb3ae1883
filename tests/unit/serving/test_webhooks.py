"""Webhook deliveries: verification of MLflow's own signatures, replays, parsing, the receiver."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
import uuid

import pytest
from mlflow.webhooks.delivery import _generate_hmac_signature

from core.errors import UsageError
from serving.online import webhooks
from serving.online.webhooks import SeenDeliveries, Verifier, WebhookError, parse_alias_event

SECRET = "s3cr3t-shared-with-the-tracking-server"


def delivery(payload: dict, secret: str = SECRET, at: int | None = None):
    """A delivery exactly as MLflow 3.17's tracking server sends it (its signer)."""
    body = json.dumps(payload)
    delivery_id, stamp = str(uuid.uuid4()), str(at or int(time.time()))
    headers = {"Content-Type": "application/json", "X-MLflow-Delivery-Id": delivery_id,
               "X-MLflow-Timestamp": stamp,
               "X-MLflow-Signature": _generate_hmac_signature(secret, delivery_id, stamp, body)}
    return headers, body.encode()


ALIAS_SET = {"entity": "model_version_alias", "action": "created",
             "timestamp": "2026-12-02T03:00:00+00:00",
             "data": {"name": "churn", "alias": "champion", "version": "4"}}


def test_a_signed_alias_event_is_accepted_and_parsed():
    headers, body = delivery(ALIAS_SET)
    event = Verifier(SECRET).check(headers, body)
    assert (event.name, event.alias, event.version, event.action) == (
        "churn", "champion", "4", "created")
    assert event.delivery_id == headers["X-MLflow-Delivery-Id"]
    deleted = dict(ALIAS_SET, action="deleted", data={"name": "churn", "alias": "champion"})
    assert Verifier(SECRET).check(*delivery(deleted)).version is None


@pytest.mark.parametrize(("case", "message"), [
    ("other secret", "bad signature"),
    ("tampered", "bad signature"),
    ("old", r"signed 36\d\d s ago \(more than 300 s\)"),  # a slow machine may tick a second
    ("ahead", r"dated 3\d\d s ahead \(more than 300 s\)"),
    ("unsigned", "unsigned delivery"),
    ("no id", "X-MLflow-Delivery-Id and X-MLflow-Timestamp are required"),
])
def test_bad_deliveries_are_refused_401(case, message):
    at = {"old": int(time.time()) - 3600, "ahead": int(time.time()) + 360}.get(case)
    headers, body = delivery(ALIAS_SET, secret="another" if case == "other secret" else SECRET,
                             at=at)
    if case == "tampered":
        body = body.replace(b'"4"', b'"5"')
    if case == "unsigned":
        headers.pop("X-MLflow-Signature")
    if case == "no id":
        headers.pop("X-MLflow-Delivery-Id")
    with pytest.raises(WebhookError, match=message) as caught:
        Verifier(SECRET).check(headers, body)
    assert caught.value.status == 401


def test_a_replayed_delivery_is_refused_and_ids_expire_with_the_window():
    verifier = Verifier(SECRET)
    headers, body = delivery(ALIAS_SET)
    assert verifier.check(headers, body).version == "4"
    with pytest.raises(WebhookError, match="replayed delivery") as caught:
        verifier.check(headers, body)
    assert caught.value.status == 401
    # a forged delivery reusing a real id is refused for its signature, not remembered
    forged = dict(headers, **{"X-MLflow-Signature": "v1,AAAA"})
    with pytest.raises(WebhookError, match="bad signature"):
        verifier.check(forged, body)

    seen = SeenDeliveries(window=300, limit=3)
    now = 1_800_000_000
    assert seen.add("a", now, now) and not seen.add("a", now, now)
    assert seen.add("b", now - 100, now)
    # 301 s on, "a" is forgotten (its delivery would be refused as too old anyway)
    assert seen.add("a", now, now + 301)
    for i in range(5):  # past the limit the oldest go first
        assert seen.add(f"x{i}", now + i, now)
    assert not seen.add("x4", now + 4, now) and seen.add("x0", now, now)


def test_workers_share_the_replay_check_through_one_file(tmp_path):
    path = tmp_path / "seen.sqlite"
    one, two = Verifier(SECRET, seen=SeenDeliveries(path)), Verifier(SECRET, seen=SeenDeliveries(path))
    headers, body = delivery(ALIAS_SET)
    assert one.check(headers, body) is not None
    with pytest.raises(WebhookError, match="replayed delivery"):
        two.check(headers, body)


def test_without_a_secret_every_delivery_is_refused_unless_insecure():
    headers, body = delivery(ALIAS_SET)
    with pytest.raises(WebhookError, match=r"webhooks are off: \$MLOPS_WEBHOOK_SECRET is not set"):
        Verifier(None).check(headers, body)
    insecure = Verifier(None, insecure=True)
    headers.pop("X-MLflow-Signature")
    assert insecure.check(headers, body).version == "4"  # unsigned, taken
    with pytest.raises(WebhookError, match="replayed delivery"):  # still once only
        insecure.check(headers, body)
    with pytest.raises(UsageError, match=r"--webhook-insecure accepts unsigned deliveries, but "
                                         r"\$MLOPS_WEBHOOK_SECRET is set"):
        Verifier(SECRET, insecure=True)
    assert "refuses every delivery (401)" in webhooks.startup_note(None, False)
    assert webhooks.startup_note(SECRET, False) is None


def test_other_events_and_bad_bodies():
    created = {"entity": "model_version", "action": "created", "data": {"name": "x"}}
    assert parse_alias_event(json.dumps(created).encode()) is None
    with pytest.raises(WebhookError, match="not an MLflow webhook payload"):
        parse_alias_event(b"not json")


def _post(url, headers, body) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_receiver_answers_204_401_404_and_reports_events():
    seen = []
    receiver = webhooks.Receiver("127.0.0.1", 0, seen.append, SECRET).start()
    url = f"http://127.0.0.1:{receiver.port}"
    try:
        headers, body = delivery(ALIAS_SET)
        assert _post(url + webhooks.DEFAULT_PATH, headers, body) == 204
        assert _post(url + webhooks.DEFAULT_PATH, headers, body) == 401  # replayed
        assert _post(url + webhooks.DEFAULT_PATH, *delivery(ALIAS_SET, secret="wrong")) == 401
        assert _post(url + "/elsewhere", headers, body) == 404
        assert [(e.name, e.version) for e in seen] == [("churn", "4")]
    finally:
        receiver.stop()


def test_a_slow_client_is_cut_off(monkeypatch):
    monkeypatch.setattr(webhooks, "READ_TIMEOUT_SECONDS", 0.5)
    receiver = webhooks.Receiver("127.0.0.1", 0, lambda event: None, SECRET).start()
    try:
        with socket.create_connection(("127.0.0.1", receiver.port), timeout=10) as sock:
            started = time.monotonic()
            sock.sendall(b"POST /webhooks/mlflow HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
                         b"\r\n{")  # and then nothing more
            answer = sock.recv(4096)
            assert time.monotonic() - started < 3
        assert answer.startswith(b"HTTP/1.0 408"), answer
        with socket.create_connection(("127.0.0.1", receiver.port), timeout=10) as sock:
            sock.sendall(b"POST /webhooks/mlflow HTTP/1.1\r\n")  # headers that never end
            assert sock.recv(4096).startswith(b"HTTP/1.0 408")  # within the deadline
    finally:
        receiver.stop()
