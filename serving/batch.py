"""Batch scoring: a CSV or Parquet file scored in batches, with a progress bar.

The output holds the input's rows (all of its columns, so ids pass through) plus the model's
predictions: a ``prediction`` column, or one column per output when the model returns several.

The answers are those of ``mlflow models predict`` on the same file: each batch is read as
pandas reads the file (text columns of the signature kept as text, so a batch whose values of
such a column are all missing reads the same as the whole file; a CSV column whose batches
pandas types differently gets one type for the whole file, found by a first pass) and predicted
by the model's pyfunc, which ignores extra columns (ids, the target) and converts values by its
own rules.

Memory is bounded by the batch size, not the file: the input is read batch by batch (Parquet
without pyarrow's pre-buffering, which would keep every row group read so far), and each
scored batch is appended to the output. The output is written under a temporary name next to
it and moved into place only when every row is scored, so a refused batch leaves nothing (and
an earlier output stays as it was).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pandas as pd

_logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 10_000
_PARQUET = {".parquet", ".pq"}


class BatchError(ValueError):
    """A batch job that cannot run (unreadable input, unsupported file type)."""


def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in _PARQUET:
        return "parquet"
    raise BatchError(f"{path}: expected a .csv or .parquet file")


def count_rows(path: Path, batch_size: int = 1 << 16) -> int | None:
    """The number of rows :func:`read_batches` will yield.

    Parquet: its footer says. CSV: counted by the same reader that scores the file (one column,
    as text), so quoted fields with line breaks and blank lines count as the reader sees them.
    """
    if _kind(path) == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    try:
        chunks = pd.read_csv(path, chunksize=batch_size, usecols=[0], dtype=str)
        return sum(len(chunk) for chunk in chunks)
    except (pd.errors.EmptyDataError, ValueError):
        return 0


def csv_dtypes(columns) -> dict | None:
    """The read dtypes that keep the signature's text columns text in every batch.

    Args:
        columns: the signature's columns (:class:`serving.protocol.Column`), or None.
    """
    if not columns:
        return None
    return {c.name: object for c in columns if c.type == "string"} or None


def read_batches(
    path: Path, batch_size: int = DEFAULT_BATCH_SIZE, columns=None
) -> Iterator[pd.DataFrame]:
    """Yield the file's rows as DataFrames of at most ``batch_size`` rows.

    Args:
        path: CSV or Parquet file.
        batch_size: rows per batch.
        columns: the model's signature columns, if any (see :func:`csv_dtypes`).
    """
    if not path.is_file():
        raise BatchError(f"{path}: no such file")
    if _kind(path) == "parquet":
        import pyarrow.parquet as pq

        start = 0
        # pre_buffer=False: pyarrow's read cache would otherwise hold every row group read
        for batch in pq.ParquetFile(path, pre_buffer=False).iter_batches(batch_size=batch_size):
            frame = batch.to_pandas()
            # rows numbered across the file, as pandas numbers a CSV's chunks (error messages)
            frame.index = pd.RangeIndex(start, start + len(frame))
            start += len(frame)
            yield frame
    else:
        try:
            yield from read_csv_batches(lambda: path, batch_size, columns)
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


def score_file(
    scorer,
    input_path: Path,
    output_path: Path,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress=None,
) -> int:
    """Score ``input_path`` into ``output_path`` (CSV or Parquet by suffix); return the row count.

    The output appears only when every batch is scored: it is written to a temporary file in
    the same folder and renamed over ``output_path`` at the end.

    Args:
        scorer: a :class:`serving.model.Scorer` (its ``predict_frame`` is called per batch).
        input_path: CSV or Parquet input.
        output_path: where the rows and predictions go.
        batch_size: rows per batch.
        progress: optional callable ``progress(rows_done)`` called after each batch.
    """
    out_kind = _kind(output_path)
    output_path = Path(output_path)
    # created by the writers themselves, so the output gets the usual file permissions
    partial = output_path.with_name(f".{output_path.name}.{uuid.uuid4().hex[:12]}.partial")
    try:
        rows = _write_scored(scorer, input_path, partial, out_kind, batch_size, progress)
        if partial.exists():  # no batch at all (a header-only CSV) writes nothing, as before
            os.replace(partial, output_path)
    finally:
        partial.unlink(missing_ok=True)
    _logger.info("batch scored", extra={"rows": rows, "output": str(output_path)})
    return rows


def _write_scored(scorer, input_path: Path, out: Path, out_kind: str, batch_size: int,
                  progress) -> int:  # fmt: skip
    """Score batch by batch, appending each to ``out``; return the row count."""
    rows = 0
    writer = None
    try:
        columns = getattr(scorer, "input_columns", None)
        for i, batch in enumerate(read_batches(input_path, batch_size, columns)):
            # the signature's columns only: pyfunc would drop the others itself, with a warning
            # on every batch (ids, targets); the Spark engine passes the same columns
            taken = [c.name for c in columns if c.name in batch.columns] if columns else None
            predictions = scorer.predict_frame(batch[taken] if taken else batch)
            result = pd.concat([batch, predictions_frame(predictions, batch.index)], axis=1)
            if out_kind == "csv":
                result.to_csv(out, mode="w" if i == 0 else "a", header=i == 0, index=False)
            else:
                import pyarrow as pa
                import pyarrow.parquet as pq

                table = pa.Table.from_pandas(result, preserve_index=False)
                if writer is None:
                    writer = pq.ParquetWriter(out, table.schema)
                writer.write_table(table)
            rows += len(batch)
            if progress is not None:
                progress(rows)
    finally:
        if writer is not None:
            writer.close()
    return rows
