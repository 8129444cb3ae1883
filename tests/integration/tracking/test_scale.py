"""The launcher's search indexes on a store of a few thousand runs (100,000 is the benchmark's).

Filled in bulk in MLflow's schema (``benchmarks/bench_tracking_scale.py``'s own rows), served by
the launcher's real ``mlflow server`` on PostgreSQL; the UI's searches answer through the REST
API what the data says, PostgreSQL's planner takes the new indexes, and long tag values are
still accepted (a btree on the value would refuse them). SQLite's searches, and ``mlflow db
upgrade`` with the indexes in place on both databases, are in ``test_search_store.py``.
"""

from __future__ import annotations

import json
import urllib.request

import pytest
import sqlalchemy

from benchmarks import bench_tracking_scale as bench
from core.settings import ServerSettings
from tests.support.processes import free_port
from tracking import indexes, secrets
from tracking import server as srv

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RUNS = 1500


def _search(url: str, body: dict) -> list[dict]:
    req = urllib.request.Request(
        f"{url}/ajax-api/2.0/mlflow/runs/search",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read()).get("runs", [])


def _check_store(uri: str, fill, tmp_path) -> None:
    experiment_id = bench.create_experiment(uri)
    fill(experiment_id)
    data = bench.rows(experiment_id, RUNS)
    settings = ServerSettings(backend_store_uri=uri, port=free_port(),
                              artifacts_destination=str(tmp_path / "artifacts"))  # fmt: skip
    with open(tmp_path / "server.log", "wb") as log:
        # on PostgreSQL the launcher takes the server's keys from the environment only
        launch = srv.start(srv.ServerConfig(server=settings, extra_env=secrets.new_keys()), log=log)
    try:
        dialect = uri.split(":", 1)[0].split("+", 1)[0]
        assert set(indexes.SEARCH_INDEXES[dialect]) <= set(launch.store["indexes"])
        base = {"experiment_ids": [str(experiment_id)], "max_results": 100}

        team = {run for key, value, run in data["tags"] if key == "team" and value == "team-7"}
        found = _search(launch.url, {**base, "filter": "tags.team = 'team-7'", "max_results": 1000})
        assert {r["info"]["run_id"] for r in found} == team

        param = {run for key, value, run in data["params"] if key == "p2" and value == "42"}
        found = _search(launch.url, {**base, "filter": "params.p2 = '42'"})
        assert {r["info"]["run_id"] for r in found} == param

        m3 = sorted(((v, run) for key, v, _, run, _, _ in data["metrics"] if key == "m3"),
                    reverse=True)  # fmt: skip
        found = _search(launch.url, {**base, "order_by": ["metrics.`m3` DESC"]})
        assert [r["info"]["run_id"] for r in found] == [run for _, run in m3[:100]]

        # a run's description may hold 8,000 characters: still accepted with the indexes
        import mlflow

        client = mlflow.MlflowClient(tracking_uri=launch.url)
        run_id = client.create_run(str(experiment_id)).info.run_id
        client.set_tag(run_id, "mlflow.note.content", "x" * 8000)
        client.log_param(run_id, "long", "y" * 6000)
        assert len(client.get_run(run_id).data.tags["mlflow.note.content"]) == 8000
    finally:
        srv.stop_group(launch.proc)


@pytest.mark.postgres
def test_postgres_store_searches_use_the_indexes(tmp_path, pg_database):
    uri = pg_database  # a fresh database, migrated by `mlflow db upgrade`
    dsn = uri.replace("+psycopg", "")
    _check_store(uri, lambda e: bench.fill_postgres(dsn, e, RUNS), tmp_path)
    engine = sqlalchemy.create_engine(uri)
    with engine.connect() as conn:
        plan = "\n".join(
            conn.execute(
                sqlalchemy.text(
                    "EXPLAIN SELECT run_uuid FROM tags WHERE key = 'team' AND value = 'team-7'"
                )
            ).scalars()
        )
    engine.dispose()
    assert "mlops_idx_tags_value_hash" in plan
