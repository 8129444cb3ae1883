"""Concurrent alias moves: MLflow's plain alias write vs the registry's compare-and-set.

Starts a real ``mlflow server`` (SQLite, or PostgreSQL with ``--postgres``), registers 8
versions, then, side by side in one run:

* races: 8 processes released at one instant by a barrier, ROUNDS rounds each way: how many
  processes were told they won, and whether the alias ended with a process that was told so;
* cost: the time of one uncontended alias move, plain write vs compare-and-set (incl. records).

    .venv/bin/python benchmarks/bench_registry_cas.py [--rounds 10] [--postgres] [--quick]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RACERS = 8


def _fresh_session():
    from mlflow.utils import request_utils

    request_utils._cached_get_request_session.cache_clear()


def _plain_racer(uri, name, version, barrier, out, rounds):
    import mlflow

    from core.models import alias_holder

    _fresh_session()
    client = mlflow.MlflowClient(uri, uri)
    for r in range(rounds):
        barrier.wait()
        alias_holder(client, name, "champion")  # what a careful script would read first
        barrier.wait()
        try:
            client.set_registered_model_alias(name, "champion", version)
            out.put((r, version, "told it won"))
        except Exception as exc:  # noqa: BLE001 - counted, shown below
            out.put((r, version, f"error: {str(exc).splitlines()[0][:120]}"))
        barrier.wait()


def _cas_racer(uri, name, version, barrier, out, rounds):
    import mlflow

    from core.aliases import move_alias, read_state
    from core.errors import LostRace

    _fresh_session()
    client = mlflow.MlflowClient(uri, uri)
    for r in range(rounds):
        barrier.wait()
        state = read_state(client, name, "champion")
        barrier.wait()
        try:
            status = move_alias(client, name, version, "champion", f"round {r}", "bench",
                                state=state).status
        except LostRace:
            status = "lost"
        out.put((r, version, "told it won" if status == "promoted" else status))
        barrier.wait()


def race(target, uri, name, versions, rounds, final_alias):
    """Run one racing mode; returns (mean processes told they won, rounds ending consistent)."""
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(len(versions)), ctx.Queue()
    procs = [ctx.Process(target=target, args=(uri, name, v, barrier, out, rounds))
             for v in versions]
    for p in procs:
        p.start()
    results = [out.get(timeout=300) for _ in range(len(versions) * rounds)]
    for p in procs:
        p.join(60)
    told = [sum(1 for rr, _, s in results if rr == r and s == "told it won") for r in range(rounds)]
    errors = sorted({s for _, _, s in results if s.startswith("error")})
    for e in errors:
        print(f"  {target.__name__}: {e}")
    last_winners = {v for rr, v, s in results if rr == rounds - 1 and s == "told it won"}
    # With the plain write, every racer is told it won, yet only one write survives.
    consistent = len(last_winners) == 1 and final_alias() in last_winners
    return statistics.mean(told), consistent


def round_trips(move) -> int:
    """How many REST requests ``move()`` sends (a measure the machine's load does not skew)."""
    from mlflow.utils import rest_utils

    sent = 0
    original = rest_utils.http_request

    def counting(*args, **kwargs):
        nonlocal sent
        sent += 1
        return original(*args, **kwargs)

    rest_utils.http_request = counting
    try:
        move()
    finally:
        rest_utils.http_request = original
    return sent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--moves", type=int, default=15, help="uncontended moves timed per mode")
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--quick", action="store_true",
                        help="3 rounds, 5 moves (as make bench runs it)")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.moves = min(args.rounds, 3), min(args.moves, 5)

    import logging
    import warnings

    import mlflow

    from core.aliases import move_alias
    from tests.integration.registry.conftest import log_candidate, register, start_server

    warnings.filterwarnings("ignore")
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    kind = "postgres" if args.postgres else "sqlite"
    with tempfile.TemporaryDirectory() as tmp:
        template = Path(tmp) / "template.db"
        mlflow.MlflowClient(tracking_uri=f"sqlite:///{template}").search_experiments()
        with start_server(kind, template, Path(tmp)) as uri:
            client = mlflow.MlflowClient(uri, uri)
            logged = log_candidate(uri, n_features=4)
            plain_name, cas_name = "bench-plain", "bench-cas"
            plain_versions = [register(uri, plain_name, logged) for _ in range(RACERS)]
            cas_versions = [register(uri, cas_name, logged) for _ in range(RACERS)]

            def alias_of(name):
                return lambda: client.get_registered_model(name).aliases.get("champion")

            plain_told, plain_ok = race(_plain_racer, uri, plain_name, plain_versions,
                                        args.rounds, alias_of(plain_name))
            cas_told, cas_ok = race(_cas_racer, uri, cas_name, cas_versions, args.rounds,
                                    alias_of(cas_name))

            t0 = time.perf_counter()
            for i in range(args.moves):
                client.set_registered_model_alias(plain_name, "champion",
                                                  plain_versions[i % 2])
            plain_ms = (time.perf_counter() - t0) / args.moves * 1000
            t0 = time.perf_counter()
            for i in range(args.moves):
                move_alias(client, cas_name, cas_versions[i % 2], "champion", "bench", "bench")
            cas_ms = (time.perf_counter() - t0) / args.moves * 1000
            plain_trips = round_trips(lambda: client.set_registered_model_alias(
                plain_name, "champion", plain_versions[2]))
            cas_trips = round_trips(lambda: move_alias(client, cas_name, cas_versions[2],
                                                       "champion", "bench", "bench"))

    print(f"backend: {kind}; {RACERS} racers x {args.rounds} rounds released by a barrier")
    print(f"plain set_registered_model_alias: {plain_told:.1f} racers told they won per round; "
          f"alias matches a single winner: {plain_ok}")
    print(f"compare-and-set (core.aliases):   {cas_told:.1f} racers told they won per round; "
          f"alias matches a single winner: {cas_ok}")
    print(f"uncontended move: plain {plain_ms:.1f} ms, compare-and-set {cas_ms:.1f} ms "
          f"(x{cas_ms / plain_ms:.1f}: record, claim, version tags, alias, reconcile)")
    print(f"requests per move: plain {plain_trips}, compare-and-set {cas_trips}")
    return 0 if cas_ok and cas_told == 1 else 1


if __name__ == "__main__":
    raise SystemExit(main())
