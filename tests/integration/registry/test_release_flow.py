"""A release manager's day against a real ``mlflow server`` (SQLite, then PostgreSQL).

validate, promote, refuse, force, idempotent re-promote, rollback, history, show, diff, list
and the one-line errors, through ``python -m registry``'s entry point, asserting on what the
user sees and on what the registry then holds.
"""

from __future__ import annotations

import json

import mlflow
import pytest

from tests.integration.registry.conftest import register, unique, write_policy

pytestmark = pytest.mark.integration


@pytest.fixture
def logged(logged_models):
    return logged_models




def _client(uri):
    return mlflow.MlflowClient(uri, uri)


def _champion(client, name):
    return client.get_registered_model(name).aliases.get("champion")


def _assert_one_line_error(err: str, *fragments: str):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]


def test_promote_refuse_force_rollback_history(cli, registry_server, logged, tmp_path):
    name = unique("flow")
    write_policy(tmp_path, name)
    client = _client(registry_server)
    v1 = register(registry_server, name, logged["weak"])
    v2 = register(registry_server, name, logged["strong"])
    v3 = register(registry_server, name, logged["other"])

    # First champion: no champion to beat yet.
    code, out, err = cli("promote", f"{name}/{v1}", "--to", "champion", "--reason", "first")
    assert code == 0, err
    assert f"promoted {name}/{v1} to champion; previous: none" in out
    assert _champion(client, name) == v1

    # validate prints every gate with numbers, champion scored on the same test split.
    code, out, _ = cli("validate", f"{name}/{v2}")
    assert code == 0
    assert "beats champion on roc_auc" in out and "vs" in out and "delta +" in out
    assert f"{name}/{v2} passed all 5 gates" in out

    code, out, err = cli("promote", f"{name}/{v2}", "--to", "champion", "--reason", "better auc")
    assert code == 0, err
    assert f"previous: {v1}" in out
    assert _champion(client, name) == v2
    tags = client.get_model_version(name, v2).tags
    assert tags["mlops.promotion.champion.by"] == "alice"
    assert tags["mlops.promotion.champion.reason"] == "better auc"
    assert tags["mlops.promotion.champion.previous"] == v1
    assert tags["mlops.promotion.champion.forced"] == "false"
    assert all(g["passed"] for g in json.loads(tags["mlops.promotion.champion.gates"]))

    # Idempotent: promoting the champion again changes nothing (no new history entry).
    before = client.get_registered_model(name).tags
    code, out, _ = cli("promote", f"{name}/{v2}", "--to", "champion", "--reason", "again")
    assert code == 0
    assert "already champion; nothing changed" in out
    assert client.get_registered_model(name).tags == before

    # Refused: worse and with removed input columns; the table shows why, nothing moves.
    code, out, err = cli("promote", f"{name}/{v3}", "--to", "champion", "--reason", "try")
    assert code == 1
    assert "FAIL" in out and "removed mean radius" in out
    _assert_one_line_error(err, "failed 2 of 5 gates", "not moved")
    assert _champion(client, name) == v2
    assert client.get_registered_model(name).tags == before

    # Forced: moves, and says so on the version and in the history.
    code, out, err = cli("promote", f"{name}/{v3}", "--reason", "hotfix", "--force")
    assert code == 0, err
    assert "(forced)" in out
    assert _champion(client, name) == v3
    assert client.get_model_version(name, v3).tags["mlops.promotion.champion.forced"] == "true"

    # Rollback walks back through the champions, one command each.
    code, out, err = cli("rollback", name, "--reason", "hotfix broke scoring")
    assert code == 0, err
    assert f"rolled back champion of {name} to version {v2}" in out
    assert _champion(client, name) == v2
    code, out, err = cli("rollback", name, "--reason", "back to the first")
    assert code == 0, err
    assert _champion(client, name) == v1
    code, out, err = cli("rollback", name, "--reason", "nothing before")
    assert code == 1
    _assert_one_line_error(err, "no previous 'champion'")
    code, out, err = cli("rollback", name, "--to", v3, "--reason", "explicit")
    assert code == 0, err
    assert _champion(client, name) == v3

    # History: every move, oldest first, with who/why/forced.
    code, out, _ = cli("history", name, "--output", "json")
    assert code == 0
    rows = [a for a in json.loads(out)["attempts"] if a["alias"] == "champion"]
    expected = [("promote", v1, "first"), ("promote", v2, "better auc"),
                ("promote", v3, "hotfix"), ("rollback", v2, "hotfix broke scoring"),
                ("rollback", v1, "back to the first"), ("rollback", v3, "explicit")]
    assert [(a["kind"], a["version"], a["reason"]) for a in rows] == expected
    assert all(a["by"] == "alice" and a["outcome"] == "won" for a in rows)
    assert [a["forced"] for a in rows] == [False, False, True, False, False, False]
    # the table, piped: one plain row per move, no box drawing, whole words
    code, out, _ = cli("history", name)
    assert code == 0 and "│" not in out
    table_rows = [line.split() for line in out.splitlines() if " champion " in line]
    assert [(r[2], r[3], r[5], r[6], r[7]) for r in table_rows] == [
        (kind, version, "alice", "won", "yes" if reason == "hotfix" else "no")
        for kind, version, reason in expected]


