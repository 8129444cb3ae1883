"""The server SIGKILLed in the middle of logging, then restarted on the same store."""

from __future__ import annotations

import os
import signal
import threading
import time

import mlflow
import pytest
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException

from core.settings import ServerSettings
from tests.integration.tracking.conftest import sqlite_copy
from tests.support.processes import free_port, running
from tracking.server import ServerConfig, build_command, server_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BATCH = 20  # metric points per acknowledged request


def _server(backend: str, artifacts: str, port: int):
    """The exact `mlflow server` command the launcher runs (so the test can SIGKILL it)."""
    config = ServerConfig(
        server=ServerSettings(
            host="127.0.0.1", port=port, workers=1,
            backend_store_uri=backend, artifacts_destination=artifacts,
        )
    )  # fmt: skip
    cmd = build_command(config)
    env = {k: v for k, v in server_env(config).items()
           if k.startswith(("MLFLOW_SERVER", "MLFLOW_BACKEND_STORE"))}  # fmt: skip
    return running(cmd, f"http://127.0.0.1:{port}/health", "tracking-fault", env=env)


def test_sigkill_mid_logging_loses_nothing_acknowledged(tmp_path, template_sqlite_db, monkeypatch):
    # A short retry window so the test sees both outcomes quickly: retried into the restarted
    # server, or a clear error. MLflow's defaults (7 retries, factor 2) wait minutes.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "4")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    backend = sqlite_copy(template_sqlite_db, tmp_path / "store")
    artifacts = str(tmp_path / "artifacts")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    acked: list[int] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    with _server(backend, artifacts, port) as first:
        client = mlflow.MlflowClient(tracking_uri=url)
        run_id = client.create_run("0", run_name="killed-mid-logging").info.run_id

        def write():
            step = 0
            while not stop.is_set() and step < 400 * BATCH:
                ts = int(time.time() * 1000)
                metrics = [Metric("loss", 1.0 / (s + 1), ts, s) for s in range(step, step + BATCH)]
                try:
                    client.log_batch(run_id, metrics=metrics)
                except BaseException as exc:
                    errors.append(exc)
                    return
                acked.extend(range(step, step + BATCH))
                step += BATCH

        writer = threading.Thread(target=write)
        writer.start()
        deadline = time.monotonic() + 60
        while len(acked) < 10 * BATCH and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(acked) >= 10 * BATCH, errors
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)
        killed_at = len(acked)

    # Same store, same port: a restarted server.
    with _server(backend, artifacts, port):
        # Let the writer either fail or get a few more batches through, then stop it.
        deadline = time.monotonic() + 120
        while (writer.is_alive() and len(acked) < killed_at + 3 * BATCH
               and time.monotonic() < deadline):  # fmt: skip
            time.sleep(0.1)
        stop.set()
        writer.join(60)
        assert not writer.is_alive()
        client = mlflow.MlflowClient(tracking_uri=url)
        stored = sorted(m.step for m in client.get_metric_history(run_id, "loss"))
        # Nothing acknowledged is lost, and nothing is stored twice.
        assert set(acked) <= set(stored)
        assert len(stored) == len(set(stored))
        if errors:
            # Retries ran out while the server was down: the client failed clearly.
            assert isinstance(errors[0], MlflowException)
            assert "Max retries exceeded" in str(errors[0]) or "Connection" in str(errors[0])
        else:
            # The client retried into the restarted server and carried on.
            assert len(acked) > killed_at
        client.set_terminated(run_id, "KILLED")
        assert client.get_run(run_id).info.status == "KILLED"


def test_sigkill_mid_workflow_run_then_restart_completes_it(tmp_path, template_sqlite_db):
    """The server dies while the workflow trains; restarted, the workflow's client retries.

    MLflow's default retry policy (7 retries, exponential backoff) covers a restart of a few
    seconds: the workflow finishes, every step run ends FINISHED, one version is registered.
    """
    import subprocess
    import sys

    import numpy as np
    import pandas as pd

    from tests.support.processes import child_env

    backend = sqlite_copy(template_sqlite_db, tmp_path / "store")
    artifacts = str(tmp_path / "artifacts")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    rng = np.random.default_rng(0)
    data = pd.DataFrame(rng.normal(size=(20_000, 4)), columns=list("abcd"))
    data["target"] = (data["a"] + rng.normal(size=len(data)) > 0).astype(int)
    data.to_csv(tmp_path / "data.csv", index=False)
    cmd = [sys.executable, "-m", "projects", "main", "--source", str(tmp_path / "data.csv"),
           "--model-name", "mlops-registry-model", "--experiment", "faults", "--candidates",
           "[{estimator: random_forest, grid: {n_estimators: [150]}}]"]
    with _server(backend, artifacts, port) as first:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=child_env({"MLFLOW_TRACKING_URI": url}),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        client = mlflow.MlflowClient(tracking_uri=url, registry_uri=url)
        deadline = time.monotonic() + 120
        training = []
        while not training and time.monotonic() < deadline and proc.poll() is None:
            exp = client.get_experiment_by_name("faults")
            if exp:
                training = client.search_runs(
                    [exp.experiment_id],
                    "tags.`mlops.step` = 'train' and attributes.status = 'RUNNING'")
            time.sleep(0.2)
        assert training, proc.communicate()[1][-2000:]
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)
    time.sleep(2)  # the server is down for a while
    with _server(backend, artifacts, port):
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
        assert "model version  mlops-registry-model v1" in out
        client = mlflow.MlflowClient(tracking_uri=url, registry_uri=url)
        runs = client.search_runs([client.get_experiment_by_name("faults").experiment_id])
        steps = {r.data.tags.get("mlops.step", "workflow"): r.info.status for r in runs}
        assert set(steps.values()) == {"FINISHED"}, steps
        assert {"workflow", "ingest", "validate", "prepare", "train", "evaluate",
                "register"} <= set(steps)
        assert len(client.search_model_versions("name = 'mlops-registry-model'")) == 1
