"""The backend store's schema: MLflow's migration, run without the password on a command line.

* :func:`schema_revisions` says whether the database is behind MLflow's head revision;
* :func:`upgrade_schema` runs ``mlflow db upgrade`` in a child process that reads the store URI
  from ``MLFLOW_BACKEND_STORE_URI`` (``/proc/PID/cmdline``, what ``ps`` shows, is
  world-readable; ``/proc/PID/environ`` is not);
* :func:`store_lock` makes replicas started together on one PostgreSQL database take turns.

The indexes MLflow lacks are in :mod:`tracking.indexes`; the launcher (:mod:`tracking.server`)
runs both before it starts the server.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import urllib.parse
from pathlib import Path

from core.redaction import redact_text
from tracking.errors import ServerError

BACKEND_STORE_ENV = "MLFLOW_BACKEND_STORE_URI"


def store_engine(uri: str):
    """A SQLAlchemy engine on the store that keeps no connection open (no pool)."""
    import sqlalchemy

    return sqlalchemy.create_engine(uri, poolclass=sqlalchemy.pool.NullPool)


def schema_revisions(uri: str) -> tuple[str | None, str]:
    """The database's alembic revision (``None`` when empty) and MLflow's head revision."""
    from alembic.migration import MigrationContext
    from mlflow.store.db.utils import _get_latest_schema_revision

    engine = store_engine(uri)
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
    return current, _get_latest_schema_revision()


# `mlflow db upgrade` takes the URL only as an argument: this runs its own code with the URL
# read from the environment, so the password never appears in the child's argv.
_UPGRADE_FROM_ENV = (
    "import os, mlflow.db; mlflow.db.upgrade.callback(os.environ['MLFLOW_BACKEND_STORE_URI'])"
)


def upgrade_schema(uri: str, env: dict | None = None) -> None:
    """Run MLflow's ``mlflow db upgrade`` on ``uri`` (creates the tables of an empty database too).

    The URI goes to the child through ``MLFLOW_BACKEND_STORE_URI``, not its command line.

    Raises:
        ServerError: the migration failed; the message names the last line of its output.
    """
    cmd = [sys.executable, "-c", _UPGRADE_FROM_ENV]
    child_env = {**(os.environ if env is None else env), BACKEND_STORE_ENV: uri}
    done = subprocess.run(cmd, capture_output=True, text=True, env=child_env)
    if done.returncode != 0:
        lines = [ln for ln in (done.stderr or done.stdout).splitlines() if ln.strip()]
        last = redact_text(lines[-1], uri) if lines else done.returncode
        raise ServerError(f"mlflow db upgrade failed: {last}")

# Replicas started together on one PostgreSQL database take turns: one migrates and creates
# the indexes, the others then find them in place (two CREATE INDEX at once would fail one).
_PREPARE_LOCK_ID = 0x6D6C6F7073  # "mlops"


@contextlib.contextmanager
def store_lock(uri: str):
    """A PostgreSQL session-level advisory lock around the store's preparation."""
    if urllib.parse.urlparse(uri).scheme.split("+", 1)[0] != "postgresql":
        yield
        return
    import sqlalchemy

    engine = store_engine(uri)
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text(f"SELECT pg_advisory_lock({_PREPARE_LOCK_ID})"))
            conn.commit()
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text(f"SELECT pg_advisory_unlock({_PREPARE_LOCK_ID})"))
                conn.commit()
    finally:
        engine.dispose()


def make_sqlite_parent(uri: str) -> None:
    """Create the folder of a SQLite database file (SQLite creates the file, not the folder)."""
    if uri.startswith("sqlite:///") and uri != "sqlite:///:memory:":
        Path(uri[len("sqlite:///") :]).expanduser().parent.mkdir(parents=True, exist_ok=True)
