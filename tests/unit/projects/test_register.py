"""The register step's decisions: whether auto-champion is on, and whether to crown."""

import pytest

from projects.register import auto_champion_decision, crown_decision, is_embedded_store

EMBEDDED = ["sqlite:///mlflow.db", "sqlite:////tmp/x/mlflow.db", "file:///tmp/mlruns", "./mlruns",
            "/abs/mlruns", "mlruns", r"C:\mlruns"]
SERVERS = ["http://127.0.0.1:5000", "https://mlflow.internal", "databricks",
           "databricks://profile", "databricks-uc", "postgresql://mlflow:secret@db:5432/mlflow",
           "postgresql+psycopg2://u@db/m", "mysql://u@db/m"]


@pytest.mark.parametrize("uri", EMBEDDED)
def test_embedded_stores(uri):
    assert is_embedded_store(uri)
    on, why = auto_champion_decision(None, "local", [uri, uri])
    assert on and "embedded store" in why


@pytest.mark.parametrize("uri", SERVERS)
def test_never_by_default_against_a_server(uri):
    assert not is_embedded_store(uri)
    on, why = auto_champion_decision(None, "local", [uri, uri])
    assert not on
    assert "release decision" in why and "register.auto_champion=true" in why
    assert "secret" not in why  # the reason names the server, never its credentials


def test_a_registry_on_a_server_is_a_server():
    on, _ = auto_champion_decision(None, "local", ["sqlite:///mlflow.db", "http://reg:5000"])
    assert not on


def test_other_profiles_are_off_even_on_the_embedded_store():
    on, why = auto_champion_decision(None, "team", ["sqlite:///mlflow.db"] * 2)
    assert not on and "'team' profile" in why


def test_an_explicit_setting_wins():
    assert auto_champion_decision(True, "team", ["http://srv"] * 2)[0] is True
    assert auto_champion_decision(False, "local", ["sqlite:///m.db"] * 2)[0] is False


def _decide(**kw):
    args = dict(on=True, why_on="auto", metric="roc_auc", test_metrics={"test_roc_auc": 0.9},
                champion="1", champion_is_this_model=False, evaluated={}, comparison=None)
    return crown_decision(**{**args, **kw})


def test_a_champion_that_could_not_be_scored_is_not_replaced():
    crown, why = _decide(comparison="not comparable: columns are missing: {'c'}")
    assert not crown
    assert "not scored on this test set" in why
    assert "champion version 1 not comparable: columns are missing" in why


def test_crown_when_better_or_no_champion_and_never_when_off():
    assert _decide(champion=None) == (True, "no champion yet (auto)")
    better = _decide(evaluated={"test_roc_auc": 0.9, "champion_test_roc_auc": 0.8})
    assert better[0] and "beats the champion's 0.8000" in better[1]
    worse = _decide(evaluated={"champion_test_roc_auc": 0.95})
    assert not worse[0] and "does not beat" in worse[1]
    assert _decide(on=False, why_on="off: a server") == (False, "off: a server")
    assert not _decide(champion_is_this_model=True)[0]
