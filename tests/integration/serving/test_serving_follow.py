"""The server follows its alias under load: promote and rollback, no failed request.

Threads send requests continuously to a real 2-worker server while ``champion`` moves; every
request must succeed, and the new version must answer after the switch. (``--pin`` is tested
in test_serving_protocol.py, whose server is pinned.)
"""

from __future__ import annotations

import json
import threading
import time

import pytest
import requests

from tests.integration.serving.conftest import serving_process
from tests.support.serving_models import cancer_data, fit_pipeline, log_sklearn_version

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def servers(module_store):
    X, y = cancer_data()
    client = module_store.client
    v1 = log_sklearn_version(client, "cancer", fit_pipeline(X, y, C=1.0), X)
    v2 = log_sklearn_version(client, "cancer", fit_pipeline(X, y, C=0.01), X)
    client.set_registered_model_alias("cancer", "champion", v1)
    body = json.dumps({"dataframe_split": json.loads(X.head(1).to_json(orient="split",
                                                                        index=False))})
    with serving_process(module_store, "cancer@champion", "--poll-seconds", "0.5") as (url, _):
        yield {"url": url, "client": client, "v1": v1, "v2": v2, "body": body}


class Load:
    """Threads posting one-row requests back to back; records every outcome."""

    def __init__(self, url: str, body: str, threads: int = 4):
        self.url, self.body = url, body
        self.results: list[tuple[float, int, str]] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self):
        with requests.Session() as session:
            while not self._stop.is_set():
                try:
                    resp = session.post(f"{self.url}/invocations", data=self.body, timeout=10,
                                        headers={"Content-Type": "application/json"})
                    outcome = (time.monotonic(), resp.status_code,
                               resp.headers.get("X-Model-Version", ""))
                    with self._lock:
                        self.results.append(outcome)
                        if resp.status_code != 200 or "predictions" not in resp.json():
                            self.failures.append(f"{resp.status_code}: {resp.text[:200]}")
                except Exception as exc:  # a dropped connection is a failure too
                    with self._lock:
                        self.failures.append(repr(exc))

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join(15)

    def wait_for_version(self, version: str, timeout: float = 30, last: int = 40) -> bool:
        """Wait until the last ``last`` responses all came from ``version``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                tail = [v for _, _, v in self.results[-last:]]
            if len(tail) == last and set(tail) == {version}:
                return True
            time.sleep(0.1)
        return False


def _version(url: str) -> str:
    return requests.get(f"{url}/model", timeout=5).json()["model_version"]


def test_alias_moves_under_load_without_a_failed_request(servers):
    url, client = servers["url"], servers["client"]
    with Load(url, servers["body"]) as load:
        assert load.wait_for_version(servers["v1"], timeout=20)
        client.set_registered_model_alias("cancer", "champion", servers["v2"])  # promote
        assert load.wait_for_version(servers["v2"]), "the new version never answered"
        before_rollback = len(load.results)
        client.set_registered_model_alias("cancer", "champion", servers["v1"])  # rollback
        assert load.wait_for_version(servers["v1"]), "the rollback never answered"
    assert load.failures == []
    assert all(status == 200 for _, status, _ in load.results)
    assert len(load.results) > 100, "the load was not steady"
    # every answer names one of the two versions, and v2 answered between the two moves
    assert {v for _, _, v in load.results} == {servers["v1"], servers["v2"]}
    assert any(v == servers["v2"] for _, _, v in load.results[:before_rollback])
    assert _version(url) == servers["v1"]
