"""THE alias move: the only code that sets or deletes a registered model's alias.

Every move of an alias (a release manager's promotion or rollback, the workflow's
auto-champion and challenger, a SageMaker rollout or its revert, retraining) goes through
:func:`move_alias` or :func:`remove_alias`, which

* compare-and-set through the ledger (:mod:`core.ledger`): of concurrent moves that saw the
  same state exactly one wins, the others raise :class:`~core.errors.LostRace`;
* record the attempt: a registered-model tag ``mlops.history.<attempt id>`` holding a JSON
  record (alias, version, previous holder, who, when, why, kind, forced, gate results, ledger
  slot, outcome). Attempt ids start with the UTC time in milliseconds, so the tags sort oldest
  first and travel with the model (visible on its page in the UI). The project's tracking
  server (``tracking.governance``) writes the user it authenticated as ``by`` and records a
  move it refuses (a protected alias) with the outcome ``refused``;
* tag the winner: version tags ``mlops.promotion.<alias>.{by,at,reason,previous,forced,gates,
  attempt,kind}`` on the version that took the alias.

Gates (whether a version *may* take an alias) are the caller's decision: the registry's
promotion policy, the workflow's comparison with the champion, a rollout's alarms.

A move whose process died after winning the ledger but before setting the alias is applied
by the next command that reads the alias (:func:`apply_recorded_moves`, called where the alias
is read: :func:`read_state`, :func:`read_history`, :func:`core.models.resolve_model`), through
the same writer, and recorded once (kind ``apply``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from core import names
from core.connection import is_server
from core.errors import LostRace, MlopsError, explain, http_status
from core.history import (  # noqa: F401  (callers import the record's names from here too)
    HISTORY_TAG_PREFIX,
    Attempt,
    current_user,
    iso,
    new_attempt_id,
    now_ms,
    refused_attempt,
)
from core.ledger import Claim, Ledger, claim_value, find_ledger, open_ledger, parse_claim
from core.lookup import alias_holder, as_json, get_model

_logger = logging.getLogger(__name__)

PROMOTION_TAG_PREFIX = names.PROMOTION_TAG_PREFIX
DEFAULT_ALIAS = "champion"
#: The kinds of move the history tells apart.
KINDS = ("promote", "rollback", "auto", "rollout", "revert", "retrain", "remove")
#: The history record of a recorded move applied by a later command (not a move itself).
APPLY_KIND = "apply"
#: Attempts still pending after this long are shown as abandoned (their process died).
PENDING_GRACE_SECONDS = 120
#: A winner applies its move within a second or two; a reader leaves a younger unapplied move
#: to it (and to clocks that differ a little), so the history does not credit the reader.
APPLY_GRACE_SECONDS = 10
RECONCILE_ROUNDS = 20
#: The governance server's promotion route (``tracking.promotions``): where a move against a
#: tracking server is made, by the server itself. A server without it (stock MLflow) answers
#: something else, and the move is then made from here as before.
SERVER_MOVE_PATH = "/api/2.0/mlops/aliases/move"
#: The marker of the route's answers (MLflow's own answers, a 404 or its plain-text 403, lack it).
SERVER_ROUTE_ID = "governance.aliases.move"


@dataclass(frozen=True)
class Outcome:
    """What a move did: ``promoted`` (moved), ``removed`` or ``unchanged`` (already there)."""

    status: str
    name: str
    alias: str
    version: str | None
    previous: str | None
    attempt: Attempt | None = None
    #: ``requested``: the server filed a promotion request instead (its record, a dict).
    request: dict | None = None


def _writer(client):
    """Where a move writes: the registry client behind ``client``.

    MLflow 3's ``MlflowClient`` reads the registered model before every registry write, to
    refuse prompts: one extra round trip per write, 11 of the 33 of a move. :func:`read_state`
    makes that check once (``get_registered_model`` refuses a prompt); the writes of the move
    then go straight to the registry.
    """
    get = getattr(client, "_get_registry_client", None)
    return get() if callable(get) else client


def _write(client, name: str, attempt: Attempt, action: str) -> Attempt:
    """Write ``attempt``'s record; a final one (not pending) is linked into the chain first.

    Returns:
        The record as written (with its place in the chain).
    """
    from mlflow.exceptions import MlflowException

    from core.audit import link

    try:
        if attempt.outcome != "pending":
            attempt = link(client, name, attempt)
        _writer(client).set_registered_model_tag(name, attempt.tag, attempt.to_json())
        return attempt
    except MlflowException as exc:
        body = getattr(exc, "json", None)  # a JSON error answer (MLflow's own 403 is plain text)
        if http_status(exc) == 403 and isinstance(body, dict) and body.get("message"):
            # The project's tracking server (tracking.governance) refused the move and
            # recorded it as refused; its message says who may make it.
            raise MlopsError(f"refused by the tracking server (403): {body['message']}") from None
        raise MlopsError(explain(exc, action)) from None


def _forget(client, name: str, attempt: Attempt) -> None:
    """Remove an attempt's record after it failed before taking part in the race."""
    from mlflow.exceptions import MlflowException

    try:
        _writer(client).delete_registered_model_tag(name, attempt.tag)
    except MlflowException as exc:  # the record then shows as abandoned
        _logger.warning("could not remove attempt %s: %s", attempt.id, exc)


