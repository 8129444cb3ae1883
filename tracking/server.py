"""The tracking-server launcher: ``mlflow server`` from the settings' ``server`` section.

What it adds to a bare ``mlflow server``:

* the schema is migrated (``mlflow db upgrade``) before the start when the database is behind
  (or empty), and the extra indexes the UI needs (:data:`EXTRA_INDEXES`, :data:`SEARCH_INDEXES`)
  exist after every migration, with fresh planner statistics on PostgreSQL; the server's
  PostgreSQL sessions may sort the runs table in memory (:data:`PG_WORK_MEM`);
* its runs search is :class:`tracking.store.SearchStore` (MLflow's SQL store, the same
  answers, without sorting every run of the experiment for a page), through the ``mlflow.app``
  factory it starts the server with (``mlops``, or ``mlops-governance`` with ``--auth``);
* it waits until ``/health`` answers and prints the UI address and the runs table of the
  experiment;
* the server runs in its own process group; Ctrl-C/SIGTERM stop the whole group (the uvicorn
  workers included), so nothing is left behind;
* ``--auth`` turns on the project's server app (:mod:`tracking.governance`: MLflow's basic-auth
  app plus protected aliases and roles), with the admin credentials taken only from the
  environment (a weak admin password is refused before the start);
* secrets stay out of every command line: the backend store URI (which carries the database
  password on PostgreSQL) reaches ``mlflow db upgrade`` and ``mlflow server`` through
  ``MLFLOW_BACKEND_STORE_URI`` in their environment, never through argv, because
  ``/proc/PID/cmdline`` (what ``ps`` shows) is world-readable and ``/proc/PID/environ`` is not;
* the server's keys (:data:`KEY_ENVS`: the one MLflow encrypts webhook secrets with, the one
  the auth app signs sessions and CSRF tokens with) outlive a restart: taken from the
  environment, else kept in a file next to a SQLite store (:func:`resolve_keys`); a database
  that replicas share needs them from the environment.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from core.connection import is_sql_store
from core.errors import MlopsError, UsageError
from core.redaction import redact_text, redact_url
from core.settings import ServerSettings

_logger = logging.getLogger(__name__)

BACKEND_STORE_ENV = "MLFLOW_BACKEND_STORE_URI"
ARTIFACTS_DESTINATION_ENV = "MLFLOW_ARTIFACTS_DESTINATION"
ADMIN_USERNAME_ENV = "MLFLOW_AUTH_ADMIN_USERNAME"
ADMIN_PASSWORD_ENV = "MLFLOW_AUTH_ADMIN_PASSWORD"
AUTH_CONFIG_ENV = "MLFLOW_AUTH_CONFIG_PATH"
SECRET_KEY_ENV = "MLFLOW_FLASK_SERVER_SECRET_KEY"
JOBS_ENV = "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"
STATIC_PREFIX_ENV = "MLFLOW_STATIC_PREFIX"  # mlflow server --static-prefix
# The Fernet key MLflow encrypts webhook secrets with in the database. Unset, every server
# process draws its own: a webhook saved through one worker or replica cannot be delivered by
# another (its secret does not decrypt there), nor after a restart.
WEBHOOK_KEY_ENV = "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY"
# The server's keys: each must be the same for every process that serves one database, across
# restarts (SECRET_KEY_ENV signs the auth app's sessions and CSRF tokens).
KEY_ENVS = (WEBHOOK_KEY_ENV, SECRET_KEY_ENV)
# Where a SQLite store's keys are kept: the database file's name plus this suffix.
KEYS_FILE_SUFFIX = ".keys"
APP_NAME = "mlops-governance"  # the mlflow.app entry point of tracking.governance
SEARCH_APP_NAME = "mlops"  # the mlflow.app entry point of tracking.store (no auth)

HEALTH_TIMEOUT_SECONDS = 120
STOP_TIMEOUT_SECONDS = 15
DEFAULT_EXPERIMENT = "mlops-registry"

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

class ServerError(MlopsError, RuntimeError):
    """The server cannot be started; the message is one line (exit 1)."""


class WeakPasswordError(UsageError):
    """The admin password is too easy to guess; the message says why (exit 2)."""


class MissingKeysError(UsageError):
    """A server on a shared database needs its keys from the environment (exit 2)."""


@dataclass(frozen=True)
class ServerConfig:
    """Everything the launcher needs: the settings' ``server`` section plus run-time choices."""

    server: ServerSettings
    auth: bool = False
    jobs: bool = False
    protected_aliases: tuple[str, ...] = ("champion",)
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """The address clients use (a wildcard bind is reached through localhost).

        It ends with MLflow's static prefix when one is set (``MLFLOW_STATIC_PREFIX``, which
        ``mlflow server`` reads for ``--static-prefix``): every route, ``/health`` too, is
        under it.
        """
        host = self.server.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        env = {**os.environ, **self.extra_env}
        return f"http://{host}:{self.server.port}{env.get(STATIC_PREFIX_ENV, '').rstrip('/')}"


