"""train.tuning: an Optuna study over the candidates' search spaces, its trials as MLflow runs.

The study lives in the tracking store through MLflow's own
:class:`mlflow.optuna.storage.MlflowStorage`: the study is a run under the train step's run,
each trial a run under the study, named by the parameters it tried, with the validation
metrics. A study interrupted (Ctrl-C, a lost executor) is found again by the train step's
cache key and resumed: its finished trials are not run again. The engines:

- ``local``: trials over ``train.n_jobs`` processes (one: in this process, reproducible);
- ``spark``: trials on Spark executors through :class:`mlflow.pyspark.optuna.study.
  MlflowSparkStudy` (pyspark, the ``spark`` extra, and a Java runtime).

The best trial's parameters are fitted once more here: that model is evaluated and registered.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

from core import metrics, names
from projects.errors import WorkflowError
from projects.tuning_space import ESTIMATOR_PARAM, Space, suggest

_logger = logging.getLogger(__name__)

#: Stages of a staged fit: the intermediate scores the median pruner compares.
STAGES = 4
#: The user attribute of a trial that an interrupt stopped (it is run again on resume).
INTERRUPTED_ATTR = "interrupted"
INTERRUPTED_REASON = "interrupted: run again when the study resumes"
#: The study run's and the trial runs' step tags.
STUDY_STEP = "train.study"
TRIAL_STEP = "train.trial"


class TrialFailed(Exception):
    """A trial whose fit or scoring failed: Optuna records it FAIL, the study goes on."""


@dataclass
class Objective:
    """One trial: suggest, fit on the train split, score on validation, record on its run.

    Picklable (the local engine's processes and Spark's executors unpickle it); the trial's
    run is the MLflow run :class:`MlflowStorage` made for it (``trial._trial_id``).
    """

    task: str
    types: Any
    train: Any
    val: Any
    target: str
    seed: int
    metric: str
    space: Space
    positive: Any = None
    custom: tuple = ()
    pruning: bool = True
    tracking_uri: str | None = None

    def __call__(self, trial) -> float:
        """The trial's validation metric (raises TrialPruned or TrialFailed)."""
        import optuna
        from mlflow import MlflowClient
        from mlflow.entities import Metric, RunTag

        from projects.presentation import candidate_run_name

        estimator = (trial.suggest_categorical(ESTIMATOR_PARAM, list(self.space.estimators))
                     if len(self.space.estimators) > 1 else self.space.estimators[0])
        params = {d.param: suggest(trial, d) for d in self.space.of(estimator)}
        run_id = trial._trial_id  # MlflowStorage: the trial's run (MLflow's Spark study too)
        queue = getattr(trial.study._storage, "queue_run_data", None)
        if queue is None:  # MLflow's own storage (a Spark executor's): one request
            client = MlflowClient(self.tracking_uri)

            def queue(run_id, metrics=(), tags=()):
                client.log_batch(run_id, metrics=list(metrics), tags=list(tags),
                                 synchronous=True)
        # the trial's own tags and metrics go with the trial's end: no request of their own
        tags = [RunTag("mlflow.runName", candidate_run_name(estimator, params)),
                RunTag(names.STEP_TAG, TRIAL_STEP), RunTag(names.ESTIMATOR_TAG, estimator)]
        try:
            scores, fit_seconds = self._fit(trial, estimator, params)
        except optuna.TrialPruned as exc:
            queue(run_id, tags=[*tags, RunTag(names.PRUNED_TAG, str(exc)[:5000])])
            raise
        except KeyboardInterrupt:
            trial.set_user_attr(INTERRUPTED_ATTR, True)
            queue(run_id, tags=[*tags, RunTag(names.ERROR_TAG, INTERRUPTED_REASON)])
            raise
        except TrialFailed as exc:
            queue(run_id, tags=[*tags, RunTag(names.ERROR_TAG, str(exc)[:5000])])
            raise
        now = int(time.time() * 1000)
        values = {f"val_{k}": v for k, v in scores.items()}
        values["fit_seconds"] = fit_seconds
        value = scores.get(self.metric)
        finite = value is not None and math.isfinite(value)
        if not finite:
            tags.append(RunTag(names.ERROR_TAG, f"no finite validation {self.metric}"))
        queue(run_id, tags=tags, metrics=[
            Metric(k, float(v), now, 0) for k, v in values.items()
            if v is not None and math.isfinite(v)])
        if not finite:
            raise TrialFailed(f"no finite validation {self.metric}")
        return float(value)

    def _fit(self, trial, estimator: str, params: dict) -> tuple[dict[str, float], float]:
        """Fit and score; staged (intermediate scores, pruning) where the estimator can."""
        import optuna

        from projects.train import _absolute, fit_candidate, make_pipeline, score

        for metric in self.custom:
            metrics.METRICS[metric.name] = metric
        estimator = _absolute(estimator)  # a worker's working directory may not be this one
        model = make_pipeline(self.task, self.types, estimator, params, self.seed)
        # one of the grid's points (enqueued) is never pruned: the study holds the grid's best
        fixed = bool(trial.storage.get_trial_system_attrs(trial._trial_id).get("fixed_params"))
        size = _staged_size(model.steps[-1][1]) if self.pruning and not fixed else None
        if size is None:
            res = fit_candidate(self.task, self.types, estimator, params, self.seed, self.train,
                                self.val, self.target, self.custom, self.positive)
            if res.error:
                raise TrialFailed(res.error)
            return res.metrics, res.fit_seconds
        X, y = self.train.drop(columns=[self.target]), self.train[self.target]
        Xv, yv = self.val.drop(columns=[self.target]), self.val[self.target]
        est = model.steps[-1][1]
        total = int(est.get_params()[size])
        start = time.perf_counter()
        try:
            Xt = model[:-1].fit_transform(X, y)
            scores: dict[str, float] = {}
            for step, n in enumerate(_stages(total)):
                est.set_params(warm_start=True, **{size: n})
                est.fit(Xt, y)
                scores, _ = score(self.task, model, Xv, yv, self.positive)
                value = scores.get(self.metric)
                if value is None or not math.isfinite(value) or n == total:
                    continue
                trial.report(value, step)
                if trial.should_prune():
                    raise optuna.TrialPruned(
                        f"pruned at {size}={n} of {total}: validation {self.metric} "
                        f"{value:.4g} behind the median of earlier trials at this stage")
        except (optuna.TrialPruned, WorkflowError, metrics.MetricError):
            raise
        except Exception as exc:  # noqa: BLE001 - one line, as a failed grid candidate
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise TrialFailed(f"{type(exc).__name__}: {first[:300]}".rstrip(": ")) from None
        return scores, time.perf_counter() - start