def test_show_diff_list(cli, registry_server, logged, tmp_path):
    name = unique("look")
    write_policy(tmp_path, name)
    v1 = register(registry_server, name, logged["weak"])
    v2 = register(registry_server, name, logged["strong"])
    assert cli("promote", f"{name}/{v1}", "--reason", "first")[0] == 0

    code, out, _ = cli("show", f"{name}@champion")
    assert code == 0
    for text in (f"{name}/{v1}", logged["weak"]["run_id"][:8], "mean radius", "double",
                 "scikit-learn==", "mlops.data_digest", "d41d8cd9", "abc1234", "5e771465",
                 "test_roc_auc", "first"):
        assert text in out, text

    code, out, _ = cli("diff", f"{name}/{v1}", f"{name}/{v2}")
    assert code == 0
    assert "input mean texture" in out and "added" in out
    auc = logged["strong"]["metrics"]["test_roc_auc"] - logged["weak"]["metrics"]["test_roc_auc"]
    assert f"{auc:+.4f}" in out
    assert "n_features" in out

    code, out, _ = cli("list", name)
    assert code == 0
    lines = [line for line in out.splitlines() if name in line]
    assert len(lines) == 2
    assert [line.split()[:3] for line in lines] == [[name, v2, "challenger"],
                                                     [name, v1, "champion"]]


def test_errors_are_one_line(cli, registry_server, logged, tmp_path):
    name = unique("err")
    v1 = register(registry_server, name, logged["weak"])
    cases = [
        (("show", "no-such-model/1"), "unknown model 'no-such-model'"),
        (("show", f"{name}/99"), f"model '{name}' has no version 99"),
        (("show", f"{name}@champion"), f"model '{name}' has no alias 'champion'"),
        (("validate", "not a ref"), "is not a model reference"),
        (("validate", f"{name}/{v1}"), "no promotion policy"),
        (("promote", f"{name}/{v1}", "--reason", "x"), "no promotion policy"),
        (("promote", f"{name}/{v1}"), "Missing option '--reason'"),
        (("history", "no-such-model"), "unknown model"),
    ]
    for args, fragment in cases:
        code, _, err = cli(*args)
        assert code != 0, args
        _assert_one_line_error(err, fragment)
    assert _champion(_client(registry_server), name) is None
    # Forcing past a missing policy works and is recorded as such.
    code, _, err = cli("promote", f"{name}/{v1}", "--reason", "no policy yet", "--force")
    assert code == 0, err
    gates = json.loads(
        _client(registry_server).get_model_version(name, v1).tags["mlops.promotion.champion.gates"]
    )
    assert gates[0]["gate"] == "policy" and not gates[0]["passed"]
