"""The tracking-server launcher: ``mlflow server`` from the settings' ``server`` section.

What it adds to a bare ``mlflow server``:

* the store is prepared before the start (:func:`prepare_store`): the schema is migrated when
  the database is behind or empty (:mod:`tracking.schema`), and the extra indexes the UI needs
  exist after every migration, with fresh planner statistics (:mod:`tracking.indexes`); the
  server's PostgreSQL sessions may sort the runs table in memory
  (:data:`tracking.indexes.PG_WORK_MEM`);
* its runs search is :class:`tracking.store.SearchStore` (MLflow's SQL store, the same
  answers, without sorting every run of the experiment for a page), through the ``mlflow.app``
  factory it starts the server with (``mlops``, or ``mlops-governance`` with ``--auth``);
* it waits until ``/health`` answers and prints the UI address and the runs table of the
  experiment;
* the server runs in its own process group; Ctrl-C/SIGTERM stop the whole group (the uvicorn
  workers included), so nothing is left behind;
* ``--auth`` turns on the project's server app (:mod:`tracking.governance`: MLflow's basic-auth
  app plus protected aliases and roles), with the admin credentials taken only from the
  environment (a weak admin password is refused before the start: :mod:`tracking.secrets`);
* secrets stay out of every command line: the backend store URI (which carries the database
  password on PostgreSQL) reaches ``mlflow db upgrade`` and ``mlflow server`` through
  ``MLFLOW_BACKEND_STORE_URI`` in their environment, never through argv, because
  ``/proc/PID/cmdline`` (what ``ps`` shows) is world-readable and ``/proc/PID/environ`` is not;
* the server's keys outlive a restart (:func:`tracking.secrets.resolve_keys`).
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
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from core.connection import is_sql_store
from core.redaction import redact_url
from core.settings import ServerSettings
from tracking.errors import ServerError
from tracking.indexes import ensure_indexes, ensure_search_indexes, server_store_uri
from tracking.schema import (
    BACKEND_STORE_ENV,
    make_sqlite_parent,
    schema_revisions,
    store_lock,
    upgrade_schema,
)
from tracking.secrets import (
    AUTH_CONFIG_ENV,
    ServerKeys,
    auth_database_uri,
    check_admin_env,
    resolve_keys,
    write_auth_config,
)

_logger = logging.getLogger(__name__)

ARTIFACTS_DESTINATION_ENV = "MLFLOW_ARTIFACTS_DESTINATION"
JOBS_ENV = "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"
STATIC_PREFIX_ENV = "MLFLOW_STATIC_PREFIX"  # mlflow server --static-prefix
APP_NAME = "mlops-governance"  # the mlflow.app entry point of tracking.governance
SEARCH_APP_NAME = "mlops"  # the mlflow.app entry point of tracking.store (no auth)

HEALTH_TIMEOUT_SECONDS = 120
STOP_TIMEOUT_SECONDS = 15
DEFAULT_EXPERIMENT = "mlops-registry"


@dataclass(frozen=True)
class ServerConfig:
    """Everything the launcher needs: the settings' ``server`` section plus run-time choices."""

    server: ServerSettings
    auth: bool = False
    jobs: bool = False
    protected_aliases: tuple[str, ...] = ("champion",)
    #: Approvals a move of each alias needs where its model's policy does not say (core.approvals).
    approvals: dict[str, int] = field(default_factory=dict)
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


# -- the store --------------------------------------------------------------------------------


def prepare_store(uri: str, env: dict | None = None) -> dict:
    """Migrate the backend store when it is behind and make sure the extra indexes exist.

    Returns:
        ``{"from": revision or None, "to": head, "upgraded": bool, "indexes": [created]}``.
        A non-SQL store (``file:``) is left alone.
    """
    if not is_sql_store(uri):
        return {"from": None, "to": None, "upgraded": False, "indexes": []}
    make_sqlite_parent(uri)
    with store_lock(uri):
        current, head = schema_revisions(uri)
        upgraded = current != head
        if upgraded:
            _logger.info("migrating %s from %s to %s", redact_url(uri), current or "empty", head)
            upgrade_schema(uri, env=env)
        indexes = ensure_indexes(uri) + ensure_search_indexes(uri)
    return {"from": current, "to": head, "upgraded": upgraded, "indexes": indexes}


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
        from core.approvals import APPROVALS_ENV

        env[APPROVALS_ENV] = json.dumps(config.approvals)
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
