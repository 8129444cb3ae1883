"""The scoring server's own health, in the Prometheus text format (``GET /metrics``).

Every metric is defined here, once, with the official ``prometheus_client``. The server runs
several worker processes; each writes its counts to memory-mapped files in a directory the
server creates for the run (``PROMETHEUS_MULTIPROC_DIR``, removed when the server stops), and
``/metrics``, answered by whichever worker gets the scrape, adds up every worker's files. A
worker that dies is marked dead (:func:`mark_dead`) so its gauges stop counting; its counters
stay, as a restarted process's counts should.

The request path pays a few memory writes per request: label children are bound once here
(:class:`ServingMetrics`), so answering a request builds no dict and looks up no label.

``prometheus_client`` chooses its multi-process mode when first imported, so it is imported
only once the directory is in the environment (:func:`enable`), never at module import.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from bisect import bisect_left
from functools import partial
from threading import get_ident

ENV_DIR = "PROMETHEUS_MULTIPROC_DIR"
DIR_PREFIX = "mlops-serving-metrics-"  # then the server's pid
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "mlops_serving_"
# The event loop's counts reach the shared files at most this many seconds after the fact.
FLUSH_SECONDS = 1.0

# Seconds: from half a millisecond (the fast path) to the default scoring timeout.
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
# an /invocations body's format (json, csv, other), or an Open Inference Protocol (V2) inference
FORMATS = ("json", "csv", "other", "v2")
_V2 = FORMATS.index("v2")
# The answers that refuse a request before or instead of scoring it (status code as reason).
REJECTIONS = (400, 404, 405, 408, 413, 415, 431, 503)
SCORING_PATHS = ("fast", "pyfunc")

_active: ServingMetrics | None = None


def prepare_dir() -> str | None:
    """Create this run's metrics directory and put it in the environment; return it.

    In ``/dev/shm`` when there is one (unless ``$TMPDIR`` says where), else the temporary
    folder; named after the server's pid, so a later server removes it if this one is killed
    before it can (SIGKILL). Returns None when ``PROMETHEUS_MULTIPROC_DIR`` is already set:
    the operator's directory is used as it is and left in place.
    """
    if os.environ.get(ENV_DIR):
        return None
    # memory, not disk, when the machine has it: the workers write these files constantly
    shm = "/dev/shm"
    where = shm if os.path.isdir(shm) and os.access(shm, os.W_OK) and "TMPDIR" not in os.environ \
        else None
    parent = where or tempfile.gettempdir()
    _remove_orphans(parent)
    path = tempfile.mkdtemp(prefix=f"{DIR_PREFIX}{os.getpid()}-", dir=parent)
    os.environ[ENV_DIR] = path
    return path


def _remove_orphans(parent: str) -> None:
    """Remove the folders of runs whose server was killed before it could (its pid is gone)."""
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        if not name.startswith(DIR_PREFIX):
            continue
        pid = name[len(DIR_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's server
        pass
    return True


def remove_dir(path: str | None) -> None:
    """Remove a directory made by :func:`prepare_dir` (None: nothing to do)."""
    if path:
        shutil.rmtree(path, ignore_errors=True)
        if os.environ.get(ENV_DIR) == path:
            del os.environ[ENV_DIR]


def mark_dead(pid: int) -> None:
    """Stop counting a dead worker's live gauges (in-flight requests, the served version)."""
    if os.environ.get(ENV_DIR):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


def enable() -> ServingMetrics:
    """Create this process's metrics (once) and make them the ones the server records to."""
    global _active
    if _active is None:
        _active = ServingMetrics()
    return _active


def current() -> ServingMetrics | None:
    """The metrics of this process, or None when metrics are off (``--no-metrics``)."""
    return _active


def render() -> bytes:
    """The exposition of every worker of this run (or of this process when single)."""
    from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, values

    # multi-process only when the values were made so (prometheus_client imported after the
    # folder was set): else this process's registry holds them
    if os.environ.get(ENV_DIR) and getattr(values.ValueClass, "_multiprocess", False):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(_active.registry if _active is not None else REGISTRY)


