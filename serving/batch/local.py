"""Batch scoring: a CSV or Parquet file scored in batches, with a progress bar.

The output holds the input's rows (all of its columns, so ids pass through) plus the model's
predictions: a ``prediction`` column, or one column per output when the model returns several.

The answers are those of ``mlflow models predict`` on the same file: each batch is read as
pandas reads the file (text columns of the signature kept as text, so a batch whose values of
such a column are all missing reads the same as the whole file; a CSV column whose batches
pandas types differently gets one type for the whole file, found by a first pass) and predicted
by the model's pyfunc, which ignores extra columns (ids, the target) and converts values by its
own rules.

The input and the output are local files or ``s3://`` objects (read and written with pyarrow's
S3 client, ``AWS_ENDPOINT_URL`` honoured).

Memory is bounded by the batch size, not the file: the input is read batch by batch (Parquet
without pyarrow's pre-buffering, which would keep every row group read so far), and each
scored batch is appended to the output. The output is written under a temporary name next to
it and moved into place only when every row is scored, so a refused batch leaves nothing (and
an earlier output stays as it was). The rule of :mod:`serving.batch.outputs` decides first whether
the output may be written at all: not over the input, and over an existing file only if this
project wrote it (its completion marker, ``.NAME._MLOPS_SUCCESS``, sits beside it).
"""

from __future__ import annotations

import io
import logging
import posixpath
import uuid
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pandas as pd

from serving.batch import outputs

_logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 10_000
_PARQUET = {".parquet", ".pq"}


class BatchError(ValueError):
    """A batch job that cannot run (unreadable input, unsupported file type)."""


def _kind(path) -> str:
    suffix = posixpath.splitext(str(path))[1].lower()
    if suffix == ".csv":
        return "csv"
    if suffix in _PARQUET:
        return "parquet"
    raise BatchError(f"{path}: expected a .csv or .parquet file")


def is_file(path) -> bool:
    """Whether ``path`` (local or ``s3://``) is an existing file."""
    from pyarrow import fs

    where = outputs.locate(str(path))
    return where.filesystem().get_file_info(where.path).type == fs.FileType.File


def default_output(input_path) -> str:
    """``INPUT-predictions.<suffix>`` next to the input (local or ``s3://``)."""
    text = str(input_path)
    stem, suffix = posixpath.splitext(text)
    return f"{stem}-predictions{suffix}"


def _source(path):
    """``path`` as pandas and pyarrow open it: a local path, or a function opening an S3 object.

    A local file is returned as it is; an ``s3://`` object as a stream of pyarrow's S3 client
    (one request, read front to back: the readers never seek in a CSV).
    """
    where = outputs.locate(str(path))
    if not where.is_s3:
        return Path(path)
    filesystem = where.filesystem()
    return lambda: filesystem.open_input_stream(where.path)


def _parquet_file(path):
    import pyarrow.parquet as pq

    where = outputs.locate(str(path))
    source = where.filesystem().open_input_file(where.path) if where.is_s3 else path
    # pre_buffer=False: pyarrow's read cache would otherwise hold every row group read
    return pq.ParquetFile(source, pre_buffer=False)


def count_rows(path, batch_size: int = 1 << 16) -> int | None:
    """The number of rows :func:`read_batches` will yield.

    Parquet: its footer says. CSV: counted by the same reader that scores the file (one column,
    as text), so quoted fields with line breaks and blank lines count as the reader sees them.
    """
    if _kind(path) == "parquet":
        return _parquet_file(path).metadata.num_rows
    source = _source(path)
    try:
        with _opened(source() if callable(source) else source) as opened:
            chunks = pd.read_csv(opened, chunksize=batch_size, usecols=[0], dtype=str)
            return sum(len(chunk) for chunk in chunks)
    except (pd.errors.EmptyDataError, ValueError):
        return 0


