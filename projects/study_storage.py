"""The study's storage: MLflow's :class:`~mlflow.optuna.storage.MlflowStorage`, each run read once.

What is stored is MLflow's (the same runs, tags, params and metrics: MLflow's storage, or
its Spark study, reads and resumes it); what changes is how often it is read. Optuna reads
every trial of the study several times a trial (the sampler, the pruner, the trial's own
params), and MLflow's storage reads each one back from the tracking store every time: a
dozen ``get_run`` and a metric history a trial, then four requests per trial of the study
on every listing, quadratic in the trials. Here:

- a trial this process runs is mirrored as it writes it (its params, attributes,
  intermediate values and state are queued to the store as MLflow queues them, and sent
  in one batch when the trial ends, before its state: MLflow's order);
- a listing is one search: a run's tags, params and metrics come with it; the history of
  intermediate values is read only for a run that has some;
- a finished trial is kept: it no longer changes;
- the study's trials are searched again at most every ``refresh`` seconds (other processes'
  trials: the local engine's workers, Spark's executors); a study only this process runs
  (``refresh=None``) is read once, when it is loaded. Optuna's samplers and pruners already
  take trials as other processes left them a moment ago, and a trial this process ends is
  in the next listing at once.
"""

from __future__ import annotations

import copy
import datetime
import json
import time

from mlflow.entities import Metric, Param, RunTag
from mlflow.optuna.storage import (
    MlflowStorage,
    mlflow_optuna_status_map,
    optuna_mlflow_status_map,
)
from optuna.distributions import (
    check_distribution_compatibility,
    distribution_to_json,
    json_to_distribution,
)
from optuna.trial import FrozenTrial, TrialState


