"""Batch scoring: the local engine vs Spark ``local[2]``, rows/s and peak memory, side by side.

A scikit-learn pipeline (scaler + logistic regression on sklearn's breast-cancer data, 30
numeric columns) is registered in a temporary store; Parquet files of 1M and 5M rows (the data
with noise, plus an id) are scored by ``python -m serving predict`` with ``--engine local`` and
with ``--engine spark --master local[2]``, each in its own process, one after the other on the
same file. Peak memory is the largest sum of resident memory over the command's whole process
tree, sampled every 0.2 s from ``/proc``; for Spark it is also split into the driver's Python
process, the JVM (driver and, in local mode, the executor) and Spark's Python workers (each part's
own peak). The local engine reads the file batch by batch; Spark in splits: no process should
hold the whole file, so peak memory should not grow with the rows.

Goal: peak memory does not grow with the rows (at most 1.5x from the smallest file to the
largest, per engine).

``--plan`` measures the local engine on the models the workflow trains instead (the three of
``bench_serving.py``: linear on breast cancer, random forest on diabetes, gradient boosting on
palmerpenguins' raw table with its text categories, gaps and dates), each on a Parquet file of
its table's rows drawn with replacement (``--plan-rows``, 1M by default): ``serving predict``
with the model's scoring plan against the path before the plan (the same command with
``core.plan.planned_model`` answering "no plan": the pipeline through pyfunc, or the
scikit-learn fast path where it applies), in paired rounds that alternate which goes first, so
the machine's drifting load falls on both. Per model: the median rows/s of each, the median of
the rounds' ratios and their spread, and each path's peak memory. Goal: the plan >= 3x the rows/s
with no more memory (at most 1.1x the pre-plan peak).

    nice -n 10 .venv/bin/python benchmarks/bench_spark.py [--rows 1000000 5000000] [--repeat 1]
        [--quick]
    nice -n 10 .venv/bin/python benchmarks/bench_spark.py --plan [--plan-rows 1000000]
        [--rounds 3] [--plan-models wf-cancer-linear ...]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROWS = (1_000_000, 5_000_000)
#: The largest file's peak memory, at most this multiple of the smallest's, per engine.
MEMORY_GROWTH = 1.5


def register_model(uri: str) -> str:
    import mlflow

    from tests.support.serving_models import cancer_data, fit_pipeline, log_sklearn_version

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    X, y = cancer_data()
    client = mlflow.MlflowClient()
    version = log_sklearn_version(client, "bench-spark", fit_pipeline(X, y), X)
    client.set_registered_model_alias("bench-spark", "champion", version)
    return "bench-spark@champion"


def write_input(path: Path, rows: int, chunk: int = 250_000) -> None:
    """``rows`` rows in row groups, written chunk by chunk (this process never holds them all)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tests.support.serving_models import cancer_data

    X, _ = cancer_data()
    base = X.to_numpy()
    rng = np.random.default_rng(0)
    writer = None
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        values = base[rng.integers(0, len(base), n)] * rng.normal(1, 0.02, (n, base.shape[1]))
        table = pa.table({"id": np.arange(start, start + n),
                          **{c: values[:, i] for i, c in enumerate(X.columns)}})  # fmt: skip
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema)
        writer.write_table(table, row_group_size=100_000)
    writer.close()


def _part(pid: int) -> str:
    """Which part of a job a process is: ``jvm``, ``workers`` (Spark's Python) or ``driver``."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return "driver"
    if argv and os.path.basename(argv[0]) == b"java":
        return "jvm"
    if any(a.startswith(b"pyspark.") for a in argv):  # pyspark.daemon and its forked workers
        return "workers"
    return "driver"


def tree_rss(pid: int) -> dict[str, int]:
    """Resident bytes of ``pid`` and every descendant (from /proc), by part (see :func:`_part`)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ppid, pages = int(fields[1]), int(fields[21])
        children.setdefault(ppid, []).append(int(entry))
        rss[int(entry)] = pages * os.sysconf("SC_PAGE_SIZE")
    parts = {"driver": 0, "jvm": 0, "workers": 0}
    todo = [pid]
    while todo:
        p = todo.pop()
        if p in rss:
            parts["driver" if p == pid else _part(p)] += rss[p]
        todo += children.get(p, [])
    return parts


