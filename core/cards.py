"""THE model card: what a registered version is for, what it was trained on, how it scores.

The workflow writes a version's card when it registers it (``projects``: JSON and markdown,
logged to the register step's run, shown in the version's description); the registry reads it
(``python -m registry card NAME/VERSION``); the tracking server moves its status. The format
lives here so the three agree.

The card's document (:data:`FORMAT` 1) has the keys ``format``, ``name``, ``version``,
``status``, ``intended_use``, ``limitations`` (the user's words, from the ``card`` settings),
``data`` (``source``, ``digest``, ``rows``, ``schema``), ``metrics`` (``test``, ``per_class``,
``champion``: the champion's version and test metrics on the same split), ``gates`` (the
results recorded for the version: empty until it is validated), ``lineage`` (commit, dirty
digest, settings hash, workflow and step runs), ``approvals`` and ``review`` (recorded by the
server's promotion flow).

The status follows the lifecycle Draft -> PendingReview -> Approved -> Archived
(:data:`TRANSITIONS`). A version is registered as Draft (its creation tags); after that only
the tracking server moves it, through :func:`set_card_status` (the governance app refuses
``mlops.*`` tag writes through MLflow's routes), and records the review that moved it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from core.errors import MlopsError
from core.names import CARD_REVIEW_TAG, CARD_STATUS_TAG, CARD_TAG

#: The card document's version (bumped when a key changes meaning).
FORMAT = 1
#: Where the card is logged, in the register step's run.
JSON_PATH = "card/model_card.json"
MARKDOWN_PATH = "card/model_card.md"

DRAFT, PENDING_REVIEW, APPROVED, ARCHIVED = "Draft", "PendingReview", "Approved", "Archived"
STATUSES = (DRAFT, PENDING_REVIEW, APPROVED, ARCHIVED)
#: The moves the lifecycle allows: a review is requested, granted or sent back; any card may be
#: archived (its version replaced or withdrawn), and an archived card stays archived.
TRANSITIONS: dict[str, frozenset[str]] = {
    DRAFT: frozenset({PENDING_REVIEW, ARCHIVED}),
    PENDING_REVIEW: frozenset({APPROVED, DRAFT, ARCHIVED}),
    APPROVED: frozenset({PENDING_REVIEW, ARCHIVED}),
    ARCHIVED: frozenset(),
}


class CardError(MlopsError):
    """No card, an unreadable one, or a status move the lifecycle refuses (one line)."""


def per_class_metrics(y_true, y_pred) -> dict[str, dict[str, float]]:
    """Precision, recall, f1 and support of each class (the card's ``per_class``)."""
    import numpy as np
    from sklearn.metrics import precision_recall_fscore_support

    classes = sorted(set(np.asarray(y_true).tolist()) | set(np.asarray(y_pred).tolist()),
                     key=str)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=classes, zero_division=0)
    return {str(c): {"precision": float(p), "recall": float(r), "f1": float(f),
                     "support": int(n)}
            for c, p, r, f, n in zip(classes, precision, recall, f1, support, strict=True)}


def build_card(name: str, version: str, *, intended_use: str, limitations: list[str],
               data: Mapping[str, Any], test_metrics: Mapping[str, float],
               per_class: Mapping[str, Any] | None = None,
               champion: Mapping[str, Any] | None = None,
               lineage: Mapping[str, Any] | None = None) -> dict:
    """A version's card as registered: status Draft, no gates or approvals yet.

    Args:
        name: the registered model.
        version: the version.
        intended_use: what the version is for (the ``card.intended_use`` setting).
        limitations: known limitations (the ``card.limitations`` setting).
        data: ``source`` (redacted), ``digest``, ``rows``, ``schema`` (``{column: type}``).
        test_metrics: the test metrics (``test_`` prefix dropped or kept, as given).
        per_class: :func:`per_class_metrics` on the test split (classification), or None.
        champion: ``{"version", "metrics"}`` of the champion scored on the same split, or None.
        lineage: commit, settings hash, runs (free-form, JSON-safe).
    """
    return {
        "format": FORMAT,
        "name": name,
        "version": str(version),
        "status": DRAFT,
        "intended_use": intended_use,
        "limitations": list(limitations),
        "data": {k: data.get(k) for k in ("source", "digest", "rows", "schema")},
        "metrics": {"test": {k.removeprefix("test_"): _finite(v)
                             for k, v in test_metrics.items()},
                    "per_class": dict(per_class or {}),
                    "champion": {"version": str(champion.get("version")),
                                 "metrics": {k: _finite(v) for k, v in
                                             (champion.get("metrics") or {}).items()}}
                    if champion else None},
        "gates": [],
        "lineage": dict(lineage or {}),
        "approvals": [],
        "review": None,
    }


def _finite(value) -> float | None:
    """A metric as JSON can hold it: None for NaN or infinity (the document is plain JSON)."""
    import math

    value = float(value)
    return value if math.isfinite(value) else None


