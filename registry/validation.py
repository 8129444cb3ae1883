"""Gather the evidence for a version's promotion policy and evaluate its gates."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from core.models import alias_holder
from core.names import POSITIVE_CLASS_TAG
from registry.errors import RegistryError
from registry.policy import Evidence, GateResult, Policy, evaluate_policy
from registry.scoring import infer_task, load_test_data, score_versions
from registry.versions import read_model_files

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Validation:
    """The outcome of ``validate``: every gate, and what was compared."""

    name: str
    version: str
    champion: str | None
    gates: tuple[GateResult, ...]

    @property
    def passed(self) -> bool:
        """True when every gate passed."""
        return all(g.passed for g in self.gates)

    @property
    def failed(self) -> list[GateResult]:
        """The gates that failed."""
        return [g for g in self.gates if not g.passed]


def _needs_scores(policy: Policy) -> bool:
    return bool(policy.thresholds) or policy.champion is not None


def validate_version(client, mv, policy: Policy) -> Validation:
    """Run ``policy`` for the ModelVersion ``mv``.

    The candidate and the current champion are both scored on the candidate's test split
    (tag ``mlops.test_data``, target column from ``mlops.target``), so the comparison is on
    the same data. Their code runs in a child process without credentials (:mod:`core.sandbox`).
    """
    name, version = mv.name, str(mv.version)
    tags = dict(mv.tags or {})
    champion_version = alias_holder(client, name, policy.champion_alias)
    if champion_version == version:
        champion_version = None  # the candidate already serves: nothing to beat

    files = read_model_files(client, name, version)
    champion_files = read_model_files(client, name, champion_version) if champion_version else None

    metrics: dict[str, float] = {}
    champion_metrics: dict[str, float] = {}
    problem = champion_problem = None
    if _needs_scores(policy):
        try:
            X, y = load_test_data(client, tags)
            task = infer_task(tags, y)
            # the class the workflow scored f1/roc_auc on (a version from before it: the last)
            positive = tags.get(POSITIVE_CLASS_TAG)
            wanted = {version: files.inputs}
            if champion_version:
                wanted[champion_version] = champion_files.inputs
            # one child process without credentials runs both versions' code (core.sandbox)
            scored = score_versions(client, name, wanted, X, y, task, positive)
            if isinstance(scored[version], RegistryError):
                raise scored[version]
            metrics = scored[version]
            if champion_version:
                if isinstance(scored[champion_version], RegistryError):
                    champion_problem = str(scored[champion_version])
                else:
                    champion_metrics = scored[champion_version]
        except RegistryError as exc:
            problem = champion_problem = str(exc)

    shadow = None
    if policy.shadow is not None and champion_version:
        from core.shadow import shadow_totals

        shadow = shadow_totals(client, name, version, champion=champion_version)
    candidate = Evidence(version, metrics, files.inputs, tags, problem or files.problem, shadow)
    champion = None
    if champion_version:
        champion = Evidence(
            champion_version,
            champion_metrics,
            champion_files.inputs,
            {},
            champion_problem or champion_files.problem,
        )
    gates = evaluate_policy(policy, candidate, champion)
    _logger.info("%s/%s: %d of %d gates passed", name, version,
                 sum(g.passed for g in gates), len(gates))
    return Validation(name, version, champion_version, tuple(gates))
