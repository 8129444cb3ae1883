"""Lineage and reproduction without servers: the record's diff, the checks, the comparison."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from core.lineage import file_sha256
from projects.record import git_state, redact_url, user_files
from registry.lineage import DataLineage, Lineage, StepRun
from registry.reproduce import (
    CannotReproduce,
    absolute_uri,
    check_commit,
    check_data,
    rerun_command,
)
from registry.reproduce_compare import (
    compare_predictions,
    diagnose,
    machine_changes,
    package_changes,
)
from tests.support.git import git


def lineage(**changes) -> Lineage:
    """A version's lineage as the reader builds it (fields a test does not care about empty)."""
    base = Lineage(
        name="m", version="3", aliases=(), tags={}, run_id="r" * 32, run_name="run",
        experiment_id="1", run_status="FINISHED", run_start=1, run_end=2, recorded=True,
        commit="c" * 40, dirty=False, diff=None, diff_sha256=None, python="3.11.7",
        packages={}, machine={}, settings={}, settings_hash=None, profile="local", user_files={},
        data=DataLineage(), steps=(), history=(), copies=(), copied_from={},
    )
    return replace(base, **changes)


def step(name: str, **cache) -> StepRun:
    return StepRun(name, f"{name}-run", False, "w" * 32, "FINISHED", 0, 1000, cache)


