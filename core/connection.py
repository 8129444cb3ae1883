"""The MLflow connection: where the tracking store is, and a client for it.

Only the CLI layers call :func:`connect`; library code receives the client it works with.
"""

from __future__ import annotations

import os
import urllib.parse

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
#: The database schemes MLflow's SQLAlchemy stores serve (and migrate with alembic).
SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")


def tracking_uri() -> str:
    """The tracking location: ``$MLFLOW_TRACKING_URI`` or the embedded SQLite store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def registry_uri() -> str:
    """The registry location: ``$MLFLOW_REGISTRY_URI`` or the tracking location."""
    return os.environ.get("MLFLOW_REGISTRY_URI") or tracking_uri()


def is_sql_store(uri: str) -> bool:
    """Whether ``uri`` is a SQLAlchemy database URL MLflow migrates with alembic."""
    return urllib.parse.urlparse(uri).scheme.split("+", 1)[0] in SQL_SCHEMES


def connect(uri: str | None = None):
    """Point the fluent API at ``uri`` (default :func:`tracking_uri`) and return a client.

    The registry is ``$MLFLOW_REGISTRY_URI`` when it is set and no ``uri`` is given, else the
    tracking location itself.

    Returns:
        mlflow.MlflowClient bound to the tracking and registry locations.
    """
    import mlflow

    reg = registry_uri() if uri is None else uri
    uri = uri or tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(reg)
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=reg)
