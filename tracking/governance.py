"""The tracking server's own app: MLflow's basic-auth app plus protected aliases and roles.

``mlflow server --app-name mlops-governance`` (what ``python -m tracking server --auth`` runs)
loads :func:`create_app` through the ``mlflow.app`` entry point of this project. MLflow's
permissions have no rule per alias: a user with EDIT on a registered model may set any alias,
and whoever creates a model becomes its MANAGE owner. On top of MLflow's checks this app

* refuses (403) setting or deleting a protected alias (``governance.protected_aliases``,
  default ``[champion]``) unless the caller is a release manager or an admin, on every route
  the REST API, the Python client and the UI use (``/api/2.0/...`` and ``/ajax-api/2.0/...``);
* refuses (403) deleting a model version or a registered model that holds a protected alias
  (for everyone: the alias moves first), and renaming such a model, or renaming another model
  onto a production name (one that holds a protected alias, or held one in the ledger of alias
  moves), unless the caller is a release manager or an admin; every such refusal is recorded in
  the model's history like a refused alias move (outcome ``refused``);
* decides every write on the parameters MLflow's handler acts on
  (:class:`tracking.canonical.CanonicalParams`, in front of MLflow's own permission check):
  a write whose query string and body name different objects is refused (400), and a DELETE
  or PATCH body is read as JSON by the permission check whatever its content type, as the
  handler reads it;
* stamps the authenticated user as ``by`` into every history record of an alias move
  (``mlops.history.*`` tags written by :func:`core.aliases.move_alias`) and into the
  ``mlops.promotion.<alias>.by`` version tag, so the history names who the server verified,
  not who the client said it was; a move of a protected alias it refuses is recorded in the
  history with the outcome ``refused`` (whether tried through the one alias move or over plain
  REST);
* refuses (403) a ``service`` user creating a registered model or an experiment (MLflow lets
  any signed-in user create them);
* gives a model's (or a prompt's) creator EDIT instead of MANAGE on it unless they are a release
  manager or an admin, so creating a model first does not beat the roles of the users file.

Routes match with and without MLflow's static prefix (``mlflow server --static-prefix``).

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

from core.aliases import SERVER_MOVE_PATH, refused_attempt
from core.approvals import REQUEST_ROUTE_PREFIX
from core.cards import DRAFT as CARD_DRAFT
from core.ledger import LEDGER_EXPERIMENT, parse_claim
from core.names import (
    CARD_REVIEW_TAG,
    CARD_STATUS_TAG,
    COPIED_TO_PREFIX,
    HISTORY_TAG_PREFIX,
    PREFIX,
    PROMOTION_TAG_PREFIX,
    SHADOW_RUN_TAG,
)
from tracking.canonical import (
    _API_PATH,
    _FILE_BODY_PATH,
    CanonicalParams,
    _camel_case_fields,
    _route_path,
)

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

_PREFIX = r"^/(?:api|ajax-api)/2\.0/mlflow/"  # matched after MLflow's static prefix is cut
_ALIAS_ROUTE = re.compile(_PREFIX + r"registered-models/alias/?$")
_DELETE_VERSION_ROUTE = re.compile(_PREFIX + r"model-versions/delete/?$")
_DELETE_MODEL_ROUTE = re.compile(_PREFIX + r"registered-models/delete/?$")
_RENAME_MODEL_ROUTE = re.compile(_PREFIX + r"registered-models/rename/?$")
_CREATE_MODEL_ROUTE = re.compile(_PREFIX + r"registered-models/create/?$")
# Creations MLflow allows any signed-in user (no resource to hold a permission on yet).
_CREATE_ROUTES = re.compile(_PREFIX + r"(?:registered-models|experiments)/create/?$")
# Tag writes on models and versions (set and delete): mlops.* tags are the server's record.
_TAG_ROUTE = re.compile(_PREFIX + r"(?:registered-models|model-versions)/(?:set|delete)-tag/?$")
# Creations that take tags: a new model or version may not bring a record of moves with it.
_CREATE_WITH_TAGS = re.compile(_PREFIX + r"(?:registered-models|model-versions)/create/?$")
# The experiment routes that name an experiment by name (create, rename).
_EXPERIMENT_NAMING = re.compile(_PREFIX + r"experiments/(?:create|update)/?$")
# Reads MLflow takes as a POST (searches, bulk gets): they write nothing.
_READ_BY_POST = re.compile(r"/(?:[\w-]*search[\w-]*|get[\w-]*)/?$")
_MOVE_ROUTE = re.compile("^" + re.escape(SERVER_MOVE_PATH) + "/?$")
_REQUEST_ROUTE = re.compile(
    "^" + re.escape(REQUEST_ROUTE_PREFIX) + r"(create|approve|reject|review|list)/?$"
)
#: mlops.* tags a user's tool may still set on a version: notes linking elsewhere, not the
#: record of a decision (registry copy's note on the source, the shadow run's link).
USER_TAG_PREFIXES = (COPIED_TO_PREFIX, SHADOW_RUN_TAG)
#: What a refused write of the server's record tells the user to run instead.
RECORD_COMMANDS = ("python -m registry promote / rollback (the server writes the move's record); "
                   "version tags come with the version (python -m projects main)")


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


def route_refusal(username: str, verb: str, alias: str, name: str) -> str:
    """The message of a protected alias written over MLflow's alias route (by anyone)."""
    return (
        f"{username} may not {verb} alias {alias!r} of {name} over MLflow's alias route: "
        f"{alias!r} is protected and moves only through the server's promotion route "
        "(python -m registry promote / rollback)"
    )


