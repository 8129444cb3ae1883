"""``serving predict --engine spark``: the same answers as the local engine, on a real JVM.

One local Spark (``local[2]``) for the module. Each test scores the same file with both engines
through the command line (``python -m serving predict``, in-process) and compares what a user
gets: the output rows and columns, or the one error line. Data nobody here wrote: vega_datasets'
cars (missing horsepower, a categorical origin, dates and names passing through) and
palmerpenguins (a classifier with the example project's own feature functions inside the model).
S3 is the moto server (AWS itself cannot exist here), read and written by the executors.
"""

from __future__ import annotations

import importlib.util
import io
import os
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from serving.cli import main
from tests.support.spark import stop_with_jvm

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[3]
FEATURES = REPO / "examples" / "penguins" / "steps" / "penguin_features.py"
CARS_FEATURES = ["Cylinders", "Displacement", "Horsepower", "Weight_in_lbs", "Acceleration",
                 "Origin"]  # fmt: skip


@pytest.fixture(scope="module")
def spark(moto_server):
    """One local Spark for the module; AWS variables set before the JVM (its workers inherit)."""
    pytest.importorskip("pyspark")
    from serving.batch import spark as spark_mod

    aws = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": moto_server,
    }
    with pytest.MonkeyPatch.context() as mp:
        for key, value in aws.items():
            mp.setenv(key, value)
        session = spark_mod.session(
            spark_mod.SparkOptions(
                master="local[2]",
                conf={
                    "spark.sql.shuffle.partitions": "2",
                    "spark.sql.files.maxPartitionBytes": "2m",  # several partitions per file
                    "spark.ui.enabled": "false",
                    "spark.driver.host": "127.0.0.1",
                    "spark.driver.bindAddress": "127.0.0.1",
                },
            )
        )
        try:
            yield session
        finally:
            stop_with_jvm(session)


def _cars(copies: int) -> pd.DataFrame:
    from vega_datasets import data

    cars = data.cars()
    big = pd.concat([cars] * copies, ignore_index=True)
    return big.assign(row_id=range(len(big)))


def _register(name: str, pipe, X: pd.DataFrame) -> None:
    """Log ``pipe`` (cloudpickle: user code travels inside the model) and alias it champion."""
    from mlflow.models import infer_signature

    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            pipe,
            name="model",
            signature=infer_signature(X, pipe.predict(X.head(20))),
            serialization_format="cloudpickle",
            pip_requirements=["scikit-learn"],
            registered_model_name=name,
        )
    client = mlflow.MlflowClient()
    client.set_registered_model_alias(name, "champion", info.registered_model_version)


@pytest.fixture
def cars_regressor():
    """Ridge on the cars: imputed horsepower, one-hot origin (miles per gallon)."""
    from sklearn.compose import make_column_transformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    cars = _cars(1).dropna(subset=["Miles_per_Gallon"])
    X = cars[CARS_FEATURES]
    numeric = [c for c in CARS_FEATURES if c != "Origin"]
    pipe = make_pipeline(
        make_column_transformer(
            (SimpleImputer(), numeric), (OneHotEncoder(handle_unknown="ignore"), ["Origin"])
        ),
        Ridge(),
    ).fit(X, cars["Miles_per_Gallon"])
    _register("cars", pipe, X)


@pytest.fixture
def cars_workflow():
    """The workflow's own gradient boosting on the cars (native categories, gaps), logged as the
    workflow logs it (signature, input example): the Spark engine scores it with its plan."""
    from projects.artifacts import input_example, log_model, schema_frame
    from projects.prepare import Preprocessing
    from projects.train import make_pipeline, model_signature

    cars = _cars(1).dropna(subset=["Miles_per_Gallon"])
    X = cars[CARS_FEATURES]
    pipe = make_pipeline("regression", Preprocessing(), "gradient_boosting", {"max_iter": 20}, 42)
    pipe.fit(X, cars["Miles_per_Gallon"])
    example = input_example(X)
    with mlflow.start_run() as run:
        info = log_model(pipe, example, model_signature(pipe, schema_frame(X), example),
                         run.info.run_id, [])
    version = mlflow.register_model(info.model_uri, "cars")
    mlflow.MlflowClient().set_registered_model_alias("cars", "champion", version.version)


