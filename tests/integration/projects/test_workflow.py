"""The workflow end to end, as a data scientist runs it: real processes on a temporary store."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from tests.support.processes import REPO, child_env

pytestmark = pytest.mark.integration
STEPS = ["ingest", "validate", "prepare", "train", "evaluate", "register"]


def run_cli(*args, cwd=None, project=REPO, timeout=300):
    cmd = [sys.executable, "-m", "projects", *args]
    env = child_env({"PYTHONPATH": str(project)})
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def registry_history(name, cwd, env=None):
    """``python -m registry history NAME --output json`` as a script runs it."""
    return subprocess.run([sys.executable, "-m", "registry", "history", name, "--output", "json"],
                          cwd=cwd, env=child_env(env), capture_output=True, text=True,
                          timeout=120)


def history_rows(document: str) -> list[list[str]]:
    """The history's moves as the table's cells (when, alias, kind, version, ...)."""
    return [[a["at"], a["alias"], a["kind"], a["version"] or "-", a["previous"] or "-", a["by"],
             a["outcome"], "yes" if a["forced"] else "no", a["reason"]]
            for a in json.loads(document)["attempts"]]


def step_runs(client, parent_id):
    runs = client.search_runs(
        [client.get_run(parent_id).info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_id}'",
    )
    return {r.data.tags["mlops.step"]: r for r in runs}


def parent_of(output: str) -> str:
    line = next(x for x in output.splitlines() if x.startswith("workflow run"))
    return line.split()[2]


def test_mlflow_run_end_to_end_then_cached_rerun(tmp_path, capsys):
    client = mlflow.MlflowClient()
    exp = client.create_experiment("e2e", artifact_location=str(tmp_path / "artifacts"))
    cmd = [sys.executable, "-m", "mlflow", "run", str(REPO), "--env-manager", "local",
           "--experiment-id", exp]
    first = subprocess.run(cmd, cwd=tmp_path, env=child_env(), capture_output=True, text=True,
                           timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "model version  mlops-registry-model v1 (aliases: challenger, champion)" in first.stdout
    # automatic auto-champion: the embedded store with the local profile crowns
    assert ("champion       crowned: no champion yet (auto-champion: embedded store with the "
            "local profile)") in first.stdout
    assert "make ui" in first.stdout
    # both moves went through the alias move: the history shows them, kind auto
    history = registry_history("mlops-registry-model", cwd=tmp_path)
    assert history.returncode == 0, history.stderr
    rows = history_rows(history.stdout)
    assert [(r[1], r[2], r[3], r[6]) for r in rows] == [
        ("challenger", "auto", "1", "won"), ("champion", "auto", "1", "won")]
    assert all(r[8].startswith(f"workflow run {parent_of(first.stdout)}: ") for r in rows)

    parent = client.get_run(parent_of(first.stdout))
    assert parent.info.status == "FINISHED"
    # what a data scientist compares in the UI: params and metrics on the workflow run
    assert parent.data.params["best_estimator"] in {"linear", "random_forest", "gradient_boosting"}
    assert parent.data.metrics["test_roc_auc"] > 0.9
    assert {"test_accuracy", "test_f1", "test_log_loss", "best_val_roc_auc"} <= set(parent.data.metrics)
    # the chart view puts workflow runs and candidates on one axis: val_<metric> on both
    assert parent.data.metrics["val_roc_auc"] == parent.data.metrics["best_val_roc_auc"]
    # named for what it is, though `mlflow run` started it under a random name
    best = parent.data.params["best_estimator"]
    assert re.fullmatch(rf"breast_cancer · {best} · roc_auc 0\.\d{{3}}", parent.info.run_name)
    # an experiment the workflow reuses opens in the model-training layout
    assert client.get_experiment(exp).tags["mlflow.experimentKind"] == "custom_model_development"
    # Dataset and Model columns: the splits and the logged model belong to the workflow run
    assert sorted(d.dataset.name for d in parent.inputs.dataset_inputs) == ["test", "train"]
    model_id = parent.outputs.model_outputs[0].model_id
    assert client.get_logged_model(model_id).source_run_id == parent.info.run_id

    steps = step_runs(client, parent.info.run_id)
    assert set(steps) == set(STEPS)
    assert all(r.info.status == "FINISHED" for r in steps.values())
    # datasets: raw on ingest, the three splits on prepare
    assert [d.dataset.name for d in steps["ingest"].inputs.dataset_inputs] == ["raw"]
    contexts = {
        next(t.value for t in d.tags if t.key == "mlflow.data.context")
        for d in steps["prepare"].inputs.dataset_inputs
    }
    assert contexts == {"training", "validation", "testing"}
    # the profile and the plots are artifacts the UI shows
    profile = client.list_artifacts(steps["validate"].info.run_id, "profile")
    assert {Path(a.path).name for a in profile} >= {"profile.html", "profile.json"}
    plots = {Path(a.path).name for a in client.list_artifacts(steps["evaluate"].info.run_id, "plots")}
    assert {"confusion_matrix.png", "roc_curve.png", "precision_recall.png",
            "feature_importance.png"} <= plots
    # each candidate is a nested child run of train with params and validation metrics
    candidates = client.search_runs(
        [exp], filter_string=f"tags.mlflow.parentRunId = '{steps['train'].info.run_id}'"
    )
    assert len(candidates) == 6
    assert all("val_roc_auc" in c.data.metrics and "estimator" in c.data.params for c in candidates)

    version = client.get_model_version("mlops-registry-model", "1")
    assert sorted(version.aliases) == ["challenger", "champion"]
    for tag in ("mlops.data_digest", "mlops.git_commit", "mlops.settings_hash",
                "mlops.metric.test_roc_auc", "mlops.test_data"):
        assert version.tags[tag], tag
    # the version page explains itself: metrics, data, validation, links to the runs
    assert "No champion to compare with" in version.description
    assert f"- digest: `{version.tags['mlops.data_digest']}`" in version.description
    assert "- rows: `569`" in version.description
    assert (f"[workflow run](#/experiments/{exp}/runs/{parent.info.run_id}"
            "?workflowType=machine_learning)") in version.description
    # the model card: logged with the version, shown in its description, read by the registry
    assert "# Model card: mlops-registry-model v1" in version.description
    assert "**Status:** Draft" in version.description
    from registry.cli import main as registry_main

    capsys.readouterr()
    assert registry_main(["card", "mlops-registry-model/1", "--output", "json"]) == 0
    card = json.loads(capsys.readouterr().out)
    assert (card["status"], card["data"]["rows"], card["data"]["digest"]) == (
        "Draft", 569, version.tags["mlops.data_digest"])
    assert card["data"]["schema"]["mean radius"] == "double"
    assert card["metrics"]["test"]["roc_auc"] == pytest.approx(parent.data.metrics["test_roc_auc"])
    assert set(card["metrics"]["per_class"]) == {"0", "1"}
    assert sum(c["support"] for c in card["metrics"]["per_class"].values()) == len(
        pd.read_parquet(mlflow.artifacts.download_artifacts(version.tags["mlops.test_data"],
                                                            dst_path=str(tmp_path / "dl"))))
    assert card["lineage"]["workflow_run"] == parent.info.run_id
    assert card["metrics"]["champion"] is None and card["gates"] == card["approvals"] == []
    # quiet by default: MLflow's per-save pickle warning and registration prints are gone
    assert "cloudpickle format requires exercising caution" not in first.stderr
    assert "Successfully registered model" not in first.stderr
    model = mlflow.pyfunc.load_model("models:/mlops-registry-model@champion")
    assert model.metadata.signature is not None
    test = pd.read_parquet(mlflow.artifacts.download_artifacts(version.tags["mlops.test_data"]))
    assert set(model.predict(test.drop(columns=["target"]).head(3))) <= {0, 1}

    # nothing changed: every step reused, no new version (its speed: benchmarks/bench_workflow.py)
    second = subprocess.run(cmd, cwd=tmp_path, env=child_env(), capture_output=True, text=True,
                            timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "steps          " + ", ".join(f"{s} reused" for s in STEPS) in second.stdout
    assert second.stderr.count("reused: code, settings and input unchanged") == 6
    assert "mlops-registry-model v1" in second.stdout
    assert len(client.search_model_versions("name = 'mlops-registry-model'")) == 1
    # the re-run's workflow run shows what the first one showed: its name, params, metrics,
    # Dataset and Model columns, and what reproducing it needs
    rerun = client.get_run(parent_of(second.stdout))
    assert rerun.info.run_name == parent.info.run_name
    assert rerun.data.params == parent.data.params
    assert rerun.data.metrics == parent.data.metrics
    assert (sorted(d.dataset.digest for d in rerun.inputs.dataset_inputs)
            == sorted(d.dataset.digest for d in parent.inputs.dataset_inputs))
    assert [m.model_id for m in rerun.outputs.model_outputs] == [model_id]
    for tag in ("mlops.git_commit", "mlops.git_dirty", "mlops.profile", "mlops.until"):
        assert rerun.data.tags[tag] == parent.data.tags[tag], tag
    assert ({Path(a.path).name for a in client.list_artifacts(rerun.info.run_id, "lineage")}
            >= {"record.json", "settings.json"})

    # one train parameter changed, one step run: upstream reused, train recomputed
    cmd_train = [*cmd, "-e", "train", "-P", "metric=accuracy"]
    third = subprocess.run(cmd_train, cwd=tmp_path, env=child_env(), capture_output=True,
                           text=True, timeout=300)
    assert third.returncode == 0, third.stderr[-3000:]
    assert "steps          ingest reused, validate reused, prepare reused, train ran" in third.stdout
    steps3 = step_runs(client, parent_of(third.stdout))
    # reused steps are recorded on the workflow run (no empty child run per step)
    assert set(steps3) == {"train"}
    tags3 = client.get_run(parent_of(third.stdout)).data.tags
    for step in ("ingest", "validate", "prepare"):
        assert tags3[f"mlops.{step}_reused"] == "true"
        assert tags3[f"mlops.{step}_run"] == steps[step].info.run_id
    assert tags3["mlops.train_reused"] == "false"
    assert steps3["train"].data.params["selection_metric"] == "accuracy"


def _csv(path: Path, n=300, seed=0, shift=0.0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)) + shift
    df = pd.DataFrame(x, columns=["a", "b", "c"])
    df["colour"] = rng.choice(["red", "green", "blue"], size=n)
    df["target"] = (x[:, 0] + 0.5 * x[:, 1] + rng.normal(scale=0.5, size=n) > shift).astype(int)
    df.to_csv(path, index=False)
    return df


def test_changed_data_file_at_the_same_path_is_detected(tmp_path):
    data = tmp_path / "data.csv"
    _csv(data, seed=1)
    args = ["main", "--source", str(data), "--estimators", "linear", "--experiment", "csv"]
    first = run_cli(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    _csv(data, seed=2)  # same path, same shape, other rows
    second = run_cli(*args, cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "steps          ingest ran, validate ran, prepare ran, train ran" in second.stdout
    third = run_cli(*args, cwd=tmp_path)
    assert "ingest reused, validate reused, prepare reused, train reused" in third.stdout
    # categorical column went through the one-hot part of the pipeline
    client = mlflow.MlflowClient()
    prepare = step_runs(client, parent_of(first.stdout))["prepare"]
    assert prepare.data.tags["mlops.categorical_features"] == "colour"


def test_edited_step_code_invalidates_it_and_everything_after(tmp_path):
    project = tmp_path / "project"
    for part in ("projects", "core", "conf"):
        shutil.copytree(REPO / part, project / part, ignore=shutil.ignore_patterns("__pycache__"))
    args = ["main", "--estimators", "linear", "--experiment", "edit"]
    assert run_cli(*args, cwd=tmp_path, project=project).returncode == 0
    train = project / "projects" / "train.py"
    train.write_text(train.read_text().replace("max_iter=2000", "max_iter=2500"))
    second = run_cli(*args, cwd=tmp_path, project=project)
    assert second.returncode == 0, second.stderr[-3000:]
    assert ("ingest reused, validate reused, prepare reused, train ran, evaluate ran, "
            "register ran") in second.stdout


def test_cache_false_forces_a_full_run(tmp_path):
    args = ["main", "--estimators", "linear", "--experiment", "nocache"]
    assert run_cli(*args, cwd=tmp_path).returncode == 0
    forced = run_cli(*args, "--cache", "false", cwd=tmp_path)
    assert forced.returncode == 0
    assert ", ".join(f"{s} ran" for s in STEPS) in forced.stdout


def test_output_json_is_one_document_on_stdout_and_the_logs_on_stderr(tmp_path):
    args = ["main", "--estimators", "linear", "--experiment", "as-json", "--model-name", "js"]
    first = run_cli(*args, "--output", "json", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    doc = json.loads(first.stdout)  # nothing else on stdout: MLflow's prints included
    assert "train    done in" in first.stderr
    assert [s for s, step in doc["steps"].items() if not step["reused"]] == list(STEPS)
    assert doc["model"]["name"] == "js" and doc["model"]["version"] == "1"
    assert "challenger" in doc["model"]["aliases"] and doc["model"]["crowned"] is not None
    assert doc["metrics"]["test_roc_auc"] > 0.5 and doc["task"] == "classification"
    run = mlflow.MlflowClient().get_run(doc["run_id"])
    assert run.data.tags["mlops.train_run"] == doc["steps"]["train"]["run_id"]
    assert doc["model_uri"] == mlflow.MlflowClient().get_run(
        doc["steps"]["train"]["run_id"]).data.tags["mlops.model_uri"]
    # a script asks for one step; a failure stays one line on stderr, nothing on stdout
    again = json.loads(run_cli("train", *args[1:], "--output", "json", cwd=tmp_path).stdout)
    assert again["until"] == "train" and again["model"] is None
    assert all(step["reused"] for step in again["steps"].values())
    bad = run_cli(*args, "--output", "json", "--source", str(tmp_path / "gone.csv"),
                  cwd=tmp_path)
    assert bad.returncode != 0 and bad.stdout == ""
    assert bad.stderr.strip().splitlines()[-1].startswith("error: ")


BAD_DATA = {
    "missing-target": (lambda df: df.drop(columns=["target"]), [],
                       "column 'target': rule 'required column' failed"),
    "empty-table": (lambda df: df.iloc[0:0], [], "table: rule 'non-empty' failed"),
    "all-null-column": (lambda df: df.assign(b=np.nan), [], "column 'b': rule 'not all null' failed"),
    "wrong-type": (lambda df: df.assign(a="x" + df["a"].astype(str)), ["data.columns={a: float}"],
                   "column 'a': rule 'type float' failed: "),  # + how many cells, which rows
    "one-class-target": (lambda df: df.assign(target=1), [],
                         "column 'target': rule 'at least two classes' failed"),
}


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_data_stops_the_workflow_with_a_failed_run(tmp_path, case):
    mutate, sets, message = BAD_DATA[case]
    data = tmp_path / "bad.csv"
    mutate(_csv(tmp_path / "good.csv")).to_csv(data, index=False)
    args = ["main", "--source", str(data), "--experiment", "bad"]
    for item in sets:
        args += ["--set", item]
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {message}")
    assert "Traceback" not in result.stderr
    client = mlflow.MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("bad").experiment_id])
    statuses = {r.data.tags.get("mlops.step", "workflow"): r.info.status for r in runs}
    assert statuses == {"workflow": "FAILED", "ingest": "FINISHED", "validate": "FAILED"}
    assert not client.search_registered_models()


def test_a_failed_workflow_leaves_no_scratch_folder(tmp_path):
    # in-process, as a notebook or a scheduler running many workflows would: the folder must
    # go with the failure, not at interpreter exit
    from core.connection import connect
    from core.settings import load_settings
    from projects.errors import WorkflowError
    from projects.workflow import Workflow

    data = tmp_path / "bad.csv"
    _csv(tmp_path / "good.csv").assign(target=1).to_csv(data, index=False)
    workflow = Workflow(load_settings(overrides=[f"data.source={data}", "experiment=bad"]),
                        connect())
    scratch = Path(workflow._tmp.name)
    assert scratch.is_dir()
    with pytest.raises(WorkflowError, match="at least two classes"):
        workflow.run()
    assert not scratch.exists()


def test_bad_settings_are_one_line_and_start_no_run(tmp_path):
    result = run_cli("main", "--set", "train.metrc=f1", "--experiment", "x", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: setting train.metrc: unknown key"
    assert mlflow.MlflowClient().get_experiment_by_name("x") is None


def test_sigterm_ends_the_runs_killed(tmp_path):
    data = tmp_path / "big.csv"
    _csv(data, n=40_000)
    cmd = [sys.executable, "-m", "projects", "main", "--source", str(data), "--experiment", "kill",
           "--candidates", "[{estimator: random_forest, grid: {n_estimators: [400]}}]"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=child_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    client = mlflow.MlflowClient()
    deadline = time.monotonic() + 120
    train = []
    while time.monotonic() < deadline and not train:
        exp = client.get_experiment_by_name("kill")
        if exp:
            train = client.search_runs([exp.experiment_id],
                                       filter_string="tags.`mlops.step` = 'train' and "
                                                     "attributes.status = 'RUNNING'")
        time.sleep(0.2)
    assert train, "the train step never started"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "KILLED" in err
    runs = client.search_runs([client.get_experiment_by_name("kill").experiment_id])
    statuses = {r.data.tags.get("mlops.step", "workflow"): r.info.status for r in runs}
    assert statuses["workflow"] == "KILLED" and statuses["train"] == "KILLED"
    assert "RUNNING" not in statuses.values()
