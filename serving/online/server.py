"""Running the scoring server: uvicorn on uvloop + httptools, Nagle off, one process per core.

``uvicorn --workers N`` never sets ``TCP_NODELAY`` on the sockets it shares with its workers
(uvicorn issue 3149), so every kept-alive response waits ~40 ms for a delayed ACK. Here each
connection sets ``TCP_NODELAY`` itself (:class:`NoDelayHttpToolsProtocol`), and several workers
each listen on their own ``SO_REUSEPORT`` socket, so the kernel spreads connections over them.

One server per port: ``SO_REUSEPORT`` lets any process of the same user join a port, so the
main process claims it before any model loads (:func:`claim_port`): a socket without
``SO_REUSEPORT`` first proves that nobody holds it, then the workers' sockets are bound and
listening, and no listening socket but ours may be on the port. The main process keeps them
for the workers it starts (a restarted worker takes over its slot's socket and the connections
waiting on it) and closes them when it stops, so new connections are refused while the workers
finish the requests in flight; it exits once every worker (and each worker's shadow process)
has.
"""

from __future__ import annotations

import atexit
import errno
import logging
import multiprocessing
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import orjson

from core.errors import UsageError
from serving.online import metrics as _metrics
from serving.online.app import (
    DEFAULT_BODY_TIMEOUT_SECONDS,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_TIMEOUT_SECONDS,
)
from serving.online.follow import DEFAULT_POLL_SECONDS

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
# Seconds from a connection's opening (or a request's first byte) to the end of its headers:
# then 408 and the connection closes (a connection that sent nothing is closed), as bodies
# get --body-timeout. Clients send headers in one go; dribbling them holds a connection.
DEFAULT_HEADER_TIMEOUT_SECONDS = 10.0
# Seconds the main process gives its workers, beyond the longest a request may take (body
# timeout + scoring timeout), to stop once told to; then they are killed.
STOP_MARGIN_SECONDS = 15.0


