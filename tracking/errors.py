"""The tracking package's own error: a server that cannot be started."""

from __future__ import annotations

from core.errors import MlopsError


class ServerError(MlopsError, RuntimeError):
    """The server cannot be started; the message is one line (exit 1)."""
