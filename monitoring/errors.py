"""The one error of monitoring: input it cannot judge."""

from __future__ import annotations


class MonitorError(ValueError):
    """Input the monitor cannot judge (no captured rows, unknown columns); one line."""
