"""The image's entrypoint settings: the port each platform sets, the model folder, the name."""

from __future__ import annotations

import pytest

from core.errors import UsageError
from serving.cli import main
from serving.online import container


def test_port_is_cloud_runs_and_kserves_port_else_sagemakers_8080(monkeypatch):
    monkeypatch.delenv("PORT", raising=False)
    assert container.port() == 8080
    monkeypatch.setenv("PORT", "9000")
    assert container.port() == 9000
    for bad in ("http", "0", "70000"):
        monkeypatch.setenv("PORT", bad)
        with pytest.raises(UsageError, match=r"\$PORT is"):
            container.port()


def test_a_model_folder_is_served_under_the_images_name(tmp_path, monkeypatch):
    assert container.local_model(str(tmp_path)) is None  # no MLmodel: not a model folder
    (tmp_path / "MLmodel").write_text("flavors: {}\n")
    monkeypatch.setenv("MLOPS_MODEL_NAME", "churn")
    monkeypatch.setenv("MLOPS_MODEL_VERSION", "4")
    info = container.local_model(str(tmp_path))
    assert (info.name, info.version, info.uri) == ("churn", "4", str(tmp_path.resolve()))


def test_the_entrypoint_refuses_a_folder_without_a_model(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLOPS_MODEL_DIR", str(tmp_path))
    assert main(["container", "serve"]) == 1
    assert f"{tmp_path} holds no MLflow model" in capsys.readouterr().err
    monkeypatch.setenv("MLOPS_WORKERS", "many")
    (tmp_path / "MLmodel").write_text("flavors: {}\n")
    assert main(["container"]) == 1
    assert "$MLOPS_WORKERS is 'many'" in capsys.readouterr().err
