"""What every command line of the project shares: run a click group, errors as one line."""

from __future__ import annotations

import click

from core.errors import EXIT_INTERRUPTED, EXIT_REFUSED, classify


def run_group(group: click.Group, argv: list[str] | None, prog_name: str) -> int:
    """Run ``group`` and return its exit code instead of exiting.

    Every known error becomes one ``error: ...`` line on stderr and the exit code of
    :func:`core.errors.classify` (0 done, 1 refused, 2 bad usage, 3 lost a race, 130
    interrupted); anything else is a bug and keeps its traceback. A tracking server that
    could not be reached is named in that line, with the runs this process left RUNNING.

    MLflow's client settings for the process are set first
    (:func:`core.connection.prepare_process`).
    """
    from core.connection import prepare_process

    prepare_process()
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
        if isinstance(exc, Exception) and (line := _unreachable(exc)):
            click.echo(f"error: {line}", err=True)
            return EXIT_REFUSED
        found = classify(exc)
        if found is None:
            raise
        code, message = found
        click.echo(message if code == EXIT_INTERRUPTED else f"error: {message}", err=True)
        return code
    return returned if isinstance(returned, int) else 0


def _unreachable(exc: Exception) -> str | None:
    """The one line for a tracking server that could not be reached, else None."""
    from core.connection import unreachable, unreachable_line
    from core.runs import unclosed_runs

    if not unreachable(exc):
        return None
    line = unreachable_line(exc)
    if left := unclosed_runs():
        runs = ", ".join(f"{run_id} ({name})" if name else run_id for run_id, name in left)
        line += (f"; runs left RUNNING: {runs}; `python -m tracking runs reap` closes them "
                 "once the server answers")
    return line
