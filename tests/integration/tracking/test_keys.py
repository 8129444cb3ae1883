"""The server's keys outlive a restart: a webhook saved before it is delivered, signed, after it.

MLflow encrypts each webhook's secret in the database with ``MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY``
and draws a new key per process when it is unset. The launcher keeps the key next to a SQLite
store (created once, mode 0600) and requires it from the environment on PostgreSQL, where
replicas share the database. Real launcher processes, stopped and started again on the same
store, and a real webhook receiver on loopback that checks the Standard Webhooks signature.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import http.server
import json
import subprocess
import sys
import threading
import time

import mlflow
import pytest

from tests.integration.tracking.conftest import launched, launcher_cmd, sqlite_copy
from tests.support.postgres import fresh_pg_database
from tests.support.processes import child_env, free_port
from tracking.secrets import new_keys

pytestmark = [pytest.mark.integration]

SECRET = "restart-webhook-secret"
# MLflow's server refuses plain-http and loopback webhook URLs unless told otherwise; a real
# deployment gives the receiver TLS and a routable address instead (see README).
LOOPBACK_WEBHOOKS = {"MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "https,http",
                     "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true"}  # fmt: skip


@contextlib.contextmanager
def receiver():
    """An HTTP server on loopback recording each delivery as ``(headers, body)``."""
    deliveries: list[tuple[dict, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
            deliveries.append((dict(self.headers), body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):  # quiet
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", deliveries
    finally:
        server.shutdown()
        server.server_close()


def signed(headers: dict, body: str, secret: str) -> bool:
    """Whether ``headers`` carry the Standard Webhooks signature of ``body`` with ``secret``."""
    content = f"{headers['X-MLflow-Delivery-Id']}.{headers['X-MLflow-Timestamp']}.{body}"
    digest = hmac.new(secret.encode(), content.encode(), hashlib.sha256).digest()
    expected = f"v1,{base64.b64encode(digest).decode()}"
    return hmac.compare_digest(headers.get("X-MLflow-Signature", ""), expected)


def wait_for(deliveries: list, version: str, timeout: float = 60) -> tuple[dict, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for headers, body in deliveries:
            data = json.loads(body)
            if data["action"] == "created" and data["data"].get("version") == version:
                return headers, body
        time.sleep(0.2)
    raise AssertionError(f"no delivery for version {version}: {deliveries}")


@pytest.mark.parametrize("backend_kind", ["sqlite", pytest.param("postgres",
                                                                 marks=pytest.mark.postgres)])
def test_a_webhook_saved_before_a_restart_is_delivered_signed_after_it(
        backend_kind, tmp_path, template_sqlite_db, request):
    env = dict(LOOPBACK_WEBHOOKS)
    with contextlib.ExitStack() as stack:
        if backend_kind == "sqlite":  # the launcher keeps the keys next to the database
            backend = sqlite_copy(template_sqlite_db, tmp_path / "store")
            keys = tmp_path / "store" / "server.db.keys"
        else:  # a shared database: the team's keys come from the environment, every start
            backend = stack.enter_context(
                fresh_pg_database(request.getfixturevalue("pg_template")))
            env.update(new_keys())
            keys = None
        url_hook, deliveries = stack.enter_context(receiver())
        artifacts = str(tmp_path / "artifacts")

        with launched(backend, artifacts, env=env, cwd=tmp_path, name="keys-1") as (url, proc):
            client = mlflow.MlflowClient(url, url)
            client.create_registered_model("hooked")
            run_id = client.create_run(client.create_experiment("hooked")).info.run_id
            v1, v2 = (client.create_model_version("hooked", f"runs:/{run_id}/m", run_id).version
                      for _ in range(2))  # fmt: skip
            client.create_webhook(name="follower", url=url_hook, secret=SECRET,
                                  events=["model_version_alias.created"])  # fmt: skip
            client.set_registered_model_alias("hooked", "staging", v1)
            headers, body = wait_for(deliveries, v1)
            assert signed(headers, body, SECRET)
            first_log = proc.log_path.read_text()
        if keys is not None:
            assert "Created the server's keys in" in first_log and str(keys) in first_log
            assert keys.stat().st_mode & 0o777 == 0o600
            kept = keys.read_bytes()

        with launched(backend, artifacts, env=env, cwd=tmp_path, name="keys-2") as (url, proc):
            client = mlflow.MlflowClient(url, url)
            client.set_registered_model_alias("hooked", "staging", v2)
            headers, body = wait_for(deliveries, v2)
            assert signed(headers, body, SECRET)
            assert "Created the server's keys" not in proc.log_path.read_text()
        if keys is not None:
            assert keys.read_bytes() == kept  # made once, read at every start


def _launch_fails(tmp_path, backend: str, *extra: str, env: dict | None = None):
    cmd = launcher_cmd(backend, str(tmp_path / "artifacts"), free_port(), *extra)
    return subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=120,
                          env=child_env(env))  # fmt: skip


ADMIN = {"MLFLOW_AUTH_ADMIN_USERNAME": "admin",
         "MLFLOW_AUTH_ADMIN_PASSWORD": "admin-password-123"}  # fmt: skip


def test_a_shared_database_without_its_keys_is_refused_in_one_line(tmp_path):
    # refused before the launcher connects: no database needs to exist
    backend = "postgresql+psycopg://mlflow@127.0.0.1:5432/never_created"
    done = _launch_fails(tmp_path, backend)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "error: a server on a shared database needs MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY in the "
        "environment, the same on every replica and at every start (`python -m tracking keys` "
        "prints new ones; see .env.example)"
    )
    assert done.stdout == ""

    keys = new_keys()
    only_webhook = {**ADMIN, "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY":
                    keys["MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY"]}  # fmt: skip
    done = _launch_fails(tmp_path, backend, "--auth", env=only_webhook)
    assert done.returncode == 2
    assert "needs MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY and MLFLOW_FLASK_SERVER_SECRET_KEY" in (
        done.stderr)
    assert len(done.stderr.strip().splitlines()) == 1

    done = _launch_fails(tmp_path, backend, env={**keys,
                         "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": "not-a-key"})  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY is not a Fernet key (32 url-safe "
        "base64-encoded bytes); `python -m tracking keys` prints a new one"
    ]


def test_a_keys_file_others_can_read_is_refused(tmp_path, template_sqlite_db):
    backend = sqlite_copy(template_sqlite_db, tmp_path / "store")
    keys = tmp_path / "store" / "server.db.keys"
    keys.write_text(json.dumps(new_keys()))
    keys.chmod(0o644)
    done = _launch_fails(tmp_path, backend)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"error: {keys} is readable by other users (mode 0644): chmod 600 {keys}"
    ]


def test_keys_prints_new_keys_for_a_teams_environment():
    done = subprocess.run([sys.executable, "-m", "tracking", "keys"], capture_output=True,
                          text=True, env=child_env(), timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = dict(line.split("=", 1) for line in done.stdout.splitlines())
    assert set(lines) == {"MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY", "MLFLOW_FLASK_SERVER_SECRET_KEY"}
    from cryptography.fernet import Fernet

    Fernet(lines["MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY"])  # a valid key, or this raises
    assert len(lines["MLFLOW_FLASK_SERVER_SECRET_KEY"]) == 64
