"""The trust boundary's environment: what a child that runs a version's code keeps and gets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.sandbox import SandboxError, child_environment, run_module, throwaway_store

PARENT = {
    "PATH": "/usr/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "OPENBLAS_CORETYPE": "Haswell",
    "OMP_NUM_THREADS": "2", "HOME": "/home/rm",
    # what the release manager's process holds and the author's code must not see
    "MLFLOW_TRACKING_URI": "https://mlflow.example.com", "MLFLOW_TRACKING_USERNAME": "rm",
    "MLFLOW_TRACKING_PASSWORD": "s3cret", "MLFLOW_TRACKING_TOKEN": "tok",
    "MLFLOW_REGISTRY_URI": "https://mlflow.example.com", "AWS_ACCESS_KEY_ID": "AKIA",
    "AWS_SECRET_ACCESS_KEY": "x", "AWS_SESSION_TOKEN": "y", "AWS_PROFILE": "prod",
    "MLOPS_WEBHOOK_SECRET": "z", "DATABRICKS_TOKEN": "d", "GITHUB_TOKEN": "g",
    "MY_TEAMS_NEW_API_KEY": "named in a way no list foresaw", "PYTHONPATH": "/elsewhere",
}


def test_the_child_keeps_the_allow_list_and_gets_its_own_home_and_store(tmp_path):
    env = child_environment(tmp_path, {"PYTHONHASHSEED": "0"}, parent=PARENT)
    store = throwaway_store(tmp_path)
    assert env == {
        "PATH": "/usr/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
        "OPENBLAS_CORETYPE": "Haswell", "OMP_NUM_THREADS": "2",  # the model's last bits
        "HOME": str(tmp_path / "home"), "USERPROFILE": str(tmp_path / "home"),
        "MLFLOW_TRACKING_URI": store, "MLFLOW_REGISTRY_URI": store,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_CONFIG_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true", "PYTHONNOUSERSITE": "1",
        "MLFLOW_LOGGING_LEVEL": "ERROR", "PYTHONHASHSEED": "0",
    }
    assert store == f"sqlite:///{tmp_path.resolve() / 'sandbox-mlflow.db'}"
    assert (tmp_path / "home").is_dir() and not any((tmp_path / "home").iterdir())


def test_a_child_that_fails_is_one_line_naming_its_last_words(tmp_path):
    with pytest.raises(SandboxError, match=r"^the model's process failed: .*No module named"):
        run_module("core.no_such_module", {}, tmp_path)
    assert (tmp_path / "request.json").is_file()  # what it was asked stays for the log
    assert not Path(tmp_path / "answer.json").exists()


def test_the_throwaway_store_is_copied_from_the_users_cache(tmp_path, monkeypatch,
                                                             template_sqlite_db):
    import shutil

    import mlflow

    from core.sandbox import prepared_store

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cached = tmp_path / "cache" / "mlops-registry" / (
        f"sandbox-store-mlflow-{mlflow.__version__}.db")
    cached.parent.mkdir(parents=True)
    shutil.copy(template_sqlite_db, cached)  # what the first use migrated and kept (~2 s)

    uri = prepared_store(tmp_path / "child")
    assert uri == throwaway_store(tmp_path / "child")
    client = mlflow.MlflowClient(uri, uri)  # a working store, no migration left to do
    exp = client.create_experiment("x", artifact_location=(tmp_path / "a").as_uri())
    assert client.get_experiment_by_name("x").experiment_id == exp
    assert prepared_store(tmp_path / "child") == uri  # an existing store is kept as it is
    assert client.get_experiment_by_name("x").experiment_id == exp


def test_an_answer_that_cannot_be_read_is_one_line_not_a_traceback(tmp_path, monkeypatch):
    from core import sandbox

    # what a model's code could leave behind: the child shares nothing but files with us
    monkeypatch.setattr(sandbox, "run_module", lambda module, request, where: {"jobs": "x"})
    with pytest.raises(SandboxError, match="^the model's process answered what cannot be read"):
        sandbox.predict_models({"m": tmp_path}, [{"model": "m", "data": tmp_path / "d"}])
    monkeypatch.setattr(sandbox, "run_module", lambda module, request, where: {
        "jobs": [{"error": None, "classes": {"not": "a list"}}]})
    with pytest.raises(SandboxError, match="cannot be read: TypeError: classes is a dict"):
        sandbox.predict_models({"m": tmp_path}, [{"model": "m", "data": tmp_path / "d"}])
