"""Micro-batching: concurrent small requests share one predict call, each keeps its own answer."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import orjson

from serving.online.app import ModelHolder, ScoringApp, Served
from serving.online.microbatch import MicroBatcher, batches_identically
from serving.online.model import ModelVersionInfo, SklearnScorer
from serving.online.protocol import Column

COLUMNS = [Column("a", "double"), Column("b", "double")]


class CountingPredict:
    """Row-independent: ``a + 10 * b`` per row; refuses negative values (as a model may NaN)."""

    def __init__(self):
        self.calls: list[int] = []

    def __call__(self, x):
        self.calls.append(len(x))
        if (x < 0).any():
            raise ValueError("Input contains negative values")
        return x[:, 0] + 10 * x[:, 1]


def _scorer(predict, batch=True):
    # measured fast (as a small linear model is): scored on the event loop, batched
    return SklearnScorer(None, predict, COLUMNS, as_array=True, batch=batch, predict_seconds=1e-5)


def _app(scorer):
    info = ModelVersionInfo(uri="models:/m/7", name="m", version="7")
    return ScoringApp(ModelHolder(Served(info, scorer)))


async def _request(app, body: bytes):
    sent = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive():
        return messages.pop(0)

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/invocations",
        "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1),
    }
    await app(scope, receive, send)
    start, body_msg = sent
    return start["status"], dict(start["headers"]), orjson.loads(body_msg["body"])


def _body(rows) -> bytes:
    rows = [[float(v) for v in row] for row in rows]  # doubles as doubles: the fast path's
    return orjson.dumps({"dataframe_split": {"columns": ["a", "b"], "data": rows}})


async def _concurrently(app, bodies):
    return await asyncio.gather(*(_request(app, b) for b in bodies))


def test_concurrent_requests_share_one_predict_call_and_get_their_own_rows():
    predict = CountingPredict()
    app = _app(_scorer(predict))
    bodies = [_body([[1, 2]]), _body([[3, 4], [5, 6]]), b"{not json", _body([[7, 8]])]
    results = asyncio.run(_concurrently(app, bodies))
    assert predict.calls == [4]  # the malformed body never reached the model
    assert [r[0] for r in results] == [200, 200, 400, 200]
    assert results[0][2] == {"predictions": [21.0]}
    assert results[1][2] == {"predictions": [43.0, 65.0]}
    assert results[2][2]["error_code"] == "BAD_REQUEST"
    assert results[3][2] == {"predictions": [87.0]}
    assert all(r[1][b"x-model-version"] == b"7" for r in results)


def test_rows_the_model_refuses_fail_only_their_own_request():
    predict = CountingPredict()
    app = _app(_scorer(predict))
    results = asyncio.run(
        _concurrently(app, [_body([[1, 2]]), _body([[-1, 2]]), _body([[3, 4]])])
    )
    # the batch was refused, then each request predicted alone
    assert predict.calls == [3, 1, 1, 1]
    assert [r[0] for r in results] == [200, 400, 200]
    assert "negative" in results[1][2]["message"]
    assert results[0][2] == {"predictions": [21.0]} and results[2][2] == {"predictions": [43.0]}


def test_batched_predictions_equal_per_request_ones():
    predict = CountingPredict()
    rng = np.random.default_rng(1)
    rows = [rng.uniform(0, 100, size=(n, 2)).tolist() for n in (1, 3, 1, 5, 2)]
    batched = asyncio.run(_concurrently(_app(_scorer(predict)), [_body(r) for r in rows]))
    alone = [asyncio.run(_request(_app(_scorer(predict, batch=False)), _body(r))) for r in rows]
    assert [b[2] for b in batched] == [a[2] for a in alone]


def test_batches_are_capped_by_rows():
    calls = []

    def predict(x):
        calls.append(len(x))
        return x[:, 0]

    batcher = MicroBatcher(predict, max_rows=4)

    async def run():
        return await asyncio.gather(
            *(batcher.predict(np.full((n, 2), float(n))) for n in (2, 2, 3, 10, 1))
        )

    results = asyncio.run(run())
    assert calls == [4, 3, 10, 1]  # a big input is predicted alone, never merged
    assert [r.tolist() for r in results] == [[2.0] * 2, [2.0] * 2, [3.0] * 3, [10.0] * 10, [1.0]]


def test_a_lone_request_is_predicted_at_once():
    predict = CountingPredict()
    status, _, body = asyncio.run(_request(_app(_scorer(predict)), _body([[1, 1]])))
    assert status == 200 and body == {"predictions": [11.0]} and predict.calls == [1]


def test_batching_only_for_row_independent_models():
    probe = np.arange(32, dtype=np.float64).reshape(16, 2)
    assert batches_identically(lambda x: x.sum(axis=1), probe)
    assert not batches_identically(lambda x: x[:, 0] - x[:, 0].mean(), probe)  # depends on batch
    assert not batches_identically(lambda x: x.sum(axis=1).tolist(), probe)  # not an array


def _timed_batcher(calls):
    def predict(x):
        calls.append(len(x))
        time.sleep(0.2)  # one batch's predict time: the wait below is a share of it
        return x[:, 0]

    # average predict time after one batch: 0.2 x 0.2 s (a moving average); the wait: 2.5 x that
    return MicroBatcher(predict, max_wait=1.0, wait_share=2.5)


def test_a_short_batch_waits_briefly_for_the_requests_of_the_last_one():
    calls = []
    batcher = _timed_batcher(calls)
    row = np.ones((1, 2))

    async def run():
        await asyncio.gather(*(batcher.predict(row) for _ in range(3)))  # expect 3 from now on
        first = asyncio.ensure_future(batcher.predict(row))
        await asyncio.sleep(0.01)  # the other two come back a little later
        await asyncio.gather(first, batcher.predict(row), batcher.predict(row))

    asyncio.run(run())
    assert calls == [3, 3]


def test_the_wait_is_bounded_and_expectations_drop_when_clients_leave():
    calls = []
    batcher = _timed_batcher(calls)
    row = np.ones((1, 2))
    delays = []

    async def run():
        loop = asyncio.get_running_loop()
        call_later = loop.call_later

        def recording_call_later(delay, callback, *args):
            if callback == batcher._flush:
                delays.append(delay)
            return call_later(delay, callback, *args)

        loop.call_later = recording_call_later
        await asyncio.gather(*(batcher.predict(row) for _ in range(3)))
        await asyncio.wait_for(batcher.predict(row), timeout=30)  # nobody else comes

    asyncio.run(run())
    assert calls == [3, 1]  # it waited for the others, then predicted alone
    # the one wait it scheduled was a share of a batch's predict time, and at most max_wait
    assert len(delays) == 1
    assert 0 < delays[0] <= batcher.wait_share * batcher._predict_seconds
    assert delays[0] <= batcher.max_wait
    assert batcher._expected == 2


class SlowPredict(CountingPredict):
    """Row-independent and slow (a forest is ~6 ms a call): too slow for the event loop."""

    def __call__(self, x):
        time.sleep(0.2)
        return super().__call__(x)


def test_a_slow_model_is_batched_in_the_pool_and_the_loop_stays_free():
    predict = SlowPredict()
    scorer = SklearnScorer(None, predict, COLUMNS, as_array=True, batch=True,
                           predict_seconds=0.2)
    assert not scorer.inline(100) and scorer.batches(100)
    app = _app(scorer)

    async def main():
        scoring = asyncio.gather(*(_request(app, _body([[i, 1]])) for i in range(6)))
        await asyncio.sleep(0.05)
        start = time.perf_counter()
        sent = []

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            sent.append(message)

        await app({"type": "http", "method": "GET", "path": "/ping", "headers": [],
                   "client": ("127.0.0.1", 1)}, receive, send)
        ping = time.perf_counter() - start
        return await scoring, ping

    results, ping = asyncio.run(main())
    assert ping < 0.05  # answered while the model predicts in a pool thread
    assert [r[2] for r in results] == [{"predictions": [float(i + 10)]} for i in range(6)]
    assert sum(predict.calls) == 6 and len(predict.calls) < 6  # fewer calls than requests
