"""The scoring server: a plain ASGI app speaking the MLflow scoring protocol.

Routes: ``GET /ping`` and ``GET /health`` (200 once a model is loaded), ``GET /version`` (which
model version answers, and the MLflow version), ``POST /invocations``. Every response carries
``X-Model-Name`` and ``X-Model-Version``; every request is one JSON access-log line.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import orjson

from serving.logs import ACCESS_LOGGER
from serving.model import ModelVersionInfo, Scorer
from serving.protocol import RequestError

_logger = logging.getLogger(__name__)
_access = logging.getLogger(ACCESS_LOGGER)

DEFAULT_TIMEOUT_SECONDS = 60.0
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024


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

    def swap(self, served: Served) -> Served:
        """Serve ``served`` from the next request on; return the model it replaces."""
        with self._lock:
            old, self.current = self.current, served
        return old


class ScoringApp:
    """The ASGI application.

    Args:
        holder: the model to serve (may be swapped while serving).
        timeout: seconds a scoring request may take before a 504.
        max_body_bytes: larger request bodies get a 413.
        capture: a :class:`serving.capture.CaptureWriter` for answered requests, or None.
    """

    def __init__(
        self,
        holder: ModelHolder,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        capture=None,
    ):
        import mlflow.version

        self.holder = holder
        self.timeout = timeout
        self.max_body_bytes = max_body_bytes
        self._mlflow_version = mlflow.version.VERSION
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="score")
        self.capture = capture

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
        try:
            if path == "/invocations":
                if method != "POST":
                    raise RequestError(405, "use POST /invocations", "METHOD_NOT_ALLOWED")
                body = await self._read_body(scope, receive)
                nbytes = len(body)
                status, payload = (
                    200,
                    await self._score(served, body, _header(scope, b"content-type")),
                )
            elif path in ("/ping", "/health"):
                status, payload = 200, b"\n"
            elif path == "/version":
                status, payload = (
                    200,
                    orjson.dumps(
                        {
                            **served.info.as_dict(),
                            "scorer": served.scorer.kind,
                            "mlflow_version": self._mlflow_version,
                        }
                    ),
                )
            else:
                raise RequestError(
                    404,
                    f"no route {path}; use /invocations, /ping, /health, /version",
                    "ENDPOINT_NOT_FOUND",
                )
            extra = ()
        except RequestError as exc:
            status, payload = exc.status, exc.to_json()
            # A refused body may still be on the wire: close the connection instead of reading it.
            extra = ((b"connection", b"close"),) if exc.status == 413 else ()
        except Exception as exc:  # the server keeps serving whatever a model raises
            _logger.exception("scoring failed")
            status, payload = (
                500,
                RequestError(
                    500, f"internal error: {type(exc).__name__}", "INTERNAL_ERROR"
                ).to_json(),
            )
            extra = ()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
            *served.headers(),
            *extra,
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        if self.capture is not None and status == 200 and body:
            # after the response is sent: a queue put, never on the request's latency
            self.capture.record(body, _header(scope, b"content-type") or "application/json",
                                payload, served.info.name or "", served.info.version or "")
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

    async def _read_body(self, scope, receive) -> bytes:
        length = _header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            raise self._too_large()
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise RequestError(400, "client disconnected")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise self._too_large()
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _too_large(self) -> RequestError:
        return RequestError(
            413,
            f"request body larger than {self.max_body_bytes} bytes; send smaller batches",
            "REQUEST_LIMIT_EXCEEDED",
        )

    async def _score(self, served: Served, body: bytes, content_type: str | None) -> bytes:
        scorer = served.scorer
        if scorer.inline(len(body)):
            if scorer.batched:
                # Concurrent small requests of this scorer (so this model version) share one
                # predict call; see serving.microbatch.
                return await scorer.score_batched(body, content_type)
            return scorer.score(body, content_type)
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._pool, scorer.score, body, content_type)
        try:
            return await asyncio.wait_for(future, self.timeout)
        except TimeoutError:
            raise RequestError(
                504, f"scoring took longer than {self.timeout:g} s", "DEADLINE_EXCEEDED"
            ) from None

    async def _lifespan(self, receive, send):
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self._pool.shutdown(wait=False)
                if self.capture is not None:
                    self.capture.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _header(scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None
