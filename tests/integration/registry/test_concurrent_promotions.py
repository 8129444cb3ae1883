"""Promotions racing for one alias through a real ``mlflow server`` (SQLite, then PostgreSQL).

MLflow's alias write is last-writer-wins; the registry's compare-and-set must leave exactly
one winner, tell every loser, and keep every attempt in the history.
"""

from __future__ import annotations

import multiprocessing
import subprocess
import sys

import mlflow
import pytest

from core.ledger import find_ledger
from registry.promotion import read_history
from tests.integration.registry.conftest import register, unique, write_policy
from tests.support.processes import REPO, child_env

pytestmark = pytest.mark.integration

RACERS = 8


@pytest.fixture
def logged(logged_models):
    return logged_models["strong"]


def _versions(uri, name, logged, n):
    return [register(uri, name, logged) for _ in range(n)]


def test_eight_cli_promotions_leave_one_winner(registry_server, logged, tmp_path):
    """Eight ``python -m registry promote`` processes, all expecting no champion yet."""
    name = unique("race")
    # Gates that need no scoring keep eight processes on two cores quick.
    write_policy(tmp_path, name, thresholds={}, champion=None)
    versions = _versions(registry_server, name, logged, RACERS)
    env = child_env({"MLFLOW_TRACKING_URI": registry_server, "MLOPS_POLICY_DIR": str(tmp_path),
                     "MLFLOW_TRACKING_USERNAME": "racer"})
    env.pop("MLFLOW_REGISTRY_URI", None)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "registry", "promote", f"{name}/{v}", "--to", "champion",
             "--reason", f"racer {v}", "--expect-previous", "none"],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for v in versions
    ]
    results = [(p.wait(timeout=240), *p.communicate()) for p in procs]

    winners = [v for v, (code, _, _) in zip(versions, results, strict=True) if code == 0]
    assert len(winners) == 1, results
    for v, (code, out, err) in zip(versions, results, strict=True):
        if v == winners[0]:
            assert f"promoted {name}/{v} to champion" in out
        else:
            assert code == 3, (code, err)
            lines = err.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: lost the race"), err

    client = mlflow.MlflowClient(registry_server, registry_server)
    assert client.get_registered_model(name).aliases["champion"] == winners[0]
    history = read_history(client, name, "champion")
    assert len(history) == RACERS
    assert sorted(a.version for a in history) == sorted(versions)
    assert [a.version for a in history if a.outcome == "won"] == winners
    assert {a.outcome for a in history if a.version != winners[0]} == {"lost"}
    assert find_ledger(client).head(name, "champion") == (1, winners[0])


def _racer(uri, name, version, barrier, results, rounds):
    """One racing process: each round, read the state, wait for all, then move the alias."""
    from mlflow.utils import request_utils

    from registry.errors import LostRace
    from registry.promotion import move_alias, read_state

    # A forked child must not reuse the parent's pooled HTTP connections.
    request_utils._cached_get_request_session.cache_clear()
    client = mlflow.MlflowClient(uri, uri)
    for r in range(rounds):
        barrier.wait(timeout=120)
        state = read_state(client, name, "champion")
        barrier.wait(timeout=120)  # everyone has seen the same state before anyone claims
        try:
            out = move_alias(client, name, version, "champion", f"round {r}", f"p{version}",
                             state=state)
            results.put((r, version, out.status))
        except LostRace:
            results.put((r, version, "lost"))
        except Exception as exc:  # noqa: BLE001 - reported to the test
            results.put((r, version, f"error {exc!r}"))


def test_claims_released_at_one_instant_have_one_winner(registry_server, logged):
    """Eight processes claim the same move at the same instant, several rounds in a row."""
    name = unique("barrier")
    versions = _versions(registry_server, name, logged, RACERS)
    rounds = 3
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(RACERS), ctx.Queue()
    procs = [ctx.Process(target=_racer, args=(registry_server, name, v, barrier, results,
                                               rounds)) for v in versions]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=240) for _ in range(RACERS * rounds)]
    for p in procs:
        p.join(timeout=60)

    client = mlflow.MlflowClient(registry_server, registry_server)
    history = read_history(client, name, "champion")
    winners_by_round = {}
    for r in range(rounds):
        this = [(v, s) for rr, v, s in outcomes if rr == r]
        won = [v for v, s in this if s == "promoted"]
        assert len(won) == 1, this
        # The round's winner may already hold the alias from an earlier round ("unchanged").
        assert all(s in ("lost", "unchanged") for v, s in this if v not in won), this
        winners_by_round[r] = won[0]
    assert client.get_registered_model(name).aliases["champion"] == winners_by_round[rounds - 1]
    assert [a.version for a in history if a.outcome == "won"] == list(winners_by_round.values())
    recorded = [a for a in history if a.outcome in ("won", "lost")]
    unchanged = sum(1 for _, _, s in outcomes if s == "unchanged")
    assert len(recorded) == RACERS * rounds - unchanged
    slots = find_ledger(client).slots(name, "champion")
    assert sorted(slots) == list(range(1, rounds + 1))
