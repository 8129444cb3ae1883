"""The compare-and-set behind every alias move.

MLflow's alias write and all its tag writes are last-writer-wins upserts, and
read/write registers alone cannot elect one winner among racing writers. One write through
MLflow's REST API *is* write-once: a run parameter. The server inserts ``(run, key)`` under a
primary key and refuses a second, different value ("Changing param values is not allowed")
on SQLite and PostgreSQL alike, while repeating the same value succeeds (so client retries
are harmless).

The ledger is one run (experiment ``mlops-registry-ledger``). Move number ``n`` of alias ``A``
of model ``M`` is the parameter ``<M>/<A>/<n>`` (zero-padded); its value names the attempt
and the version. A promotion reads the highest taken slot ``n`` and claims ``n + 1``: of all
attempts that read the same state exactly one claim succeeds; every other one learns who won.
The winner then moves the alias and reconciles it to the ledger's head, so a slow winner of an
earlier slot cannot leave the alias behind a later one.

Removing an alias is a move to no version (an empty version in the claim).

Bootstrap: the experiment name is unique in the store, so exactly one process creates the
experiment; only that process creates the run, and the others wait for it to appear.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
import weakref
from dataclasses import dataclass

from core import names
from core.errors import MlopsError

_logger = logging.getLogger(__name__)

LEDGER_EXPERIMENT = "mlops-registry-ledger"
LEDGER_RUN_NAME = "alias-moves"
LEDGER_TAG = names.LEDGER_TAG
#: How long a process waits for the ledger run another process is creating.
BOOTSTRAP_TIMEOUT_SECONDS = 30.0
SLOT_DIGITS = 6
#: The key segment of a model's history chain (:meth:`Ledger.chain`), in place of an alias.
CHAIN_SEGMENT = ".chain"

#: What MLflow accepts in one segment of a parameter key (its rule is ``[/\w.\- :]``, with
#: Unicode ``\w``; ``/`` separates our segments and ``:`` is refused on Windows servers).
_SEGMENT = re.compile(r"^[\w.\- ]+$")
_UNSAFE = re.compile(r"[^\w.\- ]")
#: Room left in MLflow's 250-character keys for ``/<alias>/<slot>``.
MAX_MODEL_KEY = 160

#: The ledger run id per client. The run never changes once created, and finding it costs two
#: round trips (experiment by name, search runs) that a move would otherwise pay twice.
_RUN_IDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def model_key(name: str) -> str:
    """``name`` as one segment of a parameter key MLflow accepts, distinct per name.

    A name made only of letters (any script), digits, ``_``, ``.``, ``-`` and spaces is used
    as it is. Any other name (``churn+xgb``, a leading ``.``, a very long name) is made safe
    and gets ``-`` and a hash of the whole name, which keeps altered names distinct.
    """
    if _SEGMENT.match(name) and not name.startswith(".") and len(name) <= MAX_MODEL_KEY:
        return name
    safe = _UNSAFE.sub("_", name).lstrip(".") or "_"
    digest = hashlib.sha256(name.encode()).hexdigest()[:12]
    return f"{safe[: MAX_MODEL_KEY - 13]}-{digest}"


def slot_key(name: str, alias: str, slot: int) -> str:
    """The parameter key of move ``slot`` of ``alias`` of model ``name``."""
    return f"{model_key(name)}/{alias}/{slot:0{SLOT_DIGITS}d}"


def claim_value(attempt_id: str, version: str | None, previous: str | None) -> str:
    """The parameter value an attempt writes: its id, the new and the previous holder.

    An empty version is a removal of the alias.
    """
    return f"{attempt_id} v{version or ''} p{previous or ''}"


@dataclass(frozen=True)
class Claim:
    """A taken slot: which attempt moved the alias from ``previous`` to ``version``."""

    attempt_id: str
    version: str | None
    previous: str | None


def parse_claim(value: str) -> Claim:
    """The :class:`Claim` a parameter value records."""
    attempt_id, _, rest = value.partition(" v")
    version, _, previous = rest.partition(" p")
    return Claim(attempt_id, version or None, previous or None)


@dataclass
class Ledger:
    """The ledger run, bound to a client."""

    client: object
    run_id: str

    def slots(self, name: str, alias: str) -> dict[int, str]:
        """Every taken move of ``alias``: ``{slot: claim value}``."""
        prefix = f"{model_key(name)}/{alias}/"
        params = self.client.get_run(self.run_id).data.params
        return {
            int(key[len(prefix):]): value
            for key, value in params.items()
            if key.startswith(prefix) and key[len(prefix):].isdigit()
        }

    def model_slots(self, name: str) -> dict[str, dict[int, str]]:
        """Every taken move of every alias of ``name``, in one read: ``{alias: {slot: value}}``."""
        return self.every_slot().get(model_key(name), {})

    def every_slot(self) -> dict[str, dict[str, dict[int, str]]]:
        """Every taken move, in one read: ``{model key: {alias: {slot: value}}}``."""
        found: dict[str, dict[str, dict[int, str]]] = {}
        for key, value in self.client.get_run(self.run_id).data.params.items():
            # model keys hold no "/" (model_key); MLflow's aliases neither
            model, _, rest = key.partition("/")
            alias, _, slot = rest.rpartition("/")
            if alias and not alias.startswith(".") and slot.isdigit():
                found.setdefault(model, {}).setdefault(alias, {})[int(slot)] = value
        return found

    def last_held_by(self, name: str, alias: str, version: str | None) -> int | None:
        """The last slot after which ``version`` (None: nobody) held ``alias``, if any."""
        found = None
        for slot, value in self.slots(name, alias).items():
            claim = parse_claim(value)
            if claim.version == version:
                found = max(found or 0, slot)
            if claim.previous == version:
                found = max(found or 0, slot - 1)
        return found

    def head(self, name: str, alias: str) -> tuple[int, str | None]:
        """``(slot, version)`` of the last move of ``alias`` (``(0, None)`` when none)."""
        slots = self.slots(name, alias)
        if not slots:
            return 0, None
        slot = max(slots)
        return slot, parse_claim(slots[slot]).version

    def claim(self, name: str, alias: str, slot: int, value: str) -> str:
        """Try to take ``slot`` with ``value``; return the value that holds the slot.

        The caller won when the returned value equals ``value``.
        """
        from mlflow.exceptions import MlflowException

        key = slot_key(name, alias, slot)
        try:
            self.client.log_param(self.run_id, key, value)
            return value
        except MlflowException as exc:
            # Refused ("Changing param values is not allowed") or unknown outcome (a timeout
            # after the server committed): the stored value is the answer either way.
            holder = self.client.get_run(self.run_id).data.params.get(key)
            if holder is None:
                raise
            _logger.info("slot %s taken by %s (%s)", key, holder, str(exc).splitlines()[0])
            return holder


    def chain(self, name: str) -> dict[int, str]:
        """The history chain of ``name``: ``{position: "<record id> <record hash>"}``.

        Position ``n`` of the chain is the parameter ``<model>/.chain/<n>``: write-once like an
        alias's slots, so two records never take the same place (:mod:`core.audit`). ``.chain``
        cannot be an alias (MLflow's aliases start with a letter, digit, ``_`` or ``-``).
        """
        return self.slots(name, CHAIN_SEGMENT)


def _experiment(client, create: bool):
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(LEDGER_EXPERIMENT)
    if exp is not None:
        if exp.lifecycle_stage != "active":
            raise MlopsError(
                f"the ledger experiment {LEDGER_EXPERIMENT!r} is deleted: restore it "
                f"(mlflow experiments restore --experiment-id {exp.experiment_id})"
            )
        return exp.experiment_id, False
    if not create:
        return None, False
    try:
        exp_id = client.create_experiment(
            LEDGER_EXPERIMENT,
            tags={
                LEDGER_TAG: "1",
                "mlflow.note.content": "Compare-and-set ledger of alias moves (core.aliases). "
                "One run; one parameter per move. Do not edit.",
            },
        )
        return exp_id, True
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_ALREADY_EXISTS":
            return client.get_experiment_by_name(LEDGER_EXPERIMENT).experiment_id, False
        raise


def _runs(client, exp_id: str) -> list:
    return client.search_runs([exp_id], max_results=10, order_by=["attributes.start_time ASC"])


def _cached(client) -> Ledger | None:
    try:
        run_id = _RUN_IDS.get(client)
    except TypeError:  # a client that cannot be weakly referenced: no cache
        return None
    return Ledger(client, run_id) if run_id else None


def _remember(client, ledger: Ledger) -> Ledger:
    try:
        _RUN_IDS[client] = ledger.run_id
    except TypeError:
        pass
    return ledger


def find_ledger(client) -> Ledger | None:
    """The ledger, or None if no promotion has happened on this server yet."""
    if (ledger := _cached(client)) is not None:
        return ledger
    exp_id, _ = _experiment(client, create=False)
    if exp_id is None:
        return None
    runs = _runs(client, exp_id)
    return _remember(client, _only(client, runs)) if runs else None


def _only(client, runs) -> Ledger:
    if len(runs) > 1:
        raise MlopsError(
            f"the ledger experiment {LEDGER_EXPERIMENT!r} holds {len(runs)} runs; "
            "it must hold exactly one"
        )
    return Ledger(client, runs[0].info.run_id)


def open_ledger(client, timeout_seconds: float = BOOTSTRAP_TIMEOUT_SECONDS) -> Ledger:
    """The ledger, created on first use.

    Raises:
        MlopsError: the process that created the ledger experiment did not create its run
            within ``timeout_seconds``.
    """
    if (ledger := _cached(client)) is not None:
        return ledger
    exp_id, created = _experiment(client, create=True)
    if created:
        run = client.create_run(exp_id, run_name=LEDGER_RUN_NAME, tags={LEDGER_TAG: "1"})
        client.update_run(run.info.run_id, status="FINISHED")
        _logger.info("created the alias ledger run %s", run.info.run_id)
        return _remember(client, Ledger(client, run.info.run_id))
    deadline = time.monotonic() + timeout_seconds
    while True:
        runs = _runs(client, exp_id)
        if runs:
            return _remember(client, _only(client, runs))
        if time.monotonic() > deadline:
            raise MlopsError(
                f"the ledger experiment {LEDGER_EXPERIMENT!r} has no run after "
                f"{timeout_seconds:.0f}s; if its creator crashed, delete the experiment and retry"
            )
        time.sleep(0.2)
