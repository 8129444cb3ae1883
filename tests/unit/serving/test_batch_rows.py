"""Batch scoring: rows counted as its reader reads them, numbered across the file; a refused
batch leaves no output."""

from __future__ import annotations

import pandas as pd
import pytest

from serving.batch.local import count_rows, read_batches, score_file
from serving.online.protocol import Column, RequestError, check_frame


def test_count_rows_with_quoted_line_breaks(tmp_path):
    frame = pd.DataFrame({
        "id": [1, 2, 3],
        "comment": ["plain", "two\nlines", "three\nlines\nhere"],
        "x": [0.5, 1.5, 2.5],
    })
    path = tmp_path / "rows.csv"
    frame.to_csv(path, index=False)
    assert path.read_bytes().count(b"\n") - 1 == 6  # what counting newlines would say
    read = sum(len(b) for b in read_batches(path, batch_size=2))
    assert read == 3
    assert count_rows(path) == read


def test_count_rows_of_an_empty_and_a_header_only_csv(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    header = tmp_path / "header.csv"
    header.write_text("a,b\n")
    assert count_rows(empty) == 0
    assert count_rows(header) == 0


class _CheckingScorer:
    """Checks each batch as the scorer does when pyfunc refuses it (column, row, value)."""

    input_columns = [Column("x", "double")]

    def predict_frame(self, frame):
        check_frame(frame, self.input_columns, allow_extra=True)
        return frame["x"].astype(float) * 2


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_refused_batch_names_the_files_row_and_writes_nothing(tmp_path, suffix):
    frame = pd.DataFrame({"id": range(30), "x": [None] * 30})  # missing values are taken
    frame.loc[25, "x"] = "unknown"  # in the third batch of 10
    src = tmp_path / f"in{suffix}"
    frame.to_csv(src, index=False) if suffix == ".csv" else frame.to_parquet(src, index=False)
    out = tmp_path / "scored" / "out.parquet"
    earlier = tmp_path / "earlier.csv"
    pd.DataFrame({"id": [7], "x": [1.0]}).to_csv(earlier, index=False)
    score_file(_CheckingScorer(), earlier, out)  # an earlier output, written by the project
    before = out.read_bytes()
    with pytest.raises(RequestError, match=r"got str 'unknown' \(row 25\)"):
        score_file(_CheckingScorer(), src, out, batch_size=10)
    assert out.read_bytes() == before  # the two scored batches never appear
    # no partial file left: the output and its completion marker only
    assert sorted(p.name for p in out.parent.iterdir()) == [
        ".out.parquet._MLOPS_SUCCESS", "out.parquet"
    ]


def test_parquet_batches_are_numbered_across_the_file_and_scored_in_order(tmp_path):
    frame = pd.DataFrame({"id": range(25), "x": [float(i) for i in range(25)]})
    src = tmp_path / "in.parquet"
    frame.to_parquet(src, index=False)
    batches = list(read_batches(src, batch_size=10))
    assert [b.index[0] for b in batches] == [0, 10, 20]
    out = tmp_path / "out.parquet"
    assert score_file(_CheckingScorer(), src, out, batch_size=10) == 25
    result = pd.read_parquet(out)
    assert result["id"].tolist() == list(range(25))
    assert result["prediction"].tolist() == [2.0 * i for i in range(25)]


def test_a_csv_column_typed_differently_by_its_batches_gets_one_type(tmp_path):
    # whole numbers in the first batch, a missing value in the second: int64, then float64
    frame = pd.DataFrame({"id": range(25), "x": [float(i) for i in range(25)]})
    frame.loc[15, "x"] = None
    src = tmp_path / "in.csv"
    frame.to_csv(src, index=False, float_format="%g")
    assert [b["x"].dtype.kind for b in pd.read_csv(src, chunksize=10)] == ["i", "f", "i"]
    assert {b["x"].dtype.kind for b in read_batches(src, batch_size=10)} == {"f"}
    out = tmp_path / "out.parquet"
    assert score_file(_CheckingScorer(), src, out, batch_size=10) == 25
    result = pd.read_parquet(out)
    pd.testing.assert_series_equal(result["x"], pd.read_csv(src)["x"])  # as the whole file
    assert result["prediction"].isna().tolist() == [i == 15 for i in range(25)]
