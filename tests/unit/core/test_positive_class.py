"""The positive class of a binary task: named by the caller, the same for every metric.

The minority class of the training target is the workflow's default (``data.positive_class``
chooses another); f1 and roc_auc both score it, as scikit-learn does with ``pos_label``.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.linear_model import LogisticRegression

from core import metrics


def _binary(labels=("no", "yes"), n=200, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    y = np.where(x[:, 0] + rng.normal(scale=0.8, size=n) > 0.6, labels[1], labels[0])
    model = LogisticRegression().fit(x, y)
    return y, model.predict(x), model.predict_proba(x), model.classes_


@pytest.mark.parametrize("labels", [("no", "yes"), (0, 1)])
def test_a_named_positive_class_is_scored_by_every_binary_metric(labels):
    y, pred, proba, classes = _binary(labels)
    for positive in labels:
        got = metrics.compute("classification", y, pred, proba, classes, positive=positive)
        column = list(classes).index(positive)
        assert got["f1"] == pytest.approx(skm.f1_score(y, pred, pos_label=positive))
        assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(y == positive,
                                                                 proba[:, column]))
        assert metrics.compute_one("f1", y, pred, proba, classes,
                                   positive=str(positive)) == got["f1"]  # by its text too
    # without one: the last class, as before
    default = metrics.compute("classification", y, pred, proba, classes)
    assert default["f1"] == pytest.approx(skm.f1_score(y, pred, pos_label=labels[1]))


def test_a_positive_class_that_is_no_class_is_one_line():
    y, pred, proba, classes = _binary()
    with pytest.raises(metrics.MetricError,
                       match=r"^positive class 'maybe' is not a class of the target; the "
                             r"classes are: no, yes$"):
        metrics.compute("classification", y, pred, proba, classes, positive="maybe")


def test_the_default_positive_class_is_the_minority():
    assert metrics.minority_class(["yes"] * 3 + ["no"] * 7) == "yes"
    assert metrics.minority_class(np.array([0, 1, 1, 0, 0])) == 1
    assert metrics.minority_class(["a", "b"]) == "b"  # a tie: the last, as scikit-learn