@pytest.fixture
def penguins_classifier():
    """Species from the penguins, with the example project's feature functions in the model."""
    import cloudpickle
    from palmerpenguins import load_penguins
    from sklearn.compose import make_column_transformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

    spec = importlib.util.spec_from_file_location("penguin_features", FEATURES)
    user = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(user)
    sys.modules["penguin_features"] = user
    cloudpickle.register_pickle_by_value(user)  # the user's file is not installed anywhere

    penguins = load_penguins().dropna(subset=["sex"])
    X = penguins.drop(columns=["species", "year"])
    numeric = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g",
               "bill_ratio", "mass_per_flipper", "mass_vs_island"]  # fmt: skip
    pipe = make_pipeline(
        FunctionTransformer(user.add_ratios),
        user.island_mass(),
        make_column_transformer(
            (make_pipeline(SimpleImputer(), StandardScaler()), numeric),
            (OneHotEncoder(handle_unknown="ignore"), ["island", "sex"]),
        ),
        LogisticRegression(max_iter=1000),
    ).fit(X, penguins["species"])
    try:
        _register("penguins", pipe, X)
    finally:
        cloudpickle.unregister_pickle_by_value(user)
        del sys.modules["penguin_features"]
    return penguins


def _predict(model: str, src, out, *extra: str) -> tuple[int, str, str]:
    import contextlib
    import io

    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["predict", model, "--input", str(src), "--output", str(out), *extra])
    return code, stdout.getvalue(), stderr.getvalue()


def _both(model: str, src, tmp_path: Path):
    """Score ``src`` with the local engine and with Spark; return both outcomes."""
    local = _predict(model, src, tmp_path / "local.parquet")
    spark = _predict(model, src, tmp_path / "spark-out", "--engine", "spark")
    return local, spark


def _error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
    assert lines, stderr[-2000:]
    return lines[-1]


def _assert_same_output(tmp_path: Path, rows: int) -> pd.DataFrame:
    local = pd.read_parquet(tmp_path / "local.parquet")
    spark = pd.read_parquet(tmp_path / "spark-out")
    assert len(spark) == len(local) == rows
    assert list(spark.columns) == list(local.columns)  # input's columns, then prediction
    assert spark["row_id"].tolist() == list(range(rows))  # ids pass through, in input order
    pd.testing.assert_frame_equal(spark, local, check_dtype=False, rtol=1e-9)
    return spark


def test_regressor_scores_the_same_as_the_local_engine(spark, cars_workflow, tmp_path, caplog):
    """The workflow's model: every executor scores with its verified plan, pyfunc's answers."""
    import logging

    import numpy as np

    data = _cars(125)  # 50,750 rows; missing horsepower and mpg, dates and names pass through
    src = tmp_path / "cars.csv"
    data.to_csv(src, index=False)
    caplog.set_level(logging.INFO, logger="serving.batch.spark")
    (lcode, lout, lerr), (scode, sout, serr) = _both("cars@champion", src, tmp_path)
    assert lcode == 0, lerr
    assert scode == 0, serr[-3000:]
    assert f"scored {len(data)} rows with cars version 1 ->" in sout
    result = _assert_same_output(tmp_path, len(data))
    assert result["Horsepower"].isna().sum() == data["Horsepower"].isna().sum() > 0
    assert result["prediction"].notna().all()
    assert len(list((tmp_path / "spark-out").glob("part-*.parquet"))) >= 2  # partitioned
    [done] = [r for r in caplog.records if r.getMessage() == "spark batch scored"]
    assert done.scoring_path == "plan" and done.rows_by_plan == len(data)  # no pyfunc fallback
    expected = mlflow.pyfunc.load_model("models:/cars@champion").predict(
        pd.read_csv(src)[CARS_FEATURES])
    assert result["prediction"].to_numpy().tobytes() == np.asarray(expected).tobytes()