def _staged_size(est) -> str | None:
    """The size parameter a warm-started ``est`` grows (trees, boosting rounds), or None."""
    params = est.get_params(deep=False) if hasattr(est, "get_params") else {}
    if "warm_start" not in params:
        return None
    for size in ("max_iter", "n_estimators"):
        if isinstance(params.get(size), int) and params[size] >= STAGES:
            # a linear model's max_iter is no ensemble size: only ensembles are staged
            if size == "max_iter" and "learning_rate" not in params:
                continue
            return size
    return None


def _stages(total: int) -> list[int]:
    """``[total/4, total/2, 3*total/4, total]`` rounded, increasing, ending at ``total``."""
    out = sorted({max(1, round(total * (i + 1) / STAGES)) for i in range(STAGES)})
    return out if out[-1] == total else [*out, total]


# ------------------------------------------------------------------------------ the study
@dataclass
class StudyOutcome:
    """What the study found and how its trials ended."""

    study_run_id: str
    study_name: str
    resumed: bool
    best_params: dict  # as the study names them
    best_value: float
    complete: int
    pruned: int
    failed: int
    ran: int  # trials this run started
    seconds: float
    study: Any = None


def _direction(metric: str) -> str:
    return "maximize" if metrics.get(metric).greater_is_better else "minimize"