class KeptStorage(MlflowStorage):
    """MLflow's storage with the study's trials kept in memory (see the module).

    Args:
        refresh: seconds a listing of the study's trials is reused (None: only this process
            runs the study's trials: read once).
        share: ``(i, n)``: this process is worker ``i`` of ``n`` and claims only the enqueued
            trials whose number is ``i`` modulo ``n`` (workers started together would all
            claim the first one: MLflow's claim is a read, then a write).
    """

    def __init__(self, experiment_id: str, *, refresh: float | None = 1.0,
                 share: tuple[int, int] | None = None, **kwargs):
        super().__init__(experiment_id, **kwargs)
        self._refresh = refresh
        self._share = share
        self._kept: dict[str, FrozenTrial] = {}  # finished trials, and the ones run here
        self._mine: set[str] = set()  # trials running in this process
        self._listing: dict[str, dict[str, FrozenTrial]] = {}  # study -> trial -> as read
        self._listed: dict[str, float] = {}  # study -> when it was last searched
        self._study_of: dict[str, str] = {}  # trial -> study
        self._numbers: dict[str, int] = {}  # study -> trials numbered (a study run here)
        self._directions: dict[str, list] = {}

    def __getstate__(self):
        state = super().__getstate__()
        # another process runs none of this one's trials and lists the study itself
        state.update(_kept={k: t for k, t in self._kept.items() if t.state.is_finished()},
                     _mine=set(), _listing={}, _listed={}, _numbers={})
        return state

    def only_here(self) -> None:
        """From now on only this process runs the study's trials: read it once more, then never."""
        self._refresh = None
        self._listed.clear()

    def reread(self) -> None:
        """The next listing searches the store (other processes ran trials)."""
        self._listed.clear()

    # ---- the study
    def get_study_directions(self, study_id):
        """Read once: a study's directions never change."""
        if study_id not in self._directions:
            self._directions[study_id] = super().get_study_directions(study_id)
        return list(self._directions[study_id])

    # ---- a trial run here: written as MLflow writes it, mirrored
    def create_new_trial(self, study_id, template_trial=None):
        """MLflow's writes; the trial is mirrored from here on."""
        self._flush_batch(study_id)
        if template_trial is not None:
            frozen = copy.deepcopy(template_trial)
        else:
            frozen = FrozenTrial(
                trial_id=-1, number=-1, state=TrialState.RUNNING, params={},
                distributions={}, user_attrs={}, system_attrs={}, value=None,
                intermediate_values={}, datetime_start=datetime.datetime.now(),
                datetime_complete=None)
        directions = json.dumps({k: distribution_to_json(d)
                                 for k, d in frozen.distributions.items()})
        # a new run is RUNNING: MLflow's update to RUNNING that follows changes nothing
        run = self._mlflow_client.create_run(experiment_id=self._experiment_id,
                                             tags={"param_directions": directions})
        trial_id = run.info.run_id
        self._queue_batch_operation(trial_id, tags=[RunTag("mlflow.parentRunId", study_id)])
        # the trial's number: its place in the study's history of trial ids (MLflow's)
        hash_id = float(hash(trial_id))
        self._queue_batch_operation(study_id, metrics=[
            Metric("trial_id", hash_id, int(time.time() * 1000), 1)])
        self._flush_batch(study_id)
        if self._refresh is None and study_id in self._numbers:
            number = self._numbers[study_id]  # nobody else numbers this study's trials
        else:
            history = self._mlflow_client.get_metric_history(study_id, "trial_id")
            number = next((i for i, m in enumerate(history) if m.value == hash_id), -1)
        self._numbers[study_id] = number + 1
        self._queue_batch_operation(trial_id, tags=[RunTag("numbers", str(number))])
        state = frozen.state
        if state.is_finished():
            self._mlflow_client.set_terminated(trial_id,
                                               status=optuna_mlflow_status_map[state])
        elif state != TrialState.RUNNING:
            self._mlflow_client.update_run(trial_id, status=optuna_mlflow_status_map[state])
        now = int(time.time() * 1000)
        metrics = _value_metrics(frozen.values, now)
        metrics += [Metric("intermediate_value", v, now, int(k))
                    for k, v in frozen.intermediate_values.items()]
        tags = [RunTag(f"user_{k}", json.dumps(v)) for k, v in frozen.user_attrs.items()]
        tags += [RunTag(f"sys_{k}", json.dumps(v)) for k, v in frozen.system_attrs.items()]
        tags += [RunTag(f"param_internal_val_{k}",
                        json.dumps(frozen.distributions[k].to_internal_repr(v)))
                 for k, v in frozen.params.items()]
        self._queue_batch_operation(
            trial_id, metrics=metrics, tags=tags,
            params=[Param(k, v) for k, v in frozen.params.items()])
        frozen.number = number
        frozen._trial_id = trial_id
        frozen.datetime_start = datetime.datetime.fromtimestamp(run.info.start_time / 1000)
        self._study_of[trial_id] = study_id
        self._listing.setdefault(study_id, {})[trial_id] = frozen
        if state == TrialState.RUNNING:
            # an enqueued (WAITING) trial is run by whichever process claims it
            self._kept[trial_id] = frozen
            self._mine.add(trial_id)
        return trial_id

    def _running_here(self, trial_id):
        trial = self._kept.get(trial_id) if trial_id in self._mine else None
        if trial is not None:
            self.check_trial_is_updatable(trial_id, trial.state)
        return trial

    def set_trial_param(self, trial_id, param_name, param_value_internal, distribution):
        """Queued as MLflow queues it; a trial run here is checked against its mirror."""
        trial = self._running_here(trial_id)
        if trial is None:
            return super().set_trial_param(trial_id, param_name, param_value_internal,
                                           distribution)
        if param_name in trial.distributions:
            check_distribution_compatibility(trial.distributions[param_name], distribution)
        trial.distributions = {**trial.distributions, param_name: distribution}
        trial.params = {**trial.params,
                        param_name: distribution.to_external_repr(param_value_internal)}
        directions = {k: distribution_to_json(d) for k, d in trial.distributions.items()}
        self._queue_batch_operation(
            trial_id,
            params=[Param(param_name, distribution.to_external_repr(param_value_internal))],
            tags=[RunTag(f"param_internal_val_{param_name}", json.dumps(param_value_internal)),
                  RunTag("param_directions", json.dumps(directions))])
        return None

    def set_trial_intermediate_value(self, trial_id, step, intermediate_value):
        """Queued (MLflow's); mirrored."""
        trial = self._running_here(trial_id)
        if trial is not None:
            trial.intermediate_values = {**trial.intermediate_values, step: intermediate_value}
        super().set_trial_intermediate_value(trial_id, step, intermediate_value)

    def set_trial_user_attr(self, trial_id, key, value):
        """Queued (MLflow's); mirrored."""
        trial = self._running_here(trial_id)
        if trial is not None:
            trial.user_attrs = {**trial.user_attrs, key: value}
        super().set_trial_user_attr(trial_id, key, value)

    def set_trial_system_attr(self, trial_id, key, value):
        """Queued (MLflow's); mirrored."""
        trial = self._running_here(trial_id)
        if trial is not None:
            trial.system_attrs = {**trial.system_attrs, key: value}
        super().set_trial_system_attr(trial_id, key, value)

    def queue_run_data(self, trial_id, metrics=(), tags=()):
        """The objective's own tags and metrics, sent with the trial's end (one batch)."""
        self._queue_batch_operation(trial_id, metrics=list(metrics), tags=list(tags))

    def set_trial_state_values(self, trial_id, state, values=None):
        """A trial run here: its queued data and values in one batch, then its state."""
        if state == TrialState.RUNNING:
            return self._claim(trial_id)
        trial = self._running_here(trial_id)
        if trial is None:
            done = super().set_trial_state_values(trial_id, state, values)
            self._kept.pop(trial_id, None)
            return done
        # the trial's data and its values in one request, before its state (MLflow's
        # order: nobody sees a finished trial without its values)
        self._queue_batch_operation(trial_id, metrics=_value_metrics(values,
                                                                    int(time.time() * 1000)))
        self._flush_batch(trial_id, raise_on_error=True)
        if state.is_finished():
            self._mlflow_client.set_terminated(trial_id, status=optuna_mlflow_status_map[state])
            trial.datetime_complete = datetime.datetime.now()
            self._mine.discard(trial_id)
        else:
            self._mlflow_client.update_run(trial_id, status=optuna_mlflow_status_map[state])
        trial.state = state
        trial.values = list(values) if values is not None else None
        return True

    def _claim(self, trial_id) -> bool:
        """An enqueued (WAITING) trial to run here: MLflow's check unless nobody else runs it."""
        study_id = self._study_of.get(trial_id)
        known = self._listing.get(study_id, {}).get(trial_id)
        if self._share and known is not None and known.number % self._share[1] != self._share[0]:
            return False  # another worker's
        if self._refresh is None and known is not None:
            if known.state != TrialState.WAITING:
                return False
            self._flush_batch(trial_id, raise_on_error=True)
            self._mlflow_client.update_run(trial_id, status="RUNNING")
        else:
            if not super().set_trial_state_values(trial_id, TrialState.RUNNING):
                return False
            run = self._mlflow_client.get_run(trial_id)
            known = self._from_run(run)
            study_id = run.data.tags.get("mlflow.parentRunId")
            self._study_of[trial_id] = study_id
        known = copy.deepcopy(known)
        known.state = TrialState.RUNNING
        self._kept[trial_id] = known
        self._mine.add(trial_id)
        self._listing.setdefault(study_id, {})[trial_id] = known
        return True

    # ---- reads
    def get_trial(self, trial_id):
        """The mirror or the kept trial; else one ``get_run``."""
        trial = self._kept.get(trial_id)
        if trial is None:
            self._flush_batch(trial_id)
            trial = self._from_run(self._mlflow_client.get_run(trial_id))
        return copy.deepcopy(trial) if trial_id in self._mine else trial

    def get_trial_number_from_id(self, trial_id):
        """From :meth:`get_trial`."""
        return self.get_trial(trial_id).number

    def get_trial_param(self, trial_id, param_name):
        """From :meth:`get_trial`."""
        trial = self.get_trial(trial_id)
        return trial.distributions[param_name].to_internal_repr(trial.params[param_name])

    def get_trial_user_attrs(self, trial_id):
        """From :meth:`get_trial`."""
        return dict(self.get_trial(trial_id).user_attrs)

    def get_trial_system_attrs(self, trial_id):
        """From :meth:`get_trial`."""
        return dict(self.get_trial(trial_id).system_attrs)

    def get_all_trials(self, study_id, deepcopy=True, states=None):
        """The study's trials by number: searched at most every ``refresh`` seconds."""
        last = self._listed.get(study_id)
        if last is None or (self._refresh is not None
                            and time.monotonic() - last >= self._refresh):
            self._search(study_id)
        listing = self._listing[study_id]
        trials = [self._kept.get(i) or t for i, t in listing.items()]
        out = sorted((t for t in trials if states is None or t.state in states),
                     key=lambda t: t.number)
        return copy.deepcopy(out) if deepcopy else out

    def get_n_trials(self, study_id, states=None):
        """From :meth:`get_all_trials`."""
        return len(self.get_all_trials(study_id, deepcopy=False, states=states))

    def _search(self, study_id) -> None:
        # what is queued is in the store before the search (an enqueued trial, a finished
        # one); a trial running here is read from its mirror and sent when it ends
        with self._batch_lock:
            queued = [r for r in self._batch_queue if r not in self._mine]
        for run_id in queued:
            self._flush_batch(run_id)
        listing = self._listing.setdefault(study_id, {})
        token = None
        while True:
            page = self._mlflow_client.search_runs(
                [self._experiment_id], f"tags.mlflow.parentRunId='{study_id}'",
                max_results=1000, page_token=token)
            for run in page:
                trial_id = run.info.run_id
                self._study_of[trial_id] = study_id
                if trial_id not in self._kept:
                    listing[trial_id] = self._from_run(run)
                else:
                    listing[trial_id] = self._kept[trial_id]
            token = page.token
            if not token:
                break
        if self._refresh is None and study_id not in self._numbers:
            self._numbers[study_id] = len(self._mlflow_client.get_metric_history(
                study_id, "trial_id"))
        self._listed[study_id] = time.monotonic()

    def _from_run(self, run) -> FrozenTrial:
        """A trial from its run, as MLflow's storage reads it (kept when finished)."""
        tags, metrics = run.data.tags, run.data.metrics
        distributions = {k: json_to_distribution(d)
                         for k, d in json.loads(tags["param_directions"]).items()}
        params = {k[19:]: distributions[k[19:]].to_external_repr(float(json.loads(v)))
                  for k, v in tags.items() if k.startswith("param_internal_val_")}
        values = None
        if "value" in metrics:
            values = [metrics["value"]]
        if "value_0" in metrics:
            values = [metrics[f"value_{i}"] for i in range(len(metrics))
                      if f"value_{i}" in metrics]
        intermediate = {}
        if "intermediate_value" in metrics:
            intermediate = {m.step: m.value for m in self._mlflow_client.get_metric_history(
                run.info.run_id, "intermediate_value")}
        end = run.info.end_time
        trial = FrozenTrial(
            trial_id=run.info.run_id, number=int(tags.get("numbers", 0)),
            state=mlflow_optuna_status_map[run.info.status], value=None, values=values,
            datetime_start=datetime.datetime.fromtimestamp(run.info.start_time / 1000),
            datetime_complete=datetime.datetime.fromtimestamp(end / 1000) if end else None,
            params=params, distributions=distributions,
            user_attrs={k[5:]: json.loads(v) for k, v in tags.items() if k.startswith("user_")},
            system_attrs={k[4:]: json.loads(v) for k, v in tags.items()
                          if k.startswith("sys_")},
            intermediate_values=intermediate)
        if trial.state.is_finished():
            self._kept[run.info.run_id] = trial
        return trial


def _value_metrics(values, now: int) -> list:
    """The trial's objective values as MLflow's storage logs them."""
    if values is None:
        return []
    if len(values) > 1:
        return [Metric(f"value_{i}", v, now, 1) for i, v in enumerate(values)]
    return [Metric("value", values[0], now, 1)]
