"""``python -m serving``: serve a registered model locally, score files, push to SageMaker.

The commands only parse flags and delegate to :mod:`serving.online.server`,
:mod:`serving.batch.local` and :mod:`serving.batch.spark` (and :mod:`serving.sagemaker.cli` for
``sagemaker ...``; ``monitor`` runs ``python -m monitoring``). Errors are one ``error:`` line and
the exit codes of :mod:`core.errors` (1 refused, e.g. an unknown model; 2 bad usage).
"""

from __future__ import annotations

import logging
import os

import click

from core.errors import MlopsError
from serving.batch import local as batch_mod
from serving.online import server as srv
from serving.online import webhooks
from serving.online.app import (
    DEFAULT_BODY_TIMEOUT_SECONDS,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_TIMEOUT_SECONDS,
)
from serving.online.follow import DEFAULT_POLL_SECONDS

_logger = logging.getLogger(__name__)


class CliError(MlopsError):
    """A failure reported as one ``error: ...`` line (exit 1)."""


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


MODEL_HELP = "NAME@ALIAS, NAME/VERSION, models:/NAME@ALIAS, models:/NAME/VERSION or runs:/ID/PATH."


@click.group()
def cli():
    """Serve registered models over the MLflow scoring protocol, score files, deploy."""


@cli.command("serve")
@click.argument("model", metavar="MODEL")
@click.option(
    "--host",
    default=srv.DEFAULT_HOST,
    show_default=True,
    help="Interface to bind (0.0.0.0 for every interface).",
)
@click.option(
    "--port",
    default=srv.DEFAULT_PORT,
    show_default=True,
    type=click.IntRange(1, 65535),
    help="TCP port.",
)
@click.option(
    "--workers",
    default=None,
    type=click.IntRange(1, 256),
    help="Worker processes (default: one per core).",
)
@click.option(
    "--timeout",
    default=DEFAULT_TIMEOUT_SECONDS,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds a scoring request may take (then 504).",
)
@click.option(
    "--max-body-bytes",
    default=DEFAULT_MAX_BODY_BYTES,
    show_default=True,
    type=click.IntRange(min=1),
    help="Larger request bodies get 413.",
)
@click.option(
    "--body-timeout",
    default=DEFAULT_BODY_TIMEOUT_SECONDS,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds a request body may take to arrive (then 408 and the connection closes).",
)
@click.option(
    "--header-timeout",
    default=srv.DEFAULT_HEADER_TIMEOUT_SECONDS,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds a request's headers may take to arrive, from the connection's opening or the "
    "request's first byte (then 408 and the connection closes).",
)
@click.option(
    "--pin",
    is_flag=True,
    help="Keep serving the version the alias names at start; do not follow it.",
)
@click.option(
    "--poll-seconds",
    default=DEFAULT_POLL_SECONDS,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="How often to check where the alias points.",
)
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    help="Level of the JSON-lines logs on stderr.",
)
@click.option("--no-access-log", is_flag=True, help="Do not log one JSON line per request.")
@click.option(
    "--capture",
    default=None,
    metavar="PATH",
    help="Capture requests and predictions (JSON lines) to a folder or s3:// prefix, for "
    "`python -m serving monitor`. Off by default.",
)
@click.option(
    "--capture-sample-rate",
    default=None,
    type=click.FloatRange(0, 1),
    help="Share of requests captured (default: settings capture.sample_rate, 1.0).",
)
@click.option(
    "--capture-max-mb",
    default=None,
    type=click.FloatRange(min=0.001),
    help="Stop capturing after this many MB per worker (default: capture.max_total_mb).",
)
@click.option("--profile", default=None, help="Settings profile for the capture defaults.")
@click.option("--shadow", default=None, metavar="NAME@ALIAS|NAME/VERSION",
              help="Also score a sample of requests with this version (the challenger), off "
                   "the request path; agreement and latency go to an MLflow run.")
@click.option("--shadow-sample", default=0.1, show_default=True, type=click.FloatRange(0, 1),
              help="Share of requests the challenger scores too.")
@click.option("--shadow-tolerance", default=0.01, show_default=True,
              type=click.FloatRange(min=0), help="Regression: relative difference that still "
                                                 "counts as agreeing.")
@click.option("--no-metrics", is_flag=True,
              help="No GET /metrics: count nothing (the Prometheus metrics are on by default).")
