"""Rich tables for the command line (the only place output is formatted)."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from registry.diff import Row, VersionDiff
from registry.promotion import PROMOTION_TAG_PREFIX, Attempt, iso
from registry.validation import Validation
from registry.versions import LINEAGE_TAGS, METRIC_TAG_PREFIX, ModelRow, VersionInfo

PASS = Text("PASS", style="bold green")
FAIL = Text("FAIL", style="bold red")


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left", show_lines=False)
    for col in columns:
        table.add_column(col, overflow="fold")
    return table


def models_table(rows: list[ModelRow]) -> Table:
    """``list``: one line per version."""
    metric_names = sorted({m for r in rows for m in r.metrics})[:6]
    table = _table("Registered models", "model", "version", "aliases", "created",
                   *metric_names, "run")
    for r in rows:
        table.add_row(
            r.name, r.version, ", ".join(r.aliases) or "-", iso(r.created) if r.created else "-",
            *[f"{r.metrics[m]:.4f}" if m in r.metrics else "-" for m in metric_names],
            r.run_id or "-",
        )
    return table


def gates_table(validation: Validation) -> Table:
    """``validate``: each gate with its numbers."""
    champion = f"champion: version {validation.champion}" if validation.champion else "no champion"
    table = _table(f"Promotion policy for {validation.name}/{validation.version} ({champion})",
                   "gate", "result", "value", "expected", "detail")
    for g in validation.gates:
        table.add_row(g.gate, PASS if g.passed else FAIL, g.value, g.expected, g.detail)
    return table


def _kv(title: str, items, key: str = "key", value: str = "value") -> Table:
    table = _table(title, key, value)
    for k, v in items:
        table.add_row(str(k), str(v))
    return table


def version_tables(info: VersionInfo, history: list[Attempt]) -> list[Table]:
    """``show``: overview, metrics, params, signature, requirements, lineage, tags, history."""
    tables = [_kv(f"{info.ref}", [
        ("aliases", ", ".join(info.aliases) or "-"),
        ("created", iso(info.created) if info.created else "-"),
        ("source run", info.run_id or "-"),
        ("source", info.source),
        ("flavors", ", ".join(info.files.flavors) or "-"),
        ("description", info.description or "-"),
    ], "field")]
    tables.append(_kv("Metrics", [(k, f"{v:.4f}") for k, v in sorted(info.metrics.items())],
                      "metric"))
    tables.append(_kv("Params", sorted(info.params.items()), "param"))
    sig = _table("Signature", "io", "column", "type")
    for col, kind in (info.files.inputs or {}).items():
        sig.add_row("input", col, kind)
    for col, kind in (info.files.outputs or {}).items():
        sig.add_row("output", col, kind)
    if info.files.inputs is None:
        sig.add_row("input", "-", info.files.problem or "no signature")
    tables.append(sig)
    tables.append(_kv("Requirements", [(i + 1, r) for i, r in
                                       enumerate(info.files.requirements)], "#", "requirement"))
    tables.append(_kv("Lineage", [(t, info.tags.get(t, "-")) for t in LINEAGE_TAGS], "tag"))
    other = [(k, v) for k, v in sorted(info.tags.items())
             if k not in LINEAGE_TAGS and not k.startswith((METRIC_TAG_PREFIX,
                                                            PROMOTION_TAG_PREFIX))]
    tables.append(_kv("Tags", other, "tag"))
    promo = [(k, v) for k, v in sorted(info.tags.items()) if k.startswith(PROMOTION_TAG_PREFIX)
             and not k.endswith(".gates")]
    if promo:
        tables.append(_kv("Last promotions", promo, "tag"))
    tables.append(history_table(info.name, history, f"History of {info.ref}"))
    return tables


def _row_style(row: Row) -> str:
    return "yellow" if row.changed else ""


def diff_tables(diff: VersionDiff) -> list[Table]:
    """``diff``: params, metrics (with deltas), signature, requirements, lineage."""
    tables = []
    for title, rows in (("Params", diff.params), ("Signature", diff.signature),
                        ("Requirements", diff.requirements), ("Lineage", diff.lineage)):
        table = _table(title, "", diff.a, diff.b, "changed")
        for r in rows:
            table.add_row(r.key, r.a, r.b, "yes" if r.changed else "", style=_row_style(r))
        tables.append(table)
    metrics = _table("Metrics", "", diff.a, diff.b, "delta")
    for r in diff.metrics:
        metrics.add_row(r.key, r.a, r.b, "-" if r.delta is None else f"{r.delta:+.4f}",
                        style=_row_style(r))
    tables.insert(1, metrics)
    return tables


def history_table(name: str, attempts: list[Attempt], title: str | None = None) -> Table:
    """``history``: every alias move (and lost attempt), oldest first."""
    table = _table(title or f"Alias history of {name} (oldest first)", "when", "alias", "kind",
                   "version", "previous", "by", "outcome", "forced", "reason")
    for a in attempts:
        style = "" if a.outcome == "won" else "dim"
        table.add_row(iso(a.at), a.alias, a.kind, a.version or "-", a.previous or "-", a.by,
                      a.outcome, "yes" if a.forced else "", a.reason, style=style)
    return table
