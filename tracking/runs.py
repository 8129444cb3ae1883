"""Run lifecycle: runs end FINISHED, FAILED or KILLED, never stay RUNNING.

A crashed step ends FAILED; Ctrl-C (SIGINT) or SIGTERM ends KILLED. Every run that is still
open when the signal arrives (parent and children) is closed with that status.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from collections.abc import Iterator

_logger = logging.getLogger(__name__)


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when SIGTERM arrives, so runs end KILLED."""


def _raise_terminated(signum, frame):  # noqa: ARG001
    raise Terminated(f"received signal {signum}")


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into an exception (like Ctrl-C) for the duration of the block."""
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def tracked_run(client, run_id: str) -> Iterator[str]:
    """Close ``run_id`` FINISHED on success, KILLED on interrupt, FAILED on error."""
    try:
        yield run_id
    except KeyboardInterrupt:
        client.set_terminated(run_id, "KILLED", end_time=int(time.time() * 1000))
        raise
    except BaseException:
        client.set_terminated(run_id, "FAILED", end_time=int(time.time() * 1000))
        raise
    else:
        client.set_terminated(run_id, "FINISHED", end_time=int(time.time() * 1000))
