"""The Open Inference Protocol (KServe V2) over REST, on the scoring server's port.

Routes: ``GET /v2`` (server metadata), ``GET /v2/health/live`` and ``/v2/health/ready``,
``GET /v2/models/{name}[/versions/{v}]`` (model metadata), ``GET
/v2/models/{name}[/versions/{v}]/ready``, ``POST /v2/models/{name}[/versions/{v}]/infer``.
``{name}`` is the registered model's name; the version being served answers, any other name or
version is the protocol's not-found (404). Errors are the protocol's body, ``{"error": "..."}``.

A request's tensors become what pyfunc is handed as MLServer's MLflow runtime hands it: for a
column signature one DataFrame column per named input (``content_type: pd``), typed by the
input's ``datatype``; for a tensor signature the tensor (or a dict of named tensors). Columns
are scored by :meth:`serving.online.model.Scorer.predict_frame`, so the answer is pyfunc's.
The metadata comes from the MLflow signature, with MLServer's mapping of MLflow types to V2
datatypes (``double`` is ``FP64``, ``long`` is ``INT64``, ``string`` is ``BYTES`` ...).

The binary tensor extension (``Inference-Header-Content-Length``) is read for inputs, so
``tritonclient``'s default requests work; outputs are always JSON.
"""

from __future__ import annotations

import logging
import math
import uuid
from dataclasses import dataclass
from importlib import metadata as _metadata

import numpy as np
import orjson
import pandas as pd

from serving.online import metrics as _metrics
from serving.online.protocol import RequestError

_logger = logging.getLogger(__name__)

SERVER_NAME = "mlops-registry"
PLATFORM = "mlflow"
# Header of the binary tensor extension: the length of the JSON part before the raw tensors.
BINARY_HEADER = "inference-header-content-length"

# V2 datatype -> numpy dtype (BYTES: Python strings, as an object array).
DATATYPES = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
# MLflow column type -> (V2 datatype, content type), as mlserver-mlflow maps them.
_COLUMN_TYPES = {
    "boolean": ("BOOL", "np"),
    "integer": ("INT32", "np"),
    "long": ("INT64", "np"),
    "float": ("FP32", "np"),
    "double": ("FP64", "np"),
    "string": ("BYTES", "str"),
    "binary": ("BYTES", "base64"),
    "datetime": ("BYTES", "datetime"),
}


#: What a sampled V2 inference request carries to ``--shadow`` where an /invocations sample
#: carries its content type: ``v2-infer``, then ``;`` and the request's
#: Inference-Header-Content-Length when it sent binary tensors.
SHADOW_SAMPLE = "v2-infer"


def shadow_sample_type(header_length: str | None) -> str:
    """The shadow sample type of a V2 inference request (see :data:`SHADOW_SAMPLE`)."""
    return f"{SHADOW_SAMPLE};{header_length}" if header_length else SHADOW_SAMPLE


class V2Error(RequestError):
    """A request refused on a V2 route: its body is the protocol's ``{"error": message}``."""

    def to_json(self) -> bytes:
        """The protocol's error body."""
        return orjson.dumps({"error": self.message})


def error_body(exc: RequestError) -> bytes:
    """The V2 error body for any refusal (the pool's 503 and 504, a 408, a 413 alike)."""
    return orjson.dumps({"error": exc.message})


def is_v2(path: str) -> bool:
    """Whether ``path`` is one of the protocol's routes (or under its prefix)."""
    return path == "/v2" or path.startswith("/v2/")


@dataclass(frozen=True)
class Route:
    """What a V2 path asks for: ``kind`` is server, live, ready, model, model_ready or infer."""

    kind: str
    method: str