def _forbidden(message: str):
    from flask import jsonify

    resp = jsonify({"error_code": "PERMISSION_DENIED", "message": message})
    resp.status_code = 403
    return resp


def _bad_request(message: str):
    from flask import jsonify

    resp = jsonify({"error_code": "INVALID_PARAMETER_VALUE", "message": message})
    resp.status_code = 400
    return resp


def _params() -> dict:
    """The parameters MLflow's handler acts on: the body of a write, parsed as it parses it.

    :class:`CanonicalParams` has made the body the one the handler reads (a DELETE's JSON
    whatever its content type); the query string of a write only repeats it, or the request
    was refused.
    """
    from flask import request

    params = dict(_body() or {})
    params.update(request.view_args or {})
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
    if username is None or request.method not in ("POST", "PUT", "DELETE", "PATCH"):
        return None
    path = _route_path(request.path)
    if _CREATE_ROUTES.match(path) and _roles(username) == {SERVICE_ROLE}:
        return _forbidden(f"{username} is a service user: services read, they create nothing")
    if _API_PATH.match(path) and not (_FILE_BODY_PATH.search(path) or _READ_BY_POST.search(path)):
        ledger = _guard_ledger(username, path)
        if ledger is not None:
            return ledger
    if _TAG_ROUTE.match(path):
        return _guard_record_tag(username)
    if _CREATE_WITH_TAGS.match(path):
        return _guard_created_tags(username)
    if _RENAME_MODEL_ROUTE.match(path) and request.method == "POST":
        return _guard_rename(username)
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
        if alias in protected:  # for everyone: the move's record is the server's to write
            version = str(params.get("version")) if request.method == "POST" else None
            message = route_refusal(username, _verb(request.method), alias, name)
            _record_refusal(username, name, alias, version, message, "over the REST API, "
                            "not through the one alias move")  # fmt: skip
            return _forbidden(message)
        return None
    version = str(params.get("version")) if version_route else None
    held = _held_protected(name, version, protected)
    if held:
        what = f"version {version} of {name}" if version_route else f"registered model {name}"
        message = (
            f"{what} holds the protected alias {', '.join(held)}: a release manager or an admin "
            "must move or delete that alias first"
        )
        for alias in held:
            _record_refusal(username, name, alias, None, message, f"delete {what}")
        return _forbidden(message)
    return None


