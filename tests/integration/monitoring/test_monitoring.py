"""Update: capture what the champion serves, find drift, retrain on new data (issue: update).

Real processes throughout: the training workflow registers the version, a real serving process
captures requests, ``python -m serving monitor`` (which runs ``python -m monitoring``) judges
them and ``--retrain`` runs the workflow's MLproject entry point on the new data.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import orjson
import pandas as pd
import pytest

from tests.support.processes import child_env, free_port, running

pytestmark = pytest.mark.integration
MODEL = "monitored"


def make_batch(n, seed, shift=0.0, flip=False):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"a": rng.normal(size=n) + shift, "b": rng.normal(size=n),
                       "c": rng.normal(size=n)})
    df["colour"] = rng.choice(["red", "green", "blue"], size=n,
                              p=(0.1, 0.2, 0.7) if shift else (0.5, 0.3, 0.2))
    signal = df["a"] + 0.8 * df["b"] + rng.normal(scale=0.3, size=n)
    df["target"] = ((-signal if flip else signal) > shift).astype(int)
    return df


def cli(*args, store, cwd):
    env = child_env({"MLFLOW_TRACKING_URI": store})
    return subprocess.run([sys.executable, "-m", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=600)


def post(url, frame: pd.DataFrame):
    body = orjson.dumps({"dataframe_split": {"columns": list(frame.columns),
                                             "data": frame.to_numpy().tolist()}})
    req = urllib.request.Request(f"{url}/invocations", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 200
        return orjson.loads(resp.read())["predictions"]


@pytest.fixture(scope="module")
def world(tmp_path_factory, template_sqlite_db):
    """v1 trained by the workflow (team profile) and made champion by a release manager."""
    import shutil

    root = tmp_path_factory.mktemp("monitoring")
    shutil.copy(template_sqlite_db, root / "mlflow.db")
    store = f"sqlite:///{root / 'mlflow.db'}"
    make_batch(1500, 0).to_csv(root / "train.csv", index=False)
    out = cli("projects", "main", "--profile", "team", "--source", str(root / "train.csv"),
              "--estimators", "linear", "--model-name", MODEL, store=store, cwd=root)
    assert out.returncode == 0, out.stderr[-2000:]
    client = mlflow.MlflowClient(store, store)
    client.set_registered_model_alias(MODEL, "champion", "1")
    return root, store, client


def serve_and_capture(world, name: str, frame: pd.DataFrame) -> Path:
    root, store, _ = world
    capture = root / name
    port = free_port()
    cmd = [sys.executable, "-m", "serving", "serve", f"{MODEL}@champion", "--port", str(port),
           "--workers", "1", "--capture", str(capture)]
    with running(cmd, f"http://127.0.0.1:{port}/ping", "serving-capture",
                 env={"MLFLOW_TRACKING_URI": store}, cwd=root):
        url = f"http://127.0.0.1:{port}"
        features = frame.drop(columns=["target"])
        sent = 0
        for start in range(0, len(features), len(features) // 20):
            post(url, features.iloc[start:start + len(features) // 20])
            sent += 1
        # the writer thread writes after the response: wait until every request is on disk
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            lines = sum(len(f.read_bytes().splitlines()) for f in capture.rglob("*.jsonl"))
            if lines >= sent:
                break
            time.sleep(0.05)
    return capture


def test_unshifted_traffic_crosses_no_threshold(world):
    root, store, client = world
    capture = serve_and_capture(world, "capture-same", make_batch(400, 1))
    lines = [x for f in capture.rglob("*.jsonl") for x in f.read_text().splitlines()]
    assert len(lines) == 20  # every request captured, one JSON line each
    assert orjson.loads(lines[0])["version"] == "1"
    out = cli("serving", "monitor", f"{MODEL}@champion", "--captured", str(capture),
              store=store, cwd=root)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "no threshold crossed" in out.stdout
    runs = client.search_runs([client.get_experiment_by_name(
        "mlops-registry-monitoring").experiment_id])
    assert runs[0].data.tags["mlops.monitor.verdict"] == "ok"
    assert runs[0].data.metrics["drifted_features"] == 0
    assert "monitoring/report.html" in [a.path for a in client.list_artifacts(
        runs[0].info.run_id, "monitoring")]


def test_shifted_traffic_is_found_on_the_right_features(world):
    root, store, client = world
    capture = serve_and_capture(world, "capture-shifted", make_batch(400, 2, shift=1.5))
    out = cli("serving", "monitor", f"{MODEL}@champion", "--captured", str(capture),
              store=store, cwd=root)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "threshold crossed" in out.stdout
    gate = next(x for x in out.stdout.splitlines() if "drifted features" in x and "FAIL" in x)
    assert gate.split("│")[-2].strip() == "a, colour"  # the gate's detail names them
    run = client.search_runs([client.get_experiment_by_name(
        "mlops-registry-monitoring").experiment_id], order_by=["attributes.start_time DESC"])[0]
    assert run.data.tags["mlops.monitor.verdict"] == "threshold crossed"
    psi = {k.removeprefix("psi."): v for k, v in run.data.metrics.items() if k.startswith("psi.")}
    assert psi["a"] >= 0.2 and psi["colour"] >= 0.2
    assert psi["b"] < 0.2 and psi["c"] < 0.2


def test_degraded_labels_trip_the_metric_gate_and_retrain_leaves_champion_alone(world):
    root, store, client = world
    live = make_batch(400, 3, flip=True)  # same inputs, the relation to the target reversed
    capture = serve_and_capture(world, "capture-labelled", live)
    live.to_csv(root / "labels.csv", index=False)
    out = cli("serving", "monitor", f"{MODEL}@champion", "--captured", str(capture),
              "--labels", str(root / "labels.csv"), "--profile", "team", "--retrain",
              store=store, cwd=root)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "live roc_auc" in out.stdout and "FAIL" in out.stdout
    retrained = next(x for x in out.stdout.splitlines() if x.startswith("retrained:"))
    assert f"model version {MODEL} v2 (aliases: challenger)" in retrained  # read from MLflow
    versions = {str(v.version): v for v in client.search_model_versions(f"name = '{MODEL}'")}
    assert set(versions) == {"1", "2"}
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == "1"
    assert str(client.get_model_version_by_alias(MODEL, "challenger").version) == "2"


def test_bad_input_is_one_line(world):
    root, store, _ = world
    out = cli("serving", "monitor", f"{MODEL}@nope", "--captured", str(root), store=store,
              cwd=root)
    # an unknown alias is a refusal (1), as on every command line; unjudgeable input is 2
    assert out.returncode == 1 and out.stderr.startswith(f"error: model '{MODEL}' has no alias")
    assert len(out.stderr.strip().splitlines()) == 1
    out = cli("serving", "monitor", f"{MODEL}@champion", "--captured", str(root / "missing"),
              store=store, cwd=root)
    assert out.returncode == 2 and "no such file or folder" in out.stderr
    # `python -m monitoring` is the same command: same arguments, same answer
    direct = cli("monitoring", f"{MODEL}@champion", "--captured", str(root / "missing"),
                 store=store, cwd=root)
    assert (direct.returncode, direct.stdout, direct.stderr) == (
        out.returncode, out.stdout, out.stderr)


def test_capture_under_concurrent_load_loses_no_request(world):
    from concurrent.futures import ThreadPoolExecutor

    root, store, _ = world
    capture = root / "capture-load"
    port = free_port()
    cmd = [sys.executable, "-m", "serving", "serve", f"{MODEL}@champion", "--port", str(port),
           "--workers", "2", "--capture", str(capture)]
    rows = make_batch(8, 5).drop(columns=["target"])
    with running(cmd, f"http://127.0.0.1:{port}/ping", "serving-capture-load",
                 env={"MLFLOW_TRACKING_URI": store}, cwd=root):
        url = f"http://127.0.0.1:{port}"
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: post(url, rows), range(400)))
    # the servers stopped (SIGTERM): each worker flushed and closed its capture file
    assert len(answers) == 400
    files = list(capture.rglob("*.jsonl"))
    lines = [orjson.loads(x) for f in files for x in f.read_text().splitlines()]
    assert len(lines) == 400
    assert len({f.name.split("-")[1] for f in files}) >= 1  # one file per worker process
    assert all(len(x["response"]["predictions"]) == 8 for x in lines)
