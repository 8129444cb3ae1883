"""``python -m registry``: parse flags, connect, delegate, print.

Exit codes (the one mapping of :mod:`core.errors`, shared by every command line): 0 done (or
nothing to do), 1 refused or failed (unknown model, failed gate, server refusal), 2 bad usage
(unknown flag, malformed model reference, invalid setting), 3 lost a race for the alias to a
concurrent move, 130 interrupted. Every error is one ``error:`` line on stderr.

``list``, ``show``, ``history``, ``diff``, ``validate``, ``lineage`` and ``reproduce`` take
``--output json``:
one JSON document on stdout, its keys documented in :mod:`registry.render`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings

import click

from core.aliases import current_user
from core.names import REQUEST_STATES
from core.output import output_option, print_json, print_tables, terminal_width
from registry.errors import GateFailure, RegistryError
from registry.promotion import DEFAULT_ALIAS

__all__ = ["cli", "current_user", "main"]

_logger = logging.getLogger(__name__)


def _client(uri: str | None = None):
    from core.connection import connect

    return connect(uri)


def _print(*renderables) -> None:
    print_tables(*renderables)


policy_option = click.option(
    "--policy", "policy_path", type=click.Path(dir_okay=False),
    help="Policy file (default: conf/policies/<NAME>.yaml, or $MLOPS_POLICY_DIR/<NAME>.yaml).",
)
reason_option = click.option("--reason", required=True, help="Why (recorded in the history).")


def move_options(to_help: str, force_help: str):
    """``--to ALIAS``, ``--reason`` and ``--force``: what promote and request both take."""

    def decorate(command):
        command = click.option("--force", is_flag=True, help=force_help)(command)
        command = reason_option(command)
        return click.option("--to", "alias", default=DEFAULT_ALIAS, show_default=True,
                            help=to_help)(command)

    return decorate


@contextlib.contextmanager
def gates_shown():
    """Print the gates' table when a move stops at its gates, then let the refusal through."""
    from registry.render import gates_table

    try:
        yield
    except GateFailure as exc:
        if exc.validation is not None:
            _print(gates_table(exc.validation))
        raise


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log what happens to stderr.")
def cli(verbose: bool) -> None:
    """The registry for release managers: which version serves, and why.

    Reads the registry at $MLFLOW_TRACKING_URI (default: sqlite:///mlflow.db). Versions are
    referred to as NAME/VERSION or NAME@ALIAS.
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not verbose:
        # MLflow sets its own loggers' level when it is first imported, which happens after
        # this (lazily): its level variable is the one setting that survives the import
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
        logging.getLogger("mlflow").setLevel(logging.ERROR)
        warnings.filterwarnings("ignore")


@cli.command("list")
@click.argument("name", required=False)
@output_option
def list_command(name: str | None, output: str) -> None:
    """Registered models (or just NAME): versions, aliases, key metrics."""
    from registry.render import models_json, models_table
    from registry.versions import list_models

    rows = list_models(_client(), name=name)
    if output == "json":
        print_json(models_json(rows))
        return
    _print(models_table(rows, width=terminal_width()))


@cli.command()
@click.argument("ref")
@output_option
def show(ref: str, output: str) -> None:
    """One version: source run, metrics, params, signature, requirements, lineage, history."""
    from registry.promotion import read_history
    from registry.render import version_json, version_tables
    from registry.versions import describe_version, resolve_version

    client = _client()
    info = describe_version(client, resolve_version(client, ref))
    history = [a for a in read_history(client, info.name) if a.version == info.version]
    if output == "json":
        print_json(version_json(info, history))
        return
    _print(*version_tables(info, history))


@cli.command()
@click.argument("a")
@click.argument("b")
@output_option
def diff(a: str, b: str, output: str) -> None:
    """Two versions side by side (B compared to A): params, metrics, signature, requirements."""
    from registry.diff import diff_versions
    from registry.render import diff_json, diff_tables
    from registry.versions import describe_version, resolve_version

    client = _client()
    va = describe_version(client, resolve_version(client, a))
    vb = describe_version(client, resolve_version(client, b))
    result = diff_versions(va, vb)
    if output == "json":
        print_json(diff_json(result, va, vb))
        return
    _print(*diff_tables(result))


@cli.command()
@click.argument("ref")
@policy_option
@output_option
def validate(ref: str, policy_path: str | None, output: str) -> None:
    """Run the promotion policy for REF and print each gate with its numbers.

    Exits 1 when a gate fails, with ``--output json`` too.
    """
    from registry.policy import load_policy
    from registry.render import gates_table, validation_json
    from registry.validation import validate_version
    from registry.versions import resolve_version

    client = _client()
    mv = resolve_version(client, ref)
    result = validate_version(client, mv, load_policy(mv.name, policy_path))
    if output == "json":
        print_json(validation_json(result))
    else:
        _print(gates_table(result))
    if not result.passed:
        failed = ", ".join(g.gate for g in result.failed)
        raise RegistryError(f"{mv.name}/{mv.version} failed {len(result.failed)} of "
                            f"{len(result.gates)} gates: {failed}")
    if output == "table":
        click.echo(f"{mv.name}/{mv.version} passed all {len(result.gates)} gates")


@cli.command()
@click.argument("ref")
@move_options("Alias to move to REF.", "Move even if gates fail (recorded as forced).")
@click.option("--expect-previous", metavar="VERSION|none",
              help="Move only if the alias is held by this version now (compare-and-set).")
@policy_option
def promote(ref: str, alias: str, reason: str, force: bool, expect_previous: str | None,
            policy_path: str | None) -> None:
    """Move ALIAS to REF if it passes its policy; record who, when, why and the gates.

    The move is a compare-and-set against the holder seen when the command starts: if a
    concurrent promotion moves the alias first, this one changes nothing and exits 3.
    """
    from registry.promotion import promote_version
    from registry.render import gates_table

    client = _client()
    with gates_shown():
        outcome, validation = promote_version(
            client, ref, alias, reason, current_user(), policy_path=policy_path, force=force,
            expect_previous=expect_previous,
        )
    if validation is not None:
        _print(gates_table(validation))
    ref_text = f"{outcome.name}/{outcome.version}"
    if outcome.status == "unchanged":
        click.echo(f"{ref_text} is already {alias}; nothing changed")
        return
    if outcome.status == "requested":  # the server's policy: this alias needs approvals
        _echo_request(outcome.request)
        return
    forced = " (forced)" if force else ""
    click.echo(f"promoted {ref_text} to {alias}{forced}; previous: {outcome.previous or 'none'}")


def _echo_request(request: dict) -> None:
    """The request's id on the first line alone (scripts read it), then what it waits for."""
    click.echo(request["id"])
    need = request["required"] - len(request.get("approvals") or [])
    what = "a rollback of " if request.get("kind") == "rollback" else ""
    click.echo(f"requested {what}{request['name']}/{request['version']} to {request['alias']}: "
               f"{request['status']}, {need} approval(s) to go, by a release manager other than "
               f"{request['by']} and the version's author (python -m registry approve "
               f"{request['id']})", err=True)


