"""The policy's shadow gates: enough shadowed requests, enough agreement with the champion."""

from __future__ import annotations

import pytest

from core.shadow import ShadowTotals
from registry.errors import RegistryError
from registry.policy import Evidence, Policy, evaluate_policy, load_policy


def gates(totals, champion="1", **spec):
    policy = Policy(model="m", signature_compatible=False, shadow=spec)
    candidate = Evidence("2", shadow=totals)
    return {g.gate: g for g in evaluate_policy(
        policy, candidate, Evidence(champion) if champion else None)}


def test_agreement_and_requests_pass_and_fail_with_their_numbers():
    ok = gates(ShadowTotals(runs=2, requests=600, rows=1200, agreement=0.97),
               min_agreement=0.95, min_requests=500)
    assert [(g.passed, g.value) for g in ok.values()] == [(True, "600"), (True, "0.9700")]
    low = gates(ShadowTotals(runs=1, requests=40, rows=40, agreement=0.9),
                min_agreement=0.95, min_requests=500)
    assert [g.passed for g in low.values()] == [False, False]
    assert "1 shadow run(s) against champion version 1" in low["shadow requests >= 500"].detail


def test_no_shadow_run_fails_and_says_how_to_get_one():
    none = gates(ShadowTotals(0, 0, 0, None), min_agreement=0.9)
    gate = none["shadow agreement >= 0.9"]
    assert (gate.passed, gate.value) == (False, "n/a")
    assert "--shadow NAME/2" in gate.detail


def test_no_champion_passes():
    assert all(g.passed for g in gates(None, champion=None, min_agreement=0.9,
                                       min_requests=10).values())


def test_bad_shadow_keys_are_one_line(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("model: m\nshadow:\n  min_agreement: 1.5\n")
    with pytest.raises(RegistryError, match="shadow.min_agreement"):
        load_policy("m", path)
