"""Fixtures shared by every test.

The autouse fixture points each test at a fresh temporary tracking store, resets ``MLFLOW_*``
and ``MLOPS_*`` variables, and fails a test that leaves an MLflow run active.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.support.postgres import fresh_pg_database
from tests.support.processes import free_port, running


@pytest.fixture(scope="session")
def template_sqlite_db(tmp_path_factory) -> Path:
    """A migrated, empty MLflow SQLite store, made once and copied per test (migrations ~2 s)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    # the Default experiment's artifact location is fixed now: a temporary folder, never the
    # checkout (a relative ./mlruns would resolve against the cwd of this first call)
    store = SqlAlchemyStore(f"sqlite:///{path}", (path.parent / "mlruns").as_uri())
    store.engine.dispose()
    return path


@pytest.fixture(autouse=True)
def isolated_tracking(tmp_path, monkeypatch, template_sqlite_db):
    """Each test: its own SQLite store and artifact folder, clean env, no leaked active run."""
    import mlflow

    for key in list(os.environ):
        if key.startswith(("MLFLOW_", "MLOPS_")):
            monkeypatch.delenv(key)
    store = tmp_path / "mlflow.db"
    shutil.copy(template_sqlite_db, store)
    uri = f"sqlite:///{store}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    # mlflow.set_registry_uri exports MLFLOW_REGISTRY_URI; monkeypatch restores it afterwards
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    yield uri
    leaked = mlflow.active_run()
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)
    # mlflow.set_experiment() in one test must not point the next test's runs at an
    # experiment id its fresh store does not have (MLflow's own tests reset it the same way)
    import mlflow.tracking.fluent as fluent

    fluent._active_experiment_id = None
    if leaked is not None:
        pytest.fail(f"test leaked an active MLflow run: {leaked.info.run_id}")


def _mlflow_server(backend_uri: str, artifacts: str, extra_args=(), env=None):
    port = free_port()
    cmd = [
        sys.executable, "-m", "mlflow", "server",
        "--host", "127.0.0.1", "--port", str(port),
        "--backend-store-uri", backend_uri,
        "--artifacts-destination", artifacts,
        "--workers", "1",
        *extra_args,
    ]
    # MLflow's GenAI job runner (a pool of huey consumers per server) is not used here.
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})}
    return port, running(cmd, f"http://127.0.0.1:{port}/health", "mlflow-server", env=env)


@pytest.fixture
def sqlite_server(tmp_path, template_sqlite_db):
    """A real ``mlflow server`` on SQLite with proxied local artifacts; yields its URL."""
    db = tmp_path / "server.db"
    shutil.copy(template_sqlite_db, db)
    port, ctx = _mlflow_server(f"sqlite:///{db}", str(tmp_path / "server-artifacts"))
    with ctx:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def pg_template():
    """Name of a PostgreSQL database migrated once per test run; fresh databases copy it.

    Migrating an empty database takes ~30-50 s here; ``CREATE DATABASE ... TEMPLATE`` copies
    the migrated one in about a second.
    """
    from tracking.schema import upgrade_schema

    with fresh_pg_database() as url:
        upgrade_schema(url)
        yield url.rsplit("/", 1)[1]


@pytest.fixture
def pg_database(pg_template):
    """A fresh, migrated PostgreSQL database on the machine's server; dropped afterwards."""
    with fresh_pg_database(pg_template) as url:
        yield url


@pytest.fixture
def pg_server(tmp_path, pg_database):
    """A real ``mlflow server`` on a fresh PostgreSQL database; yields its URL."""
    port, ctx = _mlflow_server(pg_database, str(tmp_path / "server-artifacts"))
    with ctx:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(params=["sqlite", "postgres"])
def tracking_server(request):
    """A real ``mlflow server`` on SQLite, then on PostgreSQL."""
    if request.param == "postgres":
        request.applymarker(pytest.mark.postgres)
    return request.getfixturevalue(f"{'sqlite' if request.param == 'sqlite' else 'pg'}_server")


@pytest.fixture(scope="session")
def moto_server():
    """A moto server over HTTP (S3 and SageMaker emulation); yields its endpoint URL.

    AWS itself cannot exist here; moto stands in for it and is driven with boto3 over HTTP.
    """
    port = free_port()
    cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with running(cmd, f"http://127.0.0.1:{port}/moto-api/", "moto"):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def aws_env(monkeypatch, moto_server):
    """Credentials and endpoints that send boto3 and MLflow's S3 client to the moto server."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", moto_server)
    return moto_server


@pytest.fixture(autouse=True)
def restore_logging():
    """Commands run in-process configure loggers (``serve``, the workflow, the CLIs'
    ``basicConfig``): every test gives pytest's back, so no later test logs to a stream a
    finished test's capture has closed (whatever order the test processes take files in)."""
    import logging

    loggers = [logging.getLogger(), *(logger for logger in logging.Logger.manager.loggerDict.values()
                                      if isinstance(logger, logging.Logger))]
    saved = [(logger, logger.handlers[:], logger.level) for logger in loggers]
    yield
    for logger, handlers, level in saved:
        logger.handlers[:] = handlers
        logger.setLevel(level)
    logging.captureWarnings(False)
