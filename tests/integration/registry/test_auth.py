"""Promotion on a server with MLflow's basic-auth app: READ users are refused, managers are not.

A real ``mlflow server --app-name basic-auth`` (admin credentials from the config file it is
pointed at): the admin registers versions and grants a release manager MANAGE on the model;
everyone else keeps the default READ.
"""

from __future__ import annotations

import pytest

from registry.cli import main
from tests.conftest import _mlflow_server
from tests.integration.registry.conftest import log_candidate, register, write_policy

pytestmark = pytest.mark.integration

ADMIN = ("admin", "admin-Passw0rd-1234")
READER = ("reader", "reader-Passw0rd-1234")
MANAGER = ("release-manager", "manager-Passw0rd-1234")
MODEL = "guarded-model"


@pytest.fixture(scope="module")
def auth_server(template_sqlite_db, tmp_path_factory):
    import shutil

    work = tmp_path_factory.mktemp("auth")
    db = work / "server.db"
    shutil.copy(template_sqlite_db, db)
    ini = work / "basic_auth.ini"
    ini.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{work / 'auth.db'}\n"
        f"admin_username = {ADMIN[0]}\n"
        f"admin_password = {ADMIN[1]}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "grant_default_workspace_access = true\n"
        # Hash each password once a minute, not on every request (PBKDF2 is slow on purpose).
        "auth_cache_ttl_seconds = 60\n"
    )
    env = {"MLFLOW_AUTH_CONFIG_PATH": str(ini),
           "MLFLOW_FLASK_SERVER_SECRET_KEY": "registry-tests-secret"}
    port, ctx = _mlflow_server(f"sqlite:///{db}", str(work / "artifacts"),
                               ("--app-name", "basic-auth"), env)
    with ctx:
        yield f"http://127.0.0.1:{port}"


def _as(monkeypatch, user):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", user[1])


@pytest.fixture(scope="module")
def seeded(auth_server):
    """As admin: two users, two versions, MANAGE on the model for the release manager."""
    import os

    import mlflow
    from mlflow.server import get_app_client

    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = ADMIN
    try:
        auth = get_app_client("basic-auth", tracking_uri=auth_server)
        auth.create_user(*READER)
        auth.create_user(*MANAGER)
        logged = log_candidate(auth_server, n_features=3)
        versions = [register(auth_server, MODEL, logged) for _ in range(2)]
        auth.grant_user_permission(MANAGER[0], "registered_model", MODEL, "MANAGE")
        mlflow.MlflowClient(auth_server, auth_server).get_registered_model(MODEL)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return versions


@pytest.fixture
def cli(auth_server, tmp_path, monkeypatch, capsys):
    write_policy(tmp_path, MODEL)
    monkeypatch.setenv("MLOPS_POLICY_DIR", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "250")

    def run(user, *args):
        _as(monkeypatch, user)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", auth_server)
        monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
        capsys.readouterr()
        code = main(list(args))
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def _state(auth_server, monkeypatch):
    import mlflow

    _as(monkeypatch, ADMIN)
    model = mlflow.MlflowClient(auth_server, auth_server).get_registered_model(MODEL)
    return model.aliases.get("champion"), {k for k in model.tags if k.startswith("mlops.")}


def test_read_user_cannot_move_champion_manager_can(cli, seeded, auth_server, monkeypatch):
    v1, v2 = seeded

    # A READ user can look but not move: 403 as one line, nothing written.
    code, out, _ = cli(READER, "history", MODEL)
    assert code == 0
    code, _, err = cli(READER, "promote", f"{MODEL}/{v1}", "--reason", "let me")
    assert code == 1
    assert err.strip().splitlines() == [
        f"error: permission denied (403) to move 'champion' of '{MODEL}': "
        "ask an admin for EDIT/MANAGE on the model"
    ]
    assert _state(auth_server, monkeypatch) == (None, set())

    # Wrong password: 401 as one line.
    code, _, err = cli((READER[0], "wrong-password"), "list")
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "(401)" in lines[0], err

    # The release manager (MANAGE on the model) moves it, recorded under their name.
    code, out, err = cli(MANAGER, "promote", f"{MODEL}/{v1}", "--reason", "release 1")
    assert code == 0, err
    champion, tags = _state(auth_server, monkeypatch)
    assert champion == v1 and len(tags) == 1

    code, _, err = cli(READER, "rollback", MODEL, "--to", v2, "--reason", "sneaky")
    assert code == 1 and "(403)" in err and len(err.strip().splitlines()) == 1
    assert _state(auth_server, monkeypatch) == (champion, tags)

    code, out, err = cli(MANAGER, "history", MODEL)
    assert code == 0 and MANAGER[0] in out and "release 1" in out