def route(method: str, path: str, name: str, version: str | None) -> Route:
    """The V2 route ``path`` names, for the model ``name`` at ``version`` being served.

    Raises:
        V2Error: 404 for another model, another version or no such route; 405 for a wrong
            method.
    """
    parts = path.rstrip("/").split("/")[2:]  # after "", "v2"
    if not parts:
        kind = "server"
    elif parts == ["health", "live"]:
        kind = "live"
    elif parts == ["health", "ready"]:
        kind = "ready"
    elif parts[0] == "models" and len(parts) >= 2:
        asked, rest = parts[1], parts[2:]
        asked_version = None
        if rest[:1] == ["versions"]:
            if len(rest) < 2:
                raise _no_route(path)
            asked_version, rest = rest[1], rest[2:]
        if rest == []:
            kind = "model"
        elif rest == ["ready"]:
            kind = "model_ready"
        elif rest == ["infer"]:
            kind = "infer"
        else:
            raise _no_route(path)
        if asked != name:
            raise V2Error(404, f"Model {asked} not found", "RESOURCE_DOES_NOT_EXIST")
        if asked_version is not None and asked_version != version:
            raise V2Error(
                404,
                f"Model {asked} with version {asked_version} not found; "
                f"this server serves version {version}",
                "RESOURCE_DOES_NOT_EXIST",
            )
    else:
        raise _no_route(path)
    wanted = "POST" if kind == "infer" else "GET"
    if method != wanted:
        raise V2Error(405, f"use {wanted} {path}", "METHOD_NOT_ALLOWED")
    return Route(kind, method)


def _no_route(path: str) -> V2Error:
    return V2Error(
        404,
        f"no route {path}; the V2 routes are /v2, /v2/health/live, /v2/health/ready, "
        "/v2/models/NAME[/versions/V][/ready|/infer]",
        "ENDPOINT_NOT_FOUND",
    )


def server_metadata() -> bytes:
    """``GET /v2``: the server's name, version and the protocol extensions it speaks."""
    try:
        version = _metadata.version(SERVER_NAME)
    except _metadata.PackageNotFoundError:  # run from a checkout without installing
        version = "0"
    return orjson.dumps(
        {"name": SERVER_NAME, "version": version, "extensions": ["binary_tensor_data"]}
    )


def health(kind: str, name: str) -> bytes:
    """The protocol's health body for ``kind`` (live, ready or model_ready).

    ``{"live": true}``, ``{"ready": true}`` and a model's ``{"name": ..., "ready": true}``: the
    status says it too, and KServe's SDK reads the body.
    """
    if kind == "live":
        return orjson.dumps({"live": True})
    if kind == "ready":
        return orjson.dumps({"ready": True})
    return orjson.dumps({"name": name, "ready": True})


def model_metadata(pyfunc_model, name: str, version: str | None) -> bytes:
    """``GET /v2/models/NAME``: the signature's inputs and outputs as V2 tensor metadata."""
    meta = getattr(pyfunc_model, "metadata", None)
    signature = getattr(meta, "signature", None)
    inputs = outputs = []
    content_type = "pd"
    if signature is not None:
        inputs = _tensors(signature.inputs, "input-")
        if signature.outputs is not None:
            outputs = _tensors(signature.outputs, "output-")
        if signature.inputs.is_tensor_spec():
            content_type = "dict" if signature.inputs.has_input_names() else "np"
    return orjson.dumps(
        {
            "name": name,
            "versions": [version] if version else [],
            "platform": PLATFORM,
            "inputs": inputs,
            "outputs": outputs,
            "parameters": {"content_type": content_type},
        }
    )


def _tensors(schema, prefix: str) -> list[dict]:
    out = []
    for i, spec in enumerate(schema.inputs):
        spec_name = getattr(spec, "name", None) or f"{prefix}{i}"
        if schema.is_tensor_spec():
            datatype, content, shape = _datatype(spec.type), "np", list(spec.shape)
        else:
            type_name = getattr(spec.type, "name", None)
            # arrays, objects, maps, any: JSON-encoded strings (MLServer's pd_json)
            datatype, content = _COLUMN_TYPES.get(type_name, ("BYTES", "pd_json"))
            shape = [-1, 1]
        out.append(
            {
                "name": spec_name,
                "datatype": datatype,
                "shape": shape,
                "parameters": {"content_type": content},
            }
        )
    return out


