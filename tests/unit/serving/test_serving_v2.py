"""The Open Inference Protocol (V2) in-process: routes, metadata from the signature, tensors in
and out, the binary extension, and a clear 4xx for every request the protocol or model refuses.

The same model over HTTP, against MLServer, is tests/integration/serving/test_serving_v2.py.
"""

from __future__ import annotations

import struct

import mlflow
import numpy as np
import orjson
import pytest
from mlflow.models import ModelSignature, infer_signature
from mlflow.types import ColSpec, Schema

from serving.online import v2
from serving.online.model import load_scorer
from serving.online.protocol import RequestError
from tests.support.serving_models import cancer_data, fit_pipeline


@pytest.fixture(scope="module")
def numeric(tmp_path_factory):
    """A scaler + logistic regression on four breast-cancer columns, saved and loaded."""
    X, y = cancer_data()
    X = X.iloc[:, :4]
    pipe = fit_pipeline(X, y)
    path = tmp_path_factory.mktemp("v2") / "model"
    mlflow.sklearn.save_model(pipe, path, signature=infer_signature(X, pipe.predict(X)))
    return load_scorer(str(path)), X


def _body(X, **override) -> bytes:
    return orjson.dumps(
        {
            "inputs": [
                {"name": c, "datatype": "FP64", "shape": [len(X)], "data": X[c].tolist()}
                | override
                for c in X.columns
            ]
        }
    )


def _infer(scorer, body: bytes, header: str | None = None) -> dict:
    return orjson.loads(v2.infer(scorer, body, header, "numeric", "3"))


def _refused(scorer, body: bytes, header: str | None = None) -> tuple[int, str]:
    with pytest.raises(RequestError) as caught:
        v2.infer(scorer, body, header, "numeric", "3")
    assert orjson.loads(caught.value.to_json()) == {"error": caught.value.message}
    return caught.value.status, caught.value.message


def test_routes_answer_the_served_version_only():
    assert v2.route("GET", "/v2", "m", "3").kind == "server"
    assert v2.route("GET", "/v2/health/ready", "m", "3").kind == "ready"
    assert v2.route("GET", "/v2/models/m", "m", "3").kind == "model"
    assert v2.route("GET", "/v2/models/m/versions/3/ready", "m", "3").kind == "model_ready"
    assert v2.route("POST", "/v2/models/m/versions/3/infer", "m", "3").kind == "infer"
    for path, status, message in [
        ("/v2/models/m/versions/2", 404, "Model m with version 2 not found"),
        ("/v2/models/m/versions/2/infer", 404, "Model m with version 2 not found"),
        ("/v2/models/other/ready", 404, "Model other not found"),
        ("/v2/repository/index", 404, "no route /v2/repository/index"),
    ]:
        with pytest.raises(v2.V2Error) as caught:
            v2.route("GET", path, "m", "3")
        assert caught.value.status == status and caught.value.message.startswith(message)
    with pytest.raises(v2.V2Error) as caught:
        v2.route("GET", "/v2/models/m/infer", "m", "3")
    assert caught.value.status == 405
    assert orjson.loads(caught.value.to_json()) == {"error": "use POST /v2/models/m/infer"}


def test_model_metadata_comes_from_the_signature(numeric):
    scorer, X = numeric
    meta = orjson.loads(v2.model_metadata(scorer.pyfunc_model, "numeric", "3"))
    assert meta["name"] == "numeric" and meta["versions"] == ["3"]
    assert [i["name"] for i in meta["inputs"]] == list(X.columns)
    assert {(i["datatype"], tuple(i["shape"])) for i in meta["inputs"]} == {("FP64", (-1, 1))}
    assert meta["outputs"] == [
        {"name": "output-0", "datatype": "INT64", "shape": [-1],
         "parameters": {"content_type": "np"}}
    ]
    assert meta["parameters"] == {"content_type": "pd"}

    class Mixed:  # the signature's types as V2 datatypes (mlserver-mlflow's mapping)
        metadata = type("Meta", (), {"signature": ModelSignature(Schema([
            ColSpec("string", "island"), ColSpec("long", "year"), ColSpec("boolean", "b"),
            ColSpec("float", "f"), ColSpec("integer", "i"),
        ]))})()

    meta = orjson.loads(v2.model_metadata(Mixed(), "m", None))
    assert [(i["name"], i["datatype"]) for i in meta["inputs"]] == [
        ("island", "BYTES"), ("year", "INT64"), ("b", "BOOL"), ("f", "FP32"), ("i", "INT32")
    ]
    assert meta["versions"] == [] and meta["outputs"] == []


def test_infer_answers_as_pyfunc(numeric):
    scorer, X = numeric
    rows = X.head(5)
    expected = scorer.pyfunc_model.predict(rows)
    answer = _infer(scorer, _body(rows))
    assert answer["model_name"] == "numeric" and answer["model_version"] == "3"
    assert answer["outputs"] == [
        {"name": "output-0", "datatype": "INT64", "shape": [5, 1], "data": expected.tolist()}
    ]
    # shape [n, 1] with nested data, an id echoed, the output asked for by name
    doc = orjson.loads(_body(rows))
    for tensor in doc["inputs"]:
        tensor["shape"] = [5, 1]
        tensor["data"] = [[v] for v in tensor["data"]]
    doc |= {"id": "req-1", "outputs": [{"name": "output-0"}]}
    again = _infer(scorer, orjson.dumps(doc))
    assert again["id"] == "req-1" and again["outputs"] == answer["outputs"]


