"""train.tuning's search space: the candidates' dimensions, checked before any trial runs.

A candidate's ``space:`` in the settings (``int``, ``float`` with ``log``, ``categorical``), or
the project's default space of a built-in estimator, or the user's grid as choices. The grid's
own points become the study's first trials, so a study at least the grid's size is never worse
than the grid. The study that searches the space is :mod:`projects.tuning`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

_logger = logging.getLogger(__name__)

#: The search spaces of the built-in estimators when a candidate declares none.
DEFAULT_SPACES: dict[str, dict[str, dict]] = {
    "linear": {"C": {"float": [0.001, 100.0], "log": True}},
    "random_forest": {"n_estimators": {"int": [50, 300]}, "max_depth": {"int": [2, 16]},
                      "min_samples_leaf": {"int": [1, 10]}},
    "gradient_boosting": {"learning_rate": {"float": [0.01, 0.3], "log": True},
                          "max_iter": {"int": [50, 300]}, "max_leaf_nodes": {"int": [8, 64]}},
}
#: The parameter of the estimator that chooses it among the candidates.
ESTIMATOR_PARAM = "estimator"


@dataclass(frozen=True)
class Dimension:
    """One parameter of one estimator in the study."""

    estimator: str
    param: str  # as the estimator names it
    name: str  # as the study names it (estimator-prefixed when two estimators share it)
    spec: dict


@dataclass(frozen=True)
class Space:
    """The study's search space: the estimators and their dimensions."""

    estimators: tuple[str, ...]
    dimensions: tuple[Dimension, ...]

    def of(self, estimator: str) -> tuple[Dimension, ...]:
        """The dimensions of ``estimator``."""
        return tuple(d for d in self.dimensions if d.estimator == estimator)

    def params(self, trial_params: dict) -> tuple[str, dict]:
        """(estimator, its params) from a trial's params (as the study names them)."""
        estimator = trial_params.get(ESTIMATOR_PARAM, self.estimators[0])
        return estimator, {d.param: trial_params[d.name] for d in self.of(estimator)
                           if d.name in trial_params}


def build_space(candidates, task: str, seed: int) -> Space:
    """The study's space from ``train.candidates``, checked before any trial runs.

    A candidate's ``space``; empty: the project's default space of a built-in, the grid's
    values as choices for the user's estimator.

    Raises:
        SettingsError: a parameter the estimator does not have (one line naming the key).
    """
    from core.settings import SettingsError
    from projects.train import make_estimator

    specs: list[tuple[str, str, dict, str]] = []
    for i, cand in enumerate(candidates):
        space = {k: v.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
                 for k, v in cand.space.items()}
        if not space:
            space = (DEFAULT_SPACES.get(cand.estimator)
                     or {k: {"categorical": list(v)} for k, v in cand.grid.items()})
        known = _known_params(task, cand.estimator, make_estimator, seed)
        for param, spec in space.items():
            key = f"train.candidates.{i}.space.{param}"
            if param not in known:
                raise SettingsError(f"setting {key}: unknown parameter of {cand.estimator}; "
                                    f"known: {', '.join(sorted(known))}")
            specs.append((cand.estimator, param, dict(spec), key))
    estimators = tuple(dict.fromkeys(c.estimator for c in candidates))
    shared = {p for e, p, _, _ in specs if sum(1 for e2, p2, _, _ in specs if p2 == p) > 1}
    dims = tuple(Dimension(e, p, f"{_short(e)}.{p}" if p in shared else p, spec)
                 for e, p, spec, _ in specs)
    if ESTIMATOR_PARAM in {d.name for d in dims}:
        raise SettingsError(f"setting train.candidates: a parameter may not be named "
                            f"{ESTIMATOR_PARAM!r} (it chooses the candidate)")
    return Space(estimators, dims)


def grid_points(candidates, space: Space, task: str, seed: int) -> list[dict]:
    """The grid's points as the study's first trials (params as the study names them).

    For the candidates searched over a space the project derives (no ``space:``: a built-in's
    default space, the user's grid as choices), so that a study of at least the grid's size is
    never worse than the grid. A parameter the grid leaves out takes the estimator's default;
    a point the space cannot hold (``max_depth: null`` against ``int: [2, 16]``) is left out.
    """
    from projects.train import expand_candidates, make_estimator

    derived = [c for c in candidates if not c.space]
    points: list[dict] = []
    for estimator, grid in expand_candidates(derived):
        defaults = _defaults(task, estimator, make_estimator, seed)
        point = {ESTIMATOR_PARAM: estimator} if len(space.estimators) > 1 else {}
        for dim in space.of(estimator):
            value = grid.get(dim.param, defaults.get(dim.param))
            if not _holds(dim.spec, value):
                _logger.info("tuning: the grid's %s %s left out of the first trials: "
                             "%s=%r is outside its space", estimator, grid, dim.param, value)
                break
            point[dim.name] = value
        else:
            if point not in points:
                points.append(point)
    return points


def _holds(spec: dict, value) -> bool:
    """Whether a dimension's space holds ``value`` (a choice, or a number within bounds)."""
    if "categorical" in spec:
        return value in list(spec["categorical"])
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if "int" in spec and value != int(value):
        return False
    low, high = spec.get("int") or spec["float"]
    return low <= value <= high


def _defaults(task: str, estimator: str, make_estimator, seed: int) -> dict:
    """The estimator's own parameter values (``linear``'s ``C`` too)."""
    tasks = ("classification", "regression") if task == "auto" else (task,)
    params = dict(make_estimator(tasks[0], estimator, {}, seed).get_params(deep=False))
    if estimator == "linear":
        params.setdefault("C", 1.0)  # Ridge: alpha 1
    return params


def _short(estimator: str) -> str:
    """``random_forest``, or the function name of ``path/to/file.py:function``."""
    return estimator.rsplit(":", 1)[-1]


def _known_params(task: str, estimator: str, make_estimator, seed: int) -> set[str]:
    """The parameters ``estimator`` takes (``linear``'s ``C`` for both tasks)."""
    tasks = ("classification", "regression") if task == "auto" else (task,)
    known: set[str] = set()
    for one in tasks:
        model = make_estimator(one, estimator, {}, seed)
        known |= set(model.get_params(deep=False))
    if estimator == "linear":
        known.add("C")
    return known


def suggest(trial, dim: Dimension):
    """The trial's value of ``dim`` (Optuna's ``suggest_int``/``_float``/``_categorical``)."""
    spec = dim.spec
    if "int" in spec:
        low, high = spec["int"]
        return trial.suggest_int(dim.name, int(low), int(high), log=bool(spec.get("log")))
    if "float" in spec:
        low, high = spec["float"]
        return trial.suggest_float(dim.name, float(low), float(high),
                                   log=bool(spec.get("log")))
    return trial.suggest_categorical(dim.name, list(spec["categorical"]))
