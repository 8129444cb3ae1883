"""How long reproducing a version takes against the run that made it, measured in one run.

1. the original: ``python -m projects main --cache false`` on a fresh store (every step
   computed), wall time of the command;
2. ``python -m registry reproduce NAME/1``: checks, a worktree at the recorded commit (+ diff),
   the re-run up to ``train`` with the cache off, both models scored on the test split; wall
   time of the command and the re-run's own time (the ``took`` line);
3. ``python -m registry lineage NAME/1``: wall time (mostly MLflow's start-up).

Prints the ratios; the machine is shared and noisy, so compare ratios, not seconds.

Usage: ``python benchmarks/bench_reproduce.py [--source bundled:breast_cancer] [--estimators ...]
[--quick]``
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_workflow import REPO, env  # the same environment as the workflow benchmark


def timed(cmd: list[str], cwd: Path, e: dict) -> tuple[float, str, int]:
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, env=e, capture_output=True, text=True)
    return time.perf_counter() - start, out.stdout + out.stderr, out.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="bundled:breast_cancer")
    parser.add_argument("--estimators", default="", help="e.g. linear,gradient_boosting")
    parser.add_argument("--quick", action="store_true",
                        help="the linear candidates only (as make bench runs it)")
    args = parser.parse_args(argv)
    if args.quick and not args.estimators:
        args.estimators = "linear"
    with tempfile.TemporaryDirectory(prefix="bench-reproduce-") as tmp:
        work = Path(tmp)
        e = env(work / "mlflow.db")
        cmd = [sys.executable, "-m", "projects", "main", "--cache", "false",
               "--source", args.source, "--model-name", "bench-reproduce"]
        if args.estimators:
            cmd += ["--estimators", args.estimators]
        original, out, code = timed(cmd, work, e)
        if code != 0:
            sys.exit(f"the workflow failed:\n{out[-2000:]}")
        lineage, out, code = timed([sys.executable, "-m", "registry", "lineage",
                                    "bench-reproduce/1"], work, e)
        if code != 0:
            sys.exit(f"lineage failed:\n{out[-2000:]}")
        whole, out, code = timed([sys.executable, "-m", "registry", "reproduce",
                                  "bench-reproduce/1"], REPO, e)
        verdict = next((x for x in out.splitlines() if x.startswith(("identical", "different",
                                                                      "error"))), "?")
        took = re.search(r"^took\s+([\d.]+) s", out, re.M)
        rerun = float(took.group(1)) if took else float("nan")
    print(f"{'what':<52} {'seconds':>8} {'x original':>10}")
    print(f"{'original run (every step, python -m projects main)':<52} {original:8.1f} "
          f"{1:10.2f}")
    print(f"{'reproduce: the whole command':<52} {whole:8.1f} {whole / original:10.2f}")
    print(f"{'reproduce: the re-run up to train (its took line)':<52} {rerun:8.1f} "
          f"{rerun / original:10.2f}")
    print(f"{'lineage':<52} {lineage:8.1f} {lineage / original:10.2f}")
    print(f"verdict: {verdict}")
    print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    return 0 if verdict.startswith("identical") else 1


if __name__ == "__main__":
    sys.exit(main())
