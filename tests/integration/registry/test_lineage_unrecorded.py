"""A version registered without the workflow's lineage record (an older version, or logged by
hand): ``lineage`` shows what its tags hold, ``reproduce`` refuses in one line. On the shared
real servers (SQLite, PostgreSQL)."""

from __future__ import annotations

import json

import pytest

from tests.integration.registry.conftest import register, unique

pytestmark = pytest.mark.integration


def test_lineage_from_tags_and_reproduce_refused(cli, registry_server, logged_models):
    name = unique("unrecorded")
    version = register(registry_server, name, logged_models["strong"])

    code, out, err = cli("lineage", f"{name}@challenger", "--output", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["recorded"] is False
    assert (doc["code"]["commit"], doc["code"]["dirty"]) == ("abc1234", False)
    assert doc["data"]["digest"] == "d41d8cd9"
    assert doc["settings"] is None and doc["environment"]["packages"] == {}
    assert doc["workflow_run"]["run_id"] == logged_models["strong"]["run_id"]
    assert [(a["alias"], a["version"]) for a in doc["alias_history"]] == []  # moved by hand

    code, out, err = cli("lineage", f"{name}/{version}")
    assert code == 0, err
    assert "registered before the workflow recorded lineage" in out

    code, out, err = cli("reproduce", f"{name}/{version}")
    assert code == 1
    assert err.strip() == (f"error: {name}/{version}: its workflow run recorded no lineage "
                           "(registered before the workflow recorded it); nothing to re-run")
