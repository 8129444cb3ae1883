"""Two versions side by side: params, metrics with deltas, signature, requirements, lineage."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from registry.policy import schema_changes
from registry.versions import LINEAGE_TAGS, VersionInfo

_REQ_NAME = re.compile(r"^\s*([A-Za-z0-9_.\-\[\]]+)")


@dataclass(frozen=True)
class Row:
    """One compared item: its values in A and B, and whether they differ."""

    key: str
    a: str
    b: str
    changed: bool
    delta: float | None = None


@dataclass(frozen=True)
class VersionDiff:
    """The comparison of two versions (A is the reference, B the one compared to it)."""

    a: str
    b: str
    params: list[Row] = field(default_factory=list)
    metrics: list[Row] = field(default_factory=list)
    signature: list[Row] = field(default_factory=list)
    requirements: list[Row] = field(default_factory=list)
    lineage: list[Row] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """True when anything differs."""
        rows = self.params + self.metrics + self.signature + self.requirements + self.lineage
        return any(r.changed for r in rows)


def _requirement_map(reqs) -> dict[str, str]:
    out = {}
    for line in reqs:
        m = _REQ_NAME.match(line)
        if m:
            out[m.group(1).lower().replace("_", "-")] = line.strip()
    return out


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def diff_versions(a: VersionInfo, b: VersionInfo) -> VersionDiff:
    """Compare ``a`` and ``b`` (pure: both are fully read beforehand)."""
    params = [
        Row(k, _fmt(a.params.get(k)), _fmt(b.params.get(k)), a.params.get(k) != b.params.get(k))
        for k in sorted(set(a.params) | set(b.params))
    ]
    metrics = []
    for k in sorted(set(a.metrics) | set(b.metrics)):
        va, vb = a.metrics.get(k), b.metrics.get(k)
        delta = vb - va if va is not None and vb is not None else None
        metrics.append(Row(k, _fmt(va), _fmt(vb), va != vb, delta))

    signature = []
    changes = schema_changes(a.files.inputs, b.files.inputs)
    for col in changes["removed"]:
        signature.append(Row(f"input {col}", a.files.inputs[col], "removed", True))
    for col, ta, tb in changes["retyped"]:
        signature.append(Row(f"input {col}", ta, tb, True))
    for col in changes["added"]:
        signature.append(Row(f"input {col}", "added", b.files.inputs[col], True))
    if (a.files.inputs is None) != (b.files.inputs is None):
        signature.append(Row("inputs", "none" if a.files.inputs is None else "signed",
                             "none" if b.files.inputs is None else "signed", True))
    if a.files.outputs != b.files.outputs:
        signature.append(Row("outputs", _fmt(a.files.outputs), _fmt(b.files.outputs), True))
    if not signature:
        n = len(a.files.inputs or {})
        signature.append(Row("inputs", f"{n} columns", f"{n} columns", False))

    ra, rb = _requirement_map(a.files.requirements), _requirement_map(b.files.requirements)
    requirements = [
        Row(k, ra.get(k, "-"), rb.get(k, "-"), ra.get(k) != rb.get(k))
        for k in sorted(set(ra) | set(rb))
    ]
    lineage = [
        Row(t, a.tags.get(t, "-"), b.tags.get(t, "-"), a.tags.get(t) != b.tags.get(t))
        for t in LINEAGE_TAGS
    ]
    lineage.append(Row("source run", a.run_id or "-", b.run_id or "-", a.run_id != b.run_id))
    return VersionDiff(a.ref, b.ref, params, metrics, signature, requirements, lineage)
