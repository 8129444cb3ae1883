"""The step chain: the workflow's steps as MLflow runs under one parent run, with step caching.

Every step is a nested child run of the workflow run, tagged ``mlops.step``, and carries
``mlops.cache_key`` (:mod:`projects.cache_keys`: its code, settings, input and the model
packages). When a finished run with the same key exists in the experiment, the step is reused:
the workflow run's tags ``mlops.<step>_run`` (that run) and ``mlops.<step>_reused`` record it,
and its outputs are read from that run.

:class:`Workflow` holds the chain and its plumbing (the cache lookup, a step's run, the frames
passed between steps); the steps' own runs are its base classes, one module per stage:
:mod:`projects.data_steps` (ingest, validate, prepare), :mod:`projects.model_steps` (train,
evaluate), :mod:`projects.crowning` (register), and :mod:`projects.run_summary` (what the
workflow run says about itself). The steps' pure work is in the modules named after them.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

from core import names
from core.runs import reap_dead_runs, run_with_status
from core.settings import Settings
from core.uris import run_uri
from projects import STEPS
from projects.cache_keys import CACHE_TAG, STEP_TAG, cache_parts, key_of
from projects.crowning import RegisterStep
from projects.data_steps import DataSteps
from projects.errors import WorkflowError
from projects.model_steps import ModelSteps
from projects.presentation import EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND, model_name_for_data
from projects.result import StepOutcome, WorkflowResult
from projects.run_summary import RunSummary

_logger = logging.getLogger(__name__)


class Workflow(DataSteps, ModelSteps, RegisterStep, RunSummary):
    """Runs the steps up to ``until`` under one parent run, reusing cached steps.

    Args:
        settings: the resolved settings (an empty ``register.model_name`` is named after the
            data here, before anything is recorded).
        client: the MLflow client of the tracking store and registry.
        s3_client_factory: makes the boto3 S3 client an ``s3://`` source needs.
        project_dir: where the workflow runs (default: the working directory).
        settings_file: the user's ``--settings`` file (the recorded diff may carry it).
    """

    def __init__(self, settings: Settings, client, s3_client_factory=None, project_dir=None,
                 settings_file=None):
        # the model's name decided once, before anything is recorded (the run's settings
        # artifact, which reproduction re-runs, holds the name used)
        self.model_name_from = "register.model_name"
        if not settings.register.model_name:
            from core.settings import DataSettings

            name = model_name_for_data(settings.data.source, settings.data.table,
                                       DataSettings.model_fields["source"].default)
            settings = settings.model_copy(update={"register": settings.register.model_copy(
                update={"model_name": name})})
            self.model_name_from = "data source"
        self.settings = settings
        self.client = client
        self._s3_factory = s3_client_factory
        self.project_dir = Path(project_dir or Path.cwd())
        self.settings_file = settings_file
        self.frames: dict = {}
        self.model = None
        self.outcomes: dict[str, StepOutcome] = {}
        self.timings: dict[str, float] = {}
        self._tmp = tempfile.TemporaryDirectory(prefix="mlops-")
        self.experiment_id: str | None = None
        self.run_id: str | None = None
        # the champion evaluate compared against (its version), for register's compare-and-set
        self._champion_seen: str | None = None
        self._champion_is_this_model = False
        self._parts: dict[str, dict] = {}
        self._parent_params: dict[str, str] = {}
        self._step: str | None = None  # the step running (a failure names it)

    # ----------------------------------------------------------------- plumbing
    def _lookup(self, key: str):
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{CACHE_TAG}` = '{key}' and attributes.status = 'FINISHED'",
            max_results=1,
            order_by=["attributes.start_time DESC"],
        )
        return runs[0] if runs else None

    def _run_step(self, step: str, key: str, compute, valid=None) -> StepOutcome:
        """Reuse the finished run of ``key`` (if ``valid``), else run ``compute`` in a step run.

        ``compute(run_id)`` returns the step run's ``(tags, metrics, params)``.
        """
        import mlflow

        hit = self._lookup(key) if self.settings.cache else None
        if hit is not None and (valid is None or valid(hit)):
            # recorded on the workflow run (mlops.<step>_run / _reused, see _summarise), not
            # as an empty child run per step: a re-run costs no runs and the runs table
            # stays readable
            _logger.info(
                "%-8s reused: code, settings and input unchanged (run %s)", step, hit.info.run_id
            )
            outcome = StepOutcome(step, hit.info.run_id, key, True, dict(hit.data.tags),
                                  dict(hit.data.metrics), dict(hit.data.params), hit.inputs)
        else:
            start = time.perf_counter()
            with run_with_status(run_name=step, nested=True, tags={STEP_TAG: step}) as run:
                tags, metrics, params = compute(run.info.run_id) or ({}, {}, {})
                parts = {names.cache_part_tag(k): v[:500]
                         for k, v in self._parts.get(step, {}).items() if k != "step"}
                mlflow.set_tags({CACHE_TAG: key, **parts, **tags})
                if metrics:
                    mlflow.log_metrics(metrics)
                if params:
                    mlflow.log_params(params)
            self.timings[step] = time.perf_counter() - start
            _logger.info("%-8s done in %.2fs (run %s)", step, self.timings[step],
                         run.info.run_id)
            outcome = StepOutcome(step, run.info.run_id, key, False, tags, metrics, params)
        self.outcomes[step] = outcome
        return outcome

    def _key(self, step: str, upstream: str) -> str:
        """The step's cache key; its parts are kept for the step run's tags."""
        self._parts[step] = cache_parts(step, self.settings, upstream)
        return key_of(self._parts[step])

    def _frame(self, name: str, step: str, path: str):
        """The frame ``name``: kept from this run, else read from ``step``'s artifact."""
        if name not in self.frames:
            import mlflow
            import pandas as pd

            local = mlflow.artifacts.download_artifacts(
                run_id=self.outcomes[step].run_id, artifact_path=path, dst_path=self._tmp.name
            )
            self.frames[name] = pd.read_parquet(local)
        return self.frames[name]

    def _model_uri(self) -> str:
        """The model train logged (evaluate scores it, register registers it)."""
        train = self.outcomes["train"]
        return train.tags.get(names.MODEL_URI_TAG) or run_uri(train.run_id)

    # ---------------------------------------------------------------- the chain
    def run(self, until: str = "register") -> WorkflowResult:
        """Run the steps in order up to ``until`` inside the workflow (parent) run."""
        import mlflow

        from projects.record import build_record, log_record, record_tags

        if until not in STEPS:
            raise WorkflowError(f"unknown step {until!r}; one of: {', '.join(STEPS)}")
        # started by `mlflow run`: log into its run; consumed here so that nested
        # start_run calls create children instead of resuming the parent
        active = os.environ.pop("MLFLOW_RUN_ID", None)
        if active:
            self.experiment_id = self.client.get_run(active).info.experiment_id
            exp = self.client.get_experiment(self.experiment_id)  # `mlflow run` created it
        else:
            exp = self.client.get_experiment_by_name(self.settings.experiment)
            self.experiment_id = (exp.experiment_id if exp else self.client.create_experiment(
                self.settings.experiment, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND}))
        if exp is not None and EXPERIMENT_KIND_TAG not in (exp.tags or {}):
            # without the kind, MLflow 3.17's UI opens the GenAI layout (traces, judges);
            # a kind someone chose is theirs to keep
            self.client.set_experiment_tag(self.experiment_id, EXPERIMENT_KIND_TAG,
                                           MODEL_TRAINING_KIND)
        mlflow.set_experiment(experiment_id=self.experiment_id)  # the nested runs go there too
        reap_dead_runs(self.client, self.experiment_id, exclude=[active] if active else ())
        start = time.perf_counter()
        try:
            # what reproducing this run needs, recorded as it starts (a failed run says it too)
            record, dumped, diff = build_record(self.settings, self.project_dir,
                                                self.settings_file)
            with run_with_status(
                run_id=active or None,
                experiment_id=None if active else self.experiment_id,
                run_name=None if active else f"workflow-{until}",
                tags={names.PROFILE_TAG: self.settings.profile, names.UNTIL_TAG: until,
                      **record_tags(record)},
            ) as parent:
                self.run_id = parent.info.run_id
                self._parent_params = dict(parent.data.params)  # `mlflow run` logged its own
                try:
                    log_record(self.client, self.run_id, record, dumped, diff)
                    _logger.info("model    %s (%s)", self.settings.register.model_name,
                                 "named after the data; -P model_name=NAME chooses another"
                                 if self.model_name_from == "data source"
                                 else "register.model_name")
                    self._log_params(self._effective_params())
                    for step in STEPS[: STEPS.index(until) + 1]:
                        self._step = step
                        getattr(self, step)()
                    self._step = None
                    self._summarise()
                except Exception as exc:
                    self._record_failure(exc)
                    raise
                run_id = parent.info.run_id
        finally:  # a failed or interrupted run leaves no scratch folder behind either
            self._tmp.cleanup()
        self.timings["total"] = time.perf_counter() - start
        result = WorkflowResult(run_id, self.experiment_id, self.outcomes, timings=self.timings,
                                model_name_from=self.model_name_from, until=until)
        reg = self.outcomes.get("register")
        if reg:
            result.model_name = reg.tags.get(names.MODEL_NAME_TAG)
            result.model_version = reg.tags.get(names.MODEL_VERSION_TAG)
            result.crowned = reg.tags.get(names.CROWNED_TAG) == "True"
            result.crown_reason = reg.tags.get(names.CROWN_REASON_TAG)
            mv = self.client.get_model_version(result.model_name, result.model_version)
            result.aliases = sorted(getattr(mv, "aliases", []) or [])
        return result