def test_classifier_with_user_features_scores_the_same(spark, penguins_classifier, tmp_path):
    data = pd.concat([penguins_classifier] * 155, ignore_index=True)  # 51,615 rows
    data = data.assign(row_id=range(len(data)))
    src = tmp_path / "penguins.parquet"
    data.to_parquet(src, index=False)
    (lcode, _, lerr), (scode, _, serr) = _both("penguins@champion", src, tmp_path)
    assert lcode == 0, lerr
    assert scode == 0, serr[-3000:]
    result = _assert_same_output(tmp_path, len(data))
    assert set(result["prediction"]) == {"Adelie", "Chinstrap", "Gentoo"}
    assert (result["prediction"] == result["species"]).mean() > 0.9  # a real model's answers


def test_bad_rows_stop_both_engines_with_the_same_error(spark, cars_regressor, tmp_path):
    data = _cars(10)
    data["Horsepower"] = data["Horsepower"].astype(object)
    data.loc[3000, "Horsepower"] = "unknown"  # text in a numeric column, past the first rows
    data.loc[10, "Horsepower"] = "n/a"  # pandas' missing-value marker: missing, not text
    src = tmp_path / "bad.csv"
    data.to_csv(src, index=False)
    (lcode, _, lerr), (scode, _, serr) = _both("cars@champion", src, tmp_path)
    assert lcode == scode == 1
    assert _error_line(serr) == _error_line(lerr)
    assert _error_line(serr) == (
        "error: column 'Horsepower' expects double values, got str 'unknown' (row 3000)"
    )
    assert not (tmp_path / "spark-out" / "_SUCCESS").exists()  # nothing written

    narrow = tmp_path / "narrow.csv"
    data.drop(columns=["Origin"]).head(50).to_csv(narrow, index=False)
    (lcode, _, lerr), (scode, _, serr) = _both("cars@champion", narrow, tmp_path)
    assert lcode == scode == 1
    assert _error_line(serr) == _error_line(lerr)
    assert "Origin" in _error_line(serr)


def test_s3_folder_in_s3_parquet_out(spark, cars_regressor, tmp_path):
    import boto3

    data = _cars(5)
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    s3.create_bucket(Bucket="scoring")
    halves = [data.iloc[: len(data) // 2], data.iloc[len(data) // 2 :]]
    for i, part in enumerate(halves):
        s3.put_object(Bucket="scoring", Key=f"in/day={i}.csv", Body=part.to_csv(index=False))
    src = tmp_path / "all.csv"
    data.to_csv(src, index=False)

    local = _predict("cars@champion", src, tmp_path / "local.parquet")
    remote = _predict("cars@champion", "s3://scoring/in/", "s3://scoring/out/", "--engine",
                      "spark")  # fmt: skip
    assert local[0] == 0, local[2]
    assert remote[0] == 0, remote[2][-3000:]
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="scoring", Prefix="out/")["Contents"]]
    assert "out/_SUCCESS" in keys and sum(k.endswith(".parquet") for k in keys) == 2
    for key in keys:
        if key.endswith(".parquet"):
            s3.download_file("scoring", key, str(tmp_path / key.replace("/", "_")))
    spark_out = pd.concat(pd.read_parquet(p) for p in sorted(tmp_path.glob("out_*.parquet")))
    expected = pd.read_parquet(tmp_path / "local.parquet")
    spark_out = spark_out.sort_values("row_id", ignore_index=True)
    pd.testing.assert_frame_equal(spark_out, expected, check_dtype=False, rtol=1e-9)


def _objects(s3, bucket: str) -> dict[str, bytes]:
    listed = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {o["Key"]: s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed}