def _datatype(dtype) -> str:
    """The V2 datatype of a numpy dtype (strings and objects are BYTES)."""
    dtype = np.dtype(dtype)
    for name, known in DATATYPES.items():
        if known == dtype and name != "BYTES":
            return name
    return "BYTES"


# ---- inference ---------------------------------------------------------------------------


def infer(
    scorer,
    body: bytes,
    header_length: str | None,
    name: str,
    version: str | None,
    fast_only: bool = False,
) -> bytes | None:
    """``POST .../infer``: decode the tensors, predict as pyfunc, encode the outputs.

    The scorer's fast path predicts when it can prove pyfunc's answer, by the rule of
    ``/invocations``' fast path (exactly the signature's columns, each of its own type, no
    missing value); pyfunc predicts the rest.

    Args:
        scorer: the :class:`serving.online.model.Scorer` of the served model.
        body: the request body (JSON, or JSON then raw tensors with the binary extension).
        header_length: the ``Inference-Header-Content-Length`` header, if sent.
        name: the served model's registered name, named in the response.
        version: its version.
        fast_only: return None instead of predicting with pyfunc (for the event loop).

    Raises:
        V2Error: 400 for a request the protocol or the model refuses.
    """
    try:
        request, tail = _split_binary(body, header_length)
        request_id, inputs, wanted = _parse_request(request)
        arrays, pos = {}, 0
        for tensor in inputs:
            arrays[tensor["name"]], pos = _decode_input(tensor, tail, pos)
        predictions = _predict(scorer, arrays, fast_only)
        if predictions is _NOT_FAST:
            return None
        outputs = _encode_outputs(predictions, _output_names(scorer))
    except V2Error:
        raise
    except RequestError as exc:
        raise V2Error(exc.status, exc.message, exc.error_code) from exc
    if wanted is not None:
        produced = [o["name"] for o in outputs]
        unknown = [w for w in wanted if w not in produced]
        if unknown:
            raise V2Error(400, f"no output named {unknown[0]!r}; the outputs are {produced}")
        outputs = [o for o in outputs if o["name"] in wanted]
    return orjson.dumps(
        {
            "model_name": name,
            "model_version": version,
            "id": request_id,
            "parameters": {"content_type": "np"},
            "outputs": outputs,
        },
        option=orjson.OPT_SERIALIZE_NUMPY,
    )


def _split_binary(body: bytes, header_length: str | None) -> tuple[bytes, memoryview | None]:
    if header_length is None:
        return body, None
    if not header_length.isdigit() or int(header_length) > len(body):
        raise V2Error(
            400,
            f"Inference-Header-Content-Length {header_length!r} is not a length within the "
            f"body ({len(body)} bytes)",
        )
    n = int(header_length)
    return body[:n], memoryview(body)[n:]


def _parse_request(raw: bytes) -> tuple[str, list[dict], list[str] | None]:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise V2Error(400, f"malformed JSON: {' '.join(str(exc).split())[:200]}") from None
    if not isinstance(doc, dict):
        raise V2Error(400, 'the body must be a JSON object {"inputs": [...]}')
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise V2Error(400, '"inputs" must be a non-empty list of tensors')
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise V2Error(400, '"id" must be a string')
    seen = set()
    for i, tensor in enumerate(inputs):
        if not isinstance(tensor, dict):
            raise V2Error(400, f"input {i} must be an object with name, datatype, shape, data")
        tname = tensor.get("name")
        if not isinstance(tname, str) or not tname:
            raise V2Error(400, f"input {i} has no name")
        if tname in seen:
            raise V2Error(400, f"input {tname!r} given twice")
        seen.add(tname)
        if tensor.get("datatype") not in DATATYPES:
            raise V2Error(
                400,
                f"input {tname!r}: datatype {tensor.get('datatype')!r} is not one of "
                f"{', '.join(DATATYPES)}",
            )
        shape = tensor.get("shape")
        if (
            not isinstance(shape, list)
            or not shape
            or not all(type(d) is int and d >= 0 for d in shape)
        ):
            raise V2Error(400, f"input {tname!r}: shape must be a list of non-negative integers")
    wanted = None
    if doc.get("outputs") is not None:
        outs = doc["outputs"]
        if not isinstance(outs, list) or not all(
            isinstance(o, dict) and isinstance(o.get("name"), str) for o in outs
        ):
            raise V2Error(400, '"outputs" must be a list of objects with a name')
        wanted = [o["name"] for o in outs]
    return request_id or str(uuid.uuid4()), inputs, wanted