HOSTILE = "hostile-model"
# A data scientist's custom model whose load code reaches for the release manager's credentials
# and tries to move champion with them (and with the process's own tracking store).
HOSTILE_CODE = '''
import json
import os

import mlflow
from mlflow.pyfunc import PythonModel


class Hostile(PythonModel):
    def load_context(self, context):
        seen = {k: v for k, v in os.environ.items()
                if k.startswith(("MLFLOW_TRACKING_", "AWS_ACCESS", "AWS_SECRET", "MLOPS_"))}
        tries = {}
        for uri in (SERVER, mlflow.get_tracking_uri()):
            try:
                mlflow.MlflowClient(uri, uri).set_registered_model_alias(MODEL, "champion", "2")
                tries[uri] = "moved"
            except Exception as exc:
                tries[uri] = type(exc).__name__ + ": " + str(exc)[:300]
        with open(CANARY, "w") as handle:
            json.dump({"env": seen, "tries": tries, "home": os.path.expanduser("~")}, handle)

    def predict(self, context, model_input, params=None):
        return model_input.iloc[:, 0] * 0


mlflow.models.set_model(Hostile())
'''


def test_a_models_load_code_sees_no_credentials_and_cannot_move_champion(
        cli, seeded, auth_server, monkeypatch, tmp_path):
    """validate runs the version's load code in a child without the release manager's secrets."""
    import json
    import os

    import mlflow
    from mlflow.server import get_app_client

    canary = tmp_path / "canary.json"
    code_file = tmp_path / "hostile_model.py"
    code_file.write_text(f"SERVER = {auth_server!r}\nMODEL = {HOSTILE!r}\n"
                         f"CANARY = {str(canary)!r}\n" + HOSTILE_CODE)
    _as(monkeypatch, ADMIN)
    logged = log_candidate(auth_server, n_features=3)
    versions = [register(auth_server, HOSTILE, logged) for _ in range(2)]
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(auth_server)
    try:  # a models-from-code file (never `python -c`: see DESIGN.md on pyspark)
        with mlflow.start_run(run_id=logged["run_id"]):
            info = mlflow.pyfunc.log_model(name="hostile", python_model=str(code_file),
                                           pip_requirements=[f"mlflow=={mlflow.__version__}"])
    finally:
        mlflow.set_tracking_uri(previous)
    hostile = register(auth_server, HOSTILE, {**logged, "model_uri": info.model_uri,
                                              "model_id": info.model_id})
    admin = mlflow.MlflowClient(auth_server, auth_server)
    admin.set_registered_model_alias(HOSTILE, "champion", versions[0])
    get_app_client("basic-auth", tracking_uri=auth_server).grant_user_permission(
        MANAGER[0], "registered_model", HOSTILE, "MANAGE")
    write_policy(tmp_path, HOSTILE)

    canary.unlink(missing_ok=True)  # logging the model may have run its code here, as admin
    code, out, err = cli(MANAGER, "validate", f"{HOSTILE}/{hostile}")
    assert code == 1 and "failed" in err  # it predicts zeros: the gates fail, as one line

    seen = json.loads(canary.read_text())  # its load code ran, and wrote what it saw
    # no MLFLOW_TRACKING_USERNAME/PASSWORD, no AWS keys, no MLOPS_*; the tracking URI its own
    own_store = seen["env"].pop("MLFLOW_TRACKING_URI")
    assert seen["env"] == {}
    assert own_store.startswith("sqlite:///") and own_store.endswith("/sandbox-mlflow.db")
    assert seen["home"] != os.path.expanduser("~")
    by_server = seen["tries"][auth_server]
    assert "401" in by_server or "Unauthorized" in by_server, by_server
    assert set(seen["tries"]) == {auth_server, own_store}
    assert admin.get_registered_model(HOSTILE).aliases["champion"] == versions[0]