def run(cmd: list[str], env: dict, logs: Path) -> tuple[float, dict[str, int], str]:
    """Wall seconds, peak memory (bytes: ``total`` and each part's own) and the last output line.

    Output goes to files: a pipe nobody reads while the job runs would stop it once full.
    """
    start = time.perf_counter()
    with open(logs / "out.txt", "w") as out, open(logs / "err.txt", "w") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err)
        peak = {"total": 0, "driver": 0, "jvm": 0, "workers": 0}
        while proc.poll() is None:
            parts = tree_rss(proc.pid)
            peak["total"] = max(peak["total"], sum(parts.values()))
            for name, value in parts.items():
                peak[name] = max(peak[name], value)
            time.sleep(0.2)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{(logs / 'err.txt').read_text()[-3000:]}")
    return took, peak, (logs / "out.txt").read_text().strip().splitlines()[-1]


#: ``serving predict`` as it scored before the plan: ``planned_model`` finds no plan
_NO_PLAN = ("import sys; import core.plan as p; "
            "p.planned_model = lambda model: (None, None, 'the plan is off (benchmark)'); "
            "from serving.cli import main; sys.exit(main())")
#: the plan's goal: at least this many times the rows/s of the path before it
PLAN_SPEEDUP = 3.0
#: ... with a peak memory of at most this multiple of the path before it
PLAN_MEMORY = 1.1