def test_outputs_holding_the_input_on_s3_are_refused_by_both_engines(spark, cars_regressor):
    import boto3

    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    s3.create_bucket(Bucket="overlap")
    s3.put_object(Bucket="overlap", Key="in/cars.csv", Body=_cars(1).to_csv(index=False))
    before = _objects(s3, "overlap")
    cases = [  # (input, output, engine): the same object, a prefix holding it, one inside it
        ("s3://overlap/in/cars.csv", "s3a://overlap/in/cars.csv", "local"),
        ("s3://overlap/in/cars.csv", "s3://overlap/in/", "local"),
        ("s3://overlap/in/", "s3a://overlap/in", "spark"),
        ("s3://overlap/in/cars.csv", "s3://overlap/", "spark"),
        ("s3://overlap/in", "s3://overlap/in/scores/", "spark"),
    ]
    for src, out, engine in cases:
        code, _, err = _predict("cars@champion", src, out, "--engine", engine)
        assert code == 1, (src, out, engine)
        assert _error_line(err) == (
            f"error: {out}: the output would overlap the input {src}; name an output outside it"
        )
    assert _objects(s3, "overlap") == before  # the input byte for byte, nothing added

    # the local engine reads and writes S3 itself: beside the input, not over it
    code, said, err = _predict("cars@champion", "s3://overlap/in/cars.csv",
                               "s3://overlap/scored/cars.parquet")  # fmt: skip
    assert code == 0, err
    assert f"scored {len(_cars(1))} rows" in said
    from serving.batch import outputs

    scored = pd.read_parquet("overlap/scored/cars.parquet", filesystem=outputs.s3_filesystem())
    assert scored["row_id"].tolist() == list(range(len(_cars(1))))
    # (pyarrow leaves an empty "scored/" folder object when it moves the finished file in)
    assert {k for k in _objects(s3, "overlap") if not k.endswith("/")} == {
        "in/cars.csv", "scored/cars.parquet", "scored/.cars.parquet._MLOPS_SUCCESS"
    }


def test_an_output_is_replaced_only_if_the_project_wrote_it(spark, cars_regressor, tmp_path):
    import boto3

    from serving.batch import outputs

    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    s3.create_bucket(Bucket="shared")
    first, second = tmp_path / "first.csv", tmp_path / "second.parquet"
    _cars(1).head(100).to_csv(first, index=False)
    _cars(1).head(60).to_parquet(second, index=False)

    # someone else's files where the output would go: refused, one line naming one, untouched
    s3.put_object(Bucket="shared", Key="theirs/README.txt", Body=b"keep me")
    s3.put_object(Bucket="shared", Key="theirs/_SUCCESS", Body=b"")  # another Spark job's
    s3.put_object(Bucket="shared", Key="report.csv", Body=b"their,report\n")
    local = tmp_path / "spark-out"
    local.mkdir()
    (local / "notes.md").write_text("their notes")
    before = _objects(s3, "shared")
    refused = [
        ("s3://shared/theirs/", "spark", "s3://shared/theirs/README.txt"),
        ("s3://shared/report.csv", "local", "s3://shared/report.csv"),
        (local, "spark", local / "notes.md"),
    ]
    for out, engine, named in refused:
        code, _, err = _predict("cars@champion", first, out, "--engine", engine)
        assert code == 1
        assert _error_line(err).startswith(f"error: {named}: not written by python -m serving")
    assert _objects(s3, "shared") == before
    assert [p.name for p in local.iterdir()] == ["notes.md"]
    (local / "notes.md").unlink()

    # an output the project wrote is replaced: the second run's rows, none of the first's files
    for out, engine in [(local, "spark"), ("s3://shared/scores/", "spark"),
                        ("s3://shared/scores.csv", "local")]:  # fmt: skip
        for src, rows in [(first, 100), (second, 60)]:
            code, said, err = _predict("cars@champion", src, out, "--engine", engine)
            assert code == 0, err[-3000:]
            assert f"scored {rows} rows" in said
    assert len(pd.read_parquet(local)) == 60
    assert (local / "_MLOPS_SUCCESS").exists()
    scores = pd.read_parquet("shared/scores", filesystem=outputs.s3_filesystem())
    assert len(scores) == 60 and scores["row_id"].tolist() == list(range(60))
    keys = [k for k in _objects(s3, "shared") if k.startswith("scores/")]
    assert len({k.rsplit("-", 1)[-1] for k in keys if k.endswith(".parquet")}) == 1  # one job
    assert {"scores/_SUCCESS", "scores/_MLOPS_SUCCESS"} <= set(keys)
    body = s3.get_object(Bucket="shared", Key="scores.csv")["Body"].read()
    assert len(pd.read_csv(io.BytesIO(body))) == 60

    # the project's own output with someone's file dropped in: refused again, both kept
    (local / "notes.md").write_text("their notes")
    code, _, err = _predict("cars@champion", first, local, "--engine", "spark")
    assert code == 1 and _error_line(err).startswith(f"error: {local / 'notes.md'}: not written")
    assert (local / "notes.md").read_text() == "their notes"
    assert sum(len(pd.read_parquet(p)) for p in local.glob("part-*.parquet")) == 60  # kept
