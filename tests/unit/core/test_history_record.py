"""The alias-move history has one schema, built by core.aliases alone (refusals included)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

from core.aliases import Attempt, refused_attempt

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = ("core", "tracking", "projects", "registry", "serving", "monitoring")
# keys only a history record has: a dict literal holding them is a second writer
RECORD_KEYS = {"alias", "outcome", "slot"}


def record_literals(source: str) -> list[int]:
    """Lines of dict literals (or ``dict(...)`` calls) that spell a history record's keys."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Dict):
            keys = {k.value for k in node.keys if isinstance(k, ast.Constant)}
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "dict":
            keys = {k.arg for k in node.keywords}
        else:
            continue
        if RECORD_KEYS <= keys:
            out.append(node.lineno)
    return out


def test_no_module_but_core_aliases_builds_a_history_record():
    found = {path.relative_to(ROOT).as_posix(): lines
             for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))
             if (lines := record_literals(path.read_text(encoding="utf-8")))
             and path.relative_to(ROOT).as_posix() != "core/aliases.py"}
    assert not found, f"history records built outside core.aliases: {found}"
    assert record_literals('r = {"alias": "a", "outcome": "refused", "slot": 0}\n') == [1]


def test_a_refusal_is_a_history_record_with_its_message():
    record = refused_attempt("champion", "3", "2", "alice", "set champion", "alice may not")
    parsed = Attempt.from_json(record.to_json())
    assert parsed == record
    assert (parsed.outcome, parsed.kind, parsed.refusal) == ("refused", "promote", "alice may not")
    assert record.tag == f"mlops.history.{record.id}"
    removal = refused_attempt("champion", None, "2", "alice", "delete champion", "no")
    assert removal.kind == "remove" and removal.version is None


def test_a_move_record_carries_no_refusal_key():
    move = Attempt(id="1-a", alias="champion", version="3", previous=None, by="bob", at=1,
                   reason="why")
    assert "refusal" not in json.loads(move.to_json())
