"""The governance app's pure parts: protected aliases from the settings, refusal wording."""

from __future__ import annotations

import pytest

from core.settings import SettingsError, load_settings
from tracking import governance
from tracking import server as srv


def test_champion_is_protected_by_default_and_settings_can_add_aliases():
    assert load_settings().governance.protected_aliases == ("champion",)
    settings = load_settings(None, ["governance.protected_aliases=[champion, prod]"])
    assert settings.governance.protected_aliases == ("champion", "prod")
    with pytest.raises(SettingsError, match="unknown key"):
        load_settings(None, ["governance.nope=1"])


def test_the_launcher_passes_the_protected_aliases_to_the_server_app():
    config = srv.ServerConfig(server=load_settings().server, auth=True,
                              protected_aliases=("champion", "prod"))  # fmt: skip
    env = srv.server_env(config, base={"PATH": "/usr/bin"})
    assert governance.protected_aliases(env) == ("champion", "prod")
    assert governance.protected_aliases({}) == ("champion",)
    assert srv.build_command(config)[-2:] == ["--app-name", "mlops-governance"]


def test_the_refusal_says_who_may_move_the_alias():
    message = governance.refusal("alice", "set", "champion", "m")
    assert message == (
        "alice may not set alias 'champion' of m: 'champion' is protected, only a release "
        "manager or an admin may set or delete it (python -m registry promote)"
    )


def test_the_entry_point_names_the_factory():
    from importlib.metadata import entry_points

    found = {e.name: e.value for e in entry_points(group="mlflow.app")}
    assert found["mlops-governance"] == "tracking.governance:create_app"
