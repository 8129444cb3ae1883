"""Workflow speed, measured side by side in one run (this machine is noisy: compare ratios).

1. model logging: stock ``mlflow.sklearn.log_model`` (requirements inferred) vs the workflow's
   (pinned requirements), per model;
2. cold run vs re-run with nothing changed vs one train parameter changed vs a changed data
   file at the same path — ``python -m projects main`` and ``mlflow run .`` as users run them;
3. a 200,000-row synthetic dataset with a user feature function in the model pipeline: share of
   the workflow's wall time spent outside fit/predict, and a re-run reusing every step;
4. the re-run with nothing changed against MLflow's own start-up (``mlflow --version`` plus
   ``python -c "import mlflow"``, measured in the same run): what is left is ours (goal <= 2 s);
   and a fresh store: the first run, and MLflow's migrations in it timed alone.

Usage: ``python benchmarks/bench_workflow.py [--rows 200000] [--skip-large] [--rerun-only]
[--large-only] [--quick]``
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def env(store: Path) -> dict:
    """This environment with the venv's commands first, the checkout importable, ``store``."""
    e = dict(os.environ)
    e["PATH"] = f"{BIN}{os.pathsep}{e['PATH']}"
    e["PYTHONPATH"] = str(REPO)
    e["MLFLOW_TRACKING_URI"] = f"sqlite:///{store}"
    e.pop("MLFLOW_REGISTRY_URI", None)
    return e


def timed(cmd, cwd, e) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, env=e, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if out.returncode != 0:
        sys.exit(f"command failed: {' '.join(cmd)}\n{out.stderr[-2000:]}")
    return elapsed, out.stdout + out.stderr


def steps_line(output: str) -> str:
    return next((x.split(None, 1)[1] for x in output.splitlines() if x.startswith("steps")), "?")


