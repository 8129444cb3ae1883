"""Servers started with the project's launcher (``python -m tracking server``), shared per module.

Starting an ``mlflow server`` costs ~5-10 s on this machine, so tests of a module that only add
their own runs share one server (module scope) instead of one each.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
from pathlib import Path

import pytest

from tests.support.postgres import fresh_pg_database
from tests.support.processes import free_port, running


def launcher_cmd(backend: str, artifacts: str, port: int, *extra: str) -> list[str]:
    """The launcher's command line as an admin would type it."""
    return [
        sys.executable, "-m", "tracking", "server",
        "--backend-store-uri", backend,
        "--artifacts-destination", artifacts,
        "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1",
        *extra,
    ]  # fmt: skip


_TEAM_KEYS: dict[str, str] = {}


def team_keys() -> dict[str, str]:
    """The server keys a team puts in every replica's environment; one set per test session."""
    if not _TEAM_KEYS:
        from tracking.secrets import new_keys

        _TEAM_KEYS.update(new_keys())
    return dict(_TEAM_KEYS)


@contextlib.contextmanager
def launched(backend: str, artifacts: str, *extra: str, env=None, cwd=None, name="tracking"):
    """Start the launcher, wait for /health, yield ``(url, process)``; stop it afterwards.

    A store other than SQLite gets the team's keys in the environment (the launcher requires
    them there) unless ``env`` brings its own.
    """
    port = free_port()
    cmd = launcher_cmd(backend, artifacts, port, *extra)
    if not backend.startswith("sqlite"):
        env = {**team_keys(), **(env or {})}
    with running(cmd, f"http://127.0.0.1:{port}/health", name, env=env, cwd=cwd) as proc:
        yield f"http://127.0.0.1:{port}", proc


def sqlite_copy(template: Path, directory: Path) -> str:
    """A migrated SQLite store copied from the session template (saves the migration)."""
    directory.mkdir(parents=True, exist_ok=True)
    db = directory / "server.db"
    shutil.copy(template, db)
    return f"sqlite:///{db}"


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def module_server(request, tmp_path_factory, template_sqlite_db):
    """The launcher on SQLite, then on a fresh PostgreSQL database; yields a dict.

    Keys: ``url``, ``backend``, ``kind``, ``artifacts`` (the proxied artifact folder), ``log``
    (the server's output, uvicorn's access log included).
    """
    tmp = tmp_path_factory.mktemp(f"server-{request.param}")
    artifacts = tmp / "artifacts"
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            backend = sqlite_copy(template_sqlite_db, tmp)
            extra = ()
        else:
            backend = stack.enter_context(
                fresh_pg_database(request.getfixturevalue("pg_template"))
            )
            extra = ("--workers", "2")
        url, proc = stack.enter_context(
            launched(backend, str(artifacts), *extra, cwd=tmp, name=f"tracking-{request.param}")
        )
        yield {"url": url, "backend": backend, "kind": request.param, "artifacts": artifacts,
               "log": proc.log_path}  # fmt: skip


def run_workflow(url: str, cwd: Path, timeout: float = 300):
    """``python -m projects main`` against ``url``: one small candidate, no step cache."""
    import subprocess

    from tests.support.processes import REPO, child_env

    cmd = [
        sys.executable, "-m", "projects", "main",
        "--candidates", "[{estimator: linear, grid: {C: [1.0]}}]",
        "--n-jobs", "1", "--cache", "false",
    ]  # fmt: skip
    env = child_env({"MLFLOW_TRACKING_URI": url, "PYTHONPATH": str(REPO)})
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


def assert_workflow_logged(url: str, server_log: Path | None = None, log_offset: int = 0) -> str:
    """What a data scientist sees after ``main``: finished runs and a challenger version.

    ``server_log[log_offset:]`` is the server's access log while the workflow ran.

    Returns:
        The run id of the registered version.
    """
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=url, registry_uri=url)
    experiment = client.get_experiment_by_name("mlops-registry")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=200)
    assert runs and all(r.info.status == "FINISHED" for r in runs)
    assert any(k.startswith("val_") for r in runs for k in r.data.metrics)
    version = client.get_model_version_by_alias("mlops-registry-model", "challenger")
    assert version.tags.get("mlops.task") == "classification"
    if server_log is not None:
        # Batched: the workflow never sends one metric per request.
        requests = server_log.read_bytes()[log_offset:].decode(errors="replace")
        assert "/api/2.0/mlflow/runs/log-batch" in requests
        assert "/api/2.0/mlflow/runs/log-metric " not in requests
    return version.run_id
