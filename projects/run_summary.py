"""What the workflow (parent) run says about itself: params, summary figures, or its failure.

The params are the settings used, under the names ``-P`` gives them; the summary puts the
figures a data scientist compares (the best candidate's validation metrics, the test metrics,
the version) on the workflow run; a failed run is named as failed, with ``mlops.error`` and a
note. Mixed into :class:`projects.workflow.Workflow`.
"""

from __future__ import annotations

import logging
import time

from core import names
from projects.presentation import data_name, failed_run_name, failure_note, workflow_run_name

_logger = logging.getLogger(__name__)

#: Params whose ``-P`` value may differ from the value used (``auto`` resolved, ``''`` kept
#: as the settings' value): the value used is logged beside it as ``effective_<name>``.
OWN_PARAMS = frozenset({"task", "metric", "positive_class", "model_name", "auto_champion",
                        "impute", "outliers", "test_size", "val_size", "seed", "n_jobs",
                        "estimators", "source", "target", "profile"})


class RunSummary:
    """The workflow run's params, summary and failure record, mixed into the step chain."""

    def _effective_params(self) -> dict[str, str]:
        """The settings the run used, under the names ``-P`` gives them (never ``''``).

        The task, the metric and the positive class are added once the steps decide them
        (``auto`` until then).
        """
        from core.redaction import redact_url

        s = self.settings
        out = {
            "profile": s.profile,
            "source": redact_url(s.data.source)[:500],
            "target": s.data.target,
            "impute": s.clean.impute,
            "outliers": s.clean.outliers,
            "outlier_iqr": s.clean.outlier_iqr,
            "test_size": s.split.test_size,
            "val_size": s.split.val_size,
            "seed": s.split.seed,
            "estimators": ",".join(dict.fromkeys(c.estimator for c in s.train.candidates)),
            "n_jobs": s.train.n_jobs,
            "model_name": s.register.model_name,
            "model_name_from": self.model_name_from,
            "auto_champion": {None: "auto", True: "true", False: "false"}[
                s.register.auto_champion],
        }
        for key, value in (("table", s.data.table), ("settings", self.settings_file)):
            if value:
                out[key] = str(value)[:500]
        if s.data.task != "auto":
            out["task"] = s.data.task
        if s.metric != "auto":
            out["metric"] = s.metric
        train = self.outcomes.get("train")
        if train is not None and train.tags.get(names.POSITIVE_CLASS_TAG) is not None:
            out["positive_class"] = train.tags[names.POSITIVE_CLASS_TAG]
        return {k: str(v) for k, v in out.items()}

    def _log_params(self, params: dict[str, str]) -> None:
        """Log params on the workflow run; a name already logged keeps its value.

        MLflow refuses to change a param. A name ``mlflow run`` logged with the value the user
        typed (``task=auto``) gets the value used beside it, as ``effective_<name>``.
        """
        from mlflow.entities import Param

        new = {}
        for key, value in params.items():
            if key not in self._parent_params:
                new[key] = value
            elif self._parent_params[key] != value and key in OWN_PARAMS:
                new[f"effective_{key}"] = value
        new = {k: v for k, v in new.items() if k not in self._parent_params}
        if new:
            self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in new.items()])
            self._parent_params.update(new)

    def _record_failure(self, exc: Exception) -> None:
        """Say on the workflow run why it failed: its name, ``mlops.error`` and a note.

        The steps and candidate runs that finished stay as they are (the next run reuses
        them). Nothing is written when the tracking server is what failed (each write would
        wait for it), and a write that fails never hides the failure itself.
        """
        from core.connection import unreachable
        from core.errors import classify, one_line

        if unreachable(exc):
            return
        try:
            from mlflow.entities import RunTag

            found = classify(exc)
            error = one_line(found[1] if found else f"{type(exc).__name__}: {exc}", 5000)
            finished = {step: o.run_id for step, o in self.outcomes.items()}
            data = self.settings.data
            tags = {
                names.ERROR_TAG: error,
                names.FAILED_STEP_TAG: self._step or "",
                "mlflow.note.content": failure_note(error, self._step, finished,
                                                    self.experiment_id),
                "mlflow.runName": failed_run_name(data_name(data.source, data.table),
                                                  self._step),
                **{names.step_run_tag(step): run_id for step, run_id in finished.items()},
            }
            self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
            self._log_params(self._effective_params())
        except Exception as write:  # noqa: BLE001 - the failure is what the user must see
            _logger.warning("the workflow run's failure could not be recorded: %s",
                            one_line(str(write)))

    def _summarise(self):
        """Put the figures a data scientist compares on the workflow run itself."""
        from mlflow.entities import Metric, Param, RunTag

        from core.redaction import redact_url
        from projects.artifacts import link_model

        self._log_params(self._effective_params())
        # data_source as before (a password in a database URL never shown)
        params, metrics, tags = {"profile": self.settings.profile,
                                 "data_source": redact_url(self.settings.data.source)[:500]
                                 }, {}, {}
        for step, outcome in self.outcomes.items():
            tags[names.step_run_tag(step)] = outcome.run_id
            tags[names.step_reused_tag(step)] = str(outcome.reused).lower()
        if "train" in self.outcomes:
            params.update({k: v for k, v in self.outcomes["train"].params.items()})
            metrics.update(self.outcomes["train"].metrics)
        if "evaluate" in self.outcomes:
            metrics.update(self.outcomes["evaluate"].metrics)
        if "ingest" in self.outcomes:
            digest = self.outcomes["ingest"].tags.get(names.DATA_DIGEST_TAG, "")
            tags[names.DATA_DIGEST_TAG] = digest
        if "register" in self.outcomes:
            tags[names.MODEL_VERSION_TAG] = self.outcomes["register"].tags.get(
                names.MODEL_VERSION_TAG, "")
        train = self.outcomes.get("train")
        if train is not None:
            # the best candidate's validation metrics under the candidates' names: the chart
            # view plots workflow runs and candidates on one axis
            metrics.update({k.removeprefix("best_"): v for k, v in train.metrics.items()
                            if k.startswith("best_val_")})
            tags[names.BEST_ESTIMATOR_TAG] = train.tags.get(names.BEST_ESTIMATOR_TAG, "")
            model_uri = train.tags.get(names.MODEL_URI_TAG, "")
            if train.reused and model_uri.startswith("models:/"):
                # a reused model was logged by an earlier workflow run: list it here too
                link_model(self.client, self.run_id, model_uri.removeprefix("models:/"))
        data = self.settings.data
        tags["mlflow.runName"] = workflow_run_name(
            data_name(data.source, data.table), train.params.get("best_estimator") if train
            else None, self.settings.metric, metrics)
        existing = self._parent_params
        now = int(time.time() * 1000)
        params = {k: str(v) for k, v in params.items() if k not in existing}
        self.client.log_batch(
            self.run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
            params=[Param(k, v) for k, v in params.items()],
            tags=[RunTag(k, str(v)) for k, v in tags.items()],
        )
        existing.update(params)
        self._log_parent_datasets()

    def _log_parent_datasets(self) -> None:
        """The splits the model was fitted and tested on, as the workflow run's dataset inputs.

        Re-logged from the prepare run's own inputs (no data is read): the runs table's
        Dataset column of the workflow run names them.
        """
        prepare = self.outcomes.get("prepare")
        if prepare is None:
            return
        inputs = prepare.inputs
        if inputs is None:
            inputs = self.client.get_run(prepare.run_id).inputs
        wanted = {"training", "testing"}
        datasets = [d for d in (inputs.dataset_inputs if inputs else [])
                    if any(t.key == "mlflow.data.context" and t.value in wanted for t in d.tags)]
        if datasets:
            self.client.log_inputs(self.run_id, datasets=datasets)
