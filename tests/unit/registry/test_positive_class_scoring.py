"""Gates score a binary version on the class the workflow scored it on (``mlops.positive_class``)."""

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score

from core.names import POSITIVE_CLASS_TAG
from registry.scoring import score_predictions, score_version


def test_a_version_is_scored_on_its_positive_class():
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"x": rng.normal(size=300)})
    y = pd.Series(np.where(X.x + rng.normal(scale=0.8, size=300) > 0.7, "yes", "no"))
    model = LogisticRegression().fit(X, y)
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(model, name="model", registered_model_name="pc",
                                        pip_requirements=["scikit-learn"],
                                        serialization_format="cloudpickle")
    client = MlflowClient()
    version = str(info.registered_model_version)
    client.set_model_version_tag("pc", version, POSITIVE_CLASS_TAG, "yes")
    pred = model.predict(X)

    # the version predicts in a child process (core.sandbox): one round trip, on the class that
    # is not the default one, so the class reaches the metrics from the tag, not by chance
    other = score_version(client, "pc", version, X, y, "classification", positive="no")
    proba, classes = model.predict_proba(X), list(model.classes_)
    as_tagged = score_predictions("classification", y, pred, proba, classes, positive="yes")
    as_before = score_predictions("classification", y, pred, proba, classes)  # classes[-1]

    assert as_tagged["f1"] == f1_score(y, pred, pos_label="yes")
    assert other["f1"] == f1_score(y, pred, pos_label="no")
    assert as_tagged["f1"] != other["f1"]
    assert as_before["f1"] == as_tagged["f1"]  # "yes" sorts last: the old default agreed here
    assert as_tagged["accuracy"] == other["accuracy"]  # a label-free metric does not move
