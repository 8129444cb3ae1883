"""Scoring versions on a test split: the numbers the metric gates compare."""

from __future__ import annotations

import logging
import shutil
import tempfile
import weakref
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


def load_model(client, name: str, version: str):
    """The version's model: the scikit-learn object when it has that flavor, else pyfunc.

    Models saved with skops load with the types trusted when they were logged
    (``skops_trusted_types`` in the MLmodel file). A scikit-learn model is fully in memory
    once loaded, so its download folder goes at once; other flavors may read their files
    lazily, so theirs lives exactly as long as the returned model object.
    """
    import mlflow
    from mlflow.models import Model

    tmp = tempfile.mkdtemp(prefix="registry-model-")
    try:
        local = download(client, model_location(client, name, version), tmp)
        if "sklearn" in Model.load(str(Path(local) / "MLmodel")).flavors:
            model = mlflow.sklearn.load_model(str(local))
            shutil.rmtree(tmp, ignore_errors=True)
            return model
        model = mlflow.pyfunc.load_model(str(local))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    weakref.finalize(model, shutil.rmtree, tmp, ignore_errors=True)
    return model


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


def score_version(client, name: str, version: str, X, y, task: str,
                  inputs: dict[str, str] | None = None, positive=None) -> dict[str, float]:
    """Score ``name/version`` on ``(X, y)``, feeding it the columns of its signature.

    ``positive`` is the class binary metrics score (the candidate's, for the champion too: both
    are scored on the same test split).

    Raises:
        RegistryError: the model cannot be loaded or cannot predict on ``X``.
    """
    X = select_inputs(X, inputs, version)
    try:
        model = load_model(client, name, version)
        y_pred = model.predict(X)
        y_proba = classes = None
        if task == "classification" and hasattr(model, "predict_proba"):
            y_proba = model.predict_proba(X)
        if task == "classification":
            # the model's class order: the positive class and log_loss labels of train/evaluate
            classes = getattr(model, "classes_", None)
    except RegistryError:
        raise
    except Exception as exc:  # noqa: BLE001 - any model failure is a one-line gate failure
        raise RegistryError(
            f"version {version} cannot be scored: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}"
        ) from None
    return score_predictions(task, y, y_pred, y_proba, classes, positive)
