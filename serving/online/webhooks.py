"""MLflow's model-registry webhooks for alias moves: verify, parse, receive, register.

MLflow 3.17's tracking server (SQL stores) posts ``model_version_alias.created`` and
``model_version_alias.deleted`` events to registered URLs, signed with HMAC-SHA256 over
``DELIVERY_ID.TIMESTAMP.BODY`` (headers ``X-MLflow-Delivery-Id``, ``X-MLflow-Timestamp``,
``X-MLflow-Signature: v1,BASE64``), the Standard Webhooks scheme: the signature is checked
with the ``standardwebhooks`` package. A follower (the local scoring server, ``python -m
serving sagemaker follow``) treats an event only as a hint to look at the registry now: the
registry stays the truth, polling stays the fallback, so a lost, late or repeated delivery
changes nothing but latency.

Secure by default: without ``$MLOPS_WEBHOOK_SECRET`` every delivery is refused (401) unless
the follower was started with ``--webhook-insecure``. Either way a delivery needs an id and a
timestamp within 5 minutes of now, and an id is taken once (a replay gets 401).

The tracking server refuses plain ``http`` and private addresses unless told otherwise
(``MLFLOW_WEBHOOK_ALLOWED_SCHEMES``, ``MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS`` on the server): a
real receiver needs TLS and an address the server can route to.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from standardwebhooks import Webhook, WebhookVerificationError

from core.errors import MlopsError, UsageError

_logger = logging.getLogger(__name__)

ENV_SECRET = "MLOPS_WEBHOOK_SECRET"
INSECURE_FLAG = "--webhook-insecure"
INSECURE_HELP = (f"Accept webhook deliveries without a signature (no ${ENV_SECRET}): only on a "
                 "network where nobody else can reach the receiver.")
SIGNATURE_HEADER = "x-mlflow-signature"
TIMESTAMP_HEADER = "x-mlflow-timestamp"
DELIVERY_HEADER = "x-mlflow-delivery-id"
#: Deliveries signed longer ago (or further ahead) than this are refused; the Standard
#: Webhooks tolerance, which ``standardwebhooks`` applies too.
MAX_AGE_SECONDS = 300
#: A delivery (headers and body) must arrive within this many seconds, else 408 and the
#: connection closes: a slow client cannot hold the receiver.
READ_TIMEOUT_SECONDS = 10.0
#: Delivery ids remembered for the replay check; past this the oldest are forgotten first
#: (only deliveries that passed the signature check are remembered).
MAX_SEEN = 10_000
ALIAS_EVENTS = ("model_version_alias.created", "model_version_alias.deleted")
DEFAULT_PATH = "/webhooks/mlflow"
MAX_BODY_BYTES = 1024 * 1024


class WebhookError(MlopsError):
    """A delivery that is refused; ``status`` is the HTTP answer (400, 401, 408 or 413)."""

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


def secret_from_env() -> str | None:
    """The shared secret (``$MLOPS_WEBHOOK_SECRET``), or None."""
    return os.environ.get(ENV_SECRET) or None


def check_settings(secret: str | None, insecure: bool) -> None:
    """Refuse a secret together with ``--webhook-insecure``: one of them is a mistake.

    Raises:
        UsageError: both are given.
    """
    if secret and insecure:
        raise UsageError(f"{INSECURE_FLAG} accepts unsigned deliveries, but ${ENV_SECRET} is "
                         f"set: unset it or drop {INSECURE_FLAG}")


def startup_note(secret: str | None, insecure: bool) -> str | None:
    """The one line a receiver says at start about its deliveries (None: nothing to say)."""
    if insecure:
        return (f"{INSECURE_FLAG}: webhook deliveries are accepted without a signature; "
                "whoever reaches the receiver can make it read the registry now")
    if not secret:
        return (f"POST {DEFAULT_PATH} refuses every delivery (401): ${ENV_SECRET} is not set "
                f"({INSECURE_FLAG} accepts unsigned ones); the registry is polled")
    return None


class SeenDeliveries:
    """The delivery ids taken within the age window: a replayed id is found here.

    Kept in SQLite so the workers of one server share it (``path``); an id is forgotten once
    its timestamp is older than the window (its delivery would be refused as too old anyway),
    and past ``limit`` ids the oldest go first.

    Args:
        path: a SQLite file shared by the processes of one receiver; None keeps the ids in
            this process.
        window: seconds an id is remembered after its timestamp.
        limit: most ids remembered.
    """

    def __init__(self, path: str | os.PathLike | None = None, window: float = MAX_AGE_SECONDS,
                 limit: int = MAX_SEEN):
        self._window = window
        self._limit = limit
        self._lock = threading.Lock()
        # autocommit: each statement is its own transaction, so workers never wait on a
        # transaction left open; the busy timeout covers two workers writing at once
        self._db = sqlite3.connect(str(path) if path else ":memory:", timeout=5,
                                   isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA synchronous=OFF")  # lost on a machine crash: fine, it expires
        self._db.execute("CREATE TABLE IF NOT EXISTS seen "
                         "(id TEXT PRIMARY KEY, stamp INTEGER NOT NULL)")

    def add(self, delivery_id: str, stamp: int, now: float | None = None) -> bool:
        """Remember ``delivery_id``; return False when it was seen already (a replay)."""
        now = time.time() if now is None else now
        with self._lock:
            self._db.execute("DELETE FROM seen WHERE stamp < ?", (int(now - self._window),))
            try:
                self._db.execute("INSERT INTO seen (id, stamp) VALUES (?, ?)",
                                 (delivery_id, stamp))
            except sqlite3.IntegrityError:
                return False
            (count,), = self._db.execute("SELECT count(*) FROM seen")
            if count > self._limit:
                self._db.execute("DELETE FROM seen WHERE id IN (SELECT id FROM seen "
                                 "ORDER BY stamp LIMIT ?)", (count - self._limit,))
            return True

    def close(self) -> None:
        """Close the database."""
        self._db.close()


def shared_seen_path(port: int) -> Path | None:
    """Where the workers of the scoring server on ``port`` share their seen delivery ids.

    In a folder of this user's only (mode 0700), so no other local user can read or forget
    the ids; the file outlives the server, so a replay after a restart is refused too.
    None when that folder cannot be made safely (each worker then remembers its own).
    """
    folder = Path(tempfile.gettempdir()) / f"mlops-serve-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        info = folder.lstat()
    except OSError:
        return None
    if not folder.is_dir() or folder.is_symlink() or info.st_uid != os.getuid() \
            or info.st_mode & 0o077:
        _logger.warning("%s is not this user's private folder: each worker keeps its own "
                        "replay check", folder)
        return None
    return folder / f"webhooks-{port}.sqlite"


class Verifier:
    """Decides whether a delivery is taken: signed with the secret, fresh, never seen before.

    Args:
        secret: the webhook's shared secret; None refuses every delivery unless ``insecure``.
        insecure: accept deliveries without a signature (``--webhook-insecure``).
        seen: the replay memory (default: one of this process).
        max_age: seconds a delivery's timestamp may differ from now.
    """

    def __init__(self, secret: str | None, insecure: bool = False,
                 seen: SeenDeliveries | None = None, max_age: float = MAX_AGE_SECONDS):
        check_settings(secret, insecure)
        # the raw secret is the HMAC key, as MLflow uses it (not a base64 "whsec_" key)
        self._webhook = Webhook(secret.encode()) if secret else None
        self.insecure = insecure
        self._seen = seen if seen is not None else SeenDeliveries(window=max_age)
        self._max_age = max_age

    def check(self, headers: dict[str, str], body: bytes,
              now: float | None = None) -> AliasEvent | None:
        """The alias move a delivery announces (None for another event), once verified.

        ``headers`` keys are compared case-insensitively.

        Raises:
            WebhookError: 401 for a delivery refused (no secret, unsigned, wrongly signed,
                too old or ahead, replayed), 400 for a body that is not MLflow's webhook JSON.
        """
        if self._webhook is None and not self.insecure:
            raise WebhookError(f"webhooks are off: ${ENV_SECRET} is not set", 401)
        lower = {k.lower(): v for k, v in headers.items()}
        delivery = lower.get(DELIVERY_HEADER, "")
        timestamp = lower.get(TIMESTAMP_HEADER, "")
        signature = lower.get(SIGNATURE_HEADER, "")
        if self._webhook is not None and not signature:
            raise WebhookError("unsigned delivery: X-MLflow-Signature is required", 401)
        if not delivery or not timestamp:
            raise WebhookError("X-MLflow-Delivery-Id and X-MLflow-Timestamp are required", 401)
        try:
            stamp = int(timestamp)
        except ValueError:
            raise WebhookError(f"bad X-MLflow-Timestamp {timestamp!r}", 401) from None
        now = time.time() if now is None else now
        if now - stamp > self._max_age:
            raise WebhookError(f"delivery signed {now - stamp:.0f} s ago (more than "
                               f"{self._max_age:g} s)", 401)
        if stamp - now > self._max_age:
            raise WebhookError(f"delivery dated {stamp - now:.0f} s ahead (more than "
                               f"{self._max_age:g} s)", 401)
        if self._webhook is not None:
            try:
                self._webhook.verify(body, {"webhook-id": delivery, "webhook-timestamp": timestamp,
                                            "webhook-signature": signature}, json_parse=False)
            except WebhookVerificationError as exc:
                if "signature" in str(exc).lower():
                    raise WebhookError("bad signature: the webhook's secret differs from this "
                                       "one", 401) from None
                raise WebhookError(f"refused: {exc}", 401) from None
        if not self._seen.add(delivery, stamp, now):
            raise WebhookError(f"replayed delivery {delivery}", 401)
        return parse_alias_event(body, delivery)


def parse_alias_event(body: bytes, delivery_id: str = "") -> AliasEvent | None:
    """The alias move a delivery announces, or None for another event (a test ping, say).

    Raises:
        WebhookError: the body is not MLflow's webhook JSON.
    """
    try:
        doc = json.loads(body)
        entity, action, data = doc["entity"], doc["action"], doc.get("data") or {}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise WebhookError("not an MLflow webhook payload (entity, action, data)") from None
    if f"{entity}.{action}" not in ALIAS_EVENTS:
        return None
    if not isinstance(data, dict) or not data.get("name") or not data.get("alias"):
        raise WebhookError("alias event without name and alias")
    version = data.get("version") if action == "created" else None
    return AliasEvent(str(data["name"]), str(data["alias"]),
                      None if version is None else str(version), action, delivery_id)


class Receiver:
    """A small HTTP server that takes MLflow's deliveries and calls ``on_event`` for each.

    ``POST PATH`` answers 204 for an accepted delivery, 401 for a refused one (see
    :class:`Verifier`), 400 for a body that is not a webhook, 408 when the request does not
    arrive within ``READ_TIMEOUT_SECONDS``; ``GET /ping`` answers 200. Runs in a daemon thread.
    ``on_delivery(accepted)`` is told of every delivery taken or refused (the follow service
    counts them in its metrics: :mod:`serving.sagemaker.metrics`).
    """

    def __init__(self, host: str, port: int, on_event: Callable[[AliasEvent], None],
                 secret: str | None, path: str = DEFAULT_PATH, insecure: bool = False,
                 on_delivery: Callable[[bool], None] | None = None):
        receiver = self
        verifier = Verifier(secret, insecure)
        on_delivery = on_delivery or (lambda accepted: None)

        class Handler(BaseHTTPRequestHandler):
            # the timer below bounds the whole request (a client sending a byte at a time
            # cannot hold a thread); a socket read never waits longer than that anyway
            timeout = READ_TIMEOUT_SECONDS + 1

            def setup(self):
                super().setup()
                self._expired = False
                self._deadline = threading.Timer(READ_TIMEOUT_SECONDS, self._cut)
                self._deadline.daemon = True
                self._deadline.start()

            def finish(self):
                self._deadline.cancel()
                super().finish()

            def _cut(self):
                self._expired = True
                try:
                    self.connection.shutdown(socket.SHUT_RD)  # pending reads end at once
                except OSError:
                    pass

            def do_POST(self):  # noqa: N802 - http.server's naming
                if self.path.split("?")[0] != path:
                    return self._answer(404, {"error": f"no route {self.path}"})
                length = self.headers.get("Content-Length") or "0"
                if not length.isdigit():
                    on_delivery(False)
                    return self._answer(400, {"error": f"bad Content-Length {length!r}"})
                if int(length) > MAX_BODY_BYTES:
                    on_delivery(False)
                    return self._answer(413, {"error": "body too large"})
                body = self.rfile.read(int(length))
                # the deadline cut the headers or the body short, or the client went away
                if self._expired or len(body) < int(length):
                    on_delivery(False)
                    return self._answer(408, {"error": "the delivery did not arrive within "
                                                       f"{READ_TIMEOUT_SECONDS:g} s"})
                try:
                    event = verifier.check(dict(self.headers.items()), body)
                except WebhookError as exc:
                    _logger.warning("webhook refused: %s", exc)
                    on_delivery(False)
                    return self._answer(exc.status, {"error": str(exc)})
                on_delivery(True)
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
                try:
                    self.send_response(status)
                    if data:
                        self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if data:
                        self.wfile.write(data)
                except OSError:  # the client left first
                    self.close_connection = True

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

    Answers 204 (accepted; ``on_event`` called for an alias move), 401 (refused, see
    :class:`Verifier`), 400 (not a webhook), 408 (the body took longer than ``read_timeout``
    seconds) or 413, as JSON errors in the scoring protocol's shape.

    Args:
        app: the ASGI app answering every other request.
        on_event: called with each accepted alias move.
        verifier: decides on each delivery.
        path: the route.
        read_timeout: seconds the body may take to arrive.
    """

    def __init__(self, app, on_event: Callable[[AliasEvent], None], verifier: Verifier,
                 path: str = DEFAULT_PATH, read_timeout: float = READ_TIMEOUT_SECONDS):
        self.app = app
        self.on_event = on_event
        self.verifier = verifier
        self.path = path
        self.read_timeout = read_timeout

    async def __call__(self, scope, receive, send):
        """Take a delivery, or pass the request on."""
        if scope["type"] != "http" or scope["path"] != self.path:
            return await self.app(scope, receive, send)
        status, doc, close = 204, None, False
        if scope["method"] != "POST":
            status, doc = 405, {"error_code": "METHOD_NOT_ALLOWED",
                                "message": f"use POST {self.path}"}
        else:
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            try:
                body = await self._read(receive)
                # off the event loop: the replay check may wait on another worker's write
                event = await asyncio.to_thread(self.verifier.check, headers, body)
                if event is not None:
                    self.on_event(event)
            except WebhookError as exc:
                _logger.warning("webhook refused: %s", exc)
                status, doc = exc.status, {"error_code": "WEBHOOK_REFUSED", "message": str(exc)}
                close = exc.status in (408, 413)  # the rest of the body may be on the wire
        body = b"" if doc is None else json.dumps(doc).encode()
        headers = [(b"content-length", str(len(body)).encode())]
        if body:
            headers.append((b"content-type", b"application/json"))
        if close:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _read(self, receive) -> bytes:
        """The body, within ``read_timeout`` seconds and ``MAX_BODY_BYTES``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.read_timeout
        chunks, size = [], 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0.0))
            except TimeoutError:
                raise WebhookError("the delivery did not arrive within "
                                   f"{self.read_timeout:g} s", 408) from None
            if message["type"] != "http.request":
                raise WebhookError("client disconnected")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise WebhookError("body too large", 413)
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)


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
