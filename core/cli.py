"""What every command line of the project shares: run a click group, errors as one line."""

from __future__ import annotations

import click

from core.errors import EXIT_INTERRUPTED, EXIT_REFUSED, classify


def run_group(group: click.Group, argv: list[str] | None, prog_name: str) -> int:
    """Run ``group`` and return its exit code instead of exiting.

    Every known error becomes one ``error: ...`` line on stderr and the exit code of
    :func:`core.errors.classify` (0 done, 1 refused, 2 bad usage, 3 lost a race, 130
    interrupted); anything else is a bug and keeps its traceback.
    """
    try:
        # without standalone mode click returns ctx.exit()'s code (and a command's return value)
        returned = group.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except SystemExit as exc:
        code = exc.code
        if isinstance(code, str):
            click.echo(code, err=True)
            return EXIT_REFUSED
        return int(code or 0)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except BaseException as exc:
        found = classify(exc)
        if found is None:
            raise
        code, message = found
        click.echo(message if code == EXIT_INTERRUPTED else f"error: {message}", err=True)
        return code
    return returned if isinstance(returned, int) else 0