def csv_dtypes(columns) -> dict | None:
    """The read dtypes that keep the signature's text columns text in every batch.

    Args:
        columns: the signature's columns (:class:`serving.online.protocol.Column`), or None.
    """
    if not columns:
        return None
    return {c.name: object for c in columns if c.type == "string"} or None


def read_batches(
    path, batch_size: int = DEFAULT_BATCH_SIZE, columns=None
) -> Iterator[pd.DataFrame]:
    """Yield the file's rows as DataFrames of at most ``batch_size`` rows.

    Args:
        path: CSV or Parquet file, local or ``s3://``.
        batch_size: rows per batch.
        columns: the model's signature columns, if any (see :func:`csv_dtypes`).
    """
    if not is_file(path):
        raise BatchError(f"{path}: no such file")
    if _kind(path) == "parquet":
        start = 0
        for batch in _parquet_file(path).iter_batches(batch_size=batch_size):
            frame = batch.to_pandas()
            # rows numbered across the file, as pandas numbers a CSV's chunks (error messages)
            frame.index = pd.RangeIndex(start, start + len(frame))
            start += len(frame)
            yield frame
    else:
        try:
            source = _source(path)
            opener = source if callable(source) else lambda: source
            yield from read_csv_batches(opener, batch_size, columns)
        except pd.errors.EmptyDataError:
            raise BatchError(f"{path}: empty CSV file (no header)") from None
        except pd.errors.ParserError as exc:
            raise BatchError(f"{path}: {' '.join(str(exc).split())}") from None


def read_csv_batches(open_source, batch_size: int, columns=None) -> Iterator[pd.DataFrame]:
    """A CSV's rows in batches, typed as one file (see :func:`_csv_common_dtypes`).

    Args:
        open_source: returns the CSV afresh (a path, or a new binary stream); called twice.
        batch_size: rows per batch.
        columns: the model's signature columns, if any (see :func:`csv_dtypes`).

    Raises:
        pandas.errors.EmptyDataError, pandas.errors.ParserError: as pandas reads the file.
    """
    dtype = csv_dtypes(columns)
    common = _csv_common_dtypes(open_source, batch_size, dtype)
    with _opened(open_source()) as source:
        for chunk in pd.read_csv(source, chunksize=batch_size, dtype=dtype):
            differ = {n: t for n, t in common.items() if chunk[n].dtype != t}
            yield chunk.astype(differ) if differ else chunk


def _opened(source):
    """``source`` as a context manager (a stream is closed after use; a path needs nothing)."""
    return source if hasattr(source, "__exit__") else nullcontext(source)


def _csv_common_dtypes(open_source, batch_size: int, dtype) -> dict:
    """Each column's type over the whole CSV, for the columns whose batches disagree.

    pandas types each batch from its own values (whole numbers, then a missing value in a
    later batch: int64, then float64); one pass over the file finds the columns whose batches
    disagree and gives them the type pandas gives when it concatenates them (its own rule for a
    file it reads in chunks), so every batch has the same columns and types.
    """
    seen: dict = {}
    with _opened(open_source()) as source:
        for chunk in pd.read_csv(source, chunksize=batch_size, dtype=dtype):
            for name, kind in chunk.dtypes.items():
                seen.setdefault(name, set()).add(kind)
    return {
        name: pd.concat([pd.Series([], dtype=t) for t in kinds]).dtype
        for name, kinds in seen.items()
        if len(kinds) > 1
    }


def predictions_frame(predictions, index) -> pd.DataFrame:
    """The predictions as columns aligned with the batch's index."""
    if isinstance(predictions, pd.DataFrame):
        return predictions.set_axis(index)
    if isinstance(predictions, pd.Series):
        return predictions.to_frame("prediction").set_axis(index)
    arr = np.asarray(predictions)
    if arr.ndim == 2 and arr.shape[1] > 1:
        return pd.DataFrame(
            arr, index=index, columns=[f"prediction_{i}" for i in range(arr.shape[1])]
        )
    return pd.DataFrame({"prediction": arr.reshape(len(index))}, index=index)


