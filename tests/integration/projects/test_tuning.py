"""train.tuning end to end, in this process on the test's tracking store (real MLflow runs).

The data is scikit-learn's bundled breast cancer table (``bundled:breast_cancer``). One story
keeps the budget small: the grid on four fits, then a tuned run of four trials (the grid's
points first) interrupted (Ctrl-C) in its third trial and started again: the study resumes from
its two finished trials and runs the interrupted point again, the trials are runs under the
study under the train run, and the best validation metric is at least the grid's on the same
number of fits. Started once more unchanged, train is reused.
"""

from __future__ import annotations

import mlflow
import pytest

from core.connection import connect
from core.settings import load_settings
from projects import tuning, tuning_space
from projects.workflow import Workflow

pytestmark = pytest.mark.integration

LINEAR = "train.candidates=[{estimator: linear, grid: {C: [0.01, 0.1, 1.0, 10.0]}}]"
SERIAL = "train.n_jobs=1"  # in this process: no worker start-up in the budget
TUNED = ["train.tuning.n_trials=4"]


def _run(*overrides: str):
    settings = load_settings(overrides=["experiment=tuning", LINEAR, SERIAL, *overrides])
    return Workflow(settings, connect()).run("train")


def _children(client, experiment_id: str, parent_id: str):
    return client.search_runs([experiment_id],
                              filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")


def test_a_tuned_run_resumes_after_an_interrupt_and_matches_the_grid(monkeypatch):
    client = mlflow.MlflowClient()
    grid = _run().steps["train"]
    assert grid.params["candidates"] == 4

    fit = tuning.Objective._fit
    calls = []

    def interrupted_third(self, trial, estimator, params):
        calls.append(trial.number)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return fit(self, trial, estimator, params)

    monkeypatch.setattr(tuning.Objective, "_fit", interrupted_third)
    with pytest.raises(KeyboardInterrupt):
        _run(*TUNED)
    monkeypatch.setattr(tuning.Objective, "_fit", fit)
    experiment_id = client.get_experiment_by_name("tuning").experiment_id
    [study] = client.search_runs([experiment_id], filter_string="tags.`mlops.step` = 'train.study'")
    assert study.info.status == "KILLED"
    first = {r.info.run_id: r for r in _children(client, experiment_id, study.info.run_id)}
    # the grid's four points are the first trials: the fourth still waits (SCHEDULED)
    assert sorted(r.info.status for r in first.values()) == [
        "FAILED", "FINISHED", "FINISHED", "SCHEDULED"]

    result = _run(*TUNED)
    train = result.steps["train"]
    assert train.params["study"] == study.data.tags["mlflow.runName"]  # the same study
    assert train.metrics["trials_run"] == 2  # only the two it lacked
    assert train.metrics["trials_complete"] == 4
    trials = _children(client, experiment_id, study.info.run_id)
    finished = [r for r in trials if r.info.status == "FINISHED"]
    assert len(finished) == 4
    # the two finished before the interrupt are the same runs, not run again
    assert {i for i, r in first.items() if r.info.status == "FINISHED"} <= {
        r.info.run_id for r in finished}
    # the grid's points, the interrupted one enqueued again: the study holds the grid's best
    assert sorted(float(r.data.params["C"]) for r in finished) == [0.01, 0.1, 1.0, 10.0]
    [stopped] = [r for r in trials if r.info.status == "FAILED"]
    assert stopped.data.tags["mlops.error"].startswith("interrupted")
    # the study now sits under this train run; each trial is named by its params, with them
    # and the selection metric on the validation split
    assert client.get_run(study.info.run_id).data.tags["mlflow.parentRunId"] == train.run_id
    for run in finished:
        assert run.data.tags["mlflow.runName"] == f"linear C={float(run.data.params['C']):.4g}"
        assert run.data.tags["mlops.step"] == "train.trial"
        assert 0.5 < run.data.metrics["val_roc_auc"] <= 1.0
    best_trial = max(r.data.metrics["val_roc_auc"] for r in finished)
    assert train.metrics["study_best_value"] == pytest.approx(best_trial)
    # the best trial's model is the one logged: fitted again, the same validation metric
    assert train.metrics["best_val_roc_auc"] == pytest.approx(best_trial)
    assert train.metrics["best_val_roc_auc"] >= grid.metrics["best_val_roc_auc"]
    plots = {f.path for f in client.list_artifacts(train.run_id, "plots")}
    assert "plots/optimization_history.png" in plots

    again = _run(*TUNED)
    assert again.steps["train"].reused
    assert again.steps["train"].run_id == train.run_id



def test_failed_and_pruned_trials_end_failed_and_killed_with_their_reason():
    from optuna.trial import TrialState
    from sklearn.datasets import load_wine

    from core.settings import Candidate, TuningSettings
    from projects.prepare import feature_types

    client = mlflow.MlflowClient()
    experiment_id = client.create_experiment("trials")
    parent = client.create_run(experiment_id).info.run_id
    df = load_wine(as_frame=True).frame
    train, val = df.iloc[::2], df.iloc[1::2]
    # min_samples_split 1 is refused by the forest (at least 2): that trial fails, the study
    # goes on
    cand = Candidate.model_validate({"estimator": "random_forest", "space": {
        "n_estimators": {"int": [8, 40]}, "max_depth": {"int": [1, 4]},
        "min_samples_split": {"int": [1, 4]}}})
    space = tuning_space.build_space([cand], "classification", 0)
    objective = tuning.Objective("classification", feature_types(df, "target"), train, val,
                                 "target", 0, "accuracy", space)
    outcome = tuning.run_study(client, experiment_id, parent, "k" * 24, objective,
                               TuningSettings(n_trials=8), 1, 0)
    assert outcome.complete + outcome.pruned + outcome.failed == 8
    runs = {r.info.run_id: r for r in _children(client, experiment_id, outcome.study_run_id)}
    states = {t._trial_id: t.state for t in outcome.study.trials}
    failed = [runs[i] for i, s in states.items() if s == TrialState.FAIL]
    pruned = [runs[i] for i, s in states.items() if s == TrialState.PRUNED]
    assert failed and pruned, (outcome.failed, outcome.pruned)
    for run in failed:
        assert run.info.status == "FAILED"
        assert run.data.params["min_samples_split"] == "1"
        assert run.data.tags["mlops.error"].startswith("InvalidParameterError: ")
    for run in pruned:
        assert run.info.status == "KILLED"
        assert run.data.tags["mlops.pruned"].startswith("pruned at n_estimators=")
        assert "behind the median" in run.data.tags["mlops.pruned"]
    best = max((r for r in runs.values() if r.info.status == "FINISHED"),
               key=lambda r: r.data.metrics["val_accuracy"])
    assert outcome.best_value == pytest.approx(best.data.metrics["val_accuracy"])


def test_grid_points_a_timeout_left_unrun_leave_no_scheduled_runs():
    from sklearn.datasets import load_wine

    from core.settings import Candidate, TuningSettings
    from projects.prepare import feature_types

    client = mlflow.MlflowClient()
    experiment_id = client.create_experiment("timeout")
    parent = client.create_run(experiment_id).info.run_id
    df = load_wine(as_frame=True).frame
    cand = Candidate.model_validate({"estimator": "linear", "grid": {"C": [0.1, 1.0, 10.0]}})
    space = tuning_space.build_space([cand], "classification", 0)
    first = tuning_space.grid_points([cand], space, "classification", 0)
    objective = tuning.Objective("classification", feature_types(df, "target"), df.iloc[::2],
                                 df.iloc[1::2], "target", 0, "accuracy", space)
    # no trial starts after 10 ms: the first grid point runs, the other two never do
    outcome = tuning.run_study(client, experiment_id, parent, "t" * 24, objective,
                               TuningSettings(n_trials=3, timeout=0.01), 1, 0, first)
    assert outcome.complete == 1
    runs = _children(client, experiment_id, outcome.study_run_id)
    assert [(r.info.status, r.data.params["C"]) for r in runs] == [("FINISHED", "0.1")]
