"""The ASGI app driven directly: timeouts (504, 408), body limit (413), full pool (503),
headers, routes."""

from __future__ import annotations

import asyncio
import time

import orjson

from serving.online.app import ModelHolder, ScoringApp, Served
from serving.online.model import ModelVersionInfo, Scorer


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
    status, _, info = _call(app, path="/model", method="GET")
    assert status == 200 and info["model_version"] == "3" and info["alias"] == "champion"


def test_version_answers_what_stock_answers():
    import mlflow

    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/version", "headers": [],
             "client": ("127.0.0.1", 1)}
    asyncio.run(_app()(scope, receive, send))
    # stock: the bare version string, with a JSON content type
    assert sent[0]["status"] == 200
    assert dict(sent[0]["headers"])[b"content-type"] == b"application/json"
    assert sent[1]["body"] == mlflow.__version__.encode()


def _raw(app, scope_headers, receive):
    sent = []

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/invocations",
             "headers": scope_headers, "client": ("127.0.0.1", 1)}
    return sent, app(scope, receive, send)


def test_a_body_that_does_not_arrive_in_time_is_a_408_and_closes():
    app = _app(body_timeout=0.2)
    calls = []

    async def receive():
        calls.append(1)
        if len(calls) == 1:
            return {"type": "http.request", "body": b'{"inp', "more_body": True}
        await asyncio.sleep(10)  # the rest never comes

    sent, coro = _raw(app, [(b"content-type", b"application/json")], receive)
    start = time.perf_counter()
    asyncio.run(coro)
    assert time.perf_counter() - start < 2
    head = dict(sent[0]["headers"])
    assert sent[0]["status"] == 408 and head[b"connection"] == b"close"
    assert orjson.loads(sent[1]["body"])["error_code"] == "REQUEST_TIMEOUT"


def test_an_oversized_body_is_read_to_its_end_before_the_413():
    app = _app(max_body_bytes=10)
    chunks = [b"x" * 8] * 50
    received = []

    async def receive():
        received.append(1)
        return {"type": "http.request", "body": chunks[len(received) - 1],
                "more_body": len(received) < len(chunks)}

    hdrs = [(b"content-type", b"application/json"), (b"content-length", b"400")]
    sent, coro = _raw(app, hdrs, receive)
    asyncio.run(coro)
    assert sent[0]["status"] == 413 and len(received) == 50  # drained, then answered


def test_full_pool_is_a_503_with_retry_after():
    app = _app(seconds=0.5, threads=1, queue=1)

    async def main():
        async def one():
            sent = []

            async def receive():
                return {"type": "http.request", "body": b"{}", "more_body": False}

            async def send(message):
                sent.append(message)

            scope = {"type": "http", "method": "POST", "path": "/invocations",
                     "headers": [(b"content-type", b"application/json")],
                     "client": ("127.0.0.1", 1)}
            await app(scope, receive, send)
            return sent[0]

        return await asyncio.gather(*(one() for _ in range(4)))

    starts = asyncio.run(main())
    statuses = sorted(s["status"] for s in starts)
    assert statuses == [200, 200, 503, 503]
    busy = next(s for s in starts if s["status"] == 503)
    assert dict(busy["headers"])[b"retry-after"] == b"1"


def test_ping_answers_while_a_slow_model_scores():
    app = _app(seconds=2.0)

    async def main():
        async def call(path, method):
            sent = []

            async def receive():
                return {"type": "http.request", "body": b"{}", "more_body": False}

            async def send(message):
                sent.append(message)

            scope = {"type": "http", "method": method, "path": path,
                     "headers": [(b"content-type", b"application/json")],
                     "client": ("127.0.0.1", 1)}
            await app(scope, receive, send)
            return sent[0]["status"]

        scoring = asyncio.ensure_future(call("/invocations", "POST"))
        await asyncio.sleep(0.05)
        start = time.perf_counter()
        assert await call("/ping", "GET") == 200
        ping_ms = (time.perf_counter() - start) * 1000
        assert await scoring == 200
        return ping_ms

    assert asyncio.run(main()) < 50


def test_a_timed_out_request_does_not_keep_a_pool_thread():
    app = _app(seconds=1.0, timeout=0.1, threads=1, queue=0)
    assert _call(app)[0] == 504
    # the only thread is still sleeping in the first request: a replacement answers this one
    app.holder.current.scorer.seconds = 0.0
    assert _call(app)[0] == 200
