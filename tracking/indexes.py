"""The indexes stock MLflow lacks, and what the database's query planner must know.

* :data:`EXTRA_INDEXES`: sorting the runs table by a metric;
* :data:`SEARCH_INDEXES` and :data:`EXPRESSION_INDEXES`: the UI's searches by tag or param and
  its newest-first runs table, at 100,000 runs and beyond (``benchmarks/bench_tracking_scale.py``);
* planner statistics: pinned on SQLite (MLflow never runs ANALYZE), fresh on PostgreSQL after
  the indexes are made (:data:`ANALYZED_TABLES`);
* :data:`PG_WORK_MEM`: the memory the server's PostgreSQL sessions may sort the runs table in
  (:func:`server_store_uri`).

Every index name starts with ``mlops_idx_``: no MLflow migration touches them, and
``mlflow db upgrade`` keeps working with them in place.
"""

from __future__ import annotations

import logging
import urllib.parse

from tracking.schema import store_engine

_logger = logging.getLogger(__name__)

# Indexes stock MLflow lacks. Sorting the runs table by a metric (`search_runs` ordered by
# `metrics.X`) reads `latest_metrics` by key and value. The name is ours, so no MLflow
# migration touches it, and `mlflow db upgrade` keeps working with it in place.
EXTRA_INDEXES: dict[str, tuple[str, tuple[str, ...]]] = {
    "mlops_idx_latest_metrics_key_value_run": ("latest_metrics", ("key", "value", "run_uuid")),
}

# Indexes for the UI's searches at 100,000 runs and beyond (benchmarks/bench_tracking_scale.py),
# by dialect: name -> (table, columns, index method or None). A search by tag or param
# (`tags.team = 'x'`, `params.C = '1'`) reads every value of that key without them. PostgreSQL
# gets hash indexes on the value: a btree entry is limited to ~2.7 kB and MLflow allows tag
# values of 8,000 characters (a run's description), so a btree would refuse long values.
# The runs index serves stores with many experiments (the runs table reads one experiment).
SEARCH_INDEXES: dict[str, dict[str, tuple[str, tuple[str, ...], str | None]]] = {
    "postgresql": {
        "mlops_idx_runs_experiment_stage_start": (
            "runs", ("experiment_id", "lifecycle_stage", "start_time"), None),
        "mlops_idx_tags_value_hash": ("tags", ("value",), "hash"),
        "mlops_idx_params_value_hash": ("params", ("value",), "hash"),
    },
    "sqlite": {  # no plain runs index: SQLite walked it row by row under MLflow's DISTINCT sort
                 # (slower); EXPRESSION_INDEXES serves the runs table's order instead
        "mlops_idx_tags_key_value": ("tags", ("key", "value"), None),
        "mlops_idx_params_key_value": ("params", ("key", "value"), None),
    },
}  # fmt: skip

# The runs table's order, as the launcher's store sorts it (tracking.store.SearchStore: the UI's
# `attributes.start_time DESC`, then the run id): runs without a start time last. With it the
# first page is read off the index, on both dialects, instead of sorting every run of the
# experiment. The same statement creates it on PostgreSQL and SQLite.
EXPRESSION_INDEXES: dict[str, str] = {
    "mlops_idx_runs_newest_first": (
        "runs (experiment_id, lifecycle_stage, (CASE WHEN start_time IS NULL THEN 1 ELSE 0 END),"
        " start_time DESC, run_uuid)"
    ),
}

# What PostgreSQL's planner must know after a bulk import (autovacuum catches up later).
ANALYZED_TABLES = ("runs", "latest_metrics", "params", "tags")

# Memory each of the server's PostgreSQL sessions may use for a sort before spilling to disk.
# MLflow's search sorts every run of the experiment (SELECT DISTINCT ... ORDER BY); at 100,000
# runs that is ~20 MB, beyond PostgreSQL's 4 MB default.
PG_WORK_MEM = "64MB"


