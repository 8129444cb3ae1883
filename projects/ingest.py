"""ingest: read the raw data from the bundled default, a file, S3 or a SQL database."""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

from projects.errors import WorkflowError

# Datasets shipped inside scikit-learn (no download): name -> (loader, task).
BUNDLED = {
    "breast_cancer": ("load_breast_cancer", "classification"),
    "iris": ("load_iris", "classification"),
    "wine": ("load_wine", "classification"),
    "diabetes": ("load_diabetes", "regression"),
}
_SQL_URL = re.compile(r"^[a-z][a-z0-9+]*://")


@dataclass(frozen=True)
class Source:
    """Where the data comes from: ``kind`` is bundled, file, s3, sql or function (the user's)."""

    kind: str
    location: str
    query: str | None = None

    def __str__(self) -> str:
        return self.location if not self.query else f"{self.location} ({self.query})"


def parse_source(source: str, query: str | None = None, table: str | None = None) -> Source:
    """Classify ``source`` into a :class:`Source`.

    Raises:
        WorkflowError: unknown bundled dataset, missing file, SQL URL without query or table.
    """
    if source.startswith("bundled:"):
        name = source.split(":", 1)[1]
        if name not in BUNDLED:
            raise WorkflowError(f"unknown bundled dataset {name!r}; one of: {', '.join(BUNDLED)}")
        return Source("bundled", source)
    if source.startswith("s3://"):
        return Source("s3", source)
    if ".py:" in source and "://" not in source:
        from core import usercode

        try:
            path, _ = usercode.split_reference(source)
        except usercode.UserCodeError as exc:
            raise WorkflowError(f"data source {exc}") from None
        if not path.is_file():
            raise WorkflowError(f"data source {source!r}: no such file {path}")
        return Source("function", source)
    if _SQL_URL.match(source) and not source.startswith("file://"):
        if not (query or table):
            raise WorkflowError(f"SQL source {source!r} needs data.query or data.table")
        if table and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", table):
            raise WorkflowError(f"data.table {table!r} is not a plain table name")
        return Source("sql", source, query or f"SELECT * FROM {table}")
    path = Path(source.removeprefix("file://")).expanduser()
    if path.suffix.lower() not in {".csv", ".parquet", ".pq"}:
        raise WorkflowError(f"data source {source!r}: expected a .csv or .parquet file")
    if not path.is_file():
        raise WorkflowError(f"data source {source!r}: no such file")
    return Source("file", str(path.resolve()))


def _split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def fingerprint_source(source: Source, s3_client=None) -> str | None:
    """A cheap fingerprint of the source's content, or None when only reading tells.

    Files are hashed whole (a changed file at the same path is always detected); S3 objects
    by ETag and version; bundled data by scikit-learn's version; SQL needs a read (None).
    """
    if source.kind == "bundled":
        from importlib.metadata import version

        return f"{source.location}@scikit-learn-{version('scikit-learn')}"
    if source.kind == "file":
        digest = hashlib.sha256()
        with open(source.location, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()
    if source.kind == "s3":
        bucket, key = _split_s3(source.location)
        head = s3_client.head_object(Bucket=bucket, Key=key)
        return f"{head.get('ETag', '')}:{head.get('VersionId', '')}:{head['ContentLength']}"
    return None


def frame_digest(df: pd.DataFrame) -> str:
    """Digest of a DataFrame's content, columns and dtypes."""
    import pandas as pd

    digest = hashlib.sha256(pd.util.hash_pandas_object(df, index=False).values.tobytes())
    digest.update(repr(list(zip(df.columns, map(str, df.dtypes), strict=True))).encode())
    return digest.hexdigest()


def _read_bytes(payload: bytes, name: str) -> pd.DataFrame:
    import pandas as pd

    if name.lower().endswith((".parquet", ".pq")):
        return pd.read_parquet(io.BytesIO(payload))
    return pd.read_csv(io.BytesIO(payload))


def _call_loader(ref: str) -> pd.DataFrame:
    """The user's loader's DataFrame (``path/to/file.py:function``, called without arguments)."""
    import pandas as pd

    from core import usercode

    try:
        loader = usercode.load(ref)
    except usercode.UserCodeError as exc:
        raise WorkflowError(f"data source {exc}") from None
    frame = loader()
    if not isinstance(frame, pd.DataFrame):
        raise WorkflowError(f"data source {ref}: returned {type(frame).__name__}, "
                            "expected a pandas DataFrame")
    return frame


def ingest_data(source: Source, target: str, s3_client=None) -> pd.DataFrame:
    """Read the raw data of ``source`` into a DataFrame.

    Args:
        source: where to read from (see :func:`parse_source`).
        target: name given to the target column of bundled datasets.
        s3_client: a boto3 S3 client, needed for ``s3://`` sources.

    Raises:
        WorkflowError: the source cannot be read.
    """
    import pandas as pd

    try:
        if source.kind == "bundled":
            import sklearn.datasets

            loader = getattr(sklearn.datasets, BUNDLED[source.location.split(":", 1)[1]][0])
            bunch = loader(as_frame=True)
            return bunch.frame.rename(columns={"target": target})
        if source.kind == "file":
            if source.location.lower().endswith((".parquet", ".pq")):
                return pd.read_parquet(source.location)
            return pd.read_csv(source.location)
        if source.kind == "s3":
            bucket, key = _split_s3(source.location)
            body = s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()
            return _read_bytes(body, key)
        if source.kind == "function":
            return _call_loader(source.location)
        import sqlalchemy

        engine = sqlalchemy.create_engine(source.location)
        try:
            with engine.connect() as conn:
                return pd.read_sql_query(sqlalchemy.text(source.query), conn)
        finally:
            engine.dispose()
    except WorkflowError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader error is reported in one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WorkflowError(f"cannot read {source}: {first}") from exc