def check_output(input_path, output_path) -> outputs.Location:
    """Refuse an output that would harm the input or a file the project did not write.

    The local engine's output is one file (:func:`serving.batch.outputs.check_output`); returns
    where it is.

    Raises:
        serving.batch.outputs.OutputError: one line naming the reason (exit 1).
    """
    output = outputs.locate(str(output_path))
    outputs.check_output(output, outputs.locate(str(input_path)), folder=False)
    return output


def score_file(
    scorer,
    input_path,
    output_path,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress=None,
) -> int:
    """Score ``input_path`` into ``output_path`` (CSV or Parquet by suffix); return the row count.

    The output appears only when every batch is scored: it is written under a temporary name
    in the same folder (or S3 prefix) and moved over ``output_path`` at the end, then marked as
    the project's (:func:`serving.batch.outputs.write_marker`).

    Args:
        scorer: a :class:`serving.online.model.Scorer` (its ``predict_frame`` is called per batch).
        input_path: CSV or Parquet input, local or ``s3://``.
        output_path: where the rows and predictions go, local or ``s3://``.
        batch_size: rows per batch.
        progress: optional callable ``progress(rows_done)`` called after each batch.

    Raises:
        serving.batch.outputs.OutputError: the output overlaps the input, or is an existing file
            this project did not write (nothing is read or written then).
        BatchError: unreadable or unsupported input.
    """
    output = check_output(input_path, output_path)
    out_kind = _kind(output_path)
    filesystem = output.filesystem()
    parent, name = posixpath.split(output.path)
    if not output.is_s3:
        filesystem.create_dir(parent, recursive=True)
    partial = posixpath.join(parent, f".{name}.{uuid.uuid4().hex[:12]}.partial")
    try:
        rows, wrote = _write_scored(
            scorer, input_path, filesystem, partial, out_kind, batch_size, progress
        )
        if wrote:  # no batch at all (a header-only CSV) writes nothing, as before
            filesystem.move(partial, output.path)
            outputs.write_marker(output, folder=False)
    finally:
        from pyarrow import fs

        if filesystem.get_file_info(partial).type == fs.FileType.File:
            filesystem.delete_file(partial)
    _logger.info("batch scored", extra={"rows": rows, "output": str(output_path)})
    return rows


def _write_scored(scorer, input_path, filesystem, out: str, out_kind: str, batch_size: int,
                  progress) -> tuple[int, bool]:  # fmt: skip
    """Score batch by batch, appending each to ``out``; return the row count, whether written."""
    rows = 0
    sink = text = writer = None
    try:
        columns = getattr(scorer, "input_columns", None)
        for i, batch in enumerate(read_batches(input_path, batch_size, columns)):
            # the signature's columns only: pyfunc would drop the others itself, with a warning
            # on every batch (ids, targets); the Spark engine passes the same columns
            taken = [c.name for c in columns if c.name in batch.columns] if columns else None
            predictions = scorer.predict_frame(batch[taken] if taken else batch)
            result = pd.concat([batch, predictions_frame(predictions, batch.index)], axis=1)
            if sink is None:
                sink = filesystem.open_output_stream(out)
            if out_kind == "csv":
                if text is None:  # newline="": the bytes pandas writes to a path
                    text = io.TextIOWrapper(sink, encoding="utf-8", newline="")
                result.to_csv(text, header=i == 0, index=False)
            else:
                import pyarrow as pa
                import pyarrow.parquet as pq

                table = pa.Table.from_pandas(result, preserve_index=False)
                if writer is None:
                    writer = pq.ParquetWriter(sink, table.schema)
                writer.write_table(table)
            rows += len(batch)
            if progress is not None:
                progress(rows)
    finally:
        if writer is not None:
            writer.close()
        if text is not None:
            text.close()  # closes the sink too
        elif sink is not None:
            sink.close()
    return rows, sink is not None
