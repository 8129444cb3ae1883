"""Tuning against the grid: trials per minute, the best validation metric on the same budget.

On scikit-learn's bundled breast cancer table (the workflow's own split and preprocessing),
side by side in one run on one SQLite tracking store:

- the fixed grid (conf/base.yaml's candidates), timed: its fits per minute and best
  validation roc_auc;
- an Optuna study (``train.tuning``, the local engine in this process) over the default
  spaces, with the grid's wall time as its timeout: trials per minute and its best;
- the overhead per trial that is not fitting: the time between the end of one trial's fit
  and scoring and the start of the next one's (the trial's end and the next one's start in
  the tracking store, the sampler): the study kept as MLflow runs costs this much per trial,
  measured side by side with MLflow's own ``MlflowStorage`` (the same runs stored). Goal: at
  most 10 % of a trial of a 1-second fit;
- both studies start with the grid's points (``grid_points``): the tuned best is at least the
  grid's on the grid's number of fits;
- with ``--spark``: the same study on Spark ``local[2]``: the start-up (the session) and the
  seconds per trial, against the local engine's.

Usage: ``python benchmarks/bench_tuning.py [--trials 12] [--spark] [--quick]``
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

OVERHEAD_GOAL = 0.10  # of a trial whose fit takes one second


def _data():
    from sklearn.datasets import load_breast_cancer

    from core.settings import load_settings
    from projects.prepare import Preprocessing, split_data

    s = load_settings(overrides=["data.task=classification", "train.tuning.n_trials=1"])
    df = load_breast_cancer(as_frame=True).frame
    splits = split_data(df, "target", "classification", s.split.test_size, s.split.val_size,
                        s.split.seed)
    return s, splits["train"], splits["val"], Preprocessing.from_settings(s)


class _Fits:
    """The start and end of every trial's fit and scoring in this process."""

    def __init__(self):
        from projects import tuning

        self.spans: list[tuple[float, float]] = []
        fit = tuning.Objective._fit

        def timed(objective, trial, estimator, params):
            start = time.perf_counter()
            try:
                return fit(objective, trial, estimator, params)
            finally:
                self.spans.append((start, time.perf_counter()))

        tuning.Objective._fit = timed

    def gaps(self) -> list[float]:
        """Seconds between one fit's end and the next one's start."""
        spans, self.spans = self.spans, []
        return [b[0] - a[1] for a, b in zip(spans, spans[1:], strict=False)]


def _first(s) -> list[dict]:
    from projects import tuning_space

    space = tuning_space.build_space(s.train.candidates, "classification", s.split.seed)
    return tuning_space.grid_points(s.train.candidates, space, "classification", s.split.seed)


def _mlflow_storage(experiment_id: str):
    """MLflow's own storage (the baseline), with the two hints ours takes as no-ops."""
    from mlflow.optuna.storage import MlflowStorage

    class Stock(MlflowStorage):
        def only_here(self):
            pass

        def reread(self):
            pass

    return Stock(experiment_id=experiment_id)


