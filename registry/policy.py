"""Promotion policies: one YAML file per registered model, evaluated gate by gate.

A policy says what a version must show before it may take the champion alias: metric
thresholds, a margin over the current champion on the same test data, an input signature
compatible with the champion's, tags that must be present, and agreement with the champion
on live traffic (shadow runs of ``serve --shadow``). :func:`evaluate_policy` is a
pure function of the evidence gathered by :mod:`registry.validation`; the metric gates are
decided by MLflow's own ``MetricThreshold`` / ``validate_evaluation_results``.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core import metrics
from core.approvals import AliasApprovals
from core.settings import SettingsError, read_yaml_mapping
from registry.errors import RegistryError

POLICY_DIR_ENV = "MLOPS_POLICY_DIR"

_logger = logging.getLogger(__name__)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _known_metric(name: str) -> str:
    # the catalogue's one-line error: "unknown metric 'x'; known: roc_auc, ..."
    return metrics.get(name).name


def _greater_is_better(name: str) -> bool:
    return metrics.get(name).greater_is_better


class ChampionGate(_Frozen):
    """The candidate must beat the champion on ``metric`` by a margin."""

    metric: str
    min_absolute_change: float = Field(0.0, ge=0)
    min_relative_change: float | None = Field(None, ge=0, le=1)

    @field_validator("metric")
    @classmethod
    def _known(cls, value: str) -> str:
        return _known_metric(value)


class ShadowGate(_Frozen):
    """Live traffic scored by both (``serve --shadow``): enough of it, and enough agreement."""

    min_agreement: float | None = Field(None, ge=0, le=1)
    min_requests: int = Field(0, ge=0)


class Policy(_Frozen):
    """The promotion policy of one registered model."""

    model: str
    champion_alias: str = "champion"
    thresholds: dict[str, float] = Field(default_factory=dict)
    champion: ChampionGate | None = None
    signature_compatible: bool = True
    required_tags: tuple[str, ...] = ()
    shadow: ShadowGate | None = None
    # Approvals a move of each alias needs on the team server (core.approvals reads it there).
    aliases: dict[str, AliasApprovals] = Field(default_factory=dict)

    @field_validator("thresholds")
    @classmethod
    def _known_thresholds(cls, value: dict[str, float]) -> dict[str, float]:
        for name in value:
            _known_metric(name)
        return value


def policy_path(model: str, policy_dir: str | Path | None = None) -> Path:
    """Where the policy of ``model`` lives: ``<policy_dir>/<model>.yaml``.

    ``policy_dir`` defaults to ``$MLOPS_POLICY_DIR`` or ``conf/policies`` of the settings
    folder. Characters unsafe in file names become ``_``.
    """
    if policy_dir is None:
        import os

        from core.settings import conf_dir

        policy_dir = os.environ.get(POLICY_DIR_ENV) or conf_dir() / "policies"
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", model)
    return Path(policy_dir) / f"{safe}.yaml"


def register_declared_metrics() -> None:
    """Add the custom metrics the team's settings declare to the catalogue.

    A policy may name them, and the gates score them: the settings read are those of every
    command (``conf/``, ``$MLOPS_PROFILE``, ``$MLOPS_SETTINGS_FILE``). Settings that do not load
    declare nothing here (a policy naming such a metric then fails as an unknown metric).

    Raises:
        RegistryError: a declared metric clashes with one already registered.
    """
    from core.settings import load_settings

    try:
        declared = load_settings().metrics
    except SettingsError as exc:
        _logger.debug("no custom metrics for the policy gates: %s", exc)
        return
    try:
        metrics.register_declared(declared)
    except metrics.MetricError as exc:
        raise RegistryError(str(exc)) from None


def load_policy(
    model: str, path: str | Path | None = None, policy_dir: str | Path | None = None
) -> Policy:
    """Read and validate the policy of ``model``.

    Raises:
        RegistryError: the file is missing, is not YAML, has unknown keys or is for another
            model; the message is one line naming the file and the key.
    """
    file = Path(path) if path else policy_path(model, policy_dir)
    if not file.is_file():
        raise RegistryError(f"no promotion policy for model {model!r}: {file} does not exist")
    try:
        raw = read_yaml_mapping(file, "policy keys")
    except SettingsError as exc:
        raise RegistryError(str(exc)) from None
    raw.setdefault("model", model)
    register_declared_metrics()
    try:
        policy = Policy.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "policy"
        raise RegistryError(f"{file}: {where}: {err['msg']}") from None
    if policy.model != model:
        raise RegistryError(f"{file} is the policy of {policy.model!r}, not of {model!r}")
    return policy


@dataclass(frozen=True)
class Evidence:
    """What is known about one version when its gates are evaluated.

    Attributes:
        version: the version number.
        metrics: metrics scored on the candidate's test split (empty if not scored).
        inputs: input schema as ``{column: type}`` (None when the model has no signature).
        tags: the version's tags.
        problem: why metrics could not be scored, if they could not.
        shadow: the version's shadow totals against the champion (None: not looked up).
    """

    version: str
    metrics: dict[str, float] = field(default_factory=dict)
    inputs: dict[str, str] | None = None
    tags: dict[str, str] = field(default_factory=dict)
    problem: str | None = None
    shadow: object | None = None  # core.shadow.ShadowTotals


@dataclass(frozen=True)
class GateResult:
    """The outcome of one gate, with the numbers that decided it."""

    gate: str
    passed: bool
    value: str
    expected: str
    detail: str = ""

    def to_dict(self) -> dict:
        """A JSON-ready form (recorded in tags)."""
        return {
            "gate": self.gate,
            "passed": self.passed,
            "value": self.value,
            "expected": self.expected,
            "detail": self.detail,
        }


def schema_changes(old: dict[str, str] | None, new: dict[str, str] | None) -> dict[str, list]:
    """Input columns removed, retyped and added going from ``old`` to ``new``.

    Returns:
        ``{"removed": [col], "retyped": [(col, old_type, new_type)], "added": [col]}``.
    """
    old, new = old or {}, new or {}
    return {
        "removed": [c for c in old if c not in new],
        "retyped": [(c, old[c], new[c]) for c in old if c in new and old[c] != new[c]],
        "added": [c for c in new if c not in old],
    }


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.4f}"


def _metric_passes(name: str, threshold, candidate: float, baseline: float | None) -> bool:
    """Decide one metric gate with MLflow's model validation."""
    import mlflow
    from mlflow.models.evaluation import EvaluationResult
    from mlflow.models.evaluation.validation import ModelValidationFailedException

    try:
        mlflow.validate_evaluation_results(
            {name: threshold},
            EvaluationResult(metrics={name: candidate}, artifacts={}),
            EvaluationResult(metrics={name: baseline}, artifacts={}) if baseline is not None
            else None,
        )
    except ModelValidationFailedException:
        return False
    return True