def _version_tags(attempt: Attempt) -> dict[str, str]:
    prefix = f"{PROMOTION_TAG_PREFIX}{attempt.alias}."
    return {
        prefix + "by": attempt.by,
        prefix + "at": iso(attempt.at),
        prefix + "reason": attempt.reason,
        prefix + "previous": attempt.previous or "",
        prefix + "forced": str(attempt.forced).lower(),
        prefix + "kind": attempt.kind,
        prefix + "attempt": attempt.id,
        prefix + "gates": as_json(attempt.gates),
    }


def _point(client, name: str, alias: str, version: str | None) -> None:
    """Set ``alias`` to ``version`` (None: delete it); a collision is left to the next check."""
    from mlflow.exceptions import MlflowException

    writer = _writer(client)
    try:
        if version is None:
            writer.delete_registered_model_alias(name, alias)
        else:
            writer.set_registered_model_alias(name, alias, version)
    except MlflowException as exc:
        if http_status(exc) in (401, 403):
            raise
        # Two first-ever writes of an alias collide on PostgreSQL's primary key (400), and
        # deleting an alias already gone is refused: either way, look again.
        _logger.info("alias write collided (%s); checking again", exc)


def _tag_version(client, name: str, version: str, tags: dict[str, str]) -> None:
    """Set the version tags of a move: one request per tag (MLflow has no batch for them).

    Against a tracking server the requests go out together, so eight tags cost about one
    round trip; a local store is written tag after tag (SQLite takes one writer at a time).
    """
    writer = _writer(client)
    uri = str(getattr(client, "_registry_uri", None) or getattr(client, "tracking_uri", ""))
    if not is_server(uri):
        for key, value in tags.items():
            writer.set_model_version_tag(name, version, key, value)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(tags), thread_name_prefix="alias-tags") as pool:
        futures = [pool.submit(writer.set_model_version_tag, name, version, key, value)
                   for key, value in tags.items()]
    for future in futures:
        future.result()  # the first failure (e.g. 403) is raised


def reconcile_alias(client, ledger: Ledger, name: str, alias: str) -> str | None:
    """Point ``alias`` at the ledger's head version (or remove it); repeat until both agree.

    Every process that writes the alias runs this afterwards, so the last write is always
    followed by a check against the newest claim: a slow winner of an older slot cannot
    leave the alias behind. An alias the ledger has never recorded is left alone.
    """
    for _ in range(RECONCILE_ROUNDS):
        slot, head = ledger.head(name, alias)
        holder = alias_holder(client, name, alias)
        if slot == 0 or holder == head:
            return head
        _point(client, name, alias, head)
    raise MlopsError(f"alias {alias!r} of {name!r} kept moving; run the command again")


@dataclass(frozen=True)
class AliasState:
    """What a command saw when it started: the ledger's last move and the alias's holder.

    The move is a compare-and-set against this state: it claims move ``slot + 1``, which is
    only free if nobody moved the alias since.
    """

    slot: int
    holder: str | None