@click.option(webhooks.INSECURE_FLAG, "webhook_insecure", is_flag=True,
              help=webhooks.INSECURE_HELP)
def serve_cmd(
    model, host, port, workers, timeout, max_body_bytes, body_timeout, header_timeout, pin,
    poll_seconds, log_level,
    no_access_log, capture, capture_sample_rate, capture_max_mb, profile, shadow,
    shadow_sample, shadow_tolerance, no_metrics, webhook_insecure,
):
    """Serve MODEL over the MLflow scoring protocol (/invocations, /ping, /health, /version).

    GET /metrics answers the server's own metrics in the Prometheus text format.

    MODEL is NAME@ALIAS, NAME/VERSION, models:/NAME@ALIAS, models:/NAME/VERSION or
    runs:/ID/PATH. With an alias the server follows it: when the alias moves, the new version
    is loaded in the background and swapped in (see /model and the X-Model-Version header).
    The tracking location comes from MLFLOW_TRACKING_URI. POST /webhooks/mlflow takes the
    registry's deliveries signed with $MLOPS_WEBHOOK_SECRET (without it: none, unless
    --webhook-insecure).
    """
    from core.connection import connect, tracking_uri
    from core.models import resolve_model
    from core.settings import load_settings
    from core.uris import parse_model_ref
    from serving.online.logs import configure_logging

    configure_logging(log_level, not no_access_log)
    secret = webhooks.secret_from_env()
    webhooks.check_settings(secret, webhook_insecure)
    cap = load_settings(profile).capture
    ref = parse_model_ref(model)
    served = resolve_model(connect(), ref)  # fail here, with one line, before any worker starts
    note = webhooks.startup_note(secret, webhook_insecure)
    if ref.alias and not pin and note:  # once for the server, not once per worker
        _logger.log(logging.WARNING if webhook_insecure else logging.INFO, note)
    start_shadow = None
    if shadow:
        from serving.shadow.process import shadow_for as start_shadow

        challenger = resolve_model(connect(), parse_model_ref(shadow), allow_run=False)
        if challenger.name != served.name:
            raise click.BadParameter(f"{shadow} is not a version of {served.name}",
                                     param_hint="'--shadow'")
    cfg = srv.ServeConfig(
        model=model,
        host=host,
        port=port,
        workers=workers or _cores(),
        timeout=timeout,
        max_body_bytes=max_body_bytes,
        body_timeout=body_timeout,
        header_timeout=header_timeout,
        pin=pin,
        poll_seconds=poll_seconds,
        tracking_uri=tracking_uri(),
        log_level=log_level.upper(),
        access_log=not no_access_log,
        capture=capture,
        capture_sample_rate=cap.sample_rate if capture_sample_rate is None else capture_sample_rate,
        capture_max_file_bytes=int(cap.max_file_mb * 1024 * 1024),
        capture_max_total_bytes=int((capture_max_mb or cap.max_total_mb) * 1024 * 1024),
        shadow=shadow,
        shadow_sample=shadow_sample,
        shadow_tolerance=shadow_tolerance,
        start_shadow=start_shadow,
        metrics=not no_metrics,
        webhook_insecure=webhook_insecure,
    )
    try:
        code = srv.serve(cfg)
    except OSError as exc:
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    srv.exit_now(code)  # stopped: without the interpreter's seconds-long teardown


@cli.command("image")
@click.argument("model", metavar="MODEL")
@click.option("--output", "output", required=True, type=click.Path(file_okay=False),
              help="Folder to write the build context to (new or empty).")
@click.option("--image-url", default=None, metavar="IMAGE",
              help="The image reference the KServe manifests name (default: NAME:VERSION).")
def image_cmd(model, output, image_url):
    """Write a container build context serving MODEL on SageMaker, KServe and Cloud Run.

    OUTPUT gets a Dockerfile (slim Python, the locked requirements, the server's code, the
    model's files at /opt/ml/model) and kserve/servingruntime.yaml and
    kserve/inferenceservice.yaml. The image runs `python -m serving container`: MLflow's
    /invocations and the Open Inference Protocol (/v2) on $PORT or 8080.
    """
    from pathlib import Path

    from core.connection import connect
    from core.models import resolve_model
    from core.uris import parse_model_ref
    from serving import image

    info = resolve_model(connect(), parse_model_ref(model), allow_run=False)
    built = image.write_context(info, Path(output), image_url)
    click.echo(f"wrote {built.folder} for {info.name} version {info.version}: docker build -t "
               f"{built.image} {built.folder}; KServe: kubectl apply -f {built.runtime} -f "
               f"{built.inference_service}")