def _sampler(tuning, seed: int):
    import optuna

    if tuning.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def _pruner(tuning):
    import optuna

    if not tuning.pruning:
        return optuna.pruners.NopPruner()
    # Optuna's default of five finished trials before pruning, fewer in a short study
    return optuna.pruners.MedianPruner(n_startup_trials=min(5, max(2, tuning.n_trials // 4)),
                                       n_warmup_steps=1)


def _storage(experiment_id: str, share: tuple[int, int] | None = None):
    """MLflow's storage of the study, each run read once (:mod:`projects.study_storage`).

    Everything a trial writes is sent when it ends (or by the storage's flush thread, whose
    long interval spares a trial of a second an extra write).
    """
    from projects.study_storage import KeptStorage

    return KeptStorage(experiment_id=experiment_id, batch_flush_interval=5.0, share=share)


def find_unfinished_study(client, experiment_id: str, key: str):
    """The study of ``key`` that did not finish (interrupted), or None."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=(f"tags.`{names.STUDY_KEY_TAG}` = '{key}' "
                       "and attributes.status != 'FINISHED'"),
        max_results=1, order_by=["attributes.start_time DESC"])
    return runs[0] if runs else None


def _close_stale_trials(client, experiment_id: str, study_run_id: str) -> int:
    """End FAILED (interrupted) the trials of a resumed study left RUNNING by a lost process."""
    runs = client.search_runs(
        [experiment_id], filter_string=(f"tags.mlflow.parentRunId = '{study_run_id}' "
                                        "and attributes.status = 'RUNNING'"))
    for run in runs:
        client.set_tag(run.info.run_id, f"user_{INTERRUPTED_ATTR}", "true")
        client.set_tag(run.info.run_id, names.ERROR_TAG, INTERRUPTED_REASON)
        client.set_terminated(run.info.run_id, status="FAILED")
    return len(runs)


def counted(trials) -> list:
    """The trials a study has done: finished, not interrupted (those run again)."""
    from optuna.trial import TrialState

    done = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    return [t for t in trials
            if t.state in done and not t.user_attrs.get(INTERRUPTED_ATTR)]


def run_study(client, experiment_id: str, parent_run_id: str, key: str, objective: Objective,
              tuning, n_jobs: int, seed: int, first: list[dict] = ()) -> StudyOutcome:
    """Create (or resume) the study of ``key`` under ``parent_run_id`` and run its trials.

    ``first``: the params of a new study's first trials (the grid's points,
    :func:`projects.tuning_space.grid_points`), enqueued when ``tuning.n_trials`` holds them
    all; the sampler takes over after them.

    Raises:
        WorkflowError: no trial completed (one line with the first failure), or the Spark
            engine cannot start.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    found = find_unfinished_study(client, experiment_id, key)
    resumed = found is not None
    if resumed:
        name = found.data.tags["mlflow.runName"]
        study_run_id = found.info.run_id
        stale = _close_stale_trials(client, experiment_id, study_run_id)
        client.update_run(study_run_id, status="RUNNING")
        # the study moves under this train run: its page shows the whole study
        client.set_tag(study_run_id, "mlflow.parentRunId", parent_run_id)
        _logger.info("tuning: resuming study %s (run %s; %d interrupted trial(s) to run again)",
                     name, study_run_id, stale)
    else:
        name = f"study {key[:12]} {uuid.uuid4().hex[:6]}"
        study_run_id = None
    storage = _storage(experiment_id)
    if resumed:
        # a sampler seeded as the first attempt's would suggest its first trials again
        seed += len(client.search_runs(
            [experiment_id], filter_string=f"tags.mlflow.parentRunId = '{study_run_id}'"))
    sampler, pruner = _sampler(tuning, seed), _pruner(tuning)
    direction = _direction(objective.metric)
    start = time.perf_counter()

    def created(run_id: str, study) -> None:
        # tagged before any trial: an interrupted study is found again by the key
        client.log_batch(run_id, tags=_study_tags(parent_run_id, key), synchronous=True)
        if first and len(first) <= tuning.n_trials:
            # the grid's points first: never worse than the grid on its budget (not pruned)
            for params in first:
                study.enqueue_trial(params)
            storage.flush_all_batches()  # in the store for the workers and executors
        elif first:
            _logger.info("tuning: n_trials %d is below the grid's %d points: the sampler "
                         "chooses every trial (n_trials >= %d tries the grid's points first)",
                         tuning.n_trials, len(first), len(first))

    if tuning.engine == "spark":
        study, ran = _optimize_spark(name, storage, sampler, pruner, direction, objective,
                                     tuning, n_jobs, resumed, created)
        study_run_id = study_run_id or storage.get_study_id_from_name(name)
    else:
        if resumed:
            study = optuna.load_study(study_name=name, storage=storage, sampler=sampler,
                                      pruner=pruner)
            _requeue_interrupted(study)
        else:
            study = optuna.create_study(study_name=name, storage=storage, sampler=sampler,
                                        pruner=pruner, direction=direction)
            study_run_id = storage.get_study_id_from_name(name)
            created(study_run_id, study)
        try:
            ran = _optimize_local(study, storage, objective, tuning, n_jobs, experiment_id)
        except BaseException as exc:
            # stopped (Ctrl-C, SIGTERM) or broken: the study run says so, a re-run resumes it
            stopped = isinstance(exc, KeyboardInterrupt)
            client.set_terminated(study_run_id, status="KILLED" if stopped else "FAILED")
            raise
    storage.flush_all_batches()
    storage.reread()  # the trials other processes ran
    trials = study.get_trials(deepcopy=False)
    from optuna.trial import TrialState

    by_state = {s: sum(1 for t in counted(trials) if t.state == s)
                for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    if not complete:
        failures = [t for t in trials if t.state == TrialState.FAIL]
        first = ""
        if failures:
            first = client.get_run(failures[0]._trial_id).data.tags.get(names.ERROR_TAG, "")
        client.set_terminated(study_run_id, status="FAILED")
        raise WorkflowError(f"tuning: no trial completed ({len(trials)} tried)"
                            + (f"; first failure: {first}" if first else ""))
    best = metrics.best(objective.metric, complete, lambda t: t.value)
    for trial in trials:
        if trial.state == TrialState.WAITING:
            # a grid point the timeout left unrun: a finished study is never resumed
            client.delete_run(trial._trial_id)
    client.set_terminated(study_run_id, status="FINISHED")
    return StudyOutcome(study_run_id, name, resumed, dict(best.params), float(best.value),
                        by_state[TrialState.COMPLETE], by_state[TrialState.PRUNED],
                        by_state[TrialState.FAIL], ran, time.perf_counter() - start, study)


def _requeue_interrupted(study) -> None:
    """The grid's points an interrupt stopped are first again (each once)."""
    trials = study.get_trials(deepcopy=False)
    queued = [t.system_attrs.get("fixed_params") for t in trials
              if not t.user_attrs.get(INTERRUPTED_ATTR)]
    for trial in trials:
        params = trial.system_attrs.get("fixed_params")
        if params and trial.user_attrs.get(INTERRUPTED_ATTR) and params not in queued:
            study.enqueue_trial(params)
            queued.append(params)


def _study_tags(parent_run_id: str, key: str):
    from mlflow.entities import RunTag

    return [RunTag("mlflow.parentRunId", parent_run_id), RunTag(names.STEP_TAG, STUDY_STEP),
            RunTag(names.STUDY_KEY_TAG, key)]


def _remaining(study, tuning) -> int:
    return max(0, tuning.n_trials - len(counted(study.get_trials(deepcopy=False))))


def _optimize_local(study, storage, objective: Objective, tuning, n_jobs: int,
                    experiment_id: str) -> int:
    """Run the study's missing trials here (one job) or over ``n_jobs`` processes."""
    remaining = _remaining(study, tuning)
    jobs = min(remaining, n_jobs if n_jobs > 0 else (os.cpu_count() or 1))
    if remaining == 0:
        return 0
    if jobs <= 1:
        storage.only_here()
        study.optimize(objective, n_trials=remaining, timeout=tuning.timeout,
                       catch=(TrialFailed,), gc_after_trial=False)
        return remaining
    from joblib import Parallel, delayed

    shares = [remaining // jobs + (1 if i < remaining % jobs else 0) for i in range(jobs)]
    storage.flush_all_batches()
    Parallel(n_jobs=jobs)(
        delayed(_optimize_in_worker)(study.study_name, experiment_id, objective,
                                     study.sampler, study.pruner, share, tuning.timeout,
                                     (i, jobs))
        for i, share in enumerate(shares))
    return remaining


def _optimize_in_worker(name: str, experiment_id: str, objective: Objective, sampler, pruner,
                        n_trials: int, timeout: float | None,
                        worker: tuple[int, int] | None = None) -> None:
    """A worker process's share of the trials (its sampler reseeded: no duplicate trials).

    ``worker``: ``(i, n)``, its share of the enqueued trials (the grid's points).
    """
    import mlflow
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if objective.tracking_uri:
        mlflow.set_tracking_uri(objective.tracking_uri)
    storage = _storage(experiment_id, worker)
    study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    study.sampler.reseed_rng()
    study.optimize(objective, n_trials=n_trials, timeout=timeout, catch=(TrialFailed,),
                   gc_after_trial=False)
    storage.flush_all_batches()


def spark_session(master: str | None):
    """The active SparkSession, else a new one.

    On ``master``; without one: ``SPARK_REMOTE`` (Spark Connect) or spark-submit's master,
    else ``local[*]``.

    Raises:
        WorkflowError: pyspark or Java missing, a bad master URL (one line).
    """
    import sys

    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise WorkflowError("train.tuning.engine spark needs pyspark and a Java runtime: "
                            "pip install -e '.[spark]'") from None
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    builder = SparkSession.builder.appName("mlops-train-tuning")
    remote = os.environ.get("SPARK_REMOTE")
    submitted = "PYSPARK_GATEWAY_PORT" in os.environ
    if master or not (remote or submitted):
        builder = builder.master(master or "local[*]")
        if (master or "local").startswith("local") and not os.environ.get("PYSPARK_PYTHON"):
            # local workers run this interpreter (the venv with the project's libraries)
            os.environ["PYSPARK_PYTHON"] = sys.executable
    try:
        return builder.getOrCreate()
    except Exception as exc:  # noqa: BLE001 - no Java, a bad master URL: one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WorkflowError(f"train.tuning.engine spark: cannot start Spark: {first}") from None


def _optimize_spark(name, storage, sampler, pruner, direction, objective: Objective, tuning,
                    n_jobs: int, resumed: bool, created):
    """The missing trials on Spark executors through MLflow's ``MlflowSparkStudy``."""
    spark_session(tuning.spark_master)
    from mlflow.pyspark.optuna.study import MlflowSparkStudy

    study = MlflowSparkStudy(name, storage, sampler=sampler, pruner=pruner,
                             mlflow_tracking_uri=objective.tracking_uri,
                             direction=None if resumed else direction)
    if not resumed:
        created(study._study_id, study._study)
    else:
        _requeue_interrupted(study._study)
    remaining = _remaining(study._study, tuning)
    if remaining:
        jobs = min(remaining, n_jobs if n_jobs > 0 else remaining)
        try:
            study.optimize(objective, n_trials=remaining, timeout=tuning.timeout, n_jobs=jobs,
                           catch=(TrialFailed,))
        except Exception as exc:
            from mlflow.exceptions import ExecutionException

            if not isinstance(exc, ExecutionException):
                raise
            raise WorkflowError(f"tuning on Spark: {str(exc).splitlines()[0]}") from None
    return study._study, remaining


# ------------------------------------------------------------------------------ the record
def log_study_plots(study, folder: str) -> dict[str, str]:
    """The optimization history and parameter importances as PNG files in ``folder``.

    Returns:
        file name -> path of the plots that could be drawn (importances need two or more
        completed trials with a varying parameter).
    """
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    out = {}
    for file, draw in (("optimization_history.png", ovm.plot_optimization_history),
                       ("param_importances.png", ovm.plot_param_importances)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = draw(study)
        except Exception as exc:  # noqa: BLE001 - a plot that cannot be drawn is left out
            _logger.info("tuning: %s not drawn: %s", file, str(exc).splitlines()[0][:200])
            continue
        fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
        fig.tight_layout()
        path = os.path.join(folder, file)
        fig.savefig(path, dpi=100)
        plt.close(fig)
        out[file] = path
    return out


def with_absolute_refs(objective: Objective) -> Objective:
    """The objective with the user's references absolute (workers may run elsewhere)."""
    from projects.prepare import Preprocessing
    from projects.train import _absolute

    types = objective.types
    if isinstance(types, Preprocessing):
        types = dataclasses.replace(types, features=tuple(map(_absolute, types.features)))
    custom = tuple(dataclasses.replace(m, function=_absolute(m.function))
                   for m in metrics.METRICS.values() if m.function is not None)
    return dataclasses.replace(objective, types=types, custom=custom)
