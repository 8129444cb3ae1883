"""register: a model version with lineage tags, the challenger alias, and (local) champion."""

from __future__ import annotations

import logging

from core.metrics import is_better

_logger = logging.getLogger(__name__)


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
) -> dict[str, str]:
    """The tags every registered version carries (read by the registry's gates)."""
    tags = {
        "mlops.data_digest": data_digest,
        "mlops.git_commit": git_commit,
        "mlops.settings_hash": settings_hash,
        "mlops.task": task,
        "mlops.selection_metric": metric,
        "mlops.target": target,
        "mlops.run_id_train": train_run_id,
        "mlops.test_data": test_data_uri,
        "mlops.train_data": train_data_uri,
    }
    tags.update({f"mlops.metric.{k}": f"{v:.6g}" for k, v in test_metrics.items()})
    return tags


def should_crown(
    auto_champion: bool, metric: str, challenger: dict[str, float], champion: dict | None
) -> tuple[bool, str]:
    """Whether the new version also becomes champion, and why (for the log and a tag)."""
    if not auto_champion:
        return False, "auto_champion is off in this profile: promotion is a release decision"
    if champion is None:
        return True, "no champion yet"
    key = f"test_{metric}"
    if key not in champion:
        return True, f"champion has no {key} on this test set"
    if is_better(metric, challenger[key], champion[key]):
        return True, f"{key} {challenger[key]:.4f} beats the champion's {champion[key]:.4f}"
    return False, f"{key} {challenger[key]:.4f} does not beat the champion's {champion[key]:.4f}"
