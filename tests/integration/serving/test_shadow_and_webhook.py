"""A real scoring server: shadow traffic logged on a run, and an alias swap on a webhook.

Real processes (``python -m serving serve``), a real registry; the webhook delivery is signed
with MLflow's own signer, exactly as its tracking server sends it.
"""

from __future__ import annotations

import json
import time
import uuid

import mlflow
import pytest
import requests
from mlflow.webhooks.delivery import _generate_hmac_signature

from core import shadow as names
from core.aliases import move_alias
from tests.integration.serving.conftest import serving_process, using_store
from tests.support.serving_models import cancer_data, fit_pipeline, log_sklearn_version

pytestmark = pytest.mark.integration

SECRET = "webhook-secret-for-the-test"


def body_of(rows) -> str:
    return json.dumps({"dataframe_split": json.loads(rows.to_json(orient="split", index=False))})


def test_same_model_registered_twice_agrees_fully(module_store):
    X, y = cancer_data()
    client = module_store.client
    with using_store(module_store):
        v1 = log_sklearn_version(client, "twice", fit_pipeline(X, y, C=1.0), X,
                                 tags={"mlops.task": "classification"})
        first = client.get_model_version("twice", v1)
        v2 = str(client.create_model_version("twice", first.source, first.run_id).version)
    move_alias(client, "twice", v1, "champion", reason="test", by="rita")
    move_alias(client, "twice", v2, "challenger", reason="test", by="alice")
    with serving_process(module_store, "twice@champion", "--shadow", "twice@challenger",
                         "--shadow-sample", "1", workers=1) as (url, _):
        with requests.Session() as session:
            for i in range(20):
                resp = session.post(f"{url}/invocations", data=body_of(X.iloc[i * 5:i * 5 + 5]),
                                    headers={"Content-Type": "application/json"}, timeout=10)
                assert resp.status_code == 200
                assert resp.headers["X-Model-Version"] == v1  # the champion answers
    # at shutdown the totals went to the shadow run, linked from the challenger version
    runs = names.shadow_runs(client, "twice", v2, champion=v1)
    assert len(runs) == 1
    run = runs[0]
    metrics = run.data.metrics
    assert metrics[names.REQUESTS] == 20 and metrics[names.ROWS] == 100
    assert metrics[names.AGREEMENT] == 1.0
    assert not [k for k in metrics if k.startswith(names.FLIPS_PREFIX)]
    assert metrics[names.LATENCY_CHAMPION_P50] > 0 and metrics[names.LATENCY_CHALLENGER_P50] > 0
    assert run.info.status == "FINISHED"
    assert (run.data.tags[names.TAG_CHAMPION_VERSION],
            run.data.tags[names.TAG_CHALLENGER_VERSION]) == (v1, v2)
    assert client.get_model_version("twice", v2).tags[names.TAG_VERSION_RUN] == run.info.run_id
    totals = names.shadow_totals(client, "twice", v2, champion=v1)
    assert (totals.requests, totals.agreement) == (20, 1.0)


def test_shadow_of_another_model_is_refused(module_store, monkeypatch):
    X, y = cancer_data()
    client = module_store.client
    with using_store(module_store):
        log_sklearn_version(client, "lonely", fit_pipeline(X, y), X)
    from click.testing import CliRunner

    from serving.cli import main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", module_store.uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", module_store.uri)
    with CliRunner().isolation() as (_, err, _):
        code = main(["serve", "lonely/1", "--shadow", "twice/1"])
    assert (code, err.getvalue().decode()) == (
        2, "error: Invalid value for '--shadow': twice/1 is not a version of lonely\n")


def deliver(url: str, name: str, alias: str, version: str, secret: str = SECRET) -> int:
    """POST a model_version_alias.created delivery as MLflow's tracking server does."""
    payload = json.dumps({"entity": "model_version_alias", "action": "created",
                          "timestamp": "2026-12-02T03:00:00+00:00",
                          "data": {"name": name, "alias": alias, "version": version}})
    delivery, stamp = str(uuid.uuid4()), str(int(time.time()))
    headers = {"Content-Type": "application/json", "X-MLflow-Delivery-Id": delivery,
               "X-MLflow-Timestamp": stamp,
               "X-MLflow-Signature": _generate_hmac_signature(secret, delivery, stamp, payload)}
    return requests.post(f"{url}/webhooks/mlflow", data=payload, headers=headers,
                         timeout=10).status_code


def register_through_server(store, pipe, X) -> str:
    """Log and register a version through the tracking server (as the workflow does)."""
    import sklearn

    with using_store(store), mlflow.start_run():
        info = mlflow.sklearn.log_model(
            pipe, name="model", input_example=X.head(2), registered_model_name="hooked",
            pip_requirements=[f"scikit-learn=={sklearn.__version__}"])
    return str(info.registered_model_version)


@pytest.mark.slow
def test_a_registry_webhook_swaps_every_worker_within_a_second(tmp_path, template_sqlite_db,
                                                                monkeypatch):
    """A real tracking server delivers the alias move to a real 2-worker scoring server."""
    import shutil

    from serving.webhooks import register
    from tests.conftest import _mlflow_server
    from tests.integration.serving.conftest import Store

    shutil.copy(template_sqlite_db, tmp_path / "server.db")
    # what the tracking server needs to post to a plain-http loopback receiver (see README)
    port, server = _mlflow_server(
        f"sqlite:///{tmp_path / 'server.db'}", str(tmp_path / "artifacts"),
        env={"MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "https,http",
             "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true", "MLFLOW_WEBHOOK_CACHE_TTL": "1"})
    X, y = cancer_data()
    monkeypatch.setenv("MLOPS_WEBHOOK_SECRET", SECRET)
    with server:
        uri = f"http://127.0.0.1:{port}"
        client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
        store = Store(uri, tmp_path, client)
        v1, v2 = (register_through_server(store, fit_pipeline(X, y, C=c), X) for c in (1, 0.01))
        move_alias(client, "hooked", v1, "champion", reason="test", by="rita")
        # polling every 10 minutes: only the webhook can make the swap this fast
        with serving_process(store, "hooked@champion", "--poll-seconds", "600",
                             workers=2) as (url, _):
            assert deliver(url, "hooked", "champion", v2, secret="not the secret") == 401
            register(client, "serve-hooked", f"{url}/webhooks/mlflow", SECRET)
            move_alias(client, "hooked", v2, "champion", reason="v2", by="rita")
            moved = time.monotonic()
            body = body_of(X.head(1))
            seen: list[tuple[float, str]] = []
            while time.monotonic() - moved < 5:
                # new connections: the kernel spreads them over both workers
                version = requests.post(f"{url}/invocations", data=body, timeout=5, headers={
                    "Content-Type": "application/json", "Connection": "close"}
                ).headers["X-Model-Version"]
                seen.append((time.monotonic() - moved, version))
                if [v for _, v in seen[-20:]] == [v2] * 20:
                    break
    assert [v for _, v in seen[-20:]] == [v2] * 20, seen[-30:]
    # from the first of 20 answers by v2 on fresh connections (both workers) on
    swapped = seen[-20][0]
    assert swapped < 1.0, f"every worker answered with v2 after {swapped:.2f} s"
