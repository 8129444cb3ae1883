"""A real serving process (2 workers, ``--pin``) speaks the MLflow scoring protocol.

Every input format gives the model's own pyfunc predictions; every bad request gets its 4xx
with a JSON message and the next good request still succeeds; access logs are JSON lines; the
pinned server keeps its version when the alias moves.
"""

from __future__ import annotations

import json
import time

import mlflow
import pytest
import requests

from tests.integration.serving.conftest import serving_process, using_store
from tests.support.serving_models import cancer_data, fit_pipeline, log_sklearn_version

pytestmark = pytest.mark.integration

MAX_BODY = 200_000


@pytest.fixture(scope="module")
def served(module_store):
    X, y = cancer_data()
    version = log_sklearn_version(module_store.client, "cancer", fit_pipeline(X, y), X)
    module_store.client.set_registered_model_alias("cancer", "champion", version)
    rows = X.sample(25, random_state=1)
    expected = mlflow.pyfunc.load_model("models:/cancer@champion").predict(rows).tolist()
    args = ("--max-body-bytes", str(MAX_BODY), "--pin", "--poll-seconds", "0.2")
    with serving_process(module_store, "cancer@champion", *args) as (url, proc):
        yield {"url": url, "proc": proc, "rows": rows, "expected": expected, "version": version,
               "store": module_store, "X": X, "y": y}


def _post(url, body, content_type="application/json", session=None):
    headers = {"Content-Type": content_type} if content_type else {}
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    return (session or requests).post(f"{url}/invocations", data=data, headers=headers, timeout=30)


def _formats(rows):
    split = json.loads(rows.to_json(orient="split", index=False))
    records = rows.to_dict(orient="records")
    return {
        "dataframe_split": {"dataframe_split": split},
        "dataframe_split_reordered": {
            "dataframe_split": json.loads(
                rows[list(reversed(rows.columns))].to_json(orient="split", index=False)
            )
        },
        "dataframe_records": {"dataframe_records": records},
        "instances": {"instances": records},
        "inputs": {"inputs": rows.to_dict(orient="list")},
    }


@pytest.mark.parametrize(
    "fmt",
    ["dataframe_split", "dataframe_split_reordered", "dataframe_records", "instances", "inputs",
     "csv"],
)
def test_every_format_gives_the_models_own_predictions(served, fmt):
    rows = served["rows"]
    if fmt == "csv":
        resp = _post(served["url"], rows.to_csv(index=False), "text/csv")
    else:
        resp = _post(served["url"], _formats(rows)[fmt])
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"predictions": served["expected"]}
    assert resp.headers["X-Model-Version"] == served["version"]
    assert resp.headers["X-Model-Name"] == "cancer"


def test_health_and_version(served):
    assert requests.get(f"{served['url']}/ping", timeout=5).status_code == 200
    assert requests.get(f"{served['url']}/health", timeout=5).status_code == 200
    info = requests.get(f"{served['url']}/model", timeout=5).json()
    assert info["model_name"] == "cancer"
    assert info["model_version"] == served["version"]
    assert info["alias"] == "champion"
    assert info["scorer"] == "sklearn"
    assert info["mlflow_version"] == mlflow.__version__


def _bad_requests(rows):
    one = rows.head(1)
    split = json.loads(one.to_json(orient="split", index=False))
    missing = {"columns": split["columns"][1:], "data": [r[1:] for r in split["data"]]}
    retyped = {"columns": split["columns"], "data": [["big", *split["data"][0][1:]]]}
    return {
        "malformed_json": ('{"dataframe_split": {', "application/json", 400, "malformed JSON"),
        "no_format_key": ({"rows": []}, "application/json", 400, "exactly one of"),
        "missing_column": ({"dataframe_split": missing}, "application/json", 400,
                           "missing columns ['mean radius']"),
        "retyped_column": ({"dataframe_split": retyped}, "application/json", 400,
                           "column 'mean radius' row 0: expected double"),
        "missing_content_type": ({"dataframe_split": split}, None, 415, "missing Content-Type"),
        "wrong_content_type": ({"dataframe_split": split}, "text/plain", 415,
                               "unsupported Content-Type"),
        "oversized_body": ({"dataframe_split": {"columns": split["columns"],
                                                "data": split["data"] * 1000}},
                           "application/json", 413, "larger than"),
        "empty_csv": ("", "text/csv", 400, "malformed CSV body"),
        "retyped_csv": (one.assign(**{"mean area": "big"}).to_csv(index=False), "text/csv", 400,
                        "column 'mean area' row 0: expected double, got str 'big'"),
    }


@pytest.mark.parametrize(
    "case",
    ["malformed_json", "no_format_key", "missing_column", "retyped_column",
     "missing_content_type", "wrong_content_type", "oversized_body", "empty_csv", "retyped_csv"],
)
def test_bad_request_gets_4xx_and_the_server_keeps_serving(served, case):
    body, content_type, status, message = _bad_requests(served["rows"])[case]
    with requests.Session() as session:
        resp = _post(served["url"], body, content_type, session)
        assert resp.status_code == status, resp.text
        assert resp.headers["Content-Type"] == "application/json"
        assert message in resp.json()["message"]
        good = _post(served["url"], _formats(served["rows"])["dataframe_split"], session=session)
    assert good.status_code == 200
    assert good.json() == {"predictions": served["expected"]}


def test_extra_columns_are_ignored_as_stock_ignores_them(served):
    rows = served["rows"]
    body = {"dataframe_split": json.loads(rows.assign(id=range(len(rows))).to_json(
        orient="split", index=False))}
    resp = _post(served["url"], body)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"predictions": served["expected"]}


def test_wrong_route_and_method(served):
    assert requests.get(f"{served['url']}/invocations", timeout=5).status_code == 405
    assert requests.get(f"{served['url']}/nope", timeout=5).status_code == 404


def test_access_log_is_json_lines(served):
    requests.post(f"{served['url']}/invocations", data="{", timeout=5,
                  headers={"Content-Type": "application/json"})
    for _ in range(50):  # the line is written just after the response
        lines = served["proc"].log_path.read_text().splitlines()
        records = [json.loads(line) for line in lines if line.startswith("{")]
        access = [r for r in records if r["logger"] == "serving.access"]
        if any(r["status"] == 400 and r["path"] == "/invocations" for r in access):
            break
        time.sleep(0.1)
    else:
        pytest.fail("no access-log line for the 400")
    assert len(records) == len(lines), "every log line is a JSON object"
    assert all({"method", "status", "ms", "model_version"} <= r.keys() for r in access)


def test_pinned_server_does_not_follow_the_alias(served):
    client, X, y = served["store"].client, served["X"], served["y"]
    with using_store(served["store"]):
        newer = log_sklearn_version(client, "cancer", fit_pipeline(X, y, C=0.01), X)
    client.set_registered_model_alias("cancer", "champion", newer)
    try:
        # watch it for eight poll intervals (0.2 s each): a following server would switch
        deadline = time.monotonic() + 8 * 0.2
        while time.monotonic() < deadline:
            seen = requests.get(f"{served['url']}/model", timeout=5).json()["model_version"]
            assert seen == served["version"], "the pinned server followed the alias"
            time.sleep(0.05)
        resp = _post(served["url"], _formats(served["rows"])["dataframe_split"])
        assert resp.status_code == 200
        assert resp.headers["X-Model-Version"] == served["version"]
        assert requests.get(f"{served['url']}/model", timeout=5).json()["model_version"] == (
            served["version"]
        )
    finally:
        client.set_registered_model_alias("cancer", "champion", served["version"])
