"""Errors of the registry commands; the exit codes and wording live in :mod:`core.errors`."""

from __future__ import annotations

from core.errors import LostRace, MlopsError, explain, http_status, one_line

__all__ = ["GateFailure", "LostRace", "RegistryError", "explain", "http_status", "one_line"]


class RegistryError(MlopsError):
    """A refusal or bad input; its message is one line and the command exits non-zero."""


class GateFailure(RegistryError):
    """A version failed its promotion policy; nothing was changed."""

    def __init__(self, message: str, validation=None):
        super().__init__(message)
        self.validation = validation
