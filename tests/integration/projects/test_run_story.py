"""A new data file is a new model, and every workflow run tells its story in MLflow.

palmerpenguins' raw table (nobody here wrote it): "Clutch Completion" is a binary text target
(308 Yes, 36 No) with a space in its name. The workflow runs as a data scientist runs it
(``mlflow run .``, ``python -m projects``) on a temporary store; what is asserted is what the
MLflow UI shows: run names, params, tags, the note, the registered models.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from tests.integration.projects.test_workflow import parent_of, run_cli, step_runs
from tests.support.processes import REPO, child_env

pytestmark = pytest.mark.integration
TARGET = "Clutch Completion"
COLUMNS = ["Species", "Island", "Culmen Length (mm)", "Culmen Depth (mm)",
           "Flipper Length (mm)", "Body Mass (g)", "Sex", TARGET]


def _penguins(folder: Path, name: str, drop=()) -> Path:
    import palmerpenguins

    raw = pd.read_csv(Path(palmerpenguins.__file__).parent / "data" / "penguins-raw.csv")
    path = folder / name
    raw[COLUMNS].drop(columns=list(drop)).to_csv(path, index=False)
    return path


def test_a_new_file_is_its_own_model_and_a_mismatched_one_is_refused(tmp_path):
    data = _penguins(tmp_path, "penguins.csv")
    # 1. mlflow run with only source and target (and one estimator, for time)
    cmd = [sys.executable, "-m", "mlflow", "run", str(REPO), "--env-manager", "local",
           "--experiment-name", "story", "-P", f"source={data}", "-P", f"target={TARGET}",
           "-P", "estimators=linear"]
    first = subprocess.run(cmd, cwd=tmp_path, env=child_env(), capture_output=True, text=True,
                           timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "model version  penguins v1 (aliases: challenger, champion)" in first.stdout
    assert "model name     penguins: named after the data (-P model_name=NAME" in first.stdout
    assert ("positive class No (the minority class of the training target: "
            in first.stdout)
    assert "serve it       make serve MODEL=penguins@champion" in first.stdout
    client = mlflow.MlflowClient()
    assert [m.name for m in client.search_registered_models()] == ["penguins"]
    version = client.get_model_version("penguins", "1")
    assert version.tags["mlops.positive_class"] == "No"
    run = client.get_run(parent_of(first.stdout))
    params = run.data.params
    assert "" not in params.values() and "''" not in params.values(), params
    # the settings used, under the -P names (the target as typed is shell-quoted by mlflow)
    assert {k: params[k] for k in ("model_name", "model_name_from", "task", "metric",
                                   "positive_class", "impute", "outliers", "estimators",
                                   "auto_champion", "seed", "test_size")} == {
        "model_name": "penguins", "model_name_from": "data source",
        "task": "classification", "metric": "roc_auc", "positive_class": "No",
        "impute": "median", "outliers": "clip", "estimators": "linear",
        "auto_champion": "auto", "seed": "42", "test_size": "0.2"}
    assert params.get("effective_target", params["target"]) == TARGET
    train = step_runs(client, run.info.run_id)["train"]
    assert train.data.params["positive_class"] == "No"

    # 2. another table (no Species, no Island: columns the champion requires) into penguins
    lite = _penguins(tmp_path, "penguins-lite.csv", drop=["Species", "Island"])
    second = run_cli("main", "--source", str(lite), "--target", TARGET, "--estimators",
                     "linear", "--model-name", "penguins", "--positive-class", "Yes",
                     "--experiment", "story", cwd=tmp_path)
    assert second.returncode == 1
    line = second.stderr.strip().splitlines()[-1]
    assert line == ("error: model 'penguins': penguins-lite lacks 2 of the 2 columns its "
                    "champion (version 1) requires ('Species', 'Island'): it is another "
                    "model's data; register it under its own name with -P model_name=NAME "
                    "(--model-name NAME)")
    assert "Traceback" not in second.stderr
    # nothing registered, the champion untouched
    assert [str(v.version) for v in client.search_model_versions("name = 'penguins'")] == ["1"]
    assert str(client.get_model_version_by_alias("penguins", "champion").version) == "1"
    # the failed workflow run says so in the runs table, its tags and its note
    exp = client.get_experiment_by_name("story").experiment_id
    failed = client.search_runs([exp], "attributes.status = 'FAILED' and "
                                       "tags.`mlops.error` != ''")
    assert len(failed) == 1
    failed = failed[0]
    tags = failed.data.tags
    assert tags["mlflow.runName"] == "penguins-lite · failed in evaluate"
    assert tags["mlops.error"] == line.removeprefix("error: ")
    assert tags["mlops.failed_step"] == "evaluate"
    note = tags["mlflow.note.content"]
    assert note.startswith("**This workflow run failed in step `evaluate`.**")
    assert line.removeprefix("error: ") in note and "[train](" in note
    params = failed.data.params
    assert "" not in params.values(), params
    assert params["positive_class"] == "Yes" and params["model_name_from"] == (
        "register.model_name")
    # the steps and candidate runs that finished are kept, the failed step is FAILED
    steps = step_runs(client, failed.info.run_id)
    assert {s: r.info.status for s, r in steps.items()} == {
        "ingest": "FINISHED", "validate": "FINISHED", "prepare": "FINISHED",
        "train": "FINISHED", "evaluate": "FAILED"}
    assert tags["mlops.train_run"] == steps["train"].info.run_id
    candidates = client.search_runs(
        [exp], f"tags.mlflow.parentRunId = '{steps['train'].info.run_id}'")
    assert len(candidates) == 3
    assert {c.info.status for c in candidates} == {"FINISHED"}
    assert steps["train"].data.tags["mlops.positive_class"] == "Yes"
    assert steps["train"].data.tags["mlops.positive_class_reason"] == (
        "set in data.positive_class")


def test_a_positive_class_that_is_no_class_is_one_line(tmp_path):
    data = _penguins(tmp_path, "penguins.csv")
    out = run_cli("main", "--source", str(data), "--target", TARGET, "--estimators",
                  "linear", "--set", "data.positive_class=maybe", "--experiment", "bad",
                  cwd=tmp_path)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1] == (
        "error: data.positive_class: positive class 'maybe' is not a class of the target; "
        "the classes are: No, Yes")
    assert not mlflow.MlflowClient().search_registered_models()