@cli.command()
@click.argument("ref")
@move_options("Alias the request moves to REF.",
              "Request even if gates fail (recorded as forced).")
@policy_option
def request(ref: str, alias: str, reason: str, force: bool, policy_path: str | None) -> None:
    """Ask for ALIAS to move to REF: run its gates, file a request, print the request id.

    Needs the team's tracking server, which moves the alias when the approvals its policy asks
    for (``aliases.<alias>.approvals``) are in.
    """
    from core.approvals import call
    from registry.promotion import check_gates
    from registry.render import gates_table

    client = _server_client()
    with gates_shown():
        mv, validation, gates = check_gates(client, ref, policy_path, force, alias)
    if validation is not None:
        _print(gates_table(validation))
    answer = call(client, "create", {"name": mv.name, "version": str(mv.version), "alias": alias,
                                     "reason": reason, "gates": gates, "forced": force})
    _echo_request(answer["request"])


def _server_client(refusal: str | None = None):
    """The client of the team server; on any other store, one line (and no store opened)."""
    from core.approvals import NEEDS_SERVER
    from core.connection import is_server, registry_uri

    if not is_server(registry_uri()):
        raise RegistryError(refusal or NEEDS_SERVER)
    return _client()


@cli.command()
@click.argument("request_id")
@click.option("--reason", default="", help="Why (recorded with the approval).")
def approve(request_id: str, reason: str) -> None:
    """Approve request REQUEST_ID; the last approval moves the alias (done by the server)."""
    from core.approvals import call

    client = _server_client()
    answer = call(client, "approve", {"id": request_id, "reason": reason})
    req = answer["request"]
    if answer["status"] == "executed":
        click.echo(f"approved {request_id}: {req['name']}/{req['version']} is {req['alias']} "
                   f"now; previous: {answer.get('previous') or 'none'}")
        return
    need = req["required"] - len(req["approvals"])
    click.echo(f"approved {request_id}: {need} approval(s) to go")


@cli.command()
@click.argument("request_id")
@reason_option
def reject(request_id: str, reason: str) -> None:
    """Reject request REQUEST_ID (or withdraw your own); the alias stays where it is."""
    from core.approvals import call

    client = _server_client()
    req = call(client, "reject", {"id": request_id, "reason": reason})["request"]
    click.echo(f"rejected {request_id}: {req['name']}/{req['version']} does not move to "
               f"{req['alias']}")


