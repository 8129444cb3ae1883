"""Adaptive micro-batching: concurrent small requests share one call of the estimator's predict.

Predicting a few rows costs about as much as predicting one for models whose cost is mostly
per call (a 100-tree forest walks its trees once per call, not once per row). Requests that are
waiting at the same time are therefore predicted together: each request is parsed and checked
on its own (its 4xx stays its own), their rows are concatenated, predicted with one call, and
the predictions are split back per request, in order.

A request queues its rows and, when no flush is pending, schedules one with ``loop.call_soon``:
the flush runs after the other requests already ready on the event loop have queued theirs, and
requests that arrive while a batch is being predicted form the next batch. The one wait: a batch
holding fewer requests than the last one did (their clients are sending their next requests
right now) waits for them at most a quarter of a predict call and never over 1 ms. An idle
server's batches hold one request, so it never waits.

Everything runs on the event loop (no thread, no lock): a batch only ever holds requests of
one scorer, hence one model version. For a model too slow to predict on the event loop, the
caller passes ``offload`` (an async function running ``predict(x)`` in the scoring pool, under
the request timeout): then one batch at a time is predicted in the pool, and the requests that
arrive meanwhile form the next batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

import numpy as np
import pandas as pd

from serving.online import metrics as _metrics

_logger = logging.getLogger(__name__)

# Rows per predict call at most: a large request is predicted alone rather than merged, so one
# big body does not delay many small ones behind it (nor they it).
MAX_BATCH_ROWS = 1024
# A batch short of the requests expected (as many as the last batch held) waits for them at
# most this long, and at most this share of one predict call: a short wait for a bigger batch.
MAX_WAIT = 0.001
WAIT_SHARE = 0.25


def _rows(x) -> int:
    return len(x)


def _concat(parts: list):
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts, axis=0)
    return pd.concat(parts, ignore_index=True, copy=False)


class MicroBatcher:
    """Predicts the inputs queued on one event loop together.

    Args:
        predict_fn: the estimator's predict function; it must be row-independent (row ``i`` of
            the result depends only on row ``i`` of the input, bit for bit) and return a numpy
            array with one entry per row.
        max_rows: rows per predict call at most.
        max_wait: seconds a batch may wait for the requests expected to join it, at most.
        wait_share: and at most this share of one batch's (average) predict time.
    """

    def __init__(
        self,
        predict_fn: Callable,
        max_rows: int = MAX_BATCH_ROWS,
        max_wait: float = MAX_WAIT,
        wait_share: float = WAIT_SHARE,
    ):
        self._predict = predict_fn
        self.max_rows = max_rows
        self.max_wait = max_wait
        self.wait_share = wait_share
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: deque[tuple[object, asyncio.Future]] = deque()
        self._pending_rows = 0
        self._first_at = 0.0  # when the oldest queued request was queued
        self._scheduled = False  # a flush is due on the next loop iteration
        self._timer: asyncio.TimerHandle | None = None  # a flush waiting for expected requests
        self._expected = 1  # requests a batch is expected to hold (learned from past batches)
        self._predict_seconds = 0.0  # moving average of one batch's predict time
        self.calls = 0  # predict calls made (tests and operators read it)
        self._offload: Callable | None = None  # async (fn, x) -> fn(x) off the loop, or None
        self._busy = False  # an offloaded batch is being predicted

    async def predict(self, x, offload: Callable | None = None):
        """Predict ``x`` (an array or DataFrame of rows), possibly together with other requests.

        ``offload``: predict in the scoring pool through it (a slow model), not on the loop.

        Returns:
            The predictions for ``x``'s rows, as ``predict_fn(x)`` would give them.

        Raises:
            Exception: whatever ``predict_fn`` raises for ``x`` itself (not for another request
            of the same batch).
        """
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            # A new loop (tests run one per request): nothing queued on an old loop can run.
            self._loop, self._pending, self._pending_rows = loop, deque(), 0
            self._scheduled, self._timer, self._busy = False, None, False
        self._offload = offload
        future = loop.create_future()
        if not self._pending:
            self._first_at = time.perf_counter()
        self._pending.append((x, future))
        self._pending_rows += _rows(x)
        if self._timer is not None and not self._full():
            return await future  # the waiting flush takes this request too
        if self._timer is not None:
            # Everyone expected is here: flush now rather than at the end of the wait.
            self._timer.cancel()
            self._timer = None
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _full(self) -> bool:
        return len(self._pending) >= self._expected or self._pending_rows >= self.max_rows

    def _flush(self) -> None:
        """Predict the next batch of queued inputs; leave the rest for the next loop iteration."""
        self._scheduled = False
        self._timer = None
        if not self._pending or self._busy:
            return  # a busy (offloaded) batch flushes the next one when it is done
        # Under load the requests of the last batch come back at about the same time; a batch
        # short of them waits a little (a fraction of a predict, at most max_wait) for the rest,
        # instead of alternating big and lone batches. An idle server expects one: no wait.
        wait = min(self.max_wait, self.wait_share * self._predict_seconds)
        waited = time.perf_counter() - self._first_at
        timed_out = waited >= wait
        if not self._full() and not timed_out:
            self._timer = self._loop.call_later(wait - waited, self._flush)
            return
        batch, rows = [], 0
        while self._pending:
            x, future = self._pending[0]
            n = _rows(x)
            if batch and rows + n > self.max_rows:
                break
            self._pending.popleft()
            self._pending_rows -= n
            if not future.done():  # a request cancelled while queued needs no prediction
                batch.append((x, future))
                rows += n
        if len(batch) >= self._expected:
            self._expected = len(batch)
        elif timed_out:
            # Fewer came than expected (a client left or slowed down): expect fewer next time.
            self._expected = max(self._expected - 1, 1)
        if batch and (m := _metrics.current()) is not None:
            m.batch(len(batch), rows)
        if self._offload is not None:
            if batch:
                self._busy = True
                self._loop.create_task(self._run_offloaded(batch, rows))
            return
        if self._pending:
            # Yield to the loop between batches so finished requests' responses go out first.
            self._first_at = time.perf_counter()
            self._scheduled = True
            self._loop.call_soon(self._flush)
        if batch:
            start = time.perf_counter()
            self._run(batch, rows)
            elapsed = time.perf_counter() - start
            self._predict_seconds += 0.2 * (elapsed - self._predict_seconds)

    def _run(self, batch: list, rows: int) -> None:
        _logger.debug("batch", extra={"requests": len(batch), "rows": rows})
        if len(batch) == 1:
            self._predict_alone(*batch[0])
            return
        try:
            self.calls += 1
            predictions = self._predict(_concat([x for x, _ in batch]))
        except Exception:
            _logger.debug("batch predict failed; predicting its requests one by one")
            predictions = None
        if not _split(batch, rows, predictions):
            for x, future in batch:
                self._predict_alone(x, future)

    async def _run_offloaded(self, batch: list, rows: int) -> None:
        """Predict one batch in the pool; then flush the requests that queued meanwhile."""
        start = time.perf_counter()
        try:
            if len(batch) == 1:
                await self._offloaded_alone(*batch[0])
                return
            try:
                self.calls += 1
                predictions = await self._offload(self._predict, _concat([x for x, _ in batch]))
            except Exception:
                predictions = None
            if not _split(batch, rows, predictions):
                for x, future in batch:
                    await self._offloaded_alone(x, future)
        finally:
            self._predict_seconds += 0.2 * (time.perf_counter() - start - self._predict_seconds)
            self._busy = False
            if self._pending and not self._scheduled:
                self._first_at = time.perf_counter()
                self._scheduled = True
                self._loop.call_soon(self._flush)

    async def _offloaded_alone(self, x, future: asyncio.Future) -> None:
        if future.done():
            return
        try:
            self.calls += 1
            result = await self._offload(self._predict, x)
        except Exception as exc:
            _settle(future, error=exc)
            return
        _settle(future, result)

    def _predict_alone(self, x, future: asyncio.Future) -> None:
        try:
            self.calls += 1
            result = self._predict(x)
        except Exception as exc:
            _settle(future, error=exc)
            return
        _settle(future, result)


def _split(batch: list, rows: int, predictions) -> bool:
    """Answer each request of ``batch`` with its rows of ``predictions``.

    False, answering none, when there are no predictions (the batch failed: one request's rows
    may be what the model refuses) or they are not one per row (checked at load, so not
    expected): the caller then predicts each request alone, so only a request the model
    refuses fails, with its own error, as it would have without batching.
    """
    if not isinstance(predictions, np.ndarray) or len(predictions) != rows:
        return False
    start = 0
    for x, future in batch:
        end = start + _rows(x)
        _settle(future, predictions[start:end])
        start = end
    return True


def _settle(future: asyncio.Future, result=None, error: BaseException | None = None) -> None:
    """Set a request's outcome unless it is done already (cancelled, say)."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def batches_identically(predict_fn: Callable, probe) -> bool:
    """Whether ``predict_fn`` gives each row the same prediction alone as in a batch, bit for bit.

    Tree ensembles are row-independent by construction; a BLAS product may round differently
    by batch size. The probe is predicted whole, one row at a time, and in two uneven parts;
    batching is used only when all agree exactly and the result is one array entry per row.
    """
    try:
        whole = predict_fn(probe)
        alone = [predict_fn(probe[i : i + 1]) for i in range(len(probe))]
        cut = max(len(probe) // 3, 1)
        parts = [predict_fn(probe[:cut]), predict_fn(probe[cut:])]
    except Exception:
        return False
    arrays = [whole, *alone, *parts]
    if not all(isinstance(a, np.ndarray) for a in arrays) or len(whole) != len(probe):
        return False
    if any(a.dtype != whole.dtype for a in arrays):
        return False
    return all(
        np.array_equal(np.concatenate(group), whole, equal_nan=whole.dtype.kind in "fc")
        for group in (alone, parts)
    )
