"""Batch scoring counts the rows its reader reads, not the file's newlines."""

from __future__ import annotations

import pandas as pd

from serving.batch import count_rows, read_batches


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
