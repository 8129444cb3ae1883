"""The governance server's promotion route: the server itself makes the alias move.

``POST /api/2.0/mlops/aliases/move`` (:data:`core.aliases.SERVER_MOVE_PATH`) is what
:func:`core.aliases.move_alias` calls on a tracking server run with ``--app-name
mlops-governance``. The server checks who may make the move, then runs the one alias move
(:func:`core.aliases.move_alias`) against its own stores: the compare-and-set in the ledger,
the history record (linked into the model's hash chain, :mod:`core.audit`), the version's
promotion tags and the alias are all written by the server, with the user it authenticated as
``by``. No user writes the ledger or an ``mlops.*`` tag over MLflow's routes
(:mod:`tracking.governance` refuses them), so a move's record cannot be steered or forged.

Who may move what:

* a protected alias (``champion``): a release manager or an admin;
* any other alias (``challenger``): a user with EDIT (or more) on the registered model.

Answers are JSON with ``"route": "governance.aliases.move"`` (so a client tells them from MLflow's
own): 200 with the outcome, 403 refused (recorded in the history as ``refused``), 404 unknown
model or version, 409 lost the compare-and-set (nothing changed), 400 bad request.
"""

from __future__ import annotations

import logging

from core.aliases import (
    KINDS,
    SERVER_MOVE_PATH,
    SERVER_ROUTE_ID,
    AliasState,
    move_alias,
    read_state,
)
from core.errors import LostRace
from tracking.answers import answer, error_answer

_logger = logging.getLogger(__name__)

__all__ = ["SERVER_MOVE_PATH", "StoreClient", "handle_move", "server_client"]


class StoreClient:
    """The server's own stores behind the MLflow client methods the alias move calls.

    The server writes its database directly: nothing it writes passes through the routes it
    guards, and it never calls itself over HTTP.
    """

    def __init__(self, tracking_store, registry_store):
        self._tracking = tracking_store
        self._registry = registry_store
        self.tracking_uri = "governance-server"  # not http(s): the move runs here

    def __getattr__(self, attr):
        """The registry store's own methods where MLflow's client has the same signature.

        (reads, the alias writes core.aliases makes, a tag's deletion)
        """
        return getattr(self._registry, attr)

    def get_model_version(self, name, version):
        """The version (the store takes its number as a string)."""
        return self._registry.get_model_version(name, str(version))

    def search_registered_models(self, max_results=1000, page_token=None):
        """One page of registered models."""
        return self._registry.search_registered_models(None, max_results, None, page_token)

    def set_registered_model_tag(self, name, key, value):
        """As the client's: the store takes a tag entity."""
        from mlflow.entities.model_registry import RegisteredModelTag

        self._registry.set_registered_model_tag(name, RegisteredModelTag(key, value))

    def set_model_version_tag(self, name, version, key, value):
        """As the client's: the store takes a tag entity."""
        from mlflow.entities.model_registry import ModelVersionTag

        self._registry.set_model_version_tag(name, str(version), ModelVersionTag(key, value))

    # tracking (the ledger)
    def get_experiment_by_name(self, name):
        """The experiment called ``name``, or None."""
        return self._tracking.get_experiment_by_name(name)

    def create_experiment(self, name, tags=None):
        """As the client's (tags as a dict)."""
        from mlflow.entities import ExperimentTag

        return self._tracking.create_experiment(
            name, tags=[ExperimentTag(k, v) for k, v in (tags or {}).items()])

    def search_runs(self, experiment_ids, max_results, order_by):
        """Active runs of the experiments."""
        from mlflow.entities import ViewType

        return self._tracking.search_runs(experiment_ids, "", ViewType.ACTIVE_ONLY, max_results,
                                          order_by)  # fmt: skip

    def create_run(self, experiment_id, run_name=None, tags=None):
        """A run created by the server (the ledger's)."""
        from mlflow.entities import RunTag

        from core.aliases import now_ms

        return self._tracking.create_run(experiment_id, "governance-server", now_ms(),
                                         [RunTag(k, v) for k, v in (tags or {}).items()],
                                         run_name)  # fmt: skip

    def update_run(self, run_id, status=None):
        """End the run with ``status``."""
        from mlflow.entities import RunStatus

        from core.aliases import now_ms

        self._tracking.update_run_info(run_id, RunStatus.from_string(status), now_ms(), None)

    def get_run(self, run_id):
        """The run."""
        return self._tracking.get_run(run_id)

    def log_param(self, run_id, key, value):
        """Write-once, as the client's (a different value is refused)."""
        from mlflow.entities import Param

        self._tracking.log_param(run_id, Param(key, str(value)))


_CLIENT: list[StoreClient] = []


def server_client() -> StoreClient:
    """The server's stores as a client (one per process: the ledger's run id is cached on it)."""
    if not _CLIENT:
        from mlflow.server.handlers import _get_model_registry_store, _get_tracking_store

        _CLIENT.append(StoreClient(_get_tracking_store(), _get_model_registry_store()))
    return _CLIENT[0]


def _answer(code: int, **body):
    return answer(SERVER_ROUTE_ID, code, **body)


