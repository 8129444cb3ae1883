"""Metrics per second to a tracking server: the workflow's BatchLogger vs per-call log_metric.

Starts a real server with the project's launcher on SQLite and on PostgreSQL and measures, in
the same run against the same server, `mlflow.log_metric` one call at a time and
`core.logger.BatchLogger` (log_batch, up to 1,000 points a request). Goal: >= 5,000
metrics/s and >= 250x per-call.

    .venv/bin/python benchmarks/bench_tracking_logging.py [--per-call 150] [--batched 50000]
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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def server(backend: str, tmp: str):
    from core.settings import ServerSettings
    from tracking.server import ServerConfig, new_keys, start, stop_group

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


def measure(url: str, per_call: int, batched: int) -> tuple[float, float]:
    import mlflow

    from core.logger import BatchLogger

    mlflow.set_tracking_uri(url)
    client = mlflow.MlflowClient(tracking_uri=url)
    experiment_id = client.create_experiment(f"bench-{uuid.uuid4().hex[:6]}")

    with mlflow.start_run(experiment_id=experiment_id, run_name="per-call"):
        start = time.perf_counter()
        for step in range(per_call):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        per_call_rate = per_call / (time.perf_counter() - start)

    run_id = client.create_run(experiment_id, run_name="batched").info.run_id
    start = time.perf_counter()
    with BatchLogger(client, run_id) as logger:
        for step in range(batched):
            logger.log_metric("loss", 1.0 / (step + 1), step=step)
    batched_rate = batched / (time.perf_counter() - start)
    client.set_terminated(run_id)
    stored = len(client.get_metric_history(run_id, "loss"))
    assert stored == batched, (stored, batched)
    return per_call_rate, batched_rate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-call", type=int, default=150)
    parser.add_argument("--batched", type=int, default=50_000)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        with server(f"sqlite:///{tmp}/bench.db", tmp) as url:
            results.append(("sqlite", *measure(url, args.per_call, args.batched)))
        if not args.no_postgres:
            with pg_database() as db, server(db, tmp) as url:
                results.append(("postgresql", *measure(url, args.per_call, args.batched)))

    print(f"metrics/s to a tracking server: {args.per_call} per-call log_metric vs "
          f"{args.batched:,} points through BatchLogger")  # fmt: skip
    print(f"{'backend':<12}{'per-call/s':>12}{'batched/s':>12}{'ratio':>9}   goal")
    ok = True
    for backend, slow, fast in results:
        met = fast >= 5000 and fast / slow >= 250
        ok &= met
        print(f"{backend:<12}{slow:>12.1f}{fast:>12,.0f}{fast / slow:>8.0f}x   "
              f">=5,000/s and >=250x: {'met' if met else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
