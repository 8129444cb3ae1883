"""The history chain: every final record of a model's alias moves carries its predecessor's hash.

A record of :mod:`core.aliases` (a move won, lost, applied, or refused by the server) is
*linked* when it is written: it gets its place ``seq`` in the model's chain and ``prev``, the
hash of the record before it. The place is claimed in the ledger (:meth:`core.ledger.Ledger.chain`:
the write-once parameter ``<model>/.chain/<seq>`` holding ``<record id> <record hash>``), so
concurrent writers never share a place and the chain has no forks.

:func:`verify` recomputes the chain from what the store holds. A record edited in the database
(its text no longer has the hash its place recorded), deleted, or written beside the chain (a
final record without a place) breaks it; the first break is named. A move still pending is not
final yet and is not in the chain.

The hash is SHA-256 of the record's tag value, exactly as stored (compact JSON, sorted keys).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace

from core.errors import MlopsError
from core.ledger import CHAIN_SEGMENT, Ledger, open_ledger
from core.names import HISTORY_TAG_PREFIX

#: Rounds of claiming a place before giving up (each lost round means another record landed).
LINK_ROUNDS = 50


def record_hash(text: str) -> str:
    """SHA-256 (hex) of a record's tag value."""
    return hashlib.sha256(text.encode()).hexdigest()


def _place(value: str) -> tuple[str, str]:
    record_id, _, digest = value.partition(" ")
    return record_id, digest


def link(client, name: str, attempt, ledger: Ledger | None = None):
    """``attempt`` (a :class:`core.aliases.Attempt`) with its place in ``name``'s chain.

    Claims the next place in the ledger for the record's hash; the caller then writes the
    returned record's ``to_json()`` as its tag, unchanged.

    Raises:
        MlopsError: no place could be claimed (records kept landing in between).
    """
    ledger = ledger or open_ledger(client)
    for _ in range(LINK_ROUNDS):
        chain = ledger.chain(name)
        seq = max(chain, default=0) + 1
        prev = _place(chain[seq - 1])[1] if seq > 1 else ""
        linked = replace(attempt, seq=seq, prev=prev)
        value = f"{linked.id} {record_hash(linked.to_json())}"
        if ledger.claim(name, CHAIN_SEGMENT, seq, value) == value:
            return linked
    raise MlopsError(f"could not add record {attempt.id} to the history chain of {name!r}")


@dataclass(frozen=True)
class Entry:
    """One record as the store holds it, checked against the chain."""

    id: str
    seq: int
    hash: str
    record: dict | None
    problem: str | None = None

    def to_dict(self) -> dict:
        """The entry as one line of ``registry audit export``."""
        return {"id": self.id, "seq": self.seq, "hash": self.hash, "valid": self.problem is None,
                "problem": self.problem, "record": self.record}


def check(tags: dict[str, str], chain: dict[int, str]) -> list[Entry]:
    """Every record of a model checked against its chain: chain order, then records beside it.

    Args:
        tags: the registered model's tags (its ``mlops.history.*`` records among them).
        chain: the model's chain from the ledger (:meth:`core.ledger.Ledger.chain`).
    """
    records = {k[len(HISTORY_TAG_PREFIX):]: v for k, v in tags.items()
               if k.startswith(HISTORY_TAG_PREFIX)}
    entries: list[Entry] = []
    placed: set[str] = set()
    prev = ""
    for seq in range(1, max(chain, default=0) + 1):
        if seq not in chain:
            entries.append(Entry("?", seq, "", None, f"place {seq} of the chain is empty"))
            continue
        record_id, digest = _place(chain[seq])
        placed.add(record_id)
        text = records.get(record_id)
        if text is None:
            entries.append(Entry(record_id, seq, digest, None,
                                 f"record {record_id} (#{seq}) is gone from the model's tags"))
            prev = digest
            continue
        record = _parse(text)
        problem = None
        if record_hash(text) != digest:
            problem = f"record {record_id} (#{seq}) was edited: its hash is not the one chained"
        elif record is None or record.get("seq") != seq or record.get("prev") != prev:
            problem = f"record {record_id} (#{seq}) does not link to record #{seq - 1}"
        entries.append(Entry(record_id, seq, digest, record, problem))
        prev = digest
    beside = []
    for record_id, text in records.items():
        if record_id in placed:
            continue
        record = _parse(text)
        if record is not None and record.get("outcome") == "pending" and not record.get("seq"):
            continue  # a move under way (or abandoned): not final, not chained
        beside.append(Entry(record_id, 0, record_hash(text), record,
                            f"record {record_id} is not in the chain (written beside it)"))
    beside.sort(key=lambda e: ((e.record or {}).get("at", 0), e.id))
    return entries + beside


def _parse(text: str) -> dict | None:
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def first_break(entries: list[Entry]) -> Entry | None:
    """The first record that does not match, in chain order (None: the chain is whole)."""
    return next((e for e in entries if e.problem is not None), None)


def read_chain(client, name: str) -> list[Entry]:
    """:func:`check` of ``name`` as the store holds it now.

    Raises:
        ModelNotFound: no such model.
    """
    from core.ledger import find_ledger
    from core.lookup import get_model

    model = get_model(client, name)
    ledger = find_ledger(client)
    return check(dict(model.tags or {}), ledger.chain(name) if ledger else {})


def model_names(client) -> list[str]:
    """Every registered model's name (``audit verify`` without a name checks them all)."""
    found, token = [], None
    while True:
        page = client.search_registered_models(max_results=1000, page_token=token)
        found += [m.name for m in page]
        token = page.token
        if not token:
            return sorted(found)
