"""The ``monitor`` command of ``python -m serving`` (flags only; the work is in monitoring)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

_REPO = Path(__file__).resolve().parents[1]


@click.command("monitor")
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
@click.option("--project", default=str(_REPO), show_default=True,
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

    from core.connection import connect
    from core.errors import EXIT_REFUSED, MlopsError, UsageError
    from core.settings import load_settings
    from core.uris import parse_model_ref
    from serving import monitor as mon
    from serving.monitoring import retrain as start_retrain
    from serving.monitoring import run_monitor

    settings = load_settings(profile)
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
    except mon.MonitorError as exc:  # the input cannot be judged: bad input, not a verdict
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
        proc = start_retrain(project, data, settings.profile, settings.experiment, result.name,
                             result.target, env=env, monitor_run_id=result.run_id)
        summary = [x for x in proc.stdout.splitlines()
                   if x.startswith(("model version", "champion", "workflow"))]
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["?"])[-1]
            raise MlopsError(f"retraining failed: {last}")
        out.print("retrained: " + "; ".join(" ".join(s.split()) for s in summary))
    # A crossed threshold is a verdict, printed above, not an error line: exit 1 (refused).
    raise click.exceptions.Exit(EXIT_REFUSED)
