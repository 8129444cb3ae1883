"""The governance server's request routes: promotion requests, approvals and rejections.

``POST /api/2.0/mlops/requests/create|approve|reject`` and ``GET .../list``
(:data:`core.approvals.REQUEST_ROUTE_PREFIX`), answered by :func:`handle` for the user the
server authenticated. A request is the model's ``mlops.request.<id>`` tag
(:class:`core.approvals.Request`), written here only. The promotion route
(:mod:`tracking.promotions`) files one instead of moving an alias that needs approvals.

Rules, from the server's own configuration (:func:`core.approvals.approval_rule`):

* whoever may move the alias, or holds EDIT on the model, may request a move;
* an approver may move the alias (a protected one: a release manager or an admin), is not the
  requester and is not the version's author (the user recorded on its run or its version);
* a request expires ``expire_after`` after it is filed; a newer request for the same alias, or a
  move of the alias since the request, voids it;
* the last approval moves the alias through the one alias move, as the requester, its record
  naming the approvers; the version's card goes PendingReview at the request, Approved at the
  move.

Answers are JSON with ``"route": "governance.requests"``: 200, 400 bad request, 403 refused,
404 unknown request, model or version, 409 the request is no longer open.
"""

from __future__ import annotations

import logging

from core.aliases import now_ms, read_state
from core.approvals import REQUEST_ROUTE_ID, Request, approval_rule, requests_of
from core.errors import LostRace, MlopsError

_logger = logging.getLogger(__name__)

ACTIONS = ("create", "approve", "reject", "list")