def resolve_server_settings(server: ServerSettings, **overrides) -> ServerSettings:
    """Apply the environment, then command-line overrides, to the settings' ``server`` section.

    ``MLFLOW_BACKEND_STORE_URI`` and ``MLFLOW_ARTIFACTS_DESTINATION`` win over the profile;
    flags (``None`` means "not given") win over both.
    """
    update: dict = {}
    if os.environ.get(BACKEND_STORE_ENV):
        update["backend_store_uri"] = os.environ[BACKEND_STORE_ENV]
    if os.environ.get(ARTIFACTS_DESTINATION_ENV):
        update["artifacts_destination"] = os.environ[ARTIFACTS_DESTINATION_ENV]
    for key, value in overrides.items():
        if value is not None:
            update[key] = tuple(value) if key == "allowed_hosts" else value
    data = server.model_dump()
    data.update(update)
    return ServerSettings.model_validate(data)


# -- schema -----------------------------------------------------------------------------------


def _engine(uri: str):
    import sqlalchemy

    return sqlalchemy.create_engine(uri, poolclass=sqlalchemy.pool.NullPool)


def schema_revisions(uri: str) -> tuple[str | None, str]:
    """The database's alembic revision (``None`` when empty) and MLflow's head revision."""
    from alembic.migration import MigrationContext
    from mlflow.store.db.utils import _get_latest_schema_revision

    engine = _engine(uri)
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


def ensure_indexes(uri: str) -> list[str]:
    """Create the :data:`EXTRA_INDEXES` that are missing; return the names created.

    An index with the same columns under another name counts as present. On SQLite the
    planner estimates of ``latest_metrics`` are pinned too (see ``_pin_sqlite_statistics``).
    """
    import sqlalchemy

    created = []
    engine = _engine(uri)
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
    engine = _engine(uri)
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


def prepare_store(uri: str, env: dict | None = None) -> dict:
    """Migrate the backend store when it is behind and make sure the extra indexes exist.

    Returns:
        ``{"from": revision or None, "to": head, "upgraded": bool, "indexes": [created]}``.
        A non-SQL store (``file:``) is left alone.
    """
    if not is_sql_store(uri):
        return {"from": None, "to": None, "upgraded": False, "indexes": []}
    _make_sqlite_parent(uri)
    with _store_lock(uri):
        current, head = schema_revisions(uri)
        upgraded = current != head
        if upgraded:
            _logger.info("migrating %s from %s to %s", redact_url(uri), current or "empty", head)
            upgrade_schema(uri, env=env)
        indexes = ensure_indexes(uri) + ensure_search_indexes(uri)
    return {"from": current, "to": head, "upgraded": upgraded, "indexes": indexes}


# Replicas started together on one PostgreSQL database take turns: one migrates and creates
# the indexes, the others then find them in place (two CREATE INDEX at once would fail one).
_PREPARE_LOCK_ID = 0x6D6C6F7073  # "mlops"


@contextlib.contextmanager
def _store_lock(uri: str):
    """A PostgreSQL session-level advisory lock around the store's preparation."""
    if urllib.parse.urlparse(uri).scheme.split("+", 1)[0] != "postgresql":
        yield
        return
    import sqlalchemy

    engine = _engine(uri)
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


