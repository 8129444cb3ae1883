"""Fixtures for the serving tests: a registry of small models, and real serving processes."""

from __future__ import annotations

import contextlib
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from tests.support.moto_sagemaker import sagemaker_moto  # noqa: F401 - fixture
from tests.support.processes import free_port, running
from tests.support.sagemaker_registry import aws, registry, versions  # noqa: F401 - fixtures


@dataclass
class Store:
    """A tracking/registry store shared by a test module (its servers read it)."""

    uri: str
    path: Path
    client: mlflow.MlflowClient


@contextlib.contextmanager
def _module_store(tmp_path_factory, template_sqlite_db):
    folder = tmp_path_factory.mktemp("serving-store")
    shutil.copy(template_sqlite_db, folder / "mlflow.db")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.create_experiment("serving", artifact_location=(folder / "artifacts").as_uri())
    mlflow.set_experiment(experiment_id=exp)
    try:
        yield Store(uri, folder, client)
    finally:
        while mlflow.active_run():
            mlflow.end_run()
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)


@contextlib.contextmanager
def using_store(store: Store):
    """Point the fluent API (``start_run``, ``log_model``) at ``store`` for a block."""
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(store.uri)
    mlflow.set_registry_uri(store.uri)
    mlflow.set_experiment("serving")
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)
        mlflow.set_registry_uri(before)


def cancer_champion(store: Store, name: str, n_columns: int) -> tuple[str, pd.DataFrame]:
    """The cancer table's first ``n_columns`` fitted, registered as ``name``, made its champion.

    Returns the version and the rows it was trained on.
    """
    from tests.support.serving_models import cancer_data, fit_pipeline, log_sklearn_version

    X, y = cancer_data()
    X = X.iloc[:, :n_columns]
    with using_store(store):
        version = log_sklearn_version(store.client, name, fit_pipeline(X, y), X)
    store.client.set_registered_model_alias(name, "champion", version)
    return version, X


@pytest.fixture(scope="module")
def module_store(tmp_path_factory, template_sqlite_db):
    """A fresh SQLite store for the module, with an experiment whose artifacts it owns."""
    with _module_store(tmp_path_factory, template_sqlite_db) as store:
        yield store


@contextlib.contextmanager
def serving_process(store: Store, model: str, *args: str, workers: int = 2):
    """``python -m serving serve MODEL`` as a real process; yields (base URL, process)."""
    port = free_port()
    cmd = [sys.executable, "-m", "serving", "serve", model, "--port", str(port),
           "--workers", str(workers), *args]
    env = {"MLFLOW_TRACKING_URI": store.uri}
    with running(cmd, f"http://127.0.0.1:{port}/ping", "serving", env=env, cwd=store.path) as proc:
        yield f"http://127.0.0.1:{port}", proc