@pytest.fixture
def repo(tmp_path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git("init", "-q", cwd=root)
    (root / "train.py").write_text("SEED = 1\n")
    (root / "notes.bin").write_bytes(b"\x00\x01")
    git("add", ".", cwd=root)
    git("-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qm", "init", cwd=root)
    return root


def test_clean_checkout_records_no_diff(repo):
    state = git_state(repo)
    assert state.commit == git("rev-parse", "HEAD", cwd=repo).stdout.strip()
    assert (state.dirty, state.diff) == (False, b"")


def test_diff_rebuilds_the_dirty_tree_and_leaves_the_index_alone(repo, tmp_path):
    (repo / "train.py").write_text("SEED = 2\n")
    (repo / "notes.bin").write_bytes(b"\x00\x02\xff")
    (repo / "steps").mkdir()
    (repo / "steps" / "features.py").write_text("def add(df):\n    return df\n")  # new, untracked
    (repo / "scratch.log").write_text("not code\n")
    state = git_state(repo, [repo / "steps" / "features.py"])  # what the workflow runs
    assert state.dirty
    # the user's staging area is as it was: the new file is still untracked
    assert git("status", "--porcelain", cwd=repo).stdout.splitlines() == [
        " M notes.bin", " M train.py", "?? scratch.log", "?? steps/"]
    copy = tmp_path / "copy"
    git("worktree", "add", "-q", "--detach", str(copy), state.commit, cwd=repo)
    patch = tmp_path / "code.diff"
    patch.write_bytes(state.diff)
    git("apply", "--binary", str(patch), cwd=copy)
    assert (copy / "train.py").read_text() == "SEED = 2\n"
    assert (copy / "notes.bin").read_bytes() == b"\x00\x02\xff"
    assert (copy / "steps" / "features.py").is_file()
    assert not (copy / "scratch.log").exists()


def test_outside_git_the_commit_is_unknown(tmp_path):
    assert git_state(tmp_path).commit in ("unknown",)


def test_settings_keep_no_password_and_name_user_files_by_hash(repo):
    assert redact_url("postgresql://me:s3cret@db:5432/x") == "postgresql://me:***@db:5432/x"
    assert redact_url("bundled:iris") == "bundled:iris"
    (repo / "steps").mkdir()
    (repo / "steps" / "est.py").write_text("def make():\n    pass\n")
    found = user_files({"train": {"candidates": [{"estimator": "steps/est.py:make"}]},
                        "data": {"source": "missing.py"}}, repo, repo)
    assert found == {"steps/est.py": file_sha256(repo / "steps" / "est.py")}


def test_changed_data_file_is_refused_naming_both_digests(tmp_path):
    data = tmp_path / "d.csv"
    data.write_text("a,b\n1,2\n")
    recorded = file_sha256(data)
    lin = lineage(data=DataLineage(kind="file", location=str(data), file_sha256=recorded))
    check_data(lin)  # unchanged: no objection
    data.write_text("a,b\n1,3\n")
    with pytest.raises(CannotReproduce) as exc:
        check_data(lin)
    assert str(exc.value) == (f"data changed: {data} has sha256 {file_sha256(data)[:16]} now, "
                              f"m/3 was trained on sha256 {recorded[:16]}")
    data.unlink()
    with pytest.raises(CannotReproduce, match="is gone"):
        check_data(lin)
    sql = lineage(data=DataLineage(kind="sql", location="postgresql://u:***@db/x"))
    with pytest.raises(CannotReproduce, match="password was not recorded"):
        check_data(sql)


def test_unknown_or_absent_commit_cannot_start(repo):
    with pytest.raises(CannotReproduce, match="commit is unknown"):
        check_commit(repo, "unknown", "m/3")
    with pytest.raises(CannotReproduce, match=r"commit 0123456789ab is not in .* \(fetch it"):
        check_commit(repo, "0123456789ab" * 3 + "0123", "m/3")
    check_commit(repo, git("rev-parse", "HEAD", cwd=repo).stdout.strip(), "m/3")


def test_a_changed_package_version_is_named():
    from importlib.metadata import version

    changes = package_changes({"scikit-learn": "0.0.1", "numpy": np.__version__})
    assert changes == [("scikit-learn", "0.0.1", version("scikit-learn"))]
    assert package_changes({"no-such-package-here": "1.0"}) == [
        ("no-such-package-here", "1.0", "not installed")]


def test_identical_predictions_have_no_differing_rows():
    labels, proba = np.array(["a", "b"]), np.array([[0.9, 0.1], [0.2, 0.8]])
    rows, n, delta = compare_predictions((labels, proba), (labels.copy(), proba.copy()),
                                         [10, 11])
    assert (rows, n, delta) == ([], 0, 0.0)


def test_first_differing_rows_are_named_down_to_the_last_bit():
    labels = np.array(["a", "b", "a"])
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    new_proba = proba.copy()
    new_proba[0, 0] = np.nextafter(0.9, 1)  # one bit: still not identical
    new_labels = np.array(["a", "b", "b"])
    rows, n, delta = compare_predictions((labels, proba), (new_labels, new_proba), [7, 8, 9])
    assert n == 2
    assert [(r["row"], r["registered"], r["reproduced"]) for r in rows] == [
        (7, "a", "a"), (9, "a", "b")]
    assert 0 < rows[0]["proba_delta"] < 1e-15 and delta == 0.0 + rows[0]["proba_delta"]


def test_what_differs_is_named_data_first_then_code_then_packages_then_settings():
    original = lineage(data=DataLineage(digest="aaaa"), steps=(
        step("ingest", code="c1", settings="s1"), step("train", code="c2", settings="s2")))
    rerun = lineage(data=DataLineage(digest="bbbb"), steps=(
        step("ingest", code="c1", settings="s1"), step("train", code="c9", settings="s8")))
    causes = diagnose(original, rerun, [("numpy", "1.0", "2.0")], ["CPUs 8 recorded, 2 here"])
    assert causes == [
        "data digest: aaaa recorded, bbbb re-read",
        "code of step train: c2 recorded, c9 in the re-run",
        "package versions: numpy 1.0 recorded, 2.0 installed",
        "settings of step train: s2 recorded, s8 in the re-run",
        "machine: CPUs 8 recorded, 2 here",
    ]
    assert diagnose(original, replace(rerun, data=original.data, steps=original.steps), []) == []


def test_relative_stores_are_made_absolute_for_the_worktree(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert absolute_uri("sqlite:///mlflow.db") == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert absolute_uri("sqlite:////abs/m.db") == "sqlite:////abs/m.db"
    assert absolute_uri("mlruns") == (tmp_path / "mlruns").as_uri()
    assert absolute_uri("http://mlflow:5000") == "http://mlflow:5000"


def test_lineage_shows_which_steps_were_reused_from_which_run():
    from rich.console import Console

    from registry.render import lineage_json, lineage_tables

    reused = StepRun("ingest", "i" * 32, True, "a1b2c3d4" + "0" * 24, "FINISHED", 0, 500, {})
    copy = {"target": "https://prod:5000", "name": "m", "version": "1", "at": 1796180000000,
            "link": "https://prod:5000/#/models/m/versions/1"}
    lin = lineage(steps=(reused, step("train")), dirty=True, diff="lineage/code.diff",
                  packages={"numpy": "2.0"}, copies=(copy,))
    console = Console(width=300, record=True)
    for t in lineage_tables(lin):
        console.print(t)
    text = console.export_text()
    assert "reused from workflow run a1b2c3d4" in text
    assert "yes: the diff is the run's lineage/code.diff" in text
    assert "https://prod:5000  m/1  2026-" in text
    doc = lineage_json(lin, "runs:/x/lineage/code.diff")
    assert doc["steps"][0] == {"step": "ingest", "run_id": "i" * 32, "reused": True,
                               "computed_by": "a1b2c3d4" + "0" * 24, "status": "FINISHED",
                               "seconds": 0.5, "cache": {}}
    assert doc["code"]["diff"] == "runs:/x/lineage/code.diff"
    assert doc["copies"] == [{**copy, "at": "2026-12-02T02:53:20Z"}]


def test_lineage_names_the_files_left_out_of_the_diff_for_a_secret():
    from rich.console import Console

    from registry.render import lineage_json, lineage_tables

    lin = lineage(dirty=True, diff=None, diff_withheld={"tools/upload.py": ["AWS Access Key"]})
    console = Console(width=300, record=True)
    for t in lineage_tables(lin):
        console.print(t)
    text = console.export_text()
    assert "yes: no diff recorded" in text
    assert "left out of the diff tools/upload.py  holds a secret (AWS Access Key)" in text
    doc = lineage_json(lin)
    assert doc["code"]["dirty"] is True and doc["code"]["diff"] is None
    assert doc["code"]["diff_withheld"] == {"tools/upload.py": ["AWS Access Key"]}


def test_a_machine_with_other_native_libraries_is_named():
    from core.lineage import machine

    here = machine()
    assert machine_changes(here, here) == []
    assert machine_changes({}, here) == []  # nothing recorded: nothing to compare
    other = {**here, "cpus": 64, "libraries": [
        {"internal_api": "openblas", "version": "0.3.21", "architecture": "Zen",
         "num_threads": 64}]}
    changes = machine_changes(other, here)
    assert changes[0] == f"CPUs 64 recorded, {here['cpus']} here"
    assert changes[1].startswith("native libraries openblas 0.3.21, Zen, 64 threads recorded, ")


def test_the_checkout_is_the_one_given_else_the_current_one(repo, tmp_path, monkeypatch):
    from registry.reproduce import find_repo

    assert find_repo(repo / ".") == repo
    monkeypatch.chdir(repo)
    assert find_repo() == repo
    with pytest.raises(CannotReproduce, match="is not a git checkout"):
        find_repo(tmp_path / "nowhere")


def test_reproduction_as_json():
    import json

    from registry.render import reproduction_json
    from registry.reproduce import Reproduction

    result = Reproduction("m/3", identical=False, rows=114, run_id="r" * 32,
                          experiment_id="7", seconds=12.3456, original_seconds=10.0,
                          package_changes=[("numpy", "1.0", "2.0")],
                          causes=["package versions: numpy 1.0 recorded, 2.0 installed"],
                          differing=[{"row": 3, "registered": "a", "reproduced": "b",
                                      "proba_delta": 0.25}], n_differing=1,
                          max_proba_delta=0.25)
    doc = json.loads(json.dumps(reproduction_json(result)))
    assert doc == {
        "name": "m", "version": "3", "identical": False, "rows": 114, "differing_rows": 1,
        "first_differing": [{"row": 3, "registered": "a", "reproduced": "b",
                             "proba_delta": 0.25}],
        "max_proba_delta": 0.25,
        "causes": ["package versions: numpy 1.0 recorded, 2.0 installed"],
        "package_changes": [{"package": "numpy", "recorded": "1.0", "installed": "2.0"}],
        "machine_changes": [], "run_id": "r" * 32, "experiment_id": "7", "seconds": 12.346,
        "original_seconds": 10.0,
    }


def test_the_rerun_asks_the_workflow_for_its_json_document_unless_the_commit_predates_it():
    lin = lineage(data=DataLineage(kind="file", location="/data/x.csv"))
    cmd = rerun_command(lin, "local")
    assert cmd[1:4] == ["-m", "projects", "train"]
    assert cmd[-2:] == ["--output", "json"]
    assert "data.source=/data/x.csv" in cmd
    assert "--output" not in rerun_command(lin, "local", as_json=False)