def _make_sqlite_parent(uri: str) -> None:
    if uri.startswith("sqlite:///") and uri != "sqlite:///:memory:":
        Path(uri[len("sqlite:///") :]).expanduser().parent.mkdir(parents=True, exist_ok=True)


# -- keys -------------------------------------------------------------------------------------


def new_keys() -> dict[str, str]:
    """Fresh values for :data:`KEY_ENVS` (what ``python -m tracking keys`` prints)."""
    import secrets

    from cryptography.fernet import Fernet

    return {WEBHOOK_KEY_ENV: Fernet.generate_key().decode(), SECRET_KEY_ENV: secrets.token_hex(32)}


def keys_file(backend_store_uri: str) -> Path | None:
    """Where the keys of a SQLite store are kept (next to the database); ``None`` elsewhere."""
    if not backend_store_uri.startswith("sqlite:///"):
        return None
    path = backend_store_uri[len("sqlite:///") :].split("?", 1)[0]
    if path in ("", ":memory:"):
        return None
    db = Path(path).expanduser().absolute()
    return db.with_name(db.name + KEYS_FILE_SUFFIX)


def _check_webhook_key(value: str) -> None:
    from cryptography.fernet import Fernet

    try:
        Fernet(value)
    except (ValueError, TypeError):
        # MLflow's workers would each crash on it at start, with a traceback
        raise UsageError(
            f"{WEBHOOK_KEY_ENV} is not a Fernet key (32 url-safe base64-encoded bytes); "
            "`python -m tracking keys` prints a new one"
        ) from None


def _read_keys(path: Path) -> dict[str, str]:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise ServerError(f"{path} is readable by other users (mode {mode:04o}): chmod 600 {path}")
    try:
        keys = json.loads(path.read_text())
        if not isinstance(keys, dict) or not all(isinstance(keys.get(k), str) for k in KEY_ENVS):
            raise ValueError
    except ValueError:
        raise ServerError(
            f"{path} does not hold the server's keys ({', '.join(KEY_ENVS)}); restore it from "
            "the backup of the database"
        ) from None
    return {k: keys[k] for k in KEY_ENVS}


