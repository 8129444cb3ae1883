"""Version diff, scoring, rollback targets and ledger keys (pure, no server)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.ledger import Claim, claim_value, model_key, parse_claim, slot_key
from registry.diff import diff_versions
from registry.errors import RegistryError, explain
from registry.promotion import Attempt, champion_stack, rollback_target
from registry.scoring import score_predictions, select_inputs
from registry.versions import ModelFiles, VersionInfo


def _info(version, params, metrics, inputs, reqs, tags, run="r"):
    return VersionInfo(
        name="m", version=version, run_id=f"{run}{version}", source="s", created=0,
        description="", aliases=(), tags=tags, params=params, metrics=metrics,
        files=ModelFiles(inputs=inputs, outputs={"[0]": "long"}, requirements=reqs),
    )


def test_diff_params_metrics_signature_requirements_lineage():
    a = _info("1", {"C": "1.0", "max_iter": "100"}, {"test_roc_auc": 0.95, "only_a": 1.0},
              {"x": "double", "y": "long"}, ("scikit-learn==1.5.0", "mlflow==3.17.2"),
              {"mlops.data_digest": "aaa", "mlops.git_commit": "c1"})
    b = _info("2", {"C": "10.0", "max_iter": "100"}, {"test_roc_auc": 0.97},
              {"x": "double", "y": "double", "z": "double"},
              ("scikit_learn==1.6.0", "mlflow==3.17.2", "pandas==2.2"),
              {"mlops.data_digest": "bbb", "mlops.git_commit": "c1"})
    d = diff_versions(a, b)
    assert d.changed and (d.a, d.b) == ("m/1", "m/2")
    params = {r.key: r for r in d.params}
    assert params["C"].changed and (params["C"].a, params["C"].b) == ("1.0", "10.0")
    assert not params["max_iter"].changed
    metrics = {r.key: r for r in d.metrics}
    assert metrics["test_roc_auc"].delta == pytest.approx(0.02)
    assert metrics["only_a"].b == "-" and metrics["only_a"].delta is None
    sig = {r.key: r for r in d.signature}
    assert (sig["input y"].a, sig["input y"].b) == ("long", "double")
    assert sig["input z"].a == "added"
    reqs = {r.key: r for r in d.requirements}
    assert reqs["scikit-learn"].changed  # underscores and dashes name the same package
    assert not reqs["mlflow"].changed
    assert reqs["pandas"].a == "-"
    lineage = {r.key: r for r in d.lineage}
    assert lineage["mlops.data_digest"].changed and not lineage["mlops.git_commit"].changed
    assert lineage["source run"].changed


def test_diff_of_identical_versions_is_unchanged():
    a = _info("1", {"C": "1"}, {"m": 1.0}, {"x": "double"}, ("mlflow==3.17.2",), {}, run="same")
    b = _info("1", {"C": "1"}, {"m": 1.0}, {"x": "double"}, ("mlflow==3.17.2",), {}, run="same")
    assert not diff_versions(a, b).changed


def test_score_classification_and_regression():
    y = np.array([0, 1, 1, 0])
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.3, 0.7]])
    got = score_predictions("classification", y, proba.argmax(1), proba)
    assert got["accuracy"] == 0.75 and got["roc_auc"] == 0.75
    assert set(got) == {"accuracy", "f1", "roc_auc", "log_loss"}
    assert set(score_predictions("classification", y, y)) == {"accuracy", "f1"}
    reg = score_predictions("regression", np.array([1.0, 2.0]), np.array([1.0, 4.0]))
    assert reg["mae"] == 1.0 and reg["rmse"] == pytest.approx(np.sqrt(2))


def test_score_uses_the_models_classes_for_log_loss_and_the_positive_class():
    from sklearn.metrics import f1_score, log_loss

    # a class the test split lacks: log_loss still scores it (the old gate raised ValueError)
    y = np.array(["a", "b", "b", "a"])
    proba = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.4, 0.3], [0.5, 0.3, 0.2]])
    got = score_predictions("classification", y, np.array(["a", "b", "b", "a"]), proba,
                            classes=["a", "b", "c"])
    assert got["log_loss"] == pytest.approx(log_loss(y, proba, labels=["a", "b", "c"]))
    assert "roc_auc" not in got  # undefined for a class never seen, never a wrong number
    # the positive class is the model's last class, not the largest label of the test split
    y = np.array([0, 0, 1, 1, 0])
    pred = np.array([0, 1, 1, 1, 1])
    got = score_predictions("classification", y, pred, classes=[1, 0])
    assert got["f1"] == pytest.approx(f1_score(y, pred, pos_label=0))


def test_select_inputs_uses_the_signature_columns():
    X = pd.DataFrame({"a": [1], "b": [2], "c": [3]})
    assert list(select_inputs(X, {"c": "long", "a": "long"}, "1").columns) == ["c", "a"]
    assert select_inputs(X, None, "1") is X
    with pytest.raises(RegistryError, match="needs input columns the test split lacks: z"):
        select_inputs(X, {"z": "double"}, "3")


def _move(slot, version, kind="promote", outcome="won"):
    return Attempt(id=f"{slot}", alias="champion", version=version, previous=None, by="u",
                   at=slot, reason="r", kind=kind, slot=slot, outcome=outcome)


def test_rollback_walks_back_through_champions():
    moves = [_move(1, "1"), _move(2, "2"), _move(3, "3", outcome="lost"), _move(3, "4")]
    assert champion_stack(moves) == ["1", "2", "4"]
    assert rollback_target(moves, "4") == "2"
    moves.append(_move(4, "2", kind="rollback"))
    assert champion_stack(moves) == ["1", "2"]
    assert rollback_target(moves, "2") == "1"
    moves.append(_move(5, "1", kind="rollback"))
    assert rollback_target(moves, "1") is None
    # A rollback to a version never on the stack pushes it.
    assert champion_stack([_move(1, "1"), _move(2, "5", kind="rollback")]) == ["1", "5"]


def test_rollback_target_when_alias_moved_outside_the_tool():
    assert rollback_target([_move(1, "1"), _move(2, "2")], "9") == "2"


def test_ledger_keys_and_claims():
    assert slot_key("mlops-registry-model", "champion", 7) == "mlops-registry-model/champion/000007"
    odd = model_key("team/model:x")
    assert "/" not in odd and ":" not in odd and odd.startswith("team_model_x-")
    assert model_key("team/model:x") != model_key("team_model_x")
    value = claim_value("0001-abc", "3", "2")
    assert parse_claim(value) == Claim("0001-abc", "3", "2")
    assert parse_claim(claim_value("0001-abc", "3", None)) == Claim("0001-abc", "3", None)
    # a removal is a move to no version
    assert parse_claim(claim_value("0001-abc", None, "3")) == Claim("0001-abc", None, "3")


@pytest.mark.parametrize("name", [
    "churn+xgb", "modèle", "model with spaces", "..hidden", ".", "a" * 240, "名前", "x/y:z",
    "tab\tname", "quote'name", "émoji🙂",
])
def test_ledger_keys_pass_mlflows_own_param_validation(name):
    from mlflow.utils.validation import _validate_param

    key = slot_key(name, "champion", 1)
    _validate_param(key, "v")  # raises MlflowException when MLflow would refuse the key
    assert len(key) <= 250


def test_attempt_record_round_trips():
    a = _move(3, "4")
    assert Attempt.from_json(a.to_json()) == a


def test_explain_http_statuses():
    from mlflow.exceptions import MlflowException

    forbidden = MlflowException("API request to endpoint /x failed with error code 403 != 200")
    assert explain(forbidden, "move 'champion'").startswith("permission denied (403) to move")
    unauth = MlflowException("API request failed with error code 401 != 200. Response body: ''")
    assert "(401)" in explain(unauth)
    assert explain(MlflowException("first line\nsecond")) == "first line"


def test_a_champion_set_outside_the_registry_cli_is_rolled_back_to():
    # the workflow's auto_champion (local profile) crowned version 1 without a history entry;
    # the first recorded promotion names it as the previous holder
    first = Attempt(id="1", alias="champion", version="2", previous="1", by="u", at=1,
                    reason="r", kind="promote", slot=1, outcome="won")
    assert champion_stack([first]) == ["1", "2"]
    assert rollback_target([first], "2") == "1"
