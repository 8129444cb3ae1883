"""Run lifecycle: runs end FINISHED, FAILED or KILLED, never stay RUNNING.

A crashed step ends FAILED; Ctrl-C (SIGINT) or SIGTERM ends KILLED. Every run that is still
open when the signal arrives (parent and children) is closed with that status.
"""

from __future__ import annotations

import contextlib
import logging
import signal
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
def run_with_status(**start_run_kwargs) -> Iterator:
    """``mlflow.start_run`` that ends FINISHED, KILLED (Ctrl-C/SIGTERM) or FAILED (error).

    MLflow's own context manager ends an interrupted run FAILED; an interrupt is not a failure
    of the code, so it is recorded as KILLED.
    """
    import mlflow

    run = mlflow.start_run(**start_run_kwargs)
    try:
        yield run
    except KeyboardInterrupt:
        mlflow.end_run("KILLED")
        raise
    except BaseException:
        mlflow.end_run("FAILED")
        raise
    else:
        mlflow.end_run("FINISHED")
