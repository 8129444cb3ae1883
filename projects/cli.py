"""Command line of the workflow: ``python -m projects STEP [options]``.

The MLproject entry points call these commands. ``main`` runs every step; a step's command runs
that step, reusing (or first computing) the steps before it. Options only parse and delegate.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import sys

import click

from core import names
from projects import STEPS

_logger = logging.getLogger(__name__)

# option -> dotted settings key it overrides (empty value = keep the settings' value)
_OVERRIDES = {
    "source": "data.source",
    "query": "data.query",
    "table": "data.table",
    "target": "data.target",
    "task": "data.task",
    "positive_class": "data.positive_class",
    "metric": "train.metric",
    "n_jobs": "train.n_jobs",
    "tuning_trials": "train.tuning.n_trials",
    "test_size": "split.test_size",
    "val_size": "split.val_size",
    "seed": "split.seed",
    "impute": "clean.impute",
    "outliers": "clean.outliers",
    "model_name": "register.model_name",
    "auto_champion": "register.auto_champion",
    "cache": "cache",
    "experiment": "experiment",
}


def workflow_options(func):
    """Options shared by every step, declared once.

    A two-word option also takes its ``-P`` spelling (``--n_jobs``): ``mlflow run`` passes
    ``-P name=value`` on as ``--name value`` (the MLproject declares no parameters, so that
    MLflow logs only what the user gave, never ``''`` for the rest).
    """
    options = [
        click.option("--profile", default="",
                     help="Settings profile: local (default), team, aws."),
        click.option("--settings", "settings_file", default="", metavar="FILE",
                     help="A YAML file of settings (your project's), over base and profile; "
                          "--set and the options below win over it."),
        click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                     help="Override any setting (dotted key); repeatable, or ';'-separated."),
        click.option("--cache", default="",
                     help="true/false: reuse unchanged steps (default true)."),
        click.option("--source", default="",
                     help="Data: bundled:NAME, a CSV/Parquet path, s3://..., or a SQLAlchemy URL."),
        click.option("--query", default="", help="SQL query for a SQLAlchemy source."),
        click.option("--table", default="", help="SQL table for a SQLAlchemy source."),
        click.option("--target", default="", help="Name of the target column."),
        click.option("--task", default="",
                     help="auto (default: decided from the target), classification or "
                          "regression."),
        click.option("--positive-class", "--positive_class", "positive_class", default="",
                     help="The class f1 and roc_auc score in a binary task (default: the "
                          "minority class of the training target)."),
        click.option("--metric", default="", help="Selection metric (roc_auc, f1, rmse, ...)."),
        click.option("--estimators", default="",
                     help="Comma list of estimators to sweep (linear,random_forest,"
                          "gradient_boosting)."),
        click.option("--candidates", default="",
                     help="YAML list replacing train.candidates, e.g. "
                          "'[{estimator: linear, grid: {C: [0.5, 1]}}]'."),
        click.option("--n-jobs", "--n_jobs", "n_jobs", default="",
                     help="Parallel jobs of the sweep (-1: all)."),
        click.option("--tuning-trials", "--tuning_trials", "tuning_trials", default="",
                     help="Tune with Optuna instead of the grid: this many trials over the "
                          "candidates' search spaces (the built-ins' default spaces when none "
                          "is set; train.tuning for the rest)."),
        click.option("--test-size", "--test_size", "test_size", default="",
                     help="Test share of the rows."),
        click.option("--val-size", "--val_size", "val_size", default="",
                     help="Validation share of the rest."),
        click.option("--seed", default="", help="Seed of the split and the estimators."),
        click.option("--impute", default="", help="none, mean, median or most_frequent."),
        click.option("--outliers", default="", help="none, clip or drop."),
        click.option("--model-name", "--model_name", "model_name", default="",
                     help="Registered model name (default: named after the data: its file "
                          "stem or table; mlops-registry-model for the bundled default)."),
        click.option("--auto-champion", "--auto_champion", "auto_champion", default="",
                     help="true/false: also set champion when the new version wins (default "
                          "auto: only on the embedded store with the local profile)."),
        click.option("--experiment", default="", help="Experiment (when not under mlflow run)."),
        click.option("-v", "--verbose", is_flag=True, help="Debug logging."),
        click.option("--output", "output", type=click.Choice(("table", "json")),
                     default="table", show_default=True,
                     help="table: a summary for people; json: one JSON document on stdout "
                          "for scripts (keys in projects/result.py), the logs on stderr."),
    ]
    return functools.reduce(lambda f, opt: opt(f), reversed(options), func)


def build_overrides(opts: dict) -> tuple[list[str], list[str] | None]:
    """Turn the CLI options into ``key=value`` settings overrides (CLI wins over profiles).

    Returns:
        The overrides, and the ``--estimators`` subset of the sweep (None: keep the sweep).
    """
    out = []
    for item in opts.get("sets") or ():
        out.extend(part.strip() for part in item.split(";") if part.strip())
    for option, key in _OVERRIDES.items():
        value = opts.get(option)
        if value not in (None, ""):
            out.append(f"{key}={value}")
    if opts.get("candidates"):
        out.append(f"train.candidates={opts['candidates']}")
    estimators = [e.strip() for e in (opts.get("estimators") or "").split(",") if e.strip()]
    return out, estimators or None


def _settings(opts: dict):
    from core.settings import load_settings

    overrides, estimators = build_overrides(opts)
    settings = load_settings(opts.get("profile") or None, overrides,
                             settings_file=opts.get("settings_file") or None)
    if estimators:
        known = {c.estimator: c for c in settings.train.candidates}
        cands = [known.get(e) or {"estimator": e, "grid": {}} for e in estimators]
        data = settings.model_dump()
        data["train"]["candidates"] = [c if isinstance(c, dict) else c.model_dump() for c in cands]
        from core.settings import Settings

        settings = Settings.model_validate(data)
    from core import metrics

    metrics.register_declared(settings.metrics)  # the sweep, evaluate and register score them
    return settings


def _s3_factory():
    import boto3

    return boto3.client("s3")


@contextlib.contextmanager
def _collector_paused():
    """Start-up with Python's cyclic garbage collector paused, then what it built frozen.

    Importing MLflow and its tracking store creates about a million long-lived objects and
    next to no garbage: the collector walking them again and again is a fifth of the import
    time. At the end they are moved out of its sight (:func:`gc.freeze`), so the first
    collection does not walk them all either; the workflow itself runs with the collector on.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def _import_store_code(*uris: str) -> None:
    """Load MLflow's database stores now, in the start-up (MLflow loads them on first use)."""
    from core.connection import is_sql_store

    if any(is_sql_store(uri) for uri in uris):
        import mlflow.store.model_registry.sqlalchemy_store  # noqa: F401
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401