def approve_card(client, name: str, version: str, attempt) -> str | None:
    """The model card of a version that took a protected alias: Approved, by this move.

    Draft goes through PendingReview to Approved (the lifecycle of :mod:`core.cards`); the
    review names the move (attempt, who, why, its gates). A version without a card, or with an
    archived one, keeps it as it is (the move stands; a warning says why).

    Returns:
        The card's status afterwards (None: no card).
    """
    from core.cards import APPROVED, PENDING_REVIEW, CardError, card_status, set_card_status

    review = {"attempt": attempt.id, "by": attempt.by, "at": attempt.at, "reason": attempt.reason,
              "kind": attempt.kind, "alias": attempt.alias, "approvals": attempt.approvals,
              "request": attempt.request, "gates": attempt.gates}  # fmt: skip
    try:
        status = card_status(client, name, version)
        if status is None or status == APPROVED:
            return status
        if status != PENDING_REVIEW:
            set_card_status(client, name, version, PENDING_REVIEW)
        set_card_status(client, name, version, APPROVED, review)
        return APPROVED
    except CardError as exc:
        _logger.warning("%s/%s took %s; its card stays as it is: %s", name, version,
                        attempt.alias, exc)
        return card_status(client, name, version)


def handle_move(username: str, body: dict, protected: tuple[str, ...], may_move_protected,
                may_edit_model, record_refusal):
    """Answer one move request of ``username``.

    Args:
        username: who the server authenticated.
        body: ``{name, alias, version (null: remove), reason, kind, forced, gates,
            expect_slot, expect_holder, emergency}``; ``expect_*`` is the state the caller
            decided on; ``emergency``: a release manager's rollback without approvals
            (:func:`tracking.requests.emergency_rollback`). A promotion or rollback of an alias
            that needs approvals files a request instead (:func:`tracking.requests.file_request`).
        protected: the protected aliases.
        may_move_protected: ``username -> bool`` (release manager or admin).
        may_edit_model: ``(username, name) -> bool`` (EDIT on the model).
        record_refusal: ``(username, name, alias, version, message, reason)``, records a
            refused move in the model's history.
    """
    name, alias = str(body.get("name") or ""), str(body.get("alias") or "")
    version = body.get("version")
    version = None if version in (None, "") else str(version)
    kind = str(body.get("kind") or "promote")
    if not name or not alias or kind not in KINDS:
        return _answer(400, error_code="INVALID_PARAMETER_VALUE",
                       message="a move names a model, an alias and a known kind")
    if body.get("emergency") and not may_move_protected(username):
        message = (f"{username} may not make an emergency rollback of {alias!r} of {name}: only "
                   "a release manager or an admin may (python -m registry request files a "
                   "request instead)")
        if alias in protected:
            record_refusal(username, name, alias, version, message,
                           f"emergency rollback: {body.get('reason') or ''}")
        return _answer(403, error_code="PERMISSION_DENIED", message=message)
    if alias in protected:
        allowed = may_move_protected(username)
    else:
        allowed = may_move_protected(username) or may_edit_model(username, name)
    if not allowed:
        verb = "delete" if version is None else "set"
        if alias in protected:
            from tracking.governance import refusal

            message = refusal(username, verb, alias, name)
            record_refusal(username, name, alias, version, message,
                           str(body.get("reason") or ""))
        else:
            message = f"{username} may not {verb} alias {alias!r} of {name}: no EDIT on {name}"
        return _answer(403, error_code="PERMISSION_DENIED", message=message)
    client = server_client()
    try:
        state = read_state(client, name, alias)
        if version is not None:  # a claim for a version that does not exist is never made
            client.get_model_version(name, version)
        expected = body.get("expect_slot")
        if expected is not None:
            holder = body.get("expect_holder")
            holder = None if holder in (None, "") else str(holder)
            if (int(expected), holder) != (state.slot, state.holder):
                if state.holder == version:  # someone made the same move first
                    return _answer(200, status="unchanged", name=name, alias=alias,
                                   version=version, previous=state.holder)
                raise LostRace(
                    f"lost the race for {alias!r} of {name!r}: it moved to "
                    f"{'version ' + state.holder if state.holder else 'no version'} since this "
                    "command started; nothing changed")
            state = AliasState(state.slot, state.holder)
        if kind in ("promote", "rollback") and version is not None:
            from tracking.requests import emergency_rollback, file_request, needs_approvals

            if body.get("emergency"):  # one release manager now, a second one's review after
                return _answer(200, **emergency_rollback(
                    username, {**body, "version": version}, state))
            if needs_approvals(name, alias):  # four eyes: the move waits for its approvals
                return _answer(200, **file_request(username, {**body, "version": version},
                                                   state))
        outcome = move_alias(client, name, version, alias, str(body.get("reason") or ""),
                             by=username, kind=kind, forced=bool(body.get("forced")),
                             gates=list(body.get("gates") or []), state=state)
    except Exception as exc:
        if (resp := error_answer(SERVER_ROUTE_ID, exc)) is None:
            raise
        return resp
    if alias in protected and outcome.status == "promoted" and outcome.attempt is not None:
        approve_card(client, name, outcome.version, outcome.attempt)
    record = outcome.attempt.to_json() if outcome.attempt else None
    return _answer(200, status=outcome.status, name=name, alias=alias, version=outcome.version,
                   previous=outcome.previous, attempt=record)
