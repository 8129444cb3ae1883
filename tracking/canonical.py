"""The WSGI guard on MLflow's routes: every write reaches MLflow with one set of parameters.

Three readers look at a request's parameters: MLflow's permission check, the governance app's
guard (:mod:`tracking.governance`) and MLflow's handler. :class:`CanonicalParams` runs before
all of them (it wraps the Flask app's WSGI callable), so they read the same parameters.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import urllib.parse

_logger = logging.getLogger(__name__)


def _route_path(path: str) -> str:
    """``path`` without MLflow's static prefix (``mlflow server --static-prefix``)."""
    from mlflow.server.handlers import STATIC_PREFIX_ENV_VAR

    prefix = os.environ.get(STATIC_PREFIX_ENV_VAR, "").rstrip("/")
    if prefix and (path == prefix or path.startswith(prefix + "/")):
        return path[len(prefix) :]
    return path


_MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# MLflow's handler reads a DELETE's or PATCH's body whatever its content type; its permission
# check reads that body only when the content type is JSON (else the query string).
_BODY_WHATEVER_TYPE = frozenset({"DELETE", "PATCH"})
_API_PATH = re.compile(r"^/(?:api|ajax-api)/\d+\.\d+/")
# Bodies that are files, not parameters: artifact uploads.
_FILE_BODY_PATH = re.compile(r"/mlflow-artifacts/|/mlflow/upload-artifact$")


class CanonicalParams:
    """WSGI middleware: every write reaches MLflow with one set of parameters.

    Three readers look at a request's parameters: MLflow's permission check (the query string
    of a non-JSON DELETE, else the JSON body), :func:`_guard` and MLflow's handler (the body of
    any DELETE or PATCH whatever its content type, parsed again when it is a JSON string, with
    protobuf's camelCase field names). Before any of them runs, a write to the API

    * is refused (400) when its query string and its body name different objects;
    * gets the body the handler reads, as plain JSON (a double-encoded body decoded, camelCase
      top-level fields under their proto names) and, for a DELETE or PATCH, a JSON content type,
      so the permission check reads that same body.

    A POST or PUT keeps its content type: MLflow refuses a non-JSON one, which is also what
    keeps a cross-site form from writing.
    """

    def __init__(self, wsgi_app, flask_app, fields: dict[tuple[str, str], dict[str, str]]):
        self.wsgi_app = wsgi_app
        self.flask_app = flask_app
        self.fields = fields  # (rule, method) -> {json name: proto name}

    def __call__(self, environ, start_response):
        """Canonicalize a write, or answer 400; anything else passes untouched."""
        method = environ.get("REQUEST_METHOD", "")
        path = _route_path(environ.get("PATH_INFO", ""))
        if method not in _MUTATING or not _API_PATH.match(path) or _FILE_BODY_PATH.search(path):
            return self.wsgi_app(environ, start_response)
        from werkzeug.exceptions import HTTPException

        try:
            error = self._canonicalize(environ, method)
        except HTTPException as exc:  # a body beyond the server's limit
            return exc(environ, start_response)
        if error is None:
            return self.wsgi_app(environ, start_response)
        from werkzeug.wrappers import Response

        _logger.warning("refused %s %s: %s", method, environ.get("PATH_INFO"), error)
        body = json.dumps({"error_code": "INVALID_PARAMETER_VALUE", "message": error})
        return Response(body, 400, mimetype="application/json")(environ, start_response)

    def _canonicalize(self, environ, method: str) -> str | None:
        from werkzeug.wsgi import get_input_stream

        limit = self.flask_app.config.get("MAX_CONTENT_LENGTH")
        raw = get_input_stream(environ, max_content_length=limit).read()
        names = self._names(environ, method)
        body, rewritten = _handler_body(raw, names)
        if rewritten:
            raw = json.dumps(body).encode()
        environ["wsgi.input"] = io.BytesIO(raw)
        environ["CONTENT_LENGTH"] = str(len(raw))
        if not isinstance(body, dict):
            return None
        query = urllib.parse.parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        for key, value in query:
            field = names.get(key, key)
            if field in body and value not in _as_query_values(body[field]):
                return (
                    f"the query string says {field}={value!r} but the body says "
                    f"{field}={body[field]!r}: send a write's parameters in its body only"
                )
        if method in _BODY_WHATEVER_TYPE:
            environ["CONTENT_TYPE"] = "application/json"
        return None

    def _names(self, environ, method: str) -> dict[str, str]:
        from werkzeug.exceptions import HTTPException

        try:
            rule, _ = self.flask_app.url_map.bind_to_environ(environ).match(
                method=method, return_rule=True
            )
        except HTTPException:
            return {}
        return self.fields.get((rule.rule, method), {})


def _handler_body(raw: bytes, names: dict[str, str]) -> tuple[object, bool]:
    """The body as MLflow's handler reads it, and whether that differs from ``raw``'s JSON.

    As ``_get_normalized_request_json``: JSON whatever the content type; a JSON string is
    parsed again (older clients); nothing parsable is no parameters.
    """
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        return None, False
    rewritten = False
    if isinstance(body, str):
        try:
            body, rewritten = json.loads(body), True
        except ValueError:
            return body, False
    if isinstance(body, dict):
        for json_name, name in names.items():
            if json_name in body and name not in body:
                body[name] = body.pop(json_name)
                rewritten = True
    return body, rewritten


def _as_query_values(value) -> set[str]:
    """The query-string spellings of a JSON value (``true``, ``3``, each item of a list)."""
    items = value if isinstance(value, list) else [value]
    out = set()
    for item in items:
        if isinstance(item, bool):
            out |= {str(item).lower(), str(item)}
        elif isinstance(item, str | int | float):
            out.add(str(item))
        else:
            out.add(json.dumps(item))
    return out


def _camel_case_fields() -> dict[tuple[str, str], dict[str, str]]:
    """``(Flask rule, method) -> {camelCase name: proto name}`` of every MLflow service route."""
    from mlflow.server.handlers import get_endpoints

    out: dict[tuple[str, str], dict[str, str]] = {}
    for path, message, methods in get_endpoints(lambda request_class: request_class):
        descriptor = getattr(message, "DESCRIPTOR", None)
        if descriptor is None or not hasattr(descriptor, "fields"):
            continue  # a view function, not a request message
        names = {f.json_name: f.name for f in descriptor.fields if f.json_name != f.name}
        for method in methods:
            out[(path, method)] = names
    return out
