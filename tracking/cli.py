"""``python -m tracking``: the tracking server, the UI, server keys, users, reaping runs.

The commands only parse flags and delegate to :mod:`tracking.server` (the launcher),
:mod:`tracking.secrets`, :mod:`tracking.auth` and :mod:`core.runs` (runs left RUNNING by a
process that died).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import warnings

import click

from core.connection import is_server, is_sql_store, tracking_uri
from core.redaction import redact_url
from core.settings import PROFILES, load_settings
from tracking import server as srv
from tracking.errors import ServerError
from tracking.secrets import ADMIN_PASSWORD_ENV, ADMIN_USERNAME_ENV, check_admin_env, new_keys

_logger = logging.getLogger(__name__)


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host if host not in ("0.0.0.0", "") else "127.0.0.1", 0))
        return sock.getsockname()[1]


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log what the launcher does.")
def cli(verbose: bool):
    """Tracking server launcher, UI and user provisioning."""
    # Third-party deprecation notices are not the user's business on this command line.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", module=r"(mlflow|starlette)\.")
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@cli.command("server")
@click.option(
    "--profile",
    type=click.Choice(PROFILES),
    default=None,
    help="Settings profile whose `server` section is used (default: $MLOPS_PROFILE or local).",
)
@click.option(
    "--backend-store-uri",
    default=None,
    help="Database of runs and models: sqlite:///path.db or postgresql://user@host/db. "
    "Default: $MLFLOW_BACKEND_STORE_URI, else the profile's.",
)
@click.option(
    "--artifacts-destination",
    default=None,
    help="Where proxied artifacts are stored: a folder or s3://bucket/prefix. "
    "Default: $MLFLOW_ARTIFACTS_DESTINATION, else the profile's.",
)
@click.option("--host", default=None, help="Interface to bind (0.0.0.0 for every interface).")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=None, help="Port to listen on (0: any free)."
)
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Worker processes.")
@click.option(
    "--allowed-hosts",
    default=None,
    help="Comma-separated Host headers the server answers to (DNS-rebinding protection); "
    "other Host headers are refused.",
)
@click.option(
    "--auth",
    is_flag=True,
    help="MLflow's basic-auth app with the project's governance (protected aliases such as "
    "champion: release managers and admins only). Needs MLFLOW_AUTH_ADMIN_USERNAME and "
    "MLFLOW_AUTH_ADMIN_PASSWORD in the environment.",
)
@click.option(
    "--jobs/--no-jobs",
    default=False,
    help="Run MLflow's GenAI job runner next to the server (off: the workflow does not use it).",
)
@click.option(
    "-o", "--override", "overrides", multiple=True, metavar="KEY=VALUE",
    help="Settings override, e.g. server.workers=2 (repeatable).",
)  # fmt: skip
def server_command(profile, overrides, auth, jobs, allowed_hosts, **flags):
    """Start `mlflow server` from the settings' profile; flags override it.

    Migrates the database first when it is behind, waits until /health answers, prints the UI
    address, and on Ctrl-C/SIGTERM stops the whole process group.
    """
    settings = load_settings(profile, overrides)
    if allowed_hosts is not None:
        flags["allowed_hosts"] = [h.strip() for h in allowed_hosts.split(",") if h.strip()]
    server_settings = srv.resolve_server_settings(settings.server, **flags)
    if server_settings.port == 0:
        server_settings = server_settings.model_copy(
            update={"port": _free_port(server_settings.host)}
        )
    config = srv.ServerConfig(
        server=server_settings,
        auth=auth,
        jobs=jobs,
        protected_aliases=settings.governance.protected_aliases,
        approvals=dict(settings.governance.approvals),
    )
    _run(config, settings.experiment)


@cli.command("ui")
@click.option("--port", type=click.IntRange(0, 65535), default=5000, show_default=True,
              help="Port of the UI (0: any free).")  # fmt: skip
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--profile", type=click.Choice(PROFILES), default=None,
              help="Settings profile (names the experiment to open).")  # fmt: skip
def ui_command(port, host, profile):
    """Open the embedded store ($MLFLOW_TRACKING_URI, default sqlite:///mlflow.db) in the UI.

    Prints the address of the runs table of the settings' experiment (or the first one).
    """
    settings = load_settings(profile)
    uri = tracking_uri()
    if not is_sql_store(uri) and not uri.startswith(("file:", "/", ".")):
        srv_hint = uri if uri.startswith("http") else "a server"
        raise ServerError(f"MLFLOW_TRACKING_URI points at {srv_hint}; open it in a browser")
    if port == 0:
        port = _free_port(host)
    server_settings = settings.server.model_copy(
        update={
            "backend_store_uri": uri,
            "artifacts_destination": "./mlruns",
            "host": host,
            "port": port,
            "workers": 1,
        }
    )
    _run(srv.ServerConfig(server=server_settings), settings.experiment)


def _run(config: srv.ServerConfig, experiment: str):
    from core.runs import terminate_as_interrupt

    s = config.server
    # Ctrl-C or SIGTERM while the server comes up still stops its whole process group (and
    # exits 130 through core.cli.run_group).
    with terminate_as_interrupt():
        launch = srv.start(config)
        try:
            if config.auth:
                # The launcher asks the server for the experiment id as the admin.
                os.environ["MLFLOW_TRACKING_USERNAME"] = os.environ[ADMIN_USERNAME_ENV]
                os.environ["MLFLOW_TRACKING_PASSWORD"] = os.environ[ADMIN_PASSWORD_ENV]
            experiment_id = srv.find_experiment_id(launch.url, experiment)
        except BaseException:
            srv.stop_group(launch.proc)
            raise
    if launch.store["upgraded"]:
        click.echo(f"Migrated the database schema {launch.store['from'] or '(empty)'} -> "
                   f"{launch.store['to']}")  # fmt: skip
    for name in launch.store["indexes"]:
        click.echo(f"Created index {name}")
    if launch.keys.created:
        click.echo(f"Created the server's keys in {launch.keys.path} (mode 0600): back it up "
                   "with the database (its webhook secrets cannot be read without it)")
    click.echo(
        f"MLflow tracking server: {launch.url}  (backend {redact_url(s.backend_store_uri)}, "
        f"artifacts {s.artifacts_destination}, {s.workers} worker(s), "
        f"auth {'on' if config.auth else 'off'})"
    )
    click.echo(f"Runs table: {srv.experiment_runs_url(launch.url, experiment_id)}")
    click.echo(f"Log to it with: export MLFLOW_TRACKING_URI={launch.url}   (Ctrl-C stops it)")
    sys.stdout.flush()
    sys.exit(srv.serve_forever(launch))


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``python -m tracking``.

    Errors are one ``error:`` line with the exit codes of :mod:`core.errors` (1 refused,
    2 bad usage, 130 interrupted).
    """
    from core.cli import run_group

    return run_group(cli, argv, "python -m tracking")


@cli.command("keys")
def keys_command():
    """Print new server keys as KEY=VALUE lines, for a team's .env or secret store.

    MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY encrypts webhook secrets in the database and
    MLFLOW_FLASK_SERVER_SECRET_KEY signs the auth app's sessions: give every replica the same
    values and keep them across restarts (a server on a SQLite store keeps its own next to the
    database). Changing the webhook key makes the webhooks saved before unusable.
    """
    for name, value in new_keys().items():
        click.echo(f"{name}={value}")


@cli.group("users")
def users_group():
    """Users and permissions of a basic-auth server."""


@users_group.command("apply")
@click.argument("file", type=click.Path(dir_okay=False))
def users_apply(file):
    """Create/update the users of FILE and grant their permissions on $MLFLOW_TRACKING_URI.

    Runs as the admin from MLFLOW_AUTH_ADMIN_USERNAME / MLFLOW_AUTH_ADMIN_PASSWORD; each
    user's password comes from the variable its `password_env` names.
    """
    from rich.console import Console
    from rich.table import Table

    from tracking.auth import apply_users, load_users_file

    spec = load_users_file(file)
    uri = tracking_uri()
    if not is_server(uri):
        raise ServerError("MLFLOW_TRACKING_URI must be the http(s) address of the server")
    check_admin_env()
    os.environ["MLFLOW_TRACKING_USERNAME"] = os.environ[ADMIN_USERNAME_ENV]
    os.environ["MLFLOW_TRACKING_PASSWORD"] = os.environ[ADMIN_PASSWORD_ENV]

    import mlflow
    from mlflow.server.auth.client import AuthServiceClient

    applied = apply_users(AuthServiceClient(uri), mlflow.MlflowClient(tracking_uri=uri), spec)
    table = Table("user", "action", "resource type", "resource", "permission")
    for row in applied:
        table.add_row(row.user, row.action, row.resource_type, row.resource, row.permission)
    Console().print(table)


# ------------------------------------------------------------------------------ runs
class _Duration(click.ParamType):
    """A duration such as 30m, 2h, 1d or 1h30m, in seconds."""

    name = "duration"

    def convert(self, value, param, ctx):
        from core.runs import parse_duration

        if isinstance(value, int | float):
            return float(value)
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


@cli.group("runs")
def runs_group():
    """Runs left RUNNING by a process that died (exit codes: 0 done, 1 failed, 2 bad usage)."""


@runs_group.command("reap")
@click.option("--older-than", type=_Duration(), default="24h", show_default=True,
              help="Close a run of another host not heard from (start, metric, heartbeat) "
                   "for this long: 30m, 2h, 1d, 1h30m.")  # fmt: skip
@click.option("--experiment", "experiments", multiple=True, metavar="NAME_OR_ID",
              help="Experiment to look in (repeatable; default: every active one).")  # fmt: skip
@click.option("--dry-run", is_flag=True, help="Show what would be closed; change nothing.")
def runs_reap(older_than, experiments, dry_run):
    """End FAILED the RUNNING runs whose process is gone, on $MLFLOW_TRACKING_URI.

    A run of this host is closed when the process that ran it is gone (whatever its age) and
    never while it lives; a run of another host, or one that records no process, when it was
    not heard from for --older-than. Each closed run gets the tag `mlops.reaped` and a note
    saying why, by whom and when.
    """
    import time

    from rich.console import Console
    from rich.table import Table

    from core.connection import connect
    from core.errors import MlopsError
    from core.runs import HOST_TAG, close_runs, find_stale_runs, format_duration

    client = connect()
    names = _experiments(client, experiments)
    stale = find_stale_runs(client, list(names), older_than)
    if not stale:
        click.echo("nothing to reap")
        return
    by = "python -m tracking runs reap"
    closed, failed = ([], []) if dry_run else close_runs(client, stale, by)
    now = int(time.time() * 1000)
    title = "would close (dry run)" if dry_run else f"closed {len(closed)} run(s), ended FAILED"
    table = Table("run", "experiment", "name", "host", "silent for", "why", title=title)
    for item in stale:
        if not dry_run and item.run_id not in closed:
            continue
        tags = item.run.data.tags
        table.add_row(item.run_id, names.get(item.run.info.experiment_id,
                                             item.run.info.experiment_id),
                      tags.get("mlflow.runName", ""), tags.get(HOST_TAG, "?"),
                      format_duration((now - item.last_heard_ms) / 1000),
                      f"silent longer than {format_duration(older_than)}" if item.silent
                      else item.reason)  # fmt: skip
    Console(width=200).print(table)
    if failed:
        for line in failed:
            click.echo(f"error: could not close {line}", err=True)
        raise MlopsError(f"{len(failed)} run(s) could not be closed")


def _experiments(client, wanted) -> dict[str, str]:
    """Experiment id -> name of ``wanted`` (names or ids), or of every active experiment."""
    from mlflow.exceptions import MlflowException

    from core.errors import MlopsError

    if not wanted:
        found, token = {}, None
        while True:
            page = client.search_experiments(max_results=1000, page_token=token)
            found.update({e.experiment_id: e.name for e in page})
            token = page.token
            if not token:
                return found
    found = {}
    for ref in wanted:
        exp = client.get_experiment_by_name(ref)
        if exp is None and ref.isdigit():
            try:
                exp = client.get_experiment(ref)
            except MlflowException:
                exp = None
        if exp is None:
            raise MlopsError(f"no experiment named or numbered {ref!r}")
        found[exp.experiment_id] = exp.name
    return found
