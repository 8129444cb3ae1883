"""Batch outputs never harm what the project did not write: the local engine's command line.

``python -m serving predict`` in-process on local files (the S3 and Spark cases are in
tests/integration/serving/test_spark_batch.py): an output overlapping the input, or an existing
file the project did not write, is one error line and exit 1 with every file as it was; an
output the project wrote is replaced.
"""

from __future__ import annotations

import os

import mlflow
import pandas as pd
import pytest

from serving.batch import outputs
from serving.cli import main
from tests.support.serving_models import cancer_data, fit_pipeline, log_sklearn_version


@pytest.fixture
def champion():
    X, y = cancer_data()
    client = mlflow.MlflowClient()
    version = log_sklearn_version(client, "cancer", fit_pipeline(X, y), X)
    client.set_registered_model_alias("cancer", "champion", version)
    return X


def _predict(capsys, src, out) -> tuple[int, list[str]]:
    code = main(["predict", "cancer@champion", "--input", str(src), "--output", str(out)])
    captured = capsys.readouterr()
    return code, captured.err.strip().splitlines()


def _snapshot(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    ("input_name", "spelling"),
    [
        ("in.csv", "in.csv"),  # the same file, relative (the command runs in tmp_path)
        ("in.csv", "{tmp}/./in.csv"),  # absolute, with a detour
        ("in.csv", "file://{tmp}/in.csv"),  # a file: URI
        ("in.csv", "link.csv"),  # a symbolic link to the input
    ],
)
def test_an_output_that_is_the_input_is_refused(
    champion, tmp_path, capsys, monkeypatch, input_name, spelling
):
    monkeypatch.chdir(tmp_path)
    champion.head(5).to_csv(tmp_path / input_name, index=False)
    (tmp_path / "link.csv").symlink_to(tmp_path / input_name)
    before = _snapshot(tmp_path)
    code, err = _predict(capsys, tmp_path / input_name, spelling.format(tmp=tmp_path))
    assert code == 1
    assert err == [err[-1]] and err[-1].startswith("error: ") and "would overlap the input" in err[-1]
    assert _snapshot(tmp_path) == before  # the input byte for byte, nothing added


def test_an_existing_file_the_project_did_not_write_is_refused(champion, tmp_path, capsys):
    src = tmp_path / "in.csv"
    champion.head(5).to_csv(src, index=False)
    theirs = tmp_path / "report.csv"
    theirs.write_text("someone's numbers\n")
    code, err = _predict(capsys, src, theirs)
    assert code == 1
    assert err == [
        f"error: {theirs}: not written by python -m serving predict (no _MLOPS_SUCCESS); "
        "nothing was changed: move it away or name a new output"
    ]
    assert theirs.read_text() == "someone's numbers\n"


def test_an_output_the_project_wrote_is_replaced_but_not_once_someone_changed_it(
    champion, tmp_path, capsys
):
    first, second = tmp_path / "a.csv", tmp_path / "b.parquet"
    champion.head(5).to_csv(first, index=False)
    champion.head(8).to_parquet(second, index=False)
    out = tmp_path / "scores" / "out.parquet"
    assert _predict(capsys, first, out)[0] == 0
    assert len(pd.read_parquet(out)) == 5
    assert _predict(capsys, second, out)[0] == 0  # ours: replaced
    assert len(pd.read_parquet(out)) == 8
    assert sorted(os.listdir(out.parent)) == [".out.parquet._MLOPS_SUCCESS", "out.parquet"]

    out.write_bytes(out.read_bytes() + b"edited by hand")  # no longer what the project wrote
    edited = out.read_bytes()
    code, err = _predict(capsys, first, out)
    assert code == 1 and "not written by python -m serving predict (not listed in" in err[-1]
    assert out.read_bytes() == edited


@pytest.mark.parametrize(
    ("output", "inputs", "overlap"),
    [
        ("s3://b/data", "s3a://b/data/", True),  # s3 and s3a, trailing slash
        ("s3://b/", "s3://b/data/in.csv", True),  # the bucket holds the input
        ("s3://b/data/in.csv/scores", "s3://b/data/in.csv", True),  # inside it
        ("s3://b/data-predictions.parquet", "s3://b/data", False),  # a sibling with its prefix
        ("s3://b/data", "s3://c/data", False),  # another bucket
        ("s3://b/data", "data", False),  # S3 and a local path never overlap
        ("out/../in", "in/x.csv", True),
        ("file:///srv/in", "/srv/in/x.csv", True),
    ],
)
def test_overlap_compares_places_not_spellings(tmp_path, monkeypatch, output, inputs, overlap):
    monkeypatch.chdir(tmp_path)
    assert outputs.overlaps(outputs.locate(output), outputs.locate(inputs)) is overlap


def test_a_foreign_spark_success_file_does_not_make_a_folder_ours(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "_SUCCESS").write_bytes(b"")  # any Spark job writes one
    (folder / "part-00000.parquet").write_bytes(b"their rows")
    with pytest.raises(outputs.OutputError, match=r"out/part-00000.parquet: not written by"):
        outputs.check_output(outputs.locate(str(folder)), outputs.locate("in.csv"), folder=True)
    (folder / "part-00000.parquet").unlink()
    with pytest.raises(outputs.OutputError, match=r"out/_SUCCESS: not written by"):
        outputs.check_output(outputs.locate(str(folder)), outputs.locate("in.csv"), folder=True)
    assert sorted(os.listdir(folder)) == ["_SUCCESS"]