def _number(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def render_markdown(card: Mapping[str, Any]) -> str:
    """The card as markdown (the version's description shows it; ``--output markdown``)."""
    lines = [f"# Model card: {card['name']} v{card['version']}", "",
             f"**Status:** {card['status']}", "", "## Intended use", "",
             card.get("intended_use") or "_Not stated (setting `card.intended_use`)._", "",
             "## Data", ""]
    data = card.get("data") or {}
    lines += [f"- source: {data.get('source') or '?'}", f"- digest: {data.get('digest') or '?'}",
              f"- rows: {data.get('rows') if data.get('rows') is not None else '?'}"]
    if data.get("schema"):
        lines.append("- schema: " + ", ".join(f"`{c}` {t}" for c, t in data["schema"].items()))
    metrics = card.get("metrics") or {}
    champion = metrics.get("champion") or {}
    lines += ["", "## Metrics (test split)", ""]
    if metrics.get("test"):
        head = "| metric | this version |" + (f" champion v{champion['version']} |"
                                                if champion else "")
        lines += [head, "|---|---|" + ("---|" if champion else "")]
        for key, value in metrics["test"].items():
            row = f"| {key} | {_number(value)} |"
            if champion:
                row += f" {_number((champion.get('metrics') or {}).get(key, '-'))} |"
            lines.append(row)
    else:
        lines.append("_No test metrics._")
    if metrics.get("per_class"):
        lines += ["", "| class | precision | recall | f1 | support |", "|---|---|---|---|---|"]
        lines += [f"| {c} | {m['precision']:.4g} | {m['recall']:.4g} | {m['f1']:.4g} | "
                  f"{m['support']} |" for c, m in metrics["per_class"].items()]
    lines += ["", "## Gates", ""]
    gates = card.get("gates") or []
    lines += ([f"- {g.get('gate')}: {'passed' if g.get('passed') else 'FAILED'}"
               f" ({g.get('value')} vs {g.get('expected')})" for g in gates]
              or ["_Not validated yet (`python -m registry validate`)._"])
    lines += ["", "## Lineage", ""]
    lines += [f"- {k}: {v}" for k, v in (card.get("lineage") or {}).items()] or ["_None._"]
    lines += ["", "## Approvals", ""]
    lines += [f"- {a.get('by')} at {a.get('at')}: {a.get('reason') or ''}".rstrip(": ")
              for a in card.get("approvals") or []] or ["_None yet._"]
    lines += ["", "## Known limitations", ""]
    lines += [f"- {x}" for x in card.get("limitations") or []] or [
        "_None stated (setting `card.limitations`)._"]
    return "\n".join(lines) + "\n"


def card_location(run_id: str) -> str:
    """The card's JSON in the register step's run (the version's ``CARD_TAG``)."""
    return f"runs:/{run_id}/{JSON_PATH}"


def creation_tags(run_id: str) -> dict[str, str]:
    """The tags a version is created with: where its card is, and status Draft."""
    return {CARD_TAG: card_location(run_id), CARD_STATUS_TAG: DRAFT}


def card_status(client, name: str, version: str) -> str | None:
    """The card's status as the server holds it (None: the version has no card)."""
    tags = client.get_model_version(name, str(version)).tags or {}
    return tags.get(CARD_STATUS_TAG)


def check_transition(current: str | None, status: str) -> None:
    """Refuse a status the lifecycle does not allow after ``current``.

    Raises:
        CardError: unknown status, no card, or a move :data:`TRANSITIONS` lacks.
    """
    if status not in STATUSES:
        raise CardError(f"unknown card status {status!r} (one of {', '.join(STATUSES)})")
    if current is None:
        raise CardError("the version has no model card (registered before cards existed)")
    if status != current and status not in TRANSITIONS.get(current, frozenset()):
        allowed = ", ".join(sorted(TRANSITIONS.get(current, ()))) or "none"
        raise CardError(f"a {current} card cannot become {status} (allowed: {allowed})")


def set_card_status(client, name: str, version: str, status: str,
                    review: Mapping[str, Any] | None = None) -> str:
    """Move the card of ``name/version`` to ``status``; return the status it had.

    For the tracking server (its promotion flow) only: the governance app refuses ``mlops.*``
    tag writes through MLflow's routes, so ``client`` is the server's own. ``review`` is what
    moved it (e.g. ``{"request": id, "approvals": [{"by", "at", "reason"}], "gates": [...]}``),
    shown by :func:`read_card` under ``approvals``, ``gates`` and ``review``.

    Raises:
        CardError: the lifecycle refuses the move (nothing is written).
    """
    current = card_status(client, name, version)
    check_transition(current, status)
    if review is not None:
        client.set_model_version_tag(name, str(version), CARD_REVIEW_TAG,
                                     json.dumps(dict(review), sort_keys=True, default=str))
    client.set_model_version_tag(name, str(version), CARD_STATUS_TAG, status)
    return current


def read_card(client, name: str, version: str, download) -> dict:
    """The card of ``name/version``: the registered document with the server's status and review.

    Args:
        client: MLflow client of the registry.
        name: the registered model.
        version: the version.
        download: ``download(uri) -> Path`` of a local copy (the caller's artifact access).

    Raises:
        CardError: the version has no card, or its document cannot be read.
    """
    tags = client.get_model_version(name, str(version)).tags or {}
    location = tags.get(CARD_TAG)
    if not location:
        raise CardError(f"{name}/{version} has no model card (registered before cards existed)")
    try:
        card = json.loads(download(location).read_text())
    except Exception as exc:  # noqa: BLE001 - any failure to fetch or parse is one line
        raise CardError(f"{name}/{version}: its model card cannot be read: "
                        f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                        ) from None
    if not isinstance(card, dict) or card.get("format") != FORMAT:
        raise CardError(f"{name}/{version}: its model card has format "
                        f"{card.get('format') if isinstance(card, dict) else None!r}; "
                        f"this reads {FORMAT}")
    card["status"] = tags.get(CARD_STATUS_TAG, card.get("status"))
    if tags.get(CARD_REVIEW_TAG):
        try:
            review = json.loads(tags[CARD_REVIEW_TAG])
        except ValueError:
            review = None
        if isinstance(review, dict):
            card["review"] = review
            card["approvals"] = list(review.get("approvals") or card["approvals"])
            card["gates"] = list(review.get("gates") or card["gates"])
    return card