class Refused(Exception):
    """A request the route refuses: the status code and the one-line message."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def _answer(code: int, **body):
    from flask import jsonify

    resp = jsonify({"route": REQUEST_ROUTE_ID, **body})
    resp.status_code = code
    return resp


def _client():
    from tracking.promotions import server_client

    return server_client()


def needs_approvals(name: str, alias: str) -> bool:
    """Whether a move of ``alias`` of ``name`` waits for approvals (the server's policy)."""
    return approval_rule(name, alias).approvals > 0


def _may_move(username: str, name: str, alias: str) -> bool:
    from tracking.governance import _may_edit_model, is_release_manager_or_admin, protected_aliases

    if is_release_manager_or_admin(username):
        return True
    return alias not in protected_aliases() and _may_edit_model(username, name)


def _write(client, request: Request) -> Request:
    client.set_registered_model_tag(request.name, request.tag, request.to_json())
    return request


def _authors(client, name: str, version: str) -> list[str]:
    """Who created the version or its run (as MLflow recorded them)."""
    mv = client.get_model_version(name, version)
    found = [getattr(mv, "user_id", None)]
    if mv.run_id:
        try:
            run = client.get_run(mv.run_id)
            found += [run.info.user_id, run.data.tags.get("mlflow.user")]
        except Exception:  # noqa: BLE001 - a version whose run is gone keeps its own author
            _logger.warning("%s/%s: its run %s is not readable", name, version, mv.run_id)
    return sorted({str(a) for a in found if a})


def _card(client, name: str, version: str, status: str, review: dict | None = None) -> None:
    from core.cards import CardError, card_status, set_card_status

    try:
        if card_status(client, name, version) not in (None, status):
            set_card_status(client, name, version, status, review)
    except CardError as exc:
        _logger.warning("%s/%s: its card stays as it is: %s", name, version, exc)


def _find(client, request_id: str) -> Request:
    token = None
    key = Request(request_id, "", "", "", "", 0, "", 0, 0).tag
    while True:
        page = client.search_registered_models(page_token=token)
        for model in page:
            tags = (
                model.tags if isinstance(model.tags, dict) else {t.key: t.value for t in model.tags}
            )
            if key in tags:
                return Request.from_json(tags[key])
        token = getattr(page, "token", None)
        if not token:
            raise Refused(404, f"no promotion request {request_id!r}")


def file_request(username: str, body: dict, state=None) -> dict:
    """File a request (the create route, and the promotion route for an alias that needs one).

    Returns:
        The answer's body: ``{status: requested|executed, request}``.

    Raises:
        Refused: bad request, not allowed, or (no approvals needed) the move failed.
    """
    from core.aliases import new_attempt_id

    client = _client()
    name, alias = str(body.get("name") or ""), str(body.get("alias") or "")
    version = str(body.get("version") or "")
    reason = str(body.get("reason") or "")
    if not (name and alias and version and reason):
        raise Refused(400, "a request names a model, a version, an alias and a reason")
    if not _may_move(username, name, alias):
        raise Refused(
            403, f"{username} may not request a move of {alias!r} of {name}: no EDIT on {name}"
        )
    authors = _authors(client, name, version)  # 404: no such version
    rule = approval_rule(name, alias)
    state = state or read_state(client, name, alias)
    if state.holder == version:
        raise Refused(400, f"{name}/{version} is already {alias}; nothing to request")
    at = now_ms()
    request = Request(
        id=new_attempt_id(at),
        name=name,
        alias=alias,
        version=version,
        by=username,
        at=at,
        reason=reason,
        required=rule.approvals,
        expires_at=at + rule.expire_seconds * 1000,
        authors=authors,
        gates=list(body.get("gates") or []),
        forced=bool(body.get("forced")),
        expect_slot=state.slot,
        expect_holder=state.holder,
    )
    model = client.get_registered_model(name)
    for older in requests_of(model):
        if older.alias == alias and older.state(at) == "open":
            _write(
                client,
                older.but(
                    status="void",
                    closed={
                        "by": username,
                        "at": at,
                        "reason": f"superseded by request {request.id}",
                    },
                ),
            )
    _write(client, request)
    _card(client, name, version, "PendingReview",
          {"request": request.id, "by": username, "at": at, "reason": reason, "alias": alias,
           "approvals": [], "gates": request.gates})  # fmt: skip
    if request.required == 0:
        return _execute(client, request)
    _logger.info("request %s: %s/%s to %s by %s", request.id, name, version, alias, username)
    return {"status": "requested", "request": request.to_dict(at)}


def _execute(client, request: Request):
    """Move the alias for an approved request; record the move and its approvals in one step."""
    from core.aliases import AliasState, move_alias
    from tracking.promotions import approve_card

    at = now_ms()
    state = read_state(client, request.name, request.alias)
    if (state.slot, state.holder) != (request.expect_slot, request.expect_holder):
        held = f"version {state.holder}" if state.holder else "no version"
        why = f"{request.alias!r} of {request.name} moved to {held} since the request"
        _write(client, request.but(status="void", closed={"by": "server", "at": at, "reason": why}))
        raise Refused(409, f"request {request.id} is void: {why}")
    try:
        outcome = move_alias(client, request.name, request.version, request.alias,
                             request.reason, by=request.by, kind="promote",
                             forced=request.forced, gates=request.gates,
                             state=AliasState(state.slot, state.holder), request=request.id,
                             approvals=request.approvals)  # fmt: skip
    except LostRace as exc:
        _write(
            client,
            request.but(status="void", closed={"by": "server", "at": at, "reason": str(exc)}),
        )
        raise Refused(409, f"request {request.id} is void: {exc}") from None
    attempt = outcome.attempt
    done = _write(client, request.but(status="executed", attempt=attempt.id if attempt else None))
    if attempt is not None and outcome.status == "promoted":
        approve_card(client, request.name, request.version, attempt)
    return {
        "status": "executed",
        "request": done.to_dict(),
        "previous": outcome.previous,
        "attempt": attempt.to_json() if attempt else None,
    }


def _open(client, request_id: str) -> Request:
    request = _find(client, str(request_id or ""))
    at = now_ms()
    state = request.state(at)
    if state == "expired" and request.status == "open":
        _write(client, request.but(status="expired"))
    if state != "open":
        raise Refused(409, f"request {request.id} is {state}; nothing changed")
    return request


def approve(username: str, body: dict):
    """One approval; the last one moves the alias."""
    client = _client()
    request = _open(client, body.get("id"))
    ref = f"{request.name}/{request.version}"
    if username == request.by:
        raise Refused(
            403,
            f"{username} filed request {request.id}: a requester never approves "
            "their own request (a second release manager approves it)",
        )
    if username in request.authors:
        raise Refused(
            403,
            f"{username} is an author of {ref} (created its run or version): an "
            "author never approves its promotion",
        )
    if not _may_move(username, request.name, request.alias):
        raise Refused(
            403,
            f"{username} may not approve a move of {request.alias!r} of "
            f"{request.name}: only a release manager or an admin may",
        )
    if any(a.get("by") == username for a in request.approvals):
        raise Refused(409, f"{username} already approved request {request.id}")
    approval = {"by": username, "at": now_ms(), "reason": str(body.get("reason") or "")}
    request = request.but(approvals=[*request.approvals, approval])
    if len(request.approvals) >= request.required:
        return _execute(client, request)
    _write(client, request)
    return {"status": "open", "request": request.to_dict()}


def reject(username: str, body: dict):
    """Close a request (an approver, or the requester withdrawing it)."""
    client = _client()
    request = _open(client, body.get("id"))
    reason = str(body.get("reason") or "")
    if not reason:
        raise Refused(400, "a rejection gives a reason")
    if username != request.by and not _may_move(username, request.name, request.alias):
        raise Refused(
            403,
            f"{username} may not reject request {request.id}: only the requester "
            "or a user who may approve it",
        )
    done = _write(
        client,
        request.but(status="rejected", closed={"by": username, "at": now_ms(), "reason": reason}),
    )
    _card(client, request.name, request.version, "Draft")
    return {"status": "rejected", "request": done.to_dict()}


def listing(username: str, args: dict):
    """The requests of one model (``name``) or of every model the user may read."""
    from mlflow.server.auth import _get_registered_model_permission

    client = _client()
    name = args.get("name")
    models = [client.get_registered_model(name)] if name else []
    token = None
    while not name:
        page = client.search_registered_models(page_token=token)
        models += list(page)
        token = getattr(page, "token", None)
        if not token:
            break
    from tracking.governance import is_release_manager_or_admin

    at = now_ms()
    privileged = is_release_manager_or_admin(username)
    found = []
    for model in models:
        try:
            readable = privileged or _get_registered_model_permission(model.name).can_read
        except Exception:  # noqa: BLE001 - no permission row: MLflow's default decides
            readable = False
        if readable:
            found += [r.to_dict(at) for r in requests_of(model)]
    return {"requests": sorted(found, key=lambda r: r["id"])}


def handle(action: str, username: str, body: dict, args: dict):
    """Answer one call of the request routes."""
    from mlflow.exceptions import MlflowException

    from core.lookup import not_found

    try:
        if action == "create":
            return _answer(200, **file_request(username, body))
        if action == "approve":
            return _answer(200, **approve(username, body))
        if action == "reject":
            return _answer(200, **reject(username, body))
        return _answer(200, **listing(username, args))
    except Refused as exc:
        return _answer(exc.code, error_code="REFUSED", message=str(exc))
    except MlflowException as exc:
        if not_found(exc):
            return _answer(404, error_code="RESOURCE_DOES_NOT_EXIST", message=exc.message)
        raise
    except MlopsError as exc:
        return _answer(400, error_code="INVALID_PARAMETER_VALUE", message=str(exc))
