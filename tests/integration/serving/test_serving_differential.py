"""Ours and stock ``mlflow models serve`` side by side: same requests, same answers.

Real processes on both sides (one worker each), the same registered models, the same corpus of
good and bad requests (``tests/support/scoring_corpus.py``). Where stock answers 200, ours
answers 200 with the same predictions (labels equal, numbers to 1e-9); where stock answers 4xx
or 5xx, ours answers 4xx. One deliberate difference: a CSV row with more or fewer fields than
the header is a 400 naming the row (pandas would shift every column or pad with nulls).
"""

from __future__ import annotations

import contextlib
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import mlflow
import pytest
import requests

from tests.integration.serving.conftest import using_store
from tests.support.processes import ARTIFACTS, child_env, free_port, stop, wait_healthy
from tests.support.scoring_corpus import CSV_FIELD_COUNT, corpus
from tests.support.serving_models import (
    cancer_data,
    fit_diabetes_forest,
    fit_penguins,
    fit_pipeline,
    log_custom_pyfunc,
    log_sklearn_version,
    penguins_data,
)

pytestmark = pytest.mark.integration


def _models(store) -> dict:
    """name -> (model reference, a few input rows, many input rows).

    Also writes each sklearn model's own training file (features and target, as trained on)
    to ``store.path / "NAME-train.csv"``, for the batch comparison.
    """
    import pandas as pd

    out = {}
    with using_store(store):
        X, y = cancer_data()
        v = log_sklearn_version(store.client, "numeric", fit_pipeline(X, y), X)
        out["numeric"] = (f"models:/numeric/{v}", X.head(3), X.head(200))
        X.assign(target=y).to_csv(store.path / "numeric-train.csv", index=False)
        P, s = penguins_data()
        P.assign(species=s).to_csv(store.path / "penguins-train.csv", index=False)
        v = log_sklearn_version(store.client, "penguins", fit_penguins(P, s), P)
        # a row with missing values (row 3 of palmerpenguins) among the few
        out["penguins"] = (f"models:/penguins/{v}", P.iloc[[0, 3, 5]], P)
        forest, D = fit_diabetes_forest()
        v = log_sklearn_version(store.client, "forest", forest, D)
        out["forest"] = (f"models:/forest/{v}", D.head(3), D.head(100))
        uri = log_custom_pyfunc()
        ab = pd.DataFrame({"a": [1.0, 2.5, -3.0], "b": [0.5, 0.25, 4.0]})
        out["custom"] = (uri, ab, pd.concat([ab] * 50, ignore_index=True))
    return out


BATCH_MODELS = ("numeric", "penguins")


@contextlib.contextmanager
def _servers(store, models: dict):
    """Start every stock and every ours server at once, and stock ``mlflow models predict`` on
    each batch model's training file; yield {name: (stock_url, our_url)}."""
    procs, urls = [], {}
    env = child_env({"MLFLOW_TRACKING_URI": store.uri})
    ARTIFACTS.mkdir(exist_ok=True)
    mlflow_bin = os.path.join(os.path.dirname(sys.executable), "mlflow")
    predicting = []
    try:
        for name in BATCH_MODELS:
            cmd = [mlflow_bin, "models", "predict", "-m", models[name][0], "-t", "csv",
                   "-i", str(store.path / f"{name}-train.csv"),
                   "-o", str(store.path / f"{name}-stock.json"), "--env-manager", "local"]
            log = ARTIFACTS / f"differential-predict-{name}-{time.time_ns()}.log"
            with open(log, "wb") as out:
                predicting.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                                   env=env, cwd=store.path,
                                                   start_new_session=True))
        for name, (ref, _, _) in models.items():
            pair = []
            for side in ("stock", "ours"):
                port = free_port()
                if side == "stock":
                    cmd = [mlflow_bin, "models", "serve", "-m", ref, "-p", str(port), "-h", "127.0.0.1",
                           "--env-manager", "local"]
                else:
                    cmd = [sys.executable, "-m", "serving", "serve", ref, "--port", str(port),
                           "--workers", "1", "--no-access-log"]
                log = ARTIFACTS / f"differential-{side}-{name}-{time.time_ns()}.log"
                with open(log, "wb") as out:
                    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                            cwd=store.path, start_new_session=True)
                procs.append((proc, log, f"http://127.0.0.1:{port}"))
                pair.append(f"http://127.0.0.1:{port}")
            urls[name] = tuple(pair)
        for proc, log, url in procs:
            wait_healthy(f"{url}/ping", proc, 180, log)
        yield urls
    finally:
        for proc, _, _ in procs:
            stop(proc)
        for proc in predicting:
            stop(proc)


@pytest.fixture(scope="module")
def sides(module_store):
    models = _models(module_store)
    with _servers(module_store, models) as urls:
        yield models, urls


