"""A corpus of scoring requests, good and bad, built from a few rows of a model's own data.

Used to compare our scoring server with ``mlflow models serve`` request by request: the four
JSON formats, CSV and Parquet; nulls, NaN, numeric strings, booleans, integers for doubles;
extra, missing and reordered columns; unicode; empty and malformed bodies; wrong CSV field
counts and the JSON shapes that once answered 500.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

JSON = "application/json"
CSV = "text/csv"
PARQUET = "application/vnd.apache.parquet"

# Requests where ours deliberately answers 400 though stock may score them: a CSV row with a
# field more or less than the header (pandas shifts every column or pads with nulls).
CSV_FIELD_COUNT = ("csv_extra_trailing_field", "csv_extra_leading_field", "csv_short_row")


@dataclass(frozen=True)
class Payload:
    """One request: a name for reports, its Content-Type and its body."""

    name: str
    content_type: str | None
    body: bytes


def _records(frame: pd.DataFrame) -> list[dict]:
    return json.loads(frame.to_json(orient="records"))


def _split(frame: pd.DataFrame) -> dict:
    return json.loads(frame.to_json(orient="split", index=False))


def _j(doc) -> bytes:
    return json.dumps(doc).encode()


def _parquet(frame: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()


def corpus(rows: pd.DataFrame, many: pd.DataFrame | None = None) -> list[Payload]:
    """At least 60 requests built from ``rows`` (a few rows of the model's input columns).

    Args:
        rows: 3+ rows with exactly the model's input columns, in signature order.
        many: optional larger frame of the same columns (a request of many rows).
    """
    rows = rows.reset_index(drop=True)
    cols = list(rows.columns)
    num = [c for c in cols if rows[c].dtype.kind == "f"]
    ints = [c for c in cols if rows[c].dtype.kind in "iu"]
    text = [c for c in cols if rows[c].dtype.kind not in "fiub"]
    first_num = num[0] if num else cols[0]
    split = _split(rows)
    records = _records(rows)
    out: list[Payload] = []

    def add(name, body, content_type=JSON):
        out.append(Payload(name, content_type, body if isinstance(body, bytes) else _j(body)))

    # --- the formats, as clients send them
    add("split", {"dataframe_split": split})
    add("split_reordered", {"dataframe_split": _split(rows[cols[::-1]])})
    add("records", {"dataframe_records": records})
    add("instances_records", {"instances": records})
    add("inputs_columns", {"inputs": rows.to_dict(orient="list")})
    add("inputs_records", {"inputs": records})
    add("instances_rows", {"instances": [list(r.values()) for r in records]})
    add("inputs_one_row_scalars", {"inputs": records[0]})
    add("split_pretty", json.dumps({"dataframe_split": split}, indent=2).encode())
    add("split_charset", {"dataframe_split": split}, "application/json; charset=utf-8")
    add("csv", rows.to_csv(index=False).encode(), CSV)
    add("csv_reordered", rows[cols[::-1]].to_csv(index=False).encode(), CSV)
    add("csv_crlf", rows.to_csv(index=False, lineterminator="\r\n").encode(), CSV)
    add("csv_charset", rows.to_csv(index=False).encode(), "text/csv; charset=utf-8")
    add("parquet", _parquet(rows), PARQUET)
    add("parquet_reordered", _parquet(rows[cols[::-1]]), PARQUET)
    if many is not None:
        add("split_many_rows", {"dataframe_split": _split(many.reset_index(drop=True))})
        add("csv_many_rows", many.to_csv(index=False).encode(), CSV)
    # --- columns: extra, missing, duplicated
    add("split_extra_column", {"dataframe_split": _split(rows.assign(id=range(len(rows))))})
    add("records_extra_column", {"dataframe_records": _records(rows.assign(note="x"))})
    add("csv_extra_column", rows.assign(id=range(len(rows))).to_csv(index=False).encode(), CSV)
    add("parquet_extra_column", _parquet(rows.assign(id=range(len(rows)))), PARQUET)
    add("split_missing_column", {"dataframe_split": _split(rows.drop(columns=[cols[0]]))})
    add("records_missing_column", {"dataframe_records": _records(rows.drop(columns=[cols[-1]]))})
    add("csv_missing_column", rows.drop(columns=[cols[0]]).to_csv(index=False).encode(), CSV)
    dup = {"columns": [*split["columns"], split["columns"][0]],
           "data": [[*r, r[0]] for r in split["data"]]}
    add("split_duplicate_column", {"dataframe_split": dup})
    add("records_rows_with_other_keys",
        {"dataframe_records": [records[0], {k: v for k, v in records[1].items() if k != cols[0]}]})
    # --- values: nulls, NaN, numeric strings, booleans, integers for doubles, unicode
    for c in (num[:1] + text[:1] + ints[:1]):
        nulled = [dict(r) for r in records]
        nulled[1][c] = None
        add(f"records_null_in_{c}", {"dataframe_records": nulled})
    with_nan = [dict(r) for r in records]
    with_nan[0][first_num] = float("nan")
    add("records_nan_literal", json.dumps({"dataframe_records": with_nan}).encode())
    add("split_infinity_literal", json.dumps({"dataframe_split": {
        "columns": split["columns"],
        "data": [[float("inf") if k == first_num else v for k, v in zip(cols, r, strict=True)]
                 for r in split["data"]]}}).encode())
    as_text = [dict(r) for r in records]
    for r in as_text:
        for c in num:
            if r[c] is not None:
                r[c] = str(r[c])
    add("records_numeric_strings", {"dataframe_records": as_text})
    bools = [dict(r) for r in records]
    bools[0][first_num] = True
    add("records_boolean_for_number", {"dataframe_records": bools})
    as_ints = [dict(r) for r in records]
    for r in as_ints:
        for c in num:
            if r[c] is not None and np.isfinite(r[c]):
                r[c] = int(round(r[c]))
    add("records_integers_for_doubles", {"dataframe_records": as_ints})
    floats_for_ints = [dict(r) for r in records]
    for r in floats_for_ints:
        for c in ints:
            r[c] = float(r[c]) + 0.5
    add("records_fractions_for_integers", {"dataframe_records": floats_for_ints})
    big = [dict(r) for r in records]
    big[0][first_num] = 1e308
    add("records_huge_number", {"dataframe_records": big})
    zeros = [dict(r) for r in records]
    for r in zeros:
        for c in num:
            r[c] = 0.0
    add("records_zeros", {"dataframe_records": zeros})
    word = [dict(r) for r in records]
    word[1][first_num] = "abc"
    add("records_text_in_numeric_column", {"dataframe_records": word})
    uni = [dict(r) for r in records]
    for c in text[:1]:
        uni[0][c] = "Bíscoe ✓ 島"
    add("records_unicode_value", {"dataframe_records": uni})
    add("records_unicode_extra_column", {"dataframe_records": [{**r, "ünïcode ✓": "é"}
                                                               for r in records]})
    add("csv_text_in_numeric_column",
        rows.astype({first_num: object}).assign(**{first_num: "abc"}).to_csv(index=False).encode(),
        CSV)
    add("csv_empty_field", rows.assign(**{first_num: None}).to_csv(index=False).encode(), CSV)
    add("parquet_with_nulls", _parquet(rows.astype({first_num: "float64"}).assign(
        **{first_num: [np.nan] + [1.0] * (len(rows) - 1)})), PARQUET)
    nested = [dict(r) for r in records]
    nested[0][cols[0]] = {"deep": 1}
    add("records_object_value", {"dataframe_records": nested})
    # --- the JSON shapes that once answered 500
    add("split_every_cell_a_list",
        {"dataframe_split": {"columns": cols, "data": [[[v] for v in r] for r in split["data"]]}})
    add("inputs_columns_nested_lists",
        {"inputs": {c: [[v] for v in vals] for c, vals in rows.to_dict(orient="list").items()}})
    add("split_list_valued_column_names",
        {"dataframe_split": {"columns": [[c] for c in cols], "data": split["data"]}})
    row_bytes = len(_j(split["data"][0]))
    padding = [split["data"][0]] * (70 * 1024 // row_bytes + 1)
    big_nested = {"dataframe_split": {"columns": cols,
                                      "data": [*padding, [split["data"][0]]]}}
    body = _j(big_nested)
    add("split_over_64k_with_a_nested_row", body)
    # --- malformed structure
    add("split_ragged_short_row",
        {"dataframe_split": {"columns": cols, "data": [split["data"][0], split["data"][1][:-1]]}})
    add("split_ragged_long_row",
        {"dataframe_split": {"columns": cols, "data": [split["data"][0],
                                                       [*split["data"][1], 1.0]]}})
    add("split_without_columns", {"dataframe_split": {"data": split["data"]}})
    add("split_with_index", {"dataframe_split": {**split, "index": list(range(len(rows)))}})
    add("split_data_not_a_list", {"dataframe_split": {"columns": cols, "data": 5}})
    add("split_no_rows", {"dataframe_split": {"columns": cols, "data": []}})
    add("records_empty", {"dataframe_records": []})
    add("records_as_object", {"dataframe_records": records[0]})
    add("with_params", {"dataframe_split": split, "params": {}})
    add("with_unknown_key", {"dataframe_split": split, "extra": 1})
    add("two_format_keys", {"dataframe_split": split, "inputs": records})
    add("no_format_key", {"rows": records})
    add("empty_object", {})
    add("json_list", [records])
    add("json_number", b"42")
    add("malformed_json", b'{"dataframe_split": {')
    add("empty_json_body", b"")
    add("not_utf8", b'{"inputs": {"' + "é".encode("latin-1") + b'": [1]}}')
    # --- CSV field counts and empties
    lines = rows.to_csv(index=False).splitlines()
    add("csv_extra_trailing_field", "\n".join([lines[0], lines[1] + ",7", *lines[2:]]).encode(),
        CSV)
    add("csv_extra_leading_field", "\n".join([lines[0], "7," + lines[1], *lines[2:]]).encode(),
        CSV)
    add("csv_short_row", "\n".join([lines[0], lines[1].rsplit(",", 1)[0], *lines[2:]]).encode(),
        CSV)
    add("csv_empty", b"", CSV)
    add("csv_header_only", (lines[0] + "\n").encode(), CSV)
    add("parquet_garbage", b"PAR1 not really parquet", PARQUET)
    # --- content types
    add("content_type_text_plain", {"dataframe_split": split}, "text/plain")
    add("content_type_missing", {"dataframe_split": split}, None)
    add("content_type_latin1", {"dataframe_split": split}, "application/json; charset=latin-1")
    add("content_type_unknown_parameter", {"dataframe_split": split},
        "application/json; format=pandas-split")
    add("content_type_uppercase", {"dataframe_split": split}, "Application/JSON")
    return out
