"""What every command line of the project shares: run a click group, errors as one line."""

from __future__ import annotations

import click


def run_group(group: click.Group, argv: list[str] | None, prog_name: str) -> int:
    """Run ``group`` and return its exit code instead of exiting.

    Usage errors become one ``error: ...`` line and exit code 2; Ctrl-C is 130.
    """
    try:
        group.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except SystemExit as exc:
        return int(exc.code or 0)
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        return 2
    except click.exceptions.Abort:
        return 130
    return 0