# Imported once by the fork server that the workers fork from.
_PRELOAD = (
    "serving.online.server",
    "serving.online.app",
    "serving.online.model",
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
    header_timeout: float = DEFAULT_HEADER_TIMEOUT_SECONDS
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
    # What starts the --shadow challenger: serving.shadow.process.shadow_for, handed in by the
    # command line (the shadow sits above online scoring, which never imports it).
    start_shadow: Callable[..., Any] | None = None
    metrics: bool = True  # GET /metrics (--no-metrics: nothing counted)
    webhook_insecure: bool = False  # POST /webhooks/mlflow takes unsigned deliveries


def _nodelay_protocol(header_timeout: float = DEFAULT_HEADER_TIMEOUT_SECONDS):
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class NoDelayHttpToolsProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol: Nagle's algorithm off, headers limited and timed.

        Nagle is turned off on every connection; uvicorn's httptools protocol has no limit on
        a request's headers, so this one answers 431 and closes past the limits, and no
        deadline for them (its keep-alive timer stops at a request's first byte), so this one
        answers 408 and closes when they have not ended ``header_timeout`` seconds after the
        connection opened or the request began.
        """

        _header_bytes = 0
        _refused = False
        _header_timer = None
        _began = False

        def on_message_begin(self):
            self._header_bytes = 0
            self._began = True
            if self._header_timer is None:  # a new connection's deadline is already running
                self._header_timer = self.loop.call_later(header_timeout, self._headers_late)
            super().on_message_begin()

        def on_headers_complete(self):
            self._stop_header_timer()
            self._began = False
            super().on_headers_complete()

        def _stop_header_timer(self):
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_late(self):
            self._header_timer = None
            if self._refused or self.transport.is_closing():
                return
            if self.cycle is not None and not self.cycle.response_complete:
                # a pipelined request waits behind the one being answered: its clock starts
                # when the connection is free to answer it
                self._header_timer = self.loop.call_later(header_timeout, self._headers_late)
                return
            self._refused = True
            if self._began:  # part of a request came: say why it ends, as a late body gets
                self._answer_and_close(
                    408, b"Request Timeout", "REQUEST_TIMEOUT",
                    f"the request headers did not arrive within {header_timeout:g} s")
            self.transport.close()

        def _answer_and_close(self, status: int, reason: bytes, code: str, message: str):
            """One JSON error answer (counted as rejected), then the connection closes."""
            body = orjson.dumps({"error_code": code, "message": message})
            if (m := _metrics.current()) is not None:
                m.rejected(status)
            self.transport.write(
                b"HTTP/1.1 " + str(status).encode() + b" " + reason + b"\r\n"
                b"content-type: application/json\r\nconnection: close\r\n"
                b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
            )
            self.transport.close()

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
                self._answer_and_close(431, b"Request Header Fields Too Large",
                                       "REQUEST_HEADER_FIELDS_TOO_LARGE", why)
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
            # from the opening: a connection that never sends a byte is closed too
            self._header_timer = self.loop.call_later(header_timeout, self._headers_late)

        def connection_lost(self, exc):
            self._stop_header_timer()
            super().connection_lost(exc)

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


class PortInUse(OSError):
    """Another process holds the port (named when /proc tells which)."""

    def __init__(self, host: str, port: int):
        holder = port_holder(host, port)
        super().__init__(errno.EADDRINUSE,
                         f"address already in use{f' by {holder}' if holder else ''}")


def claim_port(host: str, port: int, workers: int = 1) -> list[socket.socket]:
    """Listening sockets on ``host:port``, one per worker, that no other process shares.

    One worker gets a plain socket. Several get one ``SO_REUSEPORT`` socket each (the kernel
    spreads connections over them), but any process of the same user could join those, so the
    port is first bound without ``SO_REUSEPORT``, which fails if anything holds it; and since
    another server could claim it between that probe and the binds, the listening sockets on
    it are then checked to be these only.

    Raises:
        PortInUse: the port is taken.
        OSError: the address cannot be bound for another reason.
    """
    try:
        probe = bind_socket(host, port, reuse_port=False, listen=workers <= 1)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(host, port) from None
        raise
    if workers <= 1:
        return [probe]
    probe.close()
    socks: list[socket.socket] = []
    try:
        for _ in range(workers):
            socks.append(bind_socket(host, port, reuse_port=True))
        ours = {os.fstat(sock.fileno()).st_ino for sock in socks}
        shared = bool(set(_listeners(socks[0].getsockname()[0], port)) - ours)
    except OSError as exc:
        shared = exc.errno == errno.EADDRINUSE
        if not shared:
            for sock in socks:
                sock.close()
            raise
    if shared:
        for sock in socks:  # first: the holder named is the other server
            sock.close()
        raise PortInUse(host, port)
    return socks


def port_holder(host: str, port: int) -> str | None:
    """``process PID (command line)`` of a process listening on the port, if /proc tells.

    The lowest such pid: a server's main process before its workers.
    """
    try:
        address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][4][0]
    except OSError:
        address = host
    wanted = {f"socket:[{inode}]" for inode in _listeners(address, port)}
    if not wanted:
        return None
    pids = sorted(int(d.name) for d in Path("/proc").iterdir() if d.name.isdigit())
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if not any(_readlink(f"/proc/{pid}/fd/{fd}") in wanted for fd in fds):
                continue
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:  # gone, or another user's
            continue
        command = command.decode(errors="replace").strip()
        return f"process {pid} ({command[:120]}{'...' if len(command) > 120 else ''})"
    return None


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


def _listeners(address: str, port: int) -> list[int]:
    """Inodes of the sockets listening on ``port`` at ``address`` or a wildcard (Linux)."""
    found = []
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:  # not Linux: no check
            continue
        for line in lines:
            # sl local_address rem_address st ... inode: "0A" is LISTEN; addresses are hex
            fields = line.split()
            local, state, inode = fields[1], fields[3], int(fields[9])
            hex_addr, hex_port = local.rsplit(":", 1)
            if state != "0A" or int(hex_port, 16) != port:
                continue
            raw = bytes.fromhex(hex_addr)  # 32-bit words, each in the host's byte order
            if sys.byteorder == "little":
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            listening = socket.inet_ntop(family, raw)
            if listening in (address, "0.0.0.0", "::") or address in ("0.0.0.0", "::"):
                found.append(inode)
    return found


def build_app(cfg: ServeConfig, client):
    """Resolve and load the model, start following its alias, and return the ASGI app."""
    from core.models import resolve_model
    from core.uris import parse_model_ref
    from serving.online.app import ModelHolder, ScoringApp, Served
    from serving.online.container import local_model
    from serving.online.follow import AliasFollower
    from serving.online.model import load_scorer

    ref = None
    info = local_model(cfg.model)  # a model folder: the container's (serving.online.container)
    if info is None:
        ref = parse_model_ref(cfg.model)
        info = resolve_model(client, ref)
    holder = ModelHolder(Served(info, load_scorer(info.uri)))
    follower = None
    if ref is not None and ref.alias and not cfg.pin:
        from serving.online.follow import signal_path

        follower = AliasFollower(client, ref, holder, poll_seconds=cfg.poll_seconds,
                                 signal=signal_path(cfg.port)).start()
    capture = None
    if cfg.capture:
        from serving.online.capture import CaptureWriter

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
        if cfg.start_shadow is None:
            raise UsageError("--shadow: no shadow starter given (ServeConfig.start_shadow)")
        shadow = cfg.start_shadow(client, info, cfg.shadow, sample=cfg.shadow_sample,
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
        from serving.online import webhooks as hooks

        seen = hooks.SeenDeliveries(hooks.shared_seen_path(cfg.port))  # shared by the workers
        verifier = hooks.Verifier(hooks.secret_from_env(), cfg.webhook_insecure, seen)
        app = hooks.WebhookApp(app, follower.on_event, verifier)
    return app


def run_worker(cfg: ServeConfig, sock: socket.socket) -> None:
    """One serving process: load the model, then serve on ``sock`` until SIGTERM/SIGINT.

    ``sock`` listens already (the port is the server's from its start, see
    :func:`claim_port`): connections made while the model loads wait for it. Stopping, the
    worker finishes the requests in flight, then closes the shadow process (which logs its
    run), then exits.
    """
    import uvicorn

    from core.connection import connect
    from serving.online.logs import configure_logging

    # Until uvicorn takes the signals over, a SIGTERM exits through Python, so a shadow process
    # already started is told to finish (serving.shadow.process.ShadowProcess) rather than
    # left behind.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
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
    config = uvicorn.Config(
        app,
        loop="uvloop",
        http=_nodelay_protocol(cfg.header_timeout),
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
    _uvicorn_server(config, _scoring_app(app).stopping).run(sockets=[sock])


def _scoring_app(app):
    """The :class:`serving.online.app.ScoringApp` inside ``app`` (a webhook receiver wraps it)."""
    from serving.online.app import ScoringApp

    while not isinstance(app, ScoringApp):
        app = app.app
    return app


def _uvicorn_server(config, on_stop):
    """The uvicorn server, calling ``on_stop`` when SIGTERM or SIGINT comes.

    uvicorn tells the app (lifespan shutdown) only once the requests in flight have been
    answered; what can start winding down sooner (the shadow) is told at the signal.
    """
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):
            on_stop()
            super().handle_exit(sig, frame)

    return Server(config)


def serve(cfg: ServeConfig) -> int:
    """Serve with ``cfg.workers`` processes; return the exit code.

    One worker runs in this process. Several are spawned and supervised: a worker that dies is
    restarted; repeated failed starts stop the server.
    """
    # Every worker's counts in one directory for this run, removed when the server stops.
    metrics_dir = _metrics.prepare_dir() if cfg.metrics else None
    previous = signal.getsignal(signal.SIGTERM)
    try:
        return _serve(cfg)
    except _Stopped:
        # uvicorn re-raises the SIGTERM that stopped it once it has shut down: one worker in
        # this process comes here (run_worker's handler) instead of dying, and the directory
        # goes too
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        _metrics.remove_dir(metrics_dir)


class _Stopped(SystemExit):
    """SIGTERM: the process stops, in order (the finally blocks and exit handlers run)."""


def _exit_on_sigterm(signum, frame):
    raise _Stopped(0)


def exit_now(code: int) -> NoReturn:
    """End the process with ``code`` once its exit handlers have run, skipping the teardown.

    Python's teardown frees the objects of mlflow, scikit-learn and pandas one by one: seconds
    on a busy machine, after the server has stopped and before its supervisor sees it exit.
    """
    atexit._run_exitfuncs()  # noqa: SLF001 - what a normal exit runs first (logging's flush)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _serve(cfg: ServeConfig) -> int:
    socks = claim_port(cfg.host, cfg.port, cfg.workers)  # before any model loads
    if cfg.workers <= 1:
        run_worker(cfg, socks[0])
        return 0
    # Workers fork from a fork server that imported the heavy modules once (not N times), and
    # holds no registry connection or thread of this process.
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(list(_PRELOAD))
    stopping = False

    def _stop(signum, frame):
        nonlocal stopping
        stopping = True

    previous = {s: signal.signal(s, _stop) for s in (signal.SIGTERM, signal.SIGINT)}
    workers: dict[int, _Worker] = {}
    fast_failures = 0

    def _start(slot: int):
        proc = ctx.Process(target=run_worker, args=(cfg, socks[slot]),
                           name=f"serving-worker-{slot}")
        proc.start()
        workers[slot] = _Worker(proc)

    try:
        for slot in range(cfg.workers):
            _start(slot)
        while not stopping:
            time.sleep(0.2)
            for slot, worker in list(workers.items()):
                if worker.alive() or stopping:
                    continue
                worker.close()
                _metrics.mark_dead(worker.pid)  # its in-flight count and version gauge go
                fast = time.monotonic() - worker.started < FAST_FAILURE_SECONDS
                fast_failures = fast_failures + 1 if fast else 0
                _logger.error("worker exited; restarting",
                              extra={"pid": worker.pid, "exitcode": worker.proc.exitcode})
                if fast_failures >= MAX_FAST_FAILURES:
                    _logger.error("workers keep failing to start; stopping")
                    return 1
                _start(slot)
        return 0
    finally:
        # New connections are refused from here on (the workers' copies close as they stop);
        # the workers finish the requests they have, then their shadow processes, then exit.
        for sock in socks:
            sock.close()
        _stop_workers(list(workers.values()), cfg.body_timeout + cfg.timeout + STOP_MARGIN_SECONDS)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _Worker:
    """A worker process, watched through a pidfd (Linux) rather than through the fork server.

    The fork server reports its children's exits; when SIGTERM reaches the whole process group
    (as systemd sends it) the fork server dies at once, and every worker then looks finished
    while it is still shutting down.
    """

    def __init__(self, proc):
        self.proc = proc
        self.pid = proc.pid
        self.started = time.monotonic()
        try:
            self._fd = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):  # not Linux 5.3+: ask the fork server
            self._fd = None

    def alive(self, wait: float = 0.0) -> bool:
        """Whether the process is still running (waiting up to ``wait`` seconds for its end)."""
        if self._fd is None:
            self.proc.join(wait)
            return self.proc.is_alive()
        return not select.select([self._fd], [], [], wait)[0]

    def send(self, signum: int) -> None:
        """Send ``signum`` unless the process has ended."""
        try:
            if self._fd is not None:
                signal.pidfd_send_signal(self._fd, signum)
            elif self.proc.is_alive():
                os.kill(self.pid, signum)
        except ProcessLookupError:  # ended meanwhile
            pass

    def close(self) -> None:
        """Release the pidfd."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _stop_workers(workers: list[_Worker], timeout: float) -> None:
    """SIGTERM the workers, wait for them to end (at most ``timeout`` s), then kill the rest."""
    for worker in workers:
        worker.send(signal.SIGTERM)  # again if the whole group got it: uvicorn takes both
    deadline = time.monotonic() + timeout
    for worker in workers:
        if worker.alive(max(0.0, deadline - time.monotonic())):
            _logger.error("worker did not stop in time; killing it", extra={"pid": worker.pid})
            worker.send(signal.SIGKILL)
            worker.alive(5.0)
        worker.close()
