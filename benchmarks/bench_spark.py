"""Batch scoring: the local engine vs Spark ``local[2]``, rows/s and peak memory, side by side.

A scikit-learn pipeline (scaler + logistic regression on sklearn's breast-cancer data, 30
numeric columns) is registered in a temporary store; Parquet files of 1M and 5M rows (the data
with noise, plus an id) are scored by ``python -m serving predict`` with ``--engine local`` and
with ``--engine spark --master local[2]``, each in its own process. Peak memory is the largest
sum of resident memory over the command's whole process tree (the JVM and Spark's Python workers
included), sampled every 0.2 s. Spark reads the file in splits: no process holds the whole file.

    .venv/bin/python benchmarks/bench_spark.py [--rows 1000000 5000000]
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


def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and every descendant (from /proc)."""
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
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo += children.get(p, [])
    return total


def run(cmd: list[str], env: dict) -> tuple[float, int, str]:
    """Wall seconds, peak tree memory (bytes) and the last output line of ``cmd``."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss(proc.pid))
        time.sleep(0.2)
    out, err = proc.communicate()
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err[-3000:]}")
    return took, peak, out.strip().splitlines()[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=list(ROWS))
    parser.add_argument("--master", default="local[2]")
    args = parser.parse_args(argv)

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
            local = run([*base, "--output", str(tmp / f"local-{rows}.parquet")], env)
            spark = run([*base, "--output", str(tmp / f"spark-{rows}"), "--engine", "spark",
                         "--master", args.master, "--conf", "spark.ui.enabled=false"],
                        env)  # fmt: skip
            for engine, (took, peak, line) in (("local", local), (f"spark {args.master}", spark)):
                assert f"scored {rows} rows" in line, line
                results.append((rows, size, engine, took, peak))
                print(f"{rows:,} rows, {engine}: {took:.1f} s, peak {peak / 2**20:.0f} MB",
                      flush=True)  # fmt: skip
            (tmp / f"local-{rows}.parquet").unlink()
            src.unlink()

    print(f"\nserving predict on a Parquet file, {os.cpu_count()} cores")
    print(f"{'rows':>10}{'file MB':>9}  {'engine':<16}{'seconds':>9}{'rows/s':>10}"
          f"{'peak MB':>9}{'vs local':>10}")  # fmt: skip
    by_rows: dict[int, float] = {}
    for rows, size, engine, took, peak in results:
        rate = rows / took
        by_rows.setdefault(rows, rate)
        print(f"{rows:>10,}{size / 2**20:>9.0f}  {engine:<16}{took:>9.1f}{rate:>10,.0f}"
              f"{peak / 2**20:>9.0f}{rate / by_rows[rows]:>9.2f}x")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
