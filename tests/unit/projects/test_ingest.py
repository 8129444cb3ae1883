import sqlite3

import boto3
import pandas as pd
import pytest

from projects.errors import WorkflowError
from projects.ingest import fingerprint_source, frame_digest, ingest_data, parse_source


def test_bundled_default_ships_with_scikit_learn():
    src = parse_source("bundled:breast_cancer")
    df = ingest_data(src, "label")
    assert df.shape == (569, 31)
    assert "label" in df.columns


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_files(tmp_path, suffix):
    df = pd.DataFrame({"a": [1, 2, 3], "target": [0, 1, 0]})
    path = tmp_path / f"data{suffix}"
    df.to_csv(path, index=False) if suffix == ".csv" else df.to_parquet(path)
    src = parse_source(str(path))
    assert src.kind == "file"
    pd.testing.assert_frame_equal(ingest_data(src, "target"), df)


def test_a_changed_file_at_the_same_path_changes_the_fingerprint(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,target\n1,0\n2,1\n")
    src = parse_source(str(path))
    before = fingerprint_source(src)
    path.write_text("a,target\n1,0\n3,1\n")  # same size, same path
    assert fingerprint_source(src) != before


def test_sql_query_and_table(tmp_path):
    db = tmp_path / "d.db"
    with sqlite3.connect(db) as conn:
        conn.execute("create table t (a real, target int)")
        conn.executemany("insert into t values (?, ?)", [(1.0, 0), (2.0, 1), (3.0, 1)])
    table = ingest_data(parse_source(f"sqlite:///{db}", table="t"), "target")
    assert len(table) == 3
    query = ingest_data(parse_source(f"sqlite:///{db}", query="select * from t where a > 1"), "target")
    assert list(query["a"]) == [2.0, 3.0]
    assert fingerprint_source(parse_source(f"sqlite:///{db}", table="t")) is None


def test_s3_object_through_moto(aws_env):
    """AWS cannot exist here: S3 is the moto server, reached by boto3 over HTTP."""
    s3 = boto3.client("s3", endpoint_url=aws_env)
    s3.create_bucket(Bucket="data")
    s3.put_object(Bucket="data", Key="in/d.csv", Body=b"a,target\n1,0\n2,1\n")
    src = parse_source("s3://data/in/d.csv")
    df = ingest_data(src, "target", s3)
    assert list(df.columns) == ["a", "target"] and len(df) == 2
    first = fingerprint_source(src, s3)
    s3.put_object(Bucket="data", Key="in/d.csv", Body=b"a,target\n1,0\n5,1\n")
    assert fingerprint_source(src, s3) != first


@pytest.mark.parametrize(
    ("source", "kwargs", "message"),
    [
        ("bundled:nope", {}, "unknown bundled dataset 'nope'"),
        ("/no/such/file.csv", {}, "no such file"),
        ("data.txt", {}, "expected a .csv or .parquet file"),
        ("postgresql://h/db", {}, "needs data.query or data.table"),
        ("sqlite:///x.db", {"table": "t; drop table x"}, "not a plain table name"),
    ],
)
def test_bad_sources(source, kwargs, message):
    with pytest.raises(WorkflowError, match=message):
        parse_source(source, **kwargs)


def test_unreadable_file_is_one_line(tmp_path):
    path = tmp_path / "bad.parquet"
    path.write_text("not parquet")
    with pytest.raises(WorkflowError) as err:
        ingest_data(parse_source(str(path)), "target")
    assert str(err.value).startswith("cannot read") and "\n" not in str(err.value)


def test_frame_digest_sees_values_and_dtypes():
    df = pd.DataFrame({"a": [1, 2]})
    assert frame_digest(df) == frame_digest(df.copy())
    assert frame_digest(df) != frame_digest(df.assign(a=[1, 3]))
    assert frame_digest(df) != frame_digest(df.astype(float))


def test_a_loader_of_the_user_is_a_source(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ing_user_loader.py").write_text(
        "import pandas as pd\n"
        "def load():\n    return pd.DataFrame({'x': [1, 2], 'target': [0, 1]})\n"
        "def not_a_frame():\n    return [1, 2]\n")
    source = parse_source("ing_user_loader.py:load")
    assert source.kind == "function"
    assert ingest_data(source, "target").shape == (2, 2)
    with pytest.raises(WorkflowError, match="returned list, expected a pandas DataFrame"):
        ingest_data(parse_source("ing_user_loader.py:not_a_frame"), "target")
    with pytest.raises(WorkflowError, match="no such file"):
        parse_source("nowhere.py:load")
