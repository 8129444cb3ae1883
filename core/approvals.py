"""Promotion requests and approvals: four eyes on an alias move, enforced by the tracking server.

A request asks for ``alias`` of ``name`` to move to ``version``. It is a registered-model tag
``mlops.request.<id>`` (:data:`core.names.REQUEST_TAG_PREFIX`) holding one JSON record, written
only by the governance server's request routes (``tracking.promotions``; the server's tag guard
refuses ``mlops.*`` tags to everyone else). When the last approval lands, the server moves the
alias through the one alias move (:func:`core.aliases.move_alias`), whose history record names
the requester (``by``) and the approvers (``approvals``).

How many approvals an alias needs is the server's own configuration, never the client's: the
``aliases`` part of the model's policy file in the server's policy folder
(``$MLOPS_POLICY_DIR`` or ``conf/policies``), else the launcher's default
(``governance.approvals`` of the settings, passed as ``MLOPS_APPROVALS``). An approver is never
the requester and never the version's author (the user recorded on its run or version).

Without a tracking server (the embedded store) nobody could enforce an approval: the request
verbs are refused with one line, and ``registry promote`` moves the alias as before.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core import names
from core.errors import MlopsError

REQUEST_TAG_PREFIX = names.REQUEST_TAG_PREFIX
#: The server's request routes: ``<prefix>create|approve|reject|review`` (POST), ``<prefix>list``
#: (GET).
REQUEST_ROUTE_PREFIX = "/api/2.0/mlops/requests/"
#: The marker of the request routes' answers.
REQUEST_ROUTE_ID = "governance.requests"
#: The launcher's default approvals per alias (JSON ``{alias: n}``), from the settings.
APPROVALS_ENV = "MLOPS_APPROVALS"
DEFAULT_EXPIRE_AFTER = "7d"
STATES = names.REQUEST_STATES
NEEDS_REVIEW, REVIEWED = "needs-review", "reviewed"
#: The kinds of move a request may ask for (a rollback of an alias that needs approvals too).
REQUEST_KINDS = ("promote", "rollback")
EMERGENCY_NEEDS_SERVER = (
    "--emergency is for the team's tracking server, where approvals are enforced; on this "
    "store python -m registry rollback moves the alias directly"
)
NEEDS_SERVER = (
    "approvals need the team's tracking server (python -m tracking server --auth); "
    "on this store nobody can enforce them: python -m registry promote moves the "
    "alias directly"
)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_seconds(text: str | int | float) -> int:
    """``90`` / ``"45s"`` / ``"30m"`` / ``"12h"`` / ``"7d"`` in seconds."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = int(text)
    else:
        match = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", str(text))
        if not match:
            raise ValueError(f"{text!r} is not a duration (e.g. 45s, 30m, 12h, 7d)")
        seconds = int(match[1]) * _UNITS[match[2] or "s"]
    if seconds <= 0:
        raise ValueError(f"{text!r}: a duration is more than 0 seconds")
    return seconds


class AliasApprovals(BaseModel):
    """The ``aliases.<alias>`` entry of a policy file: who must approve a move of that alias."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Release managers who must approve (never the requester, never the version's author).
    approvals: int = Field(0, ge=0)
    # How long a request stays open (45s, 30m, 12h, 7d).
    expire_after: str = DEFAULT_EXPIRE_AFTER

    @field_validator("expire_after", mode="before")
    @classmethod
    def _duration(cls, value):
        duration_seconds(value)
        return str(value)

    @property
    def expire_seconds(self) -> int:
        """``expire_after`` in seconds."""
        return duration_seconds(self.expire_after)


def default_approvals(env: dict | None = None) -> dict[str, int]:
    """The launcher's default approvals per alias (``MLOPS_APPROVALS``; none: ``{}``)."""
    raw = (os.environ if env is None else env).get(APPROVALS_ENV)
    return {str(k): int(v) for k, v in json.loads(raw).items()} if raw else {}


