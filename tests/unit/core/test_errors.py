"""One error-to-exit-code mapping: the four command lines answer the same bad input alike.

Each command line's ``main(argv)`` runs in-process against the test's fresh SQLite store. The
same bad inputs go to every command line that takes them: an unknown flag (2), a malformed
model reference (2), an unknown model (1), a bad setting ``train.metrc=x`` (2). Each answer is
exactly one ``error:`` line on stderr, no traceback.
"""

from __future__ import annotations

import click
import pytest

from core.errors import EXIT_INTERRUPTED, Interrupted, LostRace, MlopsError, classify
from core.models import ModelNotFound
from core.settings import SettingsError
from core.uris import ModelRefError


def _main(cli: str):
    if cli == "registry":
        from registry.cli import main
    elif cli == "serving":
        from serving.cli import main
    elif cli == "projects":
        from projects.cli import main
    else:
        from tracking.cli import main
    return main


BAD_SETTING = "train.metrc=x"

CASES = [
    # an unknown flag: bad usage
    ("registry", ["list", "--bogus"], 2, "No such option '--bogus'"),
    ("serving", ["serve", "m@champion", "--bogus"], 2, "No such option '--bogus'"),
    ("projects", ["main", "--bogus"], 2, "No such option '--bogus'"),
    ("tracking", ["server", "--bogus"], 2, "No such option '--bogus'"),
    # a malformed model reference: bad usage
    ("registry", ["show", "not a ref"], 2, "'not a ref' is not a model reference"),
    ("serving", ["serve", "not a ref"], 2, "'not a ref' is not a model reference"),
    ("serving", ["monitor", "not a ref", "--captured", "."], 2,
     "'not a ref' is not a model reference"),
    # an unknown model: refused
    ("registry", ["show", "nosuch/1"], 1, "unknown model 'nosuch'"),
    ("serving", ["serve", "nosuch@champion"], 1, "unknown model 'nosuch'"),
    ("serving", ["monitor", "nosuch@champion", "--captured", "."], 1, "unknown model 'nosuch'"),
    # a bad setting: bad usage
    ("projects", ["main", "--set", BAD_SETTING], 2, "setting train.metrc: unknown key"),
    ("tracking", ["server", "-o", BAD_SETTING], 2, "setting train.metrc: unknown key"),
]




@pytest.mark.parametrize(("cli", "argv", "code", "message"), CASES,
                         ids=[f"{c[0]}:{' '.join(c[1])}" for c in CASES])
def test_every_command_line_maps_bad_input_alike(cli, argv, code, message, capsys,
                                                 restore_logging):
    assert _main(cli)(argv) == code
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err == [f"error: {message}"] or (
        len(err) == 1 and err[0].startswith(f"error: {message}")), err


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (click.UsageError("No such option"), (2, "No such option")),
        (ModelRefError("'x' is not a model reference"), (2, "'x' is not a model reference")),
        (SettingsError("setting a.b: unknown key"), (2, "setting a.b: unknown key")),
        (ModelNotFound("unknown model 'x'"), (1, "unknown model 'x'")),
        (MlopsError("refused\nsecond line"), (1, "refused")),
        (LostRace("lost the race"), (3, "lost the race")),
        (KeyboardInterrupt(), (130, "interrupted")),
        (Interrupted("the runs were ended KILLED"),
         (130, "interrupted: the runs were ended KILLED")),
        (ValueError("a bug"), None),
    ],
)
def test_classify_is_the_one_mapping(exc, expected):
    assert classify(exc) == expected


def test_a_verdict_exit_code_without_an_error_line_is_kept(capsys):
    from core.cli import run_group

    @click.group()
    def group():
        """A group."""

    @group.command()
    def judge():
        click.echo("threshold crossed")
        raise click.exceptions.Exit(1)  # as `serving monitor` does: a verdict, not an error

    assert run_group(group, ["judge"], "prog") == 1
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("threshold crossed\n", "")


def test_an_interrupt_with_cleanup_is_reported_without_error_prefix(capsys):
    from core.cli import run_group

    @click.group()
    def group():
        """A group."""

    @group.command()
    def work():
        raise Interrupted("the workflow's runs were ended KILLED")

    assert run_group(group, ["work"], "prog") == EXIT_INTERRUPTED
    assert capsys.readouterr().err == "interrupted: the workflow's runs were ended KILLED\n"