def read_state(client, name: str, alias: str, expect: str | None = None) -> AliasState:
    """The state a move will compare against.

    Args:
        client: MLflow client of the registry.
        name: registered model.
        alias: the alias.
        expect: None for the state now (ledger head, then the alias's holder); else a
            version (``"none"``: nobody) the caller expects to hold the alias: the state is
            then the last time it did, so the move loses if the alias moved since.

    Raises:
        ModelNotFound: ``unknown model 'name'`` (the model must exist before its alias moves).
        LostRace: ``expect`` never held the alias and does not hold it now.
    """
    ledger = find_ledger(client)
    slots = ledger.slots(name, alias) if ledger else {}
    slot = max(slots, default=0)
    # get_registered_model (not the alias endpoint, same cost) also refuses a prompt, the
    # check the writes of the move skip (see _writer).
    model = get_model(client, name)
    holder = apply_recorded_moves(client, model, alias, ledger, {alias: slots}).get(alias)
    if expect is None:
        return AliasState(slot, holder)
    want = None if str(expect).lower() == "none" else str(expect)
    held = ledger.last_held_by(name, alias, want) if ledger else None
    if held is not None:
        return AliasState(held, want)
    if holder == want:  # no move recorded yet
        return AliasState(slot, holder)
    raise LostRace(
        f"{alias!r} of {name!r} is held by {_v(holder)}, not by {_v(want)} as expected; "
        "nothing changed"
    )


def _v(version: str | None) -> str:
    return f"version {version}" if version else "no version"


def move_alias(
    client,
    name: str,
    version: str | int | None,
    alias: str,
    reason: str,
    by: str | None = None,
    kind: str = "promote",
    forced: bool = False,
    gates: list[dict] | None = None,
    state: AliasState | None = None,
    request: str | None = None,
    approvals: list[dict] | None = None,
    evidence: str | None = None,
    emergency: bool = False,
) -> Outcome:
    """Move ``alias`` of ``name`` to ``version`` (None: remove it) if nobody moved it since.

    Args:
        client: MLflow client of the registry.
        name: registered model.
        version: version to move the alias to; None removes the alias.
        alias: the alias.
        reason: why (recorded).
        by: who (recorded; default :func:`current_user`).
        kind: one of :data:`KINDS` (recorded).
        forced: the caller's gates were overridden (recorded).
        gates: gate results to record.
        state: what the caller decided on (default: read now). A move since then makes
            this one lose.
        request: the promotion request this move executes (the server's, recorded).
        approvals: that request's approvals (recorded).
        evidence: the digest of what the approvers reviewed (:mod:`core.evidence`, recorded).
        emergency: a release manager's emergency rollback, without approvals (recorded; the
            governance server files it for a second release manager's review).

    Idempotent: if ``alias`` already points at ``version`` nothing is written.

    Raises:
        LostRace: a concurrent move of the same alias won; this attempt is recorded as lost
            and nothing else changed.
        MlopsError: the server refused a write (e.g. 403); nothing was changed.
    """
    from mlflow.exceptions import MlflowException

    if kind not in KINDS:
        raise ValueError(f"unknown kind of alias move {kind!r}; one of {', '.join(KINDS)}")
    version = None if version is None else str(version)
    by = by or current_user()
    state = state or read_state(client, name, alias)
    if state.holder == version:
        return Outcome("unchanged", name, alias, version, state.holder)
    served = _server_move(client, name, version, alias, reason, kind, forced, gates, state,
                          emergency)
    if served is not None:
        return served
    slot = state.slot + 1
    at = now_ms()
    attempt = Attempt(
        id=new_attempt_id(at), alias=alias, version=version, previous=state.holder, by=by,
        at=at, reason=reason, kind=kind, forced=forced, slot=slot, gates=list(gates or []),
        request=request, approvals=list(approvals or []), evidence=evidence,
        emergency=emergency,
    )
    action = f"{'remove' if version is None else 'move'} {alias!r} of {name!r}"
    # First write: the record. A user who may not move the alias (403) stops here.
    _write(client, name, attempt, action)
    value = claim_value(attempt.id, version, state.holder)
    try:
        ledger = open_ledger(client)
        holder = ledger.claim(name, alias, slot, value)
    except MlflowException as exc:
        _forget(client, name, attempt)
        raise MlopsError(explain(exc, "record the move in the ledger")) from None
    except MlopsError:
        _forget(client, name, attempt)
        raise
    if holder != value:
        winner = parse_claim(holder)
        lost = replace(attempt, outcome="lost", winner=winner.attempt_id)
        _write(client, name, lost, action)
        if winner.version == version:
            # Someone else made the same move first: the alias is where this caller wants it.
            return Outcome("unchanged", name, alias, version, state.holder, lost)
        raise LostRace(
            f"lost the race for {alias!r} of {name!r}: move {slot} went to "
            f"{_v(winner.version)} (attempt {winner.attempt_id}) since this command started; "
            "nothing changed"
        )
    won = replace(attempt, outcome="won")
    try:
        if version is not None:
            _tag_version(client, name, version, _version_tags(won))
        # The winner writes its version, then checks it against the newest claim: a later
        # move that won meanwhile is restored by the check (reconcile_alias).
        _point(client, name, alias, version)
        reconcile_alias(client, ledger, name, alias)
    except MlflowException as exc:
        raise MlopsError(
            f"move {slot} of {alias!r} is recorded for {_v(version)} but applying it "
            f"failed ({explain(exc)}); the next command that reads the alias applies it"
        ) from None
    try:
        won = _write(client, name, won, action)
    except MlopsError as exc:  # the ledger already says who won; the record is a copy
        _logger.warning("move applied but its record was not updated: %s", exc)
    _logger.info("%s@%s: %s -> %s (%s, %s)", name, alias, state.holder, version, kind,
                 attempt.id)
    status = "removed" if version is None else "promoted"
    return Outcome(status, name, alias, version, state.holder, won)


