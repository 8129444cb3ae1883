"""A tracking server at 100,000 runs: stock ``mlflow server`` vs ``python -m tracking server``.

100,000 runs in one experiment (10 metrics, 10 params, 5 tags each) are filled in bulk after
``mlflow db upgrade`` (PostgreSQL COPY, SQLite executemany, in MLflow's own schema), on a fresh
PostgreSQL database and on a SQLite file. Then the requests the UI sends for the experiment
page are timed through the real server's REST API (``/ajax-api/2.0/mlflow/...``), first against
a stock ``mlflow server`` on the store as filled, then against the launcher's server (which
adds its indexes and planner statistics at start, :func:`tracking.server.prepare_store`).
PostgreSQL is ANALYZEd before the stock run too (autovacuum would have done it by then);
SQLite is not (MLflow never runs ANALYZE).

Goals: every request <= 0.2 s on PostgreSQL, <= 0.5 s on SQLite (median of --repeat).

    .venv/bin/python benchmarks/bench_tracking_scale.py [--runs 100000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432"
GOALS = {"postgresql": 0.2, "sqlite": 0.5}
METRICS = [f"m{i}" for i in range(10)]
PARAMS = [f"p{i}" for i in range(10)]
TAGS = ["mlflow.runName", "mlflow.user", "mlflow.source.name", "team", "dataset"]
TEAMS = [f"team-{i}" for i in range(20)]


def rows(experiment_id: int, runs: int, seed: int = 0):
    """The runs, metrics, latest metrics, params and tags as tuples per table."""
    rng = random.Random(seed)
    now = int(time.time() * 1000)
    out = {"runs": [], "metrics": [], "latest_metrics": [], "params": [], "tags": []}
    for i in range(runs):
        run_id = uuid.UUID(int=rng.getrandbits(128)).hex
        start = now - (runs - i) * 1000
        out["runs"].append((run_id, f"run-{i}", "LOCAL", "bench", "", "bench", "FINISHED",
                            start, start + 500, None, "", "active",
                            f"mlflow-artifacts:/{experiment_id}/{run_id}/artifacts",
                            experiment_id))  # fmt: skip
        for key in METRICS:
            value = rng.random()
            out["metrics"].append((key, value, start, run_id, 0, False))
            out["latest_metrics"].append((key, value, start, 0, False, run_id))
        for j, key in enumerate(PARAMS):
            out["params"].append((key, str(rng.randrange(10 ** (j % 4 + 1))), run_id))
        tag_values = [f"run-{i}", "bench", "train.py", rng.choice(TEAMS), f"data-{i % 500}"]
        out["tags"] += [(k, v, run_id) for k, v in zip(TAGS, tag_values, strict=True)]
    return out


COLUMNS = {
    "runs": ("run_uuid", "name", "source_type", "source_name", "entry_point_name", "user_id",
             "status", "start_time", "end_time", "deleted_time", "source_version",
             "lifecycle_stage", "artifact_uri", "experiment_id"),
    "metrics": ("key", "value", "timestamp", "run_uuid", "step", "is_nan"),
    "latest_metrics": ("key", "value", "timestamp", "step", "is_nan", "run_uuid"),
    "params": ("key", "value", "run_uuid"),
    "tags": ("key", "value", "run_uuid"),
}  # fmt: skip


def create_experiment(uri: str) -> int:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    return int(client.create_experiment("bench-scale", artifact_location="mlflow-artifacts:/x"))


def fill_postgres(dsn: str, experiment_id: int, runs: int) -> None:
    import psycopg

    data = rows(experiment_id, runs)
    with psycopg.connect(dsn) as conn:
        for table, cols in COLUMNS.items():
            with conn.cursor().copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as copy:
                for row in data[table]:
                    copy.write_row(row)
        conn.execute("ANALYZE")  # autovacuum would have analyzed the tables by now


def fill_sqlite(path: str, experiment_id: int, runs: int) -> None:
    data = rows(experiment_id, runs)
    conn = sqlite3.connect(path)
    with conn:
        for table, cols in COLUMNS.items():
            marks = ", ".join("?" * len(cols))
            conn.executemany(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({marks})",
                             data[table])  # fmt: skip
    conn.close()


def requests_of_the_experiment_page(experiment_id: int) -> dict[str, tuple[str, str, dict]]:
    """The UI's requests: (method, path, body) by name."""
    eid = str(experiment_id)
    search = {"experiment_ids": [eid], "run_view_type": "ACTIVE_ONLY", "max_results": 100}
    return {
        "experiment": ("GET", f"experiments/get?experiment_id={eid}", {}),
        "experiments list": ("POST", "experiments/search",
                             {"max_results": 25, "order_by": ["last_update_time DESC"]}),
        "runs table, newest first": ("POST", "runs/search",
                                     {**search, "order_by": ["attributes.start_time DESC"]}),
        "search by tag": ("POST", "runs/search",
                          {**search, "filter": "tags.team = 'team-7'",
                           "order_by": ["attributes.start_time DESC"]}),
        "search by param": ("POST", "runs/search",
                            {**search, "filter": "params.p2 = '42'",
                             "order_by": ["attributes.start_time DESC"]}),
        "metric filter + sort": ("POST", "runs/search",
                                 {**search, "filter": "metrics.m1 > 0.99",
                                  "order_by": ["metrics.`m1` DESC"]}),
        "sorted by a metric": ("POST", "runs/search",
                               {**search, "order_by": ["metrics.`m3` DESC"]}),
    }  # fmt: skip


