"""Secrets stay out of argv: no server process shows the database password or keys in ``ps``."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest

from tests.support.postgres import PG_ADMIN, fresh_pg_database
from tests.support.processes import free_port, running
from tracking.secrets import new_keys

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

ADMIN = {"MLFLOW_AUTH_ADMIN_USERNAME": "admin",
         "MLFLOW_AUTH_ADMIN_PASSWORD": "admin-password-123"}  # fmt: skip


@pytest.fixture
def pg_uri_with_password(pg_template):
    """A fresh database owned by a new role with a password, as a team deployment has it.

    The machine's server trusts local connections (any password is accepted), but the URI still
    carries the password, which is what ``ps`` would show.
    """
    import psycopg

    role = f"mlops_secret_{uuid.uuid4().hex[:8]}"
    password = f"pw-{uuid.uuid4().hex}"
    with fresh_pg_database(pg_template) as admin_uri:
        database = admin_uri.rsplit("/", 1)[1]
        with psycopg.connect(f"{PG_ADMIN}/postgres", autocommit=True) as conn:
            # superuser: it owns nothing, yet uses the tables the template's owner made
            conn.execute(f"CREATE ROLE \"{role}\" LOGIN SUPERUSER PASSWORD '{password}'")
        try:
            yield f"postgresql+psycopg://{role}:{password}@127.0.0.1:5432/{database}", password
        finally:
            with psycopg.connect(f"{PG_ADMIN}/postgres", autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
                conn.execute(f'DROP ROLE IF EXISTS "{role}"')


def _processes() -> dict[int, tuple[int, int, bytes]]:
    """pid -> (parent pid, process group, command line) of every process we can see."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        found[int(entry.name)] = (int(fields[1]), int(fields[2]), cmdline)
    return found


def test_no_process_of_the_server_has_the_password_in_argv(pg_uri_with_password, tmp_path):
    uri, password = pg_uri_with_password
    # the admin gives the URI the way the README says: in the environment
    keys = new_keys()  # a team server's keys come from the environment too (see README)
    env = {**ADMIN, **keys, "MLFLOW_BACKEND_STORE_URI": uri}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "tracking", "server", "--auth", "--workers", "2",
           "--host", "127.0.0.1", "--port", str(port),
           "--artifacts-destination", str(tmp_path / "artifacts")]  # fmt: skip
    with running(cmd, f"{url}/health", "secrets", env=env, cwd=tmp_path) as launcher:
        procs = _processes()
        children = [pid for pid, (ppid, _, _) in procs.items() if ppid == launcher.pid]
        groups = {procs[pid][1] for pid in children} - {os.getpgid(launcher.pid)}
        assert len(groups) == 1, "the server runs in a process group of its own"
        server_group = groups.pop()
        watched = {pid: cmd for pid, (_, pgid, cmd) in procs.items()
                   if pgid == server_group or pid == launcher.pid}  # fmt: skip
        # the launcher, mlflow server and its uvicorn supervisor and two workers
        assert len(watched) >= 4, watched
        leaked = {pid: cmd for pid, cmd in watched.items()
                  if any(secret.encode() in cmd for secret in (password, *keys.values()))}
        assert leaked == {}
        # and it really runs on that database (users, runs and models live there)
        import requests

        resp = requests.post(f"{url}/api/2.0/mlflow/experiments/search", json={"max_results": 1},
                             auth=("admin", ADMIN["MLFLOW_AUTH_ADMIN_PASSWORD"]), timeout=30)
        assert resp.status_code == 200, resp.text
