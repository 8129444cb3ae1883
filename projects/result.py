"""What a workflow run returns, and its JSON document (``python -m projects ... --output json``).

The JSON document is the workflow's interface for scripts and the other packages (``python -m
registry reproduce`` reads it): one object on stdout, the logs on stderr. Its keys:

* ``format``: :data:`RESULT_FORMAT` (a key removed or changing meaning raises it);
* ``run_id``, ``experiment_id``, ``until``: the workflow (parent) run and the last step run;
* ``steps``: per step run, ``{"run_id", "reused", "cache_key"}``;
* ``task``, ``positive_class``: what validate and train decided (``null`` if not run or not
  binary);
* ``model_uri``: the model train logged (``null`` before train);
* ``metrics``: the best candidate's validation metrics (``best_val_*``) and evaluate's test
  and champion metrics (``test_*``, ``champion_test_*``), ``null`` when not a finite number;
* ``model``: the registered version, ``{"name", "version", "aliases", "crowned",
  "crown_reason", "name_from"}``, or ``null`` when the run stopped before register;
* ``timings``: seconds per computed step and ``total``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from core import names

#: The version of the JSON document's shape.
RESULT_FORMAT = 1


@dataclass
class StepOutcome:
    """What a step left behind: its run, its cache key, whether it was reused."""

    step: str
    run_id: str
    key: str
    reused: bool
    tags: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    #: the reused run's inputs (datasets), as the cache lookup returned them
    inputs: object | None = None


@dataclass
class WorkflowResult:
    """The outcome of a workflow run, for the CLI's summary and its JSON document."""

    run_id: str
    experiment_id: str
    steps: dict[str, StepOutcome]
    model_name: str | None = None
    model_version: str | None = None
    aliases: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    crowned: bool | None = None
    crown_reason: str | None = None
    #: "data source" (named after the data) or "register.model_name" (set)
    model_name_from: str | None = None
    #: the last step run
    until: str | None = None


def result_document(result: WorkflowResult) -> dict:
    """The JSON document of a workflow run (its keys: see this module)."""
    steps = result.steps
    train, validate = steps.get("train"), steps.get("validate")
    metrics: dict[str, float] = {}
    if train is not None:
        metrics.update({k: v for k, v in train.metrics.items() if k.startswith("best_val_")})
    if "evaluate" in steps:
        metrics.update(steps["evaluate"].metrics)
    model = None
    if result.model_version:
        model = {"name": result.model_name, "version": result.model_version,
                 "aliases": list(result.aliases), "crowned": result.crowned,
                 "crown_reason": result.crown_reason, "name_from": result.model_name_from}
    return {
        "format": RESULT_FORMAT,
        "run_id": result.run_id,
        "experiment_id": result.experiment_id,
        "until": result.until,
        "steps": {step: {"run_id": o.run_id, "reused": o.reused, "cache_key": o.key}
                  for step, o in steps.items()},
        "task": validate.tags.get(names.TASK_TAG) if validate is not None else None,
        "positive_class": (train.tags.get(names.POSITIVE_CLASS_TAG) if train is not None
                           else None),
        "model_uri": train.tags.get(names.MODEL_URI_TAG) if train is not None else None,
        "metrics": {k: _number(v) for k, v in sorted(metrics.items())},
        "model": model,
        "timings": {k: round(float(v), 3) for k, v in result.timings.items()},
    }


def _number(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None