STOCK_TIMEOUT = 120.0  # seconds; a stock request slower than this is reported as "> 120"


def call(url: str, method: str, path: str, body: dict, timeout: float = 300) -> dict:
    data = json.dumps(body).encode() if method == "POST" else None
    req = urllib.request.Request(f"{url}/ajax-api/2.0/mlflow/{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def time_requests(url: str, experiment_id: int, repeat: int, timeout: float = 300) -> dict:
    """Median seconds per request (one warm-up first; a warm-up over 10 s is the figure).

    A request that times out is reported as ``inf``; the server is still busy with it, so the
    requests after it are not measured (``nan``): the metric sorts come last for that reason.
    """
    timings: dict[str, float] = {}
    for name, (method, path, body) in requests_of_the_experiment_page(experiment_id).items():
        if any(t == float("inf") for t in timings.values()):
            timings[name] = float("nan")
            continue
        start = time.perf_counter()
        try:
            answer = call(url, method, path, body, timeout)  # warm-up, and a check
        except (TimeoutError, urllib.error.URLError):
            timings[name] = float("inf")
            continue
        first = time.perf_counter() - start
        if path == "runs/search":
            assert answer.get("runs"), (name, answer)
        if first > 10:
            timings[name] = first
            continue
        samples = []
        for _ in range(repeat):
            start = time.perf_counter()
            call(url, method, path, body)
            samples.append(time.perf_counter() - start)
        timings[name] = statistics.median(samples)
    return timings


@contextlib.contextmanager
def server(uri: str, artifacts: str, launcher: bool):
    """A stock ``mlflow server`` (as filled), or the launcher's (indexes, statistics)."""
    from core.settings import ServerSettings
    from tests.support.processes import free_port
    from tracking import server as srv

    settings = ServerSettings(backend_store_uri=uri, artifacts_destination=artifacts,
                              port=free_port(), workers=1)  # fmt: skip
    config = srv.ServerConfig(server=settings)
    log = open(Path(artifacts).parent / f"server-{int(launcher)}.log", "wb")  # noqa: SIM115
    if launcher:
        start = time.perf_counter()
        launch = srv.start(config, log=log)
        took = time.perf_counter() - start
        print(f"  launcher start (schema check, indexes, statistics): {took:.1f} s, "
              f"created {launch.store['indexes']}")  # fmt: skip
        proc = launch.proc
    else:
        proc = subprocess.Popen(srv.build_command(config), env=srv.server_env(config),
                                stdout=log, stderr=log, start_new_session=True)  # fmt: skip
        srv.wait_healthy(config.url, proc, 120)
    try:
        yield config.url
    finally:
        srv.stop_group(proc)
        log.close()


def bench(backend: str, uri: str, fill, runs: int, repeat: int, tmp: Path) -> dict:
    from tracking.server import upgrade_schema

    start = time.perf_counter()
    upgrade_schema(uri)  # mlflow db upgrade: the stock schema
    experiment_id = create_experiment(uri)
    fill(experiment_id)
    print(f"{backend}: filled {runs:,} runs in {time.perf_counter() - start:.0f} s")
    artifacts = str(tmp / f"{backend}-artifacts")
    with server(uri, artifacts, launcher=False) as url:
        stock = time_requests(url, experiment_id, repeat, STOCK_TIMEOUT)
    with server(uri, artifacts, launcher=True) as url:
        ours = time_requests(url, experiment_id, repeat)
    upgrade_schema(uri)  # `mlflow db upgrade` still runs with the launcher's additions
    return {"stock": stock, "ours": ours}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-sqlite", action="store_true")
    args = parser.parse_args(argv)

    results = {}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        if not args.no_postgres:
            import psycopg

            name = f"bench_scale_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(f"{PG_ADMIN}/postgres", autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            try:
                uri = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
                dsn = f"{PG_ADMIN}/{name}"
                results["postgresql"] = bench(
                    "postgresql", uri, lambda e: fill_postgres(dsn, e, args.runs), args.runs,
                    args.repeat, tmp,
                )  # fmt: skip
            finally:
                with psycopg.connect(f"{PG_ADMIN}/postgres", autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not args.no_sqlite:
            path = tmp / "bench.db"
            results["sqlite"] = bench(
                "sqlite", f"sqlite:///{path}", lambda e: fill_sqlite(str(path), e, args.runs),
                args.runs, args.repeat, tmp,
            )  # fmt: skip

    out = io.StringIO()
    print(f"\nThe experiment page's requests through the REST API, {args.runs:,} runs "
          f"(10 metrics, 10 params, 5 tags each), median of {args.repeat} (seconds)",
          file=out)  # fmt: skip
    header = f"{'backend':<11}{'request':<27}{'stock':>9}{'launcher':>10}{'speed-up':>10}"
    print(f"{header}{'goal':>12}", file=out)
    ok = True
    for backend, res in results.items():
        goal = GOALS[backend]
        for name, ours in res["ours"].items():
            stock = res["stock"][name]
            met = ours <= goal
            ok &= met
            verdict = f"<={goal} {'met' if met else 'MISSED'}"
            limit = f">{STOCK_TIMEOUT:.0f}"
            shown = f"{stock:>9.3f}" if stock < float("inf") else f"{limit:>9}"
            shown = shown if stock == stock else f"{'-':>9}"  # nan: not measured
            print(f"{backend:<11}{name:<27}{shown}{ours:>10.3f}{stock / ours:>9.1f}x"
                  f"{verdict:>12}", file=out)  # fmt: skip
    print(out.getvalue())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