def _threshold_gates(policy: Policy, candidate: Evidence) -> list[GateResult]:
    from mlflow.models import MetricThreshold

    gates = []
    for name, limit in policy.thresholds.items():
        greater = _greater_is_better(name)
        op = ">=" if greater else "<="
        value = candidate.metrics.get(name)
        if value is None or math.isnan(value):
            gates.append(GateResult(f"{name} {op} {limit:g}", False, "n/a", f"{op} {limit:g}",
                                    candidate.problem or f"{name} was not scored"))
            continue
        passed = _metric_passes(
            name, MetricThreshold(threshold=float(limit), greater_is_better=greater), value, None
        )
        gates.append(GateResult(f"{name} {op} {limit:g}", passed, _fmt(value), f"{op} {limit:g}",
                                "on the candidate's test split"))
    return gates


def _champion_gate(policy: Policy, candidate: Evidence, champion: Evidence | None) -> GateResult:
    from mlflow.models import MetricThreshold

    spec = policy.champion
    greater = _greater_is_better(spec.metric)
    sign = "+" if greater else "-"
    need = f"{sign}{spec.min_absolute_change:g}"
    if spec.min_relative_change:
        need += f" and {sign}{spec.min_relative_change:.1%}"
    name = f"beats {policy.champion_alias} on {spec.metric}"
    expected = f"delta {'>=' if greater else '<='} {need}"
    if champion is None:
        return GateResult(name, True, "no champion", expected, f"no {policy.champion_alias} yet")
    value = candidate.metrics.get(spec.metric)
    base = champion.metrics.get(spec.metric)
    if value is None or math.isnan(value):
        return GateResult(name, False, "n/a", expected,
                          candidate.problem or f"{spec.metric} was not scored")
    if base is None or math.isnan(base):
        return GateResult(name, False, f"{_fmt(value)} vs n/a", expected,
                          champion.problem or f"{policy.champion_alias} was not scored")
    kwargs = {"greater_is_better": greater}
    if spec.min_absolute_change > 0:
        kwargs["min_absolute_change"] = float(spec.min_absolute_change)
    if spec.min_relative_change:
        kwargs["min_relative_change"] = float(spec.min_relative_change)
    if len(kwargs) == 1:
        # No margin: "not worse than the champion" (MetricThreshold wants margins > 0).
        kwargs["threshold"] = float(base)
    passed = _metric_passes(spec.metric, MetricThreshold(**kwargs), value, base)
    delta = value - base
    return GateResult(
        name,
        passed,
        f"{_fmt(value)} vs {_fmt(base)} (delta {delta:+.4f})",
        expected,
        f"{policy.champion_alias} is version {champion.version}, scored on the same test split",
    )


