"""The model steps' runs: train and evaluate as MLflow runs of the step chain.

``train`` sweeps the candidates (one nested run each; a failed one ends FAILED and the sweep
goes on) and logs the best model; ``evaluate`` scores it on the test split, plots, and compares
it with the champion on the same rows. The pure work is in :mod:`projects.train` and
:mod:`projects.evaluate`. Mixed into :class:`projects.workflow.Workflow`.
"""

from __future__ import annotations

import contextlib
import logging
import time

from core import names
from core.runs import run_with_status
from core.uris import run_uri, version_uri
from projects.cache_keys import STEP_TAG
from projects.errors import WorkflowError
from projects.presentation import candidate_run_name, data_name
from projects.result import StepOutcome

_logger = logging.getLogger(__name__)


class _CandidateFailed(Exception):
    """Ends a failed candidate's run FAILED without ending the sweep."""


class ModelSteps:
    """train → evaluate, mixed into the step chain."""

    def train(self) -> StepOutcome:
        """Sweep the candidates and log the best model."""
        s = self.settings
        metric = s.metric

        def compute(run_id):
            import mlflow

            from core import usercode
            from projects.artifacts import (
                input_example,
                link_model,
                log_dataset,
                log_model,
                schema_frame,
            )
            from projects.prepare import Preprocessing
            from projects.train import model_signature

            train = self._frame("train", "prepare", "splits/train.parquet")
            val = self._frame("val", "prepare", "splits/val.parquet")
            types = Preprocessing.from_settings(s)
            # the model's run names the data it was fitted on (monitoring compares against it)
            log_dataset(train, "train", "training", run_uri(
                self.outcomes["prepare"].run_id, "splits/train.parquet"), s.data.target)
            positive, positive_why = self._positive_class(train[s.data.target])
            if s.train.tuning is not None:
                best, study_metrics, study_params = self._tune(run_id, key, types, train, val,
                                                               positive)
            else:
                best, study_metrics, study_params = self._sweep(types, train, val, positive)
            self.model = best.model
            tidy = best.model.named_steps.get("tidy")
            dropped = dict(getattr(tidy, "dropped_", {}) or {})
            ids = dict(getattr(tidy, "identifiers_", {}) or {})
            if ids:
                _logger.info("columns %s left out of the features: identifiers (list them in "
                             "features.keep to use them)", ", ".join(map(repr, ids)))
            for column, why in dropped.items():
                if column not in ids:
                    _logger.warning("column %r dropped from the model: %s", column, why)
            start = time.perf_counter()
            X = train.drop(columns=[s.data.target])
            example = input_example(X)
            # the user's types: an integer column stays long (a column with missing values is
            # already float64, so double); nullable extension types become numpy ones. Which
            # columns may be missing: from every training row, and those the model never reads
            signature = model_signature(best.model, schema_frame(X), example)
            # the user's files go with the model: it loads without them here; its source run
            # is the workflow run (the runs table's Model column reads a logged model's
            # source run), the step run lists it among its outputs too
            info = log_model(best.model, example, signature, self.run_id,
                             [str(p) for p in usercode.files(s.user_code("train"))])
            self.timings["log_model"] = time.perf_counter() - start
            link_model(self.client, run_id, info.model_id)
            if dropped:
                mlflow.log_dict(dropped, "dropped_columns.json")
            binary = ({names.POSITIVE_CLASS_TAG: str(positive),
                       names.POSITIVE_CLASS_REASON_TAG: positive_why}
                      if positive is not None else {})
            return (
                {names.BEST_ESTIMATOR_TAG: best.estimator, names.MODEL_URI_TAG: info.model_uri,
                 **binary,
                 **({names.DROPPED_COLUMNS_TAG: ",".join(map(str, dropped))[:5000]}
                    if dropped else {})},
                {**{f"best_val_{k}": v for k, v in best.metrics.items()}, **study_metrics},
                {"best_estimator": best.estimator, "selection_metric": metric, **study_params,
                 **({"positive_class": str(positive)} if positive is not None else {}),
                 **{f"best_{k}": v for k, v in best.params.items()}},
            )

        key = self._key("train", self.outcomes["prepare"].key)
        return self._run_step("train", key, compute)

    def _sweep(self, types, train, val, positive):
        """The grid: every candidate fitted (one nested run each), the best picked."""
        import mlflow

        from projects.progress import progress
        from projects.train import expand_candidates, pick_best, train_candidates

        s = self.settings
        candidates = expand_candidates(s.train.candidates)
        start = time.perf_counter()
        with progress("train: candidates", len(candidates)) as advance:
            results = train_candidates(s.data.task, types, candidates, train, val,
                                       s.data.target, s.split.seed, s.train.n_jobs,
                                       on_done=lambda _res: advance(), positive=positive)
        self.timings["fit_predict_sweep"] = time.perf_counter() - start
        for res in results:
            # a failed candidate's run ends FAILED with its reason; the sweep goes on
            with contextlib.suppress(_CandidateFailed), run_with_status(
                run_name=candidate_run_name(res.estimator, res.params), nested=True,
                tags={STEP_TAG: "train.candidate", names.ESTIMATOR_TAG: res.estimator},
            ):
                mlflow.log_params({"estimator": res.estimator, **res.params})
                mlflow.log_metrics({**{f"val_{k}": v for k, v in res.metrics.items()},
                                    "fit_seconds": res.fit_seconds})
                if res.error:
                    mlflow.set_tag(names.ERROR_TAG, res.error[:5000])
                    raise _CandidateFailed(res.error)
        return pick_best(results, s.metric), {}, {"candidates": len(results)}

    def _tune(self, run_id, key, types, train, val, positive):
        """train.tuning: the study's trials (nested runs), the best trial fitted again here."""
        import tempfile

        import mlflow

        from projects import tuning, tuning_space
        from projects.presentation import candidate_run_name
        from projects.train import _absolute, fit_candidate

        s = self.settings
        tune = s.train.tuning
        space = tuning_space.build_space(s.train.candidates, s.data.task, s.split.seed)
        objective = tuning.with_absolute_refs(tuning.Objective(
            s.data.task, types, train, val, s.data.target, s.split.seed, s.metric, space,
            positive, pruning=tune.pruning, tracking_uri=mlflow.get_tracking_uri()))
        _logger.info("tuning: %d trial(s) of %s, engine %s, %s sampler seeded %d",
                     tune.n_trials, ", ".join(space.estimators), tune.engine, tune.sampler,
                     s.split.seed)
        first = tuning_space.grid_points(s.train.candidates, space, s.data.task, s.split.seed)
        study = tuning.run_study(self.client, self.experiment_id, run_id, key, objective, tune,
                                 s.train.n_jobs, s.split.seed, first)
        self.timings["tuning_study"] = study.seconds
        estimator, params = space.params(study.best_params)
        best = fit_candidate(s.data.task, objective.types, _absolute(estimator), params,
                             s.split.seed, train, val, s.data.target, objective.custom, positive)
        best.estimator = estimator
        if best.error:
            raise WorkflowError(f"tuning: the best trial ({best.label}) failed when fitted "
                                f"again: {best.error}")
        _logger.info("tuning: best %s, validation %s %.4g (%d complete, %d pruned, %d failed; "
                     "%d run now%s)", candidate_run_name(estimator, params), s.metric,
                     study.best_value, study.complete, study.pruned, study.failed, study.ran,
                     ", study resumed" if study.resumed else "")
        with tempfile.TemporaryDirectory() as folder:
            for path in tuning.log_study_plots(study.study, folder).values():
                mlflow.log_artifact(path, "plots")
        return best, {
            "study_best_value": study.best_value, "trials_complete": study.complete,
            "trials_pruned": study.pruned, "trials_failed": study.failed,
            "trials_run": study.ran, "study_seconds": study.seconds,
        }, {
            "tuning_engine": tune.engine, "tuning_trials": tune.n_trials,
            "tuning_sampler": tune.sampler, "study": study.study_name,
            "study_run": study.study_run_id,
        }

    def _positive_class(self, y) -> tuple[object | None, str]:
        """The positive class of a binary target and why (None: not a binary task).

        ``data.positive_class`` when set, else the minority class of the training target.

        Raises:
            WorkflowError: the setting names no class of the target (one line naming them).
        """
        from core import metrics

        s = self.settings.data
        classes = sorted(y.dropna().unique().tolist(), key=str)
        if s.task != "classification" or len(classes) != 2:
            if s.positive_class is not None:
                _logger.warning("data.positive_class=%s ignored: the task is not binary "
                                "classification", s.positive_class)
            return None, ""
        if s.positive_class is not None:
            try:
                positive = metrics.positive_class(classes, s.positive_class)
            except metrics.MetricError as exc:
                raise WorkflowError(f"data.positive_class: {exc}") from None
            why = "set in data.positive_class"
        else:
            positive = metrics.minority_class(y.dropna())
            why = (f"the minority class of the training target: {int((y == positive).sum())} "
                   f"of {int(y.notna().sum())} rows; data.positive_class chooses another")
        _logger.info("positive class %r (%s): f1 and roc_auc score it", positive, why)
        return positive, why

    def _load_model(self):
        if self.model is None:
            import mlflow

            self.model = mlflow.sklearn.load_model(self._model_uri())
        return self.model

    def evaluate(self) -> StepOutcome:
        """Score the best model on the test split, plot, compare with the champion."""
        s = self.settings
        champion = self._champion()
        self._champion_seen = str(champion.version) if champion is not None else None
        self._champion_is_this_model = (champion is not None
                                        and champion.source == self._model_uri())
        if self._champion_is_this_model:
            champion = None  # the champion is this very model: nothing to compare

        def compute(run_id):
            import matplotlib.pyplot as plt
            import mlflow

            from core.connection import unreachable
            from projects.evaluate import (
                champion_mismatch,
                compare_with_champion,
                evaluate_model,
                plot_evaluation,
            )

            test = self._frame("test", "prepare", "splits/test.parquet")
            if champion is not None:
                # data that lacks a column the champion requires is another model's: refused
                # before anything is scored or registered (one line naming the columns)
                name = s.register.model_name
                problem = champion_mismatch(
                    name, str(champion.version),
                    mlflow.models.get_model_info(version_uri(name, champion.version)).signature,
                    test.drop(columns=[s.data.target]),
                    data_name(s.data.source, s.data.table))
                if problem:
                    raise WorkflowError(problem)
            model = self._load_model()
            # the train step's positive class (its text; the model's class of that name)
            positive = self.outcomes["train"].tags.get(names.POSITIVE_CLASS_TAG)
            start = time.perf_counter()
            metrics = evaluate_model(s.data.task, model, test, s.data.target, positive)
            self.timings["evaluate_predict"] = time.perf_counter() - start
            figures = plot_evaluation(s.data.task, model, test, s.data.target, positive)
            for name, fig in figures.items():
                mlflow.log_figure(fig, f"plots/{name}")
                plt.close(fig)
            tags = {names.MODEL_URI_TAG: self._model_uri()}
            if champion is not None:
                tags[names.CHAMPION_VERSION_TAG] = str(champion.version)
                try:
                    # the version read above, not the alias: it may move meanwhile
                    champ_model = mlflow.sklearn.load_model(
                        version_uri(s.register.model_name, champion.version))
                    champ = evaluate_model(s.data.task, champ_model, test, s.data.target,
                                           positive)
                    metrics.update(compare_with_champion(s.metric, metrics, champ))
                    tags[names.CHAMPION_COMPARISON_TAG] = "scored on this test set"
                except Exception as exc:  # noqa: BLE001 - an unscoreable champion is reported
                    if unreachable(exc):  # not the champion's fault: the workflow stops
                        raise
                    detail = " ".join(str(exc).split()) or type(exc).__name__
                    tags[names.CHAMPION_COMPARISON_TAG] = f"not comparable: {detail}"[:500]
                    _logger.warning("champion v%s could not be scored on this test set: %s",
                                    champion.version, detail[:300])
            return tags, metrics, {}

        up = self.outcomes["train"].key + f"|champion={champion.version if champion else None}"
        return self._run_step("evaluate", self._key("evaluate", up), compute)

    def _champion(self):
        """The champion version as the registry has it now (None: no champion yet)."""
        from core.models import ModelNotFound, resolve_model
        from core.uris import ModelRef

        s = self.settings.register
        try:
            # the one resolver: a champion move recorded but never applied is applied first
            ref = ModelRef(name=s.model_name, alias=s.champion_alias)
            return resolve_model(self.client, ref).model_version
        except ModelNotFound:
            return None
