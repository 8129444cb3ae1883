"""Shadow comparison: labels, flips per class, regression tolerance, a full queue drops."""

from __future__ import annotations

import orjson

from core import shadow as names
from serving.shadow.compare import infer_task, predictions
from serving.shadow.run import Shadow


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


def test_samples_cross_the_pipe_as_sent_large_ones_in_parts_and_a_full_pipe_drops():
    """The worker's bytes reach the shadow process unchanged; nothing blocks the worker."""
    import os
    import queue
    import threading

    from serving.shadow.process import SamplePipe, read_samples

    read_fd, write_fd = os.pipe()
    pipe = SamplePipe(write_fd)
    big = b"x" * (3 * 1024 * 1024)  # larger than the pipe: written in parts
    assert pipe.put(b'{"a": 1}', "application/json", b"[1]", 0.25)
    assert pipe.put(big, None, b"[2]", 0.5)
    assert not pipe.put(b"{}", "text/csv", b"[3]", 0.1)  # full: refused, never waited for
    got: queue.Queue = queue.Queue()
    reader = threading.Thread(target=read_samples, args=(read_fd, got))
    reader.start()
    pipe.close(dropped=7)  # finishes the big one, then the close
    reader.join(10)
    assert got.get_nowait() == (b'{"a": 1}', "application/json", b"[1]", 0.25)
    body, ctype, answer, seconds = got.get_nowait()
    assert (len(body), body == big, ctype, answer, seconds) == (len(big), True, None, b"[2]", 0.5)
    assert got.get_nowait() == ("close", 7)


def test_the_hook_shadows_a_sample_of_the_champions_answers_only():
    s = shadow_of([1])
    s.sample = 1.0
    s.offer("1", b"{}", None, answer([1]), 0.001)
    s.offer("3", b"{}", None, answer([1]), 0.001)  # the alias moved: another comparison
    s.sample = 0.0
    s.offer("1", b"{}", None, answer([1]), 0.001)
    assert s.queue.qsize() == 1


def test_a_v2_answer_gives_its_outputs_rows():
    one = {"outputs": [{"name": "output-0", "datatype": "INT64", "shape": [3, 1],
                        "data": [1, 0, 1]}]}
    assert predictions(orjson.dumps(one)) == [1, 0, 1]
    nested = {"outputs": [{"name": "output-0", "shape": [2, 1], "data": [[0.5], [1.5]]}]}
    assert predictions(orjson.dumps(nested)) == [0.5, 1.5]
    two = {"outputs": [{"name": "label", "shape": [2], "data": ["a", "b"]},
                       {"name": "score", "shape": [2], "data": [0.1, 0.9]}]}
    assert predictions(orjson.dumps(two)) == [("a", 0.1), ("b", 0.9)]
    wide = {"outputs": [{"name": "proba", "shape": [2, 2], "data": [0.1, 0.9, 0.8, 0.2]}]}
    assert predictions(orjson.dumps(wide)) == [[0.1, 0.9], [0.8, 0.2]]
