"""Ours and stock ``mlflow models serve`` side by side: same requests, same answers.

Five models: a numeric pipeline, a categorical pipeline with missing values (palmerpenguins),
a regression forest, a custom ``PythonModel``, and the model the workflow trains from the
repository's example (a user feature function and fitted user feature shipped with it).

Also, on the same fleet of processes (started at once, to keep the time down): batch scoring
against stock ``mlflow models predict``, and ours under hostile and slow traffic (bodies that
never finish, oversized bodies sent whole, too many or too large headers, a 2-second model,
timed-out requests).

Real processes on both sides (one worker each), the same registered models, the same corpus of
good and bad requests (``tests/support/scoring_corpus.py``). Where stock answers 200, ours
answers 200 with the same predictions (labels equal, numbers to 1e-9); where stock answers 4xx
or 5xx, ours answers 4xx. One deliberate difference: a CSV row with more or fewer fields than
the header is a 400 naming the row (pandas would shift every column or pad with nulls).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mlflow
import pytest
import requests

from tests.integration.serving.conftest import using_store
from tests.support.mlserver import mlserver_bin, write_repository
from tests.support.processes import ARTIFACTS, REPO, child_env, free_port, stop, wait_healthy
from tests.support.sagemaker_endpoint import create_endpoint, invoke, wait_in_service
from tests.support.scoring_corpus import CSV_FIELD_COUNT, corpus
from tests.support.serving_models import (
    cancer_data,
    fit_diabetes_forest,
    fit_penguins,
    fit_pipeline,
    log_custom_pyfunc,
    log_sklearn_version,
    log_sleeper,
    penguins_data,
)
from tests.support.v2_corpus import DELIBERATE, MLSERVER_WRONG, OURS_ONLY, v2_corpus

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


BATCH_MODELS = ("penguins",)
# the slow model's server: short body and scoring timeouts, a small body limit
MAX_BODY = 100_000
SLOW_FLAGS = ("--body-timeout", "1", "--max-body-bytes", str(MAX_BODY), "--timeout", "0.5",
              "--no-access-log")
# the model the workflow trains from the repository's example (a user feature function, a
# fitted user feature and a user estimator, shipped with the model), in its own store
FEATURES = "features"


class _Fleet:
    """Processes started at once (side by side they start faster than one by one)."""

    def __init__(self):
        self.procs: list[tuple[subprocess.Popen, Path, str | None]] = []
        self.mlflow_bin = os.path.join(os.path.dirname(sys.executable), "mlflow")
        ARTIFACTS.mkdir(exist_ok=True)

    def start(self, label: str, cmd: list[str], env: dict, cwd, url: str | None = None):
        log = ARTIFACTS / f"differential-{label}-{time.time_ns()}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                    start_new_session=True)
        self.procs.append((proc, log, url))
        return proc, log

    def serve(self, label: str, side: str, ref: str, env: dict, cwd, *args) -> str:
        port = free_port()
        if side == "stock":
            cmd = [self.mlflow_bin, "models", "serve", "-m", ref, "-p", str(port),
                   "-h", "127.0.0.1", "--env-manager", "local"]
        else:
            cmd = [sys.executable, "-m", "serving", "serve", ref, "--port", str(port),
                   "--workers", "1", "--no-access-log", *args]
        url = f"http://127.0.0.1:{port}"
        self.start(f"{side}-{label}", cmd, env, cwd, url)
        return url

    def wait(self):
        for proc, log, url in self.procs:
            if url is not None:
                wait_healthy(f"{url}/ping", proc, 240, log)

    def stop(self):
        for proc, _, _ in self.procs:
            stop(proc)


def _train_with_the_workflow(fleet: _Fleet, folder: Path):
    """Start the workflow on the repository's example in ``folder`` (its own SQLite store)."""
    shutil.copytree(REPO / "examples", folder / "examples")
    env = child_env({"MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}"})
    cmd = [sys.executable, "-m", "projects", "main", "--settings",
           "examples/penguins/settings.yaml"]
    return fleet.start("workflow", cmd, env, folder), env


