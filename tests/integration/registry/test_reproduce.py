"""Lineage and reproduction end to end: a version registered by the real workflow, then
``python -m registry lineage`` and ``python -m registry reproduce`` as a release manager runs
them, on the embedded SQLite store and on a PostgreSQL-backed ``python -m tracking server``.

The data is palmerpenguins' CSV (public, shipped inside the package: missing values,
categorical columns), copied to a temporary file so a test can change it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import mlflow
import pytest

from tests.integration.registry.conftest import unique
from tests.integration.tracking.conftest import launched
from tests.support.postgres import fresh_pg_database
from tests.support.processes import REPO

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def penguins_csv(directory: Path) -> Path:
    """palmerpenguins' own CSV, copied so the test may edit it."""
    import palmerpenguins

    src = Path(palmerpenguins.__file__).parent / "data" / "penguins.csv"
    directory.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(src, directory / "penguins.csv"))


def register_with_workflow(csv: Path, name: str) -> str:
    """Run the whole workflow in-process (one small candidate) and return the version."""
    from core.connection import connect
    from core.settings import load_settings
    from projects.workflow import Workflow

    settings = load_settings("local", [
        f"data.source={csv}", "data.target=species", "data.task=classification",
        "train.candidates=[{estimator: linear, grid: {C: [1.0]}}]", "train.n_jobs=1",
        "experiment=lineage-tests", f"register.model_name={name}",
    ])
    result = Workflow(settings, connect(), project_dir=REPO).run()
    assert result.model_version, "the workflow registered no version"
    return result.model_version


@pytest.fixture
def registry_cli(monkeypatch, capsys):
    """``python -m registry ARGS`` in-process; returns (exit code, stdout, stderr)."""
    from registry.cli import main

    monkeypatch.setenv("COLUMNS", "300")

    def run(*args):
        capsys.readouterr()
        code = main(list(args))
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_sqlite_lineage_reproduce_identical_then_different_then_changed_data_refused(
        tmp_path, registry_cli, restore_logging):
    csv = penguins_csv(tmp_path / "data")
    name = unique("lineage")
    version = register_with_workflow(csv, name)

    code, out, err = registry_cli("lineage", f"{name}/{version}", "--output", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["recorded"] is True
    assert len(doc["code"]["commit"]) == 40
    assert doc["code"]["dirty"] is (doc["code"]["diff"] is not None)
    assert doc["data"]["file_sha256"] == sha256(csv)
    assert doc["data"]["location"] == str(csv)
    assert doc["data"]["rows"] == 344
    assert doc["data"]["schema"]["species"] == "string"
    assert doc["settings"]["data"]["target"] == "species"
    # the settings as the run used them: defaults written out (an empty space: not tuned)
    assert doc["settings"]["train"]["candidates"] == [{"estimator": "linear",
                                                       "grid": {"C": [1.0]}, "space": {}}]
    assert doc["settings"]["train"]["tuning"] is None
    import sklearn

    assert doc["environment"]["packages"]["scikit-learn"] == sklearn.__version__
    assert [s["step"] for s in doc["steps"]] == ["ingest", "validate", "prepare", "train",
                                                 "evaluate", "register"]
    workflow_run = doc["workflow_run"]["run_id"]
    assert all(not s["reused"] and s["computed_by"] == workflow_run for s in doc["steps"])
    assert ("challenger", version) in {(a["alias"], a["version"]) for a in doc["alias_history"]}

    code, out, err = registry_cli("lineage", f"{name}@challenger")
    assert code == 0, err
    assert f"Lineage of {name}/{version}" in out and sha256(csv) in out

    code, out, err = registry_cli("reproduce", f"{name}/{version}")
    assert code == 0, err + out
    assert "packages   as recorded" in out
    assert "           train    done in " in out  # the re-run's steps show as they finish
    assert f"data       {csv}: sha256 {sha256(csv)[:16]}, as recorded" in out
    assert f"data       digest {doc['data']['digest']} as the re-run read it: as recorded" in out
    assert (f"identical: the re-run's model gives the same labels and probabilities as "
            f"{name}/{version} on its") in out

    # the recorded settings no longer say what trained it: another model, named rows, exit 1
    client = mlflow.MlflowClient()
    settings = json.loads(Path(mlflow.artifacts.download_artifacts(
        run_id=workflow_run, artifact_path="lineage/settings.json",
        dst_path=str(tmp_path / "dl"))).read_text())
    settings["train"]["candidates"] = [{"estimator": "linear", "grid": {"C": [0.001]}}]
    client.log_dict(workflow_run, settings, "lineage/settings.json")
    code, out, err = registry_cli("reproduce", f"{name}/{version}")
    assert code == 1, out
    assert "different: " in out and "First differing rows" in out
    train_settings = next(s["cache"]["settings"] for s in doc["steps"] if s["step"] == "train")
    assert err.startswith(f"error: {name}/{version} is not reproduced: ")
    assert f"first difference: settings of step train: {train_settings} recorded, " in err
    assert len(err.strip().splitlines()) == 1

    recorded = sha256(csv)
    with csv.open("a") as handle:  # one more penguin: the data is no longer the same
        handle.write("Adelie,Torgersen,40.0,18.0,190,3700,male,2009\n")
    code, out, err = registry_cli("reproduce", f"{name}/{version}")
    assert code == 1
    assert err.strip() == (f"error: data changed: {csv} has sha256 {sha256(csv)[:16]} now, "
                           f"{name}/{version} was trained on sha256 {recorded[:16]}")
    assert "re-run" not in out  # refused before anything ran


@pytest.mark.postgres
def test_postgres_server_reproduce_reports_changed_package(
        tmp_path, registry_cli, monkeypatch, pg_template, restore_logging):
    csv = penguins_csv(tmp_path / "data")
    name = unique("lineage-pg")
    with fresh_pg_database(pg_template) as backend, \
            launched(backend, str(tmp_path / "artifacts")) as (url, _proc):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
        mlflow.set_tracking_uri(url)
        mlflow.set_registry_uri(url)
        version = register_with_workflow(csv, name)

        # simulate an environment change: the record says numpy was another version
        client = mlflow.MlflowClient(url, url)
        run_id = client.get_model_version(name, version).run_id
        local = mlflow.artifacts.download_artifacts(run_id=run_id,
                                                    artifact_path="lineage/record.json",
                                                    dst_path=str(tmp_path / "dl"))
        record = json.loads(Path(local).read_text())
        installed = record["packages"]["numpy"]
        record["packages"]["numpy"] = "1.0.0"
        client.log_dict(run_id, record, "lineage/record.json")

        code, out, err = registry_cli("lineage", f"{name}/{version}", "--output", "json")
        assert code == 0, err
        assert json.loads(out)["environment"]["packages"]["numpy"] == "1.0.0"

        code, out, err = registry_cli("reproduce", f"{name}/{version}", "--into", "scratch",
                                      "--output", "json")
        assert code == 0, err + out
        assert f"packages   differ: numpy 1.0.0 recorded, {installed} installed" in err
        result = json.loads(out)  # stdout is the one JSON document
        assert (result["identical"], result["differing_rows"], result["rows"] > 0) == (
            True, 0, True)
        assert result["package_changes"] == [
            {"package": "numpy", "recorded": "1.0.0", "installed": installed}]
        runs = client.search_runs([client.get_experiment_by_name("scratch").experiment_id],
                                  "tags.`mlops.reproduces` != ''")
        assert [(r.data.tags["mlops.reproduces"], r.data.tags["mlops.reproduced"],
                 r.info.status) for r in runs] == [(f"{name}/{version}", "identical", "FINISHED")]
