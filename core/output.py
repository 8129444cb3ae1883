"""Command-line output every package shares: ``--output table|json`` and greppable tables.

Tables are for people: on a terminal they fit its width (long cells end with an ellipsis, text
wraps at word boundaries, names and ids never wrap); when stdout is not a terminal (a pipe, a
file) they print without box drawing and at their full width, one row per line, so ``grep``
and ``awk`` see whole names. Run ids are shortened to their first :data:`SHORT_ID` characters
in tables.

JSON is for scripts: one document on stdout and nothing else (errors stay on stderr with the
exit codes of :mod:`core.errors`); keys are snake_case, versions strings (as MLflow gives
them), times ISO-8601 UTC (``2026-11-26T14:38:59Z``), metrics numbers (``null`` when not a
finite number), run ids whole.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable

import click

OUTPUT_FORMATS = ("table", "json")
#: Characters of a run id shown in tables (JSON has the whole id).
SHORT_ID = 8
#: Width of tables written to a pipe or file: wide enough that no row ever wraps.
PIPE_WIDTH = 100_000
#: Narrowest a name or text column gets on a narrow terminal (it keeps its width if narrower).
MIN_SHRUNK = 12
#: Narrowest a number column gets (``0.9912``).
MIN_NUMBER = 6

output_option = click.option(
    "--output", "output", type=click.Choice(OUTPUT_FORMATS), default="table", show_default=True,
    help="table for people; json for scripts (one JSON document on stdout, keys documented "
         "in the command's module).",
)


def short_id(run_id: str | None) -> str:
    """A run id as tables show it: its first :data:`SHORT_ID` characters (``-`` for none)."""
    return run_id[:SHORT_ID] if run_id else "-"


def to_terminal() -> bool:
    """True when stdout is an interactive terminal."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # replaced or closed stdout
        return False


def terminal_width() -> int | None:
    """The terminal's width in columns, or None when stdout is not a terminal."""
    return console().width if to_terminal() else None


def words(items: Iterable[str]) -> str:
    """Items for one table cell; ``-`` for none.

    ``a, b`` on a terminal (the cell may wrap between them), ``a,b`` in a pipe (one ``awk`` field).
    """
    items = list(items)
    if not items:
        return "-"
    return (", " if to_terminal() else ",").join(items)


def console():
    """A rich Console for stdout: the terminal's width, or full width without colour to a pipe."""
    from rich.console import Console

    if to_terminal():
        return Console(soft_wrap=False)
    # A pipe has no width: a finite but huge one keeps every row on one line (rich would
    # otherwise assume 80 columns and fold cells), and no escape codes reach grep.
    return Console(width=PIPE_WIDTH, force_terminal=False, no_color=True, highlight=False,
                   soft_wrap=False)


def table(title: str | None, *columns: str, ids: Iterable[str] = (), numbers: Iterable[str] = ()):
    """A rich Table whose cells never break inside a word.

    On a terminal too narrow for the table, the other columns (names, free text) give up width
    first, down to :data:`MIN_SHRUNK` characters: text wraps at spaces, and a word longer than
    its column (a model name) ends with an ellipsis instead of folding letter by letter.

    Args:
        title: the line above the table.
        columns: the headers.
        ids: headers of columns of short tokens (versions, times, short run ids, verdicts) that
            keep their width and never wrap.
        numbers: headers of right-aligned number columns (they shrink last, to a number's width).
    """
    from rich import box
    from rich.table import Table

    ids, numbers = set(ids), set(numbers)
    boxed = to_terminal()
    result = Table(title=title, title_justify="left", show_lines=False,
                   box=box.HEAVY_HEAD if boxed else None, show_edge=boxed,
                   pad_edge=boxed, title_style="bold" if boxed else None)
    for col in columns:
        if col in ids:
            result.add_column(col, no_wrap=True, overflow="ellipsis")
        elif col in numbers:
            result.add_column(col, overflow="ellipsis", justify="right", min_width=MIN_NUMBER)
        else:
            result.add_column(col, overflow="ellipsis", min_width=MIN_SHRUNK)
    return result


def print_tables(*renderables) -> None:
    """Print tables (or any rich renderables) to stdout, one console for all."""
    out = console()
    for renderable in renderables:
        out.print(renderable)


def number(value) -> float | int | None:
    """A metric as JSON can hold it: NaN and infinities become ``None``."""
    if value is None:
        return None
    value = float(value) if not isinstance(value, int | float) else value
    return value if math.isfinite(value) else None


def print_json(document) -> None:
    """Write ``document`` as one JSON document on stdout."""
    click.echo(json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False))
