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
* a request binds its evidence (:mod:`core.evidence`: the model files as the server's artifact
  store holds them, metrics, gate results, lineage, the card): the server computes it again at
  each approval and at execution, and any difference voids the request (409, naming what
  changed);
* the last approval moves the alias through the one alias move, as the requester, its record
  naming the approvers and the evidence digest; the version's card goes PendingReview at the
  request, Approved at the move;
* an emergency rollback (``registry rollback --emergency``, a release manager or an admin)
  moves the alias at once, recorded as an emergency, and files a record ``needs-review`` that
  a second release manager closes with a review (``registry review``).

Answers are JSON with ``"route": "governance.requests"``: 200, 400 bad request, 403 refused,
404 unknown request, model or version, 409 the request is no longer open (or its evidence
changed).
"""

from __future__ import annotations

import logging

from core.aliases import now_ms, read_state
from core.approvals import (
    NEEDS_REVIEW,
    REQUEST_KINDS,
    REQUEST_ROUTE_ID,
    REVIEWED,
    Request,
    approval_rule,
    requests_of,
)
from core.errors import LostRace
from core.evidence import Evidence, gather
from tracking.answers import Refused, answer, error_answer

_logger = logging.getLogger(__name__)

ACTIONS = ("create", "approve", "reject", "review", "list")


def _answer(code: int, **body):
    return answer(REQUEST_ROUTE_ID, code, **body)


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


def server_fetch(uri: str, folder: str) -> str:
    """Download artifact ``uri`` (a file or a folder) from the server's own artifact store.

    ``mlflow-artifacts:/path`` is the proxied store (``--artifacts-destination``), read
    directly; ``runs:/`` and ``models:/m-...`` are resolved through the tracking store.
    """
    import urllib.parse

    from mlflow.server.handlers import _get_artifact_repo_mlflow_artifacts, _get_tracking_store

    parsed = urllib.parse.urlparse(uri)
    # runs:/<id>/<path> and models:/<id>/<path>: the id is the path's first segment
    head, _, rest = (parsed.netloc + parsed.path).lstrip("/").partition("/")
    if parsed.scheme == "mlflow-artifacts":
        path = parsed.path.lstrip("/")
        return _get_artifact_repo_mlflow_artifacts().download_artifacts(path, folder)
    if parsed.scheme == "runs":
        root = _get_tracking_store().get_run(head).info.artifact_uri.rstrip("/")
        return server_fetch(f"{root}/{rest}" if rest else root, folder)
    if parsed.scheme == "models" and head.startswith("m-"):
        root = _get_tracking_store().get_logged_model(head).artifact_location.rstrip("/")
        return server_fetch(f"{root}/{rest}" if rest else root, folder)
    from mlflow.artifacts import download_artifacts

    return download_artifacts(artifact_uri=uri, dst_path=folder)


def _evidence(client, name: str, version: str, gates: list[dict]) -> Evidence:
    return gather(client, name, version, gates, server_fetch)


def _check_evidence(client, request: Request) -> None:
    """Compute the request's evidence again; a difference voids it (409 naming what changed)."""
    if request.evidence is None:
        return  # filed before requests bound their evidence
    changes = Evidence.from_dict(request.evidence).changes(
        _evidence(client, request.name, request.version, request.gates))
    if not changes:
        return
    why = "; ".join(changes)
    _write(client, request.but(status="void",
                               closed={"by": "server", "at": now_ms(), "reason": why}))
    _card(client, request.name, request.version, "Draft")
    _logger.warning("request %s is void: %s", request.id, why)
    raise Refused(409, f"request {request.id} is void: {why}")


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
    kind = str(body.get("kind") or "promote")
    if kind not in REQUEST_KINDS:
        raise Refused(400, f"a request asks for one of {', '.join(REQUEST_KINDS)}, not {kind!r}")
    authors = _authors(client, name, version)  # 404: no such version
    gates = list(body.get("gates") or [])
    evidence = _evidence(client, name, version, gates)
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
        gates=gates,
        forced=bool(body.get("forced")),
        expect_slot=state.slot,
        expect_holder=state.holder,
        kind=kind,
        evidence=evidence.to_dict(),
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
        return _execute(client, request, checked=True)
    _logger.info("request %s: %s/%s to %s by %s", request.id, name, version, alias, username)
    return {"status": "requested", "request": request.to_dict(at)}


