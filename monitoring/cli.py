"""``python -m monitoring MODEL --captured PATH``: judge captured traffic, maybe retrain.

Flags only; the work is in :mod:`monitoring.monitor` and :mod:`monitoring.retrain`.
``python -m serving monitor ...`` runs this command with the same arguments.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

_REPO = Path(__file__).resolve().parents[1]


@click.command("monitor", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model")
@click.option("--captured", required=True, metavar="PATH",
              help="Folder, file or s3:// prefix of captured requests (serve --capture, or "
                   "SageMaker data capture).")
@click.option("--labels", metavar="FILE", default=None,
              help="CSV/Parquet of labelled live rows (features + target): live metric gate.")
@click.option("--profile", default=None, help="Settings profile (thresholds under monitor.*).")
@click.option("--retrain", is_flag=True,
              help="When a threshold is crossed, run the training workflow on the new data.")
@click.option("--retrain-data", metavar="PATH", default=None,
              help="Data to retrain on (default: --labels).")
@click.option("--project", default=str(_REPO), show_default="this checkout",
              help="MLflow Project to run for --retrain.")
def monitor_cmd(model, captured, labels, profile, retrain, retrain_data, project):
    """Compare captured traffic of MODEL (NAME@ALIAS or NAME/VERSION) with its training data.

    Prints per-feature drift (PSI, KS/chi-square), prediction drift and, with --labels, the live
    metric against the version's test metric; logs a monitoring run with an HTML report; exits
    1 when a threshold from the settings is crossed (or the model is unknown, or retraining
    failed), 2 on bad input (a malformed reference, a bad setting, captured data it cannot
    judge).
    """
    from rich.console import Console
    from rich.table import Table

    from core import metrics
    from core.connection import connect, tracking_uri
    from core.errors import EXIT_REFUSED, MlopsError, UsageError
    from core.settings import load_settings
    from core.uris import parse_model_ref
    from monitoring.errors import MonitorError
    from monitoring.monitor import run_monitor
    from monitoring.retrain import read_outcome
    from monitoring.retrain import retrain as start_retrain

    settings = load_settings(profile)
    metrics.register_declared(settings.metrics)  # the live metric may be one of the team's
    ref = parse_model_ref(model, allow_run=False)
    if retrain and not (retrain_data or labels):
        raise UsageError("--retrain needs new labelled data: give --labels or --retrain-data")
    s3 = None
    if captured.startswith("s3://"):
        import boto3

        s3 = boto3.client("s3")
    client = connect()
    try:
        result = run_monitor(client, ref, captured, settings, labels, s3)
    except MonitorError as exc:  # the input cannot be judged: bad input, not a verdict
        raise UsageError(str(exc)) from None

    out = Console()
    table = Table(title=f"{result.name} v{result.version}: {result.rows} captured rows")
    for col in ("gate", "value", "limit", "result", "detail"):
        table.add_column(col)
    for g in result.gates:
        table.add_row(g.name, f"{g.value:.4g}", f"{g.limit:.4g}",
                      "[green]pass[/]" if g.passed else "[red]FAIL[/]", g.detail)
    out.print(table)
    drifted = result.drift[result.drift["drifted"]]
    if len(drifted):
        dt = Table(title="drifted features")
        for col in ("feature", "psi", "test", "p_value"):
            dt.add_column(col)
        for r in drifted.itertuples():
            dt.add_row(str(r.feature), f"{r.psi:.3f}", r.test, f"{r.p_value:.2g}")
        out.print(dt)
    out.print(f"monitoring run {result.run_id} (report: monitoring/report.html)")
    if not result.crossed:
        out.print("no threshold crossed")
        return
    out.print("[red]threshold crossed[/]")
    if retrain:
        data = str(Path(retrain_data or labels).resolve())
        env = dict(os.environ)
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env.setdefault("MLFLOW_TRACKING_URI", tracking_uri())  # the store the monitor read
        proc = start_retrain(project, data, settings.profile, settings.experiment, result.name,
                             result.target, env=env, monitor_run_id=result.run_id)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["?"])[-1]
            raise MlopsError(f"retraining failed: {last}")
        if proc.run_id is None:  # MLflow did not create the run: nothing can have been trained
            raise MlopsError("retraining failed: no workflow run was started")
        out.print("retrained: " + _retrained(read_outcome(client, proc.run_id, result.name)),
                  soft_wrap=True, markup=False, highlight=False)
    # A crossed threshold is a verdict, printed above, not an error line: exit 1 (refused).
    raise click.exceptions.Exit(EXIT_REFUSED)


def _retrained(outcome) -> str:
    """One line: the workflow run, the version it registered, its aliases, the crown."""
    parts = [f"workflow run {outcome.run_id}"]
    if outcome.version is None:
        return parts[0] + "; no version registered"
    parts.append(f"model version {outcome.model_name} v{outcome.version} "
                 f"(aliases: {', '.join(outcome.aliases) or 'none'})")
    if outcome.crown_reason:
        parts.append(f"champion {'crowned' if outcome.crowned else 'not crowned'}: "
                     f"{outcome.crown_reason}")
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``python -m monitoring``."""
    from core.cli import run_group

    return run_group(monitor_cmd, argv, "python -m monitoring")
