"""Two replicas of ``python -m tracking server`` on one PostgreSQL database and one S3 bucket.

What a team behind a load balancer relies on: both replicas start together on a fresh, empty
database (one migrates and creates the indexes, the other waits for it), writers on both lose nothing (runs, metrics, params,
artifacts, read back through the other replica), and promotions racing through both replicas
end with one winner and one complete history, and an MLflow webhook registered through one
replica is delivered (signed) for an alias moved through either. S3 is the moto server (AWS
cannot exist here).
"""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import threading

import mlflow
import pytest
from cryptography.fernet import Fernet
from mlflow.entities import Metric, Param

from core.aliases import read_history
from core.ledger import find_ledger
from tests.support.postgres import fresh_pg_database
from tests.support.processes import ARTIFACTS, child_env, free_port, stop, wait_healthy

pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.slow]

WRITERS_PER_REPLICA = 2
RUNS_PER_WRITER = 8
RACERS_PER_REPLICA = 2


@pytest.fixture(scope="module")
def replicas(moto_server, tmp_path_factory):
    """Two launcher processes started at the same moment, once for the module; their URLs."""
    with fresh_pg_database() as database, pytest.MonkeyPatch.context() as mp:
        yield from _replicas(database, moto_server, mp, tmp_path_factory.mktemp("replicas"))


@pytest.fixture(autouse=True)
def aws_variables(moto_server, monkeypatch):
    """The test's own clients reach moto too (the per-test isolation resets the environment)."""
    for key, value in _aws(moto_server).items():
        monkeypatch.setenv(key, value)


def _aws(moto_server: str) -> dict[str, str]:
    return {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1", "MLFLOW_S3_ENDPOINT_URL": moto_server,
            "AWS_ENDPOINT_URL": moto_server}  # fmt: skip


def _replicas(pg_database, moto_server, monkeypatch, tmp_path):
    import boto3

    aws = _aws(moto_server)
    for key, value in aws.items():
        monkeypatch.setenv(key, value)
    boto3.client("s3", endpoint_url=moto_server).create_bucket(Bucket="replicas")
    env = child_env({**aws, "MLFLOW_BACKEND_STORE_URI": pg_database,
                     "MLFLOW_ARTIFACTS_DESTINATION": "s3://replicas/artifacts",
                     # the test's webhook receiver is plain http on loopback; a replica reads
                     # the webhooks other replicas registered after this cache time
                     "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "https,http",
                     "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
                     "MLFLOW_WEBHOOK_CACHE_TTL": "1",
                     # one key for the webhook secrets of every replica (see README)
                     "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": Fernet.generate_key().decode()})  # fmt: skip
    ports = [free_port(), free_port()]
    ARTIFACTS.mkdir(exist_ok=True)
    procs, logs = [], []
    for i, port in enumerate(ports):
        log = ARTIFACTS / f"replica-{i}-{port}.log"
        with open(log, "wb") as out:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "tracking", "server", "--port", str(port), "--workers",
                 "2"], cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True))  # fmt: skip
        logs.append(log)
    try:
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        for url, proc, log in zip(urls, procs, logs, strict=True):
            wait_healthy(f"{url}/health", proc, 240, log)
        yield urls
    finally:
        for proc in procs:
            stop(proc)


def _writer(url: str, experiment_id: str, who: str, errors: list) -> None:
    try:
        client = mlflow.MlflowClient(tracking_uri=url)
        for i in range(RUNS_PER_WRITER):
            run = client.create_run(experiment_id, run_name=f"{who}-{i}", tags={"writer": who})
            run_id = run.info.run_id
            metrics = [Metric(f"m{k}", float(i * 10 + k), 0, 0) for k in range(10)]
            params = [Param(f"p{k}", f"{who}-{k}") for k in range(5)]
            client.log_batch(run_id, metrics=metrics, params=params)
            client.log_text(run_id, f"{who} {i}", "notes/run.txt")
            client.set_terminated(run_id)
    except Exception as exc:  # noqa: BLE001 - reported by the test
        errors.append(f"{who}: {exc!r}")


