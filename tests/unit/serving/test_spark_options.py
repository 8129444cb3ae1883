"""``serving predict --engine spark``: the command line's own checks (no JVM started)."""

from __future__ import annotations

import pytest

from serving.batch import spark
from serving.cli import main


def test_conf_pairs_become_spark_settings():
    assert spark.parse_conf(["spark.executor.memory=4g", "a.b= x=y"]) == {
        "spark.executor.memory": "4g",
        "a.b": " x=y",
    }


def test_a_conf_without_a_value_is_bad_usage(capsys, restore_logging):
    argv = ["predict", "m@champion", "--input", "in.csv", "--engine", "spark", "--conf", "oops"]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: --conf 'oops': expected KEY=VALUE"
    )


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("data/in.csv", "data/in-predictions.parquet"),
        ("data/day.parquet", "data/day-predictions.parquet"),
        ("s3://b/events/", "s3://b/events-predictions.parquet"),
    ],
)
def test_default_output_is_a_parquet_folder_next_to_the_input(given, expected):
    assert spark.default_output(given) == expected


def test_input_kinds_are_checked_before_spark_starts(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.csv").write_text("x\n1\n")
    (folder / "_SUCCESS").write_text("")  # Spark's marker files are not data
    assert spark.input_kind(str(folder), spark._local_files(str(folder))) == "csv"
    (folder / "b.parquet").write_bytes(b"")
    with pytest.raises(ValueError, match="mixes CSV and Parquet"):
        spark.input_kind(str(folder), spark._local_files(str(folder)))
    (folder / "notes.txt").write_text("")
    with pytest.raises(ValueError, match="notes.txt: expected a .csv or .parquet file"):
        spark.input_kind(str(folder), spark._local_files(str(folder)))
    with pytest.raises(ValueError, match="no such file or folder"):
        spark._local_files(str(tmp_path / "missing"))
