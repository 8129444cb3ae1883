"""The evidence a promotion request binds: what the approvers review, as one digest.

A request (:mod:`core.approvals`) records the evidence of the version it would move the alias
to, part by part, each item by its SHA-256:

* ``model files``: every file of the version's model, as the artifact store holds it (the
  tracking server reads its own store; no client hands it hashes);
* ``metrics``: the metrics of the version's run and the version's ``mlops.metric.*`` tags;
* ``gates``: the gate results filed with the request;
* ``lineage``: the version's source and run, its ``mlops.*`` tags (commit, settings hash, data
  digest...: written at its creation, never after), and the lineage tags of its run;
* ``card``: the model card's document, as logged (its status is the server's, not evidence).

The digest is SHA-256 of the parts as canonical JSON. The server computes it again at each
approval and at execution; :meth:`Evidence.changes` names what differs ("model files changed
since the request: MLmodel, model.pkl"), and the request goes void. The executed move's
history record carries the digest; ``registry requests`` and ``registry history`` show it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core import names
from core.lineage import file_sha256

_logger = logging.getLogger(__name__)

PARTS = ("model files", "metrics", "gates", "lineage", "card")
#: Characters of the digest shown in tables (JSON has all 64).
SHORT = 12
#: The run tags that say where a version came from (the rest of a run's tags may change).
LINEAGE_RUN_TAGS = (names.GIT_COMMIT_TAG, names.GIT_DIRTY_TAG, names.DATA_DIGEST_TAG,
                    names.SETTINGS_HASH_TAG, names.CACHE_KEY_TAG)  # fmt: skip
#: Version tags that are not evidence: the server's record of the review itself, and notes
#: a user's tool may add later (registry copy, the shadow run).
_NOT_EVIDENCE = (names.PROMOTION_TAG_PREFIX, names.CARD_STATUS_TAG, names.CARD_REVIEW_TAG,
                 names.COPIED_TO_PREFIX, names.SHADOW_RUN_TAG)  # fmt: skip

#: ``fetch(uri, folder) -> local path`` of an artifact (a file or a folder) downloaded there.
Fetch = Callable[[str, str], str]


def sha256_text(text: str) -> str:
    """SHA-256 (hex) of ``text``."""
    return hashlib.sha256(text.encode()).hexdigest()


def file_hashes(root: str | Path) -> dict[str, str]:
    """``{relative path: SHA-256}`` of every file under ``root`` (``root`` itself if a file)."""
    root = Path(root)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return {path.name if path == root else path.relative_to(root).as_posix(): file_sha256(path)
            for path in files}


def short(digest: str | None) -> str:
    """The digest as tables show it (``-`` for none)."""
    return digest[:SHORT] if digest else "-"


@dataclass(frozen=True)
class Evidence:
    """What a request binds: ``{part: {item: SHA-256}}`` for each of :data:`PARTS`."""

    parts: dict[str, dict[str, str]]

    @property
    def digest(self) -> str:
        """SHA-256 of the parts as canonical JSON."""
        return sha256_text(json.dumps(self.parts, sort_keys=True, separators=(",", ":")))

    def to_dict(self) -> dict:
        """The request's ``evidence``: the digest and the parts it covers."""
        return {"digest": self.digest, "parts": self.parts}

    @classmethod
    def from_dict(cls, data: dict) -> Evidence:
        """Read a request's ``evidence``."""
        return cls({part: dict(items) for part, items in (data.get("parts") or {}).items()})

    def changes(self, now: Evidence) -> list[str]:
        """What differs in ``now``, one phrase per part, naming the items (empty: nothing)."""
        out = []
        for part in PARTS:
            was, got = self.parts.get(part, {}), now.parts.get(part, {})
            items = sorted(k for k in set(was) | set(got) if was.get(k) != got.get(k))
            if items:
                out.append(f"{part} changed since the request: {', '.join(items)}")
        return out


def _value_hash(value) -> str:
    return sha256_text(json.dumps(value, sort_keys=True, separators=(",", ":"), default=str))


def _fetched_hashes(fetch: Fetch, uri: str) -> dict[str, str]:
    """The files at ``uri``; none when there is nothing there (a version without files)."""
    with tempfile.TemporaryDirectory(prefix="mlops-evidence-") as folder:
        try:
            local = fetch(uri, folder)
        except Exception as exc:  # noqa: BLE001 - each store says "not there" its own way
            _logger.warning("evidence: nothing to read at %s (%s)", uri, exc)
            return {}
        return file_hashes(local)


def gather(client, name: str, version: str, gates: list[dict], fetch: Fetch) -> Evidence:
    """The evidence of ``name``/``version`` as the stores hold it now.

    Args:
        client: the registry and tracking stores (the server's own, on the governance server).
        name: the registered model.
        version: the version.
        gates: the gate results filed with the request.
        fetch: downloads an artifact URI into a folder (the caller's artifact access).
    """
    mv = client.get_model_version(name, str(version))
    tags = dict(mv.tags or {})
    run = client.get_run(mv.run_id) if mv.run_id else None
    files = _fetched_hashes(fetch, client.get_model_version_download_uri(name, str(version)))
    metrics = {k: _value_hash(v) for k, v in (run.data.metrics if run else {}).items()}
    metrics |= {k: sha256_text(v) for k, v in tags.items()
                if k.startswith(names.METRIC_TAG_PREFIX)}  # fmt: skip
    lineage = {"source": sha256_text(str(mv.source)), "run": sha256_text(str(mv.run_id or ""))}
    lineage |= {k: sha256_text(v) for k, v in tags.items()
                if k.startswith(names.PREFIX) and not k.startswith(names.METRIC_TAG_PREFIX)
                and not k.startswith(_NOT_EVIDENCE)}  # fmt: skip
    if run is not None:
        lineage |= {f"run {k}": sha256_text(run.data.tags[k]) for k in LINEAGE_RUN_TAGS
                    if k in run.data.tags}  # fmt: skip
    card = {}
    if tags.get(names.CARD_TAG):
        card = _fetched_hashes(fetch, tags[names.CARD_TAG])
    return Evidence({
        "model files": files,
        "metrics": metrics,
        "gates": {str(g.get("gate", i)): _value_hash(g) for i, g in enumerate(gates or [])},
        "lineage": lineage,
        "card": card,
    })