def _study(client, s, train, val, types, name: str, tuning_settings, fits, n_jobs=1,
           storage=None):
    import mlflow

    from projects import tuning, tuning_space

    experiment_id = client.create_experiment(name)
    parent = client.create_run(experiment_id).info.run_id
    space = tuning_space.build_space(s.train.candidates, "classification", s.split.seed)
    objective = tuning.Objective("classification", types, train, val, "target", s.split.seed,
                                 "roc_auc", space, positive=0,
                                 tracking_uri=mlflow.get_tracking_uri())
    ours = tuning._storage
    if storage is not None:
        tuning._storage = storage
    start = time.perf_counter()
    try:
        out = tuning.run_study(client, experiment_id, parent, name * 3, objective,
                               tuning_settings, n_jobs, s.split.seed, _first(s))
    finally:
        tuning._storage = ours
    return out, time.perf_counter() - start, fits.gaps()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12,
                        help="trials of the fixed-count comparison and the Spark study")
    parser.add_argument("--spark", action="store_true",
                        help="also run the study on Spark local[2] (a JVM start)")
    parser.add_argument("--quick", action="store_true", help="8 trials (as make bench runs it)")
    args = parser.parse_args()
    if args.quick:
        args.trials = min(args.trials, 8)
    logging.basicConfig(level=logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="bench-tuning-"))
    os.chdir(work)
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{work / 'mlflow.db'}")
    from core.settings import TuningSettings
    from projects.train import expand_candidates, pick_best, train_candidates

    client = mlflow.MlflowClient()
    s, train, val, types = _data()
    candidates = expand_candidates(s.train.candidates)
    start = time.perf_counter()
    results = train_candidates("classification", types, candidates, train, val, "target",
                               s.split.seed, 1, positive=0)
    grid_seconds = time.perf_counter() - start
    grid_best = pick_best(results, "roc_auc").metrics["roc_auc"]
    print(f"grid     {len(results)} fits in {grid_seconds:.1f} s "
          f"({60 * len(results) / grid_seconds:.1f} fits/min), best val roc_auc {grid_best:.4f}")

    fits = _Fits()
    first = _first(s)
    same_time, seconds, _ = _study(client, s, train, val, types, "time",
                                   TuningSettings(n_trials=1000, timeout=grid_seconds), fits)
    ran = same_time.complete + same_time.pruned + same_time.failed
    print(f"tuning   {ran} trials in {seconds:.1f} s ({60 * ran / seconds:.1f} trials/min; the "
          f"grid's time as timeout), best val roc_auc {same_time.best_value:.4f} "
          f"({same_time.pruned} pruned, {same_time.failed} failed)")
    # the same study twice, side by side: MLflow's own storage, then ours (same runs stored)
    stock, stock_s, stock_gaps = _study(client, s, train, val, types, "stock",
                                        TuningSettings(n_trials=args.trials), fits,
                                        storage=_mlflow_storage)
    same_count, seconds, gaps = _study(client, s, train, val, types, "count",
                                       TuningSettings(n_trials=args.trials), fits)
    print(f"tuning   {args.trials} trials (the {len(first)} grid points it holds first) in "
          f"{seconds:.1f} s, best val roc_auc {same_count.best_value:.4f}")
    overhead, stock_overhead = statistics.median(gaps), statistics.median(stock_gaps)
    share = overhead / (overhead + 1.0)
    print(f"overhead {overhead:.3f} s per trial (median of {len(gaps)}) outside the fit: "
          f"{100 * share:.1f} % of a trial of a 1-second fit (goal <= {100 * OVERHEAD_GOAL:.0f} "
          f"%); MLflow's own storage {stock_overhead:.3f} s "
          f"({100 * stock_overhead / (stock_overhead + 1.0):.1f} %), "
          f"ratio {stock_overhead / overhead:.1f}x; study {stock_s:.1f} s against {seconds:.1f} s")
    ok_metric = same_time.best_value >= grid_best and same_count.best_value >= grid_best
    print(f"ratio    tuned best / grid best: on the same time "
          f"{same_time.best_value / grid_best:.4f}, on {args.trials} trials "
          f"{same_count.best_value / grid_best:.4f} (goal >= 1)")

    if args.spark:
        from pyspark.sql import SparkSession

        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        start = time.perf_counter()
        session = (SparkSession.builder.master("local[2]").appName("bench-tuning")
                   .config("spark.ui.enabled", "false")
                   .config("spark.driver.host", "127.0.0.1").getOrCreate())
        session.sparkContext.setLogLevel("FATAL")
        startup = time.perf_counter() - start
        local, local_s, _ = _study(client, s, train, val, types, "local",
                                   TuningSettings(n_trials=args.trials), fits)
        spark, spark_s, _ = _study(client, s, train, val, types, "spark",
                                   TuningSettings(n_trials=args.trials, engine="spark"), fits,
                                   n_jobs=2)
        session.stop()
        print(f"spark    start-up {startup:.1f} s; {args.trials} trials: local "
              f"{local_s / args.trials:.2f} s/trial, spark local[2] {spark_s / args.trials:.2f} "
              f"s/trial (ratio {spark_s / local_s:.2f}); best local {local.best_value:.4f}, "
              f"spark {spark.best_value:.4f}")
    missed = [what for what, ok in (("tuned best below the grid's", ok_metric),
                                    ("overhead above the goal", share <= OVERHEAD_GOAL)) if not ok]
    if missed:
        print("missed: " + "; ".join(missed))
        return 1
    print("every goal met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
