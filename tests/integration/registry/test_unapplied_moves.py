"""A promotion killed between its ledger claim and its alias write, on a real ``mlflow server``.

The history said "won -> v2" while ``champion`` stayed on v1 until someone re-ran the same
command. Now the next command that reads the alias (here ``show`` and ``history``) applies
the move, and the history records that once.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import mlflow
import pytest

from core.aliases import APPLY_GRACE_SECONDS
from tests.integration.registry.conftest import register, unique
from tests.support.processes import REPO, child_env

pytestmark = pytest.mark.integration

# The promotion, SIGKILLed by itself right after its ledger claim: the first write of the
# move proper (the version's tags) never happens, nor does the alias write.
KILLED_AFTER_CLAIM = '''
import os
import signal
import sys

import core.aliases


def _killed(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)


core.aliases._tag_version = _killed
from registry.cli import main

sys.exit(main(sys.argv[1:]))
'''


def _history(cli, name: str) -> list[dict]:
    code, out, err = cli("history", name, "--output", "json")
    assert code == 0, err
    return json.loads(out)["attempts"]


def test_a_move_killed_after_its_claim_is_applied_by_the_next_reader_once(
        cli, registry_server, logged_models, tmp_path, caplog):
    name = unique("killed")
    client = mlflow.MlflowClient(registry_server, registry_server)
    v1 = register(registry_server, name, logged_models["weak"])
    v2 = register(registry_server, name, logged_models["strong"])
    code, _, err = cli("promote", f"{name}/{v1}", "--reason", "first", "--force")
    assert code == 0, err

    script = tmp_path / "killed_promote.py"
    script.write_text(KILLED_AFTER_CLAIM)
    env = child_env({"MLFLOW_TRACKING_URI": registry_server, "MLFLOW_TRACKING_USERNAME": "bob",
                     "MLOPS_POLICY_DIR": str(tmp_path)})
    env.pop("MLFLOW_REGISTRY_URI", None)
    killed = subprocess.run(
        [sys.executable, str(script), "promote", f"{name}/{v2}", "--reason", "better",
         "--force"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    claimed = time.monotonic()
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert client.get_registered_model(name).aliases["champion"] == v1

    # within the grace the move is its winner's to finish: a reader leaves it
    code, out, err = cli("show", f"{name}@champion", "--output", "json")
    assert code == 0, err
    if time.monotonic() - claimed < APPLY_GRACE_SECONDS - 1:
        assert json.loads(out)["version"] == v1

    time.sleep(max(0.0, APPLY_GRACE_SECONDS + 1 - (time.monotonic() - claimed)))
    code, out, err = cli("show", f"{name}@champion", "--output", "json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["version"] == v2
    assert "champion" in shown["aliases"]
    # said once, as a warning (on stderr outside the test)
    assert f"champion of {name}: applied the recorded move 2" in caplog.text
    assert client.get_registered_model(name).aliases["champion"] == v2
    tags = client.get_model_version(name, v2).tags
    assert tags["mlops.promotion.champion.forced"] == "true"  # the killed move's own record

    attempts = _history(cli, name)
    moves = [(a["kind"], a["version"], a["previous"], a["outcome"]) for a in attempts]
    assert moves == [("promote", v1, None, "won"), ("promote", v2, v1, "won"),
                     ("apply", v2, v1, "applied")], moves
    assert attempts[1]["by"] == "bob" and attempts[2]["by"] == "alice"
    assert _history(cli, name) == attempts  # read again: nothing applied or recorded twice
    # and the next promotion starts from v2: rolling back returns to v1
    code, out, err = cli("rollback", name, "--reason", "v2 misbehaves")
    assert code == 0, err
    assert f"to version {v1}; previous: {v2}" in out
