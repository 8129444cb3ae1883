"""Metrics per second to a tracking server: MLflow's asynchronous logging vs ``log_batch``.

Starts a real server with the project's launcher on SQLite and on PostgreSQL and logs a series
of points, in the same run against the same server, four ways: ``mlflow.log_metric`` one
synchronous call at a time (MLflow's default), the same calls with ``synchronous=False``
(MLflow's asynchronous logging: by default one request per call, sent from a thread pool), the
same asynchronous calls with ``MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS=1`` (the queue merges
what a second gathered into batches of up to 1,000), and ``MlflowClient.log_batch`` in chunks of
1,000 (MLflow's per-request limit). The first two send one request per point: they log
``--per-call`` points, the batched two ``--points``.

Goals: every point lands (each way's metric history holds all of them), and buffered
asynchronous logging keeps up with hand-made batches (>= 0.5x log_batch's rate: both send one
request per 1,000 points). The one-request-per-point rates are printed, not goals.

    .venv/bin/python benchmarks/bench_tracking_logging.py [--per-call 150] [--points 50000]
        [--no-postgres] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PG = "postgresql+psycopg://postgres@127.0.0.1:5432"
#: MLflow's limit of metrics per log_batch request.
MAX_METRICS_PER_BATCH = 1000
#: Buffered asynchronous logging's rate, at least this share of hand-made log_batch chunks'.
ASYNC_VS_BATCH = 0.5


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def server(backend: str, tmp: str):
    from core.settings import ServerSettings
    from tracking.secrets import new_keys
    from tracking.server import ServerConfig, start, stop_group

    config = ServerConfig(
        server=ServerSettings(host="127.0.0.1", port=_free_port(), workers=1,
                              backend_store_uri=backend, artifacts_destination=f"{tmp}/art"),
        extra_env=new_keys(),  # on PostgreSQL the launcher takes them from the environment only
    )  # fmt: skip
    with open(f"{tmp}/server-{uuid.uuid4().hex[:6]}.log", "wb") as log:
        launch = start(config, log=log)
    try:
        yield launch.url
    finally:
        stop_group(launch.proc)


@contextlib.contextmanager
def pg_database():
    import psycopg

    name = f"bench_logging_{uuid.uuid4().hex[:8]}"
    admin = PG.replace("+psycopg", "") + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _chunks(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i:i + size]


def measure(url: str, per_call: int, points: int) -> dict[str, float]:
    """Points per second each way against the server at ``url``, every point checked stored."""
    import mlflow
    from mlflow.entities import Metric

    mlflow.set_tracking_uri(url)
    client = mlflow.MlflowClient(tracking_uri=url)
    experiment_id = client.create_experiment(f"bench-{uuid.uuid4().hex[:6]}")
    rates: dict[str, float] = {}

    def stored(run_id: str, expected: int) -> None:
        got = len(client.get_metric_history(run_id, "loss"))
        assert got == expected, f"{got} of {expected} points stored"

    with mlflow.start_run(experiment_id=experiment_id, run_name="per-call") as run:
        start = time.perf_counter()
        for step in range(per_call):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        rates["per-call"] = per_call / (time.perf_counter() - start)
    stored(run.info.run_id, per_call)

    for label, count, buffering in (("async", per_call, None), ("async+buffer", points, "1")):
        if buffering:
            os.environ["MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS"] = buffering
        try:
            with mlflow.start_run(experiment_id=experiment_id, run_name=label) as run:
                start = time.perf_counter()
                for step in range(count):
                    mlflow.log_metric("loss", 1.0 / (step + 1), step=step, synchronous=False)
                mlflow.flush_async_logging()  # timed: the points are on the server now
                rates[label] = count / (time.perf_counter() - start)
        finally:
            os.environ.pop("MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS", None)
        stored(run.info.run_id, count)

    run_id = client.create_run(experiment_id, run_name="log_batch").info.run_id
    start = time.perf_counter()
    now = int(time.time() * 1000)
    series = [Metric("loss", 1.0 / (step + 1), now, step) for step in range(points)]
    for chunk in _chunks(series, MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=chunk)
    rates["log_batch"] = points / (time.perf_counter() - start)
    client.set_terminated(run_id)
    stored(run_id, points)
    return rates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-call", type=int, default=150)
    parser.add_argument("--points", type=int, default=50_000)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--quick", action="store_true",
                        help="fewer points (30 per call, 5,000 batched), as make bench runs it")
    args = parser.parse_args(argv)
    if args.quick:
        args.per_call, args.points = min(args.per_call, 30), min(args.points, 5_000)
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        with server(f"sqlite:///{tmp}/bench.db", tmp) as url:
            results.append(("sqlite", measure(url, args.per_call, args.points)))
        if not args.no_postgres:
            with pg_database() as db, server(db, tmp) as url:
                results.append(("postgresql", measure(url, args.per_call, args.points)))

    print(f"metrics/s to a tracking server: {args.per_call} log_metric calls, synchronous and "
          f"with synchronous=False; {args.points:,} points async with buffering and log_batch")
    print(f"{'backend':<12}{'sync/s':>8}{'async/s':>9}{'buffered/s':>12}{'log_batch/s':>13}"
          f"{'ratio':>8}   goal (buffered vs log_batch)")
    ok = True
    for backend, rate in results:
        ratio = rate["async+buffer"] / rate["log_batch"]
        met = ratio >= ASYNC_VS_BATCH
        ok &= met
        print(f"{backend:<12}{rate['per-call']:>8.1f}{rate['async']:>9.1f}"
              f"{rate['async+buffer']:>12,.0f}{rate['log_batch']:>13,.0f}{ratio:>7.2f}x   "
              f">={ASYNC_VS_BATCH}x: {'met' if met else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
