"""The scoring plan of the workflow's own models: the pipeline's answers, bit for bit.

The models are the workflow's pipelines (``projects.train.make_pipeline``) fitted on public
tables that ship inside installed packages: scikit-learn's breast cancer (30 numeric columns)
and diabetes (regression), and palmerpenguins' raw table (text categories with gaps, dates as
text, true/false text, free text, an unseen category). Each is saved as the workflow logs it
(signature, input example) and loaded with ``mlflow.pyfunc``, as every scorer loads it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from core import plan as plan_mod
from core.plan import planned_model, probe_rows
from tests.support.public_tables import public_table

MODELS = {  # name: (table, estimator, grid parameters)
    "cancer-linear": ("cancer", "linear", {}),
    "penguins-linear": ("penguins", "linear", {}),
    "penguins-forest": ("penguins", "random_forest", {"n_estimators": 5}),
    "penguins-boosting": ("penguins", "gradient_boosting", {"max_iter": 10}),
    "diabetes-linear": ("diabetes", "linear", {}),
}


def _save(pipeline, X: pd.DataFrame, path: Path):
    from projects.artifacts import input_example, pinned_requirements, schema_frame
    from projects.train import model_signature

    example = input_example(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlflow.sklearn.save_model(pipeline, str(path), serialization_format="cloudpickle",
                                  signature=model_signature(pipeline, schema_frame(X), example),
                                  input_example=example,
                                  pip_requirements=pinned_requirements())  # no inference
    return mlflow.pyfunc.load_model(str(path))


@pytest.fixture(scope="module")
def workflow_models(tmp_path_factory):
    """{name: (loaded pyfunc model, rows to score: the whole table, gaps and all)}."""
    from projects.prepare import Preprocessing, split_data
    from projects.train import make_pipeline

    folder = tmp_path_factory.mktemp("plans")
    out = {}
    for name, (table, estimator, params) in MODELS.items():
        df, target, task = public_table(table)
        train = split_data(df, target, task, 0.2, 0.2, 42)["train"]
        X = train.drop(columns=[target])
        pipeline = make_pipeline(task, Preprocessing(), estimator, params, 42)
        pipeline.fit(X, train[target])
        out[name] = (_save(pipeline, X, folder / name), df.drop(columns=[target]))
        out[name][0].path = folder / name
    return out


def _bit_equal(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.kind == "f":
        return a.tobytes() == b.tobytes()
    return bool(np.array_equal(a, b))


@pytest.mark.parametrize("name", list(MODELS))
def test_the_workflows_model_gets_a_plan_that_answers_as_pyfunc_bit_for_bit(
        workflow_models, name):
    model, rows = workflow_models[name]
    planned, plan, why = planned_model(model)
    assert plan is not None, why
    assert why == "verified on the input example and generated rows"
    schema = model.metadata.get_input_schema()
    # every row of the public table (gaps included), one row at a time too, and the made-up
    # rows: gaps in each optional column, unseen categories, extreme numbers
    inputs = [rows, rows.head(1), rows.tail(1), *probe_rows(rows.sample(5, random_state=0),
                                                            schema)]
    if rows.isna().any().any():
        gaps = rows[rows.isna().any(axis=1)]
        inputs += [gaps, gaps.head(1)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for frame in inputs:
            assert _bit_equal(model.predict(frame), planned.predict(frame))


def test_the_plan_scores_a_row_as_the_estimator_and_not_the_pipeline_does(workflow_models):
    """One row of the linear model costs the estimator's predict, not the pipeline's pandas."""
    import time

    model, rows = workflow_models["cancer-linear"]
    _, plan, _ = planned_model(model)
    pipeline = model.get_raw_model()
    row = rows.head(1)

    def fastest(fn) -> float:
        times = []
        for _ in range(30):
            start = time.perf_counter()
            fn(row)
            times.append(time.perf_counter() - start)
        return min(times)

    # the fastest of 30 calls each: other load only adds; a wide margin against a busy machine
    assert fastest(plan) * 3 < fastest(pipeline.predict)


def test_a_step_the_plan_does_not_know_gets_no_plan(workflow_models):
    """A user's transformer in the pipeline: no plan, the reason named (scored as it is)."""
    import copy

    from sklearn.preprocessing import FunctionTransformer

    model, rows = workflow_models["penguins-linear"]
    pipeline = copy.deepcopy(model.get_raw_model())
    numeric = pipeline.named_steps["encode"].transformers_[0][1]
    numeric.steps[1] = ("scale", FunctionTransformer(np.tanh))
    with pytest.raises(plan_mod.NotCompiled, match="^FunctionTransformer: a step the plan does"):
        plan_mod.compile_plan(pipeline, "predict", list(rows.columns))


def test_a_plan_that_answers_otherwise_is_refused(workflow_models, monkeypatch):
    model, _ = workflow_models["diabetes-linear"]
    scale = plan_mod._Scale.__call__
    # off by the last bit: not the pipeline's answer any more
    monkeypatch.setattr(plan_mod._Scale, "__call__", lambda self, X: np.nextafter(
        scale(self, X), np.inf))
    planned, plan, why = planned_model(model)
    assert planned is None and plan is None
    assert why.startswith("the plan does not answer as pyfunc: input 0: ")


def test_the_scoring_server_and_batch_scoring_score_with_the_plan(workflow_models):
    """The server's fast path, the requests pyfunc parses (gaps) and batch frames: the plan's
    answers, each as stock's scoring function (``mlflow.pyfunc.scoring_server``) gives it."""
    import json

    from mlflow.pyfunc.scoring_server import invocations

    from serving.online.model import load_scorer

    model, rows = workflow_models["penguins-linear"]
    scorer = load_scorer(str(model.path))
    assert (scorer.kind, scorer.path) == ("sklearn", "plan")
    assert scorer.path_reason == "verified on the input example and generated rows"
    schema = model.metadata.get_input_schema()
    for frame in (rows.dropna().head(1), rows[rows.isna().any(axis=1)].head(20)):
        body = json.dumps({"dataframe_split": json.loads(
            frame.to_json(orient="split", index=False))}).encode()
        stock = invocations(body, "application/json", model, schema)
        assert stock.status == 200
        assert json.loads(scorer.score(body, "application/json")) == json.loads(stock.response)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert _bit_equal(scorer.predict_frame(rows), model.predict(rows))