@cli.command("container")
@click.argument("command", required=False, type=click.Choice(["serve"]))
@click.option("--workers", default=None, type=click.IntRange(1, 256),
              help="Worker processes (default: $MLOPS_WORKERS, else one per core).")
def container_cmd(command, workers):
    """The image's entrypoint: serve the model folder baked into it, on every contract.

    Serves $MLOPS_MODEL_DIR (default /opt/ml/model) on 0.0.0.0, port $PORT or 8080: /ping,
    /invocations (SageMaker, which runs the image with `serve`), /v2 (KServe) and any route
    Cloud Run forwards. The model's name and version come from $MLOPS_MODEL_NAME and
    $MLOPS_MODEL_VERSION.
    """
    from serving.online import container as box
    from serving.online.logs import configure_logging

    configure_logging("INFO", True)
    folder = box.model_dir()
    if box.local_model(folder) is None:
        raise CliError(f"{folder} holds no MLflow model (no MLmodel file); set "
                       f"${box.ENV_MODEL_DIR}")
    env_workers = os.environ.get(box.ENV_WORKERS, "")
    if workers is None and env_workers:
        if not env_workers.isdigit() or int(env_workers) < 1:
            raise CliError(f"${box.ENV_WORKERS} is {env_workers!r}; expected a positive number")
        workers = int(env_workers)
    port = box.port()
    cfg = srv.ServeConfig(model=folder, host="0.0.0.0", port=port, workers=workers or _cores(),
                          pin=True, tracking_uri=os.environ.get("MLFLOW_TRACKING_URI"))
    try:
        code = srv.serve(cfg)
    except OSError as exc:
        raise CliError(f"cannot listen on 0.0.0.0:{port}: {exc.strerror or exc}") from None
    srv.exit_now(code)


@cli.command("predict")
@click.argument("model", metavar="MODEL")
@click.option(
    "--input",
    "input_path",
    required=True,
    help="CSV or Parquet file to score, local or s3:// (--engine spark: also a folder).",
)
@click.option(
    "--output",
    "output_path",
    default=None,
    help="Where to write rows + predictions (.csv or .parquet, local or s3://; --engine "
    "spark: a Parquet folder). Never the input, a folder holding it or a path inside it; "
    "an existing output is replaced only if predict wrote it. Default: "
    "INPUT-predictions.<same suffix> next to the input.",
)
@click.option(
    "--batch-size",
    default=batch_mod.DEFAULT_BATCH_SIZE,
    show_default=True,
    type=click.IntRange(min=1),
    help="Rows per batch.",
)
@click.option(
    "--engine",
    type=click.Choice(["local", "spark"]),
    default="local",
    show_default=True,
    help="local: this process, in batches. spark: mlflow.pyfunc.spark_udf on a Spark cluster.",
)
@click.option(
    "--master",
    default=None,
    help="--engine spark: the Spark master URL (default local[*], or spark-submit's).",
)
@click.option(
    "--conf",
    "spark_conf",
    multiple=True,
    metavar="KEY=VALUE",
    help="--engine spark: a Spark setting (repeatable), e.g. spark.executor.memory=4g.",
)
def predict_cmd(
    model, input_path: str, output_path: str | None, batch_size: int, engine: str,
    master: str | None, spark_conf: tuple[str, ...],
):
    """Score a CSV/Parquet file with MODEL in batches, with a progress bar.

    --engine spark scores files or folders (local or s3://) with mlflow.pyfunc.spark_udf and
    writes a Parquet folder; same columns, checks and answers as the local engine.
    """
    if engine == "spark":
        _predict_spark(model, input_path, output_path, master, spark_conf)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from core.connection import connect
    from core.models import resolve_model
    from core.uris import parse_model_ref
    from serving.online.model import load_scorer

    logging.basicConfig(level=logging.WARNING)
    ref = parse_model_ref(model)
    if not batch_mod.is_file(input_path):
        raise CliError(f"{input_path}: no such file")
    output_path = output_path or batch_mod.default_output(input_path)
    batch_mod.check_output(input_path, output_path)  # before the model loads and the bar starts
    info = resolve_model(connect(), ref)
    scorer = load_scorer(info.uri, online=False)
    columns = [MofNCompleteColumn(), BarColumn(), TimeElapsedColumn()]
    try:
        total = batch_mod.count_rows(input_path)
        with Progress(*columns, console=_stderr_console(), transient=False) as bar:
            task = bar.add_task("scoring", total=total)
            rows = batch_mod.score_file(
                scorer,
                input_path,
                output_path,
                batch_size=batch_size,
                progress=lambda done: bar.update(task, completed=done),
            )
    except batch_mod.BatchError as exc:  # unreadable or unsupported input file
        raise CliError(str(exc)) from None
    except Exception as exc:
        from serving.online.protocol import RequestError

        if isinstance(exc, RequestError):
            raise CliError(exc.message) from None
        raise
    version = info.version or info.run_id
    click.echo(
        f"scored {rows} rows with {info.name or info.uri} version {version} -> {output_path}"
    )


