"""The shadow's plumbing: a pipe from the serving worker to a process of the shadow's own.

``python -m serving serve NAME@champion --shadow NAME@challenger --shadow-sample 0.1``: the
champion answers every request as before; for a sampled request, once its answer has been
sent, the request body and the champion's answer go on a bounded queue to a process of its own
(at a lower CPU priority: it competes with the champion for the cores, never for its GIL),
which scores the body with the challenger and compares the two answers row by row
(:mod:`serving.shadow.compare`), logging the totals to a run (:mod:`serving.shadow.run`).

The request path pays one random draw per request (in :class:`serving.online.app.ScoringApp`,
once the answer is sent); a sampled request also writes its body, as received, and the
champion's answer, as sent, to a non-blocking pipe in one ``writev`` call (a few microseconds):
no decoding, no pickling, no thread to wake in the serving process. A full pipe drops the
sample (counted as ``shadow.dropped``) instead of slowing the champion. The shadow process does
all the parsing, scoring and comparing; it still uses the same CPU:
``benchmarks/bench_shadow.py`` measures what that costs.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import queue
import signal
import struct
import sys
import threading
import time

from core.names import TASK_TAG
from serving.online import metrics as _metrics
from serving.shadow.run import DEFAULT_INTERVAL_SECONDS, SampleHook, Shadow

_logger = logging.getLogger(__name__)


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


class ShadowProcess(SampleHook):
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
        """Tell the child the server stops: it scores for ``STOP_SCORING_SECONDS`` more.

        SIGTERM, as when the whole process group gets it; safe in a signal handler.
        """
        with contextlib.suppress(ProcessLookupError):  # gone already: its end of file did
            os.kill(self._process.pid, signal.SIGTERM)

    def close(self, timeout: float = 30.0) -> None:
        """Have the child score briefly what is queued, log its totals and end its run.

        Takes about ``STOP_SCORING_SECONDS`` (:mod:`serving.shadow.run`) and the logging: the
        child is told to stop scoring soon (SIGTERM) before the last frame goes, so a long
        backlog is counted as dropped rather than scored.
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

    from serving.online.model import load_scorer

    client = mlflow.MlflowClient(tracking_uri=spec["tracking_uri"],
                                 registry_uri=spec["registry_uri"])
    shadow = Shadow(challenger_score(load_scorer(spec["uri"])), client, name=spec["name"],
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


def challenger_score(scorer):
    """The challenger's ``score(body, sample_type)``.

    An /invocations body is scored as its content type says; a V2 inference request
    (:data:`serving.online.v2.SHADOW_SAMPLE`) as the V2 route scores it.
    """
    from serving.online import v2

    def score(body: bytes, sample_type: str | None) -> bytes:
        if sample_type is not None and sample_type.startswith(v2.SHADOW_SAMPLE):
            header = sample_type.partition(";")[2] or None
            return v2.infer(scorer, body, header, "challenger", None)
        return scorer.score(body, sample_type)

    return score


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
        task = (getattr(mv, "tags", None) or {}).get(TASK_TAG)
    task = task if task in ("classification", "regression") else None
    return ShadowProcess({
        "tracking_uri": client.tracking_uri, "registry_uri": client._registry_uri,
        "uri": chal.uri, "name": chal.name, "champion_version": champion.version,
        "challenger_version": chal.version, "task": task, "sample": sample,
        "tolerance": tolerance, "interval": interval, "metrics": _metrics.current() is not None,
    })
