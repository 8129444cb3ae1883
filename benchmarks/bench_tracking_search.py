"""The UI's first page sorted by a metric: stock MLflow vs with the launcher's extra index.

`search_runs(order_by=["metrics.X DESC"], max_results=100)` over 10,000 runs, on SQLite and on
PostgreSQL, measured side by side in one run: first on the stock MLflow 3.17.2 schema, then
after `tracking.server.ensure_indexes` (what `python -m tracking server` does after every
migration: the extra index, plus pinned planner estimates on SQLite). The runs are inserted in
bulk through MLflow's own SQLAlchemy models. PostgreSQL is ANALYZEd in both cases (autovacuum
does that on a live server); SQLite is not (MLflow never runs ANALYZE).

    .venv/bin/python benchmarks/bench_tracking_search.py [--runs 10000] [--repeat 3] [--quick]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432"
METRICS = ("accuracy", "roc_auc", "log_loss")


def populate(uri: str, runs: int) -> str:
    """Create the schema (stock MLflow) and bulk-insert ``runs`` runs; return the experiment id."""
    import mlflow
    import sqlalchemy
    from mlflow.store.tracking.dbmodels.models import (
        SqlLatestMetric,
        SqlMetric,
        SqlParam,
        SqlRun,
        SqlTag,
    )

    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment("bench-search")
    rng = random.Random(0)
    now = int(time.time() * 1000)
    run_rows, metric_rows, latest_rows, param_rows, tag_rows = [], [], [], [], []
    for i in range(runs):
        run_id = uuid.uuid4().hex
        run_rows.append(
            dict(run_uuid=run_id, name=f"run-{i}", source_type="LOCAL", source_name="bench",
                 entry_point_name="", user_id="bench", status="FINISHED", start_time=now - i,
                 end_time=now - i + 10, source_version="", lifecycle_stage="active",
                 artifact_uri=f"mlflow-artifacts:/{experiment_id}/{run_id}/artifacts",
                 experiment_id=int(experiment_id))  # fmt: skip
        )
        for key in METRICS:
            row = dict(key=key, value=rng.random(), timestamp=now, step=0, is_nan=False,
                       run_uuid=run_id)  # fmt: skip
            metric_rows.append(row)
            latest_rows.append(row)
        param_rows += [dict(key="C", value=str(rng.choice([0.1, 1, 10])), run_uuid=run_id),
                       dict(key="estimator", value="linear", run_uuid=run_id)]  # fmt: skip
        tag_rows.append(dict(key="mlflow.runName", value=f"run-{i}", run_uuid=run_id))
    engine = sqlalchemy.create_engine(uri)
    with engine.begin() as conn:
        for model, rows in ((SqlRun, run_rows), (SqlMetric, metric_rows),
                            (SqlLatestMetric, latest_rows), (SqlParam, param_rows),
                            (SqlTag, tag_rows)):  # fmt: skip
            for start in range(0, len(rows), 5000):
                conn.execute(sqlalchemy.insert(model.__table__), rows[start : start + 5000])
    if engine.dialect.name == "postgresql":
        analyze(engine)  # autovacuum would have analyzed the tables by now; SQLite never does
    engine.dispose()
    return experiment_id


def analyze(engine) -> None:
    """Refresh planner statistics, as autovacuum/ANALYZE would on a live database."""
    import sqlalchemy

    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("ANALYZE"))


def time_search(uri: str, experiment_id: str, repeat: int) -> float:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    timings = []
    for _ in range(repeat):
        start = time.perf_counter()
        found = client.search_runs(
            [experiment_id], order_by=["metrics.roc_auc DESC"], max_results=100
        )
        timings.append(time.perf_counter() - start)
        assert len(found) == 100, len(found)
    return statistics.median(timings)


def bench(uri: str, runs: int, repeat: int) -> tuple[float, float]:
    import sqlalchemy

    from tracking.indexes import ensure_indexes

    experiment_id = populate(uri, runs)
    client_warmup = time_search(uri, experiment_id, 1)  # store/engine creation out of the timing
    del client_warmup
    stock = time_search(uri, experiment_id, repeat)
    created = ensure_indexes(uri)
    assert created, "the extra index already existed"
    engine = sqlalchemy.create_engine(uri)
    if engine.dialect.name == "postgresql":
        analyze(engine)
    engine.dispose()
    indexed = time_search(uri, experiment_id, repeat)
    return stock, indexed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--quick", action="store_true",
                        help="5,000 runs (as make bench runs it)")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs = min(args.runs, 5_000)

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        results.append(("sqlite", *bench(f"sqlite:///{tmp}/bench.db", args.runs, args.repeat)))
    if not args.no_postgres:
        import psycopg

        name = f"bench_search_{uuid.uuid4().hex[:8]}"
        admin = PG_ADMIN.replace("+psycopg", "") + "/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        try:
            results.append(("postgresql", *bench(f"{PG_ADMIN}/{name}", args.runs, args.repeat)))
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    print(f"search_runs ordered by metrics.roc_auc, 100 results, over {args.runs:,} runs "
          f"(median of {args.repeat})")  # fmt: skip
    print(f"{'backend':<12}{'stock (s)':>12}{'with index (s)':>16}{'speed-up':>10}{'goal':>12}")
    ok = True
    for backend, stock, indexed in results:
        goal = "met" if indexed <= 0.2 else "MISSED"
        ok &= indexed <= 0.2
        print(f"{backend:<12}{stock:>12.3f}{indexed:>16.3f}{stock / indexed:>9.0f}x"
              f"{'<=0.2 s ' + goal:>12}")  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