def _decode_input(tensor: dict, tail: memoryview | None, pos: int) -> tuple[np.ndarray, int]:
    """One input tensor as a numpy array of its datatype and shape.

    ``pos``: where its raw bytes start in the binary part, if it is sent binary; returned
    moved past them.
    """
    name, datatype, shape = tensor["name"], tensor["datatype"], tensor["shape"]
    count = math.prod(shape)
    params = tensor.get("parameters") or {}
    size = params.get("binary_data_size") if isinstance(params, dict) else None
    if size is not None:
        return _decode_binary(tensor, size, tail, pos, count), pos + size
    if "data" not in tensor:
        raise V2Error(400, f"input {name!r} has no data")
    values = _flatten(tensor["data"])
    if len(values) != count:
        raise V2Error(
            400, f"input {name!r}: shape {shape} holds {count} values; data has {len(values)}"
        )
    dtype = DATATYPES[datatype]
    if datatype == "BYTES":
        for v in values:
            if v is not None and not isinstance(v, str):
                raise V2Error(400, f"input {name!r}: BYTES data must be strings; got {_show(v)}")
        arr = np.empty(count, dtype=object)
        arr[:] = values
        return arr.reshape(shape), pos
    if datatype == "FP64" and all(type(v) is float for v in values):
        return np.array(values, dtype=dtype).reshape(shape), pos  # the common case, checked
    for v in values:
        if datatype == "BOOL":
            ok = type(v) is bool
        elif dtype.kind == "f":
            ok = v is None or (type(v) in (int, float))
        else:
            ok = type(v) is int
        if not ok:
            raise V2Error(400, f"input {name!r}: {datatype} data cannot hold {_show(v)}")
    if dtype.kind == "f":
        values = [math.nan if v is None else v for v in values]
    try:
        with np.errstate(over="raise"):
            arr = np.array(values, dtype=dtype)
    except (OverflowError, FloatingPointError, ValueError):
        raise V2Error(400, f"input {name!r}: a value out of {datatype}'s range") from None
    return arr.reshape(shape), pos


def _decode_binary(
    tensor: dict, size, tail: memoryview | None, offset: int, count: int
) -> np.ndarray:
    name, datatype, shape = tensor["name"], tensor["datatype"], tensor["shape"]
    if tail is None or type(size) is not int or size < 0:
        raise V2Error(400, f"input {name!r}: binary_data_size without binary data")
    raw = tail[offset : offset + size]
    if len(raw) != size:
        raise V2Error(400, f"input {name!r}: the body holds less binary data than declared")
    if datatype == "BYTES":
        values, pos = [], 0
        while pos < len(raw):
            n = int.from_bytes(raw[pos : pos + 4], "little")
            values.append(bytes(raw[pos + 4 : pos + 4 + n]).decode("utf-8", "replace"))
            pos += 4 + n
        arr = np.empty(len(values), dtype=object)
        arr[:] = values
    else:
        dtype = DATATYPES[datatype]
        if size != count * dtype.itemsize:
            raise V2Error(400, f"input {name!r}: {size} bytes is not {count} {datatype} values")
        arr = np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype)
    if arr.size != count:
        raise V2Error(400, f"input {name!r}: shape {shape} holds {count} values; got {arr.size}")
    return arr.reshape(shape)


def _flatten(data) -> list:
    """Row-major values of nested lists (the protocol allows both flat and nested data)."""
    if not isinstance(data, list):
        return [data]
    if not any(isinstance(v, list) for v in data):
        return data
    out: list = []
    stack = [iter(data)]
    while stack:
        for v in stack[-1]:
            if isinstance(v, list):
                stack.append(iter(v))
                break
            out.append(v)
        else:
            stack.pop()
    return out