def ensure_indexes(uri: str) -> list[str]:
    """Create the :data:`EXTRA_INDEXES` that are missing; return the names created.

    An index with the same columns under another name counts as present. On SQLite the
    planner estimates of ``latest_metrics`` are pinned too (see ``_pin_sqlite_statistics``).
    """
    import sqlalchemy

    created = []
    engine = store_engine(uri)
    try:
        inspector = sqlalchemy.inspect(engine)
        tables = set(inspector.get_table_names())
        metadata = sqlalchemy.MetaData()
        for name, (table, columns) in EXTRA_INDEXES.items():
            if table not in tables:
                continue
            existing = inspector.get_indexes(table)
            if any(
                ix["name"] == name or tuple(ix["column_names"]) == columns for ix in existing
            ):
                continue
            tbl = sqlalchemy.Table(table, metadata, autoload_with=engine)
            sqlalchemy.Index(name, *(tbl.c[c] for c in columns)).create(engine)
            created.append(name)
            _logger.info("created index %s on %s%s", name, table, columns)
        if engine.dialect.name == "sqlite":
            _pin_sqlite_statistics(engine)
    finally:
        engine.dispose()
    return created


# Planner estimates for `latest_metrics` on SQLite: a metric key matches many rows, a run has
# a handful of metrics. Without statistics (MLflow never runs ANALYZE), or with statistics
# taken while the store was small, SQLite joins the runs to the metric subquery by nested
# scans: ~10 s for the runs table sorted by a metric over 10,000 runs. With these estimates
# it builds an index for the join: < 0.1 s. The estimates do not go stale as the store grows.
_SQLITE_ROWS_ESTIMATE = 1_000_000
_SQLITE_ROWS_PER_COLUMN = {"key": 1000, "run_uuid": 10}


def _pin_sqlite_statistics(engine) -> None:
    import sqlalchemy

    inspector = sqlalchemy.inspect(engine)
    if "latest_metrics" not in inspector.get_table_names():
        return
    with engine.begin() as conn:
        indexes = conn.execute(
            sqlalchemy.text(
                "SELECT name FROM sqlite_master"
                " WHERE type = 'index' AND tbl_name = 'latest_metrics'"
            )
        ).scalars()
        stats = []
        for name in list(indexes):
            columns = [
                row[2]
                for row in conn.execute(sqlalchemy.text(f"PRAGMA index_info(\"{name}\")"))
            ]
            first = _SQLITE_ROWS_PER_COLUMN.get(columns[0], 100) if columns else 1
            numbers = [_SQLITE_ROWS_ESTIMATE, first] + [1] * (len(columns) - 1)
            stats.append({"idx": name, "stat": " ".join(str(n) for n in numbers)})
        conn.execute(sqlalchemy.text("ANALYZE sqlite_master"))  # creates sqlite_stat1 if missing
        conn.execute(sqlalchemy.text("DELETE FROM sqlite_stat1 WHERE tbl = 'latest_metrics'"))
        for row in stats:
            conn.execute(
                sqlalchemy.text(
                    "INSERT INTO sqlite_stat1 (tbl, idx, stat)"
                    " VALUES ('latest_metrics', :idx, :stat)"
                ),
                row,
            )


# Planner estimates for the search indexes on SQLite (pinned like those of `latest_metrics`):
# one tag or param value matches few runs, an experiment holds many. Without them SQLite walks
# every run of the experiment newest first (mlops_idx_runs_newest_first) and looks each one's
# param up: ~0.4 s at 100,000 runs for a value that ~100 runs have, against ~2 ms when it starts
# from the value's index (benchmarks/bench_tracking_scale.py).
_SQLITE_SEARCH_STATISTICS = {
    ("params", "mlops_idx_params_key_value"): "1000000 1000 10",
    ("tags", "mlops_idx_tags_key_value"): "1000000 1000 10",
    ("runs", "mlops_idx_runs_newest_first"): "1000000 10000 10000 10000 1 1",
}


