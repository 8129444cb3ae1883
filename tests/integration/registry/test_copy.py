"""``copy`` between two real tracking servers: a dev server on SQLite to a prod server on SQLite,
then on PostgreSQL."""

from __future__ import annotations

import mlflow
import pytest

from registry.cli import main
from tests.integration.registry.conftest import log_candidate, register, unique, write_policy

pytestmark = pytest.mark.integration


@pytest.fixture
def prod_server(registry_server):
    return registry_server


def test_copy_dev_to_prod(dev_server, dev_logged, prod_server, tmp_path, monkeypatch, capsys):
    dev, prod = dev_server, prod_server
    name = unique("copied")
    logged = dev_logged
    version = register(dev, name, logged, tags={"team": "fraud"})
    dev_client = mlflow.MlflowClient(dev, dev)
    dev_client.set_registered_model_tag(name, "owner", "risk-team")
    monkeypatch.setenv("MLOPS_POLICY_DIR", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "250")

    def cli(uri, *args):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        # connect() exports MLFLOW_REGISTRY_URI (mlflow.set_registry_uri does): reset it.
        monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
        return main(list(args))

    # promoted on dev: that move is dev's, not prod's
    assert cli(dev, "promote", f"{name}/{version}", "--reason", "dev release", "--force") == 0
    assert any(k.startswith("mlops.promotion.champion.")
               for k in dev_client.get_model_version(name, version).tags)
    capsys.readouterr()
    code = cli(dev, "copy", f"{name}/{version}", "--to-registry", prod)
    out = capsys.readouterr()
    assert code == 0, out.err
    assert f"copied {name}/{version} to {prod} as {name}/1" in out.out

    prod_client = mlflow.MlflowClient(prod, prod)
    copied = prod_client.get_model_version(name, "1")
    tags = copied.tags
    link = f"{dev}/#/models/{name}/versions/{version}"
    assert tags["mlops.source.link"] == link and link in copied.description
    assert tags["mlops.source.run_id"] == logged["run_id"]
    for key in ("mlops.data_digest", "mlops.git_commit", "mlops.settings_hash", "team"):
        assert tags[key] == dev_client.get_model_version(name, version).tags[key]
    assert prod_client.get_registered_model(name).tags["owner"] == "risk-team"
    # promotion records stay on dev: prod's registry never saw those moves
    assert not [k for k in tags if k.startswith("mlops.promotion")]
    assert not [k for k in prod_client.get_registered_model(name).tags
                if k.startswith("mlops.history.")]
    assert "champion" not in (prod_client.get_registered_model(name).aliases or {})
    # Lineage: the prod run carries the source run's params and metrics.
    run = prod_client.get_run(copied.run_id)
    assert run.data.params["n_features"] == "5"
    assert run.data.metrics["test_roc_auc"] == pytest.approx(logged["metrics"]["test_roc_auc"])
    # The test split came along: the copy validates on prod against prod's data.
    assert tags["mlops.test_data"].startswith(f"runs:/{copied.run_id}/")
    write_policy(tmp_path, name)
    assert cli(prod, "validate", f"{name}/1") == 0
    assert "passed all 5 gates" in capsys.readouterr().out

    # Copying again finds the earlier copy and changes nothing.
    assert cli(dev, "copy", f"{name}/{version}", "--to-registry", prod) == 0
    assert "nothing changed" in capsys.readouterr().out
    assert len(prod_client.search_model_versions(f"name = '{name}'")) == 1

    # Artifacts and signature: the prod copy loads and predicts like the source.
    mlflow.set_registry_uri(prod)
    mlflow.set_tracking_uri(prod)
    info = mlflow.models.get_model_info(f"models:/{name}/1")
    assert [c["name"] for c in info.signature.inputs.to_dict()] == logged["columns"]
    model = mlflow.pyfunc.load_model(f"models:/{name}/1")
    import pandas as pd
    from sklearn.datasets import load_breast_cancer

    X = load_breast_cancer(as_frame=True).data[logged["columns"]].head(20)
    mlflow.set_registry_uri(dev)
    mlflow.set_tracking_uri(dev)
    source = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    assert list(model.predict(X)) == list(source.predict(pd.DataFrame(X)))


def test_copy_unknown_version_is_one_line(dev_server, prod_server, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", dev_server)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    assert main(["copy", "nobody/1", "--to-registry", prod_server]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: unknown model 'nobody'"]


def test_copy_between_two_databases_without_a_server(tmp_path, monkeypatch, capsys):
    """Store to store (two SQLite files, no server): the copy registers and scores like the source."""
    monkeypatch.chdir(tmp_path)  # the stores' default artifact root is ./mlruns
    dev, prod = f"sqlite:///{tmp_path / 'dev.db'}", f"sqlite:///{tmp_path / 'prod.db'}"
    name = unique("db-copy")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", dev)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    mlflow.set_tracking_uri(dev)
    logged = log_candidate(dev, n_features=4)
    version = register(dev, name, logged)
    code = main(["copy", f"{name}/{version}", "--to-registry", prod])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert f"copied {name}/{version} to {prod} as {name}/1" in out.out
    assert mlflow.get_tracking_uri() == dev  # the process-wide URI is given back

    copied = mlflow.MlflowClient(prod, prod).get_model_version(name, "1")
    assert copied.tags["mlops.source.run_id"] == logged["run_id"]
    rows = mlflow.artifacts.download_artifacts(
        copied.tags["mlops.test_data"], tracking_uri=prod, dst_path=str(tmp_path / "t"))
    import pandas as pd

    test = pd.read_parquet(rows)[logged["columns"]]
    mlflow.set_tracking_uri(dev)
    expected = mlflow.pyfunc.load_model(f"models:/{name}/{version}").predict(test)
    mlflow.set_tracking_uri(prod)
    try:
        got = mlflow.pyfunc.load_model(f"models:/{name}/1").predict(test)
    finally:
        mlflow.set_tracking_uri(dev)
    assert list(got) == list(expected)