def _show(v) -> str:
    return f"{type(v).__name__} {orjson.dumps(v).decode()}"[:80]


_NOT_FAST = object()


def _predict(scorer, arrays: dict[str, np.ndarray], fast_only: bool = False):
    """Predict as pyfunc would for the request MLServer's MLflow runtime builds."""
    schema = scorer.input_schema
    if schema is not None and schema.is_tensor_spec():
        if schema.has_input_names():
            x = arrays
        elif len(arrays) != 1:
            raise V2Error(400, f"the model takes one tensor; got {len(arrays)} inputs")
        else:
            x = next(iter(arrays.values()))
        try:
            predictions = scorer.pyfunc_model.predict(x)
        except Exception as exc:
            raise V2Error(400, f"the model could not score this input: {_one_line(exc)}") from exc
        if (m := _metrics.current()) is not None:
            m.pyfunc(len(predictions) if hasattr(predictions, "__len__") else None)
        return predictions
    columns, rows = {}, None
    for tname, arr in arrays.items():
        if arr.ndim > 2 or (arr.ndim == 2 and arr.shape[1] != 1):
            raise V2Error(
                400,
                f"input {tname!r}: shape {list(arr.shape)} is not a column; "
                "send shape [n] or [n, 1]",
            )
        col = arr.reshape(-1)
        if rows is None:
            rows = len(col)
        elif len(col) != rows:
            raise V2Error(
                400, f"input {tname!r} has {len(col)} rows; the inputs before it have {rows}"
            )
        columns[tname] = col
    fast = scorer.predict_columns(columns, rows or 0)
    if fast is not None:
        if (m := _metrics.current()) is not None:
            m.fast(rows or 0)
        return fast
    if fast_only:
        return _NOT_FAST
    frame = pd.DataFrame(columns, copy=False)
    try:
        predictions = scorer.predict_frame(frame)
    except RequestError as exc:
        # pyfunc's message dumps the whole input before its reason: the reason alone
        if "' with schema '" in exc.message and "Error: " in exc.message:
            raise V2Error(exc.status, exc.message.rsplit("Error: ", 1)[-1]) from exc
        raise
    if (m := _metrics.current()) is not None:
        m.pyfunc(len(frame))
    return predictions


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def _output_names(scorer) -> list[str]:
    meta = getattr(scorer.pyfunc_model, "metadata", None)
    signature = getattr(meta, "signature", None)
    if signature is None or signature.outputs is None:
        return []
    return [
        getattr(s, "name", None) or f"output-{i}" for i, s in enumerate(signature.outputs.inputs)
    ]


def _encode_outputs(predictions, names: list[str]) -> list[dict]:
    """Predictions as V2 output tensors: a frame's columns, a dict's entries, or one tensor."""
    if isinstance(predictions, pd.DataFrame):
        return [_tensor(str(c), predictions[c].to_numpy()) for c in predictions.columns]
    if isinstance(predictions, dict):
        return [_tensor(str(k), np.asarray(v)) for k, v in predictions.items()]
    if isinstance(predictions, pd.Series):
        predictions = predictions.to_numpy()
    return [_tensor(names[0] if names else "output-0", np.asarray(predictions))]


def _tensor(name: str, arr: np.ndarray) -> dict:
    if arr.ndim == 0:
        arr = arr.reshape(1)
    shape = list(arr.shape) if arr.ndim > 1 else [len(arr), 1]
    datatype = _datatype(arr.dtype)
    flat = arr.reshape(-1)
    if datatype == "BYTES":
        data = [_scalar(v) for v in flat.tolist()]
    elif flat.dtype.kind == "f":
        # NaN is not JSON: null, as MLServer sends it
        data = [None if math.isnan(v) else v for v in flat.tolist()]
    else:
        data = np.ascontiguousarray(flat)
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


def _scalar(v):
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, float) and math.isnan(v):
        return None
    return str(v)
