"""The tracking server's own app: MLflow's basic-auth app plus protected aliases and roles.

``mlflow server --app-name mlops-governance`` (what ``python -m tracking server --auth`` runs)
loads :func:`create_app` through the ``mlflow.app`` entry point of this project. MLflow's
permissions have no rule per alias: a user with EDIT on a registered model may set any alias,
and whoever creates a model becomes its MANAGE owner. On top of MLflow's checks this app

* refuses (403) setting or deleting a protected alias (``governance.protected_aliases``,
  default ``[champion]``) unless the caller is a release manager or an admin, on every route
  the REST API, the Python client and the UI use (``/api/2.0/...`` and ``/ajax-api/2.0/...``);
* refuses (403) deleting a model version or a registered model that holds a protected alias;
* stamps the authenticated user as ``by`` into every history record of an alias move
  (``mlops.history.*`` tags written by :func:`core.aliases.move_alias`) and into the
  ``mlops.promotion.<alias>.by`` version tag, so the history names who the server verified,
  not who the client said it was; a move of a protected alias it refuses is recorded in the
  history with the outcome ``refused`` (whether tried through the one alias move or over plain
  REST);
* refuses (403) a ``service`` user creating a registered model or an experiment (MLflow lets
  any signed-in user create them);
* gives a model's creator EDIT instead of MANAGE on it unless they are a release manager or an
  admin, so creating a model first does not beat the roles of the users file.

Who is a release manager comes from MLflow's own roles (3.17 has them, in the auth database):
``python -m tracking users apply`` assigns each ``release_manager`` the MLflow role of that
name in the default workspace. The server reads it from the same database it authenticates
against, so no second file has to be kept in step, and ``GET /api/2.0/mlflow/users/roles/list``
(MLflow's own API) shows it to an admin.
"""

from __future__ import annotations

import json
import logging
import os
import re

from core.aliases import HISTORY_TAG_PREFIX, PROMOTION_TAG_PREFIX

_logger = logging.getLogger(__name__)

PROTECTED_ALIASES_ENV = "MLOPS_PROTECTED_ALIASES"
DEFAULT_PROTECTED_ALIASES = ("champion",)
RELEASE_MANAGER_ROLE = "release_manager"
SERVICE_ROLE = "service"
# The project's roles, kept as MLflow roles of the same name (python -m tracking users apply).
ROLE_DESCRIPTIONS = {
    "data_scientist": "runs and versions; unprotected aliases (challenger)",
    "service": "reads; creates nothing",
    "release_manager": "may set and delete protected aliases (champion)",
    "admin": "the environment's admin",
}
ROLE_WORKSPACE = "default"  # MLflow's workspace when workspaces are off

_PREFIX = r"^/(?:api|ajax-api)/2\.0/mlflow/"
_ALIAS_ROUTE = re.compile(_PREFIX + r"registered-models/alias/?$")
_DELETE_VERSION_ROUTE = re.compile(_PREFIX + r"model-versions/delete/?$")
_DELETE_MODEL_ROUTE = re.compile(_PREFIX + r"registered-models/delete/?$")
_CREATE_MODEL_ROUTE = re.compile(_PREFIX + r"registered-models/create/?$")
# Creations MLflow allows any signed-in user (no resource to hold a permission on yet).
_CREATE_ROUTES = re.compile(_PREFIX + r"(?:registered-models|experiments)/create/?$")
_MODEL_TAG_ROUTE = re.compile(_PREFIX + r"registered-models/set-tag/?$")
_VERSION_TAG_ROUTE = re.compile(_PREFIX + r"model-versions/set-tag/?$")


def protected_aliases(env: dict | None = None) -> tuple[str, ...]:
    """The protected aliases the launcher passed (``MLOPS_PROTECTED_ALIASES``, JSON list)."""
    raw = (os.environ if env is None else env).get(PROTECTED_ALIASES_ENV)
    if not raw:
        return DEFAULT_PROTECTED_ALIASES
    return tuple(str(a) for a in json.loads(raw))


