"""The fast path's parsing and signature checks, without a server."""

from __future__ import annotations

import io

import numpy as np
import orjson
import pandas as pd
import pytest

from serving.online import protocol
from serving.online.protocol import Column, RequestError

COLS = [Column("x", "double"), Column("y", "double")]
MIXED = [Column("x", "double"), Column("n", "long"), Column("s", "string"), Column("b", "boolean")]


def _json(doc) -> bytes:
    return orjson.dumps(doc)


@pytest.mark.parametrize(
    "doc",
    [
        {"dataframe_split": {"columns": ["x", "y"], "data": [[1.0, 2.5], [3.0, 4.0]]}},
        {"dataframe_split": {"columns": ["y", "x"], "data": [[2.5, 1.0], [4.0, 3.0]]}},
        {"dataframe_records": [{"x": 1.0, "y": 2.5}, {"y": 4.0, "x": 3.0}]},
        {"instances": [{"x": 1.0, "y": 2.5}, {"x": 3.0, "y": 4.0}]},
        {"inputs": {"x": [1.0, 3.0], "y": [2.5, 4.0]}},
    ],
)
def test_every_json_format_gives_the_same_frame(doc):
    frame = protocol.parse_frame(_json(doc), protocol.CONTENT_TYPE_JSON, COLS)
    expected = pd.DataFrame({"x": [1.0, 3.0], "y": [2.5, 4.0]})
    pd.testing.assert_frame_equal(frame, expected)
    arr = protocol.parse_frame(_json(doc), protocol.CONTENT_TYPE_JSON, COLS, as_array=True)
    np.testing.assert_array_equal(arr, expected.to_numpy())


def test_csv_and_parquet():
    frame = pd.DataFrame({"y": [2.5, 4.0], "x": [1.0, 3.0]})
    csv = protocol.parse_frame(frame.to_csv(index=False).encode(), protocol.CONTENT_TYPE_CSV, COLS)
    buf = io.BytesIO()
    frame.to_parquet(buf)
    pq = protocol.parse_frame(buf.getvalue(), protocol.CONTENT_TYPE_PARQUET, COLS)
    for got in (csv, pq):
        assert list(got.columns) == ["x", "y"] and got["x"].dtype == np.float64


def test_mixed_types_are_typed_as_pyfunc_types_them():
    doc = {"dataframe_records": [{"x": 1.5, "n": 2, "s": "a", "b": True},
                                 {"x": 2.0, "n": 3, "s": "b", "b": False}]}
    frame = protocol.parse_frame(_json(doc), protocol.CONTENT_TYPE_JSON, MIXED)
    dtypes = frame.dtypes.astype(str).tolist()
    assert [dtypes[0], dtypes[1], dtypes[3]] == ["float64", "int64", "bool"]
    assert frame["s"].tolist() == ["a", "b"]


@pytest.mark.parametrize(
    "doc",
    [
        # what pyfunc converts by its own rules (or ignores): the fast path cannot prove it
        {"dataframe_split": {"columns": ["x", "y"], "data": [[1, 2], [3, 4]]}},  # ints
        {"dataframe_split": {"columns": ["x", "y", "z"], "data": [[1.0, 2.0, 3.0]]}},  # extra
        {"dataframe_split": {"columns": ["x", "y"], "data": [[1.0, None]]}},  # null
        {"dataframe_split": {"columns": ["x", "y"], "data": [[1.0, "2.5"]]}},  # numeric text
        {"dataframe_split": {"columns": ["x", "y"], "data": [[1.0, True]]}},  # boolean
        {"dataframe_split": {"data": [[1.0, 2.0]]}},  # no column names
        {"dataframe_split": {"columns": ["x", "y"], "data": [[1.0, 2.0]]}, "params": {}},
        {"inputs": [[1.0, 2.5]]},  # rows by position
        {"inputs": {"x": 1.0, "y": 2.0}},  # scalars
        {"instances": [{"x": 1.0, "y": 2.0}], "other": 1},  # unknown key
    ],
)
def test_what_the_fast_path_cannot_prove_goes_to_pyfunc(doc):
    with pytest.raises(protocol.Handoff):
        protocol.parse_frame(_json(doc), protocol.CONTENT_TYPE_JSON, COLS)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (b"{nope", "malformed JSON"),
        (b"[1, 2]", "JSON object"),
        (_json({"data": []}), "exactly one of"),
        (_json({"inputs": {}, "instances": []}), "exactly one of"),
        (_json({"dataframe_split": {"columns": ["x"], "data": [[1.0]]}}), "missing columns ['y']"),
        (_json({"dataframe_split": {"columns": ["x", "y"], "data": [[1.0, "two"]]}}),
         'column \'y\' row 0: expected double, got str "two"'),
        (_json({"dataframe_split": {"columns": ["x", "y"], "data": [[1.0, 2.0], [3.0]]}}),
         "row 1 has 1 values"),
        (_json({"dataframe_split": {"columns": ["x", "y"], "data": [[[1.0], [2.0]]]}}),
         "column 'x' row 0: expected one double value, got list [1.0]"),
        (_json({"dataframe_split": {"columns": [["x"], "y"], "data": [[1.0, 2.0]]}}),
         "column names must be strings"),
        (_json({"dataframe_records": [{"x": 1, "y": 2}, {"x": 1}]}), "row 1: "),
        (_json({"inputs": {"x": [1, 2], "y": [1]}}), "same length"),
        (_json({"dataframe_split": {"columns": ["x", "y"], "data": []}}), "no rows"),
    ],
)
def test_bad_json_is_a_400_naming_the_problem(doc, message):
    """What the fast path finds wrong it says (pyfunc still decides: see serving.online.model)."""
    with pytest.raises(protocol.Handoff) as err:
        protocol.parse_frame(doc, protocol.CONTENT_TYPE_JSON, COLS)
    assert err.value.error is not None and err.value.error.status == 400
    assert message in err.value.error.message


def test_csv_rows_with_the_wrong_number_of_fields_name_the_row():
    for body, row in ((b"x,y\n1.0,2.0\n3.0,4.0,5.0\n", 2), (b"x,y\n1.0,2.0,9\n", 1),
                      (b"x,y\n1.0\n", 1)):
        with pytest.raises(RequestError, match=f"CSV row {row} "):
            protocol.check_csv_fields(body)
    protocol.check_csv_fields(b'x,y\n1.0,"a,b"\n\n3.0,4.0\n')  # quoted comma, blank line


@pytest.mark.parametrize(
    ("header", "status"),
    [(None, 415), ("", 415), ("text/plain", 415), ("application/json; charset=latin-1", 415),
     ("Application/JSON", 415), ("application/json; format=pandas-split", 415),
     ("application/json;", 415)],
)
def test_content_type_is_checked(header, status):
    with pytest.raises(RequestError) as err:
        protocol.split_content_type(header)
    assert err.value.status == status


def test_content_type_with_charset():
    # as stock: the type as written, charset utf-8 in any case
    assert protocol.split_content_type("application/json; charset=UTF-8") == "application/json"
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
