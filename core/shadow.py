"""Shadow traffic's record: the metric and tag names, and the read of a challenger's totals.

The scoring server (``serve --shadow``, in ``serving.shadow``) writes these runs; the
registry's policy (``shadow.min_agreement``, ``shadow.min_requests``) reads them. Both sides
use the names below, so they cannot drift apart.

A shadow run is an MLflow run in the challenger version's experiment, tagged with the model,
both versions and the serving process. Its metrics are totals so far, logged every minute
and at shutdown (the last value is the run's total). Several runs exist for one pair of
versions when several workers, or several servers, shadow: :func:`shadow_totals` adds them.
"""

from __future__ import annotations

from dataclasses import dataclass

from core import names

# Metrics (cumulative totals of the run)
REQUESTS = "shadow.requests"
ROWS = "shadow.rows"
AGREEMENT = "shadow.agreement"
ERRORS = "shadow.challenger_errors"
DROPPED = "shadow.dropped"
FLIPS_PREFIX = "shadow.flips."  # shadow.flips.<champion label>: rows the challenger changed
LATENCY_CHAMPION_P50 = "shadow.latency_ms.champion_p50"
LATENCY_CHALLENGER_P50 = "shadow.latency_ms.challenger_p50"
LATENCY_CHAMPION_P95 = "shadow.latency_ms.champion_p95"
LATENCY_CHALLENGER_P95 = "shadow.latency_ms.challenger_p95"

# Run tags
TAG_KIND = names.KIND_TAG
KIND = "shadow"
TAG_MODEL = names.SHADOW_MODEL_TAG
TAG_CHAMPION_VERSION = names.SHADOW_CHAMPION_VERSION_TAG
TAG_CHALLENGER_VERSION = names.SHADOW_CHALLENGER_VERSION_TAG
TAG_TASK = names.SHADOW_TASK_TAG
TAG_TOLERANCE = names.SHADOW_TOLERANCE_TAG
# Version tag on the challenger: its latest shadow run
TAG_VERSION_RUN = names.SHADOW_RUN_TAG


@dataclass(frozen=True)
class ShadowTotals:
    """A challenger's shadow record against one champion, over all its shadow runs."""

    runs: int
    requests: int
    rows: int
    agreement: float | None


def shadow_runs(client, name: str, version: str, champion: str | None = None) -> list:
    """The shadow runs of ``name`` version ``version`` (against ``champion`` when given)."""
    mv = client.get_model_version(name, str(version))
    if not mv.run_id:
        return []
    experiment = client.get_run(mv.run_id).info.experiment_id
    query = (f"tags.`{TAG_KIND}` = '{KIND}' and tags.`{TAG_MODEL}` = '{_q(name)}' "
             f"and tags.`{TAG_CHALLENGER_VERSION}` = '{_q(str(version))}'")
    if champion is not None:
        query += f" and tags.`{TAG_CHAMPION_VERSION}` = '{_q(str(champion))}'"
    return list(client.search_runs([experiment], filter_string=query, max_results=1000))


def shadow_totals(client, name: str, version: str, champion: str | None = None) -> ShadowTotals:
    """Requests and row agreement of the challenger, added over its shadow runs."""
    runs = shadow_runs(client, name, version, champion)
    requests = rows = 0
    agreed = 0.0
    for run in runs:
        metrics = run.data.metrics
        n = int(metrics.get(ROWS, 0))
        requests += int(metrics.get(REQUESTS, 0))
        rows += n
        agreed += float(metrics.get(AGREEMENT, 0.0)) * n
    return ShadowTotals(len(runs), requests, rows, agreed / rows if rows else None)


def _q(value: str) -> str:
    return value.replace("'", "\\'")