def input_format(content_type: str | None) -> str:
    """``json``, ``csv`` or ``other``, from a request's content type."""
    if not content_type:
        return "other"
    mime = content_type.split(";", 1)[0].strip().lower()
    if mime == "application/json":
        return "json"
    if mime == "text/csv":
        return "csv"
    return "other"


class _Histogram:
    """Observations kept in plain numbers until :meth:`ServingMetrics.flush` adds them up."""

    __slots__ = ("bounds", "counts", "total", "target")

    def __init__(self, target, bounds: tuple) -> None:
        self.target = target
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last: above every bound (+Inf)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def flush(self) -> None:
        """Add what was observed since the last flush to the Prometheus histogram."""
        if not any(self.counts):
            return
        # prometheus_client keeps one value per bucket (made cumulative when exposed) and the
        # sum; adding to them is what observe() does once per observation.
        buckets = self.target._buckets
        for i, n in enumerate(self.counts):
            if n:
                buckets[i].inc(n)
                self.counts[i] = 0
        self.target._sum.inc(self.total)
        self.total = 0.0


class ServingMetrics:
    """The scoring server's metrics, cheap on the request path.

    What the event loop counts (every request, micro-batches, the fast path on the loop) is
    kept in plain numbers and added to the Prometheus metrics at most ``FLUSH_SECONDS`` later
    (and at once before this worker answers ``/metrics``): a request costs a few additions,
    not a dozen locked writes to the shared files. What other threads count (the scoring pool,
    the follower's swaps, --shadow, --capture) goes to Prometheus directly.

    Gauges in multi-process mode: ``livesum`` for requests in flight (the sum over live
    workers), ``livemax`` for the served version (1 while any live worker serves it).
    """

    def __init__(self, registry=None) -> None:
        import prometheus_client as pc

        p = PREFIX
        self.registry = registry = pc.REGISTRY if registry is None else registry
        Counter = partial(pc.Counter, registry=registry)  # noqa: N806 - the class it binds
        Gauge = partial(pc.Gauge, registry=registry)  # noqa: N806
        Histogram = partial(pc.Histogram, registry=registry)  # noqa: N806
        requests = Counter(
            p + "requests", "Scoring requests (/invocations, V2 infer) answered, by status "
            "class and input format (v2: the Open Inference Protocol).", ("status_class", "format"))
        # index: status class (0-4) * len(FORMATS) + format
        self._requests = [requests.labels(c, f) for c in STATUS_CLASSES for f in FORMATS]
        self._request_seconds = Histogram(
            p + "request_seconds", "Seconds from a scoring request's arrival to its answer.",
            buckets=LATENCY_BUCKETS)
        self._scoring_seconds = Histogram(
            p + "scoring_seconds", "Seconds spent scoring (parse, predict, serialize) the "
            "requests answered 200.", buckets=LATENCY_BUCKETS)
        self._bytes_in = Counter(p + "request_bytes", "Bytes of scoring request bodies read.")
        self._rows = Counter(p + "rows_scored", "Rows predicted for answered requests.")
        self._in_flight = Gauge(
            p + "requests_in_flight", "Scoring requests being answered now.",
            multiprocess_mode="livesum")
        rejected = Counter(
            p + "rejected_requests", "Scoring requests refused, by status code.", ("reason",))
        self._rejected_family = rejected
        self._rejected = {code: rejected.labels(str(code)) for code in REJECTIONS}
        paths = Counter(
            p + "scored_requests", "Requests scored, by path: the fast path or mlflow pyfunc.",
            ("path",))
        self._fast = paths.labels("fast")
        self._pyfunc = paths.labels("pyfunc")
        batch_requests = Histogram(
            p + "microbatch_requests", "Requests predicted together in one micro-batch.",
            buckets=BATCH_BUCKETS)
        batch_rows = Histogram(
            p + "microbatch_rows", "Rows predicted together in one micro-batch.",
            buckets=BATCH_BUCKETS)
        self._swaps = Counter(p + "model_swaps", "Model versions swapped in while serving.")
        self._info = Gauge(
            p + "model_info", "1 for the model version served now (0 for one served before).",
            ("model_name", "model_version", "alias"), multiprocess_mode="livemax")
        self._info_child = None
        self._shadowed = Counter(
            p + "shadow_requests", "Requests also scored by the --shadow challenger.")
        self._shadow_dropped = Counter(
            p + "shadow_dropped", "Sampled requests not shadowed (the challenger's queue full).")
        self._shadow_rows = Counter(p + "shadow_rows", "Rows compared with the challenger.")
        self._shadow_agreed = Counter(
            p + "shadow_agreed_rows", "Rows on which the challenger agreed with the champion.")
        self._captured = Counter(p + "capture_lines", "Request lines written by --capture.")
        dropped = Counter(
            p + "capture_dropped", "Request lines --capture did not write, by reason.",
            ("reason",))
        self._capture_queue_full = dropped.labels("queue_full")
        self._capture_size_limit = dropped.labels("size_limit")
        self._perf = time.perf_counter
        # --- kept by the event loop's thread until flushed ---
        self._loop_thread: int | None = None
        self._flush_at: float | None = None  # when a flush is scheduled (None: none)
        self._n_requests = [0] * len(self._requests)
        self._n_rejected = dict.fromkeys(REJECTIONS, 0)
        self._n_bytes = 0
        self._n_rows = 0
        self._n_fast = 0
        self._n_pyfunc = 0
        self._in_flight_now = 0
        self._in_flight_seen = 0
        self._h_request = _Histogram(self._request_seconds, LATENCY_BUCKETS)
        self._h_scoring = _Histogram(self._scoring_seconds, LATENCY_BUCKETS)
        self._h_batch_requests = _Histogram(batch_requests, BATCH_BUCKETS)
        self._h_batch_rows = _Histogram(batch_rows, BATCH_BUCKETS)
        self._formats: dict[str | None, int] = {}

    # the request path (the event loop's thread) ----------------------------------------------

    def started(self) -> float:
        """A scoring request arrived: count it in flight; return the clock to time it by."""
        self._in_flight_now += 1
        if self._flush_at is None:
            self._schedule()
        return self._perf()

    def answered(self, status: int, content_type: str | None, started: float, nbytes: int,
                 v2: bool = False) -> None:
        """A scoring request was answered with ``status`` (``v2``: a V2 inference request)."""
        self._in_flight_now -= 1
        self._h_request.observe(self._perf() - started)
        if v2:
            fmt = _V2
        elif (fmt := self._formats.get(content_type)) is None:
            fmt = FORMATS.index(input_format(content_type))
            if len(self._formats) < 64:  # content types a client sends: a handful
                self._formats[content_type] = fmt
        self._n_requests[(status // 100 - 1) * len(FORMATS) + fmt] += 1
        self._n_bytes += nbytes
        if status >= 400 and status in self._n_rejected:
            self._n_rejected[status] += 1

    def scored(self, seconds: float) -> None:
        """Time spent scoring one request answered 200."""
        self._h_scoring.observe(seconds)

    def batch(self, requests: int, rows: int) -> None:
        """One micro-batch predicted ``requests`` requests' ``rows`` rows in one call."""
        self._h_batch_requests.observe(requests)
        self._h_batch_rows.observe(rows)

    def fast(self, rows: int) -> None:
        """The fast path answered ``rows`` rows (on the loop, or in the scoring pool)."""
        if get_ident() == self._loop_thread:
            self._n_fast += 1
            self._n_rows += rows
        else:
            self._fast.inc()
            self._rows.inc(rows)

    def pyfunc(self, rows: int | None) -> None:
        """The pyfunc path (mlflow's own scoring) answered (``rows`` when known)."""
        if get_ident() == self._loop_thread:
            self._n_pyfunc += 1
            self._n_rows += rows or 0
        else:
            self._pyfunc.inc()
            if rows:
                self._rows.inc(rows)

    def _schedule(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not on an event loop (a direct call): flushed by scrape()
            self._flush_at = 0.0
            return
        self._loop_thread = get_ident()
        self._flush_at = loop.time() + FLUSH_SECONDS
        loop.call_at(self._flush_at, self.flush)

    def flush(self) -> None:
        """Add what the event loop counted since the last flush to the Prometheus metrics.

        Runs on the event loop's thread (scheduled by the first request after a flush, and
        before this worker answers ``/metrics``).
        """
        self._flush_at = None
        for i, n in enumerate(self._n_requests):
            if n:
                self._requests[i].inc(n)
                self._n_requests[i] = 0
        for code, n in self._n_rejected.items():
            if n:
                self._rejected[code].inc(n)
                self._n_rejected[code] = 0
        if self._n_bytes:
            self._bytes_in.inc(self._n_bytes)
            self._n_bytes = 0
        if self._n_rows:
            self._rows.inc(self._n_rows)
            self._n_rows = 0
        if self._n_fast:
            self._fast.inc(self._n_fast)
            self._n_fast = 0
        if self._n_pyfunc:
            self._pyfunc.inc(self._n_pyfunc)
            self._n_pyfunc = 0
        if self._in_flight_now != self._in_flight_seen:
            self._in_flight.set(self._in_flight_now)
            self._in_flight_seen = self._in_flight_now
        if self._in_flight_now and self._flush_at is None:  # requests still running: look again
            self._schedule()
        for h in (self._h_request, self._h_scoring, self._h_batch_requests, self._h_batch_rows):
            h.flush()

    # rare events, any thread: straight to Prometheus -----------------------------------------

    def rejected(self, status: int) -> None:
        """A request refused before it reached the app (431: headers too large)."""
        child = self._rejected.get(status)
        (child if child is not None else self._rejected_family.labels(str(status))).inc()

    def serving(self, name: str | None, version: str | None, alias: str | None,
                swapped: bool = False) -> None:
        """The version now served (``swapped``: replacing another while serving)."""
        if self._info_child is not None:
            self._info_child.set(0)
        self._info_child = self._info.labels(name or "", version or "", alias or "")
        self._info_child.set(1)
        if swapped:
            self._swaps.inc()

    def shadowed(self, rows: int, agreed: int) -> None:
        """The challenger scored a request: ``agreed`` of its ``rows`` rows agreed."""
        self._shadowed.inc()
        self._shadow_rows.inc(rows)
        self._shadow_agreed.inc(agreed)

    def shadow_dropped(self) -> None:
        """A sampled request was not shadowed."""
        self._shadow_dropped.inc()

    def captured(self) -> None:
        """--capture wrote a request line."""
        self._captured.inc()

    def capture_dropped(self, reason: str) -> None:
        """--capture dropped a line (``queue_full`` or ``size_limit``)."""
        (self._capture_queue_full if reason == "queue_full" else self._capture_size_limit).inc()


async def scrape() -> bytes:
    """``GET /metrics``: every worker's counts (this worker's flushed first).

    The files are read off the event loop.
    """
    if _active is not None:
        _active.flush()
    return await asyncio.to_thread(render)


def rows_in_answer(answer: str | bytes) -> int | None:
    """The rows of a scoring answer (``{"predictions": [...]}``), or None when not a list."""
    import orjson

    try:
        doc = orjson.loads(answer)
    except orjson.JSONDecodeError:
        return None
    predictions = doc.get("predictions") if isinstance(doc, dict) else doc
    return len(predictions) if isinstance(predictions, list) else None


# Off the request path (background threads of --shadow and --capture): no-ops when metrics are
# off, so their modules need not know whether they are on.


def shadowed(rows: int, agreed: int) -> None:
    """The challenger scored a request (see :meth:`ServingMetrics.shadowed`)."""
    if _active is not None:
        _active.shadowed(rows, agreed)


def shadow_dropped() -> None:
    """A sampled request was not shadowed."""
    if _active is not None:
        _active.shadow_dropped()


def captured() -> None:
    """--capture wrote a request line."""
    if _active is not None:
        _active.captured()


def capture_dropped(reason: str) -> None:
    """--capture dropped a line: ``queue_full`` or ``size_limit``."""
    if _active is not None:
        _active.capture_dropped(reason)
