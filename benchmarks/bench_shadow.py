"""Shadow traffic's cost to the champion: p50 at 1 and 8 connections, without and with it.

The same model, payload and load generator (wrk) against ``python -m serving serve
bench-lr@champion`` (one worker) without and with ``--shadow bench-lr@challenger
--shadow-sample S`` (the challenger is a second version of the same model, so it costs what
the champion costs), alternating runs side by side; a shadowed server is measured once its
shadow process has loaded the challenger. Goal: the champion's p50 grows by at most
0.1 ms at 1 connection.

Usage: ``python benchmarks/bench_shadow.py [--duration 6] [--rounds 2] [--sample 0.1]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from bench_serving import LUA, ensure_wrk, log_models, run_wrk

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.processes import free_port, running  # noqa: E402


def wait_for_shadow_run(client, version: str, count: int, timeout: float = 180) -> None:
    """Wait until ``count`` shadow runs exist (the shadow process creates its run when ready)."""
    import time

    from core.shadow import shadow_runs

    deadline = time.monotonic() + timeout
    while len(shadow_runs(client, "bench-lr", version)) < count:
        if time.monotonic() > deadline:
            raise SystemExit("error: the shadow process never started")
        time.sleep(0.5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sample", type=float, default=0.1)
    args = parser.parse_args()
    wrk = ensure_wrk()
    work = Path(tempfile.mkdtemp(prefix="bench-shadow-"))
    uri, X, _ = log_models(work)
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    champion = client.get_model_version_by_alias("bench-lr", "champion")
    second = client.create_model_version("bench-lr", champion.source, champion.run_id)
    client.set_registered_model_alias("bench-lr", "challenger", second.version)
    body = work / "row.json"
    body.write_text(json.dumps({"dataframe_split": json.loads(
        X.head(1).to_json(orient="split", index=False))}))
    lua = work / "post.lua"
    lua.write_text(LUA)
    env = {"MLFLOW_TRACKING_URI": uri}
    p50: dict[tuple[int, str], list[float]] = {}
    for rnd in range(args.rounds):
        for mode in ("off", "on"):
            port = free_port()
            cmd = [sys.executable, "-m", "serving", "serve", "bench-lr@champion", "--port",
                   str(port), "--workers", "1", "--no-access-log"]
            if mode == "on":
                cmd += ["--shadow", "bench-lr@challenger", "--shadow-sample", str(args.sample)]
            with running(cmd, f"http://127.0.0.1:{port}/ping", f"bench-shadow-{mode}", env=env,
                         cwd=work, timeout=180):
                url = f"http://127.0.0.1:{port}"
                if mode == "on":  # measure once the shadow process has loaded the challenger
                    wait_for_shadow_run(client, second.version, rnd + 1)
                run_wrk(wrk, url, body, lua, 2, 1)  # warm up
                for conns in (1, 8):
                    res = run_wrk(wrk, url, body, lua, conns, args.duration)
                    p50.setdefault((conns, mode), []).append(res["p50_ms"])
                    print(f"round {rnd + 1} shadow {mode:3} {conns} conn: p50 "
                          f"{res['p50_ms']:.3f} ms, {res['rps']:.0f} req/s, "
                          f"{res['errors']} errors")
    print(f"\nchampion p50, median of {args.rounds} rounds (sample {args.sample:g}):")
    print(f"{'connections':>11}  {'no shadow':>10}  {'shadow':>10}  {'added':>9}  ratio")
    for conns in (1, 8):
        off = statistics.median(p50[(conns, "off")])
        on = statistics.median(p50[(conns, "on")])
        print(f"{conns:>11}  {off:>8.3f}ms  {on:>8.3f}ms  {on - off:>+7.3f}ms  {on / off:.2f}x")
    added = statistics.median(p50[(1, "on")]) - statistics.median(p50[(1, "off")])
    verdict = "met" if added <= 0.1 else "MISSED"
    print(f"goal: at most +0.1 ms at 1 connection: {verdict} ({added:+.3f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
