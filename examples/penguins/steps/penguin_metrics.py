"""Metrics: a custom metric, declared in the settings with its direction."""

from sklearn.metrics import balanced_accuracy_score


def balanced_accuracy(y_true, y_pred) -> float:
    """Accuracy averaged over the classes (Chinstrap is the rare one)."""
    return float(balanced_accuracy_score(y_true, y_pred))
