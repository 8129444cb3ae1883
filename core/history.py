"""The history records of alias moves: one JSON record per attempt, a tag on the model.

A record (:class:`Attempt`) is the registered-model tag ``mlops.history.<attempt id>``. Attempt
ids start with the UTC time in milliseconds, so the tags sort oldest first and travel with the
model. :mod:`core.aliases` writes them (the one alias move); the tracking server writes the
records of moves it refuses (:func:`refused_attempt`); :mod:`core.audit` links each final record
into the model's hash chain. The move itself (compare-and-set, alias, version tags) is
:mod:`core.aliases`.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from core import names
from core.lookup import as_json

HISTORY_TAG_PREFIX = names.HISTORY_TAG_PREFIX


def now_ms() -> int:
    """Milliseconds since the epoch."""
    return int(time.time() * 1000)


def iso(ms: int) -> str:
    """``2026-11-26T14:38:59Z`` from milliseconds since the epoch."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def current_user() -> str:
    """Who acts: the tracking user (``MLFLOW_TRACKING_USERNAME``) or the OS user."""
    import getpass

    return os.environ.get("MLFLOW_TRACKING_USERNAME") or getpass.getuser()


@dataclass(frozen=True)
class Attempt:
    """One attempt to move an alias, as recorded in the model's history.

    ``version`` is None for a removal of the alias.
    """

    id: str
    alias: str
    version: str | None
    previous: str | None
    by: str
    at: int
    reason: str
    kind: str = "promote"
    forced: bool = False
    slot: int = 0
    outcome: str = "pending"
    winner: str | None = None
    gates: list[dict] = field(default_factory=list)
    #: What the tracking server said when it refused the move (outcome ``refused`` only).
    refusal: str | None = None
    #: The record's place in the model's history chain (:mod:`core.audit`); 0: not chained
    #: (a move still pending).
    seq: int = 0
    #: The hash of the record before it in the chain ("" for the first).
    prev: str = ""
    #: The promotion request this move executed (core.approvals), and its approvals
    #: (``{by, at, reason}``); absent from records of moves without one.
    request: str | None = None
    approvals: list[dict] = field(default_factory=list)
    #: The digest of the evidence the approvers reviewed (:mod:`core.evidence`); absent from
    #: records of moves without a request.
    evidence: str | None = None
    #: A release manager's emergency rollback, made without approvals: it needs a second
    #: release manager's review afterwards (the request ``request`` records it).
    emergency: bool = False

    @property
    def tag(self) -> str:
        """The registered-model tag that holds this record."""
        return HISTORY_TAG_PREFIX + self.id

    def to_json(self) -> str:
        """The tag value (``refusal`` only when there is one)."""
        data = asdict(self)
        if data["refusal"] is None:
            del data["refusal"]
        if not data["seq"]:
            del data["seq"], data["prev"]
        if data["request"] is None:
            del data["request"], data["approvals"]
        if data["evidence"] is None:
            del data["evidence"]
        if not data["emergency"]:
            del data["emergency"]
        return as_json(data)

    @classmethod
    def from_json(cls, text: str) -> Attempt:
        """Parse a tag value (unknown keys are ignored)."""
        data = json.loads(text)
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def new_attempt_id(at_ms: int) -> str:
    """A unique, time-ordered attempt id."""
    return f"{at_ms:013d}-{uuid.uuid4().hex[:8]}"


def refused_attempt(alias: str, version: str | None, previous: str | None, by: str, reason: str,
                    refusal: str) -> Attempt:
    """The history record of a write on an alias the tracking server refused.

    The same record as a move's (:class:`Attempt`), with the outcome ``refused``: it never took
    part in the race, so :func:`read_history` shows it as it is. ``tracking.governance`` writes
    it for a protected alias set or deleted over plain REST, and for a delete or rename that
    would take a protected alias away.

    Args:
        alias: the alias the write would have moved.
        version: the version it would have moved to; None for a removal.
        previous: the version holding the alias then.
        by: the user the server authenticated.
        reason: what was tried.
        refusal: the server's message (who may make the move).
    """
    at = now_ms()
    return Attempt(
        id=new_attempt_id(at), alias=alias, version=version, previous=previous, by=by, at=at,
        reason=reason, kind="promote" if version is not None else "remove", outcome="refused",
        refusal=refusal,
    )
