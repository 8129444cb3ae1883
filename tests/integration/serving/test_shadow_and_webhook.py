"""A real scoring server: shadow traffic logged on a run, and an alias swap on a webhook.

Real processes (``python -m serving serve``), a real registry; the webhook delivery is signed
with MLflow's own signer, exactly as its tracking server sends it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import mlflow
import pytest
import requests
from mlflow.webhooks.delivery import _generate_hmac_signature

from core import shadow as names
from core.aliases import move_alias
from tests.integration.serving.conftest import serving_process, using_store
from tests.support.processes import ARTIFACTS, child_env, free_port, running, stop, wait_healthy
from tests.support.serving_models import cancer_data, fit_pipeline, log_sklearn_version

pytestmark = pytest.mark.integration

SECRET = "webhook-secret-for-the-test"


def body_of(rows) -> str:
    return json.dumps({"dataframe_split": json.loads(rows.to_json(orient="split", index=False))})


def test_shadow_of_another_model_is_refused(module_store, monkeypatch):
    X, y = cancer_data()
    client = module_store.client
    with using_store(module_store):
        log_sklearn_version(client, "lonely", fit_pipeline(X, y), X)
        first = client.get_model_version("lonely", "1")
        client.create_registered_model("twice")
        client.create_model_version("twice", first.source, first.run_id)
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


def register_through_server(store, pipe, X) -> tuple[str, str]:
    """Log and register a version through the tracking server; return (version, model URI)."""
    import sklearn

    with using_store(store), mlflow.start_run():
        info = mlflow.sklearn.log_model(
            pipe, name="model", input_example=X.head(2), registered_model_name="hooked",
            pip_requirements=[f"scikit-learn=={sklearn.__version__}"])
    return str(info.registered_model_version), info.model_uri


ENDPOINT = "hooked-endpoint"


def follow_cmd(port: int, metrics_port: int) -> list[str]:
    """``sagemaker follow`` as a service taking the tracking server's webhooks on ``port``."""
    return [sys.executable, "-m", "serving", "sagemaker", "follow", "hooked@champion",
            "--endpoint", ENDPOINT, "--poll-seconds", "600", "--listen", f"127.0.0.1:{port}",
            "--webhook-url", f"http://127.0.0.1:{port}/webhooks/mlflow",
            "--metrics-port", str(metrics_port)]


def follow_env(uri: str) -> dict[str, str]:
    """The follower's environment: AWS is nowhere (mocked by absence: every pass reports it
    unreachable; the rollouts themselves are tested against the SageMaker double in
    test_sagemaker_follow.py)."""
    return {"MLFLOW_TRACKING_URI": uri, "MLOPS_WEBHOOK_SECRET": SECRET, "PYTHONUNBUFFERED": "1",
            "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
            "AWS_MAX_ATTEMPTS": "1", "MLOPS_SAGEMAKER_EXECUTION_ROLE_ARN":
            "arn:aws:iam::123456789012:role/sm", "MLOPS_SAGEMAKER_BUCKET": "b",
            "MLFLOW_SAGEMAKER_DEPLOY_IMG_URL": "123456789012.dkr.ecr.us-east-1.amazonaws.com/x:1"}


def wait_for_output(log: Path, pattern: str, timeout: float = 60) -> re.Match:
    deadline = time.monotonic() + timeout
    while not (found := re.search(pattern, log.read_text(errors="replace"))):
        assert time.monotonic() < deadline, f"no {pattern!r} in:\n{log.read_text()}"
        time.sleep(0.1)
    return found


def shadow_counters(url: str) -> tuple[float, ...]:
    """``GET /metrics``: shadowed requests, rows compared, rows agreed (every worker's)."""
    text = requests.get(f"{url}/metrics", timeout=5).text
    return tuple(sum(float(v) for v in re.findall(
        rf"^mlops_serving_shadow_{name}_total(?:{{[^}}]*}})? ([\d.e+]+)$", text, re.M))
        for name in ("requests", "rows", "agreed_rows"))


def deliveries(metrics_port: int) -> dict[str, float]:
    text = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    return {m[0]: float(m[1]) for m in re.findall(
        r'mlops_sagemaker_follow_webhook_deliveries_total\{result="(\w+)"\} ([\d.]+)', text)}


