"""Shadow comparison: labels, flips per class, regression tolerance, a full queue drops."""

from __future__ import annotations

import orjson

from core import shadow as names
from serving.shadow import Shadow, infer_task


def answer(values) -> bytes:
    return orjson.dumps({"predictions": values})


def shadow_of(challenger: list, task=None, tolerance=0.01) -> Shadow:
    return Shadow(lambda body, ctype: answer(challenger), None, name="m", champion_version="1",
                  challenger_version="2", task=task, tolerance=tolerance)


def test_classification_counts_equal_labels_and_flips_per_champion_class():
    s = shadow_of(["a", "b", "b", "c"])
    s.compare(b"{}", "application/json", answer(["a", "a", "b", "a"]), 0.002)
    m = s.totals.metrics()
    assert (m[names.REQUESTS], m[names.ROWS], m[names.AGREEMENT]) == (1, 4, 0.5)
    assert (m["shadow.flips.a"], "shadow.flips.b" in m) == (2, False)
    assert m[names.LATENCY_CHAMPION_P50] == 2.0


def test_regression_agrees_within_the_relative_tolerance():
    s = shadow_of([100.5, 203.0, 0.0], task="regression", tolerance=0.01)
    s.compare(b"{}", None, answer([100.0, 200.0, 0.0]), 0.001)
    assert s.totals.metrics()[names.AGREEMENT] == 2 / 3
    assert infer_task([1.5, 2.0]) == "regression" and infer_task([0, 1]) == "classification"


def test_a_failing_challenger_is_counted_not_raised():
    def broken(body, ctype):
        raise ValueError("missing column")

    s = Shadow(broken, None, name="m", champion_version="1", challenger_version="2")
    s.compare(b"{}", None, answer([1]), 0.001)
    assert s.totals.errors == 1 and s.totals.requests == 0


def test_a_full_queue_drops_instead_of_waiting():
    s = shadow_of([1])  # not started: nothing drains the queue
    for _ in range(1001):
        s.record(b"{}", None, answer([1]), 0.001)
    assert s.totals.dropped == 1
