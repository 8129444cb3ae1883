"""Registry test fixtures: shared real servers and versions registered the workflow's way.

Servers and logged models are package-scoped: every registry test module shares them (each test
uses its own model names), so the package pays for each server start once.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path

import pytest

from tests.conftest import _mlflow_server
from tests.support.postgres import fresh_pg_database

FEATURES_STRONG = 10
TARGET = "target"


def start_server(kind: str, template_db: Path, workdir: Path, extra_args=(), env=None,
                 pg_template: str | None = None):
    """Context manager yielding the URL of a real ``mlflow server`` on SQLite or PostgreSQL."""
    import contextlib

    @contextlib.contextmanager
    def _run():
        with contextlib.ExitStack() as stack:
            if kind == "postgres":
                backend = stack.enter_context(fresh_pg_database(pg_template))
            else:
                db = workdir / "server.db"
                shutil.copy(template_db, db)
                backend = f"sqlite:///{db}"
            port, ctx = _mlflow_server(backend, str(workdir / "artifacts"), extra_args, env)
            with ctx:
                yield f"http://127.0.0.1:{port}"

    return _run()


@pytest.fixture(
    scope="package", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def registry_server(request, template_sqlite_db, tmp_path_factory):
    """A real ``mlflow server`` shared by the package: on SQLite, then on PostgreSQL."""
    workdir = tmp_path_factory.mktemp(f"server-{request.param}")
    template = request.getfixturevalue("pg_template") if request.param == "postgres" else None
    with start_server(request.param, template_sqlite_db, workdir, pg_template=template) as url:
        yield url


@pytest.fixture(scope="package")
def logged_models(registry_server):
    """Three logged models on the server: weak (1 column), strong (10), another column."""
    return {
        "weak": log_candidate(registry_server, n_features=1),
        "strong": log_candidate(registry_server, n_features=10),
        "other": log_candidate(registry_server, columns=["worst area"]),
    }


@pytest.fixture(scope="package")
def dev_server(template_sqlite_db, tmp_path_factory):
    """A second real SQLite-backed server (the "dev" side of copies)."""
    with start_server("sqlite", template_sqlite_db, tmp_path_factory.mktemp("dev")) as url:
        yield url


@pytest.fixture(scope="package")
def dev_logged(dev_server):
    """A logged model (5 columns) on the dev server."""
    return log_candidate(dev_server, n_features=5)


def _split():
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    frame = load_breast_cancer(as_frame=True).frame
    return train_test_split(frame, test_size=0.3, random_state=0, stratify=frame[TARGET])


def log_candidate(uri: str, columns: list[str] | None = None, n_features: int = FEATURES_STRONG,
                  C: float = 1.0, experiment: str = "registry-tests") -> dict:
    """Train and log a tiny LogisticRegression pipeline plus its test split, the workflow's way.

    Returns:
        ``{"run_id", "model_uri", "model_id", "columns"}``.
    """
    import mlflow
    import sklearn
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train, test = _split()
    features = [c for c in train.columns if c != TARGET]
    columns = columns or features[:n_features]
    model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=500))
    model.fit(train[columns], train[TARGET])
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        client = mlflow.MlflowClient(uri)
        exp = client.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
        with mlflow.start_run(experiment_id=exp_id) as run:
            mlflow.log_params({"C": C, "n_features": len(columns)})
            proba = model.predict_proba(test[columns])[:, 1]
            from sklearn.metrics import accuracy_score, roc_auc_score

            metrics = {
                "test_roc_auc": roc_auc_score(test[TARGET], proba),
                "test_accuracy": accuracy_score(test[TARGET], model.predict(test[columns])),
            }
            mlflow.log_metrics(metrics)
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "test.parquet"
                test.to_parquet(path)
                mlflow.log_artifact(str(path), "splits")
            info = mlflow.sklearn.log_model(
                model,
                name="model",
                signature=infer_signature(test[columns], model.predict(test[columns])),
                pip_requirements=[f"scikit-learn=={sklearn.__version__}",
                                  f"mlflow=={mlflow.__version__}"],
                serialization_format="cloudpickle",
            )
    finally:
        mlflow.set_tracking_uri(previous)
    return {"run_id": run.info.run_id, "model_uri": info.model_uri, "model_id": info.model_id,
            "columns": columns, "metrics": metrics}


def register(uri: str, name: str, logged: dict, tags: dict | None = None) -> str:
    """Register ``logged`` as a new version of ``name`` with the workflow's tags."""
    import mlflow

    client = mlflow.MlflowClient(uri, uri)
    try:
        client.create_registered_model(name)
    except mlflow.exceptions.MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    run_id = logged["run_id"]
    base = {
        "mlops.data_digest": "d41d8cd9",
        "mlops.git_commit": "abc1234",
        "mlops.settings_hash": "5e771465",
        "mlops.task": "classification",
        "mlops.selection_metric": "roc_auc",
        "mlops.test_data": f"runs:/{run_id}/splits/test.parquet",
        "mlops.target": TARGET,
        "mlops.run_id_train": run_id,
        **{f"mlops.metric.{k}": f"{v:.6f}" for k, v in logged["metrics"].items()},
    }
    mv = client.create_model_version(
        name, logged["model_uri"], run_id=run_id, model_id=logged["model_id"],
        tags={**base, **(tags or {})},
    )
    client.set_registered_model_alias(name, "challenger", mv.version)
    return str(mv.version)


def write_policy(directory: Path, name: str, **overrides) -> Path:
    """A policy file for ``name`` in ``directory`` (thresholds the tiny models can meet)."""
    import yaml

    policy = {
        "model": name,
        "thresholds": {"roc_auc": 0.85, "accuracy": 0.8},
        "champion": {"metric": "roc_auc", "min_absolute_change": 0.0},
        "signature_compatible": True,
        "required_tags": ["mlops.data_digest", "mlops.git_commit", "mlops.test_data"],
        **overrides,
    }
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(policy))
    return path


def unique(prefix: str) -> str:
    """A model name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def cli(registry_server, tmp_path, monkeypatch, capsys):
    """Run ``python -m registry ARGS`` in-process as alice; returns (exit code, stdout, stderr).

    Policies are read from the test's folder (none there: promotions need ``--force``), and the
    terminal is wide so table rows stay one line.
    """
    from registry.cli import main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry_server)
    # mlflow.set_registry_uri (autouse isolation) exports MLFLOW_REGISTRY_URI: follow the server.
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.setenv("MLOPS_POLICY_DIR", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("COLUMNS", "400")

    def run(*args):
        capsys.readouterr()
        code = main(list(args))
        out = capsys.readouterr()
        return code, out.out, out.err

    return run
