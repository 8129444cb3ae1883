"""train.tuning.engine spark: the same study on Spark executors (``local[2]``, a real JVM).

The trials run on Spark through MLflow's ``MlflowSparkStudy``; with the same seed and one task
(a sequential sampler) they try the parameters the local engine tried, and the best trial is
the same. Costly (the JVM and the executors' Python start-up): one short study of three trials
on scikit-learn's bundled breast cancer table, the earlier steps reused from the local run.
About 20 s of JVM start plus the executors' Python start-up and the trials; it runs in the
default suite (CI included), as the issue's tests ask.
"""

from __future__ import annotations

import sys

import mlflow
import pytest

from core.connection import connect
from core.settings import load_settings
from projects.workflow import Workflow
from tests.support.spark import stop_with_jvm

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STUDY = ["experiment=tuning-spark", "train.n_jobs=1", "train.candidates=[{estimator: linear}]",
         "train.tuning.n_trials=3"]


@pytest.fixture
def spark(monkeypatch):
    """A local[2] Spark session, active: the engine uses it; stopped with its JVM after."""
    from pyspark.sql import SparkSession  # in the test lock: a missing pyspark fails, not skips

    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)
    session = (SparkSession.builder.master("local[2]").appName("tuning-test")
               .config("spark.ui.enabled", "false")
               .config("spark.driver.host", "127.0.0.1")
               .config("spark.driver.bindAddress", "127.0.0.1").getOrCreate())
    session.sparkContext.setLogLevel("FATAL")
    try:
        yield session
    finally:
        stop_with_jvm(session)


def _trials(client, train) -> list[tuple[int, str]]:
    study = client.get_run(train.params["study_run"])
    runs = client.search_runs([study.info.experiment_id],
                              filter_string=f"tags.mlflow.parentRunId = '{study.info.run_id}'")
    return sorted((int(r.data.tags["numbers"]), r.data.params["C"]) for r in runs
                  if r.info.status == "FINISHED")


def test_the_spark_engine_finds_the_local_engines_best_trial(spark):
    client = mlflow.MlflowClient()
    local = Workflow(load_settings(overrides=STUDY), connect()).run("train").steps["train"]
    on_spark = Workflow(load_settings(overrides=[*STUDY, "train.tuning.engine=spark"]),
                        connect()).run("train").steps["train"]
    assert not on_spark.reused and on_spark.params["tuning_engine"] == "spark"
    assert len(_trials(client, on_spark)) == 3
    assert _trials(client, on_spark) == _trials(client, local)
    assert on_spark.params["best_C"] == local.params["best_C"]
    assert on_spark.metrics["best_val_roc_auc"] == pytest.approx(local.metrics["best_val_roc_auc"])
