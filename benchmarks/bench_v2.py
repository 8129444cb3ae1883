"""Open Inference Protocol benchmark: ours vs MLServer (V2), ours vs stock (/invocations).

Settled by alternating paired rounds: each round measures both servers back to back, in
alternating order (AB, BA, AB ...), so drift in the machine's load falls on both; the figure is
the median of the per-round ratios, with their spread (min-max) and the rounds' count.

  V2, 1 row, 1 connection: p50 latency    ours vs MLServer 1.7.1 + mlserver-mlflow 1.7.1
  V2, 1 row, 8 connections: req/s         one worker each (ours --workers 1, MLServer's
                                          default parallel_workers), defaults otherwise
  /invocations, 1000 rows, 4 connections  ours (defaults) vs stock `mlflow models serve`

Goals (issue 26): V2 1-row p50 <= in-process predict (the pipeline's own) + 0.5 ms; V2 8-connection
throughput >= 5x MLServer's; /invocations 1000 rows >= 10x stock (median of paired rounds).

MLServer runs from the cached environment the tests build (tests/support/mlserver.py); wrk
from Debian (bench_serving.py installs it). Same registered LogisticRegression pipeline (30
float columns of sklearn's breast-cancer data) on every server.

Usage: python benchmarks/bench_v2.py [--rounds 7] [--duration 3] [--part all|v2|invocations]
       [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_serving import (  # noqa: E402
    ensure_wrk,
    in_process_seconds,
    log_models,
    run_wrk,
)
from tests.support.mlserver import mlserver_bin, write_repository  # noqa: E402
from tests.support.processes import free_port, running  # noqa: E402

# wrk posts the body file to the path named by BENCH_PATH (run_wrk's URL ends in /invocations).
LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.path = os.getenv("BENCH_PATH")
local f = io.open(os.getenv("BENCH_BODY"), "rb")
wrk.body = f:read("*a")
f:close()
"""


FAILED: dict[str, int] = {}


def wrk_at(wrk: str, base: str, path: str, body: Path, lua: Path, conns: int, d: float) -> dict:
    os.environ["BENCH_PATH"] = path
    result = run_wrk(wrk, base, body, lua, conns, d)
    if result["errors"]:  # non-2xx answers, or wrk's 2-second timeouts on a loaded machine
        FAILED[f"{base}{path}"] = FAILED.get(f"{base}{path}", 0) + result["errors"]
    return result


def paired(label: str, rounds: int, a, b, ratio) -> dict:
    """Run ``a()`` and ``b()`` ``rounds`` times in alternating order; summarise ratio(a, b)."""
    ratios, a_vals, b_vals = [], [], []
    for r in range(rounds):
        if r % 2 == 0:
            x, y = a(), b()
        else:
            y, x = b(), a()
        a_vals.append(x)
        b_vals.append(y)
        ratios.append(ratio(x, y))
        print(f"  {label} round {r + 1}: {x:,.3f} vs {y:,.3f} -> {ratios[-1]:.2f}x", flush=True)
    return {
        "median_ratio": statistics.median(ratios),
        "min": min(ratios),
        "max": max(ratios),
        "a_median": statistics.median(a_vals),
        "b_median": statistics.median(b_vals),
        "rounds": rounds,
    }


def v2_body(rows) -> dict:
    return {"inputs": [{"name": c, "datatype": "FP64", "shape": [len(rows)],
                        "data": rows[c].tolist()} for c in rows.columns]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="paired rounds per comparison")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per wrk run")
    parser.add_argument("--part", choices=("all", "v2", "invocations"), default="all",
                        help="run only the V2 or only the /invocations comparison")
    parser.add_argument("--quick", action="store_true",
                        help="5 rounds of 2 s (as make bench runs it)")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.duration = min(args.rounds, 5), min(args.duration, 2.0)
    wrk = ensure_wrk()
    work = Path(tempfile.mkdtemp(prefix="bench-v2-"))
    uri, X, pipes = log_models(work)
    import mlflow

    one, thousand = X.head(1), X.sample(1000, replace=True, random_state=0)
    bodies = {"v2-1": work / "v2-1.json", "split-1000": work / "split-1000.json"}
    bodies["v2-1"].write_text(json.dumps(v2_body(one)))
    split = json.loads(thousand.to_json(orient="split", index=False))
    bodies["split-1000"].write_text(json.dumps({"dataframe_split": split}))
    lua = work / "post.lua"
    lua.write_text(LUA)
    pyfunc = mlflow.pyfunc.load_model("models:/bench-lr@champion")
    inproc = in_process_seconds(pipes["bench-lr"].predict, one)
    inproc_pyfunc = in_process_seconds(pyfunc.predict, one)
    model_dir = mlflow.artifacts.download_artifacts("models:/bench-lr@champion",
                                                    dst_path=str(work / "model"))
    env = {"MLFLOW_TRACKING_URI": uri}
    d, rounds = args.duration, args.rounds
    ports = {k: free_port() for k in ("ours1", "ours", "mlserver", "stock")}
    repo = work / "mlserver"
    # MLServer's defaults but the ports and the host (parallel_workers 1: its default)
    write_repository(repo, {"bench-lr": (model_dir, "1")}, ports["mlserver"], free_port(),
                     free_port(), workers=1)
    mls = [str(mlserver_bin()), "start", str(repo)]
    ours1 = [sys.executable, "-m", "serving", "serve", "bench-lr@champion", "--port",
             str(ports["ours1"]), "--workers", "1", "--no-access-log"]
    ours = [sys.executable, "-m", "serving", "serve", "bench-lr@champion", "--port",
            str(ports["ours"])]
    stock = [sys.executable, "-m", "mlflow", "models", "serve", "-m",
             "models:/bench-lr@champion", "--env-manager", "local", "-p", str(ports["stock"])]
    url = {k: f"http://127.0.0.1:{p}" for k, p in ports.items()}
    infer = "/v2/models/bench-lr/infer"
    results = {}
    if args.part in ("all", "v2"):
        v2_rounds(wrk, mls, ours1, url, infer, bodies, lua, env, work, rounds, d, results)
    if args.part in ("all", "invocations"):
        invocation_rounds(wrk, stock, ours, url, bodies, lua, env, work, rounds, d, results)
    report(results, inproc, rounds, d)
    print(f"in-process pyfunc predict, 1 row (median): {inproc_pyfunc * 1e3:.3f} ms")
    shutil.rmtree(work, ignore_errors=True)
    return 0 if all(met for *_, met in _rows(results, inproc)) else 1