def test_binary_tensor_extension(numeric):
    scorer, X = numeric
    rows = X.head(3)
    header, raw = {"inputs": []}, b""
    for c in rows.columns:
        data = rows[c].to_numpy(np.float64).tobytes()
        header["inputs"].append({"name": c, "datatype": "FP64", "shape": [3],
                                 "parameters": {"binary_data_size": len(data)}})
        raw += data
    head = orjson.dumps(header)
    answer = _infer(scorer, head + raw, str(len(head)))
    assert answer["outputs"][0]["data"] == scorer.pyfunc_model.predict(rows).tolist()
    status, message = _refused(scorer, head + raw[:-8], str(len(head)))
    assert status == 400 and "less binary data than declared" in message
    status, message = _refused(scorer, head + raw, str(len(head) + len(raw) + 1))
    assert status == 400 and "Inference-Header-Content-Length" in message
    # BYTES: each string's length (4 bytes, little-endian), then the string
    packed = struct.pack("<I", 2) + b"ab"
    assert v2._decode_binary(
        {"name": "s", "datatype": "BYTES", "shape": [1]}, len(packed), memoryview(packed), 0, 1
    ).tolist() == ["ab"]


@pytest.mark.parametrize(
    "body, expected",
    [
        (b"not json", "malformed JSON"),
        (b"[1]", "must be a JSON object"),
        (b'{"inputs": []}', '"inputs" must be a non-empty list'),
        (b'{"inputs": [1]}', "input 0 must be an object"),
        (b'{"inputs": [{"datatype": "FP64", "shape": [1], "data": [1]}]}', "input 0 has no name"),
        (b'{"inputs": [{"name": "a", "datatype": "FP99", "shape": [1], "data": [1]}]}',
         "datatype 'FP99' is not one of"),
        (b'{"inputs": [{"name": "a", "datatype": "FP64", "shape": "1", "data": [1]}]}',
         "shape must be a list"),
        (b'{"inputs": [{"name": "a", "datatype": "FP64", "shape": [1]}]}', "has no data"),
        (b'{"id": 7, "inputs": [{"name": "a", "datatype": "FP64", "shape": [1], "data": [1]}]}',
         '"id" must be a string'),
    ],
)
def test_malformed_requests_are_400(numeric, body, expected):
    status, message = _refused(numeric[0], body)
    assert status == 400 and expected in message


@pytest.mark.parametrize(
    "override, expected",
    [
        ({"shape": [3]}, "shape [3] holds 3 values; data has 2"),
        ({"shape": [1, 2]}, "is not a column; send shape [n] or [n, 1]"),
        ({"data": ["a", "b"]}, "FP64 data cannot hold str"),
        ({"data": [True, 1.0]}, "FP64 data cannot hold bool"),
        ({"datatype": "INT64", "data": [1.5, 2]}, "INT64 data cannot hold float"),
        ({"datatype": "INT8", "data": [1000, 2]}, "out of INT8's range"),
        ({"datatype": "BYTES", "data": [1, 2]}, "BYTES data must be strings"),
        ({"datatype": "INT64", "data": [14, 20]}, "Can not safely convert int64 to float64"),
        ({"data": [None, 1.0]}, "could not score this input"),  # the model takes no NaN
        ({"shape": [0], "data": []}, "0 sample(s)"),  # pyfunc refuses an empty batch
    ],
)
def test_tensors_the_model_cannot_take_are_400(numeric, override, expected):
    scorer, X = numeric
    status, message = _refused(scorer, _body(X.head(2), **override))
    assert status == 400 and expected in message
    assert "with schema" not in message  # pyfunc's dump of the whole input is left out


def test_inputs_missing_uneven_or_extra(numeric):
    scorer, X = numeric
    doc = orjson.loads(_body(X.head(2)))
    missing = {"inputs": doc["inputs"][1:]}
    assert "missing columns ['mean radius']" in _refused(scorer, orjson.dumps(missing))[1]
    uneven = {"inputs": [*doc["inputs"][:-1], orjson.loads(_body(X.head(3)))["inputs"][-1]]}
    assert "has 3 rows; the inputs before it have 2" in _refused(scorer, orjson.dumps(uneven))[1]
    twice = {"inputs": [*doc["inputs"], doc["inputs"][0]]}
    assert "given twice" in _refused(scorer, orjson.dumps(twice))[1]
    # an input the model does not take is ignored, as pyfunc ignores an extra column
    extra = {"inputs": [*doc["inputs"], {"name": "z", "datatype": "FP64", "shape": [2],
                                         "data": [0, 0]}]}
    assert _infer(scorer, orjson.dumps(extra))["outputs"][0]["data"] == (
        scorer.pyfunc_model.predict(X.head(2)).tolist()
    )
    asked = {**doc, "outputs": [{"name": "probabilities"}]}
    assert "no output named 'probabilities'" in _refused(scorer, orjson.dumps(asked))[1]


def test_the_fast_path_takes_what_it_can_prove(numeric):
    """The fast path (on the event loop for a fast model) answers exactly-typed requests; the
    rest is pyfunc's (None from fast_only), and both answer alike."""
    scorer, X = numeric
    rows = X.head(3)
    fast = v2.infer(scorer, _body(rows), None, "numeric", "3", fast_only=True)
    assert orjson.loads(fast)["outputs"] == _infer(scorer, _body(rows))["outputs"]
    assert orjson.loads(fast)["outputs"][0]["data"] == scorer.pyfunc_model.predict(rows).tolist()
    doc = orjson.loads(_body(rows))
    extra = {"inputs": [*doc["inputs"], {"name": "z", "datatype": "FP64", "shape": [3],
                                         "data": [0.0] * 3}]}
    for body in (_body(rows, data=[None, 1.0, 2.0]), _body(rows, datatype="FP32"),
                 orjson.dumps(extra)):
        assert v2.infer(scorer, body, None, "numeric", "3", fast_only=True) is None