def refusal(username: str, verb: str, alias: str, name: str) -> str:
    """The message of a refused alias move: what was refused and who may do it."""
    return (
        f"{username} may not {verb} alias {alias!r} of {name}: {alias!r} is protected, only a "
        "release manager or an admin may set or delete it (python -m registry promote)"
    )


def _forbidden(message: str):
    from flask import jsonify

    resp = jsonify({"error_code": "PERMISSION_DENIED", "message": message})
    resp.status_code = 403
    return resp


def _params() -> dict:
    from flask import request

    params = dict(request.args.items())
    body = request.get_json(silent=True)
    if isinstance(body, dict):
        params.update(body)
    return params


def _roles(username: str) -> set[str]:
    """The project roles ``username`` holds (MLflow roles of the same name)."""
    from mlflow.server.auth import store

    user = store.get_user(username)
    return {r.name for r in store.list_user_roles(user.id) if r.name in ROLE_DESCRIPTIONS}


def is_release_manager_or_admin(username: str) -> bool:
    """Whether ``username`` is an admin or holds the ``release_manager`` role of MLflow's RBAC."""
    from mlflow.server.auth import store

    if store.get_user(username).is_admin:
        return True
    return RELEASE_MANAGER_ROLE in _roles(username)


def _registry_store():
    from mlflow.server.handlers import _get_model_registry_store

    return _get_model_registry_store()


def _held_protected(name: str, version: str | None, protected: tuple[str, ...]) -> list[str]:
    """The protected aliases held by version ``version`` of ``name`` (or by any of its versions)."""
    from mlflow.exceptions import MlflowException

    try:
        model = _registry_store().get_registered_model(name)
    except MlflowException:
        return []  # MLflow answers the missing model itself
    aliases = model.aliases  # {alias: version}
    return sorted(
        alias
        for alias, held in aliases.items()
        if alias in protected and (version is None or str(held) == str(version))
    )


def _guard():
    """Runs after MLflow's own authentication and permission checks (a Flask before_request)."""
    from flask import g, request

    username = getattr(g, "mlflow_authenticated_user", None)
    if username is None or request.method not in ("POST", "DELETE", "PATCH"):
        return None
    path = request.path
    if _CREATE_ROUTES.match(path) and _roles(username) == {SERVICE_ROLE}:
        return _forbidden(f"{username} is a service user: services read, they create nothing")
    if _MODEL_TAG_ROUTE.match(path):
        return _stamp_history_record(username)
    if _VERSION_TAG_ROUTE.match(path):
        return _stamp_promotion_by(username)
    alias_route = _ALIAS_ROUTE.match(path) and request.method in ("POST", "DELETE")
    version_route = _DELETE_VERSION_ROUTE.match(path) and request.method == "DELETE"
    model_route = _DELETE_MODEL_ROUTE.match(path) and request.method == "DELETE"
    if not (alias_route or version_route or model_route):
        return None
    protected = protected_aliases()
    params = _params()
    name = str(params.get("name", ""))
    if alias_route:
        alias = str(params.get("alias", ""))
        if alias in protected and not is_release_manager_or_admin(username):
            version = str(params["version"]) if request.method == "POST" else None
            message = refusal(username, _verb(request.method), alias, name)
            _record_refused_rest_move(username, name, alias, version, message)
            return _forbidden(message)
        return None
    version = str(params.get("version")) if version_route else None
    held = _held_protected(name, version, protected)
    if held:
        what = f"version {version} of {name}" if version_route else f"registered model {name}"
        return _forbidden(
            f"{what} holds the protected alias {', '.join(held)}: a release manager or an admin "
            "must move or delete that alias first"
        )
    return None


def _body() -> dict | None:
    """The request's JSON, as the MLflow handler will read it (Flask caches the parse)."""
    from flask import request

    body = request.get_json(force=True, silent=True)
    return body if isinstance(body, dict) else None


