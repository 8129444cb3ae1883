"""A model the fast path cannot take (a custom pyfunc ``PythonModel``) is served by pyfunc.

Served from a ``runs:/`` URI by a real one-worker process: predictions equal the model's own,
for JSON and CSV, and a bad request is still a 4xx with a JSON message.
"""

from __future__ import annotations

import mlflow
import pandas as pd
import pytest
import requests

from tests.integration.serving.conftest import serving_process
from tests.support.serving_models import log_custom_pyfunc

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def served(module_store):
    uri = log_custom_pyfunc()
    rows = pd.DataFrame({"a": [1.0, -2.5, 10.0], "b": [0.5, 4.0, -1.0]})
    expected = mlflow.pyfunc.load_model(uri).predict(rows).tolist()
    with serving_process(module_store, uri, workers=1) as (url, _):
        yield {"url": url, "rows": rows, "expected": expected, "uri": uri}


def test_custom_model_is_served_through_pyfunc(served):
    url, rows = served["url"], served["rows"]
    info = requests.get(f"{url}/model", timeout=5).json()
    assert info["scorer"] == "pyfunc"
    assert info["model_uri"] == served["uri"]
    assert served["expected"] == [2.5, -1.0, 19.0]
    json_body = {"dataframe_split": rows.to_dict(orient="split", index=False)}
    for kwargs in (
        {"json": json_body},
        {"json": {"dataframe_records": rows.to_dict(orient="records")}},
        {"data": rows.to_csv(index=False), "headers": {"Content-Type": "text/csv"}},
    ):
        resp = requests.post(f"{url}/invocations", timeout=30, **kwargs)
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"predictions": served["expected"]}


def test_bad_requests_to_a_pyfunc_model_get_4xx(served):
    url = served["url"]
    missing = requests.post(f"{url}/invocations", timeout=30,
                            json={"dataframe_split": {"columns": ["a"], "data": [[1.0]]}})
    assert missing.status_code == 400
    assert "b" in missing.json()["message"]
    no_type = requests.post(f"{url}/invocations", data=b'{"inputs": {"a": [1], "b": [2]}}',
                            timeout=30)
    assert no_type.status_code == 415
    good = requests.post(f"{url}/invocations", timeout=30,
                         json={"inputs": {"a": [1.0], "b": [2.0]}})
    assert good.status_code == 200 and good.json() == {"predictions": [4.0]}
