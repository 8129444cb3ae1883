"""MLflow's model-registry webhooks for alias moves: verify, parse, receive, register.

MLflow 3.17's tracking server (SQL stores) posts ``model_version_alias.created`` and
``model_version_alias.deleted`` events to registered URLs, signed with HMAC-SHA256 over
``DELIVERY_ID.TIMESTAMP.BODY`` (headers ``X-MLflow-Delivery-Id``, ``X-MLflow-Timestamp``,
``X-MLflow-Signature: v1,BASE64``), the Standard Webhooks scheme. A follower (the local
scoring server, ``python -m serving sagemaker follow``) treats an event only as a hint to
look at the registry now: the registry stays the truth, polling stays the fallback, so a
lost, late or repeated delivery changes nothing but latency.

The tracking server refuses plain ``http`` and private addresses unless told otherwise
(``MLFLOW_WEBHOOK_ALLOWED_SCHEMES``, ``MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS`` on the server): a
real receiver needs TLS and an address the server can route to.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from core.errors import MlopsError
from serving import metrics as _metrics

_logger = logging.getLogger(__name__)

ENV_SECRET = "MLOPS_WEBHOOK_SECRET"
SIGNATURE_HEADER = "x-mlflow-signature"
TIMESTAMP_HEADER = "x-mlflow-timestamp"
DELIVERY_HEADER = "x-mlflow-delivery-id"
SIGNATURE_VERSION = "v1"
#: Deliveries signed longer ago than this are refused (replay protection).
MAX_AGE_SECONDS = 300
ALIAS_EVENTS = ("model_version_alias.created", "model_version_alias.deleted")
DEFAULT_PATH = "/webhooks/mlflow"
MAX_BODY_BYTES = 1024 * 1024


class WebhookError(MlopsError):
    """A delivery that is refused; ``status`` is the HTTP answer (400 or 401)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class AliasEvent:
    """An alias of a registered model was set (``version``) or deleted (``version`` None)."""

    name: str
    alias: str
    version: str | None
    action: str
    delivery_id: str


