"""The metric catalogue: every path computes the same numbers and agrees on directions.

Train's ``score``, evaluate's ``evaluate_model``, the registry's ``score_predictions`` /
``score_version`` and the monitor's ``live_metric`` are run on the same predictions; the
selection (``pick_best``), the champion comparisons (evaluate, register, the policy's gates)
and the monitor's gate are run on every metric.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from core import metrics, sandbox
from monitoring import drift as mon
from projects.evaluate import compare_with_champion, evaluate_model
from projects.register import should_crown
from projects.train import CandidateResult, pick_best, score
from registry import scoring
from registry.policy import Evidence, Policy, evaluate_policy

# The directions as the project documents them (conf/base.yaml, the policy file): written here
# independently of the catalogue, so a wrong entry in it fails.
GREATER_IS_BETTER = {"roc_auc": True, "accuracy": True, "f1": True, "log_loss": False,
                     "rmse": False, "mae": False, "r2": True}


class FixedModel:
    """A fitted classifier or regressor answering fixed predictions (any X of that length)."""

    def __init__(self, pred, proba=None, classes=None):
        self.pred = np.asarray(pred)
        self.proba = None if proba is None else np.asarray(proba, dtype=float)
        if classes is not None:
            self.classes_ = np.asarray(classes)
        if proba is not None:
            self.predict_proba = lambda X: self.proba[: len(X)]

    def predict(self, X):
        return self.pred[: len(X)]


def _classifier(y, proba, classes):
    proba = np.asarray(proba, dtype=float)
    return FixedModel(np.asarray(classes)[proba.argmax(1)], proba, classes)


def _cases():
    rng = np.random.default_rng(7)
    n = 60
    # binary with string labels
    p_yes = rng.uniform(0.05, 0.95, n)
    y_str = np.where(rng.uniform(size=n) < p_yes, "yes", "no")
    str_case = ("binary-strings", "classification", y_str,
                _classifier(y_str, np.column_stack([1 - p_yes, p_yes]), ["no", "yes"]))
    # binary 0/1 where the model's class order makes 0 the positive class (not the max)
    p_zero = rng.uniform(0.05, 0.95, n)
    y01 = np.where(rng.uniform(size=n) < p_zero, 0, 1)
    flipped = ("binary-0-positive", "classification", y01,
               _classifier(y01, np.column_stack([1 - p_zero, p_zero]), [1, 0]))
    natural = ("binary-0-1", "classification", y01,
               _classifier(y01, np.column_stack([p_zero, 1 - p_zero]), [0, 1]))
    # three classes, "c" never in y_true: log_loss needs labels, roc_auc is undefined
    raw = rng.dirichlet([2, 2, 1], n)
    y_abc = np.array(["a", "b"])[(raw[:, 1] > raw[:, 0]).astype(int)]
    multi = ("multiclass-absent", "classification", y_abc, _classifier(y_abc, raw, ["a", "b", "c"]))
    # three classes, all present, in a model order that is not sorted
    raw3 = rng.dirichlet([2, 2, 2], n)
    y_cab = np.array(["c", "a", "b"])[np.array([rng.choice(3, p=r) for r in raw3])]
    unsorted = ("multiclass-unsorted", "classification", y_cab,
                _classifier(y_cab, raw3, ["c", "a", "b"]))
    # regression
    y_reg = rng.normal(10, 3, n)
    reg = ("regression", "regression", y_reg, FixedModel(y_reg + rng.normal(0, 1, n)))
    return [str_case, flipped, natural, multi, unsorted, reg]


CASES = _cases()


def _frame(y):
    return pd.DataFrame({"x": np.arange(len(y)), "target": y})


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_every_path_computes_the_same_numbers(case, monkeypatch):
    _, task, y, model = case
    test = _frame(y)
    X, y_series = test.drop(columns=["target"]), test["target"]
    classes = getattr(model, "classes_", None)
    proba = model.proba

    expected = metrics.compute(task, y, model.pred, proba, classes)
    assert expected, "the catalogue computed nothing"
    assert list(expected) == [n for n in metrics.names(task) if n in expected]

    train_metrics, _ = score(task, model, X, y_series)
    evaluated = {k.removeprefix("test_"): v for k, v in
                 evaluate_model(task, model, test, "target").items()}
    registry_metrics = scoring.score_predictions(task, y_series, model.pred, proba, classes)
    # what the child without credentials answers for this model (core.sandbox)
    monkeypatch.setattr(scoring, "download_model", lambda client, name, version, where: where)
    monkeypatch.setattr(sandbox, "predict_models", lambda models, jobs, workdir=None: [
        {"error": None, "labels": np.asarray(model.pred), "proba": proba, "classes": classes}])
    version_metrics = scoring.score_version(None, "m", "1", X, y_series, task)
    live = {name: mon.live_metric(task, name, y_series, model.pred, proba, classes)
            for name in expected}

    for path in (train_metrics, evaluated, registry_metrics, version_metrics, live):
        assert path == expected  # identical floats: one computation, not similar ones
    for name in set(metrics.names(task)) - set(expected):
        with pytest.raises(mon.MonitorError):  # never another metric in its place
            mon.live_metric(task, name, y_series, model.pred, proba, classes)


def test_binary_positive_class_is_the_last_of_the_models_classes():
    by_id = {c[0]: c for c in CASES}
    _, _, y, model = by_id["binary-strings"]
    got = metrics.compute("classification", y, model.pred, model.proba, model.classes_)
    assert got["f1"] == pytest.approx(skm.f1_score(y, model.pred, pos_label="yes"))
    assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(y == "yes", model.proba[:, 1]))

    _, _, y, model = by_id["binary-0-positive"]
    got = metrics.compute("classification", y, model.pred, model.proba, model.classes_)
    assert got["f1"] == pytest.approx(skm.f1_score(y, model.pred, pos_label=0))
    assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(y == 0, model.proba[:, 1]))
    assert got["log_loss"] == pytest.approx(
        skm.log_loss(y == 0, model.proba[:, 1]))  # column 1 is P(0) in this model's order
    # the same labels in the natural order: positive class 1, and the same log loss
    _, _, y, natural = by_id["binary-0-1"]
    nat = metrics.compute("classification", y, natural.pred, natural.proba, natural.classes_)
    assert nat["f1"] == pytest.approx(skm.f1_score(y, natural.pred, pos_label=1))
    assert nat["log_loss"] == pytest.approx(got["log_loss"])
    assert nat["accuracy"] == got["accuracy"]


def test_multiclass_with_an_absent_class_uses_labels_and_macro_f1():
    _, _, y, model = next(c for c in CASES if c[0] == "multiclass-absent")
    got = metrics.compute("classification", y, model.pred, model.proba, model.classes_)
    assert got["log_loss"] == pytest.approx(skm.log_loss(y, model.proba, labels=["a", "b", "c"]))
    assert got["f1"] == pytest.approx(skm.f1_score(y, model.pred, average="macro"))
    assert "roc_auc" not in got
    with pytest.raises(metrics.MetricUnavailable, match="class c absent from y_true"):
        metrics.compute_one("roc_auc", y, model.pred, model.proba, model.classes_)
    # without the model's classes the labels come from the data: 3 columns, 2 labels seen
    # in y_true and y_pred (here "c" is never predicted either) -> not computable, not wrong
    if "c" not in set(model.pred):
        with pytest.raises(metrics.MetricUnavailable, match="3 classes|shape"):
            metrics.compute_one("log_loss", y, model.pred, model.proba)


def test_probability_columns_follow_the_models_class_order():
    _, _, y, model = next(c for c in CASES if c[0] == "multiclass-unsorted")
    got = metrics.compute("classification", y, model.pred, model.proba, model.classes_)
    in_sorted_order = model.proba[:, [1, 2, 0]]  # columns a, b, c
    assert got["log_loss"] == pytest.approx(skm.log_loss(y, in_sorted_order))
    assert got["roc_auc"] == pytest.approx(
        skm.roc_auc_score(y, in_sorted_order, multi_class="ovr"))


def test_probability_metrics_need_probabilities():
    y = np.array([0, 1, 1, 0])
    got = metrics.compute("classification", y, y)
    assert set(got) == {"accuracy", "f1"}
    with pytest.raises(metrics.MetricUnavailable, match="needs class probabilities"):
        metrics.compute_one("log_loss", y, y)


def _values(name):
    """(better, worse) values of metric ``name``."""
    return (0.9, 0.6) if GREATER_IS_BETTER[name] else (0.2, 0.5)


@pytest.mark.parametrize("name", sorted(GREATER_IS_BETTER))
def test_every_path_agrees_on_the_direction(name):
    better, worse = _values(name)
    assert metrics.get(name).greater_is_better is GREATER_IS_BETTER[name]
    # train: selection
    good = CandidateResult("linear", {}, {name: better}, 0, 0)
    bad = CandidateResult("linear", {}, {name: worse}, 0, 0)
    assert pick_best([bad, good], name) is good and pick_best([good, bad], name) is good
    assert metrics.is_better(name, better, worse) and not metrics.is_better(name, worse, better)
    assert sorted([worse, better], key=metrics.sort_key(name)) == [better, worse]
    # evaluate and register: the challenger against the champion
    cmp = compare_with_champion(name, {f"test_{name}": better}, {f"test_{name}": worse})
    assert cmp["beats_champion"] == 1.0
    cmp = compare_with_champion(name, {f"test_{name}": worse}, {f"test_{name}": better})
    assert cmp["beats_champion"] == 0.0
    assert should_crown(True, name, {f"test_{name}": better}, {f"test_{name}": worse})[0]
    assert not should_crown(True, name, {f"test_{name}": worse}, {f"test_{name}": better})[0]
    # registry: the champion gate and a threshold between the two values
    policy = Policy.model_validate({"model": "m", "champion": {"metric": name},
                                    "thresholds": {name: (better + worse) / 2},
                                    "signature_compatible": False})
    champion_gate = f"beats champion on {name}"
    wins = {g.gate: g for g in evaluate_policy(policy, Evidence("2", {name: better}),
                                               Evidence("1", {name: worse}))}
    loses = {g.gate: g for g in evaluate_policy(policy, Evidence("2", {name: worse}),
                                                Evidence("1", {name: better}))}
    assert wins[champion_gate].passed and not loses[champion_gate].passed
    assert all(g.passed for g in wins.values())
    assert not any(g.passed for g in loses.values())
    # monitor: live worse than the test value by more than the allowance fails, better passes
    assert mon.metric_gate(name, better, worse, 0.05).passed
    assert not mon.metric_gate(name, worse, better, 0.05).passed


def test_unknown_names_fail_with_one_line_everywhere():
    with pytest.raises(metrics.MetricError, match=r"^unknown metric 'auc'; known: roc_auc, "
                                                  r"accuracy, f1, log_loss, rmse, mae, r2$"):
        metrics.get("auc")
    with pytest.raises(metrics.MetricError, match="is a regression metric, not a classification"):
        metrics.resolve("rmse", "classification")
    assert metrics.resolve("auto", "classification") == "roc_auc"
    assert metrics.resolve("auto", "regression") == "rmse"
    assert metrics.names("regression") == ("rmse", "mae", "r2")


def test_the_settings_take_names_from_the_catalogue():
    from core.settings import SettingsError, load_settings

    assert load_settings(overrides=["train.metric=log_loss"]).metric == "log_loss"
    assert load_settings(overrides=["data.task=regression"]).metric == "rmse"
    with pytest.raises(SettingsError) as err:
        load_settings(overrides=["train.metric=auc"])
    assert str(err.value) == ("setting train.metric: unknown metric 'auc'; known: auto, roc_auc, "
                              "accuracy, f1, log_loss, rmse, mae, r2")


# ------------------------------------------------------------------ the monitor's comparison
def _labelled_binary():
    _, _, y, model = next(c for c in CASES if c[0] == "binary-strings")
    return y, model


def test_monitor_compares_the_selection_metric_when_both_sides_have_it():
    y, model = _labelled_binary()
    reference = {"roc_auc": 0.91, "accuracy": 0.88, "log_loss": 0.3}
    got = mon.compare_live_metric("classification", "roc_auc", y, model.pred, reference,
                                  model.proba, model.classes_)
    assert got.metric == "roc_auc" and got.reference == 0.91 and got.note == ""
    assert got.live == metrics.compute_one("roc_auc", y, model.pred, model.proba,
                                           model.classes_)


def test_monitor_without_probabilities_falls_back_to_a_metric_both_sides_have_and_says_so():
    y, model = _labelled_binary()
    reference = {"roc_auc": 0.91, "log_loss": 0.3, "accuracy": 0.88}
    got = mon.compare_live_metric("classification", "log_loss", y, model.pred, reference,
                                  None, model.classes_)
    # the old monitor put a live accuracy next to the test log_loss
    assert got.metric == "accuracy" and got.reference == 0.88
    assert got.live == metrics.compute_one("accuracy", y, model.pred)
    assert "instead of log_loss" in got.note and "probabilities" in got.note
    gate = mon.metric_gate(got.metric, got.live, got.reference, 0.05, got.note)
    assert gate.name == "live accuracy"
    assert "test accuracy 0.8800" in gate.detail and "instead of log_loss" in gate.detail


def test_monitor_falls_back_when_the_version_lacks_the_test_value():
    y, model = _labelled_binary()
    got = mon.compare_live_metric("classification", "roc_auc", y, model.pred, {"f1": 0.7},
                                  model.proba, model.classes_)
    assert got.metric == "f1" and got.reference == 0.7
    assert "no test roc_auc" in got.note


def test_monitor_refuses_when_no_metric_is_on_both_sides():
    y, model = _labelled_binary()
    with pytest.raises(mon.MonitorError, match="no metric to compare"):
        mon.compare_live_metric("classification", "roc_auc", y, model.pred, {"roc_auc": 0.9},
                                None, model.classes_)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_monitor_never_compares_two_different_metrics(case):
    _, task, y, model = case
    classes = getattr(model, "classes_", None)
    names = metrics.names(task)
    rng = np.random.default_rng(1)
    for wanted in ("auto", *names):
        for proba in (model.proba, None):
            for _ in range(6):
                reference = {n: float(rng.uniform()) for n in names if rng.uniform() < 0.6}
                try:
                    got = mon.compare_live_metric(task, wanted, y, model.pred, reference, proba,
                                                  classes)
                except mon.MonitorError:
                    continue
                assert got.reference == reference[got.metric]
                assert got.live == metrics.compute_one(got.metric, y, model.pred, proba, classes)
                resolved = metrics.resolve(wanted, task)
                assert (got.metric == resolved) == (got.note == "")


def test_a_custom_metric_joins_the_catalogue_with_its_direction(tmp_path, monkeypatch):
    from core.settings import SettingsError, load_settings

    monkeypatch.chdir(tmp_path)
    # the catalogue is process-wide: leave it as found
    monkeypatch.setattr(metrics, "METRICS", dict(metrics.METRICS))
    (tmp_path / "cm_user_metrics.py").write_text(
        "def max_error(y_true, y_pred):\n"
        "    return max(abs(a - b) for a, b in zip(y_true, y_pred))\n"
        "def broken(y_true, y_pred):\n    raise RuntimeError('boom')\n")
    settings = load_settings(overrides=[
        "metrics=[{name: max_err, function: cm_user_metrics.py:max_error, "
        "greater_is_better: false, task: regression}]", "train.metric=max_err"])
    assert settings.metric == "max_err"
    # the settings only declare it (validated data); the command registers it
    assert [d.name for d in settings.metrics] == ["max_err"] and "max_err" not in metrics.METRICS
    assert metrics.register_declared(settings.metrics) == (metrics.get("max_err"),)
    assert metrics.register_declared(settings.metrics)  # the same definition again: a no-op
    m = metrics.get("max_err")
    assert not m.greater_is_better and m.function == "cm_user_metrics.py:max_error"
    assert metrics.compute("regression", [1.0, 2.0], [1.5, 4.0])["max_err"] == 2.0
    assert metrics.is_better("max_err", 1.0, 2.0)  # lower is better, as declared
    assert "max_err" not in metrics.names("classification")
    # a built-in name cannot be taken; a failing function is one line naming it
    with pytest.raises(SettingsError, match="^setting metrics: metric 'rmse' is a built-in "
                                            "metric; pick another name$"):
        load_settings(overrides=["metrics=[{name: rmse, function: cm_user_metrics.py:broken, "
                                 "greater_is_better: false, task: regression}]"])
    with pytest.raises(SettingsError, match="^setting metrics: metric 'x' is declared twice"):
        load_settings(overrides=["metrics=[{name: x, function: a.py:f, greater_is_better: false, "
                                 "task: regression}, {name: x, function: b.py:f, "
                                 "greater_is_better: true, task: regression}]"])
    with pytest.raises(SettingsError, match="^setting train.metric: unknown metric 'max_er'; "
                                            "known: auto, roc_auc, .*, r2, max_err$"):
        load_settings(overrides=[
            "metrics=[{name: max_err, function: cm_user_metrics.py:max_error, "
            "greater_is_better: false, task: regression}]", "train.metric=max_er"])
    # a name registered with another definition is refused in one line
    with pytest.raises(metrics.MetricError, match="metric 'max_err' is already "
                                                  "cm_user_metrics.py:max_error"):
        metrics.register_custom("max_err", "regression", True, "cm_user_metrics.py:broken")
    metrics.register_custom("boom", "regression", True, "cm_user_metrics.py:broken")
    with pytest.raises(metrics.MetricError,
                       match=r"custom metric boom \(cm_user_metrics.py:broken\) failed: "
                             r"RuntimeError: boom"):
        metrics.compute("regression", [1.0, 2.0], [1.5, 4.0])



def test_a_policy_may_name_a_custom_metric_the_settings_declare(tmp_path, monkeypatch):
    from registry.policy import load_policy

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(metrics, "METRICS", dict(metrics.METRICS))
    (tmp_path / "team.yaml").write_text(
        "metrics:\n  - {name: cost, function: cm_cost.py:cost, greater_is_better: false, "
        "task: classification}\n")
    (tmp_path / "m.yaml").write_text("champion: {metric: cost}\nthresholds: {cost: 3.0}\n")
    monkeypatch.setenv("MLOPS_SETTINGS_FILE", str(tmp_path / "team.yaml"))
    # the catalogue never reads the settings: a process that did not register it misses it
    with pytest.raises(metrics.MetricError, match="unknown metric 'cost'"):
        metrics.get("cost")
    # the registry's gates register what the settings declare when they load a policy
    policy = load_policy("m", tmp_path / "m.yaml")
    assert policy.champion.metric == "cost" and not metrics.get("cost").greater_is_better
