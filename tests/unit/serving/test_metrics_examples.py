"""The monitoring examples (alert rules, dashboard) name only metrics the servers expose."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry

from serving.online.metrics import ServingMetrics
from serving.sagemaker.metrics import FollowMetrics

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "monitoring"
NAME = re.compile(r"\bmlops_[a-z_]+\b")


def _exposed() -> set[str]:
    names = set()
    for make in (ServingMetrics, FollowMetrics):
        registry = CollectorRegistry()
        make(registry)
        for family in registry.collect():
            names.add(family.name)
            names.update(s.name for s in family.samples)
    # histograms' series exist once observed
    names.update(n + suffix for n in list(names) for suffix in ("_bucket", "_count", "_sum"))
    return names


def test_alert_rules_are_valid_and_use_exposed_metrics():
    doc = yaml.safe_load((EXAMPLES / "alerts.yml").read_text())
    rules = [rule for group in doc["groups"] for rule in group["rules"]]
    assert {r["alert"] for r in rules} >= {
        "ScoringErrorRateHigh", "ScoringLatencyHigh", "ServedModelVersionChanged"}
    exposed = _exposed()
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        used = set(NAME.findall(rule["expr"]))
        assert used and used <= exposed, (rule["alert"], used - exposed)


def test_dashboard_uses_exposed_metrics():
    dashboard = json.loads((EXAMPLES / "dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {n for e in exprs for n in NAME.findall(e)}
    assert len(exprs) >= 6 and used <= _exposed(), used - _exposed()
