"""Structured logs: one JSON object per line, for the server and its access log."""

from __future__ import annotations

import logging
import sys
import time

import orjson

# Attributes every LogRecord carries; anything else was passed with ``extra=`` and is logged.
_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "color_message",  # uvicorn's copy of msg with terminal colours
}

ACCESS_LOGGER = "serving.access"


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON line: time, level, logger, message and the ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as a JSON object on one line."""
        doc = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


def configure_logging(level: str = "INFO", access_log: bool = True) -> None:
    """Send every log record to stderr as JSON lines (called by CLI entry points only)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.captureWarnings(True)
    logging.getLogger(ACCESS_LOGGER).setLevel(logging.INFO if access_log else logging.WARNING)
    # uvicorn's own access log is replaced by ours; its error log flows through the root handler.
    # mlflow gives its loggers their own plain-text handler at import (pyfunc's per-request
    # warnings, e.g. extra columns ignored): import it now and send them through ours.
    import mlflow  # noqa: F401

    logging.getLogger("mlflow").handlers[:] = []
    logging.getLogger("mlflow").propagate = True
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True