@cli.command("requests")
@click.argument("name", required=False)
@click.option("--state", type=click.Choice(REQUEST_STATES), metavar="STATE",
              help="Only requests in this state: open, approved, executed, rejected, expired, "
                   "void, needs-review (emergency rollbacks to review) or reviewed.")
@output_option
def requests_command(name: str | None, state: str | None, output: str) -> None:
    """Promotion requests (of NAME), and emergency rollbacks to review.

    States: open, approved, executed, rejected, expired, void; an emergency rollback is
    needs-review until a second release manager reviews it (reviewed).
    """
    from core.approvals import call
    from registry.render import requests_table

    client = _server_client()
    found = call(client, "list", params={"name": name} if name else None)["requests"]
    if state:
        found = [r for r in found if r["status"] == state]
    if output == "json":
        print_json({"requests": found})
        return
    _print(requests_table(found))


@cli.command()
@click.argument("name")
@click.option("--to", "to", help="Version to return to (default: the previous champion).")
@click.option("--alias", default=DEFAULT_ALIAS, show_default=True, help="Alias to move back.")
@reason_option
@click.option("--emergency", is_flag=True,
              help="Roll back now without approvals (a release manager; recorded as an "
                   "emergency that a second release manager reviews: python -m registry review).")
def rollback(name: str, to: str | None, alias: str, reason: str, emergency: bool) -> None:
    """Move the champion back to the previous champion (from the history), in one command.

    Where the alias needs approvals (the team server's policy) the rollback files a request,
    unless it is an --emergency.
    """
    from core.approvals import EMERGENCY_NEEDS_SERVER
    from registry.promotion import rollback as do_rollback

    client = _server_client(EMERGENCY_NEEDS_SERVER) if emergency else _client()
    outcome = do_rollback(client, name, reason, current_user(), to=to, alias=alias,
                          emergency=emergency)  # fmt: skip
    if outcome.status == "unchanged":
        click.echo(f"{name}/{outcome.version} is already {alias}; nothing changed")
        return
    if outcome.status == "requested":  # the server's policy: this alias needs approvals
        _echo_request(outcome.request)
        return
    click.echo(f"rolled back {alias} of {name} to version {outcome.version}"
               f"{' (emergency)' if emergency else ''}; previous: {outcome.previous or 'none'}")
    if outcome.request:  # the emergency's record, open for review
        click.echo(f"needs review by a second release manager: python -m registry review "
                   f"{outcome.request['id']}")


@cli.command()
@click.argument("request_id")
@click.option("--reason", default="", help="Why (recorded with the review).")
def review(request_id: str, reason: str) -> None:
    """Review emergency rollback REQUEST_ID (a release manager other than the one who made it)."""
    from core.approvals import call

    client = _server_client()
    req = call(client, "review", {"id": request_id, "reason": reason})["request"]
    click.echo(f"reviewed {request_id}: emergency rollback of {req['alias']} of {req['name']} "
               f"to version {req['version']} by {req['by']}, reviewed by {req['review']['by']}")


@cli.command()
@click.argument("name")
@click.option("--alias", help="Only moves of this alias.")
@output_option
def history(name: str, alias: str | None, output: str) -> None:
    """Every alias move of NAME (and every lost attempt), oldest first."""
    from registry.promotion import read_history
    from registry.render import history_json, history_table

    attempts = read_history(_client(), name, alias)
    if output == "json":
        print_json(history_json(name, alias, attempts))
        return
    _print(history_table(name, attempts))


@cli.command()
@click.argument("ref")
@click.option("--to-registry", "to_registry", required=True,
              help="Tracking/registry URI of the target server (e.g. the prod server).")
def copy(ref: str, to_registry: str) -> None:
    """Copy REF (NAME/VERSION) with its artifacts, tags and lineage to another registry."""
    import mlflow

    from registry.copying import copy_version
    from registry.versions import resolve_version

    source = _client()
    mv = resolve_version(source, ref)
    target = mlflow.MlflowClient(tracking_uri=to_registry, registry_uri=to_registry)
    result = copy_version(source, target, mv.name, str(mv.version))
    if result.status == "exists":
        click.echo(f"{ref} is already in {to_registry} as {result.name}/{result.version}; "
                   "nothing changed")
        return
    click.echo(f"copied {mv.name}/{mv.version} to {to_registry} as {result.name}/"
               f"{result.version} (source: {result.source_link})")


@cli.command()
@click.argument("ref")
@output_option
def lineage(ref: str, output: str) -> None:
    """Where REF came from: commit, data, settings, packages, step runs, alias moves, copies."""
    from registry.lineage import read_lineage
    from registry.render import lineage_json, lineage_tables
    from registry.versions import resolve_version

    client = _client()
    info = read_lineage(client, resolve_version(client, ref))
    if output == "json":
        diff_uri = f"runs:/{info.run_id}/{info.diff}" if info.diff else None
        print_json(lineage_json(info, diff_uri))
        return
    _print(*lineage_tables(info))


