"""The launcher's runs search (``tracking.store.SearchStore``) answers as stock MLflow does.

Differential: MLflow's own ``SqlAlchemyStore`` and ``SearchStore`` search the same database
(PostgreSQL and SQLite, with the launcher's indexes in place) and must return the same runs, in
the same order, with the same page tokens, page after page: start-time ties, metric ties, NaN,
+-inf, runs without the metric, deleted runs, a second experiment, filters on tags, params,
metrics, attributes and datasets, every view type.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from pathlib import Path

import pytest
from mlflow.entities import Dataset, DatasetInput, Metric, Param, RunStatus, RunTag, ViewType
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

from tracking import indexes, schema
from tracking.store import SearchStore

pytestmark = [pytest.mark.integration]

RUNS = 90  # each run is ~3 commits: a commit costs ~10 ms on this machine's disk

ORDERS = [
    None,
    ["attributes.start_time DESC"],
    ["attributes.start_time ASC"],
    ["metrics.m DESC"],
    ["metrics.`m` ASC"],
    ["metrics.never_logged DESC"],
    ["metrics.loss DESC", "params.p ASC"],
    ["params.p DESC"],
    ["tags.team ASC"],
    ["attributes.run_name ASC"],
]
FILTERS = [
    "",
    "tags.team = 't1'",
    "params.p = '2'",
    "metrics.m > 0.3",
    "metrics.m != 0.5",
    "metrics.m >= 0.5 and tags.team != 't0'",
    "attributes.status = 'FINISHED'",
    "tags.team IS NULL",
    "attributes.run_name LIKE 'run-1%'",
    "datasets.name = 'train'",
]


def _fill(store: SqlAlchemyStore) -> None:
    first = store.create_experiment("search-a")
    second = store.create_experiment("search-b")
    for i in range(RUNS):
        experiment = second if i % 10 == 9 else first
        run = store.create_run(experiment, "u", i // 3, [], f"run-{i}")  # start-time ties
        run_id = run.info.run_id
        metrics = [Metric("loss", float(i % 4), 0, 0)]
        if i % 13 != 0:  # some runs never log m
            value = round((i % 7) / 7, 2)
            if i % 11 == 0:
                value = math.nan
            elif i == 40:
                value = math.inf
            elif i == 41:
                value = -math.inf
            metrics += [Metric("m", 99.0, 0, 0), Metric("m", value, 0, 1)]  # latest: step 1
        tags = [RunTag("team", f"t{i % 4}")] if i % 6 != 0 else []
        store.log_batch(run_id, metrics, [Param("p", str(i % 5))], tags)
        if i % 8 == 0:
            dataset = Dataset("train" if i % 16 == 0 else "test", f"d{i}", "local", "{}")
            store.log_inputs(run_id, [DatasetInput(dataset, [])])
        if i % 3 == 0:
            store.update_run_info(run_id, RunStatus.FINISHED, i + 1, None)
        if i % 17 == 0:
            store.delete_run(run_id)


def _pages(store, experiment_ids, filter_string, view, order_by, max_results):
    token, pages = None, []
    while True:
        runs = store.search_runs(experiment_ids, filter_string, view, max_results, order_by,
                                 token)  # fmt: skip
        # as JSON: a NaN metric compares equal to itself
        pages.append(
            (json.dumps([r.to_dictionary() for r in runs], sort_keys=True), runs.token)
        )
        token = runs.token
        if not token or len(pages) > RUNS:
            return pages


def _compare(uri: str, artifacts: str) -> int:
    stock = SqlAlchemyStore(uri, artifacts)
    _fill(stock)
    indexes.ensure_indexes(uri)
    indexes.ensure_search_indexes(uri)
    ours = SearchStore(uri, artifacts)
    ids = [e.experiment_id for e in stock.search_experiments() if e.name.startswith("search-")]
    cases = [(ids[:1], f, ViewType.ACTIVE_ONLY, o, 30) for o in ORDERS for f in FILTERS[:2]]
    cases += [(ids[:1], f, ViewType.ACTIVE_ONLY, o, 30) for f in FILTERS[2:]
              for o in (["metrics.m DESC"], ["attributes.start_time DESC"])]  # fmt: skip
    cases += [(ids, "", view, o, 25) for view in (ViewType.ALL, ViewType.DELETED_ONLY)
              for o in (["metrics.m DESC"], ["metrics.m ASC"], None)]  # fmt: skip
    cases += [(ids[:1], "", ViewType.ACTIVE_ONLY, ["metrics.m DESC"], n) for n in (1, 3, 1000)]
    for experiment_ids, filter_string, view, order_by, max_results in cases:
        expected = _pages(stock, experiment_ids, filter_string, view, order_by, max_results)
        got = _pages(ours, experiment_ids, filter_string, view, order_by, max_results)
        assert got == expected, (filter_string, view, order_by, max_results)
    # a page token in the middle, and a bad one, as MLflow
    runs = stock.search_runs(ids[:1], "", ViewType.ACTIVE_ONLY, 10, ["metrics.m DESC"])
    again = ours.search_runs(ids[:1], "", ViewType.ACTIVE_ONLY, 10, ["metrics.m DESC"],
                             runs.token)  # fmt: skip
    assert [r.info.run_id for r in again] == [
        r.info.run_id
        for r in stock.search_runs(ids[:1], "", ViewType.ACTIVE_ONLY, 10, ["metrics.m DESC"],
                                   runs.token)  # fmt: skip
    ]
    for store in (stock, ours):
        with pytest.raises(Exception, match="page token"):
            store.search_runs(ids[:1], "", ViewType.ACTIVE_ONLY, 10, None, "not-a-token")
    stock.engine.dispose()
    ours.engine.dispose()
    return len(cases)


@pytest.mark.postgres
def test_postgres_same_runs_order_and_tokens_as_mlflow(tmp_path, pg_database):
    assert _compare(pg_database, str(tmp_path / "artifacts")) > 40
    schema.upgrade_schema(pg_database)  # `mlflow db upgrade` still runs with the indexes in place


def test_sqlite_same_runs_order_and_tokens_as_mlflow(tmp_path, template_sqlite_db):
    # in memory when the machine has /dev/shm: the fill commits ~300 times (a disk sync each)
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else tmp_path) as folder:
        path = Path(folder) / "search.db"
        shutil.copy(template_sqlite_db, path)
        assert _compare(f"sqlite:///{path}", str(tmp_path / "artifacts")) > 40
        schema.upgrade_schema(f"sqlite:///{path}")  # `mlflow db upgrade` with the indexes in place


def test_the_server_builds_the_search_store(monkeypatch, tmp_path, template_sqlite_db):
    from mlflow.server import handlers

    from tracking.store import install

    path = tmp_path / "served.db"
    shutil.copy(template_sqlite_db, path)
    monkeypatch.setattr(handlers, "_tracking_store", None)
    monkeypatch.setattr(handlers, "_tracking_store_registry",
                        handlers.TrackingStoreRegistryWrapper())  # fmt: skip
    install()
    store = handlers._get_tracking_store(f"sqlite:///{path}", str(tmp_path / "artifacts"))
    assert type(store) is SearchStore
    # databases the differential test does not cover keep MLflow's store
    builder = handlers._tracking_store_registry.get_store_builder("mysql://host/db")
    assert builder == handlers.TrackingStoreRegistryWrapper._get_sqlalchemy_store
    store.engine.dispose()


def test_an_untested_mlflow_keeps_mlflows_own_search(monkeypatch, tmp_path, template_sqlite_db,
                                                      caplog):  # fmt: skip
    """Under another MLflow version the server answers searches through MLflow's own search."""
    import logging

    from mlflow import version
    from mlflow.server import ARTIFACT_ROOT_ENV_VAR, BACKEND_STORE_URI_ENV_VAR, app, handlers

    from tracking import store as search_store

    monkeypatch.setattr(version, "VERSION", "3.99.0")  # what the start-up check reads
    path = tmp_path / "served.db"
    shutil.copy(template_sqlite_db, path)
    monkeypatch.setenv(BACKEND_STORE_URI_ENV_VAR, f"sqlite:///{path}")
    monkeypatch.setenv(ARTIFACT_ROOT_ENV_VAR, str(tmp_path / "artifacts"))
    monkeypatch.setattr(handlers, "_tracking_store", None)
    monkeypatch.setattr(handlers, "_tracking_store_registry",
                        handlers.TrackingStoreRegistryWrapper())  # fmt: skip
    answered = []

    def refuse(*args, **kwargs):
        raise AssertionError("the faster search answered under an untested MLflow")

    stock_search = SqlAlchemyStore._search_runs

    def stock(self, *args, **kwargs):
        answered.append(type(self).__name__)
        return stock_search(self, *args, **kwargs)

    monkeypatch.setattr(SearchStore, "_search_runs", refuse)
    monkeypatch.setattr(SqlAlchemyStore, "_search_runs", stock)
    with caplog.at_level(logging.WARNING, logger="tracking.store"):
        search_store.create_app()  # what the server's worker runs at start-up
    assert [r.getMessage() for r in caplog.records] == [
        "MLflow 3.99.0 is not a version the faster runs search was tested with "
        f"({', '.join(search_store.TESTED_MLFLOW_VERSIONS)}): the server answers runs searches "
        "with MLflow's own search"
    ]

    store = handlers._get_tracking_store()
    experiment_id = store.create_experiment("fallback")
    runs = [store.create_run(experiment_id, "u", i, [], f"run-{i}").info.run_id for i in range(3)]
    resp = app.test_client().post("/api/2.0/mlflow/runs/search", json={
        "experiment_ids": [experiment_id], "order_by": ["attributes.start_time DESC"]})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert [r["info"]["run_id"] for r in resp.get_json()["runs"]] == runs[::-1]
    assert answered == ["SqlAlchemyStore"]  # MLflow's own store, through MLflow's own search

    # a worker of a server whose launcher already warned stays quiet
    caplog.clear()
    monkeypatch.setenv(search_store.FALLBACK_WARNED_ENV, "3.99.0")
    with caplog.at_level(logging.WARNING, logger="tracking.store"):
        search_store.install()
    assert caplog.records == []
    store.engine.dispose()
