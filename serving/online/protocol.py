"""The MLflow scoring protocol, parsed fast: request bodies to DataFrames, predictions to JSON.

The JSON request formats are those of ``mlflow models serve``: ``dataframe_split``,
``dataframe_records``, ``instances`` and ``inputs`` (exactly one per request, plus optional
``params``); ``text/csv`` and Parquet bodies are DataFrames as ``DataFrame.to_csv`` /
``to_parquet`` write them.

The fast path (:func:`parse_frame`) takes a request only when it can prove that pyfunc would
hand the model the same input: anything else raises :class:`Handoff`, and ``mlflow.pyfunc``
answers it exactly as ``mlflow models serve`` does (see :mod:`serving.online.model`).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import orjson
import pandas as pd

CONTENT_TYPE_JSON = "application/json"
CONTENT_TYPE_CSV = "text/csv"
CONTENT_TYPE_PARQUET = "application/vnd.apache.parquet"
CONTENT_TYPES = (CONTENT_TYPE_JSON, CONTENT_TYPE_CSV, CONTENT_TYPE_PARQUET)
FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")

# MLflow column types the fast path checks itself, and the dtype pyfunc would hand the model.
_DTYPES = {
    "double": np.float64,
    "float": np.float32,
    "long": np.int64,
    "integer": np.int32,
    "boolean": np.bool_,
    "string": object,
}
_NUMERIC = {"double", "float"}
_INTEGER = {"long", "integer"}


class RequestError(Exception):
    """A request the server refuses: HTTP ``status`` and a one-line ``message`` for the client."""

    def __init__(self, status: int, message: str, error_code: str = "BAD_REQUEST"):
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code

    def to_json(self) -> bytes:
        """The body MLflow uses for errors: ``{"error_code": ..., "message": ...}``."""
        return orjson.dumps({"error_code": self.error_code, "message": self.message})


@dataclass(frozen=True)
class Column:
    """One input column of a model signature: its name and MLflow type name."""

    name: str
    type: str
    required: bool = True


def columns_from_schema(schema) -> list[Column] | None:
    """The signature's columns when the fast path can check them itself, else ``None``.

    The fast path takes column-based signatures whose columns are all named and of a scalar
    type (double, float, long, integer, boolean, string). An optional column left out of a
    request is handed to pyfunc.
    """
    if schema is None or schema.is_tensor_spec() or not schema.has_input_names():
        return None
    cols = []
    for spec in schema.inputs:
        type_name = getattr(getattr(spec, "type", None), "name", None)
        if type_name not in _DTYPES:
            return None
        cols.append(Column(spec.name, type_name, bool(getattr(spec, "required", True))))
    return cols


def split_content_type(header: str | None) -> str:
    """The MIME type of a ``Content-Type`` header; a missing or unsupported one is a 415.

    Accepted exactly as ``mlflow models serve`` accepts it, so both answer alike: the type is
    matched as written, ``charset`` must be ``utf-8`` (any case), any other parameter is refused.
    """
    if not header:
        raise RequestError(
            415,
            f"missing Content-Type header; send one of {', '.join(CONTENT_TYPES)}",
            "UNSUPPORTED_MEDIA_TYPE",
        )
    mime, *params = (part.strip() for part in header.split(";"))
    if mime not in CONTENT_TYPES:
        raise RequestError(
            415,
            f"unsupported Content-Type {header!r}; send one of {', '.join(CONTENT_TYPES)}",
            "UNSUPPORTED_MEDIA_TYPE",
        )
    for param in params:
        key, _, value = param.partition("=")
        if key != "charset":
            raise RequestError(
                415,
                f"unsupported Content-Type parameter {key!r} in {header!r}; only charset=utf-8",
                "UNSUPPORTED_MEDIA_TYPE",
            )
        if value.lower() != "utf-8":
            raise RequestError(
                415, "the scoring server only supports UTF-8", "UNSUPPORTED_MEDIA_TYPE"
            )
    return mime


class Handoff(RequestError):
    """The fast path cannot prove it would answer this request as pyfunc does: pyfunc answers it.

    ``error`` is the fast path's own account of what is wrong with the request, when it found
    something (a clearer message than pyfunc's, used if pyfunc refuses the request too).
    """

    def __init__(self, reason: str, error: RequestError | None = None):
        super().__init__(400, error.message if error is not None else reason)
        self.reason = reason
        self.error = error


def parse_frame(
    body: bytes, mime: str, columns: list[Column], as_array: bool = False
) -> pd.DataFrame | np.ndarray:
    """Parse a request body into exactly the input the model's pyfunc would receive.

    The fast path only takes what it can prove pyfunc would type the same way: exactly the
    signature's columns, no missing value, every value of its column's own JSON type. Anything
    else (nulls, NaN, numeric strings, booleans for numbers, integers for doubles, extra
    columns, ``params``, unknown keys) raises :class:`Handoff` and pyfunc answers, as
    ``mlflow models serve`` would.

    Args:
        body: the request body.
        mime: its MIME type (see :func:`split_content_type`).
        columns: the signature's columns.
        as_array: return the values as one 2-D array in signature order instead (the fast
            path for estimators that take arrays; only for single-type numeric signatures).

    Raises:
        Handoff: pyfunc must answer; ``error`` says what the fast path found wrong, if anything.
    """
    try:
        if mime == CONTENT_TYPE_JSON:
            parsed = _parse_json(body, columns)
            if isinstance(parsed, np.ndarray):
                if as_array:
                    return parsed
                return pd.DataFrame(parsed, columns=[c.name for c in columns])
            return parsed.to_numpy() if as_array else parsed
        if mime == CONTENT_TYPE_CSV:
            frame = read_csv_body(body, columns)
        else:
            try:
                frame = pd.read_parquet(io.BytesIO(body))
            except Exception as exc:  # pyarrow raises many kinds; all mean "not a table"
                raise RequestError(400, f"malformed Parquet body: {_one_line(exc)}") from None
        frame = _exact_frame(frame, columns)
        return frame.to_numpy() if as_array else frame
    except Handoff:
        raise
    except RequestError as exc:
        raise Handoff(exc.message, exc) from None
    except Exception as exc:  # anything unforeseen: pyfunc decides, never a 500 from here
        raise Handoff(f"fast path: {type(exc).__name__}") from None


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def check_csv_fields(body: bytes | str) -> None:
    """Refuse a CSV body whose rows do not all have as many fields as its header (400).

    pandas takes a first data row with one field more than the header as an index column
    (every value shifted by one column) and pads short rows with nulls; neither is what the
    client meant. Blank lines are skipped, as pandas skips them.
    """
    import csv

    text = body.decode("utf-8") if isinstance(body, bytes) else body
    reader = csv.reader(io.StringIO(text))
    width = None
    for fields in reader:
        if not fields:
            continue
        if width is None:
            width = len(fields)
            continue
        if len(fields) != width:
            raise RequestError(
                400,
                f"CSV row {reader.line_num - 1} (line {reader.line_num}) has {len(fields)} "
                f"fields; the header has {width}",
            )


def read_csv_body(body: bytes, columns: list[Column] | None) -> pd.DataFrame:
    """A CSV body as ``mlflow models serve`` reads it (signature dtypes), rows checked first."""
    try:
        check_csv_fields(body)
    except UnicodeDecodeError:
        raise RequestError(400, "the CSV body is not valid UTF-8") from None
    except Exception as exc:  # csv.Error: e.g. a NUL byte
        raise RequestError(400, f"malformed CSV body: {_one_line(exc)}") from None
    dtypes = None
    if columns:
        dtypes = {c.name: _DTYPES[c.type] for c in columns}
    try:
        return pd.read_csv(io.BytesIO(body), dtype=dtypes)
    except Exception as exc:  # pandas raises many kinds; all mean "not this table"
        located = _locate_csv_value(body, columns) if columns else None
        raise (located or RequestError(400, f"malformed CSV body: {_one_line(exc)}")) from None


def _locate_csv_value(body: bytes, columns: list[Column]) -> RequestError | None:
    """The first CSV value (column, row, value) that cannot be read as its column's type."""
    try:
        text = pd.read_csv(io.BytesIO(body), dtype=str, keep_default_na=True)
    except Exception:
        return None
    parse = {"double": float, "float": float, "long": int, "integer": int}
    for c in columns:
        conv = parse.get(c.type)
        if conv is None or c.name not in text.columns:
            continue
        for i, v in enumerate(text[c.name].tolist()):
            if not isinstance(v, str):
                continue
            try:
                conv(v)
            except ValueError:
                return RequestError(
                    400, f"column {c.name!r} row {i}: expected {c.type}, got str {v!r}"[:300]
                )
    return None


def _exact_frame(frame: pd.DataFrame, columns: list[Column]) -> pd.DataFrame:
    """The frame in signature order when its columns and dtypes are exactly the signature's."""
    names = list(frame.columns)
    if not all(isinstance(n, str) for n in names):
        raise Handoff("column names that are not strings")
    _check_names(names, columns)
    if len(frame) == 0:
        raise RequestError(400, "the input has no rows")
    out = {}
    for c in columns:
        values = frame[c.name]
        if values.isna().any():
            row = int(np.flatnonzero(values.isna().to_numpy())[0])
            raise Handoff(f"column {c.name!r} row {row}: missing value")
        arr = values.to_numpy()
        kind = arr.dtype.kind
        if c.type == "double" and kind == "f" and arr.dtype == np.float64:
            out[c.name] = arr
        elif c.type == "long" and arr.dtype == np.int64:
            out[c.name] = arr
        elif c.type == "boolean" and kind == "b":
            out[c.name] = arr
        elif c.type == "string" and kind == "O" and all(type(v) is str for v in arr):
            out[c.name] = arr
        else:
            raise Handoff(f"column {c.name!r}: dtype {arr.dtype}")
    return _frame(out)


def _parse_json(body: bytes, columns: list[Column]) -> pd.DataFrame | np.ndarray:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        # NaN / Infinity are not JSON, but Python's reader (pyfunc's) takes them.
        raise RequestError(400, f"malformed JSON: {_one_line(exc)}") from None
    if not isinstance(doc, dict):
        raise RequestError(400, f"the body must be a JSON object with one of {', '.join(FORMATS)}")
    keys = [k for k in doc if k in FORMATS]
    if len(keys) != 1:
        raise RequestError(
            400,
            f"the body must be a JSON object with exactly one of {', '.join(FORMATS)} "
            f"(and optionally params); got keys {list(doc)}",
        )
    if len(doc) != 1:
        raise Handoff("params or other keys beside the input")  # pyfunc passes or ignores them
    key = keys[0]
    data = doc[key]
    # numpy silently turns true/false into 1/0 in a numeric array; look for them only when the
    # body can hold one, so plain numeric bodies pay nothing.
    strict = b"true" in body or b"false" in body
    if key == "dataframe_split":
        return _from_split(data, columns, strict)
    if key == "dataframe_records":
        return _from_records(data, columns, key, strict)
    # instances / inputs (TF-serving style): records, rows in signature order, or columns.
    if isinstance(data, dict):
        return _from_columnar(data, columns, key)
    if isinstance(data, list) and data and isinstance(data[0], dict):
        return _from_records(data, columns, key, strict)
    if isinstance(data, list) and data and isinstance(data[0], list):
        if len(columns) > 1 and any(type(v) is list for v in data[0]):
            raise RequestError(400, f"{key}: row 0 holds a list where a value was expected")
        raise Handoff("rows without column names")  # pyfunc maps them by position
    raise RequestError(
        400, f"{key} must be a list of records, a list of rows or an object of columns"
    )


def _check_names(given, columns: list[Column]) -> None:
    if not all(isinstance(n, str) for n in given):
        bad = next(n for n in given if not isinstance(n, str))
        raise RequestError(400, f"column names must be strings; got {bad!r}"[:200])
    expected = [c.name for c in columns]
    given_set, expected_set = set(given), set(expected)
    if len(given_set) != len(given):
        raise RequestError(400, "duplicate column names in the request")
    missing = [c.name for c in columns if c.required and c.name not in given_set]
    if missing:
        raise RequestError(
            400, f"input does not match the model signature: missing columns {missing}"
        )
    if given_set != expected_set:
        raise Handoff("extra or left-out optional columns")  # pyfunc ignores / allows them


def _from_split(data, columns: list[Column], strict: bool = True) -> pd.DataFrame | np.ndarray:
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise RequestError(
            400, 'dataframe_split must be an object {"columns": [...], "data": [...]}'
        )
    names = data.get("columns")
    if names is None or set(data) != {"columns", "data"}:
        raise Handoff("split without columns, or with an index")
    if not isinstance(names, list):
        raise RequestError(400, "dataframe_split.columns must be a list of column names")
    _check_names(names, columns)
    return _from_rows(data["data"], names, columns, strict)


def _from_records(
    data, columns: list[Column], key: str, strict: bool = True
) -> pd.DataFrame | np.ndarray:
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise RequestError(400, f"{key} must be a list of objects (one per row)")
    if not data:
        raise RequestError(400, f"{key} is empty")
    names = [c.name for c in columns]
    first = data[0]
    _check_names(list(first), columns)
    for i, record in enumerate(data):
        if record.keys() != first.keys():
            try:
                _check_names(list(record), columns)
            except RequestError as exc:
                raise RequestError(400, f"row {i}: {exc.message}") from None
            raise Handoff(f"row {i}: other columns than row 0")
    return _from_rows([[r[n] for n in names] for r in data], names, columns, strict)


def _from_columnar(data: dict, columns: list[Column], key: str) -> pd.DataFrame:
    _check_names(list(data), columns)
    values = list(data.values())
    if not all(isinstance(v, list) for v in values):
        raise Handoff(f"{key}: columns given as scalars")
    lengths = {len(v) for v in values}
    if len(lengths) != 1:
        raise RequestError(400, f"{key}: every column must be a list of the same length")
    if 0 in lengths:
        raise RequestError(400, "the input has no rows")
    by_name = dict(zip(data, values, strict=True))
    return _frame({c.name: _column(c, by_name[c.name], True) for c in columns})


def _from_rows(
    rows, names: list, columns: list[Column], strict: bool = True
) -> pd.DataFrame | np.ndarray:
    """Rows of values in ``names`` order, checked and typed.

    When all of the signature's columns are doubles (or all longs) the result is one 2-D array
    in signature order (no DataFrame is built); otherwise a DataFrame.
    """
    if not isinstance(rows, list) or not rows:
        raise RequestError(400, "the input has no rows")
    width = len(names)
    kinds = {c.type for c in columns}
    has_bool = strict and any(type(v) is bool for row in rows if isinstance(row, list) for v in row)
    if len(kinds) == 1 and kinds <= {"double", "long"} and not has_bool:
        # Common case (all columns one numeric type): one 2-D array, one block, no per-value work.
        try:
            arr = np.array(rows)
        except (ValueError, TypeError, OverflowError):
            arr = None  # ragged rows; reported below
        if arr is not None and arr.ndim == 2 and arr.shape[1] == width:
            target = columns[0].type
            # doubles: float arrays only (integers alone are cast by pyfunc's own rules)
            if arr.dtype == (np.float64 if target == "double" else np.int64):
                order = [c.name for c in columns]
                if names != order:
                    arr = arr[:, [names.index(n) for n in order]]
                return arr
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != width:
            raise RequestError(
                400,
                f"row {i} has {len(row) if isinstance(row, list) else 'no'} "
                f"values; expected {width} (one per column)",
            )
    by_name = dict(zip(names, zip(*rows, strict=True), strict=True))
    return _frame({c.name: _column(c, list(by_name[c.name])) for c in columns})


def _frame(cols: dict) -> pd.DataFrame:
    return pd.DataFrame(cols, copy=False)


def _column(col: Column, values: list, rows_known: bool = False) -> np.ndarray:
    """One column's values typed as pyfunc types them, when every value has the column's type.

    Raises:
        RequestError: a value that cannot be this column's (a list, an object).
        Handoff: values pyfunc may convert (nulls, numeric strings, booleans, integers for
            doubles): pyfunc decides.
    """
    t = col.type
    for i, v in enumerate(values):
        if isinstance(v, list | dict):
            raise RequestError(
                400, f"column {col.name!r} row {i}: expected one {t} value, got {_show(v)}"
            )
    if t == "string":
        if all(type(v) is str for v in values):
            return np.array(values, dtype=object)
    elif t == "boolean":
        if all(type(v) is bool for v in values):
            return np.array(values, dtype=np.bool_)
    elif t in ("double", "long"):
        if not any(type(v) is bool for v in values):
            try:
                arr = np.array(values)
            except (ValueError, TypeError, OverflowError):
                arr = None
            if arr is not None and arr.ndim == 1:
                if arr.dtype == (np.float64 if t == "double" else np.int64):
                    return arr
                if t in _NUMERIC | _INTEGER and arr.dtype.kind in "US":
                    i, v = next((i, v) for i, v in enumerate(values) if type(v) is str)
                    if not _numeric_text(v):
                        raise RequestError(
                            400, f"column {col.name!r} row {i}: expected {t}, got {_show(v)}"
                        )
    raise Handoff(f"column {col.name!r}: values pyfunc may convert")


def _numeric_text(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


def _show(v) -> str:
    return f"{type(v).__name__} {orjson.dumps(v).decode()}"[:80]


def check_frame(
    frame: pd.DataFrame, columns: list[Column], allow_extra: bool = False, values: bool = True
) -> pd.DataFrame:
    """Check a DataFrame (batch file) against the signature; return its columns in order.

    Used for the message when pyfunc refuses a batch: it names the first missing column, or
    the first value (column, row, value) that is not of its column's type. Nulls are allowed
    (the model's imputers take them), as are integers in float columns.

    Args:
        frame: the input.
        columns: the signature's columns.
        allow_extra: keep quiet about columns the model does not take (batch scoring passes
            ids and targets through); they are left out of the result.
        values: check the values too, not only the column names.

    Raises:
        RequestError: a missing (or, without ``allow_extra``, an extra) column, or a value.
    """
    names = [str(c) for c in frame.columns]
    frame = frame.set_axis(names, axis=1)
    expected = [c.name for c in columns]
    missing = [c.name for c in columns if c.required and c.name not in names]
    extra = [] if allow_extra else [n for n in names if n not in expected]
    if missing or extra:
        parts = [f"missing columns {missing}"] if missing else []
        parts += [f"unexpected columns {extra}"] if extra else []
        raise RequestError(400, f"input does not match the model signature: {'; '.join(parts)}")
    present = [n for n in expected if n in names]
    if values:
        for c in columns:
            if c.name in names:
                _check_values(c, frame[c.name])
    return frame[present]


_VALUE_TYPES = {
    "double": (int, float, np.integer, np.floating),
    "float": (int, float, np.integer, np.floating),
    "long": (int, np.integer),
    "integer": (int, np.integer),
    "boolean": (bool, np.bool_),
    "string": (str,),
}


def _check_values(col: Column, series: pd.Series) -> None:
    """Raise a :class:`RequestError` naming the first value that is not of the column's type."""
    kind = series.dtype.kind
    if col.type in _NUMERIC and kind in "fiu":
        return
    if col.type in _INTEGER and kind in "iu":
        return
    if col.type == "boolean" and kind == "b":
        return
    allowed = _VALUE_TYPES.get(col.type)
    if allowed is None:
        return
    values = list(zip(series.index, series.to_numpy(), strict=True))
    if col.type in _NUMERIC | _INTEGER:
        # a value that is no number at all first (what made the column text), then the rest
        values.sort(key=lambda iv: not (isinstance(iv[1], str) and not _numeric_text(iv[1])))
    for i, v in values:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            continue
        ok = isinstance(v, allowed) and not (
            col.type != "boolean" and isinstance(v, bool | np.bool_)
        )
        if col.type in _INTEGER and isinstance(v, float | np.floating) and float(v).is_integer():
            ok = True
        if not ok:
            shown = f"{type(v).__name__} {v!r}"[:80]
            where = f" (row {i})" if len(series) > 1 else ""
            raise RequestError(
                400, f"column {col.name!r} expects {col.type} values, got {shown}{where}"
            )


def predictions_json(predictions) -> bytes:
    """``{"predictions": ...}`` exactly as ``mlflow models serve`` shapes it, serialized fast."""
    if isinstance(predictions, np.ndarray) and predictions.dtype.kind in "biuf":
        return orjson.dumps(
            {"predictions": np.ascontiguousarray(predictions)}, option=orjson.OPT_SERIALIZE_NUMPY
        )
    from mlflow.utils.proto_json_utils import _get_jsonable_obj

    obj = _get_jsonable_obj(predictions, pandas_orient="records")
    return orjson.dumps(
        {"predictions": obj},
        option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS,
        default=_json_default,
    )


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, pd.Timestamp):
        return obj.isoformat()
    return str(obj)
