"""Batch scoring on Apache Spark: ``python -m serving predict MODEL --engine spark``.

The same job as :mod:`serving.batch.local` (the local engine), spread over a Spark cluster: the
input (CSV or Parquet, a file or a folder, local or ``s3://``) is read by Spark, scored by
``mlflow.pyfunc.spark_udf`` (MLflow's own answer for scoring at scale) or, for the workflow's own
pipeline whose scoring plan the driver has proven, by the plan on every executor
(:mod:`serving.batch.spark_plan`, proven again there, pyfunc where it is not), and written as a
folder of Parquet part files holding the input's columns plus ``prediction``.

Same semantics as the local engine, by using its code rather than restating it:

* the model is resolved once (:func:`core.models.resolve_model`, in the CLI), so every executor
  scores the same version even if the alias moves during the job;
* the first rows are scored on the driver by the local engine's scorer
  (:func:`serving.online.model.load_scorer`): a missing column or a model that cannot take the input
  fails there with the local engine's message, before any cluster work; the shape and type of
  the predictions found there give the UDF's result type (``prediction`` or one column per
  output, as :func:`serving.batch.local.predictions_frame` names them);
* a column the model does not take passes through untouched (ids, targets);
* a value that does not fit a signature column anywhere in the input (text in a numeric column)
  stops the job with the message the local engine gives for it (the first such value in input
  order), before anything is written.
* the output is checked before any work and replaced only when every check has passed, by the
  rule both engines share (:mod:`serving.batch.outputs`): never an output overlapping the input,
  never a file the project did not write; a written output ends with the project's completion
  marker.

``s3://``: Spark reads and writes it natively when the cluster has the Hadoop S3A connector
(``hadoop-aws``, on every EMR/Dataproc/Databricks image); without it (a bare ``pip install
pyspark``) each file is read and each partition written by pyarrow's S3 client on the executors
(``AWS_ENDPOINT_URL`` honoured), so nothing goes through the driver either way.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from core.errors import MlopsError, UsageError
from serving.batch import local as batch_mod
from serving.batch import outputs

_logger = logging.getLogger(__name__)

DEFAULT_MASTER = "local[*]"
SAMPLE_ROWS = 1000  # rows scored on the driver first (checks and result type)
_PARQUET = (".parquet", ".pq")
_S3A_CLASS = "org.apache.hadoop.fs.s3a.S3AFileSystem"


class SparkJobError(MlopsError):
    """The Spark job cannot run or failed; one line (exit 1)."""


@dataclass(frozen=True)
class SparkOptions:
    """How to reach Spark: ``--master`` (``None``: spark-submit's, or local) and ``--conf``."""

    master: str | None = None
    conf: dict[str, str] = field(default_factory=dict)


def parse_conf(pairs: tuple[str, ...] | list[str]) -> dict[str, str]:
    """``--conf k=v`` pairs as a dict.

    Raises:
        UsageError: a pair without ``=`` (exit 2).
    """
    conf: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--conf {pair!r}: expected KEY=VALUE")
        conf[key.strip()] = value
    return conf


def session(options: SparkOptions):
    """The SparkSession for the job: the active one (spark-submit, a notebook) or a new one.

    Spark's own defaults are kept except: Arrow transfers on (spark_udf and the sample use
    them), shuffles sized for a local run unless ``--conf`` says otherwise.
    """
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise SparkJobError(
            "--engine spark needs pyspark and a Java runtime: pip install -e '.[spark]'"
        ) from None
    builder = SparkSession.builder.appName("mlops-serving-predict")
    submitted = "PYSPARK_GATEWAY_PORT" in os.environ  # launched by spark-submit
    if options.master or not submitted:
        builder = builder.master(options.master or DEFAULT_MASTER)
    conf = {"spark.sql.execution.arrow.pyspark.enabled": "true", **options.conf}
    master = options.master or ("" if submitted else DEFAULT_MASTER)
    if master.startswith("local") and not os.environ.get("PYSPARK_PYTHON"):
        # local workers run this interpreter (the venv with the model's libraries); a cluster
        # uses its own (spark.pyspark.python / PYSPARK_PYTHON)
        os.environ["PYSPARK_PYTHON"] = sys.executable
    for key, value in conf.items():
        builder = builder.config(key, value)
    try:
        spark = builder.getOrCreate()
    except Exception as exc:  # no Java, bad master URL
        raise SparkJobError(f"cannot start Spark: {_one_line(exc)}") from None
    spark.sparkContext.setLogLevel(os.environ.get("MLOPS_SPARK_LOG_LEVEL", "FATAL"))
    return spark


# -- paths ------------------------------------------------------------------------------------


def is_s3(path: str) -> bool:
    """Whether ``path`` names S3 (``s3://``, ``s3a://``)."""
    return path.startswith(("s3://", "s3a://"))


def default_output(input_path: str) -> str:
    """``INPUT-predictions.parquet`` next to the input (a folder of part files)."""
    stripped = input_path.rstrip("/")
    for suffix in (".csv", *_PARQUET):
        if stripped.lower().endswith(suffix):
            stripped = stripped[: -len(suffix)]
            break
    return f"{stripped}-predictions.parquet"


def input_kind(path: str, files: list[str]) -> str:
    """``csv`` or ``parquet`` from the file (or the folder's files) suffixes.

    Raises:
        batch_mod.BatchError: no files, mixed kinds, or another suffix.
    """
    if not files:
        raise batch_mod.BatchError(f"{path}: no .csv or .parquet files")
    kinds = set()
    for name in files:
        lower = name.lower()
        if lower.endswith(".csv"):
            kinds.add("csv")
        elif lower.endswith(_PARQUET):
            kinds.add("parquet")
        else:
            raise batch_mod.BatchError(f"{name}: expected a .csv or .parquet file")
    if len(kinds) > 1:
        raise batch_mod.BatchError(f"{path}: mixes CSV and Parquet files")
    return kinds.pop()


def _local_files(path: str) -> list[str]:
    p = Path(path)
    if p.is_file():
        return [str(p)]
    if p.is_dir():
        return sorted(
            str(f) for f in p.rglob("*")
            if f.is_file() and not f.name.startswith(("_", ".")) and not f.name.endswith(".crc")
        )  # fmt: skip
    raise batch_mod.BatchError(f"{path}: no such file or folder")


def _s3_fs():
    """The S3 client of pyarrow, with the environment's endpoint (moto, MinIO) and region."""
    return outputs.s3_filesystem()


def _s3_key(path: str) -> str:
    return re.sub(r"^s3a?://", "", path).rstrip("/")


def _s3_files(path: str) -> list[str]:
    from pyarrow import fs

    s3 = _s3_fs()
    key = _s3_key(path)
    info = s3.get_file_info(key)
    if info.type == fs.FileType.File:
        return [key]
    if info.type == fs.FileType.NotFound:
        raise batch_mod.BatchError(f"{path}: no such file or folder")
    found = s3.get_file_info(fs.FileSelector(key, recursive=True))
    names = [
        f.path for f in found
        if f.type == fs.FileType.File and not f.base_name.startswith(("_", "."))
    ]  # fmt: skip
    return sorted(names)


def _has_s3a(spark) -> bool:
    try:
        spark.sparkContext._jvm.java.lang.Class.forName(_S3A_CLASS)
    except Exception:  # noqa: BLE001 - py4j raises its own error for a missing class
        return False
    return True


# -- reading ----------------------------------------------------------------------------------


def read_input(spark, path: str, columns=None):
    """The input as a Spark DataFrame, in input order (file by file, row by row).

    Args:
        spark: the session.
        path: file or folder, local or ``s3://``.
        columns: the model's signature columns (its text columns stay text, as the local
            engine reads them; :func:`serving.batch.local.csv_dtypes`).
    """
    s3 = is_s3(path)
    files = _s3_files(path) if s3 else _local_files(path)
    kind = input_kind(path, files)
    if s3 and not _has_s3a(spark):
        return _read_s3_with_arrow(spark, files, kind, columns)
    location = re.sub(r"^s3://", "s3a://", path) if s3 else path
    if kind == "csv":
        frame = spark.read.option("header", True).option("inferSchema", False).csv(location)
        keep_text = set(batch_mod.csv_dtypes(columns) or {})
        return _as_pandas_reads(frame, keep_text)
    return spark.read.parquet(location)


_TRUE, _FALSE = ("True", "true", "TRUE"), ("False", "false", "FALSE")


def _as_pandas_reads(frame, keep_text: set[str]):
    """CSV text columns typed as ``pandas.read_csv`` (the local engine's reader) types them.

    One pass over the input decides each column's type from all of its values, as pandas
    does for a file: its missing-value markers (``NA``, ``n/a``, ``null``, ...) are missing;
    whole numbers without missing values are int64; numbers are float64; ``True``/``False``
    are booleans; anything else is text (dates included: pandas does not parse them unless
    told). The signature's text columns stay text.
    """
    from pandas._libs.parsers import STR_NA_VALUES
    from pyspark.sql import functions as F

    markers = sorted(STR_NA_VALUES)

    def col(name: str):
        return F.col(f"`{name}`")

    frame = frame.select(
        *(
            F.when(col(n).isin(markers), F.lit(None).cast("string")).otherwise(col(n)).alias(n)
            for n in frame.columns
        )
    )
    candidates = [n for n in frame.columns if n not in keep_text]
    if not candidates:
        return frame
    aggs = []
    for i, n in enumerate(candidates):
        c = col(n)
        aggs += [
            F.count(F.when(c.isNull(), 1)).alias(f"null_{i}"),
            F.count(c).alias(f"set_{i}"),
            F.count(F.when(c.isNotNull() & c.try_cast("double").isNull(), 1)).alias(f"dbl_{i}"),
            F.count(F.when(c.isNotNull() & c.try_cast("bigint").isNull(), 1)).alias(f"int_{i}"),
            F.count(F.when(c.isNotNull() & ~c.isin(*_TRUE, *_FALSE), 1)).alias(f"bool_{i}"),
        ]
    stats = frame.agg(*aggs).first()
    typed = {}
    for i, n in enumerate(candidates):
        c = col(n)
        if stats[f"set_{i}"] == 0:
            typed[n] = c.cast("double")  # all missing: float64 NaN
        elif stats[f"int_{i}"] == 0 and stats[f"null_{i}"] == 0:
            typed[n] = c.cast("bigint")
        elif stats[f"dbl_{i}"] == 0:
            typed[n] = c.cast("double")
        elif stats[f"bool_{i}"] == 0 and stats[f"null_{i}"] == 0:
            typed[n] = c.isin(*_TRUE)
    return frame.select(*(typed.get(n, col(n)).alias(n) for n in frame.columns))


def _read_s3_with_arrow(spark, files: list[str], kind: str, columns=None):
    """Read S3 files without the S3A connector: one task per file, pyarrow on the executors.

    Each file is read batch by batch (the local engine's readers), so no process holds a whole
    file; the schema is the first file's (its Parquet footer, or its first CSV batch typed as
    the whole file), and the other files are cast to it.
    """
    from pyspark.sql.pandas.types import from_arrow_schema

    batch_size = batch_mod.DEFAULT_BATCH_SIZE

    def open_batches(name: str):
        import pyarrow as pa
        import pyarrow.parquet as pq

        s3 = _s3_fs()
        if kind == "parquet":
            reader = pq.ParquetFile(s3.open_input_file(name), pre_buffer=False)
            yield from reader.iter_batches(batch_size=batch_size)
            return
        # pandas' reader, as the local engine reads a CSV
        opener = lambda: s3.open_input_stream(name)  # noqa: E731
        for frame in batch_mod.read_csv_batches(opener, batch_size, columns):
            table = pa.Table.from_pandas(frame, preserve_index=False)
            yield from table.to_batches() or [pa.RecordBatch.from_pylist([], table.schema)]

    if kind == "parquet":
        import pyarrow.parquet as pq

        schema = pq.read_schema(_s3_fs().open_input_file(files[0]))
    else:
        schema = next(open_batches(files[0])).schema
    spark_schema = from_arrow_schema(schema)

    def read_files(batches):
        for batch in batches:
            for name in batch.column("file").to_pylist():
                for part in open_batches(name):
                    yield part.cast(schema) if part.schema != schema else part

    # one partition per file, in order: partition i holds file i
    listing = spark.sparkContext.parallelize([(f,) for f in files], len(files))
    return spark.createDataFrame(listing, "file string").mapInArrow(read_files, spark_schema)


# -- checks -----------------------------------------------------------------------------------

_SPARK_TYPES = {
    "double": "double",
    "float": "float",
    "long": "bigint",
    "integer": "int",
    "boolean": "boolean",
    "string": "string",
}
_NUMERIC_SPARK = ("tinyint", "smallint", "int", "bigint", "float", "double")


def check_values(df, columns) -> None:
    """Stop on the first value (in input order) that does not fit its signature column.

    The values Spark read as text in a numeric column (a non-number somewhere) are looked up
    in Spark; the message is the local engine's own (:func:`serving.online.protocol.check_frame` on
    that value).
    """
    from pyspark.sql import functions as F

    from serving.online import protocol

    dtypes = dict(df.dtypes)
    for col in columns:
        have = dtypes.get(col.name)
        if have is None or have == _SPARK_TYPES[col.type]:
            continue
        numeric_target = col.type in ("double", "float")
        if numeric_target and have in _NUMERIC_SPARK:
            continue  # widened by the cast before the UDF, as the local engine widens
        c = F.col(f"`{col.name}`")
        bad = c.isNotNull()
        if numeric_target and have == "string":
            bad = bad & c.try_cast("double").isNull()
        first = (
            df.select(
                c.alias("value"),
                F.spark_partition_id().alias("part"),
                F.monotonically_increasing_id().alias("pos"),
            )
            .where(bad)
            .orderBy("pos")
            .limit(1)
            .collect()
        )
        if not first:
            continue
        value, part, pos = first[0]["value"], first[0]["part"], first[0]["pos"]
        row = _rows_before(df, part) + (pos & ((1 << 33) - 1))  # the row in the input
        # two rows, so the message names the row as the local engine's does for its batch
        frame = pd.DataFrame({col.name: [value, None]}, index=[row, row + 1])
        protocol.check_frame(frame, [col], allow_extra=True)
        raise protocol.RequestError(400, f"column {col.name!r} expects {col.type} values")


def _rows_before(df, partition: int) -> int:
    """Rows of ``df`` in the partitions before ``partition`` (one pass, on a refusal only)."""
    if partition == 0:
        return 0
    counts = df.rdd.mapPartitionsWithIndex(
        lambda i, rows: [(i, sum(1 for _ in rows))] if i < partition else []
    ).collect()
    return sum(n for _, n in counts)


# -- scoring ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SparkResult:
    """What the job did."""

    rows: int
    output: str
    partitions: int
    #: rows the executors scored with the model's verified plan (the rest: pyfunc)
    rows_by_plan: int = 0


def _result_type(predictions: pd.DataFrame):
    """The UDF's result type from the predictions of the sample (local engine's columns)."""
    from pyspark.sql import types as T

    def scalar(dtype) -> T.DataType:
        kind = getattr(dtype, "kind", "O")
        return {
            "f": T.DoubleType(),
            "i": T.LongType(),
            "u": T.LongType(),
            "b": T.BooleanType(),
        }.get(kind, T.StringType())

    names = list(predictions.columns)
    if names == ["prediction"]:
        return scalar(predictions["prediction"].dtype), "scalar"
    if names == [f"prediction_{i}" for i in range(len(names))]:
        return T.ArrayType(scalar(predictions.dtypes.iloc[0])), "array"
    fields = [T.StructField(str(n), scalar(t)) for n, t in predictions.dtypes.items()]
    return T.StructType(fields), "struct"


def score(
    spark,
    model_uri: str,
    input_path: str,
    output_path: str,
    overwrite: bool = True,
) -> SparkResult:
    """Score ``input_path`` with the model at ``model_uri`` into the Parquet folder ``output_path``.

    Raises:
        batch_mod.BatchError: unreadable input.
        serving.online.protocol.RequestError: the input does not fit the model (the local message).
        serving.batch.outputs.OutputError: the output overlaps the input, or holds a file this
            project did not write (:func:`serving.batch.outputs.check_output`).
        SparkJobError: the job failed.
    """
    import mlflow.pyfunc
    from pyspark.sql import functions as F

    from serving.online.model import load_scorer

    output, previous = check_output(input_path, output_path)
    scorer = load_scorer(model_uri, online=False)
    schema = scorer.pyfunc_model.metadata.get_input_schema()
    from serving.online import protocol

    columns = getattr(scorer, "input_columns", None) or protocol.columns_from_schema(schema) or []
    df = read_input(spark, input_path, columns)

    check_values(df, columns)
    # Text columns whose every value is a number (pandas would have read them as numbers).
    numeric = {c.name for c in columns if c.type in ("double", "float")}
    for name, have in df.dtypes:
        if name in numeric and have == "string":
            df = df.withColumn(name, F.col(f"`{name}`").cast("double"))
    # The local engine's checks and answers on the first rows (missing columns, wrong types).
    sample = df.limit(SAMPLE_ROWS).toPandas()
    predictions = batch_mod.predictions_frame(scorer.predict_frame(sample), sample.index)

    result_type, shape = _result_type(predictions)
    rows_by_plan = None
    if scorer.path == "plan":  # the driver proved the workflow's plan: the executors use it too
        from serving.batch.spark_plan import plan_udf

        udf, rows_by_plan = plan_udf(spark, model_uri, result_type, shape)
    else:
        udf = mlflow.pyfunc.spark_udf(spark, model_uri, result_type=result_type,
                                      env_manager="local")
    if columns:
        wanted = set(df.columns)
        inputs = [
            F.col(f"`{c.name}`").cast(_SPARK_TYPES[c.type]).alias(c.name)
            for c in columns
            if c.name in wanted
        ]
    elif schema is not None and schema.has_input_names():
        inputs = [F.col(f"`{n}`") for n in schema.input_names() if n in df.columns]
    else:
        inputs = [F.col(f"`{n}`") for n in df.columns]
    scored = df.withColumn("_mlops_prediction", udf(F.struct(*inputs)))
    kept = [F.col(f"`{n}`") for n in df.columns]
    pred = F.col("_mlops_prediction")
    if shape == "scalar":
        columns_out = [pred.alias("prediction")]
    elif shape == "array":
        columns_out = [pred[i].alias(n) for i, n in enumerate(predictions.columns)]
    else:
        columns_out = [pred[str(n)].alias(str(n)) for n in predictions.columns]
    result = scored.select(*kept, *columns_out)
    # every check has passed: the previous output (ours, checked above) goes only now
    outputs.remove_previous(output, previous)
    try:
        _write(spark, result, output_path)
    except Exception as exc:
        raise SparkJobError(f"the Spark job failed: {_one_line(exc)}") from None
    outputs.write_marker(output, folder=True)
    written = _read_back(spark, output_path)
    by_plan = rows_by_plan.value if rows_by_plan is not None else 0
    _logger.info("spark batch scored", extra={"rows": written[0], "output": output_path,
                                              "scoring_path": scorer.path,
                                              "rows_by_plan": by_plan})
    return SparkResult(rows=written[0], output=output_path, partitions=written[1],
                       rows_by_plan=by_plan)


def check_output(input_path: str, output_path: str) -> tuple[outputs.Location, dict[str, int]]:
    """Refuse an output folder that would harm the input or files the project did not write.

    Returns:
        Where the output is, and the files of a previous output of the project's that the
        job replaces (:func:`serving.batch.outputs.check_output`).

    Raises:
        serving.batch.outputs.OutputError: one line naming the reason (exit 1).
    """
    output = outputs.locate(output_path)
    return output, outputs.check_output(output, outputs.locate(input_path), folder=True)


def _write(spark, frame, output_path: str) -> None:
    if is_s3(output_path) and not _has_s3a(spark):
        _write_s3_with_arrow(frame, output_path)
        return
    location = re.sub(r"^s3://", "s3a://", output_path)
    # append, not overwrite: Spark's overwrite deletes the whole folder, and only the files
    # of the previous output are ours to delete (serving.batch.outputs.remove_previous did that)
    frame.write.mode("append").parquet(location)


def _write_s3_with_arrow(frame, output_path: str) -> None:
    """One Parquet part file per partition, written by the executors with pyarrow."""
    import pyarrow as pa
    from pyarrow import fs

    prefix = _s3_key(output_path)
    job = uuid.uuid4().hex[:8]
    s3 = _s3_fs()

    def write_partition(batches):
        import pyarrow.parquet as pq
        from pyspark import TaskContext

        part = TaskContext.get().partitionId()
        writer = None
        rows = 0
        client = _s3_fs()
        try:
            for batch in batches:
                if writer is None:
                    sink = client.open_output_stream(f"{prefix}/part-{part:05d}-{job}.parquet")
                    writer = pq.ParquetWriter(sink, batch.schema)
                writer.write_batch(batch)
                rows += batch.num_rows
        finally:
            if writer is not None:
                writer.close()
                sink.close()
        yield pa.RecordBatch.from_pydict({"rows": [rows]})

    try:
        frame.mapInArrow(write_partition, "rows long").collect()
    except BaseException:
        # a failed job leaves none of its own part files (Spark's committer does the same)
        found = s3.get_file_info(fs.FileSelector(prefix, recursive=True, allow_not_found=True))
        for f in found:
            if f.type == fs.FileType.File and f.base_name.endswith(f"-{job}.parquet"):
                s3.delete_file(f.path)
        raise
    with s3.open_output_stream(f"{prefix}/_SUCCESS") as out:
        out.write(b"")


def _read_back(spark, output_path: str) -> tuple[int, int]:
    """Rows and part files written (Parquet footers only)."""
    import pyarrow.parquet as pq
    from pyarrow import fs

    if is_s3(output_path):
        s3 = _s3_fs()
        found = s3.get_file_info(fs.FileSelector(_s3_key(output_path), recursive=True))
        parts = [f.path for f in found if f.base_name.endswith(".parquet")]
        rows = sum(pq.ParquetFile(s3.open_input_file(p)).metadata.num_rows for p in parts)
        return rows, len(parts)
    parts = sorted(Path(output_path).glob("*.parquet"))
    return sum(pq.ParquetFile(p).metadata.num_rows for p in parts), len(parts)


def _one_line(exc: BaseException) -> str:
    """The useful last line of a JVM or Python-worker error (Spark prints whole stacks)."""
    text = str(exc)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for line in reversed(lines):
        if re.match(r"^[\w.]*(Error|Exception)\b", line) or "Error:" in line:
            return line[:500]
    return (lines[-1] if lines else type(exc).__name__)[:500]