@cli.command()
@click.argument("ref")
@click.option("--into", "into", metavar="EXPERIMENT",
              help="Scratch experiment of the re-run (default: mlops-registry-reproductions).")
@click.option("--repo", "repo", type=click.Path(file_okay=False, exists=True),
              help="Git checkout holding the recorded commit (default: the current directory's, "
                   "else the one this code runs from).")
@output_option
def reproduce(ref: str, into: str | None, repo: str | None, output: str) -> None:
    """Re-run the workflow behind REF and check the new model predicts identically.

    Checks out the recorded commit (plus the recorded diff) in a temporary worktree, verifies
    the data's digest, compares package versions, re-runs the steps up to train with the
    recorded settings and the cache off, and compares labels and probabilities on REF's own
    test split. Exits 0 when identical, 1 when something differs or it cannot start.
    """
    from pathlib import Path

    from core.output import print_tables
    from registry.render import reproduction_json, reproduction_lines, reproduction_table
    from registry.reproduce import reproduce_version
    from registry.versions import resolve_version

    client = _client()
    mv = resolve_version(client, ref)
    as_json = output == "json"
    # with --output json the progress goes to stderr: stdout holds the one document
    result = reproduce_version(client, mv, into=into, repo=Path(repo) if repo else None,
                               echo=lambda line: click.echo(line, err=as_json))
    if as_json:
        print_json(reproduction_json(result))
    else:
        for line in reproduction_lines(result):
            click.echo(line)
    if result.identical:
        return
    if not as_json:
        print_tables(reproduction_table(result))
    first = result.causes[0] if result.causes else (
        "nothing recorded differs (data, code, packages, settings): the training is not "
        "deterministic under these settings")
    raise RegistryError(f"{result.ref} is not reproduced: {result.n_differing} of "
                        f"{result.rows} test rows differ; first difference: {first}")


@cli.group()
def audit() -> None:
    """The hash-chained history of alias moves: verify it, export it for an auditor."""


@audit.command("verify")
@click.argument("name", required=False)
def audit_verify(name: str | None) -> None:
    """Recompute NAME's history chain (default: every model's); exit 1 naming the first break.

    Every final record of an alias move carries the hash of the record before it, and the
    ledger holds each record's hash: a record edited, deleted or added in the database breaks
    the chain there.
    """
    from core.audit import first_break, model_names, read_chain

    client = _client()
    broken = []
    for model in [name] if name else model_names(client):
        entries = read_chain(client, model)
        bad = first_break(entries)
        if bad is None:
            click.echo(f"{model}: the chain is whole ({len(entries)} records)")
        else:
            broken.append(f"{model}: {bad.problem}")
            click.echo(f"{model}: broken: {bad.problem}")
    if broken:
        raise RegistryError(f"the history chain is broken: {broken[0]}")


@audit.command("export")
@click.argument("name", required=False)
@click.option("--output", type=click.Choice(["jsonl"]), default="jsonl", show_default=True,
              help="Format: one JSON document per record, in chain order.")
def audit_export(name: str | None, output: str) -> None:
    """Write NAME's history (default: every model's) for an auditor, one record per line.

    Each line: ``model``, ``seq`` (place in the chain; 0: beside it), ``id``, ``hash``
    (SHA-256 of the record as stored), ``valid``, ``problem`` and the ``record`` itself.
    """
    import json

    from core.audit import model_names, read_chain

    client = _client()
    for model in [name] if name else model_names(client):
        for entry in read_chain(client, model):
            click.echo(json.dumps({"model": model, **entry.to_dict()}, sort_keys=True))


@cli.command()
@click.argument("ref")
@click.option("--output", type=click.Choice(["markdown", "json"]), default="markdown",
              show_default=True, help="The card as markdown, or as its JSON document.")
def card(ref: str, output: str) -> None:
    """REF's model card: intended use, data, metrics, gates, lineage, approvals, limitations.

    The status (Draft, PendingReview, Approved, Archived) is the one the server holds.
    """
    import tempfile

    from core.cards import CardError, read_card, render_markdown
    from registry.versions import download, resolve_version

    client = _client()
    mv = resolve_version(client, ref)
    with tempfile.TemporaryDirectory(prefix="registry-card-") as tmp:
        try:
            doc = read_card(client, mv.name, str(mv.version),
                            lambda uri: download(client, uri, tmp))
        except CardError as exc:
            raise RegistryError(str(exc)) from None
    if output == "json":
        print_json(doc)
        return
    click.echo(render_markdown(doc), nl=False)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit code (see the module docstring)."""
    from core.cli import run_group

    return run_group(cli, argv, "python -m registry")
