"""THE URL redaction: database URLs through SQLAlchemy, any other URL through urllib."""

from __future__ import annotations

import pytest

from core.redaction import redact_text, redact_url


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://me:s3cret@db:5432/x", "postgresql://me:***@db:5432/x"),
    ("postgresql+psycopg://mlflow:p%40ss@db/mlflow?sslmode=require",
     "postgresql+psycopg://mlflow:***@db/mlflow?sslmode=require"),
    ("mysql+pymysql://u:pw@h/db", "mysql+pymysql://u:***@h/db"),
    ("http://user:pass@host:5000/p?q=1#f", "http://user:***@host:5000/p?q=1#f"),
    ("https://u:p@h", "https://u:***@h"),
])
def test_a_password_is_shown_as_stars_and_the_rest_is_kept(url, shown):
    assert redact_url(url) == shown


@pytest.mark.parametrize("text", ["sqlite:///mlflow.db", "bundled:iris", "s3://bucket/key",
                                  "postgresql://me@db/x", "http://host:5000", "databricks",
                                  "not a url @ all"])
def test_text_without_a_password_comes_back_as_is(text):
    assert redact_url(text) == text


def test_a_password_is_masked_in_a_line_in_both_its_forms():
    uri = "postgresql+psycopg://mlflow:s3cr%2Fet@db:5432/mlflow"
    line = f"could not connect to {uri} (password s3cr/et)"
    assert redact_text(line, uri) == (
        "could not connect to postgresql+psycopg://mlflow:***@db:5432/mlflow (password ***)")
    assert redact_text("no secret here", "sqlite:///mlflow.db") == "no secret here"
