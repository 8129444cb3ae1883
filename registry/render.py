"""What the registry's command line prints: rich tables for people, JSON documents for scripts.

The only place output is formatted. Tables follow :mod:`core.output` (no word broken, run ids
shortened, plain full-width rows when piped). The JSON documents of ``--output json`` (keys are
stable; versions are strings, times ISO-8601 UTC, metrics numbers, run ids whole):

``list``
    ``{"versions": [{"name", "version", "aliases": [..], "created", "run_id",
    "metrics": {name: number}}]}`` — one entry per version, models by name, newest version first.
``show``
    ``{"name", "version", "aliases", "created", "run_id", "source", "description", "flavors",
    "metrics", "params": {name: string}, "signature": {"inputs", "outputs"} (``{column: type}``
    or null), "signature_problem", "requirements": [..], "lineage": {"data_digest",
    "git_commit", "settings_hash"}, "tags": {tag: value}, "history": [attempt]}``.
``history``
    ``{"name", "alias" (the filter, or null), "attempts": [attempt]}``, oldest first; an
    attempt is ``{"id", "at", "alias", "kind", "version", "previous", "by", "outcome",
    "winner", "forced", "reason", "gates": [gate]}``.
``diff``
    ``{"a", "b", "changed", "params", "metrics", "signature", "requirements", "lineage"}``:
    each a list of ``{"key", "a", "b", "changed"}`` (null where a side lacks the item);
    metrics rows also carry ``"delta"`` (b - a) and their values are numbers.
``validate``
    ``{"name", "version", "champion" (version or null), "passed", "gates": [gate]}``; a gate is
    ``{"gate", "passed", "value", "expected", "detail"}`` (value and expected as the table shows
    them). The exit code stays 1 when a gate fails.
``lineage``
    ``{"name", "version", "aliases", "recorded" (the workflow run holds the lineage record),
    "workflow_run": {"run_id", "name", "experiment_id", "status", "started", "ended"},
    "code": {"commit", "dirty", "diff" (artifact URI or null), "diff_sha256", "diff_withheld":
    {path: [kind of secret]} (files left out of the diff), "user_files": {path: sha256}},
    "data": {"source", "kind", "location", "file_sha256", "digest", "rows",
    "schema": {column: type}}, "settings" (the resolved settings, or null), "settings_hash",
    "profile", "environment": {"python", "packages": {name: version}}, "steps": [{"step",
    "run_id", "reused", "computed_by" (the workflow run that ran the step), "status",
    "seconds", "cache": {part: hash}}], "alias_history": [attempt], "copies": [{"target",
    "name", "version", "link", "at"}], "copied_from": {tag: value}}``; what was not recorded is
    null (or empty).
``reproduce``
    ``{"name", "version", "identical", "rows" (test rows compared), "differing_rows" (how many),
    "first_differing": [{"row", "registered", "reproduced", "proba_delta"}], "max_proba_delta",
    "causes": [text, in the order to suspect them], "package_changes": [{"package",
    "recorded", "installed"}], "machine_changes": [text], "run_id" (the re-run),
    "experiment_id", "seconds" (the re-run), "original_seconds"}``; progress lines go to
    stderr, and the exit code stays 1 when the predictions differ.
"""

from __future__ import annotations

from rich.text import Text

from core.names import PREFIX
from core.output import MIN_NUMBER, MIN_SHRUNK, number, short_id, table, words
from registry.diff import Row, VersionDiff
from registry.lineage import Lineage
from registry.promotion import PROMOTION_TAG_PREFIX, Attempt, iso
from registry.reproduce import Reproduction
from registry.reproduce_compare import describe_library
from registry.validation import Validation
from registry.versions import LINEAGE_TAGS, METRIC_TAG_PREFIX, ModelRow, VersionInfo

PASS = Text("PASS", style="bold green")
FAIL = Text("FAIL", style="bold red")
_LINEAGE_PREFIX = PREFIX


def _when(ms: int | None) -> str | None:
    return iso(ms) if ms else None


#: Width of ``list``'s columns other than metrics, shrunk (cells, padding, borders).
_LIST_BASE = 2 * MIN_SHRUNK + len("version") + len("2026-01-01T00:00:00Z") + 8 + 5 * 3 + 1
_MAX_METRICS = 6