@pytest.fixture(scope="module")
def sides(module_store, tmp_path_factory, sagemaker_moto):
    """{name: (reference, few rows, many rows)} and {name: (stock_url or None, our_url)}.

    Stock and ours for every model, stock ``mlflow models predict`` on each batch model's
    training file, ours alone for the slow model (SLOW_FLAGS), and a SageMaker endpoint (the
    test double) serving the penguins model: ``urls["sagemaker"] = (endpoint name, None)``.
    """
    import palmerpenguins

    fleet = _Fleet()
    store = module_store
    try:
        wf_folder = tmp_path_factory.mktemp("workflow")
        (wf_proc, wf_log), wf_env = _train_with_the_workflow(fleet, wf_folder)
        models = _models(store)
        with using_store(store):
            slow_ref = log_sleeper()
            # created now: the double starts its scoring server while the fleet starts
            endpoint = create_endpoint(sagemaker_moto.url, models["penguins"][0])
        env = child_env({"MLFLOW_TRACKING_URI": store.uri})
        for name in BATCH_MODELS:
            fleet.start(f"predict-{name}", [
                fleet.mlflow_bin, "models", "predict", "-m", models[name][0], "-t", "csv",
                "-i", str(store.path / f"{name}-train.csv"),
                "-o", str(store.path / f"{name}-stock.json"), "--env-manager", "local"],
                env, store.path)
        urls = {}
        for name, (ref, _, _) in models.items():
            urls[name] = tuple(fleet.serve(name, side, ref, env, store.path)
                               for side in ("stock", "ours"))
        urls["slow"] = (None, fleet.serve("slow", "ours", slow_ref, env, store.path,
                                          *SLOW_FLAGS))
        assert wf_proc.wait(300) == 0, wf_log.read_text()[-3000:]
        ref = "models:/penguins@champion"
        urls[FEATURES] = tuple(fleet.serve(FEATURES, side, ref, wf_env, wf_folder)
                               for side in ("stock", "ours"))
        raw = palmerpenguins.load_penguins().drop(columns=["species"])
        models[FEATURES] = (ref, raw.iloc[[0, 3, 5]], raw)
        try:  # the reference for the V2 tests only: the other tests run without it
            urls["mlserver"] = (_start_mlserver(fleet, store, models, wf_folder), None)
        except Exception as exc:  # its env could not be built (pip)
            urls["mlserver"] = (None, f"MLServer's environment: {exc}")
        fleet.wait()
        if urls["mlserver"][0] is not None:
            try:
                wait_healthy(f"{urls['mlserver'][0]}/v2/health/ready", None, 240, None)
            except TimeoutError as exc:
                urls["mlserver"] = (None, f"MLServer did not start: {exc}")
        wait_in_service(sagemaker_moto.url, endpoint)
        urls["sagemaker"] = (endpoint, None)
        yield models, urls
    finally:
        fleet.stop()


# The models MLServer serves beside ours, and the name each has on our V2 routes (a model
# served from runs:/ has no registered name: "model").
V2_MODELS = {"numeric": "numeric", "penguins": "penguins", "custom": "model",
             FEATURES: "penguins"}


def _start_mlserver(fleet: _Fleet, store, models: dict, wf_folder: Path) -> str:
    """MLServer 1.7.1 + mlserver-mlflow (their own cached env) serving V2_MODELS, one process."""
    local = {}
    for name in V2_MODELS:
        uri = f"sqlite:///{wf_folder / 'mlflow.db'}" if name == FEATURES else store.uri
        before = mlflow.get_registry_uri()
        mlflow.set_registry_uri(uri)
        try:
            path = mlflow.artifacts.download_artifacts(models[name][0], tracking_uri=uri)
        finally:
            mlflow.set_registry_uri(before)
        local[name] = (path, "1")
    port = free_port()
    folder = store.path / "mlserver"
    write_repository(folder, local, port, free_port(), free_port())
    fleet.start("mlserver", [str(mlserver_bin()), "start", str(folder)], child_env(), folder)
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def server(sides):
    """Ours serving a model that sleeps as long as each request asks (SLOW_FLAGS)."""
    return sides[1]["slow"][1]


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


