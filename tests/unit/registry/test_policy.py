"""Promotion policy: loading the YAML and evaluating each gate (pure, no server)."""

from __future__ import annotations

import pytest

from core.settings import conf_dir
from registry.errors import RegistryError
from registry.policy import (
    Evidence,
    Policy,
    evaluate_policy,
    load_policy,
    policy_path,
    schema_changes,
)

INPUTS = {"a": "double", "b": "double", "c": "long"}
TAGS = {"mlops.data_digest": "d", "mlops.git_commit": "g"}


def _policy(**kw):
    base = {
        "model": "m",
        "thresholds": {"roc_auc": 0.9, "log_loss": 0.4},
        "champion": {"metric": "roc_auc", "min_absolute_change": 0.01},
        "required_tags": ["mlops.data_digest", "mlops.git_commit"],
    }
    return Policy.model_validate({**base, **kw})


def _gates(policy, candidate, champion=None):
    return {g.gate: g for g in evaluate_policy(policy, candidate, champion)}


def test_all_gates_pass_with_numbers():
    cand = Evidence("2", {"roc_auc": 0.97, "log_loss": 0.2}, INPUTS, TAGS)
    champ = Evidence("1", {"roc_auc": 0.95, "log_loss": 0.3}, INPUTS, {})
    gates = _gates(_policy(), cand, champ)
    assert all(g.passed for g in gates.values()), gates
    assert gates["roc_auc >= 0.9"].value == "0.9700"
    assert gates["log_loss <= 0.4"].value == "0.2000"
    beat = gates["beats champion on roc_auc"]
    assert beat.value == "0.9700 vs 0.9500 (delta +0.0200)"
    assert beat.expected == "delta >= +0.01"
    assert "version 1" in beat.detail


def test_thresholds_fail_on_either_side():
    cand = Evidence("2", {"roc_auc": 0.85, "log_loss": 0.5}, INPUTS, TAGS)
    gates = _gates(_policy(), cand)
    assert not gates["roc_auc >= 0.9"].passed
    assert not gates["log_loss <= 0.4"].passed  # lower is better


def test_margin_over_champion_is_required():
    champ = Evidence("1", {"roc_auc": 0.95}, INPUTS, {})
    just_below = Evidence("2", {"roc_auc": 0.9599, "log_loss": 0.1}, INPUTS, TAGS)
    assert not _gates(_policy(), just_below, champ)["beats champion on roc_auc"].passed
    enough = Evidence("2", {"roc_auc": 0.961, "log_loss": 0.1}, INPUTS, TAGS)
    assert _gates(_policy(), enough, champ)["beats champion on roc_auc"].passed


def test_zero_margin_means_not_worse():
    policy = _policy(champion={"metric": "roc_auc", "min_absolute_change": 0.0})
    champ = Evidence("1", {"roc_auc": 0.95}, INPUTS, {})
    assert _gates(policy, Evidence("2", {"roc_auc": 0.95}, INPUTS, TAGS), champ)[
        "beats champion on roc_auc"].passed
    assert not _gates(policy, Evidence("2", {"roc_auc": 0.949}, INPUTS, TAGS), champ)[
        "beats champion on roc_auc"].passed


def test_lower_is_better_champion_metric_and_relative_margin():
    policy = _policy(champion={"metric": "rmse", "min_relative_change": 0.1}, thresholds={})
    champ = Evidence("1", {"rmse": 10.0}, None, {})
    assert _gates(policy, Evidence("2", {"rmse": 8.9}, None, TAGS), champ)[
        "beats champion on rmse"].passed
    assert not _gates(policy, Evidence("2", {"rmse": 9.5}, None, TAGS), champ)[
        "beats champion on rmse"].passed


def test_gate_directions_come_from_the_metric_catalogue():
    from core import metrics

    lower = {"log_loss", "rmse", "mae"}
    for name in metrics.names():
        op, sign = ("<=", "-") if name in lower else (">=", "+")
        policy = _policy(thresholds={name: 0.5}, champion={"metric": name}, required_tags=[])
        gates = _gates(policy, Evidence("2", {name: 0.5}, INPUTS, TAGS))
        assert gates[f"{name} {op} 0.5"].passed
        assert gates[f"beats champion on {name}"].expected == f"delta {op} {sign}0"