def models_table(rows: list[ModelRow], width: int | None = None):
    """``list``: one line per version.

    Args:
        rows: the versions.
        width: the terminal's width, if any: only the metric columns that fit are shown (the
            title says how many more ``--output json`` has).
    """
    metric_names = sorted({m for r in rows for m in r.metrics})
    shown = _MAX_METRICS
    if width is not None:
        shown = min(shown, max(0, (width - _LIST_BASE) // (MIN_NUMBER + 3)))
    title = "Registered models"
    if len(metric_names) > shown:
        title += f" ({len(metric_names) - shown} more metrics with --output json)"
    metric_names = metric_names[:shown]
    out = table(title, "model", "version", "aliases", "created", *metric_names,
                "run", ids=("version", "created", "run"), numbers=metric_names)
    for r in rows:
        out.add_row(
            r.name, r.version, words(r.aliases), _when(r.created) or "-",
            *[f"{r.metrics[m]:.4f}" if m in r.metrics else "-" for m in metric_names],
            short_id(r.run_id),
        )
    return out


def models_json(rows: list[ModelRow]) -> dict:
    """``list --output json``."""
    return {"versions": [{
        "name": r.name,
        "version": r.version,
        "aliases": list(r.aliases),
        "created": _when(r.created),
        "run_id": r.run_id,
        "metrics": {k: number(v) for k, v in sorted(r.metrics.items())},
    } for r in rows]}


def gates_table(validation: Validation):
    """``validate``: each gate with its numbers."""
    champion = f"champion: version {validation.champion}" if validation.champion else "no champion"
    out = table(f"Promotion policy for {validation.name}/{validation.version} ({champion})",
                "gate", "result", "value", "expected", "detail", ids=("result",))
    for g in validation.gates:
        out.add_row(g.gate, PASS if g.passed else FAIL, g.value, g.expected, g.detail)
    return out


def validation_json(validation: Validation) -> dict:
    """``validate --output json``."""
    return {
        "name": validation.name,
        "version": validation.version,
        "champion": validation.champion,
        "passed": validation.passed,
        "gates": [g.to_dict() for g in validation.gates],
    }


def _kv(title: str, items, key: str = "key", value: str = "value"):
    out = table(title, key, value, ids=(key,))
    for k, v in items:
        out.add_row(str(k), str(v))
    return out


def version_tables(info: VersionInfo, history: list[Attempt]) -> list:
    """``show``: overview, metrics, params, signature, requirements, lineage, tags, history."""
    tables = [_kv(f"{info.ref}", [
        ("aliases", ", ".join(info.aliases) or "-"),
        ("created", _when(info.created) or "-"),
        ("source run", short_id(info.run_id)),
        ("source", info.source),
        ("flavors", ", ".join(info.files.flavors) or "-"),
        ("description", info.description or "-"),
    ], "field")]
    tables.append(_kv("Metrics", [(k, f"{v:.4f}") for k, v in sorted(info.metrics.items())],
                      "metric"))
    tables.append(_kv("Params", sorted(info.params.items()), "param"))
    sig = table("Signature", "io", "column", "type", ids=("io", "column"))
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


def version_json(info: VersionInfo, history: list[Attempt]) -> dict:
    """``show --output json``."""
    return {
        "name": info.name,
        "version": info.version,
        "aliases": list(info.aliases),
        "created": _when(info.created),
        "run_id": info.run_id,
        "source": info.source,
        "description": info.description,
        "flavors": list(info.files.flavors),
        "metrics": {k: number(v) for k, v in sorted(info.metrics.items())},
        "params": dict(sorted(info.params.items())),
        "signature": {"inputs": info.files.inputs, "outputs": info.files.outputs},
        "signature_problem": info.files.problem,
        "requirements": list(info.files.requirements),
        "lineage": {t.removeprefix(_LINEAGE_PREFIX): info.tags.get(t) for t in LINEAGE_TAGS},
        "tags": dict(sorted(info.tags.items())),
        "history": [attempt_json(a) for a in history],
    }


def _row_style(row: Row) -> str:
    return "yellow" if row.changed else ""


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def diff_tables(diff: VersionDiff) -> list:
    """``diff``: params, metrics (with deltas), signature, requirements, lineage."""
    tables = []
    for title, rows in (("Params", diff.params), ("Signature", diff.signature),
                        ("Requirements", diff.requirements), ("Lineage", diff.lineage)):
        out = table(title, "item", diff.a, diff.b, "changed", ids=("item", "changed"))
        for r in rows:
            a, b = (short_id(r.a), short_id(r.b)) if r.key == "source run" else (r.a, r.b)
            out.add_row(r.key, a, b, _yes(r.changed), style=_row_style(r))
        tables.append(out)
    metrics = table("Metrics", "metric", diff.a, diff.b, "delta", ids=("metric",),
                    numbers=(diff.a, diff.b, "delta"))
    for r in diff.metrics:
        metrics.add_row(r.key, r.a, r.b, "-" if r.delta is None else f"{r.delta:+.4f}",
                        style=_row_style(r))
    tables.insert(1, metrics)
    return tables


def _side(value: str) -> str | None:
    return None if value == "-" else value


def diff_json(diff: VersionDiff, a: VersionInfo, b: VersionInfo) -> dict:
    """``diff --output json`` (``a`` and ``b`` give the raw values the rows show formatted)."""

    def rows(items: list[Row]) -> list[dict]:
        return [{"key": r.key, "a": _side(r.a), "b": _side(r.b), "changed": r.changed}
                for r in items]

    return {
        "a": diff.a,
        "b": diff.b,
        "changed": diff.changed,
        "params": [{"key": r.key, "a": a.params.get(r.key), "b": b.params.get(r.key),
                    "changed": r.changed} for r in diff.params],
        "metrics": [{"key": r.key, "a": number(a.metrics.get(r.key)),
                     "b": number(b.metrics.get(r.key)), "delta": number(r.delta),
                     "changed": r.changed} for r in diff.metrics],
        "signature": rows(diff.signature),
        "requirements": rows(diff.requirements),
        "lineage": rows(diff.lineage),
    }


def history_table(name: str, attempts: list[Attempt], title: str | None = None):
    """``history``: every alias move (and lost attempt), oldest first."""
    from core.evidence import short

    out = table(title or f"Alias history of {name} (oldest first)", "when", "alias", "kind",
                "version", "previous", "by", "outcome", "forced", "evidence", "reason",
                ids=("when", "alias", "kind", "version", "previous", "outcome", "forced",
                     "evidence"))  # fmt: skip
    for a in attempts:
        style = "" if a.outcome == "won" else "dim"
        kind = f"{a.kind} (emergency)" if a.emergency else a.kind
        out.add_row(iso(a.at), a.alias, kind, a.version or "-", a.previous or "-", a.by,
                    a.outcome, _yes(a.forced), short(a.evidence), a.reason, style=style)
    return out


def attempt_json(a: Attempt) -> dict:
    """One alias move (or lost attempt) of the history, as JSON."""
    return {
        "id": a.id,
        "at": iso(a.at),
        "alias": a.alias,
        "kind": a.kind,
        "version": a.version,
        "previous": a.previous,
        "by": a.by,
        "outcome": a.outcome,
        "winner": a.winner,
        "forced": a.forced,
        "reason": a.reason,
        "gates": list(a.gates),
        "request": a.request,
        "approvals": [{**x, "at": _when(x.get("at"))} for x in a.approvals],
        "evidence": a.evidence,
        "emergency": a.emergency,
    }


def requests_table(found: list[dict]):
    """``requests``: promotion requests, oldest first, with their state and approvals."""
    from core.evidence import short

    out = table("Promotion requests (oldest first)", "request", "filed", "model", "version",
                "alias", "by", "status", "approvals", "evidence", "reason",
                ids=("request", "filed", "version", "alias", "status", "approvals", "evidence"))
    for r in found:
        if r.get("emergency"):  # an emergency rollback: its review, not approvals
            seen = r.get("review")
            approvals = (f"reviewed by {seen['by']} {iso(seen['at'])}"
                         + (f": {seen['reason']}" if seen.get("reason") else "")
                         if seen else "emergency: needs review")  # fmt: skip
        else:
            names = ", ".join(x["by"] for x in r["approvals"])
            approvals = f"{len(r['approvals'])}/{r['required']}" + (
                f" ({names})" if names else "")
        out.add_row(r["id"], iso(r["at"]), r["name"], r["version"], r["alias"], r["by"],
                    r["status"], approvals, short((r.get("evidence") or {}).get("digest")),
                    r["reason"],
                    style="" if r["status"] in ("open", "approved", "needs-review") else "dim")
    return out


def history_json(name: str, alias: str | None, attempts: list[Attempt]) -> dict:
    """``history --output json``."""
    return {"name": name, "alias": alias, "attempts": [attempt_json(a) for a in attempts]}


#: Settings sections ``lineage`` shows in its table (JSON has every section).
_SHOWN_SETTINGS = ("experiment", "cache", "data", "clean", "split", "train", "register")


def _flatten(node, prefix: str = "") -> list[tuple[str, str]]:
    """Dotted ``key = value`` rows of a nested mapping (lists as compact JSON)."""
    import json

    if isinstance(node, dict) and node:
        rows = []
        for key, value in node.items():
            rows.extend(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return rows
    text = node if isinstance(node, str) else json.dumps(node, separators=(",", ":"))
    return [(prefix, text)]


def _step_state(step) -> str:
    if not step.reused:
        return "ran"
    return f"reused from workflow run {short_id(step.workflow_run)}"


def lineage_tables(lin: Lineage) -> list:
    """``lineage``: the run, code, data, settings, packages, steps, alias moves and copies."""
    not_recorded = "not recorded"
    commit = lin.commit or not_recorded
    dirty = "-" if lin.dirty is None else "no"
    if lin.dirty:
        dirty = ("yes: the diff is the run's " + lin.diff if lin.diff
                 else "yes: no diff recorded")
    tables = [_kv(f"Lineage of {lin.ref}", [
        ("aliases", ", ".join(lin.aliases) or "-"),
        ("workflow run", f"{lin.run_id or '-'} ({lin.run_name or '-'}, "
                         f"{(lin.run_status or '-').lower()})"),
        ("experiment", lin.experiment_id or "-"),
        ("started", _when(lin.run_start) or "-"),
        ("commit", commit),
        ("dirty", dirty),
        *[(f"left out of the diff {path}", f"holds a secret ({', '.join(kinds)})")
          for path, kinds in lin.diff_withheld.items()],
        *[(f"user file {path}", f"sha256 {digest}") for path, digest in lin.user_files.items()],
        ("recorded", "yes" if lin.recorded else
         "no: registered before the workflow recorded lineage (commit and digest from tags)"),
    ], "field")]
    d = lin.data
    tables.append(_kv("Data", [
        ("source", d.source or "-"),
        ("location", d.location or "-"),
        ("file sha256", d.file_sha256 or "-"),
        ("digest", d.digest or "-"),
        ("rows", "-" if d.rows is None else str(d.rows)),
        ("columns", str(len(d.schema)) if d.schema else "-"),
    ], "field"))
    if d.schema:
        tables.append(_kv("Schema (raw data)", d.schema.items(), "column", "type"))
    if lin.settings is not None:
        shown = {k: lin.settings[k] for k in _SHOWN_SETTINGS if k in lin.settings}
        tables.append(_kv(f"Settings (resolved, profile {lin.profile or '-'}; "
                          "every section with --output json)", _flatten(shown), "setting"))
    else:
        tables.append(_kv("Settings", [("settings hash", lin.settings_hash or "-"),
                                       ("resolved settings", not_recorded)], "setting"))
    packages = [("python", lin.python)] if lin.python else []
    packages += sorted(lin.packages.items())
    if lin.machine:
        packages.append(("machine", f"{lin.machine.get('machine', '-')}, "
                                    f"{lin.machine.get('cpus', '-')} CPUs"))
        packages += [(lib.get("internal_api") or "-", describe_library(lib))
                     for lib in lin.machine.get("libraries") or []]
    tables.append(_kv("Packages", packages or [("-", not_recorded)], "package", "version"))
    steps = table("Steps", "step", "run", "state", "seconds", "status",
                  ids=("step", "run", "status"), numbers=("seconds",))
    for step in lin.steps:
        seconds = step.seconds
        steps.add_row(step.step, short_id(step.run_id), _step_state(step),
                      "-" if seconds is None else f"{seconds:.1f}", (step.status or "-").lower())
    tables.append(steps)
    tables.append(history_table(lin.name, list(lin.history),
                                f"Alias moves of {lin.ref} (to it, and away from it)"))
    if lin.copies:
        copies = table("Copies to other registries", "target", "as", "when", "link",
                       ids=("as", "when"))
        for c in lin.copies:
            copies.add_row(str(c.get("target", "-")),
                           f"{c.get('name', '-')}/{c.get('version', '-')}",
                           _when(c.get("at")) or "-", str(c.get("link", "-")))
        tables.append(copies)
    else:
        tables.append(Text("Copies to other registries: none"))
    if lin.copied_from:
        tables.append(_kv("Copied from", sorted(lin.copied_from.items()), "field"))
    return tables


def lineage_json(lin: Lineage, diff_uri: str | None = None) -> dict:
    """``lineage --output json`` (``diff_uri``: where the recorded diff can be downloaded)."""
    d = lin.data
    return {
        "name": lin.name,
        "version": lin.version,
        "aliases": list(lin.aliases),
        "recorded": lin.recorded,
        "workflow_run": {"run_id": lin.run_id, "name": lin.run_name,
                         "experiment_id": lin.experiment_id, "status": lin.run_status,
                         "started": _when(lin.run_start), "ended": _when(lin.run_end)},
        "code": {"commit": lin.commit, "dirty": lin.dirty, "diff": diff_uri,
                 "diff_sha256": lin.diff_sha256, "diff_withheld": dict(lin.diff_withheld),
                 "user_files": dict(lin.user_files)},
        "data": {"source": d.source, "kind": d.kind, "location": d.location,
                 "file_sha256": d.file_sha256, "digest": d.digest, "rows": d.rows,
                 "schema": dict(d.schema)},
        "settings": lin.settings,
        "settings_hash": lin.settings_hash,
        "profile": lin.profile,
        "environment": {"python": lin.python, "packages": dict(lin.packages),
                        "machine": dict(lin.machine) or None},
        "steps": [{"step": s.step, "run_id": s.run_id, "reused": s.reused,
                   "computed_by": s.workflow_run, "status": s.status,
                   "seconds": number(s.seconds), "cache": dict(s.cache)} for s in lin.steps],
        "alias_history": [attempt_json(a) for a in lin.history],
        "copies": [dict(c, at=_when(c.get("at"))) for c in lin.copies],
        "copied_from": dict(sorted(lin.copied_from.items())),
    }


def reproduction_lines(result: Reproduction) -> list[str]:
    """``reproduce``: the verdict and the timing, after the progress lines."""
    took = f"took       {result.seconds:.1f} s"
    if result.original_seconds:
        took += (f" (the original steps up to train: {result.original_seconds:.1f} s; "
                 f"{result.seconds / result.original_seconds:.1f}x)")
    lines = [took]
    if result.identical:
        lines.append(f"identical: the re-run's model gives the same labels and probabilities "
                     f"as {result.ref} on its {result.rows} test rows")
    else:
        delta = ("" if result.max_proba_delta is None
                 else f" (largest probability difference {result.max_proba_delta:.3g})")
        lines.append(f"different: {result.n_differing} of {result.rows} test rows{delta}")
        lines.extend(f"  differs: {cause}" for cause in result.causes)
    return lines


def reproduction_table(result: Reproduction):
    """``reproduce``: the first rows whose predictions differ."""
    out = table(f"First differing rows of {result.ref}'s test split", "row", "registered",
                "reproduced", "max |probability difference|", ids=("row",),
                numbers=("max |probability difference|",))
    for row in result.differing:
        delta = row["proba_delta"]
        out.add_row(str(row["row"]), str(row["registered"]), str(row["reproduced"]),
                    "-" if delta is None else f"{delta:.3g}")
    return out


def reproduction_json(result: Reproduction) -> dict:
    """``reproduce --output json``."""
    name, _, version = result.ref.rpartition("/")
    return {
        "name": name,
        "version": version,
        "identical": result.identical,
        "rows": result.rows,
        "differing_rows": result.n_differing,
        "first_differing": [{**row, "proba_delta": number(row["proba_delta"])}
                            for row in result.differing],
        "max_proba_delta": number(result.max_proba_delta),
        "causes": list(result.causes),
        "package_changes": [{"package": n, "recorded": was, "installed": now}
                            for n, was, now in result.package_changes],
        "machine_changes": list(result.machine_changes),
        "run_id": result.run_id,
        "experiment_id": result.experiment_id,
        "seconds": number(round(result.seconds, 3)),
        "original_seconds": number(result.original_seconds),
    }
