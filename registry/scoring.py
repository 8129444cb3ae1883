"""Scoring versions on a test split: the numbers the metric gates compare."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from core import metrics
from core.names import TARGET_TAG, TASK_TAG, TEST_DATA_TAG
from registry.errors import RegistryError
from registry.versions import download, model_location

_logger = logging.getLogger(__name__)


def score_predictions(task: str, y_true, y_pred, y_proba=None, classes=None,
                      positive=None) -> dict[str, float]:
    """Test metrics from predictions, computed by the metric catalogue (:mod:`core.metrics`).

    Args:
        task: ``classification`` or ``regression``.
        y_true: true targets.
        y_pred: predicted labels (classification) or values (regression).
        y_proba: class probabilities (n_samples x n_classes), if the model gives them.
        classes: the model's ``classes_`` (the order of ``y_proba``'s columns), if known.
        positive: the positive class of a binary task (the version's ``mlops.positive_class``
            tag); None: the last of ``classes``.

    Returns:
        Every metric of the task the predictions allow: ``roc_auc``, ``accuracy``, ``f1``,
        ``log_loss`` (classification; the probability-based ones only with ``y_proba``) or
        ``rmse``, ``mae``, ``r2`` (regression).
    """
    return metrics.compute(task, y_true, y_pred, y_proba, classes, positive)


def infer_task(tags: dict[str, str], y) -> str:
    """The task from the ``mlops.task`` tag, else from the target's values."""
    task = tags.get(TASK_TAG)
    if task in ("classification", "regression"):
        return task
    import pandas as pd

    is_float = pd.api.types.is_float_dtype(y)
    return "regression" if is_float and y.nunique() > 20 else "classification"


def load_test_data(client, tags: dict[str, str]):
    """The test split named by the version's tags, as ``(X, y)``.

    Raises:
        RegistryError: the tags are missing or the file cannot be read.
    """
    import pandas as pd
    from mlflow.exceptions import MlflowException

    uri, target = tags.get(TEST_DATA_TAG), tags.get(TARGET_TAG)
    if not uri:
        raise RegistryError(f"no test data: tag {TEST_DATA_TAG} is missing")
    if not target:
        raise RegistryError(f"no target column: tag {TARGET_TAG} is missing")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            frame = pd.read_parquet(download(client, uri, tmp))
        except (MlflowException, OSError, ValueError) as exc:
            first = str(exc).splitlines()[0]
            raise RegistryError(f"cannot read test data {uri}: {first}") from None
    if target not in frame.columns:
        raise RegistryError(f"test data {uri} has no target column {target!r}")
    return frame.drop(columns=[target]), frame[target]


def download_model(client, name: str, version: str, where: str | Path) -> Path:
    """Download the files of ``name/version`` into ``where``; nothing of them runs here.

    Raises:
        RegistryError: the files cannot be downloaded.
    """
    from mlflow.exceptions import MlflowException

    try:
        return download(client, model_location(client, name, version), where)
    except (MlflowException, OSError) as exc:
        raise RegistryError(f"version {version} cannot be downloaded: "
                            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                            ) from None


def select_inputs(X, inputs: dict[str, str] | None, version: str):
    """The columns of ``X`` a version's signature names (all of ``X`` if it names none).

    Raises:
        RegistryError: the test split lacks a column the version needs.
    """
    names = [c for c in (inputs or {}) if not c.startswith("[")]
    if not names:
        return X
    missing = [c for c in names if c not in X.columns]
    if missing:
        raise RegistryError(
            f"version {version} needs input columns the test split lacks: {', '.join(missing)}"
        )
    return X[names]


def score_versions(client, name: str, versions: dict[str, dict[str, str] | None], X, y,
                   task: str, positive=None) -> dict[str, dict[str, float] | RegistryError]:
    """Score versions of ``name`` on ``(X, y)``, each fed the columns of its signature.

    The versions' code (their load and predict) runs in one child process that holds no
    credentials (:mod:`core.sandbox`): this process downloads the files and the data, the
    child predicts, the metrics are computed here from its predictions.

    Args:
        client: MLflow client of the registry.
        name: the registered model.
        versions: ``{version: its signature's inputs or None}``.
        X: the test split's features.
        y: its targets.
        task: ``classification`` or ``regression``.
        positive: the class binary metrics score (the candidate's, for the champion too: both
            are scored on the same test split).

    Returns:
        ``{version: metrics}``, or a RegistryError (one line) for a version that cannot be
        downloaded, loaded or scored.
    """
    from core.sandbox import SandboxError, predict_models

    out: dict[str, dict[str, float] | RegistryError] = {}
    with tempfile.TemporaryDirectory(prefix="registry-score-") as tmp:
        data = Path(tmp) / "test.parquet"
        X.to_parquet(data)
        models, jobs = {}, []
        for version, inputs in versions.items():
            try:
                columns = list(select_inputs(X, inputs, version).columns)
                models[version] = download_model(client, name, version, Path(tmp) / version)
            except RegistryError as exc:
                out[version] = exc
                continue
            jobs.append({"model": version, "data": str(data), "columns": columns,
                         "proba": task == "classification"})
        try:
            results = predict_models(models, jobs, Path(tmp) / "child") if jobs else []
        except SandboxError as exc:
            results = [{"error": str(exc)}] * len(jobs)
    for job, res in zip(jobs, results, strict=True):
        version = job["model"]
        if res["error"]:
            out[version] = RegistryError(f"version {version} cannot be scored: {res['error']}")
            continue
        # the model's class order: the positive class and log_loss labels of train/evaluate
        classes = res["classes"] if task == "classification" else None
        out[version] = score_predictions(task, y, res["labels"], res["proba"], classes,
                                         positive)
    return {v: out[v] for v in versions}


def score_version(client, name: str, version: str, X, y, task: str,
                  inputs: dict[str, str] | None = None, positive=None) -> dict[str, float]:
    """Score ``name/version`` on ``(X, y)`` (one version of :func:`score_versions`).

    Raises:
        RegistryError: the model cannot be downloaded, loaded or cannot predict on ``X``.
    """
    result = score_versions(client, name, {version: inputs}, X, y, task, positive)[version]
    if isinstance(result, RegistryError):
        raise result
    return result
