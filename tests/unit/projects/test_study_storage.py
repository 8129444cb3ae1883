"""The study's storage: what it stores is MLflow's MlflowStorage's, read far less often.

Differential: the same seeded study (enqueued points, suggestions of every kind, intermediate
values, pruned and failed trials, user attributes) run once through MLflow's own
``mlflow.optuna.storage.MlflowStorage`` and once through ours stores the same runs; a study ours
started is resumed by MLflow's storage and the other way round.
"""

from __future__ import annotations

import mlflow
import optuna
import pytest
from mlflow.optuna.storage import MlflowStorage

from projects.study_storage import KeptStorage


def _objective(trial):
    x = trial.suggest_float("x", 0.01, 10.0, log=True)
    n = trial.suggest_int("n", 1, 6)
    kind = trial.suggest_categorical("kind", ["a", "b"])
    trial.set_user_attr("label", f"{kind}{n}")
    if n == 6:
        raise ValueError("six is refused")
    value = 0.0
    for step in range(3):
        value = (x - 3.0) ** 2 / (step + 1) + n + (kind == "b")
        trial.report(value, step)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return value


def _run(storage, name: str, trials: int):
    study = optuna.create_study(
        study_name=name, storage=storage, direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=3, n_startup_trials=3),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0))
    study.enqueue_trial({"x": 3.0, "n": 1, "kind": "a"})
    study.enqueue_trial({"x": 0.5, "n": 6, "kind": "b"})  # fails
    study.optimize(_objective, n_trials=trials, catch=(ValueError,))
    storage.flush_all_batches()
    return study


def _stored(client, experiment_id: str, study_run_id: str) -> dict:
    """Each trial's run as stored, by number, without its ids and times."""
    out = {}
    for run in client.search_runs([experiment_id],
                                  f"tags.mlflow.parentRunId = '{study_run_id}'"):
        tags = {k: v for k, v in run.data.tags.items()
                if k not in ("mlflow.parentRunId", "mlflow.runName")}
        history = client.get_metric_history(run.info.run_id, "intermediate_value")
        out[int(tags["numbers"])] = (run.info.status, tags, run.data.params, run.data.metrics,
                                     sorted((m.step, m.value) for m in history))
    return out


def _frozen(trials) -> dict:
    return {t.number: (t.state, t.params, t.values, t.intermediate_values, t.user_attrs,
                       t.system_attrs) for t in trials}


def test_a_study_stores_what_mlflows_storage_stores_and_each_resumes_the_other(monkeypatch):
    client = mlflow.MlflowClient()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    stock_exp, ours_exp = client.create_experiment("stock"), client.create_experiment("ours")
    stock = _run(MlflowStorage(stock_exp), "s", 6)
    ours_storage = KeptStorage(ours_exp, refresh=None)
    reads = {"get_run": 0, "search_runs": 0}
    for name in reads:
        real = getattr(mlflow.MlflowClient, name)

        def counted(self, *args, _name=name, _real=real, **kwargs):
            reads[_name] += 1
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(mlflow.MlflowClient, name, counted)
    ours = _run(ours_storage, "s", 6)
    # MLflow's storage: several get_run per trial and a search of the study per listing
    assert reads["get_run"] <= 3, reads  # the study's name and directions when it is made
    assert reads["search_runs"] <= 2, reads  # the study by name, its trials once
    monkeypatch.undo()

    stock_runs = _stored(client, stock_exp, stock._study_id)
    ours_runs = _stored(client, ours_exp, ours._study_id)
    assert sorted(ours_runs) == list(range(6))
    assert ours_runs == stock_runs
    states = {s for s, *_ in ours_runs.values()}
    assert {"FINISHED", "KILLED", "FAILED"} <= states  # complete, pruned and failed trials
    assert _frozen(ours.trials) == _frozen(stock.trials)

    # resumed by MLflow's storage: numbered on, ours' trials read as they were
    theirs = optuna.load_study(study_name="s", storage=MlflowStorage(ours_exp),
                               sampler=optuna.samplers.RandomSampler(seed=1))
    assert _frozen(theirs.trials) == _frozen(ours.trials)
    theirs.optimize(_objective, n_trials=2, catch=(ValueError,))
    theirs._storage.flush_all_batches()
    resumed = _frozen(theirs.trials)
    assert sorted(resumed) == list(range(8))
    # and by ours again, its listing read once: MLflow's trials in it
    again = optuna.load_study(study_name="s", storage=KeptStorage(ours_exp, refresh=None),
                              sampler=optuna.samplers.RandomSampler(seed=2))
    again.optimize(_objective, n_trials=1, catch=(ValueError,))
    again._storage.flush_all_batches()
    final = MlflowStorage(ours_exp).get_all_trials(ours._study_id)
    assert sorted(t.number for t in final) == list(range(9))
    assert _frozen(t for t in final if t.number < 8) == resumed


@pytest.mark.parametrize("refresh", [None, 0.0])
def test_a_trial_run_here_is_listed_at_once_and_others_trials_as_searched(refresh):
    client = mlflow.MlflowClient()
    exp = client.create_experiment("listing")
    storage = KeptStorage(exp, refresh=refresh)
    study = optuna.create_study(study_name="l", storage=storage)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    # another process's trial (MLflow's storage writes it)
    other = optuna.load_study(study_name="l", storage=MlflowStorage(exp))
    other.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    other._storage.flush_all_batches()
    assert len(study.trials) == (2 if refresh is None else 3)
    storage.reread()
    assert [t.number for t in study.trials] == [0, 1, 2]


def test_workers_claim_their_own_share_of_the_enqueued_trials():
    client = mlflow.MlflowClient()
    exp = client.create_experiment("shares")
    study = optuna.create_study(study_name="w", storage=KeptStorage(exp))
    for x in (0.1, 0.2, 0.3, 0.4):
        study.enqueue_trial({"x": x})
    study._storage.flush_all_batches()
    ran = {}
    for worker in ((1, 2), (0, 2)):
        mine = optuna.load_study(study_name="w", storage=KeptStorage(exp, share=worker))
        mine.optimize(lambda t, w=worker: ran.setdefault(w, []).append(
            t.suggest_float("x", 0, 1)) or 0.0, n_trials=2)
        mine._storage.flush_all_batches()
    # each ran its own grid points, none twice, none left waiting
    assert ran == {(1, 2): [0.2, 0.4], (0, 2): [0.1, 0.3]}
