"""Errors every command line reports the same way: one line and a documented exit code.

Exit codes (all four command lines): 0 done (or nothing to do), 1 refused or failed, 2 bad
usage (unknown flag, malformed reference, invalid setting), 3 lost a race for an alias to a
concurrent move, 130 interrupted.
"""

from __future__ import annotations

import re

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_LOST_RACE = 3
EXIT_INTERRUPTED = 130


class MlopsError(Exception):
    """A refusal or failure the user can act on; its message is one line (exit 1)."""

    exit_code = EXIT_REFUSED


class UsageError(MlopsError):
    """Bad input on the command line: a malformed reference, an invalid setting (exit 2)."""

    exit_code = EXIT_USAGE


class LostRace(MlopsError):
    """Another move of the same alias won the compare-and-set; nothing was changed (exit 3)."""

    exit_code = EXIT_LOST_RACE


class Interrupted(MlopsError):
    """Stopped by Ctrl-C or SIGTERM; the message says what was cleaned up (exit 130).

    A command that cleans up after an interrupt raises this instead of letting the
    ``KeyboardInterrupt`` through, so the user reads ``interrupted: <what was done>``.
    """

    exit_code = EXIT_INTERRUPTED


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


def classify(exc: BaseException) -> tuple[int, str] | None:
    """The exit code and one-line message for ``exc``, or None if it is a bug (re-raise).

    The one mapping of errors to exit codes shared by every command line. The message of
    an interrupt (130) is ``interrupted`` or ``interrupted: <what was cleaned up>``; every
    other message is printed after ``error: ``.
    """
    import click

    from core.settings import SettingsError
    from core.uris import ModelRefError

    if isinstance(exc, KeyboardInterrupt | click.exceptions.Abort):
        return EXIT_INTERRUPTED, "interrupted"
    if isinstance(exc, Interrupted):
        detail = one_line(str(exc), limit=1000)
        return EXIT_INTERRUPTED, f"interrupted: {detail}" if detail else "interrupted"
    if isinstance(exc, MlopsError):
        return exc.exit_code, one_line(str(exc), limit=1000)
    if isinstance(exc, click.UsageError | SettingsError | ModelRefError):
        msg = exc.format_message() if isinstance(exc, click.ClickException) else str(exc)
        return EXIT_USAGE, one_line(msg, limit=1000)
    if isinstance(exc, click.ClickException):
        return EXIT_REFUSED, one_line(exc.format_message(), limit=1000)
    try:
        from mlflow.exceptions import MlflowException
    except ImportError:  # pragma: no cover - mlflow is a dependency
        MlflowException = ()  # noqa: N806
    if isinstance(exc, MlflowException):
        return EXIT_REFUSED, explain(exc)
    if isinstance(exc, OSError):
        return EXIT_REFUSED, one_line(str(exc))
    return None