def _create_keys(path: Path) -> bool:
    """Write new keys to ``path`` (mode 0600) unless it exists; whether this call wrote them.

    Written to a temporary file first and linked into place, so a launcher starting at the same
    moment on the same database reads either no file or a complete one, never half of it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, scratch = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(handle, 0o600)
        with os.fdopen(handle, "w") as f:
            json.dump(new_keys(), f)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(scratch, path)  # fails if it exists: the keys are made once
        except FileExistsError:
            return False
        return True
    finally:
        os.unlink(scratch)


@dataclass(frozen=True)
class ServerKeys:
    """The server's keys and where they came from.

    ``values`` maps the variables of :data:`KEY_ENVS` that were not in the environment to the
    values to give the server; ``path`` is the keys file they were read from (``None``: none
    needed one); ``created`` says the file was written by this start.
    """

    values: dict[str, str]
    path: Path | None = None
    created: bool = False


def resolve_keys(backend_store_uri: str, env: dict, auth: bool = False) -> ServerKeys:
    """The keys the server needs: from ``env``, else from the store's keys file, made once.

    A SQLite store is the state of one server on one host: its keys live next to the database
    (``mlflow.db`` -> ``mlflow.db.keys``, mode 0600), created at the first start and read at
    every later one, so webhook secrets saved before a restart still decrypt after it, and
    signed-in users stay signed in. A store on a database server (PostgreSQL) may be shared by
    replicas on other hosts, which a file on one host cannot reach, and a key kept in the
    database would sit next to the secrets it protects: the keys must come from the
    environment, the same on every replica (the webhook key always, the session key with
    ``--auth``). A store that is no SQL database (``file:``) has no webhooks; its keys only
    last the process, as MLflow's own would.

    Args:
        backend_store_uri: the server's backend store.
        env: the server's environment; values there win.
        auth: the server runs the auth app (it needs :data:`SECRET_KEY_ENV`).

    Raises:
        MissingKeysError: a shared database without its keys in the environment (one line).
        UsageError: the webhook key in the environment is no Fernet key.
        ServerError: the keys file is readable by others, or does not hold the keys.
    """
    if env.get(WEBHOOK_KEY_ENV):
        _check_webhook_key(env[WEBHOOK_KEY_ENV])
    missing = [k for k in KEY_ENVS if not env.get(k)]
    if not missing:
        return ServerKeys({})
    path = keys_file(backend_store_uri)
    if path is not None:
        created = not path.exists() and _create_keys(path)
        kept = _read_keys(path)
        return ServerKeys({k: kept[k] for k in missing}, path, created)
    if is_sql_store(backend_store_uri) and not backend_store_uri.startswith("sqlite"):
        needed = [WEBHOOK_KEY_ENV] + ([SECRET_KEY_ENV] if auth else [])
        if any(k in missing for k in needed):
            raise MissingKeysError(
                f"a server on a shared database needs {' and '.join(needed)} in the "
                "environment, the same on every replica and at every start (`python -m "
                "tracking keys` prints new ones; see .env.example)"
            )
    return ServerKeys({k: v for k, v in new_keys().items() if k in missing})


# -- auth -------------------------------------------------------------------------------------


def auth_database_uri(backend_store_uri: str) -> str:
    """Where the basic-auth app keeps users: next to a SQLite store, else in the same database.

    MLflow's auth tables and their alembic version table (``alembic_version_auth``) do not
    collide with the tracking schema, so a PostgreSQL backend can hold both.
    """
    if backend_store_uri.startswith("sqlite:///"):
        path = Path(backend_store_uri[len("sqlite:///") :]).expanduser()
        return f"sqlite:///{path.parent / 'basic_auth.db'}"
    return backend_store_uri


def write_auth_config(path: Path, database_uri: str, default_permission: str = "READ") -> Path:
    """Write the basic-auth ini, readable and writable by its owner only (mode 0600).

    The file holds no admin credentials (those come from the environment), but it does hold a
    secret when the store is PostgreSQL: ``database_uri`` is the users' database, and that URI
    carries the database password. Hence 0600, and the launcher deletes it when the server stops.
    """
    text = (
        "# Written by `python -m tracking server --auth`; deleted when the server stops.\n"
        "# database_uri may carry the database password: keep this file mode 0600.\n"
        "[mlflow]\n"
        f"default_permission = {default_permission}\n"
        f"database_uri = {database_uri}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its old mode through O_CREAT
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


MIN_PASSWORD_LENGTH = 12  # the minimum MLflow's own sign-up form asks for

# Passwords every guessing list starts with (and their obvious suffixes); a short list is
# enough here: the length rule, the repeated-character and the sequence rules catch the rest
# of what such lists hold.
COMMON_PASSWORDS = frozenset(
    """
    password password1 password12 password123 password1234 passw0rd p@ssw0rd p@ssword
    administrator admin123 admin1234 adminadmin administrator1 changeme changeme123
    letmein letmein123 welcome welcome123 welcome1234 qwerty qwertyuiop qwerty123 qwerty12345
    iloveyou iloveyou123 trustno1 football baseball superman dragon monkey sunshine princess
    starwars whatever mlflow mlflow123 mlflowadmin mlflow-admin mlflow_admin mlflowpassword
    secret secret123 mysecretpassword postgres postgres123 1q2w3e4r5t6y 1qaz2wsx3edc
    zaq12wsx asdfghjkl asdfghjkl123 zxcvbnm zxcvbnm123 passwordpassword
    """.split()
)
_SEQUENCES = (
    "abcdefghijklmnopqrstuvwxyz",
    "0123456789",
    "qwertyuiopasdfghjklzxcvbnm",
)


def _is_sequence(text: str) -> bool:
    """A run of one keyboard or alphabet row, forwards or backwards (``123456789012``...)."""
    lowered = text.lower()
    for row in _SEQUENCES:
        for seq in (row, row[::-1]):
            looped = seq * (len(lowered) // len(seq) + 2)
            if lowered in looped:
                return True
    return False


def password_weakness(password: str) -> str | None:
    """Why ``password`` is too easy to guess, or ``None`` when it is acceptable."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"it is shorter than {MIN_PASSWORD_LENGTH} characters"
    if len(set(password)) == 1:
        return "it repeats one character"
    for size in range(2, len(password) // 2 + 1):
        if len(password) % size == 0 and password == password[:size] * (len(password) // size):
            return f"it repeats {password[:size]!r}"
    if _is_sequence(password):
        return "it is a keyboard or alphabet sequence"
    if password.lower() in COMMON_PASSWORDS:
        return "it is a common password"
    return None


def check_admin_env(env: dict | None = None, strength: bool = False) -> None:
    """Refuse to go on without the admin credentials in the environment.

    Args:
        env: where to look (default: ``os.environ``).
        strength: also refuse a weak admin password (when starting a server; a client that
            only logs in with it does not judge it).

    Raises:
        ServerError: one line naming the missing variables (exit 1).
        WeakPasswordError: one line saying why the admin password is refused (exit 2).
    """
    env = os.environ if env is None else env
    missing = [k for k in (ADMIN_USERNAME_ENV, ADMIN_PASSWORD_ENV) if not env.get(k)]
    if missing:
        raise ServerError(
            f"--auth needs the admin credentials in the environment: set {' and '.join(missing)}"
        )
    why = password_weakness(env[ADMIN_PASSWORD_ENV]) if strength else None
    if why:
        raise WeakPasswordError(f"{ADMIN_PASSWORD_ENV} is refused: {why}")


# -- the process ------------------------------------------------------------------------------


def allowed_host_patterns(hosts) -> list[str]:
    """MLflow's ``--allowed-hosts`` patterns: a name without a port matches it on any port.

    Browsers and clients send ``Host: name:port``; MLflow compares the whole header.
    """
    patterns: list[str] = []
    for host in hosts:
        patterns.append(host)
        if host != "*" and not host.endswith("*") and ":" not in host.lstrip("[").split("]")[-1]:
            # fnmatch reads "[" as a character class: escape an IPv6 literal's bracket.
            patterns.append(f"{host.replace('[', '[[]', 1)}:*")
    return list(dict.fromkeys(patterns))


def build_command(config: ServerConfig) -> list[str]:
    """The ``mlflow server`` command line for ``config``.

    The backend store URI is not on it: :func:`server_env` passes it in the environment.
    """
    s = config.server
    cmd = [
        sys.executable, "-m", "mlflow", "server",
        "--artifacts-destination", s.artifacts_destination,
        "--serve-artifacts",
        "--host", s.host,
        "--port", str(s.port),
        "--workers", str(s.workers),
    ]  # fmt: skip
    if s.allowed_hosts:
        cmd += ["--allowed-hosts", ",".join(allowed_host_patterns(s.allowed_hosts))]
    # Both apps answer runs searches with tracking.store.SearchStore (same answers as MLflow's).
    cmd += ["--app-name", APP_NAME if config.auth else SEARCH_APP_NAME]
    return cmd


def server_env(config: ServerConfig, base: dict | None = None) -> dict:
    """The child's environment: the venv's bin first on PATH (mlflow execs ``uvicorn``).

    It carries the backend store URI (``MLFLOW_BACKEND_STORE_URI``, read by ``mlflow
    server``): a password in it stays out of every process's argv.
    """
    env = dict(os.environ if base is None else base)
    env[BACKEND_STORE_ENV] = server_store_uri(config.server.backend_store_uri)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    # MLflow's GenAI job runner spawns a pool of huey consumers per server; the workflow does
    # not use it, so it stays off unless asked for (--jobs).
    env.setdefault(JOBS_ENV, "true" if config.jobs else "false")
    # MLflow's app imports a Starlette module Starlette deprecates: a warning block on every
    # start that no user of the server can act on
    quiet = "ignore:starlette.middleware.wsgi is deprecated"
    env["PYTHONWARNINGS"] = ",".join(filter(None, [env.get("PYTHONWARNINGS"), quiet]))
    if config.auth:
        from tracking.governance import PROTECTED_ALIASES_ENV

        env[PROTECTED_ALIASES_ENV] = json.dumps(list(config.protected_aliases))
    env.update(config.extra_env)
    return env


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float) -> None:
    """Poll ``url/health`` until it answers 200.

    Raises:
        ServerError: the process exited first or the timeout passed.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerError(f"mlflow server exited with code {proc.returncode} before healthy")
        with contextlib.suppress(urllib.error.URLError, ConnectionError, OSError):
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        time.sleep(0.25)
    raise ServerError(f"{url}/health did not answer within {timeout:.0f} s")


def stop_group(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
    """Send ``sig`` to the server's whole process group, then SIGKILL what is left.

    Returns:
        The server's exit code.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        _logger.warning("server did not stop within %.0f s; killing its process group", timeout)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
    # uvicorn workers may outlive the parent for a moment; the group must end empty.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode


def experiment_runs_url(url: str, experiment_id: str) -> str:
    """The runs table of an experiment in the UI's model-training layout (3.17 opens GenAI)."""
    from core.uris import ui_path

    return f"{url}/{ui_path(experiment_id)}"


def find_experiment_id(url: str, name: str = DEFAULT_EXPERIMENT) -> str:
    """The id of experiment ``name`` on the server at ``url``, else of its first experiment."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=url)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    found = client.search_experiments(max_results=1, order_by=["creation_time ASC"])
    return found[0].experiment_id if found else "0"


@dataclass
class Launch:
    """A started server: its process (own group), address and what the start did."""

    proc: subprocess.Popen
    url: str
    store: dict
    auth_config: Path | None = None
    keys: ServerKeys = field(default_factory=lambda: ServerKeys({}))


def start(config: ServerConfig, log=None, timeout: float = HEALTH_TIMEOUT_SECONDS) -> Launch:
    """Prepare the store, start ``mlflow server`` in its own process group, wait for health.

    Args:
        config: what to start.
        log: file object for the server's output (default: inherit the launcher's).
        timeout: seconds to wait for ``/health``.

    Raises:
        ServerError: bad credentials setup, failed migration, or a server that never answered.
    """
    env = server_env(config)
    if config.auth:
        check_admin_env(env, strength=True)
    keys = resolve_keys(config.server.backend_store_uri, env, auth=config.auth)
    env.update(keys.values)
    _note_search_fallback(env)
    auth_config = None
    if config.auth:
        if not env.get(AUTH_CONFIG_ENV):
            handle, name = tempfile.mkstemp(prefix="mlflow-auth-", suffix=".ini")
            os.close(handle)
            auth_config = write_auth_config(
                Path(name), auth_database_uri(config.server.backend_store_uri)
            )
            env[AUTH_CONFIG_ENV] = str(auth_config)
    try:
        store = prepare_store(config.server.backend_store_uri, env=env)
        proc = subprocess.Popen(
            build_command(config), env=env, stdout=log, stderr=log, start_new_session=True
        )
    except BaseException:
        if auth_config is not None:
            auth_config.unlink(missing_ok=True)
        raise
    try:
        wait_healthy(config.url, proc, timeout)
    except BaseException:
        stop_group(proc)
        if auth_config is not None:
            auth_config.unlink(missing_ok=True)
        raise
    return Launch(proc=proc, url=config.url, store=store, auth_config=auth_config, keys=keys)


def _note_search_fallback(env: dict) -> None:
    """Warn once when the server will keep MLflow's own runs search (an untested MLflow).

    The server's workers each build the app and would each warn; the variable set here tells
    them this launcher already did.
    """
    from tracking.store import FALLBACK_WARNED_ENV, fallback_reason, mlflow_version

    reason = fallback_reason()
    if reason is not None:
        _logger.warning(reason)
        env[FALLBACK_WARNED_ENV] = mlflow_version()


def serve_forever(launch: Launch, stop_timeout: float = STOP_TIMEOUT_SECONDS) -> int:
    """Block until the server exits or the launcher gets SIGINT/SIGTERM; stop the group.

    Returns:
        0 after a requested stop, else the server's own exit code.
    """
    requested: list[int] = []

    def _forward(signum, frame):  # noqa: ARG001
        requested.append(signum)

    previous = {s: signal.signal(s, _forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not requested and launch.proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                launch.proc.wait(0.5)
    finally:
        code = stop_group(launch.proc, signal.SIGTERM, stop_timeout)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if launch.auth_config is not None:
            launch.auth_config.unlink(missing_ok=True)
    return 0 if requested else code
