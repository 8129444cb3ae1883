"""``--output json`` for scripts and tables that keep words whole, against a real server.

Every reading command's JSON document is parsed and its keys asserted (the keys
:mod:`registry.render` documents); a piped ``list`` prints plain full-width rows.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.registry.conftest import register, unique, write_policy

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
# request and approvals: null and [] for a move no promotion request made (a stable schema)
ATTEMPT_KEYS = {"id", "at", "alias", "kind", "version", "previous", "by", "outcome", "winner",
                "forced", "reason", "gates", "request", "approvals", "evidence", "emergency"}
GATE_KEYS = {"gate", "passed", "value", "expected", "detail"}


def _json(cli, *args, code: int = 0) -> dict:
    exit_code, out, err = cli(*args, "--output", "json")
    assert exit_code == code, err
    return json.loads(out)  # the whole of stdout is one document


def test_every_reading_command_speaks_json(cli, registry_server, logged_models, tmp_path):
    name = unique("json")
    write_policy(tmp_path, name)
    weak, strong = logged_models["weak"], logged_models["strong"]
    v1 = register(registry_server, name, weak)
    v2 = register(registry_server, name, strong)
    assert cli("promote", f"{name}/{v1}", "--reason", "first")[0] == 0

    listed = _json(cli, "list", name)
    assert list(listed) == ["versions"]
    assert [(r["name"], r["version"], r["aliases"]) for r in listed["versions"]] == [
        (name, v2, ["challenger"]), (name, v1, ["champion"])]
    row = listed["versions"][1]
    assert set(row) == {"name", "version", "aliases", "created", "run_id", "metrics"}
    assert ISO.match(row["created"]) and row["run_id"] == weak["run_id"]
    assert row["metrics"]["test_roc_auc"] == pytest.approx(weak["metrics"]["test_roc_auc"],
                                                          abs=1e-6)

    shown = _json(cli, "show", f"{name}@champion")
    assert set(shown) == {"name", "version", "aliases", "created", "run_id", "source",
                          "description", "flavors", "metrics", "params", "signature",
                          "signature_problem", "requirements", "lineage", "tags", "history"}
    assert (shown["name"], shown["version"], shown["aliases"]) == (name, v1, ["champion"])
    assert shown["run_id"] == weak["run_id"] and ISO.match(shown["created"])
    assert isinstance(shown["metrics"]["test_roc_auc"], float)
    assert shown["params"]["n_features"] == "1"  # params stay strings, as MLflow has them
    assert shown["signature"]["inputs"] == {"mean radius": "double"}
    assert shown["lineage"] == {"data_digest": "d41d8cd9", "git_commit": "abc1234",
                                "settings_hash": "5e771465"}
    assert any(r.startswith("scikit-learn==") for r in shown["requirements"])
    assert [(a["kind"], a["reason"]) for a in shown["history"]] == [("promote", "first")]
    assert set(shown["history"][0]) == ATTEMPT_KEYS and ISO.match(shown["history"][0]["at"])

    history = _json(cli, "history", name, "--alias", "champion")
    assert (history["name"], history["alias"]) == (name, "champion")
    [attempt] = history["attempts"]
    assert (attempt["version"], attempt["previous"], attempt["by"], attempt["outcome"],
            attempt["forced"]) == (v1, None, "alice", "won", False)
    assert all(set(g) == GATE_KEYS for g in attempt["gates"]) and attempt["gates"]

    diff = _json(cli, "diff", f"{name}/{v1}", f"{name}/{v2}")
    assert set(diff) == {"a", "b", "changed", "params", "metrics", "signature", "requirements",
                         "lineage"}
    assert (diff["a"], diff["b"], diff["changed"]) == (f"{name}/{v1}", f"{name}/{v2}", True)
    auc = {r["key"]: r for r in diff["metrics"]}["test_roc_auc"]
    # the registered version's metric tags hold 6 decimals
    assert auc["a"] == pytest.approx(weak["metrics"]["test_roc_auc"], abs=1e-6)
    assert auc["delta"] == pytest.approx(strong["metrics"]["test_roc_auc"]
                                         - weak["metrics"]["test_roc_auc"], abs=2e-6)
    assert {r["key"]: (r["a"], r["b"]) for r in diff["params"]}["n_features"] == ("1", "10")
    added = {r["key"]: r for r in diff["signature"]}["input mean texture"]
    assert (added["a"], added["changed"]) == ("added", True)
    run = {r["key"]: r for r in diff["lineage"]}["source run"]
    assert (run["a"], run["b"]) == (weak["run_id"], strong["run_id"])  # whole ids in JSON

    validated = _json(cli, "validate", f"{name}/{v2}")
    assert (validated["name"], validated["version"], validated["champion"],
            validated["passed"]) == (name, v2, v1, True)
    assert all(set(g) == GATE_KEYS and g["passed"] for g in validated["gates"])


def test_validate_json_keeps_exit_1_and_stdout_clean(cli, registry_server, logged_models,
                                                     tmp_path):
    name = unique("json-fail")
    write_policy(tmp_path, name, thresholds={"roc_auc": 0.9999})
    version = register(registry_server, name, logged_models["weak"])

    code, out, err = cli("validate", f"{name}/{version}", "--output", "json")
    assert code == 1
    document = json.loads(out)
    assert document["passed"] is False
    assert [g["gate"] for g in document["gates"] if not g["passed"]] == ["roc_auc >= 0.9999"]
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert "failed 1 of" in err and "roc_auc >= 0.9999" in err


def test_json_error_stays_on_stderr(cli):
    code, out, err = cli("show", "no-such-model/1", "--output", "json")
    assert (code, out) == (1, "")
    assert err == "error: unknown model 'no-such-model'\n"


def test_piped_list_keeps_long_names_whole(registry_server, logged_models):
    # 60 characters: rich used to squeeze a pipe to 80 columns and fold names letter by letter
    name = unique("mlops-registry-model-with-a-long-name-for-the-pipe")
    name += "-" + "x" * (59 - len(name))
    assert len(name) == 60
    version = register(registry_server, name, logged_models["weak"])
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env.pop("MLFLOW_REGISTRY_URI", None)
    env["MLFLOW_TRACKING_URI"] = registry_server
    done = subprocess.run([sys.executable, "-m", "registry", "list", name], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)  # stdout: a pipe
    assert done.returncode == 0, done.stderr
    assert "\x1b[" not in done.stdout  # no colour codes in a pipe
    assert not set("│┃━─┏┓┗┛") & set(done.stdout)  # no box drawing
    rows = [line.split() for line in done.stdout.splitlines() if name in line]
    run_id = logged_models["weak"]["run_id"]
    assert [(r[0], r[1], r[2], r[-1]) for r in rows] == [
        (name, version, "challenger", run_id[:8])]