def sign(secret: str, delivery_id: str, timestamp: str, body: bytes | str) -> str:
    """The ``X-MLflow-Signature`` value MLflow sends for this delivery."""
    payload = body.decode() if isinstance(body, bytes) else body
    digest = hmac.new(secret.encode(), f"{delivery_id}.{timestamp}.{payload}".encode(),
                      hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def verify(secret: str, headers: dict[str, str], body: bytes,
           now: float | None = None, max_age: float = MAX_AGE_SECONDS) -> None:
    """Check a delivery's signature and age; raise :class:`WebhookError` (401) if wrong.

    ``headers`` keys are compared case-insensitively.
    """
    lower = {k.lower(): v for k, v in headers.items()}
    signature = lower.get(SIGNATURE_HEADER, "")
    timestamp = lower.get(TIMESTAMP_HEADER, "")
    delivery = lower.get(DELIVERY_HEADER, "")
    if not signature or not timestamp or not delivery:
        raise WebhookError("unsigned delivery: X-MLflow-Signature, -Timestamp and -Delivery-Id "
                           "are required", 401)
    try:
        age = abs((time.time() if now is None else now) - int(timestamp))
    except ValueError:
        raise WebhookError(f"bad X-MLflow-Timestamp {timestamp!r}", 401) from None
    if age > max_age:
        raise WebhookError(f"delivery signed {age:.0f} s ago (more than {max_age:g} s)", 401)
    expected = sign(secret, delivery, timestamp, body)
    # a header may carry several space-separated signatures (secret rotation)
    if not any(hmac.compare_digest(expected, given) for given in signature.split()):
        raise WebhookError("bad signature: the webhook's secret differs from this one", 401)


def parse_alias_event(body: bytes, delivery_id: str = "") -> AliasEvent | None:
    """The alias move a delivery announces, or None for another event (a test ping, say).

    Raises:
        WebhookError: the body is not MLflow's webhook JSON.
    """
    try:
        doc = json.loads(body)
        entity, action, data = doc["entity"], doc["action"], doc.get("data") or {}
    except (ValueError, KeyError, TypeError):
        raise WebhookError("not an MLflow webhook payload (entity, action, data)") from None
    if f"{entity}.{action}" not in ALIAS_EVENTS:
        return None
    if not isinstance(data, dict) or not data.get("name") or not data.get("alias"):
        raise WebhookError("alias event without name and alias")
    version = data.get("version") if action == "created" else None
    return AliasEvent(str(data["name"]), str(data["alias"]),
                      None if version is None else str(version), action, delivery_id)


def handle(secret: str | None, headers: dict[str, str], body: bytes) -> AliasEvent | None:
    """Verify (when a secret is set) and parse one delivery: the server routes call this."""
    if secret:
        verify(secret, headers, body)
    lower = {k.lower(): v for k, v in headers.items()}
    return parse_alias_event(body, lower.get(DELIVERY_HEADER, ""))


def secret_from_env() -> str | None:
    """The shared secret (``$MLOPS_WEBHOOK_SECRET``), or None."""
    return os.environ.get(ENV_SECRET) or None


class Receiver:
    """A small HTTP server that takes MLflow's deliveries and calls ``on_event`` for each.

    ``POST PATH`` answers 204 for an accepted delivery, 401 for a bad signature, 400 for a
    body that is not a webhook; ``GET /ping`` answers 200. Runs in a daemon thread.
    """

    def __init__(self, host: str, port: int, on_event: Callable[[AliasEvent], None],
                 secret: str | None, path: str = DEFAULT_PATH):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                if self.path.split("?")[0] != path:
                    return self._answer(404, {"error": f"no route {self.path}"})
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY_BYTES:
                    _metrics.follow_webhook(accepted=False)
                    return self._answer(413, {"error": "body too large"})
                body = self.rfile.read(length)
                try:
                    event = handle(secret, dict(self.headers.items()), body)
                except WebhookError as exc:
                    _logger.warning("webhook refused: %s", exc)
                    _metrics.follow_webhook(accepted=False)
                    return self._answer(exc.status, {"error": str(exc)})
                _metrics.follow_webhook(accepted=True)
                if event is not None:
                    receiver.received += 1
                    on_event(event)
                return self._answer(204, None)

            def do_GET(self):  # noqa: N802
                if self.path == "/ping":
                    return self._answer(200, {"status": "ok"})
                return self._answer(404, {"error": f"no route {self.path}"})

            def _answer(self, status: int, doc):
                data = b"" if doc is None else json.dumps(doc).encode()
                self.send_response(status)
                if data:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if data:
                    self.wfile.write(data)

            def log_message(self, fmt, *args):  # quiet: the follower logs what matters
                _logger.debug("webhook %s", fmt % args)

        self.received = 0
        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="webhook-receiver", daemon=True)

    def start(self) -> Receiver:
        """Serve in the background."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()


class WebhookApp:
    """ASGI middleware: ``POST /webhooks/mlflow`` takes a delivery; everything else passes.

    Answers 204 (accepted; ``on_event`` called for an alias move), 401 (bad signature) or
    400 (not a webhook), as JSON errors in the scoring protocol's shape.
    """

    def __init__(self, app, on_event: Callable[[AliasEvent], None], secret: str | None,
                 path: str = DEFAULT_PATH):
        self.app = app
        self.on_event = on_event
        self.secret = secret
        self.path = path

    async def __call__(self, scope, receive, send):
        """Take a delivery, or pass the request on."""
        if scope["type"] != "http" or scope["path"] != self.path:
            return await self.app(scope, receive, send)
        status, doc = 204, None
        if scope["method"] != "POST":
            status, doc = 405, {"error_code": "METHOD_NOT_ALLOWED",
                                "message": f"use POST {self.path}"}
        else:
            chunks, size = [], 0
            while True:
                message = await receive()
                chunk = message.get("body", b"")
                size += len(chunk)
                chunks.append(chunk)
                if message["type"] != "http.request" or not message.get("more_body"):
                    break
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            try:
                if size > MAX_BODY_BYTES:
                    raise WebhookError("body too large", 413)
                event = handle(self.secret, headers, b"".join(chunks))
                if event is not None:
                    self.on_event(event)
            except WebhookError as exc:
                _logger.warning("webhook refused: %s", exc)
                status, doc = exc.status, {"error_code": "WEBHOOK_REFUSED", "message": str(exc)}
        body = b"" if doc is None else json.dumps(doc).encode()
        headers = [(b"content-length", str(len(body)).encode())]
        if body:
            headers.append((b"content-type", b"application/json"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def register(client, name: str, url: str, secret: str | None,
             description: str = "") -> str:
    """Create (or update) the tracking server's webhook ``name`` posting alias moves to ``url``.

    Idempotent by name, so a restarted follower keeps one webhook. Returns its id.

    Raises:
        MlopsError: the registry cannot hold webhooks (a file store, or an old server).
    """
    from mlflow.exceptions import MlflowException

    try:
        for hook in client.list_webhooks(max_results=100):
            if hook.name == name:
                client.update_webhook(hook.webhook_id, url=url, events=list(ALIAS_EVENTS),
                                      secret=secret, status="ACTIVE")
                return hook.webhook_id
        hook = client.create_webhook(name=name, url=url, events=list(ALIAS_EVENTS),
                                     description=description, secret=secret)
    except MlflowException as exc:
        raise MlopsError(f"cannot register the webhook on the registry: {exc.message}") from None
    return hook.webhook_id
