"""Approvals per alias come from the server's own configuration: its policy files, its settings."""

from __future__ import annotations

import pytest

from core.approvals import APPROVALS_ENV, Request, approval_rule, default_approvals
from core.errors import MlopsError
from core.settings import load_settings


def test_the_team_profile_asks_one_approval_for_champion_and_the_launcher_passes_it():
    from tracking import server as srv

    assert load_settings().governance.approvals == {}
    team = load_settings("team").governance.approvals
    assert team == {"champion": 1}
    config = srv.ServerConfig(server=load_settings().server, auth=True, approvals=team)
    env = srv.server_env(config, base={"PATH": "/usr/bin"})
    assert default_approvals(env) == {"champion": 1}
    assert default_approvals({}) == {}


def test_the_policy_file_wins_over_the_default_and_bad_values_are_one_line(tmp_path):
    assert approval_rule("m", "champion", tmp_path, {"champion": 1}).approvals == 1
    assert approval_rule("m", "challenger", tmp_path, {"champion": 1}).approvals == 0
    (tmp_path / "m.yaml").write_text(
        "aliases:\n  champion: {approvals: 2, expire_after: 12h}\n  challenger: {approvals: 0}\n"
    )
    rule = approval_rule("m", "champion", tmp_path, {"champion": 1})
    assert (rule.approvals, rule.expire_seconds) == (2, 12 * 3600)
    assert approval_rule("m", "challenger", tmp_path, {"challenger": 3}).expire_seconds == 7 * 86400
    (tmp_path / "m.yaml").write_text("aliases:\n  champion: {expire_after: soon}\n")
    with pytest.raises(MlopsError, match=r"m\.yaml: aliases\.champion\.expire_after: .*'soon' is not"):
        approval_rule("m", "champion", tmp_path)


def test_the_registry_policy_accepts_the_aliases_part(tmp_path):
    from registry.policy import load_policy

    (tmp_path / "m.yaml").write_text("aliases:\n  champion: {approvals: 1, expire_after: 7d}\n")
    assert load_policy("m", policy_dir=tmp_path).aliases["champion"].approvals == 1


def test_an_open_request_past_its_expiry_reads_expired():
    req = Request("1-a", "m", "champion", "2", "rita", 0, "why", 1, expires_at=1000)
    assert (req.state(999), req.state(1000)) == ("open", "expired")
    assert req.but(status="executed").state(5000) == "executed"
    assert Request.from_json(req.to_json()) == req
    assert APPROVALS_ENV == "MLOPS_APPROVALS"
