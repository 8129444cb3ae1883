"""Errors a release manager sees as one line, and the translation of MLflow's into them."""

from __future__ import annotations

import re


class RegistryError(Exception):
    """A refusal or bad input; its message is one line and the command exits non-zero."""


class GateFailure(RegistryError):
    """A version failed its promotion policy; nothing was changed."""

    def __init__(self, message: str, validation=None):
        super().__init__(message)
        self.validation = validation


class LostRace(RegistryError):
    """Another promotion of the same alias won the compare-and-set; nothing was changed."""


_STATUS = re.compile(r"error code (\d{3})")


def http_status(exc: BaseException) -> int | None:
    """The HTTP status behind an MLflow client error, when the server answered with one."""
    text = str(exc)
    if m := _STATUS.search(text):
        return int(m.group(1))
    get = getattr(exc, "get_http_status_code", None)
    code = get() if callable(get) else None
    return code if isinstance(code, int) and code != 500 else None


def explain(exc: BaseException, action: str = "") -> str:
    """One line for an MLflow client error (401/403 get their own wording).

    Args:
        exc: the exception raised by the MLflow client.
        action: what was being attempted, e.g. ``"move alias champion of m"``.
    """
    status = http_status(exc)
    what = f" to {action}" if action else ""
    if status == 401:
        return (
            f"the tracking server refused the credentials (401){what}: "
            "check MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
        )
    if status == 403:
        return f"permission denied (403){what}: ask an admin for EDIT/MANAGE on the model"
    return one_line(getattr(exc, "message", None) or str(exc))


def one_line(text: str, limit: int = 300) -> str:
    """The first meaningful line of ``text``, shortened to ``limit`` characters."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    line = lines[0] if lines else str(text)
    return line if len(line) <= limit else line[: limit - 3] + "..."
