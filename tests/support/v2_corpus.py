"""A corpus of Open Inference Protocol (V2) infer requests, good and bad, from a model's rows.

Used to compare our V2 routes with MLServer's request by request: good requests (flat and
nested data, one row and many, an id, reordered and extra inputs, the binary extension), and
for each of a few inputs a missing input, a null, a wrong datatype, strings; wrong shapes,
empty batches, uneven inputs, unknown datatypes, numbers as strings, booleans, overflows and
malformed bodies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import orjson
import pandas as pd

# Requests where ours deliberately refuses (400) what MLServer scores, and why.
DELIBERATE = {
    "numeric_strings": "FP64 data given as strings: MLServer lets numpy parse them",
    "floats_in_int_tensor": "INT64 data with fractions: MLServer's numpy cast truncates 1.5 to 1",
    "uneven_inputs": "inputs of different lengths: MLServer's DataFrame pads the short ones with "
    "NaN and the model scores rows nobody sent",
    "bytes_holding_numbers": "BYTES data that are numbers: MLServer hands pyfunc numbers",
    "bool_in_numeric": "true/false in FP64 data: MLServer's numpy reads them as 1.0/0.0",
    "shape_negative": "shape [-1] in a request: MLServer lets numpy infer it; a request's shape "
    "is its tensor's size",
    "duplicate_input": "an input given twice: MLServer scores the last one silently",
    "shape_more_than_data": "a shape that does not match the data: MLServer ignores a BYTES "
    "tensor's shape",
    "shape_wide": "shape [1, n] for a column: MLServer ignores a BYTES tensor's shape",
    "shape_empty": "shape []: MLServer ignores a BYTES tensor's shape",
}
# Requests both score where MLServer's answer is wrong, and why: ours answers as for "good".
MLSERVER_WRONG = {
    "good_nested": "nested BYTES data ([[v], ...], shape [n, 1]): MLServer hands pyfunc lists "
    "as the column's values",
}
# Requests ours scores though MLServer refuses them, and why.
OURS_ONLY = {
    "good_unicode_id": "MLServer 1.7.1 answers 500 to a request id that is not ASCII",
    "good_binary": "MLServer 1.7.1 does not read the binary tensor extension (422)",
}


@dataclass(frozen=True)
class V2Payload:
    """One infer request: a name for reports, its body and extra headers."""

    name: str
    body: bytes
    headers: dict = field(default_factory=dict)


def _value(v, datatype: str):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if datatype == "BYTES":
        return str(v)
    if datatype == "BOOL":
        return bool(v)
    if datatype.startswith(("INT", "UINT")):
        return int(v)
    return float(v)


def _tensor(name: str, datatype: str, values: list, nested: bool = False) -> dict:
    data = [[v] for v in values] if nested else values
    shape = [len(values), 1] if nested else [len(values)]
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


def _inputs(frame: pd.DataFrame, types: dict[str, str], nested: bool = False) -> list[dict]:
    return [
        _tensor(c, types[c], [_value(v, types[c]) for v in frame[c].tolist()], nested)
        for c in types
    ]


def _json(name: str, doc) -> V2Payload:
    return V2Payload(name, orjson.dumps(doc))


def _replace(inputs: list[dict], col: str, **changes) -> list[dict]:
    return [t | changes if t["name"] == col else t for t in inputs]


def v2_corpus(few: pd.DataFrame, many: pd.DataFrame, metadata: dict) -> list[V2Payload]:
    """Requests for the model whose V2 ``metadata`` (ours: from the signature) is given.

    Args:
        few: a few rows of the model's own input (may hold missing values).
        many: many rows of it.
        metadata: the model's V2 metadata document (its inputs' names and datatypes).
    """
    types = {i["name"]: i["datatype"] for i in metadata["inputs"]}
    out_name = metadata["outputs"][0]["name"] if metadata["outputs"] else "output-0"
    good = _inputs(few, types)
    n = len(few)
    payloads = [
        _json("good", {"inputs": good}),
        _json("good_nested", {"inputs": _inputs(few, types, nested=True)}),
        _json("good_many_rows", {"inputs": _inputs(many, types)}),
        _json("good_one_row", {"inputs": _inputs(few.head(1), types)}),
        _json("good_with_id", {"id": "request-7", "inputs": good}),
        _json("good_request_content_type", {"parameters": {"content_type": "pd"},
                                            "inputs": good}),
        _json("good_reordered", {"inputs": good[::-1]}),
        _json("good_extra_input", {"inputs": [*good, _tensor("unused", "FP64", [0.0] * n)]}),
        _json("good_output_asked", {"inputs": good, "outputs": [{"name": out_name}]}),
        _json("good_unicode_id", {"id": "é✓", "inputs": good}),
        _binary("good_binary", few.dropna() if len(few.dropna()) else few, types),
    ]
    columns = list(types)
    for col in dict.fromkeys([*columns[:3], columns[-1]]):
        dt = types[col]
        payloads.append(_json(f"missing_{col}", {"inputs": [t for t in good if t["name"] != col]}))
        values = [_value(v, dt) for v in few[col].tolist()]
        payloads.append(_json(f"null_{col}", {"inputs": _replace(good, col,
                                                                 data=[None, *values[1:]])}))
        if dt == "BYTES":
            wrong = _replace(good, col, datatype="FP64", data=[1.5] * n)
            strings = _replace(good, col, data=["not-a-category"] * n)
        else:
            wrong = _replace(good, col, datatype="BYTES", data=[str(v) for v in values])
            strings = _replace(good, col, datatype="BYTES", data=["x"] * n)
        payloads.append(_json(f"wrong_datatype_{col}", {"inputs": wrong}))
        payloads.append(_json(f"strings_{col}", {"inputs": strings}))
    first = good[0]
    num = next((t for t in good if t["datatype"].startswith("FP")), None)
    payloads += [
        _json("shape_more_than_data", {"inputs": _replace(good, first["name"], shape=[n + 1])}),
        _json("shape_wide", {"inputs": _replace(good, first["name"], shape=[1, n])}),
        _json("shape_empty", {"inputs": _replace(good, first["name"], shape=[])}),
        _json("shape_negative", {"inputs": _replace(good, first["name"], shape=[-1])}),
        _json("empty_batch", {"inputs": [t | {"shape": [0], "data": []} for t in good]}),
        _json("uneven_inputs", {"inputs": _replace(good, first["name"],
                                                   shape=[n + 1], data=[*first["data"],
                                                                        first["data"][0]])}),
        _json("datatype_unknown", {"inputs": _replace(good, first["name"], datatype="FP99")}),
        _json("datatype_lowercase", {"inputs": _replace(good, first["name"],
                                                        datatype=first["datatype"].lower())}),
        _json("missing_name", {"inputs": [{k: v for k, v in first.items() if k != "name"},
                                          *good[1:]]}),
        _json("missing_datatype", {"inputs": [{k: v for k, v in first.items()
                                               if k != "datatype"}, *good[1:]]}),
        _json("missing_shape", {"inputs": [{k: v for k, v in first.items() if k != "shape"},
                                           *good[1:]]}),
        _json("missing_data", {"inputs": [{k: v for k, v in first.items() if k != "data"},
                                          *good[1:]]}),
        _json("duplicate_input", {"inputs": [*good, first]}),
        _json("inputs_empty", {"inputs": []}),
        _json("inputs_object", {"inputs": {first["name"]: first}}),
        _json("no_inputs", {"id": "x"}),
        _json("id_number", {"id": 7, "inputs": good}),
        _json("json_array", [good]),
        V2Payload("not_json", b'{"inputs": [{"name": '),
        V2Payload("empty_body", b""),
    ]
    if num is not None:
        name, values = num["name"], num["data"]
        finite = [v for v in values if v is not None] or [1.0]
        filled = [v if v is not None else finite[0] for v in values]
        payloads += [
            _json("fp32_for_fp64", {"inputs": _replace(good, name, datatype="FP32")}),
            _json("integers_in_fp64", {"inputs": _replace(good, name,
                                                          data=[round(v) for v in filled])}),
            _json("numeric_strings", {"inputs": _replace(good, name,
                                                         data=[str(v) for v in filled])}),
            _json("bool_in_numeric", {"inputs": _replace(good, name, data=[True] * n)}),
            _json("floats_in_int_tensor", {"inputs": _replace(good, name, datatype="INT64",
                                                              data=[1.5] * n)}),
            _json("overflow_int8", {"inputs": _replace(good, name, datatype="INT8",
                                                       data=[1000] * n)}),
            _json("huge_values", {"inputs": _replace(good, name, data=[1e308] * n)}),
        ]
    text = next((t for t in good if t["datatype"] == "BYTES"), None)
    if text is not None:
        payloads += [
            _json("bytes_holding_numbers", {"inputs": _replace(good, text["name"],
                                                               data=[1] * n)}),
            _json("unicode_strings", {"inputs": _replace(good, text["name"],
                                                         data=["Biscoe✓"] * n)}),
        ]
    return payloads


def _binary(name: str, frame: pd.DataFrame, types: dict[str, str]) -> V2Payload:
    """The binary tensor extension: a JSON header, then each tensor's raw little-endian bytes."""
    import struct


    header, raw = {"inputs": []}, b""
    for col, dt in types.items():
        if dt == "BYTES":
            chunk = b"".join(
                struct.pack("<I", len(s)) + s
                for s in (str(v).encode() for v in frame[col].tolist())
            )
        else:
            dtype = {"FP64": "<f8", "FP32": "<f4", "INT64": "<i8", "INT32": "<i4",
                     "BOOL": "?"}[dt]
            chunk = frame[col].to_numpy().astype(dtype).tobytes()
        header["inputs"].append({"name": col, "datatype": dt, "shape": [len(frame)],
                                 "parameters": {"binary_data_size": len(chunk)}})
        raw += chunk
    head = orjson.dumps(header)
    return V2Payload(name, head + raw, {"Inference-Header-Content-Length": str(len(head))})
