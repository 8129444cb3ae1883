"""A tracking server at 100,000 runs: stock ``mlflow server`` vs ``python -m tracking server``.

100,000 runs in one experiment (10 metrics, 10 params, 5 tags each) are filled in bulk after
``mlflow db upgrade`` (PostgreSQL COPY, SQLite executemany, in MLflow's own schema), on a fresh
PostgreSQL database and on a SQLite file. Then the requests the UI sends for the experiment
page are timed through the real servers' REST API (``/ajax-api/2.0/mlflow/...``), one worker each:

* ``stock``: a plain ``mlflow server`` on the store as filled (default vs default). PostgreSQL
  is ANALYZEd after the fill (autovacuum would have done it by then); SQLite is not (MLflow
  never runs ANALYZE);
* ``stock+idx``: a plain ``mlflow server`` on the same store after the launcher prepared it (its
  indexes, statistics and PostgreSQL ``work_mem``): like for like, only the runs search differs;
* ``ours``: ``python -m tracking server`` (``tracking.store.SearchStore``), timed in turn with
  ``stock+idx``, request by request. Every answer of ``ours`` is checked equal to
  ``stock+idx``'s (the same runs, order and page token) before it is timed.

Goals: every request <= 0.2 s on PostgreSQL, <= 0.5 s on SQLite (median of --repeat).

    .venv/bin/python benchmarks/bench_tracking_scale.py [--runs 100000] [--repeat 5] [--quick]

The fill takes minutes at 100,000 runs; ``--postgres-database NAME`` and ``--sqlite-file PATH``
reuse stores it filled before (the launcher's indexes are dropped first).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import shutil
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
        "datasets of the runs": ("POST", "experiments/search-datasets",
                                 {"experiment_ids": [eid]}),
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


def time_requests(urls: dict[str, str], experiment_id: int, repeat: int,
                  timeout: float = 300, check: tuple[str, str] | None = None) -> dict:
    """Median seconds per request and server (``urls``: label -> address), in turn.

    One warm-up per server first (a warm-up over 10 s is the figure). With ``check`` (two
    labels), their answers must be equal. A request that times out is ``inf``; that server is
    still busy with it, so its later requests are not measured (``nan``): the metric sorts come
    last for that reason.
    """
    timings: dict[str, dict[str, float]] = {label: {} for label in urls}
    for name, (method, path, body) in requests_of_the_experiment_page(experiment_id).items():
        answers, live = {}, []
        for label, url in urls.items():
            if any(t == float("inf") for t in timings[label].values()):
                timings[label][name] = float("nan")
                continue
            start = time.perf_counter()
            try:
                answers[label] = call(url, method, path, body, timeout)  # warm-up, and a check
            except (TimeoutError, urllib.error.URLError):
                timings[label][name] = float("inf")
                continue
            first = time.perf_counter() - start
            if path == "runs/search":
                assert answers[label].get("runs"), (name, label, answers[label])
            if first > 10:
                timings[label][name] = first
            else:
                live.append(label)
        if check and all(label in answers for label in check):
            a, b = (answers[label] for label in check)
            assert a == b, f"{name}: {check[0]} and {check[1]} answer differently"
        samples: dict[str, list[float]] = {label: [] for label in live}
        for _ in range(repeat):
            for label in live:
                start = time.perf_counter()
                call(urls[label], method, path, body)
                samples[label].append(time.perf_counter() - start)
        for label in live:
            timings[label][name] = statistics.median(samples[label])
    return timings


@contextlib.contextmanager
def server(uri: str, artifacts: str, mode: str):
    """``stock``: a plain ``mlflow server`` (MLflow's defaults); ``stock+idx``: the same with the
    launcher's session settings (``work_mem`` on PostgreSQL); ``ours``: the launcher's server
    (its store preparation, then its app with ``tracking.store.SearchStore``)."""
    from core.settings import ServerSettings
    from tests.support.processes import free_port
    from tracking import schema, secrets
    from tracking import server as srv

    settings = ServerSettings(backend_store_uri=uri, artifacts_destination=artifacts,
                              port=free_port(), workers=1)  # fmt: skip
    # on PostgreSQL the launcher takes the server's keys from the environment only
    config = srv.ServerConfig(server=settings, extra_env=secrets.new_keys())
    name = f"server-{mode}-{settings.port}.log"
    log = open(Path(artifacts).parent / name, "wb")  # noqa: SIM115
    if mode == "ours":
        start = time.perf_counter()
        launch = srv.start(config, log=log)
        took = time.perf_counter() - start
        print(f"  launcher start (schema check, indexes, statistics): {took:.1f} s, "
              f"created {launch.store['indexes']}")  # fmt: skip
        proc = launch.proc
    else:
        cmd = srv.build_command(config)
        cmd = cmd[: cmd.index("--app-name")]  # MLflow's own app and store
        env = srv.server_env(config)
        if mode == "stock":
            env[schema.BACKEND_STORE_ENV] = uri
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, start_new_session=True)
        srv.wait_healthy(config.url, proc, 120)
    try:
        yield config.url
    finally:
        srv.stop_group(proc)
        log.close()


def as_filled(uri: str) -> int:
    """A store this script filled before, without the launcher's additions; its experiment id.

    The launcher's indexes (named ``mlops_...``) are dropped, SQLite's planner statistics too.
    """
    import sqlalchemy

    engine = sqlalchemy.create_engine(uri)
    try:
        with engine.begin() as conn:
            if engine.dialect.name == "sqlite":
                names = conn.execute(sqlalchemy.text(
                    "SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'mlops_%'"
                )).scalars().all()  # fmt: skip
                conn.execute(sqlalchemy.text("DROP TABLE IF EXISTS sqlite_stat1"))
            else:
                names = conn.execute(sqlalchemy.text(
                    "SELECT indexname FROM pg_indexes WHERE indexname LIKE 'mlops_%'"
                )).scalars().all()  # fmt: skip
            for name in names:
                conn.execute(sqlalchemy.text(f'DROP INDEX "{name}"'))
            experiment_id = conn.execute(sqlalchemy.text(
                "SELECT experiment_id FROM experiments WHERE name = 'bench-scale'"
            )).scalar_one()  # fmt: skip
            count = conn.execute(sqlalchemy.text(
                "SELECT count(*) FROM runs WHERE experiment_id = :e"), {"e": experiment_id}
            ).scalar_one()  # fmt: skip
    finally:
        engine.dispose()
    print(f"  reused a filled store: {count:,} runs, launcher's indexes dropped {names}")
    return int(experiment_id)


def bench(backend: str, uri: str, fill, runs: int, repeat: int, tmp: Path) -> dict:
    from tracking.schema import upgrade_schema

    start = time.perf_counter()
    if fill is None:  # --postgres-database / --sqlite-file
        experiment_id = as_filled(uri)
    else:
        upgrade_schema(uri)  # mlflow db upgrade: the stock schema
        experiment_id = create_experiment(uri)
        fill(experiment_id)
        print(f"{backend}: filled {runs:,} runs in {time.perf_counter() - start:.0f} s")
    artifacts = str(tmp / f"{backend}-artifacts")
    with server(uri, artifacts, "stock") as url:
        stock = time_requests({"stock": url}, experiment_id, repeat, STOCK_TIMEOUT)["stock"]
    with server(uri, artifacts, "ours") as ours_url, \
            server(uri, artifacts, "stock+idx") as stock_url:
        both = time_requests({"stock+idx": stock_url, "ours": ours_url}, experiment_id, repeat,
                             check=("stock+idx", "ours"))
    upgrade_schema(uri)  # `mlflow db upgrade` still runs with the launcher's additions
    return {"stock": stock, **both}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--postgres-database", metavar="NAME",
                        help="reuse a database this script filled (kept; the launcher's indexes "
                             "are dropped first)")  # fmt: skip
    parser.add_argument("--sqlite-file", metavar="PATH",
                        help="reuse a SQLite store this script filled (a copy is used)")
    parser.add_argument("--quick", action="store_true",
                        help="10,000 runs, 3 repeats (as make bench runs it)")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.repeat = min(args.runs, 10_000), min(args.repeat, 3)

    results = {}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        if not args.no_postgres:
            import psycopg

            name = args.postgres_database or f"bench_scale_{uuid.uuid4().hex[:8]}"
            if not args.postgres_database:
                with psycopg.connect(f"{PG_ADMIN}/postgres", autocommit=True) as conn:
                    conn.execute(f'CREATE DATABASE "{name}"')
            try:
                uri = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
                dsn = f"{PG_ADMIN}/{name}"
                fill = None if args.postgres_database else (
                    lambda e: fill_postgres(dsn, e, args.runs))  # fmt: skip
                results["postgresql"] = bench("postgresql", uri, fill, args.runs, args.repeat,
                                              tmp)  # fmt: skip
            finally:
                if not args.postgres_database:
                    with psycopg.connect(f"{PG_ADMIN}/postgres", autocommit=True) as conn:
                        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not args.no_sqlite:
            path = tmp / "bench.db"
            fill = lambda e: fill_sqlite(str(path), e, args.runs)  # noqa: E731
            if args.sqlite_file:
                shutil.copy(args.sqlite_file, path)
                fill = None
            results["sqlite"] = bench("sqlite", f"sqlite:///{path}", fill, args.runs,
                                      args.repeat, tmp)  # fmt: skip

    out = io.StringIO()
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    print(f"\nThe experiment page's requests through the REST API, {args.runs:,} runs "
          f"(10 metrics, 10 params, 5 tags each), one worker per server, median of "
          f"{args.repeat} (seconds); load average at the end: {' '.join(load)}",
          file=out)  # fmt: skip
    print("stock: MLflow on the store as filled; stock+idx: MLflow on the launcher's indexes "
          "and statistics (like for like, same answers checked); ours: python -m tracking server",
          file=out)  # fmt: skip
    header = (f"{'backend':<11}{'request':<27}{'stock':>9}{'stock+idx':>10}{'ours':>8}"
              f"{'vs stock':>9}{'vs +idx':>8}")  # fmt: skip
    print(f"{header}{'goal':>14}", file=out)
    ok = True

    def shown(value: float, width: int) -> str:
        if value != value:  # nan: not measured (the server was still busy)
            return f"{'-':>{width}}"
        if value == float("inf"):
            return f"{'>' + format(STOCK_TIMEOUT, '.0f'):>{width}}"
        return f"{value:>{width}.3f}"

    for backend, res in results.items():
        goal = GOALS[backend]
        for name, ours in res["ours"].items():
            stock, indexed = res["stock"][name], res["stock+idx"][name]
            met = ours <= goal
            ok &= met
            verdict = f"<={goal} {'met' if met else 'MISSED'}"
            ratio = f"{stock / ours:.1f}x" if stock == stock and stock < float("inf") else "-"
            print(f"{backend:<11}{name:<27}{shown(stock, 9)}{shown(indexed, 10)}"
                  f"{shown(ours, 8)}{ratio:>9}{indexed / ours:>7.1f}x{verdict:>14}",
                  file=out)  # fmt: skip
    print(out.getvalue())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