def v2_rounds(wrk, mls, ours1, url, infer, bodies, lua, env, work, rounds, d, results) -> None:
    """Ours (one worker) and MLServer (its defaults) on V2, alternating paired rounds."""
    with running(mls, f"{url['mlserver']}/v2/health/ready", "bench-mlserver", env=env, cwd=work,
                 timeout=240), \
         running(ours1, f"{url['ours1']}/ping", "bench-ours1", env=env, cwd=work, timeout=180):
        for base in (url["mlserver"], url["ours1"]):
            wrk_at(wrk, base, infer, bodies["v2-1"], lua, 2, 2)  # warm up
        print("V2 1 row, 1 connection, p50 (ms):")
        results["v2 p50"] = paired(
            "p50", rounds,
            lambda: wrk_at(wrk, url["ours1"], infer, bodies["v2-1"], lua, 1, d)["p50_ms"],
            lambda: wrk_at(wrk, url["mlserver"], infer, bodies["v2-1"], lua, 1, d)["p50_ms"],
            lambda o, m: m / o,
        )
        print("V2 1 row, 8 connections, one worker each (req/s):")
        results["v2 c8"] = paired(
            "c8", rounds,
            lambda: wrk_at(wrk, url["ours1"], infer, bodies["v2-1"], lua, 8, d)["rps"],
            lambda: wrk_at(wrk, url["mlserver"], infer, bodies["v2-1"], lua, 8, d)["rps"],
            lambda o, m: o / m,
        )


def invocation_rounds(wrk, stock, ours, url, bodies, lua, env, work, rounds, d, results) -> None:
    """Ours (defaults) and stock on /invocations, 1000 rows, alternating paired rounds."""
    with running(stock, f"{url['stock']}/ping", "bench-stock", env=env, cwd=work, timeout=180), \
         running(ours, f"{url['ours']}/ping", "bench-ours", env=env, cwd=work, timeout=180):
        time.sleep(3)  # every worker of ours up (the first one answers /ping)
        for base in (url["stock"], url["ours"]):
            wrk_at(wrk, base, "/invocations", bodies["split-1000"], lua, 2, 2)
        print("/invocations 1000 rows, 4 connections (req/s):")
        results["invocations 1000"] = paired(
            "1000", rounds,
            lambda: wrk_at(wrk, url["ours"], "/invocations", bodies["split-1000"], lua, 4,
                           d)["rps"],
            lambda: wrk_at(wrk, url["stock"], "/invocations", bodies["split-1000"], lua, 4,
                           d)["rps"],
            lambda o, s: o / s,
        )


def _rows(results: dict, inproc: float) -> list[tuple]:
    goal_p50 = inproc * 1e3 + 0.5
    rows = []
    if "v2 p50" in results:
        p50 = results["v2 p50"]
        rows += [
            ("V2 1 row, 1 conn: p50 ms (ours / MLServer)", p50, "x faster",
             f"ours <= {goal_p50:.2f} ms (in-process + 0.5)", p50["a_median"] <= goal_p50),
            ("V2 1 row, 8 conns, 1 worker each: req/s (ours / MLServer)", results["v2 c8"], "x",
             ">= 5x MLServer", results["v2 c8"]["median_ratio"] >= 5),
        ]
    if "invocations 1000" in results:
        rows.append(("/invocations 1000 rows, 4 conns: req/s (ours / stock)",
                     results["invocations 1000"], "x", ">= 10x stock",
                     results["invocations 1000"]["median_ratio"] >= 10))
    return rows


def report(results: dict, inproc: float, rounds: int, d: float) -> None:
    from rich.console import Console
    from rich.table import Table

    rows = _rows(results, inproc)
    table = Table(title=f"V2 and /invocations, {rounds} alternating paired rounds of {d:g}s")
    for col in ("comparison", "ours", "reference", "median ratio", "spread", "goal", "met"):
        table.add_column(col)
    for label, r, unit, goal, met in rows:
        table.add_row(label, f"{r['a_median']:,.2f}", f"{r['b_median']:,.2f}",
                      f"{r['median_ratio']:.2f}{unit}", f"{r['min']:.2f}-{r['max']:.2f}", goal,
                      "yes" if met else "NO")
    Console(width=170).print(table)
    print(f"in-process predict (the pipeline's own), 1 row (median): {inproc * 1e3:.3f} ms")
    print(f"failed requests: {FAILED or 'none'}")
    print(f"raw: {json.dumps(results)}")


if __name__ == "__main__":
    sys.exit(main())
