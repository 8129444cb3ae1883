"""The launcher's pure parts: command line, settings precedence, users file, one-line errors."""

from __future__ import annotations

import sys

import pytest
import sqlalchemy

from core.redaction import redact_text
from core.settings import ServerSettings, load_settings
from tracking import errors, indexes, secrets
from tracking import server as srv
from tracking.auth import ROLE_PERMISSIONS, UsersFileError, load_users_file
from tracking.cli import main


def test_command_carries_the_profile_and_flags():
    settings = load_settings("team").server
    config = srv.ServerConfig(server=settings, auth=True)
    cmd = srv.build_command(config)
    assert cmd[:4] == [sys.executable, "-m", "mlflow", "server"]
    opts = {flag: cmd[i + 1] for i, flag in enumerate(cmd) if flag.startswith("--")
            and i + 1 < len(cmd)}  # fmt: skip
    # the backend URI (a password on PostgreSQL) travels in the environment, never in argv
    assert "--backend-store-uri" not in cmd
    # ... with the sort memory the runs table needs at 100,000 runs (bench_tracking_scale.py)
    assert srv.server_env(config)["MLFLOW_BACKEND_STORE_URI"] == (
        "postgresql://mlflow@localhost:5432/mlflow?options=-c+work_mem%3D64MB")
    assert opts["--artifacts-destination"] == "s3://mlflow-artifacts"
    assert opts["--workers"] == "4"
    assert "mlflow.internal:*" in cmd[cmd.index("--allowed-hosts") + 1].split(",")
    assert cmd[-2:] == ["--app-name", "mlops-governance"]
    assert srv.server_env(config)["MLOPS_PROTECTED_ALIASES"] == '["champion"]'


def test_environment_then_flags_override_the_profile(monkeypatch):
    base = ServerSettings()
    monkeypatch.setenv("MLFLOW_BACKEND_STORE_URI", "postgresql://env/db")
    monkeypatch.setenv("MLFLOW_ARTIFACTS_DESTINATION", "s3://env-bucket")
    resolved = srv.resolve_server_settings(base, artifacts_destination="s3://flag", port=None)
    assert resolved.backend_store_uri == "postgresql://env/db"
    assert resolved.artifacts_destination == "s3://flag"
    assert resolved.port == base.port


def test_allowed_hosts_match_any_port():
    patterns = srv.allowed_host_patterns(["localhost", "mlflow.internal:443", "[::1]", "*"])
    assert patterns == ["localhost", "localhost:*", "mlflow.internal:443", "[::1]", "[[]::1]:*",
                        "*"]  # fmt: skip


def test_child_gets_the_venv_bin_first_and_no_job_runner():
    env = srv.server_env(srv.ServerConfig(server=ServerSettings()), base={"PATH": "/usr/bin"})
    assert env["PATH"].split(":")[0] == str(__import__("pathlib").Path(sys.executable).parent)
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    # the runs search of tracking.store, through its mlflow.app factory
    cmd = srv.build_command(srv.ServerConfig(server=ServerSettings()))
    assert cmd[-2:] == ["--app-name", "mlops"]


def test_auth_database_sits_next_to_a_sqlite_store():
    assert secrets.auth_database_uri("sqlite:////data/mlflow.db") == "sqlite:////data/basic_auth.db"
    assert secrets.auth_database_uri("postgresql://h/db") == "postgresql://h/db"


def test_ensure_indexes_is_idempotent_and_pins_sqlite_estimates(isolated_tracking):
    assert indexes.ensure_indexes(isolated_tracking) == list(indexes.EXTRA_INDEXES)
    assert indexes.ensure_indexes(isolated_tracking) == []
    search = [*indexes.SEARCH_INDEXES["sqlite"], *indexes.EXPRESSION_INDEXES]
    assert indexes.ensure_search_indexes(isolated_tracking) == search
    assert indexes.ensure_search_indexes(isolated_tracking) == []
    engine = sqlalchemy.create_engine(isolated_tracking)
    with engine.connect() as conn:
        stats = dict(
            conn.execute(
                sqlalchemy.text("SELECT idx, stat FROM sqlite_stat1 WHERE tbl='latest_metrics'")
            ).all()
        )
    engine.dispose()
    assert stats["mlops_idx_latest_metrics_key_value_run"] == "1000000 1000 1 1"