def _post(url: str, payload) -> tuple[int, dict | str]:
    headers = {} if payload.content_type is None else {"Content-Type": payload.content_type}
    resp = requests.post(f"{url}/invocations", data=payload.body, headers=headers, timeout=60)
    try:
        body = resp.json()
    except ValueError:
        body = resp.text
    return resp.status_code, body


def _same(a, b) -> bool:
    if isinstance(a, float | int) and isinstance(b, float | int) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9) or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


@pytest.mark.parametrize("model", ["numeric", "penguins", "forest", "custom"])
def test_ours_answers_what_stock_answers(sides, model):
    models, urls = sides
    _, few, many = models[model]
    payloads = corpus(few, many.head(200))
    assert len(payloads) >= 60
    stock_url, our_url = urls[model]
    with ThreadPoolExecutor(4) as pool:
        stock = list(pool.map(lambda p: _post(stock_url, p), payloads))
        ours = list(pool.map(lambda p: _post(our_url, p), payloads))
    problems = []
    for p, (s_status, s_body), (o_status, o_body) in zip(payloads, stock, ours, strict=True):
        where = f"{model}/{p.name}: stock {s_status}, ours {o_status}"
        if o_status >= 500:
            problems.append(f"{where}: ours answered 5xx: {o_body}")
        elif p.name in CSV_FIELD_COUNT:
            if o_status != 400 or "CSV row" not in o_body.get("message", ""):
                problems.append(f"{where}: expected a 400 naming the CSV row, got {o_body}")
        elif s_status == 200:
            if o_status != 200 or not _same(s_body, o_body):
                problems.append(f"{where}: {str(s_body)[:200]} != {str(o_body)[:200]}")
        elif o_status == 200:
            problems.append(f"{where}: stock refused ({str(s_body)[:200]}), ours scored")
        elif not (isinstance(o_body, dict) and o_body.get("message")):
            problems.append(f"{where}: no JSON message: {o_body}")
    assert not problems, "\n".join(problems)
    # the clean requests are taken by ours and stock alike
    clean = [i for i, p in enumerate(payloads) if p.name in ("split", "records", "csv", "parquet")]
    assert all(stock[i][0] == 200 for i in clean)


def test_version_answers_what_stock_answers(sides):
    _, urls = sides
    stock_url, our_url = urls["numeric"]
    stock = requests.get(f"{stock_url}/version", timeout=10)
    ours = requests.get(f"{our_url}/version", timeout=10)
    assert ours.status_code == stock.status_code == 200
    assert ours.text == stock.text == mlflow.__version__
    assert ours.headers["content-type"] == stock.headers["content-type"]
    details = requests.get(f"{our_url}/model", timeout=10).json()
    assert details["model_name"] == "numeric" and details["mlflow_version"] == mlflow.__version__


def test_the_fast_path_takes_what_it_can_prove(sides, module_store):
    """In-process: which corpus requests the fast path answers itself (the rest: pyfunc)."""
    from serving.model import load_scorer
    from serving.protocol import Handoff, RequestError

    models, _ = sides
    ref, few, many = models["numeric"]
    with using_store(module_store):
        scorer = load_scorer(ref)
    taken = []
    for p in corpus(few, many.head(200)):
        try:
            scorer.score_fast(p.body, p.content_type)
            taken.append(p.name)
        except (Handoff, RequestError):
            pass
    for name in ("split", "split_reordered", "records", "instances_records", "inputs_columns",
                 "csv", "parquet", "split_many_rows"):
        assert name in taken
    for name in ("records_null_in_mean radius", "split_extra_column", "with_params",
                 "records_integers_for_doubles", "records_numeric_strings"):
        assert name not in taken


@pytest.mark.parametrize("model", BATCH_MODELS)
def test_batch_predict_answers_what_stock_predict_answers(sides, module_store, model, tmp_path):
    """``python -m serving predict`` on the model's own training file (target column, missing
    values) equals ``mlflow models predict`` on it."""
    import json

    import pandas as pd

    from serving.cli import main

    models, _ = sides
    ref = models[model][0]
    train = module_store.path / f"{model}-train.csv"
    out = tmp_path / "scored.csv"
    env = {"MLFLOW_TRACKING_URI": module_store.uri}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        mp.delenv("MLFLOW_REGISTRY_URI", raising=False)
        code = main(["predict", ref, "--input", str(train), "--output", str(out),
                     "--batch-size", "100"])
    assert code in (0, None)
    ours = pd.read_csv(out)["prediction"].tolist()
    stock_file = module_store.path / f"{model}-stock.json"
    deadline = time.monotonic() + 120
    while not stock_file.exists() or not stock_file.read_text().strip():
        assert time.monotonic() < deadline, "stock mlflow models predict did not finish"
        time.sleep(0.2)
    time.sleep(0.2)  # the file is written in one go; let it be closed
    stock = json.loads(stock_file.read_text())["predictions"]
    assert len(ours) == len(stock) == len(pd.read_csv(train))
    assert _same(stock, ours)
