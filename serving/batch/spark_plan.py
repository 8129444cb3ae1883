"""The Spark engine's UDF for a model that has a verified scoring plan (:mod:`core.plan`).

``mlflow.pyfunc.spark_udf`` loads the model with ``mlflow.pyfunc`` on every executor and calls
the fitted pipeline as it is. For the workflow's own pipeline, whose plan the driver has proven
(``serving.online.model.load_scorer`` chose the ``plan`` path), the engine uses this UDF
instead: the model travels to the executors as ``spark_udf`` ships it (MLflow's
``SparkModelCache``: zipped, ``SparkContext.addFile``, loaded once per Python worker), and each
worker compiles and proves the plan itself (:func:`core.plan.planned_model`: the model's input
example and rows made from it, through the plan and through pyfunc, bit for bit) before the plan
scores. A worker where the proof fails scores with pyfunc, as ``spark_udf`` would. Schema
enforcement is pyfunc's either way (the planned model is a ``PyFuncModel``). Any other model
keeps ``spark_udf``.

The predictions become the UDF's result as the local engine names them
(:func:`serving.batch.local.predictions_frame`): one value, an array (``prediction_0...``) or a
struct, converted to the result type the driver read from its sample.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator

import numpy as np
import pandas as pd

from serving.batch.local import predictions_frame

_logger = logging.getLogger(__name__)

#: on each Python worker: the model's archive path -> (the model that scores, whether planned)
_MODELS: dict[str, tuple[object, bool]] = {}


def worker_model(archive: str):
    """``(model, planned)`` on this worker: the verified plan's model, else pyfunc's (cached)."""
    if archive not in _MODELS:
        from mlflow.pyfunc.spark_model_cache import SparkModelCache

        from core.plan import planned_model

        model, _ = SparkModelCache.get_or_load(archive)
        planned, _, why = planned_model(model)
        _logger.info("spark worker model loaded", extra={
            "scoring_path": "plan" if planned is not None else "model",
            "scoring_path_reason": why})
        _MODELS[archive] = (planned or model, planned is not None)
    return _MODELS[archive]


def _cast(values: pd.Series, spark_type) -> pd.Series:
    """``values`` as the Spark type takes them (what ``spark_udf`` converts to)."""
    from pyspark.sql import types as T

    if isinstance(spark_type, T.DoubleType):
        return values.astype(np.float64)
    if isinstance(spark_type, T.LongType):
        return values.astype(np.int64)
    if isinstance(spark_type, T.BooleanType):
        return values.astype(bool)
    return values.map(str)


def udf_result(predictions, index, result_type, shape: str):
    """The UDF's answer for one batch: a Series (value or array) or a DataFrame (struct)."""
    frame = predictions_frame(predictions, index)
    if shape == "scalar":
        return _cast(frame["prediction"], result_type).reset_index(drop=True)
    if shape == "array":
        cast = pd.DataFrame({n: _cast(frame[n], result_type.elementType) for n in frame.columns})
        return pd.Series(cast.to_numpy().tolist())
    types = {f.name: f.dataType for f in result_type.fields}
    return pd.DataFrame({str(n): _cast(frame[n], types[str(n)]).to_numpy()
                         for n in frame.columns})


def plan_udf(spark, model_uri: str, result_type, shape: str):
    """``(udf, rows_by_plan)``: a pandas UDF scoring with the model's plan on the executors.

    ``rows_by_plan`` is a Spark accumulator: the rows the executors scored with a verified plan
    (the rest went through pyfunc), read once the job has run.

    Args:
        spark: the session (its ``SparkContext`` ships the model and holds the accumulator).
        model_uri: the resolved model (downloaded here once, shipped to the executors).
        result_type: the UDF's Spark result type (from the driver's sample).
        shape: ``scalar``, ``array`` or ``struct`` (how the predictions are laid out).
    """
    from mlflow.artifacts import download_artifacts
    from mlflow.pyfunc.spark_model_cache import SparkModelCache
    from pyspark.sql.functions import pandas_udf

    local = download_artifacts(artifact_uri=model_uri,
                               dst_path=tempfile.mkdtemp(prefix="mlops-spark-model-"))
    archive = SparkModelCache.add_local_model(spark, local)
    rows_by_plan = spark.sparkContext.accumulator(0)

    def score(batches):
        model, planned = worker_model(archive)
        for frame in batches:
            if len(frame) == 0:
                continue
            predictions = model.predict(frame)
            if planned:
                rows_by_plan.add(len(frame))
            yield udf_result(predictions, frame.index, result_type, shape)

    hint = pd.DataFrame if shape == "struct" else pd.Series
    score.__annotations__ = {"batches": Iterator[pd.DataFrame], "return": Iterator[hint]}
    return pandas_udf(score, returnType=result_type), rows_by_plan