def test_no_champion_passes_comparison_and_signature():
    gates = _gates(_policy(), Evidence("1", {"roc_auc": 0.95, "log_loss": 0.1}, INPUTS, TAGS))
    assert gates["beats champion on roc_auc"].passed
    assert gates["beats champion on roc_auc"].value == "no champion"
    assert gates["signature compatible"].passed


def test_signature_removed_or_retyped_columns_fail_added_ones_pass():
    champ = Evidence("1", {"roc_auc": 0.9}, INPUTS, {})
    removed = Evidence("2", {"roc_auc": 0.99}, {"a": "double", "c": "long"}, TAGS)
    gate = _gates(_policy(), removed, champ)["signature compatible"]
    assert not gate.passed and "removed b" in gate.detail
    retyped = Evidence("2", {"roc_auc": 0.99}, {**INPUTS, "c": "string"}, TAGS)
    gate = _gates(_policy(), retyped, champ)["signature compatible"]
    assert not gate.passed and "retyped c long->string" in gate.detail
    added = Evidence("2", {"roc_auc": 0.99}, {**INPUTS, "d": "double"}, TAGS)
    gate = _gates(_policy(), added, champ)["signature compatible"]
    assert gate.passed and "added d" in gate.detail
    unsigned = Evidence("2", {"roc_auc": 0.99}, None, TAGS)
    assert not _gates(_policy(), unsigned, champ)["signature compatible"].passed


def test_missing_tags_and_unscored_metrics_fail_with_reason():
    cand = Evidence("2", {}, INPUTS, {"mlops.data_digest": "d"}, problem="no test data")
    gates = _gates(_policy(), cand, Evidence("1", {"roc_auc": 0.9}, INPUTS, {}))
    assert not gates["required tags"].passed
    assert gates["required tags"].detail == "missing mlops.git_commit"
    assert gates["required tags"].value == "1/2 present"
    assert not gates["roc_auc >= 0.9"].passed and gates["roc_auc >= 0.9"].detail == "no test data"
    assert not gates["beats champion on roc_auc"].passed


def test_schema_changes():
    assert schema_changes({"a": "x", "b": "y"}, {"b": "z", "c": "w"}) == {
        "removed": ["a"], "retyped": [("b", "y", "z")], "added": ["c"],
    }


def test_shipped_policy_of_the_default_model_loads():
    policy = load_policy("mlops-registry-model", policy_dir=conf_dir() / "policies")
    assert policy.champion.metric == "roc_auc"
    assert "mlops.test_data" in policy.required_tags


def test_every_key_of_the_shipped_policy_is_commented():
    lines = (conf_dir() / "policies" / "mlops-registry-model.yaml").read_text().splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped and not stripped.startswith(("#", "-")) and ":" in stripped:
            assert lines[i - 1].strip().startswith("#"), f"uncommented key: {line}"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("thresholds: {auc: 0.9}", "unknown metric 'auc'; known: roc_auc, accuracy, f1"),
        ("champion: {metric: rsme}", "champion.metric: Value error, unknown metric 'rsme'"),
        ("champion: {metric: roc_auc, min_absolute_change: -1}", "champion.min_absolute_change"),
        ("surprise: 1", "surprise"),
        ("model: other", "is the policy of 'other'"),
        ("thresholds: [", "not valid YAML"),
    ],
)
def test_bad_policies_are_one_line(tmp_path, text, fragment):
    (tmp_path / "m.yaml").write_text(text)
    with pytest.raises(RegistryError) as err:
        load_policy("m", policy_dir=tmp_path)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_missing_policy_names_the_file(tmp_path):
    with pytest.raises(RegistryError, match=r"no promotion policy for model 'm'.*m\.yaml"):
        load_policy("m", policy_dir=tmp_path)


def test_policy_path_is_safe_and_follows_env(tmp_path, monkeypatch):
    monkeypatch.setenv("MLOPS_POLICY_DIR", str(tmp_path))
    assert policy_path("team/model x") == tmp_path / "team_model_x.yaml"