def approval_rule(
    model: str,
    alias: str,
    policy_dir: str | Path | None = None,
    defaults: dict[str, int] | None = None,
) -> AliasApprovals:
    """What a move of ``alias`` of ``model`` needs, from the server's own configuration.

    The ``aliases.<alias>`` entry of ``<policy_dir>/<model>.yaml`` wins; otherwise the default
    (:func:`default_approvals`) with the default expiry.

    Raises:
        MlopsError: the policy file's ``aliases`` part is invalid (one line naming the key).
    """
    from core.settings import SettingsError, conf_dir, read_yaml_mapping

    folder = Path(policy_dir or os.environ.get("MLOPS_POLICY_DIR") or conf_dir() / "policies")
    file = folder / f"{re.sub(r'[^A-Za-z0-9._-]', '_', model)}.yaml"
    entry = None
    if file.is_file():
        try:
            entry = (read_yaml_mapping(file, "policy keys").get("aliases") or {}).get(alias)
        except (SettingsError, AttributeError) as exc:
            raise MlopsError(f"{file}: aliases: {exc}") from None
    if entry is None:
        defaults = default_approvals() if defaults is None else defaults
        return AliasApprovals(approvals=defaults.get(alias, 0))
    try:
        return AliasApprovals.model_validate(entry)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(["aliases", alias, *(str(p) for p in err["loc"])])
        raise MlopsError(f"{file}: {where}: {err['msg']}") from None


@dataclass(frozen=True)
class Request:
    """One promotion request, as the server keeps it."""

    id: str
    name: str
    alias: str
    version: str
    by: str
    at: int
    reason: str
    required: int
    expires_at: int
    authors: list[str] = field(default_factory=list)
    gates: list[dict] = field(default_factory=list)
    forced: bool = False
    #: The alias's state when the request was filed: a move since then voids it.
    expect_slot: int = 0
    expect_holder: str | None = None
    status: str = "open"
    approvals: list[dict] = field(default_factory=list)
    #: Who rejected or what voided it, and why (``{by, at, reason}``).
    closed: dict | None = None
    #: The history record of the move that executed it.
    attempt: str | None = None
    #: The kind of the move (:data:`REQUEST_KINDS`).
    kind: str = "promote"
    #: What the approvers review (:class:`core.evidence.Evidence`'s ``to_dict``), as the server
    #: computed it when the request was filed.
    evidence: dict | None = None
    #: An emergency rollback made without approvals (status ``needs-review``, then ``reviewed``).
    emergency: bool = False
    #: The second release manager's review of an emergency rollback (``{by, at, reason}``).
    review: dict | None = None

    @property
    def digest(self) -> str | None:
        """The evidence digest (None: a request filed before evidence was bound)."""
        return (self.evidence or {}).get("digest")

    @property
    def tag(self) -> str:
        """The registered-model tag that holds it."""
        return REQUEST_TAG_PREFIX + self.id

    def state(self, now_ms: int) -> str:
        """The status, with an open request past its expiry shown as ``expired``."""
        if self.status == "open" and now_ms >= self.expires_at:
            return "expired"
        return self.status

    def to_dict(self, now_ms: int | None = None) -> dict:
        """A JSON-ready form (``status`` as of ``now_ms`` when given)."""
        data = asdict(self)
        if now_ms is not None:
            data["status"] = self.state(now_ms)
        return data

    def to_json(self) -> str:
        """The tag's value."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Request:
        """Parse a tag value (unknown keys ignored)."""
        data = json.loads(text)
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def but(self, **changes) -> Request:
        """A copy with ``changes``."""
        return replace(self, **changes)


def requests_of(model) -> list[Request]:
    """The requests held by a registered model entity (its tags), oldest first."""
    tags = model.tags if isinstance(model.tags, dict) else {t.key: t.value for t in model.tags}
    found = [Request.from_json(v) for k, v in tags.items() if k.startswith(REQUEST_TAG_PREFIX)]
    return sorted(found, key=lambda r: r.id)


def call(client, action: str, body: dict | None = None, params: dict | None = None) -> dict:
    """One call of the server's request routes as the client's user; the answer's JSON.

    Raises:
        MlopsError: not a tracking server, or not the governance server (:data:`NEEDS_SERVER`);
            the server refused (its one-line message, with the status).
    """
    from mlflow.utils.rest_utils import http_request

    from core.aliases import _writer

    store = getattr(_writer(client), "store", None)
    get_creds = getattr(store, "get_host_creds", None)
    if not callable(get_creds):
        raise MlopsError(NEEDS_SERVER)
    method = "GET" if action == "list" else "POST"
    kwargs = {"params": params} if method == "GET" else {"json": body or {}}
    resp = http_request(get_creds(), REQUEST_ROUTE_PREFIX + action, method, max_retries=0,
                        raise_on_status=False, **kwargs)  # fmt: skip
    try:
        answer = resp.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or answer.get("route") != REQUEST_ROUTE_ID:
        raise MlopsError(NEEDS_SERVER)
    if resp.status_code != 200:
        raise MlopsError(
            f"refused by the tracking server ({resp.status_code}): {answer.get('message')}"
        )
    return answer