def bench_log_model(work: Path, repeats: int = 3) -> bool:
    import mlflow
    from mlflow.models import infer_signature
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression

    sys.path.insert(0, str(REPO))
    from projects.artifacts import pinned_requirements

    mlflow.set_tracking_uri(f"sqlite:///{work / 'logmodel.db'}")
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    model = LogisticRegression(max_iter=3000).fit(X, y)
    sig = infer_signature(X.head(5), model.predict(X.head(5)))
    req = pinned_requirements()
    with mlflow.start_run():
        # warm both paths once (imports), then time alternately
        mlflow.sklearn.log_model(model, name="warm", signature=sig, pip_requirements=req)
        stock, ours = [], []
        for _ in range(repeats):
            t = time.perf_counter()
            mlflow.sklearn.log_model(model, name="stock", signature=sig, input_example=X.head(5))
            stock.append(time.perf_counter() - t)
            t = time.perf_counter()
            mlflow.sklearn.log_model(model, name="ours", signature=sig, input_example=X.head(5),
                                     pip_requirements=req, serialization_format="cloudpickle")
            ours.append(time.perf_counter() - t)
    s, o = sorted(stock)[len(stock) // 2], sorted(ours)[len(ours) // 2]
    print(f"log_model per model (median of {repeats}): stock {s:.2f} s, "
          f"workflow {o:.3f} s  -> {s / o:.0f}x faster (goal <= 0.2 s) -> "
          f"{'met' if o <= 0.2 else 'MISSED'}")
    return o <= 0.2


def bench_cache(work: Path, via_mlflow_run: bool) -> bool:
    store = work / ("mr.db" if via_mlflow_run else "cli.db")
    data = work / "data.csv"
    e = env(store)
    if via_mlflow_run:
        base = [str(BIN / "mlflow"), "run", str(REPO), "--env-manager", "local",
                "--experiment-name", "bench"]
        def cmd(*extra):
            return [*base, *[x for kv in extra for x in ("-P", kv)]]
    else:
        base = [sys.executable, "-m", "projects", "main", "--experiment", "bench"]
        def cmd(*extra):
            return [*base, *[x for kv in extra for x in ("--" + kv.split("=")[0].replace("_", "-"),
                                                          kv.split("=", 1)[1])]]
    _write_data(data, 10_000, seed=0)
    src = f"source={data}"
    cold, _ = timed(cmd(src), work, e)
    warm, out = timed(cmd(src), work, e)
    assert "train reused" in steps_line(out), steps_line(out)
    param, out_p = timed(cmd(src, "metric=accuracy"), work, e)
    _write_data(data, 10_000, seed=1)
    changed, out_d = timed(cmd(src), work, e)
    label = "mlflow run ." if via_mlflow_run else "python -m projects main"
    print(f"[{label}] 10k-row classification CSV, default 6-candidate sweep")
    print(f"  cold run                    {cold:6.2f} s")
    met = cold / warm >= 5 and warm <= 3.0
    print(f"  re-run, nothing changed     {warm:6.2f} s  -> {cold / warm:.1f}x faster than cold "
          f"(goal >= 5x and <= 3 s) -> {'met' if met else 'MISSED'}")
    print(f"  one train parameter changed {param:6.2f} s  -> {cold / param:.2f}x; steps: "
          f"{steps_line(out_p)}")
    print(f"  data file changed in place  {changed:6.2f} s  steps: {steps_line(out_d)}")
    return met


def _cpu_children() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _once(cmd, cwd, e) -> tuple[float, str, float]:
    """Wall time, output, and CPU seconds of the process tree (steadier than wall time on a
    loaded machine)."""
    before = _cpu_children()
    elapsed, out = timed(cmd, cwd, e)
    return elapsed, out, _cpu_children() - before


# MLflow's store on a new SQLite file: tables created and every migration applied (timed
# without the imports), then the same store opened again (the schema check alone)
_MIGRATIONS = """
import sys, time
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
t = time.perf_counter(); SqlAlchemyStore(sys.argv[1], sys.argv[2]); a = time.perf_counter() - t
t = time.perf_counter(); SqlAlchemyStore(sys.argv[1], sys.argv[2]); b = time.perf_counter() - t
print("migrations", a, b)
"""


def bench_rerun_floor(work: Path, repeats: int = 5) -> bool:
    """`mlflow run .` with nothing changed vs MLflow's own start-up, side by side.

    Measured in rounds (a re-run, ``mlflow --version``, ``import mlflow``, one after the
    other), so that each difference is taken under the same load; the medians are reported.
    """
    store = work / "floor.db"
    e = env(store)
    run = [str(BIN / "mlflow"), "run", str(REPO), "--env-manager", "local",
           "--experiment-name", "floor"]
    # a fresh store: MLflow creating its tables (migrations), timed alone after the imports,
    # and the check every later process makes on the migrated store; then the first run
    _, out = timed([sys.executable, "-c", _MIGRATIONS, f"sqlite:///{store}",
                    (work / "floor-artifacts").as_uri()], work, e)
    line = next(x for x in out.splitlines() if x.startswith("migrations "))
    migrate, check = (float(x) for x in line.split()[1:])
    store.unlink()
    first, _ = timed(run, work, e)
    rounds = []
    for _ in range(repeats):
        rerun, out, rerun_cpu = _once(run, work, e)
        assert "train reused" in steps_line(out), steps_line(out)
        version, _, version_cpu = _once([str(BIN / "mlflow"), "--version"], work, e)
        imp, _, imp_cpu = _once([sys.executable, "-c", "import mlflow"], work, e)
        rounds.append((rerun, version, imp, rerun - version - imp,
                       rerun_cpu, version_cpu + imp_cpu, rerun_cpu - version_cpu - imp_cpu))
    rerun, version, imp, ours, rerun_cpu, floor_cpu, ours_cpu = (
        sorted(column)[len(column) // 2] for column in zip(*rounds, strict=True))
    floor = version + imp
    print(f"[mlflow run . on a fresh store] first run {first:.2f} s (MLflow's start-up, "
          f"migrations, every step computed); MLflow's migrations alone {migrate:.2f} s; "
          f"the check of a migrated store (each later process) {check:.3f} s")
    print(f"[mlflow run ., nothing changed] medians of {repeats} rounds: {rerun:.2f} s; MLflow's "
          f"floor {floor:.2f} s (mlflow --version {version:.2f} s + import mlflow {imp:.2f} s)")
    print(f"  ours (median of the rounds' differences): {ours:+.2f} s over the floor, ratio "
          f"{rerun / floor:.2f}x (goal <= +2.00 s) -> {'met' if ours <= 2.0 else 'MISSED'}")
    print(f"  CPU seconds (steadier under load): re-run {rerun_cpu:.2f} s, floor "
          f"{floor_cpu:.2f} s -> ours {ours_cpu:+.2f} s")
    return ours <= 2.0


def bench_in_process(work: Path) -> None:
    """The same cold run / re-run inside one Python process (as an API call, no start-up)."""
    sys.path.insert(0, str(REPO))
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'inproc.db'}"
    from core.connection import connect
    from core.settings import load_settings
    from projects.workflow import Workflow

    data = work / "inproc.csv"
    _write_data(data, 10_000, seed=0)
    settings = load_settings("local", [f"data.source={data}", "experiment=inproc"])
    client = connect()
    t = time.perf_counter()
    Workflow(settings, client).run()
    cold = time.perf_counter() - t
    t = time.perf_counter()
    result = Workflow(settings, client).run()
    warm = time.perf_counter() - t
    assert all(o.reused for o in result.steps.values())
    print(f"[in-process Workflow.run] cold {cold:.2f} s, re-run nothing changed {warm:.2f} s "
          f"-> {cold / warm:.1f}x")


def _write_data(path: Path, rows: int, seed: int, features: int = 8):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features))
    df = pd.DataFrame(x, columns=[f"x{i}" for i in range(features)])
    df["segment"] = rng.choice(list("abcdef"), size=rows)
    logit = x[:, 0] - 0.7 * x[:, 1] + 0.3 * x[:, 2] * x[:, 3] + (df["segment"] == "a") * 0.5
    df["target"] = (logit + rng.normal(scale=1.0, size=rows) > 0).astype(int)
    df.to_csv(path, index=False)