def test_writers_on_both_replicas_lose_nothing(replicas):
    a, b = replicas
    experiment_id = mlflow.MlflowClient(tracking_uri=a).create_experiment("replicas")
    errors: list[str] = []
    threads = [
        threading.Thread(target=_writer, args=(url, experiment_id, f"{r}{w}", errors))
        for r, url in enumerate(replicas) for w in range(WRITERS_PER_REPLICA)
    ]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join(240)
    assert errors == []

    expected = len(threads) * RUNS_PER_WRITER
    for url in (a, b):  # each replica sees every write, whichever replica took it
        client = mlflow.MlflowClient(tracking_uri=url)
        runs = client.search_runs([experiment_id], max_results=1000)
        assert len(runs) == expected
        assert {r.info.run_name for r in runs} == {
            f"{rr}{w}-{i}" for rr in range(2) for w in range(WRITERS_PER_REPLICA)
            for i in range(RUNS_PER_WRITER)
        }  # fmt: skip
        for run in runs:
            i = int(run.info.run_name.rsplit("-", 1)[1])
            assert run.data.metrics == {f"m{k}": float(i * 10 + k) for k in range(10)}
            assert len(run.data.params) == 5 and run.info.status == "FINISHED"
    # artifacts written through one replica are read through the other (one bucket)
    sample = runs[:4]
    other = mlflow.MlflowClient(tracking_uri=a)
    for run in sample:
        path = other.download_artifacts(run.info.run_id, "notes/run.txt")
        with open(path) as f:
            assert f.read() == f"{run.data.tags['writer']} {run.info.run_name.rsplit('-', 1)[1]}"


def _racer(url, name, version, barrier, results):
    """Read the alias state, wait for every racer, then claim the move through ``url``."""
    from mlflow.utils import request_utils

    from core.aliases import move_alias, read_state
    from core.errors import LostRace

    request_utils._cached_get_request_session.cache_clear()
    client = mlflow.MlflowClient(url, url)
    barrier.wait(timeout=120)
    state = read_state(client, name, "champion")
    barrier.wait(timeout=120)  # everyone has seen "no champion" before anyone claims
    try:
        out = move_alias(client, name, version, "champion", "race", f"p{version}", state=state)
        results.put((version, out.status))
    except LostRace:
        results.put((version, "lost"))
    except Exception as exc:  # noqa: BLE001 - reported to the test
        results.put((version, f"error {exc!r}"))


def test_promotions_through_both_replicas_have_one_winner(replicas):
    a, b = replicas
    client = mlflow.MlflowClient(a, a)
    name = "replicated"
    client.create_registered_model(name)
    run_id = client.create_run(client.create_experiment("models")).info.run_id
    racers = RACERS_PER_REPLICA * 2
    versions = [
        client.create_model_version(name, f"runs:/{run_id}/model", run_id).version
        for _ in range(racers)
    ]
    urls = [a, b] * RACERS_PER_REPLICA
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(racers), ctx.Queue()
    procs = [ctx.Process(target=_racer, args=(url, name, str(v), barrier, results))
             for url, v in zip(urls, versions, strict=True)]  # fmt: skip
    for p in procs:
        p.start()
    outcomes = dict(results.get(timeout=240) for _ in range(racers))
    for p in procs:
        p.join(timeout=60)

    winners = [v for v, status in outcomes.items() if status == "promoted"]
    assert len(winners) == 1, outcomes
    assert {s for v, s in outcomes.items() if v not in winners} == {"lost"}, outcomes
    for url in (a, b):  # both replicas tell the same story
        reader = mlflow.MlflowClient(url, url)
        assert reader.get_registered_model(name).aliases["champion"] == winners[0]
        history = read_history(reader, name, "champion")
        assert sorted(h.version for h in history) == sorted(str(v) for v in versions)
        assert [h.version for h in history if h.outcome == "won"] == winners
        assert find_ledger(reader).head(name, "champion") == (1, winners[0])



def test_a_webhook_fires_whichever_replica_takes_the_move(replicas):
    """Registered through A (MLflow's webhooks API), delivered for moves through B and A."""
    import time

    from core.aliases import move_alias
    from serving.online.webhooks import Receiver, register

    a, b = replicas
    secret = "replicas-webhook-secret"
    events: list = []
    receiver = Receiver("127.0.0.1", 0, events.append, secret).start()  # HMAC verified
    try:
        client_a, client_b = mlflow.MlflowClient(a, a), mlflow.MlflowClient(b, b)
        name = "hooked"
        client_a.create_registered_model(name)
        run_id = client_a.create_run(client_a.create_experiment("hooked")).info.run_id
        v1, v2 = (client_a.create_model_version(name, f"runs:/{run_id}/model", run_id).version
                  for _ in range(2))  # fmt: skip
        register(client_a, "replicas-test", f"http://127.0.0.1:{receiver.port}/webhooks/mlflow",
                 secret)  # fmt: skip
        time.sleep(1.5)  # past MLFLOW_WEBHOOK_CACHE_TTL: B may have cached "no webhooks"

        def delivered(version: str) -> bool:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if any(e.version == version and e.action == "created" for e in events):
                    return True
                time.sleep(0.2)
            return False

        for client, version in ((client_b, v1), (client_a, v2)):
            move_alias(client, name, version, "staging", "webhook test")
            assert delivered(str(version)), (version, events)
        assert {(e.name, e.alias) for e in events} == {(name, "staging")}
    finally:
        receiver.stop()