def _guard_rename(username: str):
    """A production model keeps its name, and no model takes a production name.

    Production: a name that holds a protected alias, or that held one in the ledger of alias
    moves (a model renamed away or deleted leaves its name there). Release managers and admins
    may rename; a refusal is recorded in the history of the model that holds the name.
    """
    params = _params()
    name, new_name = str(params.get("name", "")), str(params.get("new_name", ""))
    if not (name and new_name) or is_release_manager_or_admin(username):
        return None
    protected = protected_aliases()
    for target, taken_over in ((name, False), (new_name, True)):
        held = _held_protected(target, None, protected) or _held_in_ledger(target, protected)
        if not held:
            continue
        what = (f"rename {name} onto the production name {new_name}" if taken_over
                else f"rename the production model {name} to {new_name}")  # fmt: skip
        message = (
            f"{username} may not {what}: it holds or held the protected alias "
            f"{', '.join(held)}; only a release manager or an admin may"
        )
        # the record goes to the model that holds the name, else to the one being renamed
        where = target if _model_exists(target) else name
        for alias in held:
            _record_refusal(username, where, alias, None, message, what)
        return _forbidden(message)
    return None


def _model_exists(name: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        _registry_store().get_registered_model(name)
    except MlflowException:
        return False
    return True


def _held_in_ledger(name: str, protected: tuple[str, ...]) -> list[str]:
    """The protected aliases the ledger of alias moves ever gave a version of ``name``."""
    from core.errors import MlopsError
    from core.ledger import find_ledger
    from tracking.promotions import server_client

    try:
        ledger = find_ledger(server_client())
    except MlopsError:  # a damaged ledger: every move refuses to run; so does this rename
        return list(protected)
    if ledger is None:
        return []
    return sorted(
        alias
        for alias in protected
        if any(parse_claim(v).version for v in ledger.slots(name, alias).values())
    )


def _body() -> dict | None:
    """The request's JSON, as the MLflow handler will read it (Flask caches the parse)."""
    from flask import request

    body = request.get_json(force=True, silent=True)
    return body if isinstance(body, dict) else None


def _is_record_tag(key: str) -> bool:
    """Whether ``key`` is an ``mlops.*`` tag only the server writes on models and versions."""
    return key.startswith(PREFIX) and not key.startswith(USER_TAG_PREFIXES)


def _guard_record_tag(username: str):
    """``mlops.*`` tags on models and versions are the server's record: nobody sets or deletes one.

    The history of alias moves, the promotion tags and the version's evidence are written by the
    server (:mod:`tracking.promotions`) or come with the version when it is created.
    """
    params = _params()
    key = str(params.get("key", ""))
    if not _is_record_tag(key):
        return None
    name = str(params.get("name", ""))
    what = f"version {params['version']} of {name}" if params.get("version") else name
    verb = "delete" if "delete-tag" in request_path() else "set"
    message = (f"{username} may not {verb} the tag {key} of {what}: {PREFIX}* tags on models "
               f"and versions are written by the tracking server only; use {RECORD_COMMANDS}")
    _logger.warning("refused: %s", message)
    return _forbidden(message)


def request_path() -> str:
    """The request's path without MLflow's static prefix."""
    from flask import request

    return _route_path(request.path)


def _server_owned_at_creation(tag: dict) -> bool:
    """Whether a creation tag is one only the server writes.

    A move's record, a card's review, or a card status past Draft (a version is registered
    with a Draft card, core.cards).
    """
    key, value = str(tag.get("key", "")), str(tag.get("value", ""))
    if key == CARD_STATUS_TAG:
        return value != CARD_DRAFT
    return key == CARD_REVIEW_TAG or key.startswith((HISTORY_TAG_PREFIX, PROMOTION_TAG_PREFIX))


def _guard_created_tags(username: str):
    """A new model or version may not bring records the server keeps (moves, card reviews)."""
    body = _body() or {}
    tags = body.get("tags") if isinstance(body.get("tags"), list) else []
    owned = sorted(str(t.get("key")) for t in tags
                   if isinstance(t, dict) and _server_owned_at_creation(t))
    if not owned:
        return None
    return _forbidden(f"{username} may not create {body.get('name')} with the tags "
                      f"{', '.join(owned)}: the record of alias moves and card reviews is written "
                      f"by the tracking server only; use {RECORD_COMMANDS}")


#: The ledger's experiment and run ids, once the ledger exists (they never change then).
_LEDGER_IDS: dict[str, object] = {}


def _ledger_ids() -> tuple[str | None, frozenset[str]]:
    """``(experiment id, run ids)`` of the ledger of alias moves (None and no runs before it)."""
    if _LEDGER_IDS:
        return _LEDGER_IDS["experiment"], _LEDGER_IDS["runs"]
    from mlflow.entities import ViewType
    from mlflow.server.handlers import _get_tracking_store

    store = _get_tracking_store()
    exp = store.get_experiment_by_name(LEDGER_EXPERIMENT)
    if exp is None:
        return None, frozenset()
    runs = store.search_runs([exp.experiment_id], "", ViewType.ALL, 10, None)
    ids = frozenset(r.info.run_id for r in runs)
    if ids:  # bootstrap finished: cache
        _LEDGER_IDS.update(experiment=exp.experiment_id, runs=ids)
    return exp.experiment_id, ids


def _guard_ledger(username: str, path: str):
    """Nobody writes the ledger of alias moves over MLflow's routes: the server writes it."""
    params = _params()
    named = {str(params.get(k, "")) for k in ("name", "new_name")}
    touches = _EXPERIMENT_NAMING.match(path) and LEDGER_EXPERIMENT in named
    ids = {k: params.get(k) for k in ("experiment_id", "experiment_ids", "run_id", "run_uuid",
                                      "run_ids")}  # fmt: skip
    if not touches and any(v not in (None, "", []) for v in ids.values()):
        experiment, runs = _ledger_ids()
        mentioned = set()
        for value in ids.values():
            mentioned |= {str(v) for v in (value if isinstance(value, list) else [value])}
        touches = (experiment is not None and experiment in mentioned) or bool(runs & mentioned)
    if not touches:
        return None
    message = (f"{username} may not write the ledger of alias moves (experiment "
               f"{LEDGER_EXPERIMENT}): the tracking server writes it; move aliases with "
               "python -m registry promote / rollback")
    _logger.warning("refused: %s", message)
    return _forbidden(message)


def _set_model_tag(name: str, key: str, value: str) -> None:
    from mlflow.entities.model_registry import RegisteredModelTag

    _registry_store().set_registered_model_tag(name, RegisteredModelTag(key, value))


def _record_refusal(
    username: str, name: str, alias: str, version: str | None, message: str, reason: str
) -> None:
    """A refused write on a protected alias, recorded in ``name``'s history as ``refused``.

    The one record of every refusal: an alias set (``version``) or deleted (None) over plain
    REST, and a delete or rename that would take the alias away. Same schema as the records of
    :func:`core.aliases.move_alias` (``registry history`` lists them).
    """
    from mlflow.exceptions import MlflowException

    try:
        previous = _registry_store().get_registered_model(name).aliases.get(alias)
    except MlflowException:
        return  # no such model: MLflow's own answer follows
    from core.audit import link
    from tracking.promotions import server_client

    record = refused_attempt(alias, version, None if previous is None else str(previous),
                             username, reason, message)
    record = link(server_client(), name, record)
    _set_model_tag(name, record.tag, record.to_json())
    _logger.warning("refused %s: %s", reason, message)


def _verb(method: str) -> str:
    return "set" if method == "POST" else "delete"


def _creator_gets_edit(resp):
    """A model's or a prompt's creator keeps EDIT, not MANAGE, unless a release manager or an admin.

    Runs after MLflow's own after_request, which grants the creator MANAGE in the namespace of
    what was created: ``prompt`` for a model tagged ``mlflow.prompt.is_prompt``, else
    ``registered_model``. The same upsert lowers it in that namespace.
    """
    from flask import g, request

    path = _route_path(request.path)
    if not (_CREATE_MODEL_ROUTE.match(path) and request.method == "POST"):
        return resp
    username = getattr(g, "mlflow_authenticated_user", None)
    if resp.status_code != 200 or username is None or is_release_manager_or_admin(username):
        return resp
    from mlflow.prompt.constants import IS_PROMPT_TAG_KEY
    from mlflow.server.auth import store

    model = (resp.get_json(silent=True) or {}).get("registered_model", {})
    name = model.get("name")
    if not name:
        return resp
    # the last tag of the key wins, as in MLflow's own classification of the grant
    marker = {t.get("key"): str(t.get("value", "")) for t in model.get("tags", [])}
    kind = "prompt" if marker.get(IS_PROMPT_TAG_KEY, "").lower() == "true" else "registered_model"
    store.grant_user_permission(username, kind, name, "EDIT")
    _logger.info("%s created %s %s: EDIT instead of MANAGE", username, kind, name)
    return resp


def _may_edit_model(username: str, name: str) -> bool:
    """Whether ``username`` holds EDIT (or more) on registered model ``name`` (MLflow's check)."""
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth import _get_registered_model_permission

    try:
        return _get_registered_model_permission(name).can_update
    except MlflowException:
        return False


def _own_routes():
    """The server's own routes (the promotion route), answered before MLflow's checks.

    MLflow's auth app refuses a route it does not know (fail-closed); this hook authenticates
    the caller the same way and answers, so the route's own rules apply (tracking.promotions).
    """
    from flask import g, request

    path = _route_path(request.path)
    requests_route = _REQUEST_ROUTE.match(path)
    if not (_MOVE_ROUTE.match(path) or requests_route):
        return None
    from mlflow.server.auth import authenticate_request

    from tracking.promotions import handle_move

    authorization = authenticate_request()
    if not hasattr(authorization, "username"):
        return authorization  # MLflow's 401
    if requests_route:  # promotion requests and approvals (tracking.requests)
        from tracking.requests import handle

        action = requests_route[1]
        if request.method != ("GET" if action == "list" else "POST"):
            return _bad_request(f"the request route {action} takes a "
                                f"{'GET' if action == 'list' else 'POST'}")
        g.mlflow_authenticated_user = authorization.username
        return handle(action, authorization.username, _body() or {}, request.args.to_dict())
    if request.method != "POST":
        return _bad_request("the promotion route takes a POST")
    g.mlflow_authenticated_user = username = authorization.username
    return handle_move(username, _body() or {}, protected_aliases(), is_release_manager_or_admin,
                       _may_edit_model, _record_refusal)


def create_app():
    """MLflow's basic-auth app with this module's checks; the ``mlflow.app`` factory."""
    from mlflow.server import app
    from mlflow.server.auth import create_app as create_auth_app

    from tracking.store import install

    install()  # the runs search of tracking.store, as without --auth

    # In front of everything Flask runs (MLflow's permission check included): one set of
    # parameters for the permission check, the guard and the handler.
    app.wsgi_app = CanonicalParams(app.wsgi_app, app, _camel_case_fields())
    # Flask runs after_request hooks in reverse order of registration: registered before the
    # auth app's, this one runs after it (when the creator's MANAGE grant exists).
    app.after_request(_creator_gets_edit)
    # before MLflow's authentication hook: the promotion route authenticates and answers itself
    app.before_request(_own_routes)
    wrapped = create_auth_app(app)
    # before_request hooks run in order: after the auth app's authentication and checks.
    app.before_request(_guard)
    return wrapped