def _execute(client, request: Request, checked: bool = False):
    """Move the alias for an approved request; record the move and its approvals in one step.

    The evidence is computed again first (unless the caller just did): a difference voids it.
    """
    from core.aliases import AliasState, move_alias
    from tracking.promotions import approve_card

    if not checked:
        _check_evidence(client, request)
    at = now_ms()
    state = read_state(client, request.name, request.alias)
    if (state.slot, state.holder) != (request.expect_slot, request.expect_holder):
        held = f"version {state.holder}" if state.holder else "no version"
        why = f"{request.alias!r} of {request.name} moved to {held} since the request"
        _write(client, request.but(status="void", closed={"by": "server", "at": at, "reason": why}))
        raise Refused(409, f"request {request.id} is void: {why}")
    try:
        outcome = move_alias(client, request.name, request.version, request.alias,
                             request.reason, by=request.by, kind=request.kind,
                             forced=request.forced, gates=request.gates,
                             state=AliasState(state.slot, state.holder), request=request.id,
                             approvals=request.approvals, evidence=request.digest)  # fmt: skip
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
    _check_evidence(client, request)  # what was reviewed is what would move
    approval = {"by": username, "at": now_ms(), "reason": str(body.get("reason") or "")}
    request = request.but(approvals=[*request.approvals, approval])
    if len(request.approvals) >= request.required:
        return _execute(client, request, checked=True)
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


def emergency_rollback(username: str, body: dict, state) -> dict:
    """A release manager's rollback without approvals, filed for a second one's review.

    The move is recorded as an emergency (its history record names the review's request id);
    the request is ``needs-review`` until :func:`review`.

    Returns:
        The answer's body: the move's outcome and the request (None when nothing moved).

    Raises:
        Refused: not a release manager or an admin (403), or not a rollback (400).
    """
    from core.aliases import AliasState, move_alias, new_attempt_id
    from tracking.governance import is_release_manager_or_admin

    name, alias = str(body["name"]), str(body["alias"])
    version, reason = str(body["version"]), str(body.get("reason") or "")
    if str(body.get("kind") or "") != "rollback":
        raise Refused(400, "only a rollback may be an emergency (python -m registry rollback "
                           "--emergency)")
    if not reason:
        raise Refused(400, "an emergency rollback gives a reason")
    if not is_release_manager_or_admin(username):
        raise Refused(403, f"{username} may not make an emergency rollback of {alias!r} of "
                           f"{name}: only a release manager or an admin may (python -m "
                           "registry request files a request instead)")
    client = _client()
    _authors(client, name, version)  # 404: no such version
    evidence = _evidence(client, name, version, [])
    at = now_ms()
    rid = new_attempt_id(at)
    outcome = move_alias(client, name, version, alias, reason, by=username, kind="rollback",
                         state=AliasState(state.slot, state.holder), request=rid,
                         evidence=evidence.digest, emergency=True)  # fmt: skip
    attempt = outcome.attempt
    answer = {"status": outcome.status, "name": name, "alias": alias,
              "version": outcome.version, "previous": outcome.previous,
              "attempt": attempt.to_json() if attempt else None, "request": None}  # fmt: skip
    if outcome.status != "promoted":
        return answer
    request = _write(client, Request(
        id=rid, name=name, alias=alias, version=version, by=username, at=at, reason=reason,
        required=1, expires_at=at, status=NEEDS_REVIEW, kind="rollback", emergency=True,
        expect_slot=state.slot, expect_holder=state.holder, attempt=attempt.id,
        evidence=evidence.to_dict()))  # fmt: skip
    _logger.warning("emergency rollback %s of %s@%s to %s by %s: needs review", rid, name,
                    alias, version, username)
    return {**answer, "request": request.to_dict(at)}


def review(username: str, body: dict):
    """A second release manager's review of an emergency rollback (who, when, why)."""
    from tracking.governance import is_release_manager_or_admin

    client = _client()
    request = _find(client, str(body.get("id") or ""))
    if request.status != NEEDS_REVIEW:
        raise Refused(409, f"request {request.id} is {request.state(now_ms())}: only an "
                           "emergency rollback that needs review is reviewed; nothing changed")
    if username == request.by:
        raise Refused(403, f"{username} made emergency rollback {request.id}: a second release "
                           "manager reviews it, never the one who rolled back")
    if not is_release_manager_or_admin(username):
        raise Refused(403, f"{username} may not review emergency rollback {request.id}: only a "
                           "release manager or an admin may")
    done = _write(client, request.but(status=REVIEWED, review={
        "by": username, "at": now_ms(), "reason": str(body.get("reason") or "")}))
    return {"status": REVIEWED, "request": done.to_dict()}


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
    try:
        if action == "create":
            return _answer(200, **file_request(username, body))
        if action == "approve":
            return _answer(200, **approve(username, body))
        if action == "reject":
            return _answer(200, **reject(username, body))
        if action == "review":
            return _answer(200, **review(username, body))
        return _answer(200, **listing(username, args))
    except Exception as exc:
        if (resp := error_answer(REQUEST_ROUTE_ID, exc)) is None:
            raise
        return resp
