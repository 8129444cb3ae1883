"""The ASGI app driven directly: timeout (504), body limit (413), headers, routes."""

from __future__ import annotations

import asyncio
import time

import orjson

from serving.app import ModelHolder, ScoringApp, Served
from serving.model import ModelVersionInfo, Scorer


class SlowScorer(Scorer):
    kind = "pyfunc"

    def __init__(self, seconds: float):
        self.seconds = seconds

    def score(self, body, content_type):
        time.sleep(self.seconds)
        return b'{"predictions": [1]}'


def _call(app, path="/invocations", method="POST", body=b"{}", headers=None, chunks=None):
    sent = []
    messages = (
        [
            {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
            for i, c in enumerate(chunks)
        ]
        if chunks
        else [{"type": "http.request", "body": body, "more_body": False}]
    )

    async def receive():
        return messages.pop(0)

    async def send(message):
        sent.append(message)

    hdrs = [
        (k.encode(), v.encode())
        for k, v in (headers or {"content-type": "application/json"}).items()
    ]
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": hdrs,
        "client": ("127.0.0.1", 1),
    }
    asyncio.run(app(scope, receive, send))
    start, body_msg = sent
    return start["status"], dict(start["headers"]), orjson.loads(body_msg["body"])


def _app(seconds=0.0, **kwargs):
    info = ModelVersionInfo(uri="models:/m/3", name="m", version="3", alias="champion")
    return ScoringApp(ModelHolder(Served(info, SlowScorer(seconds))), **kwargs)


def test_scoring_and_version_headers():
    status, headers, body = _call(_app())
    assert status == 200 and body == {"predictions": [1]}
    assert headers[b"x-model-version"] == b"3" and headers[b"x-model-name"] == b"m"


def test_slow_scoring_is_a_504():
    status, _, body = _call(_app(seconds=0.5, timeout=0.1))
    assert status == 504
    assert body["error_code"] == "DEADLINE_EXCEEDED"


def test_body_limit_by_header_and_by_stream():
    app = _app(max_body_bytes=10)
    status, headers, body = _call(
        app, headers={"content-type": "application/json", "content-length": "11"}, body=b"x" * 11
    )
    assert status == 413 and headers[b"connection"] == b"close"
    status, _, _ = _call(app, chunks=[b"x" * 6, b"x" * 6])  # chunked, no length
    assert status == 413


def test_routes():
    app = _app()
    assert _call(app, path="/nope", method="GET")[0] == 404
    assert _call(app, path="/invocations", method="GET")[0] == 405
    status, _, info = _call(app, path="/version", method="GET")
    assert status == 200 and info["model_version"] == "3" and info["alias"] == "champion"
