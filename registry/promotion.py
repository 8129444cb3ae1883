"""Promotion and rollback: the registry's gates in front of the one alias move.

Whether a version *may* take an alias is decided here (the model's promotion policy); the move
itself, its compare-and-set and its history record are :mod:`core.aliases`, shared with every
other package that moves aliases (the workflow, SageMaker rollouts, retraining).
"""

from __future__ import annotations

import logging

from core.aliases import (
    DEFAULT_ALIAS,
    HISTORY_TAG_PREFIX,
    PROMOTION_TAG_PREFIX,
    AliasState,
    Attempt,
    Outcome,
    iso,
    move_alias,
    read_history,
    read_state,
)
from registry.errors import RegistryError

__all__ = [
    "DEFAULT_ALIAS", "HISTORY_TAG_PREFIX", "PROMOTION_TAG_PREFIX", "AliasState", "Attempt",
    "Outcome", "champion_stack", "check_gates", "iso", "move_alias", "promote_version",
    "read_history", "read_state", "rollback", "rollback_target",
]

_logger = logging.getLogger(__name__)


def champion_stack(moves: list[Attempt]) -> list[str]:
    """The versions that held the alias, oldest first, with rolled-back reigns removed.

    A promotion pushes its version; a rollback to a version already on the stack drops
    everything after it (that is what "undo" means), otherwise it pushes.
    """
    stack: list[str] = []
    for move in sorted(moves, key=lambda a: a.slot):
        if move.outcome != "won" or move.version is None:
            continue  # lost, abandoned, or a removal of the alias (nobody reigned)
        if move.previous and move.previous != move.version and (
            not stack or stack[-1] != move.previous
        ):
            # the alias was set outside this command line before this move (the workflow's
            # auto_champion on a local store, or a plain MLflow client): it still reigned
            stack.append(move.previous)
        if move.kind == "rollback" and move.version in stack:
            del stack[stack.index(move.version) + 1:]
        else:
            stack.append(move.version)
    return stack


def rollback_target(moves: list[Attempt], current: str | None) -> str | None:
    """The version a rollback returns to: the previous entry of :func:`champion_stack`."""
    stack = champion_stack(moves)
    while stack and stack[-1] == current:
        stack.pop()
    return stack[-1] if stack else None


def rollback(
    client, name: str, reason: str, by: str, to: str | None = None, alias: str = DEFAULT_ALIAS,
    emergency: bool = False,
) -> Outcome:
    """Move ``alias`` back to the previous holder from the history (or to version ``to``).

    On the team's tracking server a rollback of an alias that needs approvals files a request
    (outcome ``requested``); ``emergency`` moves it at once, recorded as an emergency that a
    second release manager reviews (the outcome's ``request`` is that record).

    Raises:
        RegistryError: nothing to roll back to, or ``to`` is not a version of ``name``; an
            emergency rollback without the team's tracking server.
    """
    if emergency:
        from core.approvals import EMERGENCY_NEEDS_SERVER
        from core.connection import is_server, registry_uri

        if not is_server(registry_uri()):
            raise RegistryError(EMERGENCY_NEEDS_SERVER)
    from registry.versions import resolve_version

    state = read_state(client, name, alias)
    if to is None:
        to = rollback_target(read_history(client, name, alias), state.holder)
        if to is None:
            raise RegistryError(
                f"no previous {alias!r} of {name!r} in the history to roll back to"
            )
    else:
        to = str(resolve_version(client, f"{name}/{to}").version)
    return move_alias(client, name, to, alias, reason, by, kind="rollback", state=state,
                      emergency=emergency)


def promote_version(
    client,
    ref: str,
    alias: str,
    reason: str,
    by: str,
    policy_path: str | None = None,
    force: bool = False,
    expect_previous: str | None = None,
):
    """Validate ``ref`` against its model's policy, then move ``alias`` to it.

    Args:
        client: MLflow client of the registry.
        ref: ``NAME/VERSION`` (or ``NAME@ALIAS``, resolved now).
        alias: the alias to move, usually ``champion``.
        reason: why (recorded).
        by: who (recorded).
        policy_path: a policy file instead of ``conf/policies/<NAME>.yaml``.
        force: move even if gates fail or there is no policy (recorded as forced).
        expect_previous: move only if the alias is held by this version now (``"none"``:
            by no version). Without it, the holder seen when the command starts is expected.

    Returns:
        ``(Outcome, Validation | None)``.

    Raises:
        GateFailure: a gate failed and ``force`` is off; carries ``.validation``.
        LostRace: a concurrent promotion of the alias won.
        RegistryError: unknown model/version, missing policy, refused by the server.
    """
    from registry.versions import resolve_version

    mv = resolve_version(client, ref)
    name, version = mv.name, str(mv.version)
    # The compare-and-set expects the state the gates are evaluated against.
    state = read_state(client, name, alias, expect_previous)
    if state.holder == version:
        return Outcome("unchanged", name, alias, version, version), None
    mv, validation, gates = check_gates(client, mv, policy_path, force, alias)
    outcome = move_alias(client, name, version, alias, reason, by, kind="promote",
                         forced=force, gates=gates, state=state)
    return outcome, validation


def check_gates(client, ref, policy_path: str | None, force: bool, alias: str):
    """The model's policy for ``ref`` (a ``NAME/VERSION`` or a resolved version).

    Returns:
        ``(version, Validation | None, gate records)``.

    Raises:
        GateFailure: a gate failed and ``force`` is off; carries ``.validation``.
        RegistryError: unknown version, or no policy and ``force`` is off.
    """
    from registry.errors import GateFailure
    from registry.policy import load_policy
    from registry.validation import validate_version
    from registry.versions import resolve_version

    mv = resolve_version(client, ref) if isinstance(ref, str) else ref
    name, version = mv.name, str(mv.version)
    validation = None
    try:
        policy = load_policy(name, policy_path)
    except RegistryError as exc:
        if not force:
            raise
        gates = [{"gate": "policy", "passed": False, "value": "missing", "expected": "present",
                  "detail": str(exc)}]
    else:
        validation = validate_version(client, mv, policy)
        gates = [g.to_dict() for g in validation.gates]
        if not validation.passed and not force:
            failed = ", ".join(g.gate for g in validation.failed)
            raise GateFailure(
                f"{name}/{version} failed {len(validation.failed)} of {len(validation.gates)} "
                f"gates ({failed}); {alias!r} not moved (use --force --reason to override)",
                validation,
            )
    return mv, validation, gates
