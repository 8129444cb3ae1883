"""Running the scoring server: uvicorn on uvloop + httptools, Nagle off, one process per core.

``uvicorn --workers N`` never sets ``TCP_NODELAY`` on the sockets it shares with its workers
(uvicorn issue 3149), so every kept-alive response waits ~40 ms for a delayed ACK. Here each
connection sets ``TCP_NODELAY`` itself (:class:`NoDelayHttpToolsProtocol`), and several workers
each listen on their own ``SO_REUSEPORT`` socket, so the kernel spreads connections over them.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import time
from dataclasses import dataclass

import orjson

from serving import metrics as _metrics
from serving.app import (
    DEFAULT_BODY_TIMEOUT_SECONDS,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_TIMEOUT_SECONDS,
)
from serving.follow import DEFAULT_POLL_SECONDS

_logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
# A worker that dies this soon after starting counts as a failed start; this many in a row
# stop the server instead of restarting it forever.
FAST_FAILURE_SECONDS = 30.0
MAX_FAST_FAILURES = 3
# Request line + headers of one request at most (bytes), and headers at most (count): more is
# a 431 and the connection closes (the body of such a request is never read).
MAX_HEADER_BYTES = 16 * 1024
MAX_HEADERS = 100


# Imported once by the fork server that the workers fork from.
_PRELOAD = (
    "serving.server",
    "serving.app",
    "serving.model",
    "core.models",
    "mlflow.pyfunc",
    "mlflow.sklearn",
    "sklearn.pipeline",
    "pandas",
    "uvicorn",
    "uvicorn.protocols.http.httptools_impl",
    "uvloop",
)


@dataclass(frozen=True)
class ServeConfig:
    """Everything a worker process needs (picklable: it is sent to each worker)."""

    model: str
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    workers: int = 1
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    body_timeout: float = DEFAULT_BODY_TIMEOUT_SECONDS
    pin: bool = False
    poll_seconds: float = DEFAULT_POLL_SECONDS
    tracking_uri: str | None = None
    log_level: str = "INFO"
    access_log: bool = True
    capture: str | None = None
    capture_sample_rate: float = 1.0
    capture_max_file_bytes: int = 16 * 1024 * 1024
    capture_max_total_bytes: int = 1024 * 1024 * 1024
    shadow: str | None = None
    shadow_sample: float = 0.1
    shadow_tolerance: float = 0.01
    metrics: bool = True  # GET /metrics (--no-metrics: nothing counted)
    webhook_insecure: bool = False  # POST /webhooks/mlflow takes unsigned deliveries


def _nodelay_protocol():
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class NoDelayHttpToolsProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol: Nagle's algorithm off, header size and count limited.

        Nagle is turned off on every connection; uvicorn's httptools protocol has no limit on
        a request's headers, so this one answers 431 and closes past the limits.
        """

        _header_bytes = 0
        _refused = False

        def on_message_begin(self):
            self._header_bytes = 0
            super().on_message_begin()

        def on_url(self, url):
            self._count(len(url))
            super().on_url(url)

        def on_header(self, name, value):
            self._count(len(name) + len(value) + 4)
            super().on_header(name, value)
            if len(self.headers) > MAX_HEADERS:
                self._refuse(f"more than {MAX_HEADERS} headers")

        def _count(self, n: int) -> None:
            self._header_bytes += n
            if self._header_bytes > MAX_HEADER_BYTES:
                self._refuse(f"request line and headers larger than {MAX_HEADER_BYTES} bytes")

        def _refuse(self, why: str):
            import httptools

            if not self._refused:
                self._refused = True
                body = orjson.dumps(
                    {"error_code": "REQUEST_HEADER_FIELDS_TOO_LARGE", "message": why}
                )
                if (m := _metrics.current()) is not None:
                    m.rejected(431)
                self.transport.write(
                    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                    b"content-type: application/json\r\nconnection: close\r\n"
                    b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
                )
                self.transport.close()
            raise httptools.HttpParserError(why)  # stops parsing this connection

        def send_400_response(self, msg):
            if not self._refused:  # a 431 already went out
                super().send_400_response(msg)

        def data_received(self, data):
            if not self._refused:
                super().data_received(data)

        def connection_made(self, transport):
            sock = transport.get_extra_info("socket")
            if sock is not None:
                try:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                except OSError:  # not TCP (a Unix socket): nothing to do
                    pass
            super().connection_made(transport)

    return NoDelayHttpToolsProtocol


