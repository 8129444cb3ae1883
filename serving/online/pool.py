"""The scoring pool: threads that run predictions off the event loop, bounded, with deadlines.

Why not ``concurrent.futures.ThreadPoolExecutor``: its queue has no bound (a burst queues
without limit, each request waiting for its timeout), and a prediction that overran its
deadline keeps its thread until it returns, so a few slow requests fill the pool for everyone.

Here a request that finds every thread busy and the queue full is refused at once
(:class:`PoolFull`, a 503 with ``Retry-After``). A request that times out while queued is
dropped before it runs; one that times out while running is abandoned: its thread is replaced
at once (the pool keeps its size) and is asked to stop (an exception raised in it at its next
Python instruction), and exits when its prediction returns.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import queue
import threading
from collections.abc import Callable

_logger = logging.getLogger(__name__)

DEFAULT_THREADS = 4
DEFAULT_QUEUE = 64


class PoolFull(Exception):
    """Every thread is busy and the queue is full."""


class PoolTimeout(Exception):
    """The job did not finish within its deadline (it was dropped or abandoned)."""


class _Abandoned(BaseException):
    """Raised inside a thread whose job overran its deadline, to stop it early."""


class _Job:
    __slots__ = ("fn", "args", "loop", "future", "claim", "thread", "abandoned")

    def __init__(self, fn: Callable, args: tuple, loop, future):
        self.fn, self.args, self.loop, self.future = fn, args, loop, future
        # Taken (without blocking) by whoever gets the job first: a thread to run it, or the
        # deadline to drop it while still queued. Never a blocking lock: no deadlock possible.
        self.claim = threading.Lock()
        self.thread: threading.Thread | None = None
        self.abandoned = False


class ScoringPool:
    """``threads`` scoring threads and a queue of at most ``max_queue`` waiting jobs.

    Accounting is done on the event loop only (jobs are submitted, finished, dropped and
    abandoned there); the threads only run jobs and post their results back.
    """

    def __init__(self, threads: int = DEFAULT_THREADS, max_queue: int = DEFAULT_QUEUE):
        self.threads = threads
        self.max_queue = max_queue
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._pending = 0  # submitted, not yet finished, dropped or abandoned
        self._abandoned: list[threading.Thread] = []
        self._workers: list[threading.Thread] = []
        self._closed = False
        for _ in range(threads):
            self._start_thread()

    @property
    def pending(self) -> int:
        """Jobs running or waiting."""
        return self._pending

    def _start_thread(self) -> None:
        thread = threading.Thread(target=self._work, name="score", daemon=True)
        self._workers.append(thread)
        thread.start()

    def _stuck(self) -> int:
        self._abandoned = [t for t in self._abandoned if t.is_alive()]
        return len(self._abandoned)

    async def run(self, fn: Callable, *args, timeout: float):
        """Run ``fn(*args)`` in a pool thread; return its result or raise its exception.

        Raises:
            PoolFull: every thread busy and the queue full, or too many abandoned predictions
                still running (the model is stuck): retry later.
            PoolTimeout: not done within ``timeout`` seconds.
        """
        if self._pending >= self.threads + self.max_queue or self._stuck() >= 2 * self.threads:
            raise PoolFull()
        loop = asyncio.get_running_loop()
        job = _Job(fn, args, loop, loop.create_future())
        self._pending += 1
        self._jobs.put(job)
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), timeout)
        except TimeoutError:
            self._expire(job)
            raise PoolTimeout() from None
        except asyncio.CancelledError:
            self._expire(job)
            raise

    def _expire(self, job: _Job) -> None:
        """Drop a queued job, or abandon a running one (replacing its thread)."""
        if job.future.done():
            return
        job.future.cancel()
        self._pending -= 1
        if job.claim.acquire(blocking=False):
            return  # still queued: no thread will run it
        job.abandoned = True
        if self._closed:
            return
        thread = job.thread
        self._workers = [t for t in self._workers if t is not thread]
        self._start_thread()  # the abandoned thread exits when its prediction returns
        if thread is not None:
            self._abandoned.append(thread)
            _interrupt(thread)
        _logger.warning("scoring overran its deadline; its thread was replaced")

    def _work(self) -> None:
        try:
            while True:
                job = self._jobs.get()
                if job is None:
                    return
                job.thread = threading.current_thread()
                if not job.claim.acquire(blocking=False):
                    continue  # dropped by its deadline while queued
                try:
                    result, error = job.fn(*job.args), None
                except _Abandoned:
                    return
                except BaseException as exc:  # handed to the request, which answers for it
                    result, error = None, exc
                if job.abandoned:
                    return  # a replacement thread has taken this one's place
                job.loop.call_soon_threadsafe(self._finish, job, result, error)
        except _Abandoned:  # arrived after the job: this thread was replaced anyway
            return

    def _finish(self, job: _Job, result, error) -> None:
        if job.future.done():  # expired meanwhile (accounted for there)
            return
        self._pending -= 1
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(result)

    def shutdown(self) -> None:
        """Stop the threads once the queued jobs are done (does not wait)."""
        self._closed = True
        for _ in self._workers:
            self._jobs.put(None)


def _interrupt(thread: threading.Thread) -> None:
    """Raise :class:`_Abandoned` in ``thread`` at its next Python instruction (best effort)."""
    if thread.ident is None:
        return
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread.ident), ctypes.py_object(_Abandoned)
    )