@pytest.mark.parametrize("model", ["numeric", "penguins", "forest", "custom", FEATURES])
def test_ours_answers_what_stock_answers(sides, model):
    models, urls = sides
    _, few, many = models[model]
    payloads = corpus(few, many.head(200))
    assert len(payloads) >= 60
    stock_url, our_url = urls[model]
    # the workflow's model is scored by its compiled plan (verified at load), the others as
    # they are: so the comparison below is the plan's against stock's too
    path = requests.get(f"{our_url}/model", timeout=10).json()["scoring_path"]
    assert path == ("plan" if model == FEATURES else "model")
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
    from serving.online.model import load_scorer
    from serving.online.protocol import Handoff, RequestError

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


def _sleep_body(seconds: float) -> bytes:
    return json.dumps({"dataframe_split": {"columns": ["seconds"], "data": [[seconds]]}}).encode()


def _raw(url: str, data: bytes, read_timeout: float = 5.0) -> bytes:
    """Send ``data`` on a fresh connection and read until the server closes (or times out)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=read_timeout) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            chunks.append(b"<still open>")
        return b"".join(chunks)


def test_a_body_that_never_finishes_is_a_408_and_the_connection_closes(server):
    head = (b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n")
    start = time.monotonic()
    answer = _raw(server, head + b'{"dataframe_split":')
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert not answer.endswith(b"<still open>")  # closed by the server
    assert time.monotonic() - start < 4


def test_an_oversized_body_sent_whole_still_reads_the_413(server):
    body = b"x" * (MAX_BODY * 40)  # more than the socket buffers hold
    resp = requests.post(f"{server}/invocations", data=body, timeout=10,
                         headers={"Content-Type": "application/json"})
    assert resp.status_code == 413
    assert "larger than" in resp.json()["message"]


@pytest.mark.parametrize(
    "headers",
    [{f"X-H{i}": "v" for i in range(150)}, {"X-Big": "v" * 20_000}],
    ids=["too-many", "too-large"],
)
def test_too_many_or_too_large_headers_are_a_431(server, headers):
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    answer = _raw(server, f"GET /ping HTTP/1.1\r\nHost: x\r\n{lines}\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert requests.get(f"{server}/ping", timeout=5).status_code == 200  # still serving


def test_health_answers_within_50ms_while_a_slow_model_scores(server):
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(requests.post, f"{server}/invocations", data=_sleep_body(2.0),
                           headers={"Content-Type": "application/json"}, timeout=10)
        time.sleep(0.3)
        times = []
        for path in ("/ping", "/health", "/ping", "/health", "/ping"):
            start = time.perf_counter()
            assert requests.get(f"{server}{path}", timeout=5).status_code == 200
            times.append(time.perf_counter() - start)
        assert statistics.median(times) < 0.05, times
        assert slow.result().status_code == 504  # over --timeout 0.5


def test_timed_out_requests_do_not_keep_the_pool_busy(server):
    with ThreadPoolExecutor(8) as pool:
        slow = [pool.submit(requests.post, f"{server}/invocations", data=_sleep_body(3.0),
                            headers={"Content-Type": "application/json"}, timeout=10)
                for _ in range(6)]
        assert [f.result().status_code for f in slow] == [504] * 6
    # every pool thread of the server is still sleeping in those six: fresh threads answer
    start = time.monotonic()
    resp = requests.post(f"{server}/invocations", data=_sleep_body(0.0),
                         headers={"Content-Type": "application/json"}, timeout=10)
    assert resp.status_code == 200 and resp.json() == {"predictions": [0.0]}
    assert time.monotonic() - start < 1.0


def _utf8(body: bytes) -> bool:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_the_sagemaker_endpoint_and_ours_answer_alike(sides, sagemaker_moto):
    """The corpus through InvokeEndpoint of the test double (AWS is mocked: it cannot exist
    here) vs ours: where the endpoint answers, ours answers the same predictions; where it
    refuses (``ModelError``), ours answers 4xx."""
    models, urls = sides
    endpoint = urls["sagemaker"][0]
    _, few, many = models["penguins"]
    our_url = urls["penguins"][1]
    # the endpoint defaults a missing Content-Type and SageMaker refuses empty bodies; the
    # double (moto) reads request bodies as UTF-8 text, so binary ones (Parquet) cannot pass
    payloads = [p for p in corpus(few, many.head(200))
                if p.content_type is not None and p.body and _utf8(p.body)]
    assert len(payloads) >= 60
    problems, answered = [], 0
    for p in payloads:
        s_status, s_body = invoke(sagemaker_moto.url, endpoint, p.content_type, p.body)
        o_status, o_body = _post(our_url, p)
        where = f"{p.name}: sagemaker {s_status}, ours {o_status}"
        if o_status >= 500:
            problems.append(f"{where}: ours answered 5xx")
        elif p.name in CSV_FIELD_COUNT:
            if o_status != 400:
                problems.append(f"{where}: expected a 400 naming the CSV row")
        elif s_status == 200:
            answered += 1
            if o_status != 200 or not _same(s_body, o_body):
                problems.append(f"{where}: {str(s_body)[:200]} != {str(o_body)[:200]}")
        elif o_status == 200:
            problems.append(f"{where}: the endpoint refused ({str(s_body)[:200]}), ours scored")
    assert not problems, "\n".join(problems)
    assert answered >= 20  # most of the corpus is scored, not only refused


def _mlserver(urls: dict) -> None:
    """Fail (not skip) a V2 test when the reference could not run, saying why."""
    if urls["mlserver"][0] is None:
        pytest.fail(urls["mlserver"][1])


def _v2(url: str, payload) -> tuple[int, dict | str]:
    headers = {"Content-Type": "application/json", **payload.headers}
    resp = requests.post(url, data=payload.body, headers=headers, timeout=60)
    try:
        return resp.status_code, resp.json()
    except ValueError:
        return resp.status_code, resp.text


@pytest.mark.parametrize("model", list(V2_MODELS))
def test_v2_answers_what_mlserver_answers(sides, model):
    """The V2 corpus (tests/support/v2_corpus.py) to ours and to MLServer 1.7.1.

    Where MLServer scores, ours scores the same outputs (datatype, shape, data; MLServer names
    its one output "output-1" against its own metadata's "output-0": ours names it as its
    metadata does). Where MLServer refuses (4xx), ours refuses. Where MLServer fails with a
    500 (pyfunc's refusals: missing inputs, wrong types, empty batches, NaN for a model that
    takes none, a shape it cannot reshape), ours answers 4xx with the protocol's
    ``{"error": ...}`` naming the problem. Where MLServer scores what nobody sent
    (tests.support.v2_corpus.DELIBERATE), ours answers 400; where MLServer fails a good
    request (OURS_ONLY: a non-ASCII id, the binary extension), ours scores it; where MLServer
    scores a request wrongly (MLSERVER_WRONG), ours answers as it answers the same rows sent
    plainly.
    """
    models, urls = sides
    _mlserver(urls)
    _, few, many = models[model]
    ours_url = f"{urls[model][1]}/v2/models/{V2_MODELS[model]}"
    theirs_url = f"{urls['mlserver'][0]}/v2/models/{model}"
    metadata = requests.get(ours_url, timeout=10).json()
    payloads = v2_corpus(few, many.head(200), metadata)
    assert len(payloads) >= 40
    with ThreadPoolExecutor(4) as pool:
        theirs = list(pool.map(lambda p: _v2(f"{theirs_url}/infer", p), payloads))
        ours = list(pool.map(lambda p: _v2(f"{ours_url}/infer", p), payloads))
    problems, better = [], []
    for p, (t_status, t_body), (o_status, o_body) in zip(payloads, theirs, ours, strict=True):
        where = f"{model}/{p.name}: mlserver {t_status}, ours {o_status}"
        if o_status >= 500:
            problems.append(f"{where}: ours answered 5xx: {o_body}")
        elif o_status != 200:
            if not (isinstance(o_body, dict) and isinstance(o_body.get("error"), str)):
                problems.append(f"{where}: not the protocol's error body: {o_body}")
            if t_status == 200 and p.name not in DELIBERATE:
                problems.append(f"{where}: mlserver scored, ours refused: {o_body}")
            if t_status >= 500:
                better.append(p.name)
        elif p.name in DELIBERATE:
            problems.append(f"{where}: ours scored ({DELIBERATE[p.name]})")
        elif t_status != 200 and p.name not in OURS_ONLY:
            problems.append(f"{where}: mlserver refused ({str(t_body)[:200]}), ours scored")
        elif t_status != 200:
            better.append(p.name)
        else:
            mine = [(o["datatype"], o["shape"], o["data"]) for o in o_body["outputs"]]
            reference = [(o["datatype"], o["shape"], o["data"]) for o in t_body["outputs"]]
            if p.name in MLSERVER_WRONG and not _same(mine, reference):
                good = ours[[q.name for q in payloads].index("good")][1]
                reference = [(o["datatype"], o["shape"], o["data"]) for o in good["outputs"]]
                better.append(p.name)
            if not _same(mine, reference):
                problems.append(f"{where}: {str(reference)[:300]} != {str(mine)[:300]}")
            if o_body["model_name"] != V2_MODELS[model] or (
                "id" in _json_doc(p.body) and o_body["id"] != _json_doc(p.body)["id"]
            ):
                problems.append(f"{where}: names or id: {str(o_body)[:300]}")
    assert not problems, "\n".join(problems)
    # the clean requests are scored by both; MLServer's 500s are ours' 4xx
    for name in ("good", "good_nested", "good_many_rows", "good_reordered", "good_extra_input"):
        assert theirs[[p.name for p in payloads].index(name)][0] == 200, name
    assert len(better) >= 5, better


def _json_doc(body: bytes):
    """A corpus body as JSON (None when it is not)."""
    try:
        return json.loads(body)
    except ValueError:
        return None


def test_v2_routes_answer_as_mlserver_answers(sides):
    """Server metadata, health, model metadata (from the signature), readiness, not-found."""
    models, urls = sides
    _mlserver(urls)
    ours, theirs = urls["numeric"][1], urls["mlserver"][0]
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/numeric/ready"):
        assert requests.get(f"{ours}{path}", timeout=10).status_code == 200, path
        assert requests.get(f"{theirs}{path}", timeout=10).status_code == 200, path
    version = models["numeric"][0].rsplit("/", 1)[-1]
    ours_meta = requests.get(f"{ours}/v2/models/numeric/versions/{version}", timeout=10).json()
    theirs_meta = requests.get(f"{theirs}/v2/models/numeric", timeout=10).json()
    assert ours_meta["inputs"] == theirs_meta["inputs"]
    assert ours_meta["outputs"] == theirs_meta["outputs"]
    assert ours_meta["versions"] == [version]  # MLServer lists none
    assert requests.get(f"{ours}/v2", timeout=10).json()["name"] == "mlops-registry"
    for path in ("/v2/models/numeric/versions/999", "/v2/models/nope",
                 "/v2/models/numeric/versions/999/infer"):
        o = requests.request("POST" if path.endswith("infer") else "GET", f"{ours}{path}",
                             json={"inputs": []}, timeout=10)
        t = requests.request("POST" if path.endswith("infer") else "GET",
                             f"{theirs}{path.replace('999', '998')}", json={"inputs": []},
                             timeout=10)
        assert o.status_code == t.status_code == 404, path
        assert "not found" in o.json()["error"] and "not found" in t.json()["error"]
