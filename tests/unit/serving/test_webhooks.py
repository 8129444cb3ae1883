"""Webhook deliveries: our verification against MLflow's own signer, parsing, the receiver."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid

import pytest
from mlflow.webhooks.delivery import _generate_hmac_signature

from serving import webhooks
from serving.webhooks import WebhookError, handle, parse_alias_event, sign, verify

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


def test_our_signature_is_mlflows():
    assert sign(SECRET, "d1", "1700000000", '{"a": 1}') == _generate_hmac_signature(
        SECRET, "d1", "1700000000", '{"a": 1}')


def test_a_signed_alias_event_is_accepted_and_parsed():
    headers, body = delivery(ALIAS_SET)
    event = handle(SECRET, headers, body)
    assert (event.name, event.alias, event.version, event.action) == (
        "churn", "champion", "4", "created")
    assert event.delivery_id == headers["X-MLflow-Delivery-Id"]
    deleted = dict(ALIAS_SET, action="deleted", data={"name": "churn", "alias": "champion"})
    assert handle(SECRET, *delivery(deleted)).version is None


@pytest.mark.parametrize(("case", "message"), [
    ("other secret", "bad signature"),
    ("tampered", "bad signature"),
    ("old", r"signed 36\d\d s ago \(more than 300 s\)"),  # a slow machine may tick a second
    ("unsigned", "unsigned delivery"),
])
def test_bad_deliveries_are_refused_401(case, message):
    headers, body = delivery(ALIAS_SET, secret="another" if case == "other secret" else SECRET,
                             at=int(time.time()) - 3600 if case == "old" else None)
    if case == "tampered":
        body = body.replace(b'"4"', b'"5"')
    if case == "unsigned":
        headers.pop("X-MLflow-Signature")
    with pytest.raises(WebhookError, match=message) as caught:
        verify(SECRET, headers, body)
    assert caught.value.status == 401


def test_other_events_and_bad_bodies():
    created = {"entity": "model_version", "action": "created", "data": {"name": "x"}}
    assert parse_alias_event(json.dumps(created).encode()) is None
    with pytest.raises(WebhookError, match="not an MLflow webhook payload"):
        parse_alias_event(b"not json")


def test_receiver_answers_204_401_404_and_reports_events():
    seen = []
    receiver = webhooks.Receiver("127.0.0.1", 0, seen.append, SECRET).start()
    url = f"http://127.0.0.1:{receiver.port}"
    try:
        def post(path, headers, body):
            request = urllib.request.Request(url + path, data=body, headers=headers,
                                             method="POST")
            try:
                with urllib.request.urlopen(request, timeout=10) as resp:
                    return resp.status
            except urllib.error.HTTPError as exc:
                return exc.code

        headers, body = delivery(ALIAS_SET)
        assert post(webhooks.DEFAULT_PATH, headers, body) == 204
        assert post(webhooks.DEFAULT_PATH, *delivery(ALIAS_SET, secret="wrong")) == 401
        assert post("/elsewhere", headers, body) == 404
        assert [(e.name, e.version) for e in seen] == [("churn", "4")]
    finally:
        receiver.stop()