def _server_move(client, name: str, version: str | None, alias: str, reason: str, kind: str,
                 forced: bool, gates: list[dict] | None, state: AliasState,
                 emergency: bool = False) -> Outcome | None:
    """The move made by the governance server's promotion route; None where there is none.

    The server compares against ``state`` (what the caller decided on) and writes the record,
    the ledger, the tags and the alias itself, under the user it authenticated.

    Raises:
        LostRace: the alias moved since ``state`` (409).
        MlopsError: refused (403, recorded by the server), unknown model or version.
    """
    writer = _writer(client)
    store = getattr(writer, "store", None)
    get_creds = getattr(store, "get_host_creds", None)
    if not callable(get_creds):
        return None  # a local store: the move is made here
    from mlflow.utils.rest_utils import http_request

    body = {"name": name, "alias": alias, "version": version, "reason": reason, "kind": kind,
            "forced": forced, "gates": list(gates or []), "expect_slot": state.slot,
            "expect_holder": state.holder, "emergency": emergency}
    resp = http_request(get_creds(), SERVER_MOVE_PATH, "POST", json=body, max_retries=0,
                        raise_on_status=False)
    try:
        answer = resp.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or answer.get("route") != SERVER_ROUTE_ID:
        return None  # not the governance server: MLflow's own answer to an unknown route
    if resp.status_code == 409:
        raise LostRace(answer["message"])
    if resp.status_code == 403:
        raise MlopsError(f"refused by the tracking server (403): {answer['message']}")
    if resp.status_code == 404:
        from core.lookup import ModelNotFound

        raise ModelNotFound(answer["message"])
    if resp.status_code != 200:
        raise MlopsError(f"the tracking server refused the move ({resp.status_code}): "
                         f"{answer.get('message')}")
    if answer.get("status") == "requested":  # the alias needs approvals: a request is filed
        return Outcome("requested", name, alias, version, state.holder,
                       request=answer.get("request"))
    record = answer.get("attempt")
    return Outcome(answer["status"], name, alias, answer.get("version"), answer.get("previous"),
                   Attempt.from_json(record) if record else None, request=answer.get("request"))


def remove_alias(client, name: str, alias: str, reason: str, by: str | None = None,
                 kind: str = "remove", state: AliasState | None = None) -> Outcome:
    """Remove ``alias`` of ``name`` through the compare-and-set, recorded like a move."""
    return move_alias(client, name, None, alias, reason, by=by, kind=kind, state=state)


