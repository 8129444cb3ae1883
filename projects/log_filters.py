"""Log filters of the workflow: what MLflow says on every save or registration, kept quiet.

Both show what they hide again with ``-v`` (debug logging).
"""

from __future__ import annotations

import contextlib
import logging

_logger = logging.getLogger(__name__)


class PickleWarningFilter(logging.Filter):
    """Drops MLflow's per-save warning about the pickle formats, and only it."""

    PREFIX = "Saving scikit-learn models in the pickle or cloudpickle format"

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether ``record`` is shown: anything but the pickle-format warning."""
        return not str(record.msg).startswith(self.PREFIX)


@contextlib.contextmanager
def quiet_pickle_warning():
    """Silence MLflow's warning on every cloudpickle save: the format is chosen on purpose.

    The workflow saves with cloudpickle because skops refuses tree models unless their types
    are trusted one by one; the models it loads are its own. With ``-v`` (debug) the warning
    is shown as MLflow prints it.
    """
    if _logger.isEnabledFor(logging.DEBUG):
        yield
        return
    target = logging.getLogger("mlflow.sklearn")
    quiet = PickleWarningFilter()
    target.addFilter(quiet)
    try:
        yield
    finally:
        target.removeFilter(quiet)


@contextlib.contextmanager
def quiet_unless_verbose():
    """MLflow's own prints (``Successfully registered model ...``) only with ``-v``.

    Log records still show: handlers hold the stream they were created with.
    """
    if _logger.isEnabledFor(logging.DEBUG):
        yield
        return
    import io

    with contextlib.redirect_stderr(io.StringIO()):
        yield
