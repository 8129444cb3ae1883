"""The lineage diff holds code only: which untracked files it carries, and what it withholds.

A real git checkout in a temporary folder; the diff is applied with ``git apply`` as
``registry reproduce`` applies it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from projects.record import git_state, withhold_secrets
from tests.support.git import git

# AWS's own documentation example key pair: not a credential, but shaped like one
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


@pytest.fixture
def repo(tmp_path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git("init", "-q", cwd=root)
    (root / "train.py").write_text("SEED = 1\n")
    (root / "deploy.py").write_text("REGION = 'eu-west-1'\n")
    git("add", ".", cwd=root)
    git("-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qm", "init", cwd=root)
    return root


def test_untracked_files_the_workflow_does_not_run_stay_out_and_leave_the_tree_clean(repo):
    (repo / "secrets.yaml").write_text(f"aws_access_key_id: {AWS_KEY}\n")
    (repo / "notes.json").write_text('{"todo": "call Ana"}\n')
    state = git_state(repo, [repo / "steps.py"])  # named but absent: nothing to carry
    assert (state.dirty, state.diff) == (False, b"")


def test_wanted_is_asked_only_when_there_are_untracked_files(repo):
    asked = []
    (repo / "train.py").write_text("SEED = 2\n")
    state = git_state(repo, lambda: asked.append(1) or [])
    assert state.dirty and not asked
    (repo / "helper.py").write_text("X = 1\n")
    state = git_state(repo, lambda: asked.append(1) or [repo / "helper.py"])
    assert asked == [1] and b"b/helper.py" in state.diff


def test_a_file_holding_a_secret_is_withheld_with_one_warning_and_the_rest_applies(
        repo, tmp_path, caplog):
    (repo / "train.py").write_text("SEED = 2\n")
    (repo / "deploy.py").write_text(f"REGION = 'eu-west-1'\nKEY = '{AWS_KEY}'\n")
    odd = repo / "conf dir" / "ünïcode.yaml"  # a path git quotes in the diff's header
    odd.parent.mkdir()
    odd.write_text(f"aws_secret_access_key: {AWS_SECRET}\n")
    state = git_state(repo, [odd])
    assert AWS_KEY.encode() in state.diff
    with caplog.at_level(logging.WARNING, logger="projects.record"):
        diff, withheld = withhold_secrets(state.diff)
    assert set(withheld) == {"deploy.py", "conf dir/ünïcode.yaml"}
    assert "AWS Access Key" in withheld["deploy.py"]
    assert AWS_KEY.encode() not in diff and AWS_SECRET.encode() not in diff
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and all("\n" not in line for line in lines)
    assert any(line.startswith("lineage/code.diff leaves out deploy.py: it holds a secret "
                               "(AWS Access Key") for line in lines)
    copy = tmp_path / "copy"
    git("worktree", "add", "-q", "--detach", str(copy), state.commit, cwd=repo)
    (tmp_path / "code.diff").write_bytes(diff)
    git("apply", "--binary", str(tmp_path / "code.diff"), cwd=copy)
    assert (copy / "train.py").read_text() == "SEED = 2\n"
    assert (copy / "deploy.py").read_text() == "REGION = 'eu-west-1'\n"  # the commit's
    assert not (copy / "conf dir").exists()


def test_a_deleted_credentials_file_is_withheld_too(repo):
    (repo / "creds.yaml").write_text(f"aws_access_key_id: {AWS_KEY}\n")
    git("add", "creds.yaml", cwd=repo)
    git("-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qm", "oops", cwd=repo)
    (repo / "creds.yaml").unlink()  # the diff would hold it as removed lines
    diff, withheld = withhold_secrets(git_state(repo).diff)
    assert list(withheld) == ["creds.yaml"] and diff == b""


def test_a_false_positive_marked_with_the_pragma_passes(repo):
    (repo / "train.py").write_text(f"SEED = 2\nKEY = '{AWS_KEY}'  # pragma: allowlist secret\n")
    state = git_state(repo)
    assert withhold_secrets(state.diff) == (state.diff, {})