def read_history(client, name: str, alias: str | None = None) -> list[Attempt]:
    """Every recorded attempt to move an alias of ``name``, oldest first.

    Outcomes are read from the ledger (who holds each slot), so an attempt whose process
    died mid-way is shown as ``lost`` or ``abandoned``, never as a move that happened. A won
    move the alias lacks is applied first (:func:`apply_recorded_moves`), so the history
    and the alias agree; its ``apply`` record is in the list.
    """
    model = get_model(client, name)
    ledger = find_ledger(client)
    slots = ledger.model_slots(name) if ledger else {}
    if apply_recorded_moves(client, model, alias, ledger, slots) != _aliases(model):
        model = get_model(client, name)  # with the record of what was applied
    attempts = []
    for key, value in (model.tags or {}).items():
        if key.startswith(HISTORY_TAG_PREFIX):
            try:
                attempts.append(Attempt.from_json(value))
            except (ValueError, TypeError):
                _logger.warning("unreadable history tag %s", key)
    if alias:
        attempts = [a for a in attempts if a.alias == alias]
    resolved = []
    for a in attempts:
        if a.outcome == "refused":  # refused by the server: it never took part in the race
            resolved.append(a)
            continue
        if a.kind == APPLY_KIND:  # the completion of a move, not a claim of its own
            if a.outcome == "pending" and now_ms() - a.at > PENDING_GRACE_SECONDS * 1000:
                a = replace(a, outcome="abandoned")
            resolved.append(a)
            continue
        holder = slots.get(a.alias, {}).get(a.slot)
        if holder is not None and parse_claim(holder).attempt_id == a.id:
            a = replace(a, outcome="won")
        elif holder is not None:
            a = replace(a, outcome="lost", winner=parse_claim(holder).attempt_id)
        elif now_ms() - a.at > PENDING_GRACE_SECONDS * 1000:
            a = replace(a, outcome="abandoned")
        resolved.append(a)
    return sorted(resolved, key=lambda a: (a.at, a.id))


# ------------------------------------------------------------------ recorded, not applied
#: (model, alias, slot) already reported as not applicable by this process: said once.
_WARNED: set[tuple[str, str, int]] = set()


def _aliases(model) -> dict[str, str]:
    return {alias: str(version) for alias, version in (model.aliases or {}).items()}


def _unapplied(slots: dict[int, str], holder: str | None) -> tuple[int, Claim] | None:
    """The ledger's last move of an alias if it is recorded but not applied, else None.

    Only the head counts (an older move is superseded by the newer one), and only while the
    alias still stands where that move found it (the claim's ``previous``): the alias then
    last moved before the head was claimed. An alias moved since by other means than the
    ledger (a plain MLflow client, the UI) holds a later decision; it is left alone.
    """
    if not slots:
        return None
    slot = max(slots)
    claim = parse_claim(slots[slot])
    if claim.version == holder or claim.previous != holder:
        return None
    return slot, claim


def _claimed_at(attempt_id: str) -> int:
    head = attempt_id.split("-", 1)[0]
    return int(head) if head.isdigit() else 0