def bench_large(work: Path, rows: int) -> bool:
    sys.path.insert(0, str(REPO))
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'large.db'}"
    from core.connection import connect
    from core.settings import load_settings
    from projects.workflow import Workflow

    data = work / "large.csv"
    _write_data(data, rows, seed=3)
    # a user feature function in the model pipeline (as a data scientist adds one)
    steps = work / "bench_steps"
    steps.mkdir(exist_ok=True)
    (steps / "bench_features.py").write_text(
        "def interactions(df):\n"
        "    out = df.copy()\n"
        "    out['x0_x1'] = out['x0'] * out['x1']\n"
        "    out['x2_x3'] = out['x2'] * out['x3']\n"
        "    return out\n")
    feature = f"{steps / 'bench_features.py'}:interactions"
    settings = load_settings("local", [f"data.source={data}", "experiment=large",
                                       f"features=[{feature}]"])
    client = connect()
    result = Workflow(settings, client).run()
    t = result.timings
    inside = t.get("fit_predict_sweep", 0) + t.get("evaluate_predict", 0)
    outside = t["total"] - inside
    print(f"{rows:,}-row synthetic dataset, default sweep + a feature function: total "
          f"{t['total']:.1f} s, fit/predict {inside:.1f} s, outside {outside:.1f} s "
          f"-> {outside / t['total']:.1%} outside fit/predict (goal <= 20%) -> "
          f"{'met' if outside <= 0.2 * t['total'] else 'MISSED'}")
    print("  per step: " + ", ".join(f"{k} {v:.1f}s" for k, v in t.items() if k != "total"))
    again = Workflow(settings, client).run()
    reused = [s for s, o in again.steps.items() if o.reused]
    print(f"  re-run nothing changed (feature function included): {len(reused)}/"
          f"{len(again.steps)} steps reused in {again.timings['total']:.1f} s")
    return outside <= 0.2 * t["total"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--rerun-only", action="store_true",
                        help="Only the re-run against MLflow's start-up and the fresh store.")
    parser.add_argument("--large-only", action="store_true",
                        help="Only the large synthetic run (with a feature function) and its "
                             "re-run.")
    parser.add_argument("--quick", action="store_true",
                        help="3 rounds against MLflow's start-up, no large run (as make bench "
                             "runs it)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.large_only:
            return 0 if bench_large(work, args.rows) else 1
        met = bench_rerun_floor(work, repeats=3 if args.quick else 5)
        if args.rerun_only:
            return 0 if met else 1
        met &= bench_log_model(work)
        met &= bench_cache(work, via_mlflow_run=False)
        met &= bench_cache(work, via_mlflow_run=True)
        bench_in_process(work)
        if not (args.skip_large or args.quick):
            met &= bench_large(work, args.rows)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
