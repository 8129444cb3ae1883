"""The lineage diff holds code only, and never a secret: the real workflow in a git checkout.

A temporary checkout of the project (``projects``, ``core``, ``conf``) is committed, then
dirtied as a data scientist's checkout gets dirty: a ``secrets.yaml`` and a ``notes.json`` lying
around untracked, a tracked script that now holds an AWS key, a new module a step imports, a
new feature file and the settings file naming it. ``python -m projects`` runs there against the
test's tracking store; the test reads what a user of that server can read.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from tests.support.git import git
from tests.support.processes import REPO, child_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# AWS's own documentation example key pair: shaped like a credential, valid nowhere
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
NOTE = "ask Ana for the staging bucket"


def workflow(checkout: Path, *args):
    """``python -m projects ARGS`` run from the checkout, on the checkout's code."""
    return subprocess.run([sys.executable, "-m", "projects", *args], cwd=checkout,
                          env=child_env({"PYTHONPATH": str(checkout)}), capture_output=True,
                          text=True, timeout=600)


def workflow_run(output: str) -> str:
    return next(x for x in output.splitlines() if x.startswith("workflow run")).split()[2]


def artifacts(run_id: str, into: Path) -> dict[str, bytes]:
    """Every artifact of the run, as a user of the server downloads them."""
    root = Path(mlflow.artifacts.download_artifacts(run_id=run_id, dst_path=str(into)))
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def checkout(tmp_path) -> Path:
    root = tmp_path / "checkout"
    for part in ("projects", "core", "conf"):
        shutil.copytree(REPO / part, root / part, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "tools").mkdir()
    (root / "tools" / "upload.py").write_text("BUCKET = 'models'\n")
    git("init", "-q", cwd=root)
    git("add", ".", cwd=root)
    git("-c", "user.email=ds@example.com", "-c", "user.name=ds", "commit", "-qm", "project",
        cwd=root)
    # lying around, never code: neither may reach the tracking server
    (root / "secrets.yaml").write_text(f"aws:\n  access_key_id: {AWS_KEY}\n"
                                       f"  secret_access_key: {AWS_SECRET}\n")
    (root / "notes.json").write_text(json.dumps({"todo": NOTE}) + "\n")
    # a tracked file that now holds a key
    (root / "tools" / "upload.py").write_text(
        f"BUCKET = 'models'\nAWS_ACCESS_KEY_ID = '{AWS_KEY}'\n")
    return root


def test_untracked_files_and_secrets_stay_out_code_goes_in(checkout, tmp_path):
    client = mlflow.MlflowClient()

    # 1. only the key changed: nothing is uploaded, one warning says why, the run is dirty
    first = workflow(checkout, "ingest", "--experiment", "lineage-diff")
    assert first.returncode == 0, first.stderr[-3000:]
    warnings = [x for x in first.stderr.splitlines() if " WARNING " in x]
    assert len(warnings) == 1, first.stderr
    assert warnings[0].split(" WARNING ", 1)[1].startswith(
        "lineage/code.diff leaves out tools/upload.py: it holds a secret (AWS Access Key")
    run_id = workflow_run(first.stdout)
    assert client.get_run(run_id).data.tags["mlops.git_dirty"] == "true"
    seen = artifacts(run_id, tmp_path / "first")
    assert "lineage/code.diff" not in seen
    record = json.loads(seen["lineage/record.json"])
    assert (record["dirty"], record["diff"]) == (True, None)
    assert "AWS Access Key" in record["diff_withheld"]["tools/upload.py"]
    for name, content in seen.items():
        assert AWS_KEY.encode() not in content and AWS_SECRET.encode() not in content, name
        assert NOTE.encode() not in content, name

    # 2. new code: a module a step imports, a feature file and the settings file naming it
    (checkout / "projects" / "lineage_note.py").write_text("NOTE = 'kept'\n")
    ingest = checkout / "projects" / "ingest.py"
    ingest.write_text(ingest.read_text() + "\n\ndef _note():\n"
                      "    from projects import lineage_note\n\n    return lineage_note.NOTE\n")
    (checkout / "steps").mkdir()
    (checkout / "steps" / "my_features.py").write_text(
        "def same(df):\n    return df\n")
    (checkout / "my-settings.yaml").write_text("features:\n  - steps/my_features.py:same\n")
    second = workflow(checkout, "main", "--settings", "my-settings.yaml", "--estimators",
                      "linear", "--experiment", "lineage-diff", "--model-name", "lineage-diff")
    assert second.returncode == 0, second.stderr[-3000:]
    assert len([x for x in second.stderr.splitlines() if " WARNING " in x]) == 1
    run_id = workflow_run(second.stdout)
    seen = artifacts(run_id, tmp_path / "second")
    diff = seen["lineage/code.diff"]
    files = {line.split(" b/", 1)[1] for line in diff.decode().splitlines()
             if line.startswith("diff --git ")}
    assert files == {"projects/ingest.py", "projects/lineage_note.py",
                     "steps/my_features.py", "my-settings.yaml"}
    for name, content in seen.items():
        assert AWS_KEY.encode() not in content and AWS_SECRET.encode() not in content, name
        assert NOTE.encode() not in content, name

    # the diff rebuilds the code that ran, on the commit (as `registry reproduce` applies it)
    tree = tmp_path / "tree"
    git("worktree", "add", "-q", "--detach", str(tree), record["commit"], cwd=checkout)
    (tmp_path / "code.diff").write_bytes(diff)
    git("apply", "--binary", str(tmp_path / "code.diff"), cwd=tree)
    assert (tree / "projects" / "lineage_note.py").read_text() == "NOTE = 'kept'\n"
    assert (tree / "steps" / "my_features.py").is_file()
    assert (tree / "tools" / "upload.py").read_text() == "BUCKET = 'models'\n"
    assert not (tree / "secrets.yaml").exists() and not (tree / "notes.json").exists()

    # and the release manager's view says what was left out
    lineage = subprocess.run(
        [sys.executable, "-m", "registry", "lineage", "lineage-diff/1", "--output", "json"],
        cwd=tmp_path, env=child_env(), capture_output=True, text=True, timeout=300)
    assert lineage.returncode == 0, lineage.stderr
    code = json.loads(lineage.stdout)["code"]
    assert code["dirty"] is True and code["diff"].endswith("lineage/code.diff")
    assert list(code["diff_withheld"]) == ["tools/upload.py"]
