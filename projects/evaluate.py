"""evaluate: test-set metrics of the best model, plots, and the comparison with the champion."""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.metrics import is_better
from projects.train import score


def evaluate_model(task: str, model, test: pd.DataFrame, target: str) -> dict[str, float]:
    """Test-set metrics (``test_<metric>``) of ``model``."""
    metrics, _ = score(task, model, test.drop(columns=[target]), test[target])
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


def plot_evaluation(task: str, model, test: pd.DataFrame, target: str) -> dict:
    """Figures by artifact name.

    Confusion matrix + ROC/PR (classification) or residuals + predicted-vs-actual (regression),
    and permutation feature importance on a test sample.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn import metrics as m
    from sklearn.inspection import permutation_importance

    X, y = test.drop(columns=[target]), test[target]
    figures = {}
    if task == "classification":
        classes = [str(c) for c in getattr(model, "classes_", sorted(y.unique()))]
        fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(classes) + 3),
                                        max(4, 0.5 * len(classes) + 3)))
        # the class names on both axes (the model's classes, as the target holds them)
        m.ConfusionMatrixDisplay.from_estimator(model, X, y, ax=ax, colorbar=False,
                                                display_labels=classes,
                                                xticks_rotation=45 if len(classes) > 3 else
                                                "horizontal")
        ax.set_title(f"Confusion matrix (test split, {len(y)} rows)")
        ax.set_xlabel(f"Predicted {target}")
        ax.set_ylabel(f"True {target}")
        fig.tight_layout()
        figures["confusion_matrix.png"] = fig
        if hasattr(model, "predict_proba") and y.nunique() == 2:
            positive = getattr(model, "classes_", sorted(y.unique()))[-1]
            fig, ax = plt.subplots(figsize=(5, 4))
            m.RocCurveDisplay.from_estimator(model, X, y, ax=ax, pos_label=positive)
            ax.set_title(f"ROC curve (positive class: {positive})")
            fig.tight_layout()
            figures["roc_curve.png"] = fig
            fig, ax = plt.subplots(figsize=(5, 4))
            m.PrecisionRecallDisplay.from_estimator(model, X, y, ax=ax, pos_label=positive)
            ax.set_title(f"Precision-recall (positive class: {positive})")
            fig.tight_layout()
            figures["precision_recall.png"] = fig
    else:
        pred = model.predict(X)
        fig, ax = plt.subplots(figsize=(5, 4))
        m.PredictionErrorDisplay.from_predictions(y, pred, kind="residual_vs_predicted", ax=ax)
        ax.set_title(f"Residuals of {target} (test split)")
        fig.tight_layout()
        figures["residuals.png"] = fig
        fig, ax = plt.subplots(figsize=(5, 4))
        m.PredictionErrorDisplay.from_predictions(y, pred, kind="actual_vs_predicted", ax=ax)
        ax.set_title(f"Predicted vs actual {target} (test split)")
        fig.tight_layout()
        figures["predicted_vs_actual.png"] = fig
    sample = test.sample(min(len(test), 2000), random_state=0)
    imp = permutation_importance(
        model, sample.drop(columns=[target]), sample[target], n_repeats=3, random_state=0
    )
    order = np.argsort(imp.importances_mean)[-20:]
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.3 * len(order) + 1)))
    ax.barh(np.array(X.columns, dtype=str)[order], imp.importances_mean[order],
            xerr=imp.importances_std[order], color="#3b7dd8")
    ax.set_title("Permutation importance (test sample)")
    ax.set_xlabel("Drop in score when the column is shuffled")
    ax.tick_params(labelsize=8)
    fig.tight_layout()  # long column names get the room they need
    figures["feature_importance.png"] = fig
    return figures