def bind_socket(host: str, port: int, reuse_port: bool, listen: bool = True) -> socket.socket:
    """A TCP socket bound to ``host:port`` with ``TCP_NODELAY`` (and ``SO_REUSEPORT``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    if listen:
        sock.listen(2048)
    return sock


def build_app(cfg: ServeConfig, client):
    """Resolve and load the model, start following its alias, and return the ASGI app."""
    from core.models import resolve_model
    from core.uris import parse_model_ref
    from serving.app import ModelHolder, ScoringApp, Served
    from serving.follow import AliasFollower
    from serving.model import load_scorer

    ref = parse_model_ref(cfg.model)
    info = resolve_model(client, ref)
    holder = ModelHolder(Served(info, load_scorer(info.uri)))
    follower = None
    if ref.alias and not cfg.pin:
        from serving.follow import signal_path

        follower = AliasFollower(client, ref, holder, poll_seconds=cfg.poll_seconds,
                                 signal=signal_path(cfg.port)).start()
    capture = None
    if cfg.capture:
        from serving.capture import CaptureWriter

        s3 = None
        if cfg.capture.startswith("s3://"):
            import boto3

            s3 = boto3.client("s3")
        capture = CaptureWriter(
            cfg.capture,
            sample_rate=cfg.capture_sample_rate,
            max_file_bytes=cfg.capture_max_file_bytes,
            max_total_bytes=cfg.capture_max_total_bytes,
            s3_client=s3,
        )
    shadow = None
    if cfg.shadow:  # a sample of requests also scored by the challenger, off the request path
        from serving.shadow import shadow_for

        shadow = shadow_for(client, info, cfg.shadow, sample=cfg.shadow_sample,
                            tolerance=cfg.shadow_tolerance)
    app = ScoringApp(
        holder,
        timeout=cfg.timeout,
        max_body_bytes=cfg.max_body_bytes,
        capture=capture,
        body_timeout=cfg.body_timeout,
        shadow=shadow,
    )
    if follower is not None:  # POST /webhooks/mlflow: the registry's alias moves
        from serving import webhooks as hooks

        seen = hooks.SeenDeliveries(hooks.shared_seen_path(cfg.port))  # shared by the workers
        verifier = hooks.Verifier(hooks.secret_from_env(), cfg.webhook_insecure, seen)
        app = hooks.WebhookApp(app, follower.on_event, verifier)
    return app


def run_worker(cfg: ServeConfig) -> None:
    """One serving process: load the model, then serve until SIGTERM/SIGINT.

    The model loads before the socket opens, so a worker only gets connections once it can
    answer them.
    """
    import uvicorn

    from core.connection import connect
    from serving.logs import configure_logging

    configure_logging(cfg.log_level, cfg.access_log)
    # What ``mlflow models serve`` sets: some flavors behave differently when serving.
    os.environ["_MLFLOW_IS_IN_SERVING_ENVIRONMENT"] = "true"
    if cfg.workers > 1:
        # One process per core already: BLAS/OpenMP pools of a core each would oversubscribe.
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    if cfg.metrics:
        _metrics.enable()  # before the model loads: the load sets the version gauge
    client = connect(cfg.tracking_uri)
    app = build_app(cfg, client)
    sock = bind_socket(cfg.host, cfg.port, reuse_port=cfg.workers > 1)
    config = uvicorn.Config(
        app,
        loop="uvloop",
        http=_nodelay_protocol(),
        lifespan="on",
        log_config=None,
        access_log=False,
        server_header=False,
        date_header=False,
    )
    _logger.info(
        "serving",
        extra={
            "host": cfg.host,
            "port": cfg.port,
            "pid": os.getpid(),
            "model": cfg.model,
            "follow": not cfg.pin,
        },
    )
    uvicorn.Server(config).run(sockets=[sock])


def serve(cfg: ServeConfig) -> int:
    """Serve with ``cfg.workers`` processes; return the exit code.

    One worker runs in this process. Several are spawned and supervised: a worker that dies is
    restarted; repeated failed starts stop the server.
    """
    # Every worker's counts in one directory for this run, removed when the server stops.
    metrics_dir = _metrics.prepare_dir() if cfg.metrics else None
    previous = signal.getsignal(signal.SIGTERM)
    if metrics_dir is not None and cfg.workers <= 1:
        # uvicorn re-raises the SIGTERM that stopped it once it has shut down: exit through
        # the finally below instead of dying there, so the directory goes too
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        return _serve(cfg)
    finally:
        signal.signal(signal.SIGTERM, previous)
        _metrics.remove_dir(metrics_dir)


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)  # the shell's code for "ended by this signal"


def _serve(cfg: ServeConfig) -> int:
    if cfg.workers <= 1:
        run_worker(cfg)
        return 0
    # Fail early (and hold the port) if it is taken; a socket that does not listen gets no
    # connections, so the workers' listening sockets take them all.
    guard = bind_socket(cfg.host, cfg.port, reuse_port=True, listen=False)
    # Workers fork from a fork server that imported the heavy modules once (not N times), and
    # holds no registry connection or thread of this process.
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(list(_PRELOAD))
    stopping = False

    def _stop(signum, frame):
        nonlocal stopping
        stopping = True

    previous = {s: signal.signal(s, _stop) for s in (signal.SIGTERM, signal.SIGINT)}
    procs: dict[int, tuple] = {}
    fast_failures = 0

    def _start(slot: int):
        proc = ctx.Process(target=run_worker, args=(cfg,), name=f"serving-worker-{slot}")
        proc.start()
        procs[slot] = (proc, time.monotonic())

    try:
        for slot in range(cfg.workers):
            _start(slot)
        while not stopping:
            time.sleep(0.2)
            for slot, (proc, started) in list(procs.items()):
                if proc.is_alive() or stopping:
                    continue
                _metrics.mark_dead(proc.pid)  # its in-flight count and version gauge go
                fast = time.monotonic() - started < FAST_FAILURE_SECONDS
                fast_failures = fast_failures + 1 if fast else 0
                _logger.error(
                    "worker exited; restarting", extra={"pid": proc.pid, "exitcode": proc.exitcode}
                )
                if fast_failures >= MAX_FAST_FAILURES:
                    _logger.error("workers keep failing to start; stopping")
                    return 1
                _start(slot)
        return 0
    finally:
        for proc, _ in procs.values():
            if proc.is_alive():
                proc.terminate()
        for proc, _ in procs.values():
            proc.join(15)
            if proc.is_alive():
                proc.kill()
        guard.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