def _predict_spark(model, input_path: str, output_path: str | None, master, spark_conf) -> None:
    """``predict --engine spark``: see :mod:`serving.batch.spark`."""
    from core.connection import connect
    from core.models import resolve_model
    from core.uris import parse_model_ref
    from serving.batch import spark as spark_mod
    from serving.online.protocol import RequestError

    logging.basicConfig(level=logging.WARNING)
    ref = parse_model_ref(model)
    options = spark_mod.SparkOptions(master=master, conf=spark_mod.parse_conf(spark_conf))
    output_path = output_path or spark_mod.default_output(input_path)
    spark_mod.check_output(input_path, output_path)  # before Spark starts (tens of seconds)
    info = resolve_model(connect(), ref)
    spark = spark_mod.session(options)
    try:
        result = spark_mod.score(spark, info.uri, input_path, output_path)
    except batch_mod.BatchError as exc:
        raise CliError(str(exc)) from None
    except RequestError as exc:
        raise CliError(exc.message) from None
    version = info.version or info.run_id
    click.echo(
        f"scored {result.rows} rows with {info.name or info.uri} version {version} "
        f"-> {result.output} ({result.partitions} Parquet files)"
    )


def _stderr_console():
    from rich.console import Console

    return Console(stderr=True)


@click.command("monitor", add_help_option=False,
               context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def monitor(args) -> int:
    """Compare captured traffic of MODEL with its training data (python -m monitoring).

    Runs ``python -m monitoring`` with the same arguments (its --help lists them): drift
    monitoring is a package of its own, which serving does not import.
    """
    return run_monitoring(list(args))


def run_monitoring(args: list[str]) -> int:
    """Run ``python -m monitoring ARGS`` in a process of its own; return its exit code.

    It writes where this process writes (its terminal, its files); output this process
    captures in memory (a test's) is passed on once it ends. Ctrl-C reaches both processes:
    monitoring reports it and this one returns its exit code.
    """
    import signal
    import subprocess
    import sys

    def stream(f):
        try:
            f.flush()
            return f.fileno()
        except (AttributeError, OSError, ValueError):  # not a file: captured in memory
            return subprocess.PIPE

    cmd = [sys.executable, "-m", "monitoring", *args]
    with subprocess.Popen(cmd, stdout=stream(sys.stdout), stderr=stream(sys.stderr)) as proc:
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: proc.send_signal(signum))
        try:
            try:
                out, err = proc.communicate()
            except KeyboardInterrupt:  # monitoring got it too: its answer is the one to give
                out, err = proc.communicate()
        finally:
            signal.signal(signal.SIGTERM, previous)
    for data, f in ((out, sys.stdout), (err, sys.stderr)):
        if data:
            f.write(data.decode(errors="replace"))
    return proc.returncode if proc.returncode >= 0 else 128 - proc.returncode


def _mount_subcommands() -> None:
    """Add ``sagemaker ...`` (its modules import boto3 only when run) and ``monitor``."""
    from serving.sagemaker.cli import sagemaker

    cli.add_command(sagemaker, "sagemaker")
    cli.add_command(monitor, "monitor")


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``python -m serving``."""
    from core.cli import run_group

    _mount_subcommands()
    return run_group(cli, argv, "python -m serving")
