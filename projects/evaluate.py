"""evaluate: test-set metrics of the best model, plots, and the comparison with the champion."""

from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd

from core.metrics import is_better, positive_class
from projects.train import score

#: Characters per line of a class name, a column name or a title before it wraps.
_LABEL_WIDTH = 18
_TITLE_WIDTH = 48
#: Lines a wrapped class name keeps (the rest ends in "…"): a label never outgrows its cell.
_LABEL_LINES = 3
#: Columns shown in the permutation-importance plot (the most important ones).
_TOP_FEATURES = 20


def evaluate_model(task: str, model, test: pd.DataFrame, target: str,
                   positive=None) -> dict[str, float]:
    """Test-set metrics (``test_<metric>``) of ``model``.

    Args:
        task: classification or regression.
        model: the fitted pipeline.
        test: the test split.
        target: the target column.
        positive: the positive class of a binary task (its value or text; None: the last
            class), the one the train step scored.
    """
    metrics, _ = score(task, model, test.drop(columns=[target]), test[target], positive)
    return {f"test_{k}": v for k, v in metrics.items()}


def compare_with_champion(
    metric: str, challenger: dict[str, float], champion: dict[str, float]
) -> dict[str, float]:
    """Champion metrics, deltas (challenger - champion) and whether the challenger wins."""
    out = {f"champion_{k}": v for k, v in champion.items()}
    for key, value in challenger.items():
        if key in champion:
            out[f"delta_{key}"] = value - champion[key]
    key = f"test_{metric}"
    if key in challenger and key in champion:
        out["beats_champion"] = float(is_better(metric, challenger[key], champion[key]))
    return out


def champion_mismatch(model_name: str, version: str, signature, features: pd.DataFrame,
                      data: str) -> str | None:
    """Why a version trained on ``features`` may not join the model whose champion this is.

    The champion's signature lists the columns its clients send; data that lacks a required
    one is another model's (a version of it could not answer those clients, and the champion
    cannot be scored on its test set).

    Args:
        model_name: the registered model.
        version: the champion's version.
        signature: the champion's :class:`mlflow.models.ModelSignature` (None: no check).
        features: the new data's feature columns (the test split without the target).
        data: the data's short name, for the message.

    Returns:
        The one-line refusal, or None when every required column is there.
    """
    inputs = getattr(getattr(signature, "inputs", None), "inputs", None) or []
    required = [c.name for c in inputs if c.name and getattr(c, "required", True)]
    have = set(map(str, features.columns))
    missing = [name for name in required if name not in have]
    if not missing:
        return None
    shown = ", ".join(map(repr, missing[:5])) + (f" and {len(missing) - 5} more"
                                                  if len(missing) > 5 else "")
    return (f"model {model_name!r}: {data} lacks {len(missing)} of the {len(required)} columns "
            f"its champion (version {version}) requires ({shown}): it is another model's data; "
            f"register it under its own name with -P model_name=NAME (--model-name NAME)")


def _wrap(text: str, width: int = _LABEL_WIDTH, lines: int | None = None) -> str:
    """``text`` broken into lines of ``width`` (long words too), at most ``lines`` of them."""
    wrapped = textwrap.wrap(str(text), width, break_long_words=True) or [str(text)]
    if lines is not None and len(wrapped) > lines:
        wrapped = [*wrapped[: lines - 1], wrapped[lines - 1][: width - 1] + "…"]
    return "\n".join(wrapped)