def test_prepare_store_leaves_a_current_database_alone(isolated_tracking):
    result = srv.prepare_store(isolated_tracking)
    assert result["upgraded"] is False and result["from"] == result["to"]


def test_users_file_roles_and_explicit_permissions(tmp_path):
    path = tmp_path / "users.yaml"
    path.write_text(
        "users:\n"
        "  - {name: alice, role: data_scientist, password_env: A, experiments: [exp]}\n"
        "  - {name: rita, role: release_manager, password_env: R, models: {m: edit}}\n"
    )
    alice, rita = load_users_file(path).users
    assert alice.grants() == [("experiments", "exp", ROLE_PERMISSIONS["data_scientist"]["experiments"])]
    assert ROLE_PERMISSIONS["data_scientist"]["experiments"] == "EDIT"
    assert ROLE_PERMISSIONS["service"]["models"] == "READ"
    assert ROLE_PERMISSIONS["release_manager"]["models"] == "MANAGE"
    assert rita.grants() == [("models", "m", "EDIT")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("users:\n  - {name: a, role: boss, password_env: X}\n", "users.0.role"),
        ("users:\n  - {name: a, role: service, password_env: X, pw: 1}\n", "unknown key"),
        ("users: [\n", "not valid YAML"),
    ],
)
def test_users_file_errors_are_one_line(tmp_path, text, message):
    path = tmp_path / "users.yaml"
    path.write_text(text)
    with pytest.raises(UsersFileError, match=message) as info:
        load_users_file(path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("args", "env", "code", "expected"),
    [
        (["server", "--auth", "--port", "0"], {}, 1,
         "error: --auth needs the admin credentials in the environment: set "
         "MLFLOW_AUTH_ADMIN_USERNAME and MLFLOW_AUTH_ADMIN_PASSWORD"),
        (["server", "--workers", "0"], {}, 2, "error: Invalid value for '--workers'"),
        (["server", "-o", "server.nope=1"], {}, 2, "error: setting server.nope: unknown key"),
        (["users", "apply", "missing.yaml"], {}, 1, "error: missing.yaml: no such file"),
        (["ui"], {"MLFLOW_TRACKING_URI": "http://team:5000"}, 1,
         "error: MLFLOW_TRACKING_URI points at http://team:5000"),
    ],
)  # fmt: skip
def test_cli_bad_input_is_one_error_line(monkeypatch, capsys, args, env, code, expected):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(args) == code  # 1 refused, 2 bad usage (core.errors)
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(expected), lines


def test_auth_config_is_readable_by_its_owner_only(tmp_path):
    # on PostgreSQL the users' database URI carries the database password
    path = tmp_path / "auth.ini"
    path.write_text("old")
    path.chmod(0o644)
    secrets.write_auth_config(path, "postgresql://mlflow:s3cret@db/mlflow")
    assert path.stat().st_mode & 0o777 == 0o600
    assert "database_uri = postgresql://mlflow:s3cret@db/mlflow" in path.read_text()


@pytest.mark.parametrize(
    ("password", "why"),
    [
        ("short-pw", "is shorter than 12 characters"),
        ("aaaaaaaaaaaa", "repeats one character"),
        ("abcabcabcabc", "repeats 'abc'"),
        ("123456789012", "is a keyboard or alphabet sequence"),
        ("qwertyuiopas", "is a keyboard or alphabet sequence"),
        ("ZYXWVUTSRQPO", "is a keyboard or alphabet sequence"),
        ("Password1234", "is a common password"),
    ],
)
def test_weak_admin_passwords_are_refused_with_the_reason(monkeypatch, capsys, password, why):
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", password)
    assert main(["server", "--auth", "--port", "0"]) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert lines == [f"error: MLFLOW_AUTH_ADMIN_PASSWORD is refused: it {why}"]


