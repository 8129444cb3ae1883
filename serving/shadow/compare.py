"""The shadow's comparison: a challenger's answers against the champion's, row by row.

Pure functions and plain data (answers in, agreement out); no process, queue or MLflow here
(:mod:`serving.shadow.run` scores the samples and logs what this module adds up):

* classification (the champion version's ``mlops.task`` tag, else labels that are not
  fractional numbers): a row agrees when both labels are equal; a row that differs counts
  as a flip of the champion's class (``shadow.flips.<class>``);
* regression: a row agrees when the challenger is within ``tolerance`` of the champion,
  relative to the champion's value.

The metric names are the shadow record's (:mod:`core.shadow`): the registry's policy reads them.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import orjson

from core import shadow as names

# Latencies kept for the percentiles (a reservoir: memory stays flat on a long run).
RESERVOIR = 10_000


def predictions(payload: bytes) -> list:
    """The predictions of a scoring answer (``{"predictions": [...]}`` or a bare list).

    A V2 answer's ``outputs``: one output's data (a column ``[n, 1]`` as ``n`` values), or
    several outputs' as rows of tuples.
    """
    doc = orjson.loads(payload)
    if isinstance(doc, dict) and isinstance(doc.get("outputs"), list):
        doc = {out["name"]: _rows(out) for out in doc["outputs"]}
        if len(doc) == 1:
            doc = next(iter(doc.values()))
    if isinstance(doc, dict):
        doc = doc.get("predictions", doc)
    if isinstance(doc, dict):  # one list per output column: rows as tuples
        doc = list(zip(*doc.values(), strict=False))
    return list(doc) if isinstance(doc, list) else [doc]


def _rows(output: dict) -> list:
    """A V2 output tensor's data, one value (or one list) per row."""
    data, shape = output.get("data", []), output.get("shape") or []
    if len(shape) == 2 and shape[1] != 1 and data and not isinstance(data[0], list):
        return [data[i:i + shape[1]] for i in range(0, len(data), shape[1])]
    return [v[0] if isinstance(v, list) and len(v) == 1 else v for v in data]


def infer_task(values: list) -> str:
    """``regression`` for fractional numbers, else ``classification``."""
    for value in values:
        if isinstance(value, float) and not (math.isnan(value) or value.is_integer()):
            return "regression"
    return "classification"


def _label(value) -> str:
    """A class label as part of a metric name (letters, digits, ``_ . / -`` and spaces)."""
    text = str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
    return re.sub(r"[^\w./ -]", "_", text)[:100] or "_"



def _close(a, b, tolerance: float) -> bool:
    try:
        return bool(np.isclose(float(b), float(a), rtol=tolerance, atol=1e-12))
    except (TypeError, ValueError):
        return a == b


@dataclass(frozen=True)
class Comparison:
    """One request's answers compared: rows, rows that agreed, flips by the champion's class."""

    rows: int
    agreed: int
    flips: Counter


def compare_answers(champion: list, challenger: list, task: str | None,
                    tolerance: float) -> Comparison:
    """Compare two answers' predictions row by row.

    Args:
        champion: the champion's predictions (:func:`predictions` of its answer).
        challenger: the challenger's predictions for the same rows.
        task: ``classification``, ``regression`` or None (inferred from ``champion``).
        tolerance: relative tolerance of a regression row.
    """
    task = task or infer_task(champion)
    agreed, flips = 0, Counter()
    for a, b in zip(champion, challenger, strict=False):
        same = _close(a, b, tolerance) if task == "regression" else a == b
        if same:
            agreed += 1
        elif task != "regression":
            flips[_label(a)] += 1
    return Comparison(max(len(champion), len(challenger)), agreed, flips)


@dataclass
class Totals:
    """What the shadow saw so far (the run's metrics are these, cumulative)."""

    requests: int = 0
    rows: int = 0
    agreed: int = 0
    errors: int = 0
    dropped: int = 0
    flips: Counter = field(default_factory=Counter)
    champion_ms: list[float] = field(default_factory=list)
    challenger_ms: list[float] = field(default_factory=list)
    seen: int = 0

    def latency(self, champion_ms: float, challenger_ms: float) -> None:
        """Keep both latencies (reservoir sampling past :data:`RESERVOIR`)."""
        self.seen += 1
        if len(self.champion_ms) < RESERVOIR:
            self.champion_ms.append(champion_ms)
            self.challenger_ms.append(challenger_ms)
            return
        slot = random.randrange(self.seen)
        if slot < RESERVOIR:
            self.champion_ms[slot] = champion_ms
            self.challenger_ms[slot] = challenger_ms

    def add(self, found: Comparison, champion_ms: float, challenger_ms: float) -> None:
        """Add one request's comparison and both models' latencies."""
        self.requests += 1
        self.rows += found.rows
        self.agreed += found.agreed
        self.flips.update(found.flips)
        self.latency(champion_ms, challenger_ms)

    def metrics(self) -> dict[str, float]:
        """The run's metrics now."""
        out = {
            names.REQUESTS: float(self.requests),
            names.ROWS: float(self.rows),
            names.ERRORS: float(self.errors),
            names.DROPPED: float(self.dropped),
        }
        if self.rows:
            out[names.AGREEMENT] = self.agreed / self.rows
        for label, count in self.flips.items():
            out[names.FLIPS_PREFIX + label] = float(count)
        if self.champion_ms:
            champion, challenger = np.array(self.champion_ms), np.array(self.challenger_ms)
            out[names.LATENCY_CHAMPION_P50] = float(np.percentile(champion, 50))
            out[names.LATENCY_CHAMPION_P95] = float(np.percentile(champion, 95))
            out[names.LATENCY_CHALLENGER_P50] = float(np.percentile(challenger, 50))
            out[names.LATENCY_CHALLENGER_P95] = float(np.percentile(challenger, 95))
        return out