def write_table_rows(path: Path, frame, rows: int, chunk: int = 250_000) -> None:
    """``rows`` rows drawn from ``frame`` with replacement, written chunk by chunk."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = None
    for i, start in enumerate(range(0, rows, chunk)):
        part = frame.sample(min(chunk, rows - start), replace=True, random_state=i)
        table = pa.Table.from_pandas(part.reset_index(drop=True), preserve_index=False,
                                     schema=writer.schema if writer else None)
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    writer.close()


def plan_vs_pyfunc(rows: int, rounds: int, models: list[str] | None) -> int:
    """``--plan``: the local engine with and without the scoring plan, paired rounds."""
    import statistics

    from bench_serving import WORKFLOW_MODELS, log_workflow_models

    from tests.support.public_tables import public_table

    ok = True
    report = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        log_workflow_models(tmp)
        uri = f"sqlite:///{tmp / 'mlflow.db'}"
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_REGISTRY_URI": uri,
               "PYTHONPATH": str(Path(__file__).resolve().parents[1])}  # fmt: skip
        for name, (table, _, _) in WORKFLOW_MODELS.items():
            if models and name not in models:
                continue
            df, target, _ = public_table(table)
            src = tmp / f"{name}.parquet"
            write_table_rows(src, df.drop(columns=[target]), rows)
            args = ["predict", f"{name}@champion", "--input", str(src), "--output",
                    str(tmp / "out.parquet")]
            cmds = {"plan": [sys.executable, "-m", "serving", *args],
                    "before": [sys.executable, "-c", _NO_PLAN, *args]}
            got: dict[str, list] = {"plan": [], "before": []}
            for r in range(rounds):
                for path in (("before", "plan") if r % 2 == 0 else ("plan", "before")):
                    took, peak, line = run(cmds[path], env, tmp)
                    assert f"scored {rows} rows" in line, line
                    got[path].append((rows / took, peak["total"]))
                    print(f"{name} round {r + 1} {path}: {rows / took:,.0f} rows/s, peak "
                          f"{_mb(peak['total'])} MB, load {os.getloadavg()[0]:.1f}", flush=True)
            ratios = [p[0] / b[0] for p, b in zip(got["plan"], got["before"], strict=True)]
            mem = max(p[1] for p in got["plan"]) / max(b[1] for b in got["before"])
            met = statistics.median(ratios) >= PLAN_SPEEDUP and mem <= PLAN_MEMORY
            ok &= met
            report.append((name, statistics.median(r[0] for r in got["before"]),
                           statistics.median(r[0] for r in got["plan"]), ratios,
                           max(b[1] for b in got["before"]), max(p[1] for p in got["plan"]),
                           met))
            src.unlink()
    print(f"\nserving predict (local engine), {rows:,}-row Parquet file, {rounds} paired rounds, "
          f"{os.cpu_count()} cores, load average now {os.getloadavg()[0]:.1f}")
    print(f"{'model':<22}{'before rows/s':>14}{'plan rows/s':>13}{'ratio (median)':>16}"
          f"{'spread':>14}{'peak MB before':>16}{'plan':>6}  goal")  # fmt: skip
    for name, before, plan, ratios, mb_before, mb_plan, met in report:
        print(f"{name:<22}{before:>14,.0f}{plan:>13,.0f}{statistics.median(ratios):>15.2f}x"
              f"{min(ratios):>8.2f}-{max(ratios):.2f}x{_mb(mb_before):>16}{_mb(mb_plan):>6}  "
              f"{'met' if met else 'MISSED'} (>= {PLAN_SPEEDUP:g}x, memory <= "
              f"{PLAN_MEMORY:g}x)")  # fmt: skip
    return 0 if ok else 1


def _mb(n: int) -> str:
    return f"{n / 2**20:.0f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=list(ROWS))
    parser.add_argument("--repeat", type=int, default=1, help="runs of each engine per size")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--quick", action="store_true",
                        help="200,000 and 1,000,000 rows (as make bench runs it)")
    parser.add_argument("--plan", action="store_true",
                        help="the workflow's models: serving predict with and without the plan")
    parser.add_argument("--plan-rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3, help="--plan: paired rounds")
    parser.add_argument("--plan-models", nargs="+", help="--plan: these models only (names as "
                        "bench_serving.py's WORKFLOW_MODELS)")
    args = parser.parse_args(argv)
    if args.plan:
        return plan_vs_pyfunc(args.plan_rows, args.rounds, args.plan_models)
    if args.quick:
        args.rows = [200_000, 1_000_000]

    results = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        uri = f"sqlite:///{tmp}/mlflow.db"
        model = register_model(uri)
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_REGISTRY_URI": uri,
               "PYTHONPATH": str(Path(__file__).resolve().parents[1])}  # fmt: skip
        for rows in args.rows:
            src = tmp / f"in-{rows}.parquet"
            write_input(src, rows)
            size = src.stat().st_size
            base = [sys.executable, "-m", "serving", "predict", model, "--input", str(src)]
            local_cmd = [*base, "--output", str(tmp / "local-out.parquet")]
            spark_cmd = [*base, "--output", str(tmp / "spark-out"), "--engine", "spark",
                         "--master", args.master, "--conf", "spark.ui.enabled=false"]  # fmt: skip
            spark_engine = f"spark {args.master}"
            for attempt in range(args.repeat):
                outcomes = {
                    "local": run(local_cmd, env, tmp),
                    spark_engine: run(spark_cmd, env, tmp),
                }
                for engine, (took, peak, line) in outcomes.items():
                    assert f"scored {rows} rows" in line, line
                    results.append((rows, size, engine, took, peak))
                    print(f"{rows:,} rows, {engine} (run {attempt + 1}): {took:.1f} s, "
                          f"peak {_mb(peak['total'])} MB, load {os.getloadavg()[0]:.1f}",
                          flush=True)  # fmt: skip
            src.unlink()

    print(f"\nserving predict on a Parquet file, {os.cpu_count()} cores, "
          f"load average now {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"{'rows':>10}{'file MB':>9}  {'engine':<16}{'seconds':>9}{'rows/s':>10}"
          f"{'vs local':>10}{'peak MB':>9}{'driver':>8}{'JVM':>6}{'workers':>9}")  # fmt: skip
    local_rate: dict[int, float] = {}
    for rows, size, engine, took, peak in results:
        rate = rows / took
        if engine == "local":
            local_rate[rows] = rate  # the local run just before, on the same file
        print(f"{rows:>10,}{size / 2**20:>9.0f}  {engine:<16}{took:>9.1f}{rate:>10,.0f}"
              f"{rate / local_rate[rows]:>9.2f}x{_mb(peak['total']):>9}{_mb(peak['driver']):>8}"
              f"{_mb(peak['jvm']):>6}{_mb(peak['workers']):>9}")  # fmt: skip
    return 0 if _memory_flat(results) else 1


def _memory_flat(results) -> bool:
    """The goal: an engine's peak memory on the largest file is at most MEMORY_GROWTH x its
    peak on the smallest (no process holds the whole file); one size only: nothing to compare."""
    ok = True
    for engine in dict.fromkeys(r[2] for r in results):
        peaks = {rows: peak["total"] for rows, _, e, _, peak in results if e == engine}
        small, large = min(peaks), max(peaks)
        if small == large:
            continue
        growth = peaks[large] / peaks[small]
        met = growth <= MEMORY_GROWTH
        ok &= met
        print(f"{engine}: peak memory x{growth:.2f} from {small:,} to {large:,} rows "
              f"(goal <= {MEMORY_GROWTH}x): {'met' if met else 'MISSED'}")
    return ok


if __name__ == "__main__":
    sys.exit(main())
