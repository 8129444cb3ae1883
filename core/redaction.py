"""THE URL redaction: a password in a URL never reaches a log line, a tag or an artifact.

Database URLs (``postgresql+psycopg://user:secret@db/mlflow``) are rendered by SQLAlchemy,
as MLflow's stores parse them; any other URL (``http://user:secret@host``) by
:mod:`urllib.parse`. Both keep the user and show the password as ``***``.
"""

from __future__ import annotations

import urllib.parse

MASK = "***"


def _scheme(text: str) -> str:
    return text.split("://", 1)[0].split("+", 1)[0].lower() if "://" in text else ""


def _sql_url(text: str):
    """SQLAlchemy's parse of a database URL, else None (imported only for one)."""
    from core.connection import SQL_SCHEMES

    if _scheme(text) not in SQL_SCHEMES:
        return None
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(text)
    except (ArgumentError, ValueError):
        return None


def password_of(url: str) -> str | None:
    """The password ``url`` carries (decoded), else None."""
    sql = _sql_url(url)
    if sql is not None:
        return sql.password or None
    try:
        return urllib.parse.urlsplit(url).password or None
    except ValueError:
        return None


def redact_url(url: str) -> str:
    """``url`` with its password shown as ``***``; anything without one comes back as is.

    Args:
        url: a database URL, an http(s) address, or any text (``bundled:iris``, a path).
    """
    if "@" not in url or "://" not in url:
        return url
    sql = _sql_url(url)
    if sql is not None:
        return sql.render_as_string(hide_password=True) if sql.password else url
    try:
        parts = urllib.parse.urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    if not password:
        return url
    user, _, host = parts.netloc.rpartition("@")
    name = user.split(":", 1)[0]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{name}:{MASK}@{host}"))


def redact_text(text: str, url: str) -> str:
    """``text`` (a log line, an error) with the password of ``url`` masked wherever it appears.

    Both the password and its URL-encoded form are masked: a driver may print either.
    """
    password = password_of(url)
    if not password:
        return text
    for form in (urllib.parse.quote(password, safe=""), password):
        text = text.replace(form, MASK)
    return text