def _confusion_matrix(model, X, y, target: str, classes: list[str]):
    """The confusion matrix, sized for its classes: every label readable, nothing clipped.

    Class names wrap (at most three lines); the figure grows with the number of classes and
    the length of their names, the tick labels' font shrinks past 10 classes, the x labels
    stand upright past 3 classes or when a name is long (a cell is as wide as a label's
    lines: neighbours never touch, as they would at 45 degrees), and the cell counts are left
    out past 30 classes (the colours still show them). Constrained layout keeps every label
    inside the figure.
    """
    import matplotlib.pyplot as plt
    from sklearn import metrics as m

    n = len(classes)
    labels = [_wrap(c, lines=_LABEL_LINES) for c in classes]
    longest = max(len(line) for label in labels for line in label.splitlines())
    deepest = max(label.count("\n") + 1 for label in labels)
    font = 10 if n <= 10 else 8 if n <= 25 else 6
    char = font / 72 * 0.62  # inches per character, about, in the default font
    line = font / 72 * 1.3  # inches per line
    rotate = n > 3 or longest > 8
    # room for the y labels (a label's width) and the x labels (upright: the same width)
    y_room = longest * char + 0.9
    x_room = longest * char + 0.9 if rotate else deepest * line + 0.9
    cell = max(0.45, deepest * line * 1.15) if n <= 25 else max(0.3, deepest * line * 1.05)
    side = max(3.0, cell * n)
    fig, ax = plt.subplots(figsize=(side + y_room + 0.4, side + x_room + 0.8),
                           layout="constrained")
    # the class names on both axes (the model's classes, as the target holds them)
    m.ConfusionMatrixDisplay.from_estimator(
        model, X, y, ax=ax, colorbar=False, display_labels=labels,
        include_values=n <= 30, text_kw={"fontsize": font},
        xticks_rotation="vertical" if rotate else "horizontal")
    ax.tick_params(labelsize=font)

    ax.set_title(_wrap(f"Confusion matrix (test split, {len(y)} rows)", _TITLE_WIDTH))
    ax.set_xlabel(_wrap(f"Predicted {target}", _TITLE_WIDTH))
    ax.set_ylabel(_wrap(f"True {target}", _TITLE_WIDTH))
    return fig


def plot_evaluation(task: str, model, test: pd.DataFrame, target: str, positive=None) -> dict:
    """Figures by artifact name.

    Confusion matrix + ROC/PR (classification) or residuals + predicted-vs-actual (regression),
    and permutation feature importance on a test sample. Long class or column names wrap, and
    every figure lays itself out (constrained layout) so that no label is clipped.

    Args:
        task: classification or regression.
        model: the fitted pipeline.
        test: the test split.
        target: the target column.
        positive: the positive class of a binary task for ROC/PR (None: the last class).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn import metrics as m
    from sklearn.inspection import permutation_importance

    X, y = test.drop(columns=[target]), test[target]
    figures = {}
    if task == "classification":
        model_classes = list(getattr(model, "classes_", sorted(y.unique())))
        figures["confusion_matrix.png"] = _confusion_matrix(
            model, X, y, target, [str(c) for c in model_classes])
        if hasattr(model, "predict_proba") and y.nunique() == 2:
            chosen = positive_class(model_classes, positive)
            name = _wrap(f"positive class: {chosen}", _TITLE_WIDTH)
            fig, ax = plt.subplots(figsize=(5, 4.5), layout="constrained")
            m.RocCurveDisplay.from_estimator(model, X, y, ax=ax, pos_label=chosen)
            ax.set_title(f"ROC curve\n({name})")
            figures["roc_curve.png"] = fig
            fig, ax = plt.subplots(figsize=(5, 4.5), layout="constrained")
            m.PrecisionRecallDisplay.from_estimator(model, X, y, ax=ax, pos_label=chosen)
            ax.set_title(f"Precision-recall\n({name})")
            figures["precision_recall.png"] = fig
    else:
        pred = model.predict(X)
        fig, ax = plt.subplots(figsize=(5, 4.5), layout="constrained")
        m.PredictionErrorDisplay.from_predictions(y, pred, kind="residual_vs_predicted", ax=ax)
        ax.set_title(_wrap(f"Residuals of {target} (test split)", _TITLE_WIDTH))
        figures["residuals.png"] = fig
        fig, ax = plt.subplots(figsize=(5, 4.5), layout="constrained")
        m.PredictionErrorDisplay.from_predictions(y, pred, kind="actual_vs_predicted", ax=ax)
        ax.set_title(_wrap(f"Predicted vs actual {target} (test split)", _TITLE_WIDTH))
        figures["predicted_vs_actual.png"] = fig
    sample = test.sample(min(len(test), 2000), random_state=0)
    imp = permutation_importance(
        model, sample.drop(columns=[target]), sample[target], n_repeats=3, random_state=0
    )
    order = np.argsort(imp.importances_mean)[-_TOP_FEATURES:]
    names = [_wrap(c, 40, lines=2) for c in np.array(X.columns, dtype=str)[order]]
    rows = sum(name.count("\n") + 1 for name in names)
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.25 * rows + 1.2)), layout="constrained")
    ax.barh(np.arange(len(order)), imp.importances_mean[order],
            xerr=imp.importances_std[order], color="#3b7dd8")
    ax.set_yticks(np.arange(len(order)), names)  # by position: wrapped names may repeat
    ax.set_title("Permutation importance (test sample)")
    ax.set_xlabel("Drop in score when the column is shuffled")
    ax.tick_params(labelsize=8)
    figures["feature_importance.png"] = fig
    return figures