@pytest.mark.slow
def test_shadow_agrees_fully_and_a_registry_webhook_swaps_every_worker(
        tmp_path, template_sqlite_db, monkeypatch):
    """One real tracking server and one real 2-worker scoring server, two things checked.

    1. Shadow: the champion and the challenger are the same model registered twice, so the
       shadow runs (one per worker) report agreement 1.0, linked from the challenger.
    2. Webhook: the tracking server delivers the next move of champion to the scoring server,
       and every worker answers with the new version within a second (polling: 10 min).
    3. ``sagemaker follow --webhook-url`` registers its webhook on the tracking server once
       (a restart reuses it), and the server's signed delivery of a move reaches it.
    """
    import shutil

    from mlflow.tracking._model_registry.client import ModelRegistryClient

    from serving.online.webhooks import register
    from tests.conftest import _mlflow_server
    from tests.integration.serving.conftest import Store

    shutil.copy(template_sqlite_db, tmp_path / "server.db")
    # what the tracking server needs to post to a plain-http loopback receiver (see README)
    port, server = _mlflow_server(
        f"sqlite:///{tmp_path / 'server.db'}", str(tmp_path / "artifacts"),
        env={"MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "https,http",  # names as mlflow reads them
             "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true", "MLFLOW_WEBHOOK_CACHE_TTL": "1"})
    X, y = cancer_data()
    monkeypatch.setenv("MLOPS_WEBHOOK_SECRET", SECRET)
    with server:
        uri = f"http://127.0.0.1:{port}"
        client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
        store = Store(uri, tmp_path, client)
        v1, model_uri = register_through_server(store, fit_pipeline(X, y, C=1.0), X)
        client.set_model_version_tag("hooked", v1, "mlops.task", "classification")
        with using_store(store):  # the same model, registered again
            twin = str(mlflow.register_model(model_uri, "hooked").version)
        v3, _ = register_through_server(store, fit_pipeline(X, y, C=0.01), X)
        move_alias(client, "hooked", v1, "champion", reason="test", by="rita")
        move_alias(client, "hooked", twin, "challenger", reason="test", by="alice")
        follow_port, follow_metrics = free_port(), free_port()
        ARTIFACTS.mkdir(exist_ok=True)
        first_log = ARTIFACTS / f"sagemaker-follow-{time.time_ns()}.log"
        with open(first_log, "wb") as out:  # starts while the scoring server starts
            first = subprocess.Popen(follow_cmd(follow_port, follow_metrics), stdout=out,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     env=child_env(follow_env(uri)))
        try:
            with serving_process(store, "hooked@champion", "--poll-seconds", "600",
                                 "--shadow", "hooked@challenger", "--shadow-sample", "1",
                                 workers=2) as (url, scoring):
                # each worker's shadow process has loaded the challenger once its run exists
                deadline = time.monotonic() + 120
                while len(names.shadow_runs(client, "hooked", twin)) < 2:
                    assert time.monotonic() < deadline, "the shadow processes never started"
                    time.sleep(0.5)
                for i in range(20):  # new connections: the kernel spreads them over both workers
                    resp = requests.post(f"{url}/invocations", data=body_of(X.iloc[i * 5:i * 5 + 5]),
                                         headers={"Content-Type": "application/json",
                                                  "Connection": "close"}, timeout=10)
                    assert (resp.status_code, resp.headers["X-Model-Version"]) == (200, v1)
                # the shadow processes count in the server's Prometheus metrics too
                deadline = time.monotonic() + 30
                while (counted := shadow_counters(url)) != (20, 100, 100):
                    assert time.monotonic() < deadline, counted
                    time.sleep(0.2)

                assert deliver(url, "hooked", "champion", v3, secret="not the secret") == 401
                register(client, "serve-hooked", f"{url}/webhooks/mlflow", SECRET)
                # the move: when move_alias (33 round trips) sends the alias write itself
                alias_set: list[float] = []
                write = ModelRegistryClient.set_registered_model_alias

                def timed(self, *args, **kwargs):
                    alias_set.append(time.monotonic())
                    return write(self, *args, **kwargs)

                with pytest.MonkeyPatch.context() as patch:
                    patch.setattr(ModelRegistryClient, "set_registered_model_alias", timed)
                    move_alias(client, "hooked", v3, "champion", reason="v3", by="rita")
                moved = alias_set[0]
                body = body_of(X.head(1))
                seen: list[tuple[float, str]] = []
                while time.monotonic() - moved < 5:
                    version = requests.post(f"{url}/invocations", data=body, timeout=5, headers={
                        "Content-Type": "application/json", "Connection": "close"}
                    ).headers["X-Model-Version"]
                    seen.append((time.monotonic() - moved, version))
                    if [v for _, v in seen[-20:]] == [v3] * 20:
                        break
            swap_log = [line for line in scoring.log_path.read_text().splitlines()
                        if "switched" in line or "alias moved" in line]
            wait_healthy(f"http://127.0.0.1:{follow_port}/ping", first, 60, first_log)
            registered = wait_for_output(first_log, r"webhook (\S+) posts alias moves").group(1)
        finally:
            stop(first)
        # 3. sagemaker follow, restarted: the webhook it registered is reused, not doubled, and
        #    the tracking server's signed delivery of the next move reaches it
        with running(follow_cmd(follow_port, follow_metrics),
                     f"http://127.0.0.1:{follow_port}/ping", "sagemaker-follow",
                     env=follow_env(uri)) as again:
            found = wait_for_output(again.log_path, r"webhook (\S+) posts alias moves").group(1)
            hooks = [h.webhook_id for h in client.list_webhooks(max_results=100)
                     if h.name == f"mlops-follow-{ENDPOINT}"]
            first_pass = wait_for_output(again.log_path, r"(?m)^error: .*$").group(0)
            move_alias(client, "hooked", v1, "champion", reason="back to v1", by="rita")
            deadline = time.monotonic() + 30
            while not deliveries(follow_metrics).get("accepted"):
                assert time.monotonic() < deadline, again.log_path.read_text()
                time.sleep(0.1)
            # the delivery woke it (polling: 10 minutes): a second pass, AWS unreachable here
            wait_for_output(again.log_path, r"(?m)^error: (.|\n)*^error: ")
            received = deliveries(follow_metrics)
        # the server has stopped: each worker logged its totals and ended its run
        runs = names.shadow_runs(client, "hooked", twin, champion=v1)
        totals = names.shadow_totals(client, "hooked", twin, champion=v1)
        linked = client.get_model_version("hooked", twin).tags.get(names.TAG_VERSION_RUN)

    assert [v for _, v in seen[-20:]] == [v3] * 20, seen[-30:]
    # from the first of 20 answers by v3 on fresh connections (both workers) on
    swapped = seen[-20][0]
    # within a second of the alias write, with the new version's download and load (polling
    # alone would take up to 10 minutes)
    assert swapped < 1.0, f"every worker answered with v3 after {swapped:.2f} s: {swap_log}"

    assert (hooks, found) == ([registered], registered)  # one webhook, reused on restart
    assert first_pass.startswith("error: ")  # AWS is nowhere: each pass says so
    assert received == {"accepted": 1.0, "refused": 0.0}  # signed with the secret: verified

    # every answer by v1 was shadowed (20 of 5 rows, then 1-row ones until a worker swapped);
    # answers by v3 are not counted against champion v1
    late = sum(v == v1 for _, v in seen)
    assert (totals.requests, totals.rows, totals.agreement) == (20 + late, 100 + late, 1.0)
    assert 1 <= len(runs) <= 2
    assert linked in {r.info.run_id for r in runs}
    for run in runs:
        metrics = run.data.metrics
        assert run.info.status == "FINISHED"
        assert (run.data.tags[names.TAG_CHAMPION_VERSION],
                run.data.tags[names.TAG_CHALLENGER_VERSION]) == (v1, twin)
        assert not [k for k in metrics if k.startswith(names.FLIPS_PREFIX)]
        if metrics[names.REQUESTS]:
            assert metrics[names.AGREEMENT] == 1.0
            assert metrics[names.LATENCY_CHAMPION_P50] > 0
            assert metrics[names.LATENCY_CHALLENGER_P50] > 0