def run_step(until: str, opts: dict) -> int:
    """Load settings, connect, run the workflow up to ``until``, print the summary.

    Errors are raised for :func:`core.cli.run_group` to report (one line, the exit codes of
    :mod:`core.errors`): a bad setting is bad usage (2), a :class:`WorkflowError` or a refusal
    of the tracking server is 1, an interrupt is 130 after the runs were ended KILLED.
    """
    import warnings

    from pydantic import ValidationError

    from core.connection import connect, registry_uri, tracking_uri
    from core.errors import Interrupted, MlopsError, explain
    from core.runs import terminate_as_interrupt
    from core.settings import SettingsError

    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    logging.basicConfig(level=logging.DEBUG if opts.get("verbose") else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("mlflow", "alembic", "urllib3", "botocore", "matplotlib", "numba"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    with _collector_paused():
        try:
            settings = _settings(opts)
        except ValidationError as exc:  # --estimators re-validates outside load_settings
            raise SettingsError(str(exc).splitlines()[0]) from None
        from mlflow.exceptions import MlflowException

        from projects.workflow import Workflow

        if settings.train.tuning is not None and STEPS.index(until) >= STEPS.index("train"):
            from projects.tuning_space import build_space

            # a bad search space is refused before any step (or trial) runs
            build_space(settings.train.candidates, settings.data.task, settings.split.seed)
        client = connect()
        _import_store_code(tracking_uri(), registry_uri())
    as_json = opts.get("output") == "json"
    try:
        # with --output json stdout holds the document only: what MLflow prints goes to stderr
        with terminate_as_interrupt(), (contextlib.redirect_stdout(sys.stderr) if as_json
                                        else contextlib.nullcontext()):
            result = Workflow(settings, client, _s3_factory,
                              settings_file=opts.get("settings_file") or None).run(until)
    except MlflowException as exc:  # e.g. the server refused (401/403) or is unreachable
        raise MlopsError(f"tracking server: {explain(exc)}") from None
    except KeyboardInterrupt:
        # Workflow.run ended its open runs KILLED on the way out; say so.
        raise Interrupted("the workflow's runs were ended KILLED") from None
    if as_json:
        from core.output import print_json
        from projects.result import result_document

        print_json(result_document(result))
    else:
        _print_summary(result, tracking_uri())
    return 0


def _print_summary(result, uri: str) -> None:
    import shlex

    from core.connection import DEFAULT_TRACKING_URI

    steps = ", ".join(f"{s} {'reused' if o.reused else 'ran'}" for s, o in result.steps.items())
    # Hints run as printed from a plain shell in the checkout: make targets use the environment
    # `make run` built (a bare `python -m` fails outside it) and the store this run used.
    store = "" if uri == DEFAULT_TRACKING_URI else f" MLFLOW_TRACKING_URI={shlex.quote(uri)}"
    click.echo("")
    click.echo(f"workflow run   {result.run_id} (experiment {result.experiment_id})")
    click.echo(f"steps          {steps}")
    validate = result.steps.get("validate")
    if validate is not None and validate.tags.get(names.TASK_TAG):
        click.echo(f"task           {validate.tags[names.TASK_TAG]} "
                   f"({validate.tags.get(names.TASK_REASON_TAG, '')})")
    train = result.steps.get("train")
    if train is not None and train.tags.get(names.POSITIVE_CLASS_TAG) is not None:
        click.echo(f"positive class {train.tags[names.POSITIVE_CLASS_TAG]} "
                   f"({train.tags.get(names.POSITIVE_CLASS_REASON_TAG, '')})")
    if result.model_version:
        aliases = ", ".join(result.aliases) or "none"
        click.echo(f"model version  {result.model_name} v{result.model_version} "
                   f"(aliases: {aliases})")
        if getattr(result, "model_name_from", None) == "data source":
            click.echo(f"model name     {result.model_name}: named after the data "
                       "(-P model_name=NAME / --model-name NAME registers elsewhere)")
        if result.crown_reason:
            crowned = "crowned" if result.crowned else "not crowned"
            click.echo(f"champion       {crowned}: {result.crown_reason}")
        if not result.crowned and "champion" not in result.aliases:
            click.echo(f"promote it     make promote MODEL={result.model_name}/"
                       f"{result.model_version} REASON='why'{store}")
        click.echo(f"serve it       make serve MODEL={result.model_name}@champion{store}")
    click.echo(f"tracking       {uri}")
    from core.uris import ui_path

    click.echo(f"open the UI    make ui{store}   → http://127.0.0.1:5000/"
               f"{ui_path(result.experiment_id, result.run_id)}")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli():
    """The training workflow: ingest → validate → prepare → train → evaluate → register."""


def _make_command(step: str, doc: str):
    @cli.command(name=step, help=doc)
    @workflow_options
    def command(**opts):
        sys.exit(run_step("register" if step == "main" else step, opts))

    return command


_DOCS = {
    "main": "Run the whole workflow (every step, unchanged steps reused).",
    "ingest": "Read the raw data (bundled, CSV/Parquet, s3://, SQL) and log it as a dataset.",
    "validate": "Profile the data, check its schema and rules, clean it.",
    "prepare": "Split train/validation/test (stratified, seeded) and log the splits.",
    "train": "Sweep the candidate estimators (nested runs) and log the best model.",
    "evaluate": "Test-set metrics, plots, and the comparison with the champion.",
    "register": "Register the model with lineage tags and set the challenger alias.",
}
for _step in ("main", *STEPS):
    _make_command(_step, _DOCS[_step])


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``python -m projects``."""
    from core.cli import run_group

    return run_group(cli, argv, "python -m projects")
