"""register: a model version with lineage tags, the challenger alias, and (local) champion."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from urllib.parse import urlparse

from core import names
from core.metrics import is_better
from core.redaction import redact_url

_logger = logging.getLogger(__name__)
#: Tracking URIs without a scheme that MLflow reads as a service, not as a folder.
_SERVER_NAMES = frozenset({"databricks", "databricks-uc", "uc"})


def lineage_tags(
    data_digest: str,
    git_commit: str,
    settings_hash: str,
    task: str,
    metric: str,
    target: str,
    train_run_id: str,
    test_data_uri: str,
    test_metrics: dict[str, float],
    train_data_uri: str = "",
    positive_class: str | None = None,
    git_dirty: str = "",
) -> dict[str, str]:
    """The tags every registered version carries (read by the registry's gates).

    ``git_commit`` and ``git_dirty`` are the workflow run's (:func:`projects.record.git_state`),
    so the version and its run name the same commit the same way.

    ``positive_class`` (a binary task's, as text) is the class its f1 and roc_auc scored:
    whoever scores the version again passes it to :mod:`core.metrics` to get the same numbers.
    """
    tags = {
        names.DATA_DIGEST_TAG: data_digest,
        names.GIT_COMMIT_TAG: git_commit,
        names.SETTINGS_HASH_TAG: settings_hash,
        names.TASK_TAG: task,
        names.SELECTION_METRIC_TAG: metric,
        names.TARGET_TAG: target,
        names.RUN_ID_TRAIN_TAG: train_run_id,
        names.TEST_DATA_TAG: test_data_uri,
        names.TRAIN_DATA_TAG: train_data_uri,
    }
    if git_dirty:
        tags[names.GIT_DIRTY_TAG] = git_dirty
    if positive_class is not None:
        tags[names.POSITIVE_CLASS_TAG] = positive_class
    tags.update({names.metric_tag(k): f"{v:.6g}" for k, v in test_metrics.items()})
    return tags


def is_embedded_store(uri: str) -> bool:
    """Whether ``uri`` is the embedded store: a ``sqlite:`` or ``file:`` URI, or a plain path."""
    if uri.strip().lower() in _SERVER_NAMES:  # names MLflow reads as a remote service
        return False
    scheme = urlparse(uri).scheme.lower()
    # a one-letter scheme is a Windows drive (C:\\mlruns), i.e. a path
    return scheme in ("sqlite", "file", "") or len(scheme) == 1


def auto_champion_decision(
    setting: bool | None, profile: str, uris: Iterable[str]
) -> tuple[bool, str]:
    """Whether the workflow may crown its version champion, and why.

    An explicit ``register.auto_champion`` (true/false) wins. Unset (None) is automatic: on
    only when every store the workflow writes to (tracking and registry) is the embedded one
    and the profile is ``local``, so ``make run`` aimed at a team server never crowns there.

    Args:
        setting: ``register.auto_champion`` (None: automatic).
        profile: the settings profile.
        uris: the tracking and registry URIs.
    """
    if setting is True:
        return True, "register.auto_champion=true (set explicitly)"
    if setting is False:
        return False, "register.auto_champion=false: promotion is a release decision"
    servers = [u for u in uris if not is_embedded_store(u)]
    if servers:
        return False, (
            f"auto-champion is off against a tracking server ({redact_url(servers[0])}): promotion "
            "is a release decision (python -m registry promote); set "
            "register.auto_champion=true to crown anyway"
        )
    if profile != "local":
        return False, (
            f"auto-champion is off for the {profile!r} profile: promotion is a release "
            "decision; set register.auto_champion=true to crown anyway"
        )
    return True, "auto-champion: embedded store with the local profile"


def should_crown(
    auto_champion: bool, metric: str, challenger: dict[str, float], champion: dict | None,
    champion_error: str | None = None,
) -> tuple[bool, str]:
    """Whether the new version also becomes champion, and why (for the log and a tag).

    Args:
        auto_champion: the decision of :func:`auto_champion_decision`.
        metric: the selection metric.
        challenger: the new version's ``test_*`` metrics.
        champion: the champion's ``test_*`` metrics on the same test set; None when there is
            no champion, an empty mapping when it could not be scored.
        champion_error: why the champion could not be scored (for the reason).
    """
    if not auto_champion:
        return False, "auto_champion is off: promotion is a release decision"
    if champion is None:
        return True, "no champion yet"
    key = f"test_{metric}"
    if key not in champion:
        # a champion that could not be scored on this test set is no evidence the new
        # version is better: crowning it would replace the champion on no comparison
        why = f": {champion_error}" if champion_error else ""
        return False, f"the champion was not scored on this test set ({key} missing){why}"
    if is_better(metric, challenger[key], champion[key]):
        return True, f"{key} {challenger[key]:.4f} beats the champion's {champion[key]:.4f}"
    return False, f"{key} {challenger[key]:.4f} does not beat the champion's {champion[key]:.4f}"


def crown_decision(
    on: bool,
    why_on: str,
    metric: str,
    test_metrics: dict[str, float],
    champion: str | None,
    champion_is_this_model: bool,
    evaluated: dict[str, float],
    comparison: str | None,
) -> tuple[bool, str]:
    """Whether the workflow crowns its new version, and why (recorded and printed).

    Args:
        on: the auto-champion decision (:func:`auto_champion_decision`) and ``why_on`` its
            reason.
        why_on: why auto-champion is on or off.
        metric: the selection metric.
        test_metrics: the new version's ``test_*`` metrics.
        champion: the champion's version evaluate compared against (None: no champion).
        champion_is_this_model: the champion is the very model being registered.
        evaluated: evaluate's metrics (``champion_test_*`` when the champion was scored).
        comparison: evaluate's ``mlops.champion_comparison`` tag (why it was not scored).
    """
    if not on:
        return False, why_on
    if champion is None:
        crown, why = should_crown(True, metric, test_metrics, None)
    elif champion_is_this_model:
        crown, why = False, f"the champion (version {champion}) is this very model"
    else:
        scored = {k.removeprefix("champion_"): v for k, v in evaluated.items()
                  if k.startswith("champion_test_")}
        crown, why = should_crown(
            True, metric, test_metrics, scored,
            champion_error=f"champion version {champion} {comparison or 'not scored'}")
    return crown, f"{why} ({why_on})"
