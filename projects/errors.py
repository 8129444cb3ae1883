"""Errors the workflow reports as one line and a FAILED run."""

from core.errors import MlopsError


class WorkflowError(MlopsError):
    """A problem the user can fix (bad data, bad source); one line, exit 1, no traceback."""


class DataError(WorkflowError):
    """Data that breaks a declared rule; the message names the column and the rule."""

    def __init__(self, column: str, rule: str, detail: str):
        self.column, self.rule, self.detail = column, rule, detail
        where = "table" if column == "*" else f"column {column!r}"
        super().__init__(f"{where}: rule '{rule}' failed: {detail}")
