"""The scoring server: a plain ASGI app speaking the MLflow scoring protocol.

Routes, as ``mlflow models serve`` answers them: ``GET /ping`` and ``GET /health`` (200 once a
model is loaded), ``GET /version`` (the MLflow version, as stock answers it), ``POST
/invocations``. The Open Inference Protocol (KServe V2) under ``/v2`` (:mod:`serving.online.v2`).
Ours only: ``GET /model`` (which model version answers, its scorer, the MLflow version, as
JSON). Every response carries ``X-Model-Name`` and ``X-Model-Version``; every
request is one JSON access-log line.

Reading is bounded: a body must arrive within ``body_timeout`` seconds (else 408 and the
connection closes), and an oversized body is read to its end, up to a bound, and discarded, so
the client reads the 413 instead of a connection reset. Predictions run in a bounded pool
(:mod:`serving.online.pool`): a full pool answers 503 with ``Retry-After``; only a model measured
well under a millisecond per call is scored on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass

import orjson

from serving.online import metrics as _metrics
from serving.online import v2
from serving.online.logs import ACCESS_LOGGER
from serving.online.model import ModelVersionInfo, Scorer
from serving.online.pool import DEFAULT_QUEUE, DEFAULT_THREADS, PoolFull, PoolTimeout, ScoringPool
from serving.online.protocol import Handoff, RequestError

_logger = logging.getLogger(__name__)
_access = logging.getLogger(ACCESS_LOGGER)

DEFAULT_TIMEOUT_SECONDS = 60.0
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
DEFAULT_BODY_TIMEOUT_SECONDS = 30.0
# An oversized body is read and discarded up to this many bytes more, so the client, once done
# sending, reads the 413; beyond it the connection is closed (the client sees a reset).
MAX_DISCARD_BYTES = 256 * 1024 * 1024
# Seconds a client is told to wait (Retry-After) when the scoring pool is full.
RETRY_AFTER_SECONDS = 1
_CLOSE = ((b"connection", b"close"),)


@dataclass(frozen=True)
class Served:
    """A loaded model and what it is: swapped as one object so a request sees one version."""

    info: ModelVersionInfo
    scorer: Scorer

    def headers(self) -> list[tuple[bytes, bytes]]:
        """The response headers naming the model version."""
        return [
            (b"x-model-name", (self.info.name or "").encode()),
            (b"x-model-version", (self.info.version or self.info.run_id or "").encode()),
        ]


class ModelHolder:
    """The model being served now; :meth:`swap` replaces it atomically.

    Requests read :attr:`current` once and use that object to the end, so a swap never affects
    a request in flight, and the old model is freed when its last request finishes.
    """

    def __init__(self, served: Served):
        self.current = served
        self._lock = threading.Lock()
        if (m := _metrics.current()) is not None:
            m.serving(served.info.name, served.info.version, served.info.alias)

    def swap(self, served: Served) -> Served:
        """Serve ``served`` from the next request on; return the model it replaces."""
        with self._lock:
            old, self.current = self.current, served
            if (m := _metrics.current()) is not None:
                m.serving(served.info.name, served.info.version, served.info.alias, swapped=True)
        return old


class ScoringApp:
    """The ASGI application.

    Args:
        holder: the model to serve (may be swapped while serving).
        timeout: seconds a scoring request may take before a 504.
        max_body_bytes: larger request bodies get a 413.
        capture: a :class:`serving.online.capture.CaptureWriter` for answered requests, or None.
        shadow: a :mod:`serving.shadow.process` hook offered every answered request, or None.
        body_timeout: seconds a request body may take to arrive before a 408.
        threads: scoring threads; queue: requests that may wait for one (then 503).
    """

    def __init__(
        self,
        holder: ModelHolder,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        capture=None,
        body_timeout: float = DEFAULT_BODY_TIMEOUT_SECONDS,
        threads: int = DEFAULT_THREADS,
        queue: int = DEFAULT_QUEUE,
        shadow=None,
    ):
        import mlflow.version

        self.holder = holder
        self.timeout = timeout
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout
        self._mlflow_version = mlflow.version.VERSION
        self._pool = ScoringPool(threads, queue)
        self.capture = capture
        self.shadow = shadow
        self._metrics = _metrics.current()  # None: --no-metrics

    async def __call__(self, scope, receive, send):
        """Dispatch one ASGI event."""
        if scope["type"] == "lifespan":
            return await self._lifespan(receive, send)
        if scope["type"] != "http":
            return
        start = time.perf_counter()
        served = self.holder.current
        method, path = scope["method"], scope["path"]
        nbytes = 0
        body = b""
        counted = None  # the metrics of a scoring request (/invocations, V2 infer)
        infer = False  # a V2 inference request
        try:
            if path == "/invocations":
                if (counted := self._metrics) is not None:
                    clock = counted.started()
                if method != "POST":
                    raise RequestError(405, "use POST /invocations", "METHOD_NOT_ALLOWED")
                body = await self._read_body(scope, receive)
                nbytes = len(body)
                scoring = time.perf_counter()
                status, payload = (
                    200,
                    await self._score(served, body, _header(scope, b"content-type")),
                )
                if counted is not None:
                    counted.scored(time.perf_counter() - scoring)
            elif v2.is_v2(path):  # the Open Inference Protocol (serving.online.v2)
                if infer := (method == "POST" and path.rstrip("/").endswith("/infer")):
                    if (counted := self._metrics) is not None:
                        clock = counted.started()
                    body = await self._read_body(scope, receive)
                    nbytes = len(body)
                    scoring = time.perf_counter()
                    status, payload = 200, await self._v2_infer(scope, served, path, body)
                    if counted is not None:
                        counted.scored(time.perf_counter() - scoring)
                else:
                    status, payload = 200, self._v2_get(served, method, path)
            elif path in ("/ping", "/health"):
                status, payload = 200, b"\n"
            elif path == "/metrics" and self._metrics is not None:
                # needs no model, is not scoring traffic: answered apart, not logged
                return await self._send_metrics(send)
            elif path == "/version":
                # Stock answers the bare MLflow version (with a JSON content type); clients of
                # `mlflow models serve` read it as text.
                status, payload = 200, self._mlflow_version.encode()
            elif path == "/model":
                status, payload = (
                    200,
                    orjson.dumps(
                        {
                            **served.info.as_dict(),
                            "scorer": served.scorer.kind,
                            "scoring_path": served.scorer.path,
                            "mlflow_version": self._mlflow_version,
                        }
                    ),
                )
            else:
                raise RequestError(
                    404,
                    f"no route {path}; use /invocations, /ping, /health, /version, /model",
                    "ENDPOINT_NOT_FOUND",
                )
            extra = ()
        except RequestError as exc:
            status, payload = exc.status, (v2.error_body(exc) if v2.is_v2(path) else exc.to_json())
            extra = ()
            if exc.status in (408, 413):
                extra = _CLOSE  # the rest of the body may still be on the wire
            elif exc.status == 503:
                extra = ((b"retry-after", str(RETRY_AFTER_SECONDS).encode()),)
        except Exception as exc:  # the server keeps serving whatever a model raises
            _logger.exception("scoring failed")
            error = RequestError(500, f"internal error: {type(exc).__name__}", "INTERNAL_ERROR")
            status, payload = 500, (v2.error_body(error) if v2.is_v2(path) else error.to_json())
            extra = ()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
            *served.headers(),
            *extra,
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        if counted is not None:
            counted.answered(status, _header(scope, b"content-type"), clock, nbytes, infer)
        if self.shadow is not None and status == 200 and body:
            # after the response is sent: a random draw; a sample is one pipe write
            sample_type = (v2.shadow_sample_type(_header(scope, v2.BINARY_HEADER.encode()))
                           if infer else _header(scope, b"content-type"))
            self.shadow.offer(served.info.version, body, sample_type, payload,
                              time.perf_counter() - start)
        if self.capture is not None and status == 200 and body:
            # after the response is sent: a queue put, never on the request's latency
            self.capture.record(
                body,
                _header(scope, b"content-type") or "application/json",
                payload,
                served.info.name or "",
                served.info.version or "",
                **({"protocol": "v2", "header_length": _header(scope, v2.BINARY_HEADER.encode())}
                   if infer else {}),
            )
        if _access.isEnabledFor(logging.INFO):
            _access.info(
                "request",
                extra={
                    "method": method,
                    "path": path,
                    "status": status,
                    "ms": round((time.perf_counter() - start) * 1000, 3),
                    "bytes_in": nbytes,
                    "bytes_out": len(payload),
                    "model_version": served.info.version,
                    "client": scope["client"][0] if scope.get("client") else None,
                },
            )

    def _v2_get(self, served: Served, method: str, path: str) -> bytes:
        """A V2 route other than inference: metadata and health, answered on the loop."""
        name, version = served.info.name or "model", served.info.version
        found = v2.route(method, path, name, version)
        if found.kind == "server":
            return v2.server_metadata()
        if found.kind == "model":
            return v2.model_metadata(served.scorer.pyfunc_model, name, version)
        return v2.health(found.kind, name)  # live, ready, model_ready

    async def _v2_infer(self, scope, served: Served, path: str, body: bytes) -> bytes:
        """``POST .../infer``: on the loop when measured fast and the fast path can, else pooled."""
        name, version = served.info.name or "model", served.info.version
        v2.route("POST", path, name, version)  # another model or version: the protocol's 404
        header = _header(scope, v2.BINARY_HEADER.encode())
        if served.scorer.inline(len(body)):
            answer = v2.infer(served.scorer, body, header, name, version, fast_only=True)
            if answer is not None:
                return answer
        return await self._in_pool(v2.infer, served.scorer, body, header, name, version)

    async def _send_metrics(self, send) -> None:
        """``GET /metrics``: every worker's counts, read off the event loop."""
        payload = await _metrics.scrape()
        headers = [
            (b"content-type", _metrics.CONTENT_TYPE.encode()),
            (b"content-length", str(len(payload)).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    async def _read_body(self, scope, receive) -> bytes:
        """The whole body, read within ``body_timeout`` seconds and at most ``max_body_bytes``.

        Raises:
            RequestError: 408 when the body does not arrive in time, 413 when it is too large
                (after reading and discarding the rest of it, up to a bound).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout
        length = _header(scope, b"content-length")
        declared = int(length) if length is not None and length.isdigit() else None
        if declared is not None and declared > self.max_body_bytes:
            if _header(scope, b"expect") != "100-continue":  # else it was never sent
                await self._discard(receive, deadline, declared)
            raise self._too_large()
        chunks, size = [], 0
        while True:
            message = await self._receive(receive, deadline)
            if message["type"] == "http.disconnect":
                raise RequestError(400, "client disconnected")
            chunk = message.get("body", b"")
            size += len(chunk)
            more = message.get("more_body", False)
            if size > self.max_body_bytes:
                if more:
                    await self._discard(receive, deadline, None)
                raise self._too_large()
            chunks.append(chunk)
            if not more:
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _receive(self, receive, deadline: float):
        remaining = deadline - asyncio.get_running_loop().time()
        try:
            return await asyncio.wait_for(receive(), max(remaining, 0.0))
        except TimeoutError:
            raise RequestError(
                408,
                f"the request body did not arrive within {self.body_timeout:g} s",
                "REQUEST_TIMEOUT",
            ) from None

    async def _discard(self, receive, deadline: float, declared: int | None) -> None:
        """Read and drop the rest of an oversized body, within the deadline and a bound."""
        if declared is not None and declared > self.max_body_bytes + MAX_DISCARD_BYTES:
            return  # too much to read: the connection is closed on the client
        dropped = 0
        while dropped <= MAX_DISCARD_BYTES:
            try:
                message = await self._receive(receive, deadline)
            except RequestError:
                return
            if message["type"] == "http.disconnect" or not message.get("more_body", False):
                return
            dropped += len(message.get("body", b""))

    def _too_large(self) -> RequestError:
        return RequestError(
            413,
            f"request body larger than {self.max_body_bytes} bytes; send smaller batches",
            "REQUEST_LIMIT_EXCEEDED",
        )

    async def _score(self, served: Served, body: bytes, content_type: str | None) -> bytes:
        scorer = served.scorer
        n = len(body)
        if scorer.inline(n) or scorer.batches(n):
            try:
                if scorer.batches(n):
                    # Concurrent small requests of this scorer (so this model version) share one
                    # predict call (see serving.online.microbatch): on the loop for a model measured
                    # well under a millisecond, else in the pool.
                    offload = None if scorer.inline(n) else self._offload
                    return await scorer.score_fast_batched(body, content_type, offload)
                return scorer.score_fast(body, content_type)
            except Handoff as handoff:
                # pyfunc answers what the fast path cannot prove: never on the event loop
                return await self._in_pool(scorer.score_pyfunc, body, content_type, handoff.error)
        return await self._in_pool(scorer.score, body, content_type)

    async def _offload(self, fn, x):
        return await self._in_pool(fn, x)

    async def _in_pool(self, fn, *args) -> bytes:
        try:
            return await self._pool.run(fn, *args, timeout=self.timeout)
        except PoolFull:
            raise RequestError(
                503,
                "the server is busy (every scoring thread busy, its queue full); retry later",
                "TEMPORARILY_UNAVAILABLE",
            ) from None
        except PoolTimeout:
            raise RequestError(
                504, f"scoring took longer than {self.timeout:g} s", "DEADLINE_EXCEEDED"
            ) from None

    def stopping(self) -> None:
        """The server begins to stop (the requests in flight still run to their answers).

        The shadow hurries now, rather than once they are answered, so its backlog is not what
        the stop waits for.
        """
        if self.shadow is not None and hasattr(self.shadow, "hurry"):
            self.shadow.hurry()

    async def _lifespan(self, receive, send):
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self._pool.shutdown()
                if self.capture is not None:
                    self.capture.close()
                if self.shadow is not None:  # waits for the challenger's last samples
                    await asyncio.get_running_loop().run_in_executor(None, self.shadow.close)
                await send({"type": "lifespan.shutdown.complete"})
                return


def _header(scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None