def _signature_gate(candidate: Evidence, champion: Evidence | None) -> GateResult:
    name = "signature compatible"
    expected = "no removed or retyped inputs"
    if champion is None:
        return GateResult(name, True, "no champion", expected, "nothing to be compatible with")
    if candidate.inputs is None:
        return GateResult(name, False, "no signature", expected, "the candidate has no signature")
    if champion.inputs is None:
        return GateResult(name, True, "champion unsigned", expected,
                          f"version {champion.version} has no signature to compare")
    changes = schema_changes(champion.inputs, candidate.inputs)
    problems = [f"removed {c}" for c in changes["removed"]]
    problems += [f"retyped {c} {a}->{b}" for c, a, b in changes["retyped"]]
    added = f"; added {', '.join(changes['added'])}" if changes["added"] else ""
    if problems:
        return GateResult(name, False, f"{len(problems)} breaking", expected,
                          "; ".join(problems) + added)
    return GateResult(name, True, "compatible", expected,
                      f"same inputs as version {champion.version}{added}")


def _tags_gate(policy: Policy, candidate: Evidence) -> GateResult:
    missing = [t for t in policy.required_tags if not candidate.tags.get(t)]
    have = len(policy.required_tags) - len(missing)
    return GateResult(
        "required tags",
        not missing,
        f"{have}/{len(policy.required_tags)} present",
        "all present",
        f"missing {', '.join(missing)}" if missing else "",
    )


def _shadow_gates(policy: Policy, candidate: Evidence,
                  champion: Evidence | None) -> list[GateResult]:
    spec = policy.shadow
    gates = []
    totals = candidate.shadow
    runs = getattr(totals, "runs", 0)
    requests = getattr(totals, "requests", 0)
    agreement = getattr(totals, "agreement", None)
    against = f"against {policy.champion_alias} version {champion.version}" if champion else ""
    detail = (f"{runs} shadow run(s) {against}: `python -m serving serve "
              f"NAME@{policy.champion_alias} --shadow NAME/{candidate.version}`")
    if spec.min_requests:
        name = f"shadow requests >= {spec.min_requests}"
        if champion is None:
            gates.append(GateResult(name, True, "no champion", f">= {spec.min_requests}",
                                    f"no {policy.champion_alias} to shadow"))
        else:
            gates.append(GateResult(name, requests >= spec.min_requests, str(requests),
                                    f">= {spec.min_requests}", detail))
    if spec.min_agreement is not None:
        name = f"shadow agreement >= {spec.min_agreement:g}"
        if champion is None:
            gates.append(GateResult(name, True, "no champion", f">= {spec.min_agreement:g}",
                                    f"no {policy.champion_alias} to shadow"))
        else:
            gates.append(GateResult(
                name, agreement is not None and agreement >= spec.min_agreement,
                _fmt(agreement), f">= {spec.min_agreement:g}",
                detail if agreement is not None else "no shadowed rows yet; " + detail))
    return gates


def evaluate_policy(
    policy: Policy, candidate: Evidence, champion: Evidence | None
) -> list[GateResult]:
    """Every gate of ``policy`` for ``candidate`` against ``champion`` (None: no champion).

    Pure: all evidence (scored metrics, schemas, tags) is gathered beforehand.
    """
    gates = [_tags_gate(policy, candidate)] if policy.required_tags else []
    gates += _threshold_gates(policy, candidate)
    if policy.champion is not None:
        gates.append(_champion_gate(policy, candidate, champion))
    if policy.signature_compatible:
        gates.append(_signature_gate(candidate, champion))
    if policy.shadow is not None:
        gates += _shadow_gates(policy, candidate, champion)
    return gates
