"""Every model name MLflow accepts can be promoted, rolled back and read in the history.

The ledger keys a move by the model's name inside a run parameter key, whose characters MLflow
restricts; names outside them (``+``, a leading dot, emoji, very long names) are made safe
with a hash suffix. Against a real ``mlflow server`` on SQLite, then PostgreSQL, through
``python -m registry``'s entry point.
"""

from __future__ import annotations

import mlflow
import pytest

from core.ledger import find_ledger, model_key, slot_key
from registry.promotion import read_history
from tests.integration.registry.conftest import register

pytestmark = pytest.mark.integration

LONG = "long-" + "x" * 195
NAMES = ["churn+xgb", "modèle", "model with spaces", "名前", ".dots", "a..b", "emoji😀", LONG]




def _client(uri):
    return mlflow.MlflowClient(uri, uri)


def test_the_long_name_is_200_characters():
    assert len(LONG) == 200
    assert len(slot_key(LONG, "champion", 1)) <= 250  # MLflow's limit on parameter keys


@pytest.mark.parametrize("name", NAMES, ids=lambda n: n if len(n) < 30 else "200-characters")
def test_promote_promote_rollback_history(cli, registry_server, logged_models, name):
    client = _client(registry_server)  # each server (SQLite, PostgreSQL) starts empty
    v1 = register(registry_server, name, logged_models["strong"])
    v2 = register(registry_server, name, logged_models["strong"])

    code, out, err = cli("promote", f"{name}/{v1}", "--to", "champion", "--reason", "x",
                         "--force")
    assert code == 0, err
    assert f"promoted {name}/{v1} to champion (forced); previous: none" in out
    code, out, err = cli("promote", f"{name}/{v2}", "--reason", "x", "--force")
    assert code == 0, err
    assert f"promoted {name}/{v2} to champion (forced); previous: {v1}" in out
    code, out, err = cli("rollback", name, "--reason", "back")
    assert code == 0, err
    assert f"rolled back champion of {name} to version {v1}; previous: {v2}" in out
    assert client.get_registered_model(name).aliases["champion"] == v1

    moves = read_history(client, name, "champion")
    assert [(a.kind, a.version, a.previous, a.outcome) for a in moves] == [
        ("promote", v1, None, "won"), ("promote", v2, v1, "won"), ("rollback", v1, v2, "won")]
    assert find_ledger(client).head(name, "champion") == (3, v1)

    code, out, err = cli("history", name)
    assert code == 0, err
    rows = [line for line in out.splitlines() if " champion " in line]
    assert len(rows) == 3, out
    assert all("won" in row for row in rows)
    assert [("rollback" in r, "promote" in r) for r in rows] == [
        (False, True), (False, True), (True, False)]


def test_names_made_safe_alike_keep_separate_ledgers(cli, registry_server, logged_models):
    plus, underscore = "a+b", "a_b"
    assert model_key(plus) != model_key(underscore)
    client = _client(registry_server)
    versions = {}
    for name in (plus, underscore):
        versions[name] = [register(registry_server, name, logged_models["strong"])
                          for _ in range(2)]
    assert cli("promote", f"{plus}/{versions[plus][0]}", "--reason", "x", "--force")[0] == 0
    assert cli("promote", f"{plus}/{versions[plus][1]}", "--reason", "x", "--force")[0] == 0
    assert cli("promote", f"{underscore}/{versions[underscore][1]}", "--reason", "y",
               "--force")[0] == 0

    ledger = find_ledger(client)
    assert ledger.head(plus, "champion") == (2, versions[plus][1])
    assert ledger.head(underscore, "champion") == (1, versions[underscore][1])
    assert [a.reason for a in read_history(client, plus, "champion")] == ["x", "x"]
    assert [a.reason for a in read_history(client, underscore, "champion")] == ["y"]
    # rolling one back leaves the other alone
    assert cli("rollback", plus, "--reason", "back")[0] == 0
    assert client.get_registered_model(plus).aliases["champion"] == versions[plus][0]
    assert client.get_registered_model(underscore).aliases["champion"] == versions[underscore][1]


def test_mlflow_refuses_a_name_that_resolves_like_a_path(registry_server):
    # "..dots" never reaches the ledger: MLflow refuses it as a model name
    with pytest.raises(mlflow.exceptions.MlflowException, match="Names may be treated as files"):
        _client(registry_server).create_registered_model("..dots")