def _stamp_history_record(username: str):
    """A history record of an alias move: ``by`` is the caller; a protected move is refused.

    The handler then stores the record as rewritten here (the parsed body is shared).
    """
    body = _body()
    if body is None or not str(body.get("key", "")).startswith(HISTORY_TAG_PREFIX):
        return None
    try:
        record = json.loads(body.get("value") or "")
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    record["by"] = username
    name, alias = str(body.get("name", "")), str(record.get("alias", ""))
    refused = (
        alias in protected_aliases()
        and record.get("outcome") == "pending"
        and not is_release_manager_or_admin(username)
    )
    if refused:
        verb = "delete" if record.get("version") is None else "set"
        message = refusal(username, verb, alias, name)
        record.update(outcome="refused", refusal=message)
        _set_model_tag(name, body["key"], json.dumps(record, sort_keys=True))
        _logger.warning("refused the move %s: %s", record.get("id"), message)
        return _forbidden(message)
    body["value"] = json.dumps(record, sort_keys=True)
    return None


def _stamp_promotion_by(username: str):
    body = _body()
    key = str((body or {}).get("key", ""))
    if key.startswith(PROMOTION_TAG_PREFIX) and key.endswith(".by"):
        body["value"] = username
    return None


def _set_model_tag(name: str, key: str, value: str) -> None:
    from mlflow.entities.model_registry import RegisteredModelTag

    _registry_store().set_registered_model_tag(name, RegisteredModelTag(key, value))


def _record_refused_rest_move(
    username: str, name: str, alias: str, version: str | None, message: str
) -> None:
    """A protected alias set or deleted over plain REST: recorded as refused in the history."""
    import time
    import uuid

    from mlflow.exceptions import MlflowException

    at = int(time.time() * 1000)
    try:
        previous = _registry_store().get_registered_model(name).aliases.get(alias)
    except MlflowException:
        return  # no such model: MLflow's own answer follows
    attempt_id = f"{at:013d}-{uuid.uuid4().hex[:8]}"
    record = {
        "id": attempt_id, "alias": alias, "version": version,
        "previous": None if previous is None else str(previous), "by": username, "at": at,
        "reason": "over the REST API, not through the one alias move",
        "kind": "promote" if version is not None else "remove", "forced": False, "slot": 0,
        "outcome": "refused", "winner": None, "gates": [], "refusal": message,
    }  # fmt: skip
    _set_model_tag(name, HISTORY_TAG_PREFIX + attempt_id, json.dumps(record, sort_keys=True))


def _verb(method: str) -> str:
    return "set" if method == "POST" else "delete"


def _creator_gets_edit(resp):
    """A model's creator keeps EDIT, not MANAGE, unless a release manager or an admin.

    Runs after MLflow's own after_request (which grants the creator MANAGE).
    """
    from flask import g, request

    if not (_CREATE_MODEL_ROUTE.match(request.path) and request.method == "POST"):
        return resp
    username = getattr(g, "mlflow_authenticated_user", None)
    if resp.status_code != 200 or username is None or is_release_manager_or_admin(username):
        return resp
    from mlflow.server.auth import store

    name = (resp.get_json(silent=True) or {}).get("registered_model", {}).get("name")
    if not name:
        return resp
    try:
        store.update_registered_model_permission(name, username, "EDIT")
        _logger.info("%s created %s: EDIT instead of MANAGE", username, name)
    except Exception:  # noqa: BLE001 - the grant may live elsewhere (a prompt); leave it
        _logger.warning("could not lower %s's permission on %s", username, name, exc_info=True)
    return resp


def create_app():
    """MLflow's basic-auth app with this module's checks; the ``mlflow.app`` factory."""
    from mlflow.server import app
    from mlflow.server.auth import create_app as create_auth_app

    from tracking.store import install

    install()  # the runs search of tracking.store, as without --auth

    # Flask runs after_request hooks in reverse order of registration: registered before the
    # auth app's, this one runs after it (when the creator's MANAGE grant exists).
    app.after_request(_creator_gets_edit)
    wrapped = create_auth_app(app)
    # before_request hooks run in order: after the auth app's authentication and checks.
    app.before_request(_guard)
    return wrapped
