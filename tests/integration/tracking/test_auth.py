"""``--auth``: MLflow's basic-auth app with users provisioned by ``python -m tracking users apply``."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import requests

from tests.integration.tracking.conftest import launched, launcher_cmd, sqlite_copy
from tests.support.processes import REPO, child_env, free_port
from tracking.cli import main

pytestmark = pytest.mark.integration

ADMIN = {"MLFLOW_AUTH_ADMIN_USERNAME": "admin", "MLFLOW_AUTH_ADMIN_PASSWORD": "admin-password-123"}
PASSWORDS = {"ALICE_PW": "alice-password-123", "SCORING_PW": "scoring-password-123", "RITA_PW": "rita-password-123"}
MODEL = "mlops-registry-model"
USERS_FILE = textwrap.dedent(
    f"""\
    users:
      - name: alice
        role: data_scientist
        password_env: ALICE_PW
        experiments: [mlops-registry]
      - name: scoring
        role: service
        password_env: SCORING_PW
        experiments: [mlops-registry]
        models: [{MODEL}]
      - name: rita
        role: release_manager
        password_env: RITA_PW
        models: [{MODEL}]
    """
)


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory, template_sqlite_db):
    tmp = tmp_path_factory.mktemp("auth")
    backend = sqlite_copy(template_sqlite_db, tmp)
    with launched(backend, str(tmp / "artifacts"), "--auth", env=ADMIN, cwd=tmp, name="auth") as (
        url,
        _,
    ):
        # The registered model the permissions name, created by the admin.
        resp = requests.post(
            f"{url}/api/2.0/mlflow/registered-models/create",
            json={"name": MODEL},
            auth=(ADMIN["MLFLOW_AUTH_ADMIN_USERNAME"], ADMIN["MLFLOW_AUTH_ADMIN_PASSWORD"]),
            timeout=30,
        )
        assert resp.status_code == 200, resp.text
        users = tmp / "users.yaml"
        users.write_text(USERS_FILE)
        first = _apply(url, users)
        assert first.returncode == 0, first.stderr
        yield {"url": url, "users": users, "applied": first.stdout}


def _apply(url, users_file, **extra_env):
    env = child_env({**ADMIN, **PASSWORDS, "MLFLOW_TRACKING_URI": url, **extra_env})
    cmd = [sys.executable, "-m", "tracking", "users", "apply", str(users_file)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=120)


def _api(url, method, endpoint, user=None, password=None, **kwargs):
    auth = None
    if user:
        auth = (user, password or PASSWORDS[f"{user.upper()}_PW"])
    return requests.request(method, f"{url}/api/2.0/mlflow/{endpoint}", auth=auth, timeout=30,
                            **kwargs)  # fmt: skip


def _experiment_id(url):
    resp = _api(url, "GET", "experiments/get-by-name", "alice",
                params={"experiment_name": "mlops-registry"})  # fmt: skip
    assert resp.status_code == 200, resp.text
    return resp.json()["experiment"]["experiment_id"]


def test_auth_refuses_to_start_without_admin_credentials(tmp_path):
    port = free_port()
    cmd = launcher_cmd(f"sqlite:///{tmp_path}/x.db", str(tmp_path / "a"), port, "--auth")
    env = child_env()
    for key in ADMIN:
        env.pop(key, None)
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert done.returncode == 1
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("error:")]
    assert lines == [
        "error: --auth needs the admin credentials in the environment: set "
        "MLFLOW_AUTH_ADMIN_USERNAME and MLFLOW_AUTH_ADMIN_PASSWORD"
    ]
    assert "Traceback" not in done.stderr


def test_unauthenticated_calls_get_401(auth_server):
    resp = _api(auth_server["url"], "POST", "experiments/search", json={"max_results": 1})
    assert resp.status_code == 401
    wrong = _api(auth_server["url"], "POST", "experiments/search", "alice", "not-her-password",
                 json={"max_results": 1})  # fmt: skip
    assert wrong.status_code == 401


def test_users_apply_prints_grants_and_is_idempotent(auth_server):
    out = auth_server["applied"]
    assert "alice" in out and "EDIT" in out and "MANAGE" in out
    again = _apply(auth_server["url"], auth_server["users"])
    assert again.returncode == 0, again.stderr
    assert "unchanged" in again.stdout and "created" not in again.stdout
    assert "Warning" not in again.stderr


def test_users_apply_without_a_password_fails_in_one_line(auth_server, tmp_path, monkeypatch,
                                                          capsys):
    users = tmp_path / "u.yaml"
    users.write_text("users:\n  - {name: bob, role: service, password_env: BOB_PW}\n")
    for key, value in {**ADMIN, "MLFLOW_TRACKING_URI": auth_server["url"]}.items():
        monkeypatch.setenv(key, value)
    # The command sets the client's credentials from the admin's; restore them afterwards.
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "")
    assert main(["users", "apply", str(users)]) == 1
    assert capsys.readouterr().err.strip() == (
        "error: passwords missing from the environment: BOB_PW")


def test_data_scientist_edits_the_experiment(auth_server):
    url = auth_server["url"]
    experiment_id = _experiment_id(url)
    run = _api(url, "POST", "runs/create", "alice", json={"experiment_id": experiment_id})
    assert run.status_code == 200, run.text
    run_id = run.json()["run"]["info"]["run_id"]
    logged = _api(url, "POST", "runs/log-batch", "alice",
                  json={"run_id": run_id, "metrics": [{"key": "auc", "value": 0.9,
                                                       "timestamp": 0, "step": 0}]})  # fmt: skip
    assert logged.status_code == 200, logged.text


def test_read_user_writing_gets_403(auth_server):
    url = auth_server["url"]
    experiment_id = _experiment_id(url)
    # READ lets the service see the experiment and the model ...
    assert _api(url, "GET", "experiments/get", "scoring",
                params={"experiment_id": experiment_id}).status_code == 200  # fmt: skip
    assert _api(url, "GET", "registered-models/get", "scoring",
                params={"name": MODEL}).status_code == 200  # fmt: skip
    # ... but not write to them.
    run = _api(url, "POST", "runs/create", "scoring", json={"experiment_id": experiment_id})
    assert run.status_code == 403
    alias = _api(url, "POST", "registered-models/alias", "scoring",
                 json={"name": MODEL, "alias": "champion", "version": "1"})  # fmt: skip
    assert alias.status_code == 403


def test_release_manager_manages_the_model(auth_server):
    url = auth_server["url"]
    tagged = _api(url, "POST", "registered-models/set-tag", "rita",
                  json={"name": MODEL, "key": "owner", "value": "rita"})  # fmt: skip
    assert tagged.status_code == 200, tagged.text
    # A data scientist reads the model (the server's default) but does not manage it.
    denied = _api(url, "POST", "registered-models/set-tag", "alice",
                  json={"name": MODEL, "key": "owner", "value": "alice"})  # fmt: skip
    assert denied.status_code == 403
