"""Shadow traffic: a sample of live requests also scored by the challenger, off the request path.

``python -m serving serve NAME@champion --shadow NAME@challenger --shadow-sample 0.1``: the
champion answers every request as before; for a sampled request, once its answer has been
sent, the request body and the champion's answer go on a bounded queue to a process of its own
(at a lower CPU priority: it competes with the champion for the cores, never for its GIL),
which scores the body with the challenger and compares the two answers row by row:

* classification (the champion version's ``mlops.task`` tag, else labels that are not
  fractional numbers): a row agrees when both labels are equal; a row that differs counts
  as a flip of the champion's class (``shadow.flips.<class>``);
* regression: a row agrees when the challenger is within ``tolerance`` of the champion,
  relative to the champion's value.

Every minute and at shutdown the totals go to an MLflow run in the challenger's experiment,
tagged with the model and both versions (names in :mod:`core.shadow`), and linked from the
challenger version (tag ``mlops.shadow.run_id``): ``shadow.requests``, ``shadow.rows``,
``shadow.agreement``, the flips, and p50/p95 latency of both models. The registry's policy
gates on them (``shadow.min_agreement``, ``shadow.min_requests``).

The request path pays one random draw per request (in :class:`serving.app.ScoringApp`, once the
answer is sent); a sampled request also writes its body, as received, and the champion's
answer, as sent, to a non-blocking pipe in one ``writev`` call (a few microseconds): no
decoding, no pickling, no thread to wake in the serving process. A full pipe drops the sample
(counted as ``shadow.dropped``) instead of slowing the champion. The shadow process does all
the parsing, scoring and comparing; it still uses the same CPU: ``benchmarks/bench_shadow.py``
measures what that costs.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import queue
import random
import re
import signal
import socket
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import orjson

from core import shadow as names
from serving import metrics as _metrics

_logger = logging.getLogger(__name__)

DEFAULT_SAMPLE = 0.1
DEFAULT_TOLERANCE = 0.01
DEFAULT_INTERVAL_SECONDS = 60.0
QUEUE_SIZE = 1000
# Once the server stops, queued samples are scored for this many seconds more; the rest are
# counted as dropped, so the shadow's totals are logged within the server's shutdown.
STOP_SCORING_SECONDS = 1.0
# Latencies kept for the percentiles (a reservoir: memory stays flat on a long run).
RESERVOIR = 10_000


def predictions(payload: bytes) -> list:
    """The predictions of a scoring answer (``{"predictions": [...]}`` or a bare list)."""
    doc = orjson.loads(payload)
    if isinstance(doc, dict):
        doc = doc.get("predictions", doc)
    if isinstance(doc, dict):  # one list per output column: rows as tuples
        doc = list(zip(*doc.values(), strict=False))
    return list(doc) if isinstance(doc, list) else [doc]


def infer_task(values: list) -> str:
    """``regression`` for fractional numbers, else ``classification``."""
    for value in values:
        if isinstance(value, float) and not (math.isnan(value) or value.is_integer()):
            return "regression"
    return "classification"


def _label(value) -> str:
    """A class label as part of a metric name (letters, digits, ``_ . / -`` and spaces)."""
    text = str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
    return re.sub(r"[^\w./ -]", "_", text)[:100] or "_"


@dataclass
class Totals:
    """What the shadow saw so far (the run's metrics are these, cumulative)."""

    requests: int = 0
    rows: int = 0
    agreed: int = 0
    errors: int = 0
    dropped: int = 0
    flips: Counter = field(default_factory=Counter)
    champion_ms: list[float] = field(default_factory=list)
    challenger_ms: list[float] = field(default_factory=list)
    seen: int = 0

    def latency(self, champion_ms: float, challenger_ms: float) -> None:
        """Keep both latencies (reservoir sampling past :data:`RESERVOIR`)."""
        self.seen += 1
        if len(self.champion_ms) < RESERVOIR:
            self.champion_ms.append(champion_ms)
            self.challenger_ms.append(challenger_ms)
            return
        slot = random.randrange(self.seen)
        if slot < RESERVOIR:
            self.champion_ms[slot] = champion_ms
            self.challenger_ms[slot] = challenger_ms

    def metrics(self) -> dict[str, float]:
        """The run's metrics now."""
        out = {
            names.REQUESTS: float(self.requests),
            names.ROWS: float(self.rows),
            names.ERRORS: float(self.errors),
            names.DROPPED: float(self.dropped),
        }
        if self.rows:
            out[names.AGREEMENT] = self.agreed / self.rows
        for label, count in self.flips.items():
            out[names.FLIPS_PREFIX + label] = float(count)
        if self.champion_ms:
            champion, challenger = np.array(self.champion_ms), np.array(self.challenger_ms)
            out[names.LATENCY_CHAMPION_P50] = float(np.percentile(champion, 50))
            out[names.LATENCY_CHAMPION_P95] = float(np.percentile(champion, 95))
            out[names.LATENCY_CHALLENGER_P50] = float(np.percentile(challenger, 50))
            out[names.LATENCY_CHALLENGER_P95] = float(np.percentile(challenger, 95))
        return out


class _Hook:
    """The request path's side of a shadow: the sampling draw and the hand-off, never blocking.

    :class:`serving.app.ScoringApp` calls :meth:`offer` once an answer has been sent.
    """

    sample: float
    champion_version: str

    def sampled(self) -> bool:
        """Whether this request is shadowed (one random draw)."""
        return self.sample > 0 and (self.sample >= 1 or random.random() < self.sample)

    def offer(self, version: str | None, body: bytes, content_type: str | None, answer: bytes,
              champion_seconds: float) -> None:
        """Shadow a sample of the champion's answers.

        An answer by another version (the alias moved) is not this comparison.
        """
        if self.sampled() and version == self.champion_version:
            self.record(body, content_type, answer, champion_seconds)

    def record(self, body: bytes, content_type: str | None, answer: bytes,
               champion_seconds: float) -> None:
        """Hand a sampled request whose answer has been sent to the challenger, or drop it."""
        if not self._put(body, content_type, answer, champion_seconds):
            self._dropped()
            _metrics.shadow_dropped()

    def _put(self, body, content_type, answer, champion_seconds) -> bool:
        raise NotImplementedError

    def _dropped(self) -> None:
        raise NotImplementedError


class Shadow(_Hook):
    """Scores queued samples with the challenger (:meth:`work`); logs the totals.

    It runs in the shadow process (:class:`ShadowProcess`, whose reader feeds its queue); the
    tests drive it in their own process.

    Args:
        score: the challenger's ``score(body, content_type) -> bytes``.
        client: ``MlflowClient`` the run is logged with (None: nothing is logged).
        name: registered model.
        champion_version, challenger_version: the versions compared.
        task: ``classification``, ``regression`` or None (inferred from the answers).
        sample: share of requests shadowed (0-1).
        tolerance: relative tolerance of a regression row.
        interval: seconds between logs of the totals.
    """

    def __init__(self, score: Callable[[bytes, str | None], bytes], client, *, name: str,
                 champion_version: str, challenger_version: str, task: str | None = None,
                 sample: float = DEFAULT_SAMPLE, tolerance: float = DEFAULT_TOLERANCE,
                 interval: float = DEFAULT_INTERVAL_SECONDS):
        if not 0 <= sample <= 1:
            raise ValueError(f"shadow sample {sample}: use 0 to 1")
        self._score = score
        self._client = client
        self.name = name
        self.champion_version = str(champion_version)
        self.challenger_version = str(challenger_version)
        self.task = task
        self.sample = sample
        self.tolerance = tolerance
        self.interval = interval
        self.totals = Totals()
        self.run_id: str | None = None
        self.queue: queue.Queue = queue.Queue(QUEUE_SIZE)
        self._lock = threading.Lock()
        self._step = 0
        self._score_until: float | None = None  # set when the server stops

    def stop(self, since: float | None = None) -> None:
        """The server stops: score for :data:`STOP_SCORING_SECONDS` more, drop the rest.

        :meth:`work` still runs until the worker's close or its end of file (the requests in
        flight may add samples; they are counted).
        """
        if self._score_until is None:
            self._score_until = (since or time.monotonic()) + STOP_SCORING_SECONDS

    def _put(self, body, content_type, answer, champion_seconds) -> bool:
        try:
            self.queue.put_nowait((body, content_type, answer, champion_seconds))
        except queue.Full:
            return False
        return True

    def _dropped(self, count: int = 1) -> None:
        with self._lock:
            self.totals.dropped += count

    # ------------------------------------------------------------------ background
    def work(self) -> None:
        """Score queued samples until ``None`` or ``("close", dropped)``; log every interval."""
        next_log = time.monotonic() + self.interval
        while True:
            timeout = max(0.0, next_log - time.monotonic())
            try:
                item = self.queue.get(timeout=timeout)
            except queue.Empty:
                item = ()
            if item is None:
                return
            if item and item[0] == "close":  # the serving worker's count of dropped samples
                self._dropped(int(item[1]))
                return
            if item and self._score_until is not None and time.monotonic() > self._score_until:
                self._dropped()  # the server is stopping: counted, not scored
            elif item:
                try:
                    self.compare(*item)
                except Exception:  # a bug here must not end the shadow (or the server)
                    _logger.exception("shadow comparison failed")
            if time.monotonic() >= next_log:
                self.log()
                next_log = time.monotonic() + self.interval

    def compare(self, body: bytes, content_type: str | None, answer: bytes,
                champion_seconds: float) -> None:
        """Score ``body`` with the challenger and add the comparison to the totals."""
        start = time.perf_counter()
        try:
            challenger = predictions(self._score(body, content_type))
        except Exception as exc:  # noqa: BLE001 - a challenger's failure is a finding
            _logger.debug("challenger failed: %s", exc)
            with self._lock:
                self.totals.errors += 1
            return
        seconds = time.perf_counter() - start
        champion = predictions(answer)
        task = self.task or infer_task(champion)
        agreed, flips = 0, Counter()
        for a, b in zip(champion, challenger, strict=False):
            if task == "regression":
                same = _close(a, b, self.tolerance)
            else:
                same = a == b
            if same:
                agreed += 1
            elif task != "regression":
                flips[_label(a)] += 1
        rows = max(len(champion), len(challenger))
        with self._lock:
            t = self.totals
            t.requests += 1
            t.rows += rows
            t.agreed += agreed
            t.flips.update(flips)
            t.latency(champion_seconds * 1000, seconds * 1000)
        _metrics.shadowed(rows, agreed)

    def log(self) -> None:
        """Log the totals on the shadow run (created on the first call)."""
        if self._client is None:
            return
        with self._lock:
            metrics = self.totals.metrics()
        try:
            if self.run_id is None:
                self.run_id = self._create_run()
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            self._client.log_batch(self.run_id, metrics=[
                Metric(key, value, now, self._step) for key, value in metrics.items()])
            self._step += 1
        except Exception as exc:  # noqa: BLE001 - the champion keeps serving whatever happens
            _logger.warning("shadow metrics not logged: %s", exc)

    def _create_run(self) -> str:
        client = self._client
        mv = client.get_model_version(self.name, self.challenger_version)
        experiment = client.get_run(mv.run_id).info.experiment_id if mv.run_id else "0"
        run = client.create_run(
            experiment,
            run_name=f"shadow · {self.name} v{self.challenger_version} vs "
                     f"v{self.champion_version}",
            tags={
                names.TAG_KIND: names.KIND,
                names.TAG_MODEL: self.name,
                names.TAG_CHAMPION_VERSION: self.champion_version,
                names.TAG_CHALLENGER_VERSION: self.challenger_version,
                names.TAG_TASK: self.task or "inferred",
                names.TAG_TOLERANCE: str(self.tolerance),
                "mlops.host": socket.gethostname(),
                "mlops.pid": str(os.getpid()),
                "mlflow.note.content": (
                    f"Live requests answered by {self.name} version {self.champion_version}, "
                    f"also scored by version {self.challenger_version} (sample "
                    f"{self.sample:g}); metrics are totals so far."),
            },
        )
        try:  # linked from the challenger version (a read-only user cannot: not fatal)
            client.set_model_version_tag(self.name, self.challenger_version,
                                         names.TAG_VERSION_RUN, run.info.run_id)
        except Exception as exc:  # noqa: BLE001
            _logger.warning("shadow run not linked from the version: %s", exc)
        return run.info.run_id

    def finish(self) -> None:
        """Log the totals and end the run (once the queue has been worked off)."""
        self.log()
        if self._client is not None and self.run_id is not None:
            try:
                self._client.set_terminated(self.run_id, "FINISHED")
            except Exception as exc:  # noqa: BLE001
                _logger.warning("shadow run not ended: %s", exc)


def _close(a, b, tolerance: float) -> bool:
    try:
        return bool(np.isclose(float(b), float(a), rtol=tolerance, atol=1e-12))
    except (TypeError, ValueError):
        return a == b


# One sample on the pipe: kind, then the lengths of the content type, body and answer, and the
# champion's seconds; then those three byte strings.
_FRAME = struct.Struct("<BHIId")
_SAMPLE, _CLOSE = 0, 1
PIPE_BYTES = 1024 * 1024  # asked of the kernel (Linux); the pipe is the bound of the backlog


class SamplePipe:
    """The writing end of the shadow's pipe: one non-blocking ``writev`` per sample.

    A sample the pipe cannot take is refused (the caller drops it); one it takes only part of
    (larger than the pipe's free space) is finished before the next one is written.
    """

    def __init__(self, fd: int):
        self.fd = fd
        self._pending = b""
        with contextlib.suppress(OSError, AttributeError):
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        os.set_blocking(fd, False)

    def put(self, body: bytes, content_type: str | None, answer: bytes,
            champion_seconds: float) -> bool:
        """Write one sample; False if the pipe is full (or its reader gone)."""
        if self._pending and not self._flush():
            return False
        ctype = (content_type or "").encode("latin-1")
        parts = [_FRAME.pack(_SAMPLE, len(ctype), len(body), len(answer), champion_seconds),
                 ctype, body, answer]
        try:
            written = os.writev(self.fd, parts)
        except OSError:  # full (BlockingIOError), or the shadow process is gone
            return False
        if written < _FRAME.size + len(ctype) + len(body) + len(answer):
            self._pending = b"".join(parts)[written:]
        return True

    def _flush(self) -> bool:
        try:
            self._pending = self._pending[os.write(self.fd, self._pending):]
        except OSError:
            return False
        return not self._pending

    def close(self, dropped: int) -> None:
        """Finish the last sample, tell the reader how many were dropped, close (blocking)."""
        try:
            os.set_blocking(self.fd, True)
            os.write(self.fd, self._pending + _FRAME.pack(_CLOSE, 0, 0, 0, float(dropped)))
        except OSError as exc:
            _logger.warning("shadow process not told to finish: %s", exc)
        os.close(self.fd)


class ShadowProcess(_Hook):
    """The serving worker's side of a shadow that runs in a process of its own.

    A thread scoring the challenger in the serving process holds the GIL while the event loop
    waits for it (up to the 5 ms switch interval), a cost every concurrent request pays; in
    its own process, at a lower CPU priority, the challenger only competes for the cores. The
    worker writes each sample to a non-blocking pipe as bytes, as received and as sent
    (:class:`SamplePipe`; a full pipe drops it); the child decodes, scores, compares and logs
    the run (:class:`Shadow`). SIGTERM or SIGINT, whether the worker sends it or the whole
    process group gets it, only makes it stop scoring soon (:meth:`Shadow.stop`): it finishes
    (logs its totals and ends its run) when the worker closes the pipe, so the samples of the
    requests still in flight are counted, or when the worker is gone (the pipe's end of file).
    The worker closes it as it stops, or at its exit whatever ends it.
    """

    def __init__(self, spec: dict):
        import multiprocessing
        import multiprocessing.util

        ctx = multiprocessing.get_context("spawn")
        self.sample = float(spec["sample"])
        self.champion_version = str(spec["champion_version"])
        self.dropped = 0
        reader, writer = ctx.Pipe(duplex=False)
        self._pipe = SamplePipe(os.dup(writer.fileno()))
        writer.close()
        self._closed = False
        self._process = ctx.Process(target=_child_main, args=(spec, reader),
                                    name="serving-shadow", daemon=True)
        self._process.start()
        reader.close()  # the child's end: its end of file is this worker's exit
        # at the worker's exit, before multiprocessing joins its children (this one would wait
        # for the pipe to close): a worker leaving without close() still has its run ended
        multiprocessing.util.Finalize(self, self.close, exitpriority=10)

    def _put(self, body, content_type, answer, champion_seconds) -> bool:
        return self._pipe.put(body, content_type, answer, champion_seconds)

    def _dropped(self) -> None:
        self.dropped += 1

    def hurry(self) -> None:
        """Tell the child the server stops: it scores for :data:`STOP_SCORING_SECONDS` more.

        SIGTERM, as when the whole process group gets it; safe in a signal handler.
        """
        with contextlib.suppress(ProcessLookupError):  # gone already: its end of file did
            os.kill(self._process.pid, signal.SIGTERM)

    def close(self, timeout: float = 30.0) -> None:
        """Have the child score briefly what is queued, log its totals and end its run.

        Takes about :data:`STOP_SCORING_SECONDS` and the logging: the child is told to stop
        scoring soon (SIGTERM) before the last frame goes, so a long backlog is counted as
        dropped rather than scored.
        """
        if self._closed:
            return
        self._closed = True
        self.hurry()
        self._pipe.close(self.dropped)
        self._process.join(timeout)
        if self._process.is_alive():
            _logger.warning("shadow process did not finish in %g s; killing it", timeout)
            self._process.kill()


def read_samples(fd: int, into: queue.Queue) -> None:
    """The shadow process's reader: samples off the pipe onto the scoring queue.

    Waits while the queue is full, so a backlog fills the pipe and the worker drops samples.
    Ends with ``("close", dropped)`` (the worker finishes) or ``None`` (the worker is gone).
    """
    with os.fdopen(fd, "rb") as pipe:
        while True:
            header = pipe.read(_FRAME.size)
            if len(header) < _FRAME.size:
                into.put(None)
                return
            kind, n_type, n_body, n_answer, seconds = _FRAME.unpack(header)
            if kind == _CLOSE:
                into.put(("close", int(seconds)))
                return
            ctype, body, answer = (pipe.read(n_type), pipe.read(n_body), pipe.read(n_answer))
            into.put((body, ctype.decode("latin-1") or None, answer, seconds))


def _child_main(spec: dict, reader) -> None:
    """The shadow process: load the challenger, score samples until told to finish."""
    stopped: list[float] = []  # when SIGTERM/SIGINT came (see ShadowProcess)
    shadow: Shadow | None = None

    def _stop(signum, frame):
        stopped.append(time.monotonic())
        if shadow is not None:
            shadow.stop(stopped[0])

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop)
    with contextlib.suppress(OSError):
        os.nice(10)  # the champion's requests come first
    with contextlib.suppress(ImportError):
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    if spec.get("metrics") and os.environ.get(_metrics.ENV_DIR):
        _metrics.enable()  # the shadow counters, in the server's metrics directory
    import mlflow

    from serving.model import load_scorer

    client = mlflow.MlflowClient(tracking_uri=spec["tracking_uri"],
                                 registry_uri=spec["registry_uri"])
    shadow = Shadow(load_scorer(spec["uri"]).score, client, name=spec["name"],
                    champion_version=spec["champion_version"],
                    challenger_version=spec["challenger_version"], task=spec["task"],
                    sample=spec["sample"], tolerance=spec["tolerance"],
                    interval=spec["interval"])
    if stopped:  # the server stopped while the challenger loaded
        shadow.stop(stopped[0])
    shadow.log()  # the run exists from the start (its metrics are the totals so far)
    fd = os.dup(reader.fileno())
    reader.close()
    threading.Thread(target=read_samples, args=(fd, shadow.queue), name="shadow-reader",
                     daemon=True).start()
    shadow.work()  # until the worker's close, or the worker is gone
    shadow.finish()
    # The run is logged: end now. Python's teardown of mlflow, scikit-learn and pandas takes
    # seconds on a busy machine, and the worker (so the server's stop) waits for this exit.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def shadow_for(client, champion, challenger_ref: str, *, sample: float, tolerance: float,
               interval: float = DEFAULT_INTERVAL_SECONDS) -> ShadowProcess:
    """A started :class:`ShadowProcess` of ``challenger_ref`` against the resolved ``champion``.

    Args:
        client: ``MlflowClient`` of the registry and of the shadow run.
        champion: the champion as resolved (:class:`core.models.ResolvedModel`).
        challenger_ref: ``NAME@ALIAS`` or ``NAME/VERSION`` of the same model.
        sample: share of requests shadowed (0-1).
        tolerance: relative tolerance of a regression row.
        interval: seconds between logs of the totals.

    The challenger is the version its reference names at start (a pinned comparison).

    Raises:
        ValueError: the challenger is another model than the champion.
    """
    from core.models import resolve_model

    chal = resolve_model(client, challenger_ref, allow_run=False)
    if champion.name and chal.name != champion.name:
        raise ValueError(f"--shadow {challenger_ref}: a version of {champion.name} is needed "
                         "(the shadow compares versions of the served model)")
    task = None
    mv = champion.model_version
    if mv is not None:
        task = (getattr(mv, "tags", None) or {}).get("mlops.task")
    task = task if task in ("classification", "regression") else None
    return ShadowProcess({
        "tracking_uri": client.tracking_uri, "registry_uri": client._registry_uri,
        "uri": chal.uri, "name": chal.name, "champion_version": champion.version,
        "challenger_version": chal.version, "task": task, "sample": sample,
        "tolerance": tolerance, "interval": interval, "metrics": _metrics.current() is not None,
    })
