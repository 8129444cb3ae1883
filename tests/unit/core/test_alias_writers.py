"""Only THE alias move writes aliases, and a removal is a move like any other.

The guard reads every module of the five packages (``ast``, no import) and fails when any
module but ``core/aliases.py`` touches MLflow's alias writers: such a move would skip the
compare-and-set and never show in ``python -m registry history``.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import mlflow
import pytest

from core.aliases import KINDS, move_alias, read_history, remove_alias
from core.models import alias_holder

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = ("core", "tracking", "projects", "registry", "serving")
WRITERS = {"set_registered_model_alias", "delete_registered_model_alias"}
THE_ALIAS_MOVE = "core/aliases.py"


def alias_writes(source: str) -> list[tuple[int, str]]:
    """``(line, name)`` of every use of an alias writer as an attribute (a call or a reference)."""
    return sorted(
        (node.lineno, node.attr)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Attribute) and node.attr in WRITERS
    )


def scan() -> dict[str, list[tuple[int, str]]]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if hits := alias_writes(path.read_text(encoding="utf-8")):
                found[path.relative_to(ROOT).as_posix()] = hits
    return found


def test_only_the_alias_move_writes_aliases():
    found = scan()
    assert THE_ALIAS_MOVE in found  # the scan sees the one legitimate writer
    others = {path: hits for path, hits in found.items() if path != THE_ALIAS_MOVE}
    assert not others, (
        "alias written outside core.aliases (use core.aliases.move_alias/remove_alias): "
        + "; ".join(f"{p} line {line} {name}" for p, hits in others.items()
                    for line, name in hits)
    )


def test_the_scan_finds_calls_and_references():
    source = (
        "client.set_registered_model_alias('m', 'champion', '1')\n"
        "mlflow.MlflowClient().delete_registered_model_alias('m', 'champion')\n"
        "write = client.set_registered_model_alias\n"
        "client.get_model_version_by_alias('m', 'champion')\n"
    )
    assert alias_writes(source) == [
        (1, "set_registered_model_alias"),
        (2, "delete_registered_model_alias"),
        (3, "set_registered_model_alias"),
    ]


# -- removal and kinds, on the default (SQLite) store of the test -----------------------------


@pytest.fixture
def model(tmp_path):
    client = mlflow.MlflowClient()
    client.create_registered_model("churn")
    for _ in range(3):
        client.create_model_version("churn", source=str(tmp_path))
    return client, "churn"


def test_a_removal_is_recorded_and_the_alias_is_gone(model):
    client, name = model
    move_alias(client, name, "1", "champion", "first", "ana")
    outcome = remove_alias(client, name, "champion", "retired", "ana")
    assert (outcome.status, outcome.version, outcome.previous) == ("removed", None, "1")
    assert alias_holder(client, name, "champion") is None
    assert "champion" not in client.get_registered_model(name).aliases
    last = read_history(client, name, "champion")[-1]
    assert (last.kind, last.version, last.previous, last.outcome, last.reason) == (
        "remove", None, "1", "won", "retired")
    # removing it again changes nothing and records nothing
    assert remove_alias(client, name, "champion", "again").status == "unchanged"
    assert len(read_history(client, name, "champion")) == 2


def test_registry_history_shows_the_removal(model, capsys):
    from registry.cli import main

    client, name = model
    move_alias(client, name, "2", "champion", "ship it", "ana")
    remove_alias(client, name, "champion", "incident 42", "bob", kind="revert")
    assert main(["history", name, "--output", "json"]) == 0
    rows = [a for a in json.loads(capsys.readouterr().out)["attempts"]
            if a["alias"] == "champion"]
    assert [(a["kind"], a["reason"], a["by"], a["outcome"]) for a in rows] == [
        ("promote", "ship it", "ana", "won"), ("revert", "incident 42", "bob", "won")]
    assert rows[1]["version"] is None  # no version holds the alias after it
    # the table, piped: plain rows, "-" where no version holds the alias
    assert main(["history", name]) == 0
    cells = [line.split() for line in capsys.readouterr().out.splitlines()
             if " revert " in line][0]
    assert cells[cells.index("revert") + 1] == "-"


def test_rollback_skips_a_removal(model, capsys):
    from registry.cli import main

    client, name = model
    move_alias(client, name, "1", "champion", "first", "ana")
    remove_alias(client, name, "champion", "pulled", "ana")
    move_alias(client, name, "2", "champion", "second", "ana")
    # the previous champion is version 1: the removal in between was no reign to return to
    assert main(["rollback", name, "--reason", "v2 is bad"]) == 0
    assert "rolled back champion of churn to version 1; previous: 2" in capsys.readouterr().out
    assert alias_holder(client, name, "champion") == "1"
    assert [a.kind for a in read_history(client, name, "champion")] == [
        "promote", "remove", "promote", "rollback"]


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_is_recorded(model, kind):
    client, name = model
    if kind == "remove":
        move_alias(client, name, "1", "champion", "setup", "ana")
        remove_alias(client, name, "champion", "why", "ana")
    else:
        move_alias(client, name, "1", "champion", "why", "ana", kind=kind)
        tags = client.get_model_version(name, "1").tags
        assert tags["mlops.promotion.champion.kind"] == kind
    assert read_history(client, name, "champion")[-1].kind == kind


def test_an_unknown_kind_is_refused_before_any_write(model):
    client, name = model
    with pytest.raises(ValueError, match="unknown kind of alias move 'deploy'"):
        move_alias(client, name, "1", "champion", "why", "ana", kind="deploy")
    assert read_history(client, name) == []
    assert alias_holder(client, name, "champion") is None
