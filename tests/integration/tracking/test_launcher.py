"""``python -m tracking server`` as an admin runs it: migration, address, clean stop."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import mlflow
import pytest
import sqlalchemy

from tests.integration.tracking.conftest import launched, sqlite_copy
from tracking.indexes import EXTRA_INDEXES, ensure_indexes
from tracking.schema import schema_revisions

pytestmark = pytest.mark.integration

OLD_REVISION_STEPS = 3  # how far behind the "old" database is


def _group_members(pgid: int) -> list[int]:
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # a zombie has exited already (it only waits to be reaped by init): not an orphan
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def _group_gone(pgid: int, timeout: float = 10) -> list[int]:
    """The group's live members once it is empty, or when ``timeout`` has passed."""
    deadline = time.monotonic() + timeout
    while (members := _group_members(pgid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return members


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _wait_for_line(log: Path, pattern: str, timeout: float = 60) -> re.Match:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if m := re.search(pattern, log.read_text(errors="replace"), re.M):
            return m
        time.sleep(0.2)
    raise AssertionError(f"{pattern!r} not in launcher output:\n{log.read_text()[-3000:]}")


def _downgrade(uri: str, steps: int) -> str:
    """Take the schema ``steps`` revisions back with MLflow's own alembic migrations."""
    from alembic import command
    from mlflow.store.db.utils import _get_alembic_config

    engine = sqlalchemy.create_engine(uri)
    try:
        with engine.begin() as conn:
            config = _get_alembic_config(uri)
            config.attributes["connection"] = conn
            command.downgrade(config, f"-{steps}")
    finally:
        engine.dispose()
    return schema_revisions(uri)[0]


def test_behind_database_is_migrated_and_the_group_stops_clean(tmp_path, template_sqlite_db):
    backend = sqlite_copy(template_sqlite_db, tmp_path / "store")
    # Data written by an older deployment: an experiment, a run with params and metric history.
    client = mlflow.MlflowClient(tracking_uri=backend)
    experiment_id = client.create_experiment("mlops-registry")
    run_id = client.create_run(experiment_id, run_name="before-upgrade").info.run_id
    client.log_param(run_id, "C", "0.1")
    for step in range(5):
        client.log_metric(run_id, "loss", 1.0 / (step + 1), step=step)
    client.set_terminated(run_id)
    # The older deployment already had the extra index: the migrations must run around it.
    assert ensure_indexes(backend) == list(EXTRA_INDEXES)
    old = _downgrade(backend, OLD_REVISION_STEPS)
    current, head = schema_revisions(backend)
    assert current == old != head

    with launched(backend, str(tmp_path / "artifacts"), "--workers", "2", cwd=tmp_path) as (
        url,
        launcher,
    ):
        log = launcher.log_path
        _wait_for_line(log, r"^Runs table: ")
        text = log.read_text()
        assert f"Migrated the database schema {old} -> {head}" in text
        assert f"Runs table: {url}/#/experiments/{experiment_id}/runs" in text
        assert schema_revisions(backend)[0] == head

        server_client = mlflow.MlflowClient(tracking_uri=url)
        run = server_client.get_run(run_id)
        assert run.data.params == {"C": "0.1"}
        assert [m.value for m in server_client.get_metric_history(run_id, "loss")] == [
            1.0 / (s + 1) for s in range(5)
        ]

        # SIGTERM to the launcher stops mlflow server and every uvicorn worker.
        (server_pid,) = _children(launcher.pid)
        assert len(_group_members(server_pid)) >= 3  # mlflow server, uvicorn, 2 workers
        os.kill(launcher.pid, signal.SIGTERM)
        assert launcher.wait(60) == 0
        assert _group_gone(server_pid) == []

    # `mlflow db upgrade` ran with the extra index in place, and the index is still there.
    engine = sqlalchemy.create_engine(backend)
    names = {ix["name"] for ix in sqlalchemy.inspect(engine).get_indexes("latest_metrics")}
    engine.dispose()
    assert set(EXTRA_INDEXES) <= names
