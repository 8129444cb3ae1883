"""The MLflow scoring protocol, parsed fast: request bodies to DataFrames, predictions to JSON.

The JSON request formats are those of ``mlflow models serve``: ``dataframe_split``,
``dataframe_records``, ``instances`` and ``inputs`` (exactly one per request, plus optional
``params``); ``text/csv`` and Parquet bodies are DataFrames as ``DataFrame.to_csv`` /
``to_parquet`` write them. Inputs are checked against a column signature: a missing, extra or
retyped column is a :class:`RequestError` (HTTP 400) naming the column.
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


def columns_from_schema(schema) -> list[Column] | None:
    """The signature's columns when the fast path can check them itself, else ``None``.

    The fast path takes column-based signatures whose columns are all named, required and of
    a scalar type (double, float, long, integer, boolean, string).
    """
    if schema is None or schema.is_tensor_spec() or not schema.has_input_names():
        return None
    cols = []
    for spec in schema.inputs:
        type_name = getattr(getattr(spec, "type", None), "name", None)
        if type_name not in _DTYPES or not getattr(spec, "required", True):
            return None
        cols.append(Column(spec.name, type_name))
    return cols


def split_content_type(header: str | None) -> str:
    """The MIME type of a ``Content-Type`` header; refuses a missing or unsupported one (415)."""
    if not header:
        raise RequestError(
            415,
            f"missing Content-Type header; send one of {', '.join(CONTENT_TYPES)}",
            "UNSUPPORTED_MEDIA_TYPE",
        )
    mime, _, params = header.partition(";")
    mime = mime.strip().lower()
    if mime not in CONTENT_TYPES:
        raise RequestError(
            415,
            f"unsupported Content-Type {header!r}; send one of {', '.join(CONTENT_TYPES)}",
            "UNSUPPORTED_MEDIA_TYPE",
        )
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            raise RequestError(
                415, "the scoring server only supports UTF-8", "UNSUPPORTED_MEDIA_TYPE"
            )
    return mime


def parse_frame(
    body: bytes, mime: str, columns: list[Column], as_array: bool = False
) -> pd.DataFrame | np.ndarray:
    """Parse a request body into the DataFrame the model's pyfunc would receive.

    Args:
        body: the request body.
        mime: its MIME type (see :func:`split_content_type`).
        columns: the signature's columns.
        as_array: return the values as one 2-D array in signature order instead (the fast
            path for estimators that take arrays; only for single-type numeric signatures).

    Raises:
        RequestError: malformed body, or columns that do not match the signature.
    """
    if mime == CONTENT_TYPE_JSON:
        parsed = _parse_json(body, columns)
        if isinstance(parsed, np.ndarray):
            return parsed if as_array else pd.DataFrame(parsed, columns=[c.name for c in columns])
        return parsed.to_numpy() if as_array else parsed
    try:
        if mime == CONTENT_TYPE_CSV:
            frame = pd.read_csv(io.BytesIO(body))
        else:
            frame = pd.read_parquet(io.BytesIO(body))
    except Exception as exc:  # pandas raises many kinds; all mean "not a table"
        kind = "CSV" if mime == CONTENT_TYPE_CSV else "Parquet"
        raise RequestError(400, f"malformed {kind} body: {_one_line(exc)}") from None
    frame = check_frame(frame, columns)
    return frame.to_numpy() if as_array else frame


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def _parse_json(body: bytes, columns: list[Column]) -> pd.DataFrame | np.ndarray:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestError(400, f"malformed JSON: {_one_line(exc)}") from None
    if not isinstance(doc, dict):
        raise RequestError(400, f"the body must be a JSON object with one of {', '.join(FORMATS)}")
    keys = [k for k in doc if k in FORMATS]
    unknown = [k for k in doc if k not in FORMATS and k != "params"]
    if len(keys) != 1 or unknown:
        raise RequestError(
            400,
            f"the body must be a JSON object with exactly one of {', '.join(FORMATS)} "
            f"(and optionally params); got keys {list(doc)}",
        )
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
        return _from_rows(data, [c.name for c in columns], columns, strict)
    raise RequestError(
        400, f"{key} must be a list of records, a list of rows or an object of columns"
    )


def _check_names(given, columns: list[Column]) -> None:
    expected = [c.name for c in columns]
    given_set, expected_set = set(given), set(expected)
    if len(given_set) != len(given):
        raise RequestError(400, "duplicate column names in the request")
    missing = [c for c in expected if c not in given_set]
    extra = [c for c in given if c not in expected_set]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing columns {missing}")
        if extra:
            parts.append(f"unexpected columns {extra}")
        raise RequestError(400, f"input does not match the model signature: {'; '.join(parts)}")


def _from_split(data, columns: list[Column], strict: bool = True) -> pd.DataFrame | np.ndarray:
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise RequestError(
            400, 'dataframe_split must be an object {"columns": [...], "data": [...]}'
        )
    names = data.get("columns")
    if names is None:
        names = [c.name for c in columns]
    elif not isinstance(names, list):
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
    return _from_rows([[r[n] for n in names] for r in data], names, columns, strict)


def _from_columnar(data: dict, columns: list[Column], key: str) -> pd.DataFrame:
    _check_names(list(data), columns)
    values = list(data.values())
    if all(not isinstance(v, list) for v in values):
        values = [[v] for v in values]  # one row given as scalars
    lengths = {len(v) if isinstance(v, list) else -1 for v in values}
    if len(lengths) != 1 or -1 in lengths:
        raise RequestError(400, f"{key}: every column must be a list of the same length")
    by_name = dict(zip(data, values, strict=True))
    return _frame({c.name: _column(c, by_name[c.name]) for c in columns})


def _from_rows(
    rows, names: list, columns: list[Column], strict: bool = True
) -> pd.DataFrame | np.ndarray:
    """Rows of values in ``names`` order, checked and typed.

    When all of the signature's columns are of one numeric type the result is one 2-D array in
    signature order (no DataFrame is built); otherwise a DataFrame.
    """
    if not isinstance(rows, list) or not rows:
        raise RequestError(400, "the input has no rows")
    width = len(names)
    if len(names) != len(columns):
        _check_names(names, columns)
    kinds = {c.type for c in columns}
    has_bool = strict and any(type(v) is bool for row in rows if isinstance(row, list) for v in row)
    if len(kinds) == 1 and kinds <= (_NUMERIC | _INTEGER) and not has_bool:
        # Common case (all columns one numeric type): one 2-D array, one block, no per-value work.
        try:
            arr = np.array(rows)
        except ValueError:
            arr = None  # ragged rows; reported below
        if arr is not None and arr.ndim == 2 and arr.shape[1] == width:
            target = columns[0].type
            ok = arr.dtype.kind in ("iu" if target in _INTEGER else "fiu")
            if ok:
                arr = arr.astype(_DTYPES[target], copy=False)
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


def _column(col: Column, values) -> np.ndarray:
    """Check one column's values against its MLflow type; return them as pyfunc would type them."""
    t = col.type
    if t != "boolean" and not isinstance(values, np.ndarray):
        if any(type(v) is bool for v in values):  # numpy would take true/false as 1/0
            raise RequestError(400, f"column {col.name!r} expects {t} values, got boolean")
    arr = values if isinstance(values, np.ndarray) else np.array(values)
    kind = arr.dtype.kind
    if t in _NUMERIC:
        if kind in "fiu":
            return arr.astype(_DTYPES[t], copy=False)
        if kind == "O" and all(v is None or _is_number(v) for v in arr):
            return np.array([np.nan if v is None else v for v in arr], dtype=_DTYPES[t])
    elif t in _INTEGER:
        if kind in "iu":
            return arr.astype(_DTYPES[t], copy=False)
    elif t == "boolean":
        if kind == "b":
            return arr
    elif t == "string":
        if kind in "US":
            return arr.astype(object)
        if kind == "O" and all(isinstance(v, str) for v in arr):
            return arr
    raise RequestError(400, f"column {col.name!r} expects {t} values, got {_describe(arr)}")


