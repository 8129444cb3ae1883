"""Fresh PostgreSQL databases on the machine's server, one per test run or server."""

from __future__ import annotations

import contextlib
import os
import uuid

PG_ADMIN = os.environ.get("TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432")


@contextlib.contextmanager
def fresh_pg_database(template: str | None = None):
    """A fresh PostgreSQL database, optionally a copy of ``template``; dropped afterwards."""
    import psycopg

    name = f"mlops_test_{uuid.uuid4().hex[:12]}"
    copy = f' TEMPLATE "{template}"' if template else ""
    with psycopg.connect(f"{PG_ADMIN}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"{copy}')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(f"{PG_ADMIN}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
