"""The shadow run: the challenger scores queued samples; the totals go to an MLflow run.

Every minute and at shutdown the totals go to an MLflow run in the challenger's experiment,
tagged with the model and both versions (names in :mod:`core.shadow`), and linked from the
challenger version (tag ``mlops.shadow.run_id``): ``shadow.requests``, ``shadow.rows``,
``shadow.agreement``, the flips, and p50/p95 latency of both models. The registry's policy
gates on them (``shadow.min_agreement``, ``shadow.min_requests``). What counts as agreement is
:mod:`serving.shadow.compare`'s; where this runs (a process of its own) is
:mod:`serving.shadow.process`'s.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import socket
import threading
import time
from collections.abc import Callable

from core import shadow as names
from core.names import HOST_TAG, PID_TAG
from serving.online import metrics as _metrics
from serving.shadow.compare import Totals, compare_answers, predictions

_logger = logging.getLogger(__name__)

DEFAULT_SAMPLE = 0.1
DEFAULT_TOLERANCE = 0.01
DEFAULT_INTERVAL_SECONDS = 60.0
QUEUE_SIZE = 1000
# Once the server stops, queued samples are scored for this many seconds more; the rest are
# counted as dropped, so the shadow's totals are logged within the server's shutdown.
STOP_SCORING_SECONDS = 1.0


class SampleHook:
    """The request path's side of a shadow: the sampling draw and the hand-off, never blocking.

    :class:`serving.online.app.ScoringApp` calls :meth:`offer` once an answer has been sent.
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


class Shadow(SampleHook):
    """Scores queued samples with the challenger (:meth:`work`); logs the totals.

    It runs in the shadow process (:class:`serving.shadow.process.ShadowProcess`, whose
    reader feeds its queue); the tests drive it in their own process.

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
        found = compare_answers(predictions(answer), challenger, self.task, self.tolerance)
        with self._lock:
            self.totals.add(found, champion_seconds * 1000, seconds * 1000)
        _metrics.shadowed(found.rows, found.agreed)

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
                HOST_TAG: socket.gethostname(),
                PID_TAG: str(os.getpid()),
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