def _is_number(v) -> bool:
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(
        v, bool | np.bool_
    )


def _describe(arr: np.ndarray) -> str:
    kind = arr.dtype.kind
    if kind == "O":
        bad = next((v for v in arr if not _is_number(v)), None)
        return f"{type(bad).__name__} {bad!r}"[:80]
    return {
        "f": "double",
        "i": "long",
        "u": "long",
        "b": "boolean",
        "U": "string",
        "S": "string",
        "M": "datetime",
    }.get(kind, str(arr.dtype))


def check_frame(
    frame: pd.DataFrame, columns: list[Column], allow_extra: bool = False
) -> pd.DataFrame:
    """Check a DataFrame (CSV, Parquet, batch file) against the signature and type it as pyfunc.

    Args:
        frame: the input.
        columns: the signature's columns.
        allow_extra: keep quiet about columns the model does not take (batch scoring passes
            ids and targets through); they are left out of the result.
    """
    names = [str(c) for c in frame.columns]
    if allow_extra:
        wanted = {c.name for c in columns}
        names = [n for n in names if n in wanted]
    _check_names(names, columns)
    frame = frame.set_axis([str(c) for c in frame.columns], axis=1)
    return _frame({c.name: _column(c, frame[c.name].to_numpy()) for c in columns})


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