def apply_recorded_moves(client, model, alias: str | None = None, ledger: Ledger | None = None,
                         slots: dict[str, dict[int, str]] | None = None) -> dict[str, str]:
    """Apply each alias move of ``model`` the ledger records as won but the alias lacks.

    A move's process can die between winning its ledger slot and setting the alias (the
    tracking server lost, the process killed): the history then says "won" while the alias
    stays where it was. Every command that reads an alias calls this first, so the next one
    finishes the move through the one writer, not only a re-run of the same command. The
    move is applied only if it is the ledger's head for its alias, older than
    :data:`APPLY_GRACE_SECONDS`, and the alias still holds the move's ``previous`` (see
    :func:`_unapplied`); it is recorded once, as the history record ``<attempt>-applied``
    (kind ``apply``). A user the server does not let move the alias (403) changes nothing;
    the command goes on with the alias as it is, after one warning.

    Args:
        client: MLflow client of the registry.
        model: the registered model as just read (its ``name``, ``aliases`` and ``tags``).
        alias: only this alias (default: every alias of the model the ledger knows).
        ledger: the ledger, if the caller has it (default: found now).
        slots: ``{alias: {slot: claim}}`` of the model, if the caller read them.

    Returns:
        ``{alias: version}`` of the model afterwards.

    Raises:
        MlflowException: the tracking server could not be reached.
    """
    aliases = _aliases(model)
    ledger = ledger or find_ledger(client)
    if ledger is None:
        return aliases
    if slots is None:
        slots = ledger.model_slots(model.name)
    for name, taken in slots.items():
        if alias is not None and name != alias:
            continue
        found = _unapplied(taken, aliases.get(name))
        if found is None or now_ms() - _claimed_at(found[1].attempt_id) < (
                APPLY_GRACE_SECONDS * 1000):
            continue
        holder = _apply(client, ledger, model, name, *found)
        if holder is None:
            aliases.pop(name, None)
        else:
            aliases[name] = holder
    return aliases


def _apply(client, ledger: Ledger, model, alias: str, slot: int, claim: Claim) -> str | None:
    """Apply ``claim`` (move ``slot`` of ``alias``); the holder afterwards."""
    from mlflow.exceptions import MlflowException

    from core.connection import unreachable

    name = model.name
    moved = _recorded(model, claim.attempt_id) or Attempt(
        id=claim.attempt_id, alias=alias, version=claim.version, previous=claim.previous,
        by="unknown", at=_claimed_at(claim.attempt_id), reason="", slot=slot)
    record = Attempt(
        id=f"{claim.attempt_id}-applied", alias=alias, version=claim.version,
        previous=claim.previous, by=current_user(), at=now_ms(), kind=APPLY_KIND, slot=slot,
        reason=f"move {slot} ({moved.kind} by {moved.by}, attempt {claim.attempt_id}) was "
               "recorded but its command stopped before setting the alias; applied now",
    )
    action = f"apply move {slot} of {alias!r} of {name!r} to {_v(claim.version)}"
    try:
        # First write: the record. A user who may not move the alias (403) stops here.
        _write(client, name, record, action)
        if claim.version is not None:
            tags = _version_tags(replace(moved, outcome="won"))
            prefix = f"{PROMOTION_TAG_PREFIX}{alias}."
            have = client.get_model_version(name, claim.version).tags or {}
            if have.get(prefix + "attempt") != claim.attempt_id:
                _tag_version(client, name, claim.version, tags)
        _point(client, name, alias, claim.version)
        holder = _follow(client, ledger, name, alias)
        _write(client, name, replace(record, outcome="applied"), action)
    except (MlopsError, MlflowException) as exc:
        if unreachable(exc):
            raise
        if (name, alias, slot) not in _WARNED:
            _WARNED.add((name, alias, slot))
            _logger.warning(
                "%s of %s: move %d to %s is recorded but not applied, and this command could "
                "not apply it (%s); a release manager's next command will",
                alias, name, slot, _v(claim.version), explain(exc))
        return _aliases(model).get(alias)
    _logger.warning("%s of %s: applied the recorded move %d (%s -> %s, %s by %s, attempt %s)",
                    alias, name, slot, claim.previous or "none", claim.version or "none",
                    moved.kind, moved.by, claim.attempt_id)
    return holder


def _recorded(model, attempt_id: str) -> Attempt | None:
    """The history record of an attempt, from the model's tags (None when unreadable)."""
    text = (model.tags or {}).get(HISTORY_TAG_PREFIX + attempt_id)
    try:
        return Attempt.from_json(text) if text else None
    except (ValueError, TypeError):
        return None


def _follow(client, ledger: Ledger, name: str, alias: str) -> str | None:
    """After a late apply: follow newer moves the same way until the alias holds the head."""
    for _ in range(RECONCILE_ROUNDS):
        holder = alias_holder(client, name, alias)
        found = _unapplied(ledger.slots(name, alias), holder)
        if found is None:
            return holder
        _point(client, name, alias, found[1].version)
    raise MlopsError(f"alias {alias!r} of {name!r} kept moving; run the command again")
