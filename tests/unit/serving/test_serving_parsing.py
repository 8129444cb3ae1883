"""The fast path's parsing and signature checks, without a server."""

from __future__ import annotations

import io

import numpy as np
import orjson
import pandas as pd
import pytest

from serving import protocol
from serving.protocol import Column, RequestError

COLS = [Column("x", "double"), Column("y", "double")]
MIXED = [Column("x", "double"), Column("n", "long"), Column("s", "string"), Column("b", "boolean")]


def _json(doc) -> bytes:
    return orjson.dumps(doc)


@pytest.mark.parametrize(
    "doc",
    [
        {"dataframe_split": {"columns": ["x", "y"], "data": [[1, 2.5], [3, 4]]}},
        {"dataframe_split": {"columns": ["y", "x"], "data": [[2.5, 1], [4, 3]]}},
        {"dataframe_records": [{"x": 1, "y": 2.5}, {"y": 4, "x": 3}]},
        {"instances": [{"x": 1, "y": 2.5}, {"x": 3, "y": 4}]},
        {"inputs": {"x": [1, 3], "y": [2.5, 4]}},
        {"inputs": [[1, 2.5], [3, 4]]},
        {"dataframe_split": {"columns": ["x", "y"], "data": [[1, 2.5], [3, 4]]}, "params": {}},
    ],
)
def test_every_json_format_gives_the_same_frame(doc):
    frame = protocol.parse_frame(_json(doc), protocol.CONTENT_TYPE_JSON, COLS)
    expected = pd.DataFrame({"x": [1.0, 3.0], "y": [2.5, 4.0]})
    pd.testing.assert_frame_equal(frame, expected)
    arr = protocol.parse_frame(_json(doc), protocol.CONTENT_TYPE_JSON, COLS, as_array=True)
    np.testing.assert_array_equal(arr, expected.to_numpy())


def test_csv_and_parquet():
    frame = pd.DataFrame({"y": [2.5, 4.0], "x": [1, 3]})
    csv = protocol.parse_frame(frame.to_csv(index=False).encode(), protocol.CONTENT_TYPE_CSV, COLS)
    buf = io.BytesIO()
    frame.to_parquet(buf)
    pq = protocol.parse_frame(buf.getvalue(), protocol.CONTENT_TYPE_PARQUET, COLS)
    for got in (csv, pq):
        assert list(got.columns) == ["x", "y"] and got["x"].dtype == np.float64


def test_mixed_types_are_typed_as_pyfunc_types_them():
    doc = {"dataframe_records": [{"x": 1, "n": 2, "s": "a", "b": True},
                                 {"x": None, "n": 3, "s": "b", "b": False}]}
    frame = protocol.parse_frame(_json(doc), protocol.CONTENT_TYPE_JSON, MIXED)
    assert frame.dtypes.astype(str).tolist()[:2] == ["float64", "int64"]
    assert frame.dtypes.astype(str).tolist()[3] == "bool"
    assert frame["s"].tolist() == ["a", "b"]
    assert np.isnan(frame["x"][1])


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (b"{nope", "malformed JSON"),
        (b"[1, 2]", "JSON object"),
        (_json({"data": []}), "exactly one of"),
        (_json({"inputs": {}, "instances": []}), "exactly one of"),
        (_json({"dataframe_split": {"columns": ["x"], "data": [[1]]}}), "missing columns ['y']"),
        (_json({"dataframe_split": {"columns": ["x", "y", "z"], "data": [[1, 2, 3]]}}),
         "unexpected columns ['z']"),
        (_json({"dataframe_split": {"columns": ["x", "y"], "data": [[1, "two"]]}}),
         "column 'y' expects double values, got string"),
        (_json({"dataframe_split": {"columns": ["x", "y"], "data": [[1, True]]}}),
         "column 'y' expects double"),
        (_json({"inputs": {"x": [1, True], "y": [1, 2]}}), "column 'x' expects double"),
        (_json({"dataframe_split": {"columns": ["x", "y"], "data": [[1, 2], [3]]}}),
         "row 1 has 1 values"),
        (_json({"dataframe_records": [{"x": 1, "y": 2}, {"x": 1}]}), "row 1: "),
        (_json({"inputs": {"x": [1, 2], "y": [1]}}), "same length"),
        (_json({"dataframe_split": {"columns": ["x", "y"], "data": []}}), "no rows"),
    ],
)
def test_bad_json_is_a_400_naming_the_problem(doc, message):
    with pytest.raises(RequestError) as err:
        protocol.parse_frame(doc, protocol.CONTENT_TYPE_JSON, COLS)
    assert err.value.status == 400
    assert message in err.value.message


def test_long_column_refuses_fractions():
    doc = _json({"dataframe_records": [{"x": 1.0, "n": 2.5, "s": "a", "b": True}]})
    with pytest.raises(RequestError, match="column 'n' expects long"):
        protocol.parse_frame(doc, protocol.CONTENT_TYPE_JSON, MIXED)


@pytest.mark.parametrize(
    ("header", "status"),
    [(None, 415), ("", 415), ("text/plain", 415), ("application/json; charset=latin-1", 415)],
)
def test_content_type_is_checked(header, status):
    with pytest.raises(RequestError) as err:
        protocol.split_content_type(header)
    assert err.value.status == status


def test_content_type_with_charset():
    assert protocol.split_content_type("Application/JSON; charset=UTF-8") == "application/json"
    assert protocol.split_content_type("text/csv") == "text/csv"


def test_predictions_json_matches_mlflow_shape():
    from mlflow.pyfunc.scoring_server import predictions_to_json

    for preds in (np.array([0, 1]), np.array([[0.1, 0.9]]), pd.Series([1.5, 2.0]),
                  pd.DataFrame({"a": [1], "b": ["x"]}), np.array(["yes", "no"])):
        out = io.StringIO()
        predictions_to_json(preds, out)
        assert orjson.loads(protocol.predictions_json(preds)) == orjson.loads(out.getvalue())


def test_error_body_is_mlflow_shaped():
    body = orjson.loads(RequestError(413, "too big", "REQUEST_LIMIT_EXCEEDED").to_json())
    assert body == {"error_code": "REQUEST_LIMIT_EXCEEDED", "message": "too big"}
