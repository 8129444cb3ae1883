"""A move won in the ledger whose process died before it set the alias is applied by the next
reader, recorded once, and never over a later move. On the test's SQLite store.
"""

from __future__ import annotations

import mlflow
import pytest

from core.aliases import (
    APPLY_GRACE_SECONDS,
    APPLY_KIND,
    PROMOTION_TAG_PREFIX,
    AliasState,
    Attempt,
    move_alias,
    new_attempt_id,
    now_ms,
    read_history,
    read_state,
)
from core.ledger import claim_value, open_ledger
from core.models import alias_holder, resolve_model

NAME = "churn"


@pytest.fixture
def client(tmp_path):
    client = mlflow.MlflowClient()
    client.create_registered_model(NAME)
    for _ in range(3):
        client.create_model_version(NAME, source=str(tmp_path))
    move_alias(client, NAME, "1", "champion", "first", by="alice")
    return client


def claim_only(client, version: str | None, age_seconds: float = 2 * APPLY_GRACE_SECONDS,
               alias: str = "champion") -> Attempt:
    """The first two writes of a move (its record, its ledger claim), then the process "dies"."""
    state = read_state(client, NAME, alias)
    at = now_ms() - int(age_seconds * 1000)
    attempt = Attempt(id=new_attempt_id(at), alias=alias, version=version, previous=state.holder,
                      by="bob", at=at, reason="killed after its claim", slot=state.slot + 1)
    client.set_registered_model_tag(NAME, attempt.tag, attempt.to_json())
    value = claim_value(attempt.id, version, state.holder)
    assert open_ledger(client).claim(NAME, alias, attempt.slot, value) == value
    return attempt


def applies(history: list[Attempt]) -> list[Attempt]:
    return [a for a in history if a.kind == APPLY_KIND]


def test_history_applies_a_won_move_and_records_it_once(client):
    claimed = claim_only(client, "2")
    assert alias_holder(client, NAME, "champion") == "1"

    history = read_history(client, NAME)

    assert alias_holder(client, NAME, "champion") == "2"
    won = sorted((a for a in history if a.outcome == "won"), key=lambda a: a.slot)
    assert [(a.version, a.by) for a in won] == [("1", "alice"), ("2", "bob")]
    [applied] = applies(history)
    assert (applied.version, applied.previous, applied.outcome, applied.slot) == (
        "2", "1", "applied", claimed.slot)
    assert claimed.id in applied.reason
    tags = client.get_model_version(NAME, "2").tags
    assert tags[f"{PROMOTION_TAG_PREFIX}champion.attempt"] == claimed.id
    # read again: nothing more to apply, nothing recorded twice
    assert len(applies(read_history(client, NAME))) == 1


def test_the_one_resolver_applies_it_before_it_answers(client):
    claim_only(client, "2")
    assert resolve_model(client, f"{NAME}@champion").version == "2"
    assert len(applies(read_history(client, NAME))) == 1


def test_a_later_move_outside_the_ledger_is_not_undone(client):
    claim_only(client, "2")
    # after the claim, someone sets the alias with a plain MLflow client (the UI, a script)
    client.set_registered_model_alias(NAME, "champion", "3")

    history = read_history(client, NAME)

    assert alias_holder(client, NAME, "champion") == "3"
    assert resolve_model(client, f"{NAME}@champion").version == "3"
    assert applies(history) == []


def test_a_young_move_is_left_to_its_winner(client):
    claim_only(client, "2", age_seconds=0)
    assert resolve_model(client, f"{NAME}@champion").version == "1"
    assert applies(read_history(client, NAME)) == []


def test_only_the_head_is_applied(client):
    claim_only(client, "2")
    # a newer move, made on the state its command saw before move 2 was applied (1 held it)
    move_alias(client, NAME, "3", "champion", "newer", by="carol", state=AliasState(2, "1"))
    assert alias_holder(client, NAME, "champion") == "3"
    history = read_history(client, NAME)
    assert alias_holder(client, NAME, "champion") == "3"
    assert applies(history) == []
    assert sorted((a.slot, a.version) for a in history if a.outcome == "won") == [
        (1, "1"), (2, "2"), (3, "3")]


def test_a_promotion_after_an_unapplied_move_starts_from_it(client):
    """Promoting the old holder again is a real move back, not "already champion"."""
    claim_only(client, "2")
    outcome = move_alias(client, NAME, "1", "champion", "back to 1", by="alice",
                         state=read_state(client, NAME, "champion"))
    assert (outcome.status, outcome.previous) == ("promoted", "2")
    assert alias_holder(client, NAME, "champion") == "1"


def test_an_unapplied_removal_is_applied(client):
    claim_only(client, None)
    history = read_history(client, NAME)
    assert alias_holder(client, NAME, "champion") is None
    [applied] = applies(history)
    assert (applied.version, applied.previous) == (None, "1")