def test_a_passphrase_is_accepted():
    assert secrets.password_weakness("correct-horse-battery-staple") is None
    assert secrets.password_weakness("admin-password-123") is None


def test_a_migration_error_line_is_printed_without_the_password():
    uri = "postgresql+psycopg://mlflow:s3cret-pw@db:5432/mlflow"
    line = "could not connect to postgresql+psycopg://mlflow:s3cret-pw@db:5432/mlflow"
    redacted = "could not connect to postgresql+psycopg://mlflow:***@db:5432/mlflow"
    assert redact_text(line, uri) == redacted


def test_a_sqlite_store_keeps_its_keys_next_to_the_database(tmp_path):
    uri = f"sqlite:///{tmp_path / 'db' / 'mlflow.db'}"
    first = secrets.resolve_keys(uri, {})
    path = tmp_path / "db" / "mlflow.db.keys"
    assert (first.path, first.created) == (path, True)
    assert set(first.values) == set(secrets.KEY_ENVS)
    assert path.stat().st_mode & 0o777 == 0o600
    again = secrets.resolve_keys(uri, {}, auth=True)
    assert (again.values, again.created) == (first.values, False)  # made once, then read
    # the environment wins, key by key; the file is left as it was
    env = {secrets.SECRET_KEY_ENV: "from-the-environment"}
    assert secrets.resolve_keys(uri, env).values == {
        secrets.WEBHOOK_KEY_ENV: first.values[secrets.WEBHOOK_KEY_ENV]}
    assert [p.name for p in path.parent.iterdir()] == ["mlflow.db.keys"]  # no scratch left


def test_a_keys_file_that_is_not_the_keys_is_refused(tmp_path):
    path = tmp_path / "mlflow.db.keys"
    path.write_text("{}")
    path.chmod(0o600)
    with pytest.raises(errors.ServerError, match=r"does not hold the server's keys"):
        secrets.resolve_keys(f"sqlite:///{tmp_path / 'mlflow.db'}", {})


def test_a_shared_database_needs_the_keys_it_uses_from_the_environment():
    uri = "postgresql://mlflow@db.internal/mlflow"
    with pytest.raises(secrets.MissingKeysError, match=r"needs MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY in"):
        secrets.resolve_keys(uri, {})
    webhook_only = {secrets.WEBHOOK_KEY_ENV: secrets.new_keys()[secrets.WEBHOOK_KEY_ENV]}
    # without --auth nothing signs sessions: the session key need not be shared
    assert set(secrets.resolve_keys(uri, webhook_only).values) == {secrets.SECRET_KEY_ENV}
    with pytest.raises(secrets.MissingKeysError, match=r"and MLFLOW_FLASK_SERVER_SECRET_KEY in"):
        secrets.resolve_keys(uri, webhook_only, auth=True)
    assert secrets.resolve_keys(uri, secrets.new_keys(), auth=True).values == {}


def test_stores_with_no_state_to_keep_get_keys_for_the_process():
    for uri in ("sqlite:///:memory:", "file:///tmp/mlruns"):
        keys = secrets.resolve_keys(uri, {})
        assert keys.path is None and set(keys.values) == set(secrets.KEY_ENVS)


def test_the_launcher_warns_once_for_an_untested_mlflow(monkeypatch, caplog):
    from mlflow import version

    from tracking.store import FALLBACK_WARNED_ENV, TESTED_MLFLOW_VERSIONS

    monkeypatch.setattr(version, "VERSION", "3.99.0")
    env: dict = {}
    with caplog.at_level("WARNING"):
        srv._note_search_fallback(env)
    assert [r.getMessage() for r in caplog.records] == [
        "MLflow 3.99.0 is not a version the faster runs search was tested with "
        f"({', '.join(TESTED_MLFLOW_VERSIONS)}): the server "
        "answers runs searches with MLflow's own search"
    ]
    assert env == {FALLBACK_WARNED_ENV: "3.99.0"}  # the workers then stay quiet
