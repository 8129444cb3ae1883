"""train.tuning: the search spaces as settings, checked before any trial runs; the cache key."""

from __future__ import annotations

import pytest

from core.settings import SettingsError, load_settings
from projects.cache_keys import settings_hash
from projects.cli import build_overrides
from projects.tuning import _stages
from projects.tuning_space import DEFAULT_SPACES, build_space


def _settings(*overrides):
    return load_settings(overrides=list(overrides))


@pytest.mark.parametrize(("space", "message"), [
    ("{max_depth: {int: [16, 2]}}", "max_depth: Value error, low 16 > high 2"),
    ("{C: {float: [0, 10], log: true}}", "C: Value error, log: true needs int or float bounds"),
    ("{C: {float: [1, 2], int: [1, 2]}}", "C: Value error, expected one of int: [low, high]"),
    ("{C: {categorical: []}}", "C: Value error, categorical needs at least one choice"),
    ("{C: {floats: [1, 2]}}", "C.floats: unknown key"),
])
def test_a_bad_space_is_one_line_naming_its_key(space, message):
    with pytest.raises(SettingsError) as err:
        _settings(f"train.candidates=[{{estimator: random_forest, space: {space}}}]")
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith("setting train.candidates.0.space.")
    assert message in text


def test_an_unknown_estimator_parameter_is_refused_naming_the_key():
    s = _settings("train.tuning.n_trials=3", "train.candidates=[{estimator: linear}, "
                  "{estimator: random_forest, space: {max_dept: {int: [2, 8]}}}]")
    with pytest.raises(SettingsError) as err:
        build_space(s.train.candidates, "classification", 0)
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith("setting train.candidates.1.space.max_dept: unknown parameter of "
                           "random_forest; known: ")
    assert "max_depth" in text


def test_the_grid_stays_when_tuning_is_absent_and_tuning_trials_turns_it_on():
    assert _settings().train.tuning is None
    overrides, _ = build_overrides({"tuning_trials": "7"})
    s = load_settings(overrides=overrides)
    assert s.train.tuning.n_trials == 7
    assert (s.train.tuning.engine, s.train.tuning.sampler) == ("local", "tpe")
    assert s.train.candidates[0].grid  # the grid is still there for runs without tuning


def test_builtins_without_a_space_get_the_shipped_ones_and_user_grids_become_choices(tmp_path):
    steps = tmp_path / "est.py"
    steps.write_text("from sklearn.tree import DecisionTreeClassifier\n"
                     "def tree():\n    return DecisionTreeClassifier()\n")
    s = _settings("train.tuning.n_trials=3",
                  f"train.candidates=[{{estimator: linear}}, {{estimator: random_forest}}, "
                  f"{{estimator: '{steps}:tree', grid: {{max_depth: [2, 4]}}}}]")
    space = build_space(s.train.candidates, "classification", 0)
    by = {(d.estimator.rsplit(":", 1)[-1], d.param): d.spec for d in space.dimensions}
    assert by[("linear", "C")] == DEFAULT_SPACES["linear"]["C"]
    assert by[("random_forest", "max_depth")] == {"int": [2, 16]}
    assert by[("tree", "max_depth")] == {"categorical": [2, 4]}
    # two estimators share max_depth: the study names them apart, each estimator its own
    names = {d.name for d in space.dimensions if d.param == "max_depth"}
    assert names == {"random_forest.max_depth", "tree.max_depth"}
    estimator, params = space.params({"estimator": s.train.candidates[2].estimator,
                                      "tree.max_depth": 4, "C": 1.0})
    assert params == {"max_depth": 4}


def test_the_train_key_covers_the_tuning_settings():
    base = ["train.tuning.n_trials=5",
            "train.candidates=[{estimator: linear, space: {C: {float: [0.01, 10], log: true}}}]"]
    key = settings_hash(_settings(*base), "train")
    assert settings_hash(_settings(*base), "train") == key  # nothing changed: reused
    assert settings_hash(_settings(base[0], "train.tuning.n_trials=6"), "train") != key
    changed_space = base[1].replace("10]", "100]")
    assert settings_hash(_settings(base[0], changed_space), "train") != key
    assert settings_hash(_settings(*base, "train.tuning.engine=spark"), "train") != key
    assert settings_hash(_settings(), "train") != key  # the grid is another run


def test_staged_fits_grow_to_the_full_size():
    assert _stages(100) == [25, 50, 75, 100]
    assert _stages(5) == [1, 2, 4, 5]


def test_the_grid_points_a_derived_space_holds_are_the_first_trials():
    from projects.tuning_space import grid_points

    s = _settings("train.tuning.n_trials=9")
    space = build_space(s.train.candidates, "classification", 0)
    points = grid_points(s.train.candidates, space, "classification", 0)
    # conf/base.yaml's grid; a param it leaves out at the estimator's default; max_depth null
    # is outside int [2, 16]: that point is left out
    assert points == [
        {"estimator": "linear", "C": 0.1}, {"estimator": "linear", "C": 1.0},
        {"estimator": "linear", "C": 10.0},
        {"estimator": "random_forest", "n_estimators": 100, "max_depth": 8,
         "min_samples_leaf": 1},
        {"estimator": "gradient_boosting", "learning_rate": 0.1, "max_iter": 100,
         "max_leaf_nodes": 31}]
    # a candidate with its own space is the sampler's alone
    own = _settings("train.candidates=[{estimator: linear, grid: {C: [1.0]}, "
                    "space: {C: {float: [0.01, 10]}}}]")
    own_space = build_space(own.train.candidates, "classification", 0)
    assert grid_points(own.train.candidates, own_space, "classification", 0) == []
