"""What GET /metrics costs the request path: the same server with metrics on and off, side by side.

Two `python -m serving serve bench-lr@champion` servers (one worker per core each), one started
with `--no-metrics`, serve the breast-cancer LogisticRegression pipeline of bench_serving.py and
get the same one-row request from wrk. The runs alternate (on-off, then off-on, ...) so drifts
in the machine's load hit both alike; a difference is the median over the rounds of on minus
(or over) off measured next to each other.

  1 row, 1 connection   p50 latency   goal: on <= off + 0.05 ms
  1 row, 8 connections  throughput    goal: on >= 0.97 x off

It also times, in this process, the metric updates one answered request makes (what the request
path adds: in flight, latency and scoring histograms, counters), without any HTTP.

Usage: python benchmarks/bench_metrics.py [--duration 3] [--rounds 8] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_serving import (  # noqa: E402
    cores,
    ensure_wrk,
    log_models,
    one_row_request,
    run_wrk,
)
from tests.support.processes import free_port, running  # noqa: E402

P50_GOAL_MS = 0.05
THROUGHPUT_GOAL = 0.97


def update_cost_us(repeat: int = 200_000) -> float:
    """Microseconds of metric updates per answered one-row request, in-process (no HTTP)."""
    from prometheus_client import CollectorRegistry

    from serving.online.metrics import ServingMetrics

    m = ServingMetrics(CollectorRegistry())

    async def requests() -> float:  # on an event loop, as a worker counts
        start = time.perf_counter()
        for i in range(repeat):
            clock = m.started()
            m.scored(0.0002)
            m.fast(1)
            m.answered(200, "application/json", clock, 700)
            if i % 1000 == 999:  # a worker's flush: once a second, after ~1000 requests here
                m.flush()
        return time.perf_counter() - start

    return asyncio.run(requests()) / repeat * 1e6


def multiprocess_update_cost_us(repeat: int = 100_000) -> float:
    """The same, with the per-process files of multi-process mode (as the server runs)."""
    import subprocess

    code = (
        f"import sys; sys.path.insert(0, {str(REPO)!r})\n"
        "from benchmarks.bench_metrics import update_cost_us\n"
        f"print(update_cost_us({repeat}))\n"
    )
    folder = tempfile.mkdtemp(prefix="bench-metrics-mp-")
    try:
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PROMETHEUS_MULTIPROC_DIR": folder, "PATH": "/usr/bin:/bin"},
        ).stdout
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return float(out.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=8, help="alternating rounds per scenario")
    parser.add_argument("--quick", action="store_true",
                        help="2-second runs, 4 rounds (as make bench runs it)")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.rounds = min(args.duration, 2.0), min(args.rounds, 4)
    wrk = ensure_wrk()
    n_cores = cores()
    work = Path(tempfile.mkdtemp(prefix="bench-metrics-"))
    uri, X, _ = log_models(work)
    body, lua = one_row_request(work, X)
    env = {"MLFLOW_TRACKING_URI": uri}
    d = args.duration
    urls = {}
    runs: dict[str, list[dict]] = {}
    with ExitStack() as stack:
        for label, flags in (("on", ()), ("off", ("--no-metrics",))):
            port = free_port()
            cmd = [sys.executable, "-m", "serving", "serve", "bench-lr@champion", "--port",
                   str(port), "--no-access-log", *flags]
            print(f"metrics {label}: {' '.join(cmd[1:])}  (workers: {n_cores})")
            stack.enter_context(running(cmd, f"http://127.0.0.1:{port}/ping",
                                        f"bench-metrics-{label}", env=env, cwd=work,
                                        timeout=180))
            urls[label] = f"http://127.0.0.1:{port}"
        time.sleep(3)  # every worker up (the first one answers /ping)
        for url in urls.values():
            run_wrk(wrk, url, body, lua, 8, 2)  # warm up
        for i in range(args.rounds):
            for conns in (1, 8):
                # on-off, then off-on: neither always runs first
                for label in ("on", "off") if i % 2 == 0 else ("off", "on"):
                    result = run_wrk(wrk, urls[label], body, lua, conns, d)
                    runs.setdefault(f"{label} c{conns}", []).append(result)
        import requests

        scrape = requests.get(f"{urls['on']}/metrics", timeout=10)
        off_scrape = requests.get(f"{urls['off']}/metrics", timeout=10).status_code
    cost = update_cost_us()
    mp_cost = multiprocess_update_cost_us()

    def median(key: str, field: str) -> float:
        return statistics.median(r[field] for r in runs[key])

    def paired(field: str, conns: int, op) -> float:
        """The median over rounds of on vs off measured next to each other (drift cancels)."""
        return statistics.median(
            op(a[field], b[field]) for a, b in zip(runs[f"on c{conns}"], runs[f"off c{conns}"],
                                                   strict=True))

    p50_on, p50_off = median("on c1", "p50_ms"), median("off c1", "p50_ms")
    rps_on, rps_off = median("on c8", "rps"), median("off c8", "rps")
    p50_diff = paired("p50_ms", 1, lambda a, b: a - b)
    rps_ratio = paired("rps", 8, lambda a, b: a / b)
    from rich.console import Console
    from rich.table import Table

    console = Console(width=160)
    table = Table(title=f"metrics on vs off ({n_cores} cores, {args.rounds} alternating rounds "
                        f"of wrk {d:g}s, medians)")
    for col in ("scenario", "metrics off", "metrics on", "difference", "goal", "met"):
        table.add_column(col, justify="right" if col not in ("scenario", "goal") else "left")
    table.add_row("1 row, 1 conn: p50 (ms)", f"{p50_off:.3f}", f"{p50_on:.3f}",
                  f"{p50_diff:+.3f} ms", f"<= +{P50_GOAL_MS} ms",
                  "yes" if p50_diff <= P50_GOAL_MS else "NO")
    table.add_row("1 row, 8 conns: req/s", f"{rps_off:,.0f}", f"{rps_on:,.0f}",
                  f"{(rps_ratio - 1) * 100:+.1f}%", f">= {THROUGHPUT_GOAL:.0%} of off",
                  "yes" if rps_ratio >= THROUGHPUT_GOAL else "NO")
    console.print(table)
    spread = {k: f"{min(r['rps'] for r in v):,.0f}-{max(r['rps'] for r in v):,.0f}"
              for k, v in runs.items()}
    console.print(f"difference: the median of the rounds' paired differences; req/s range "
                  f"over rounds: {spread}")
    console.print(f"metric updates of one answered request, in-process: {cost:.2f} us "
                  f"(one process), {mp_cost:.2f} us (multi-process files, as served)")
    counted = [line for line in scrape.text.splitlines()
               if line.startswith("mlops_serving_requests_total") and not line.endswith(" 0.0")]
    console.print(f"/metrics with metrics on: {scrape.status_code}, {counted}; "
                  f"with --no-metrics: {off_scrape}")
    errors = {k: sum(r["errors"] for r in v) for k, v in runs.items()}
    console.print(f"failed requests: {({k: v for k, v in errors.items() if v}) or 'none'}")
    console.print(f"raw: {json.dumps(runs)}")
    shutil.rmtree(work, ignore_errors=True)
    return 0 if p50_diff <= P50_GOAL_MS and rps_ratio >= THROUGHPUT_GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