def _pin_sqlite_search_statistics(engine) -> None:
    import sqlalchemy

    with engine.begin() as conn:
        present = set(conn.execute(sqlalchemy.text(
            "SELECT name FROM sqlite_master WHERE type = 'index'")).scalars())  # fmt: skip
        conn.execute(sqlalchemy.text("ANALYZE sqlite_master"))  # creates sqlite_stat1 if missing
        for (table, index), stat in _SQLITE_SEARCH_STATISTICS.items():
            if index not in present:
                continue
            row = {"tbl": table, "idx": index, "stat": stat}
            delete = "DELETE FROM sqlite_stat1 WHERE tbl = :tbl AND idx = :idx"
            conn.execute(sqlalchemy.text(delete), row)
            insert = "INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES (:tbl, :idx, :stat)"
            conn.execute(sqlalchemy.text(insert), row)


def ensure_search_indexes(uri: str) -> list[str]:
    """Create the :data:`SEARCH_INDEXES` of the database's dialect that are missing.

    On PostgreSQL the search tables are ANALYZEd afterwards (:data:`ANALYZED_TABLES`), so the
    planner knows their sizes and the new indexes at once, not after autovacuum's next visit;
    on SQLite the planner estimates of these indexes are pinned (``_SQLITE_SEARCH_STATISTICS``).
    Returns the names created.
    """
    import sqlalchemy

    created = []
    engine = store_engine(uri)
    try:
        wanted = SEARCH_INDEXES.get(engine.dialect.name, {})
        inspector = sqlalchemy.inspect(engine)
        tables = set(inspector.get_table_names())
        metadata = sqlalchemy.MetaData()
        for name, (table, columns, using) in wanted.items():
            if table not in tables:
                continue
            if any(ix["name"] == name for ix in inspector.get_indexes(table)):
                continue
            tbl = sqlalchemy.Table(table, metadata, autoload_with=engine)
            kwargs = {"postgresql_using": using} if using else {}
            sqlalchemy.Index(name, *(tbl.c[c] for c in columns), **kwargs).create(engine)
            created.append(name)
            _logger.info("created index %s on %s%s", name, table, columns)
        if engine.dialect.name in SEARCH_INDEXES and "runs" in tables:
            present = _index_names(engine, "runs")  # the inspector skips expression indexes
            for name, target in EXPRESSION_INDEXES.items():
                if name in present:
                    continue
                with engine.begin() as conn:
                    conn.execute(sqlalchemy.text(f"CREATE INDEX IF NOT EXISTS {name} ON {target}"))
                created.append(name)
                _logger.info("created index %s on %s", name, target)
        if engine.dialect.name == "sqlite":
            _pin_sqlite_search_statistics(engine)
        if engine.dialect.name == "postgresql":
            present = [t for t in ANALYZED_TABLES if t in tables]
            if present:
                with engine.begin() as conn:
                    conn.execute(sqlalchemy.text(f"ANALYZE {', '.join(present)}"))
    finally:
        engine.dispose()
    return created


def _index_names(engine, table: str) -> set[str]:
    """The names of ``table``'s indexes, expression indexes included."""
    import sqlalchemy

    query = {
        "sqlite": "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = :t",
        "postgresql": "SELECT indexname FROM pg_indexes"
        " WHERE tablename = :t AND schemaname = current_schema()",
    }[engine.dialect.name]
    with engine.connect() as conn:
        return set(conn.execute(sqlalchemy.text(query), {"t": table}).scalars())


def server_store_uri(uri: str) -> str:
    """The store URI the server connects with: on PostgreSQL, with :data:`PG_WORK_MEM`.

    A ``work_mem`` the URI already sets (in ``options``) is kept.
    """
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme.split("+", 1)[0] != "postgresql":
        return uri
    query = urllib.parse.parse_qsl(parsed.query, keep_blank_values=True)
    options = [v for k, v in query if k == "options"]
    if any("work_mem" in v for v in options):
        return uri
    setting = f"-c work_mem={PG_WORK_MEM}"
    rest = [(k, v) for k, v in query if k != "options"]
    merged = " ".join([*options, setting])
    return parsed._replace(query=urllib.parse.urlencode([*rest, ("options", merged)])).geturl()
