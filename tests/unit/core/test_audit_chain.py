"""The history chain on the embedded store (the data scientist's sandbox): every final record
carries the previous record's hash; `registry audit verify` names the first record that was
edited, deleted or written beside the chain; `registry audit export` writes it as JSON lines.
"""

from __future__ import annotations

import json
import sqlite3

import mlflow
import pytest

from core.aliases import Attempt, move_alias, read_history
from core.audit import first_break, read_chain, record_hash
from registry.cli import main

NAME = "churn"


@pytest.fixture
def client(tmp_path):
    client = mlflow.MlflowClient()
    client.create_registered_model(NAME)
    for _ in range(3):
        client.create_model_version(NAME, source=str(tmp_path))
    for version in ("1", "2", "3"):
        move_alias(client, NAME, version, "champion", f"release {version}", by="rita")
    return client


def test_each_final_record_links_to_the_one_before(client, capsys):
    won = [a for a in read_history(client, NAME) if a.outcome == "won"]
    assert [(a.seq, a.version) for a in won] == [(1, "1"), (2, "2"), (3, "3")]
    tags = client.get_registered_model(NAME).tags
    texts = [tags[a.tag] for a in won]
    assert won[0].prev == "" and [a.prev for a in won[1:]] == [record_hash(t) for t in texts[:2]]
    assert first_break(read_chain(client, NAME)) is None

    assert main(["audit", "verify", NAME]) == 0
    assert capsys.readouterr().out == f"{NAME}: the chain is whole (3 records)\n"
    assert main(["audit", "export", NAME, "--output", "jsonl"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(e["seq"], e["valid"], e["record"]["version"]) for e in lines] == [
        (1, True, "1"), (2, True, "2"), (3, True, "3")]
    assert lines[1]["record"]["prev"] == lines[0]["hash"]


def test_a_record_edited_in_the_database_fails_verify_naming_it(client, isolated_tracking,
                                                                capsys):
    second = [a for a in read_history(client, NAME) if a.outcome == "won"][1]
    forged = Attempt.from_json(client.get_registered_model(NAME).tags[second.tag])
    text = forged.to_json().replace('"reason":"release 2"', '"reason":"approved by the CEO"')
    db = sqlite3.connect(isolated_tracking.removeprefix("sqlite:///"))
    with db:  # an edit straight in the database, past every client and server
        db.execute("UPDATE registered_model_tags SET value = ? WHERE key = ?", (text, second.tag))
    db.close()

    assert main(["audit", "verify", NAME]) == 1
    err = capsys.readouterr().err
    assert err.strip() == (f"error: the history chain is broken: {NAME}: record {second.id} (#2) "
                           "was edited: its hash is not the one chained")


def test_a_record_added_beside_the_chain_or_deleted_breaks_it(client, capsys):
    fake = Attempt(id="9999999999999-forged", alias="champion", version="1", previous="3",
                   by="rita", at=9999999999999, reason="forged", kind="rollback", slot=9,
                   outcome="won")
    client.set_registered_model_tag(NAME, fake.tag, fake.to_json())
    bad = first_break(read_chain(client, NAME))
    assert bad.id == fake.id and bad.problem.endswith("is not in the chain (written beside it)")
    client.delete_registered_model_tag(NAME, fake.tag)
    first = [a for a in read_history(client, NAME) if a.outcome == "won"][0]
    client.delete_registered_model_tag(NAME, first.tag)
    assert main(["audit", "verify"]) == 1
    assert f"record {first.id} (#1) is gone from the model's tags" in capsys.readouterr().err
