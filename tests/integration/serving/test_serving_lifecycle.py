"""A real scoring server's life: one server per port, headers timed out, an orderly stop.

Real ``python -m serving serve`` processes on a real registry: a second server on a busy port
exits 1 naming the port and the process holding it (the first keeps answering with its model,
over both of its workers); headers that never end are answered 408 and closed; SIGTERM, to the
main process only or to the whole process group as systemd sends it, under traffic and with a
slow request in flight, ends the server within 3 s of that request's answer, with every shadow
run logged and no process left behind.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import mlflow
import pytest
import requests

from core import shadow as names
from tests.integration.serving.conftest import serving_process, using_store
from tests.support.processes import child_env, free_port, running
from tests.support.serving_models import cancer_data, fit_pipeline, log_sklearn_version, log_sleeper

pytestmark = pytest.mark.integration

HEADER_TIMEOUT = 1.0
# What the issue asks of a stop: at most this long after the answer of the longest request
STOP_BOUND_SECONDS = 3.0


@pytest.fixture(scope="module")
def busy(module_store):
    """A 2-worker server of ``busy`` version 1 (headers timed out after 1 s); version 2 exists."""
    X, y = cancer_data()
    client = module_store.client
    with using_store(module_store):
        v1 = log_sklearn_version(client, "busy", fit_pipeline(X, y), X)
    first = client.get_model_version("busy", v1)
    client.create_model_version("busy", first.source, first.run_id)  # version 2
    body = json.dumps({"dataframe_split": json.loads(X.head(2).to_json(orient="split",
                                                                       index=False))})
    with serving_process(module_store, f"busy/{v1}", "--header-timeout", str(HEADER_TIMEOUT),
                         workers=2) as (url, proc):
        yield url, proc, body


def test_a_second_serve_on_a_busy_port_exits_1_naming_the_port_and_its_holder(
        busy, module_store):
    url, first, body = busy
    port = int(url.rsplit(":", 1)[1])
    env = child_env({"MLFLOW_TRACKING_URI": module_store.uri})
    seconds = {}
    for workers in ("1", "2"):  # one after the other: the machine has 2 cores
        start = time.monotonic()
        second = subprocess.run(
            [sys.executable, "-m", "serving", "serve", "busy/2", "--port", str(port),
             "--workers", workers], capture_output=True, text=True, env=env,
            cwd=module_store.path, timeout=120)
        seconds[workers] = time.monotonic() - start
        lines = second.stderr.splitlines()
        assert second.returncode == 1, second.stderr
        assert len(lines) == 1, second.stderr
        assert lines[0].startswith(
            f"error: cannot listen on 127.0.0.1:{port}: address already in use by process "
            f"{first.pid} ("), lines[0]
        assert f"serve busy/1 --port {port}" in lines[0]
    # the first server still answers, with its own model, on both of its workers
    for _ in range(20):
        resp = requests.post(f"{url}/invocations", data=body, timeout=10, headers={
            "Content-Type": "application/json", "Connection": "close"})
        assert (resp.status_code, resp.headers["X-Model-Version"]) == (200, "1")
    answered_by = {line["pid"] for line in _log_lines(first.log_path)
                   if line.get("msg") == "request" and line.get("path") == "/invocations"}
    assert len(answered_by) == 2, answered_by  # the kernel spreads connections over both


def test_headers_that_never_end_get_408_and_the_connection_closes(busy):
    url, _, body = busy
    port = int(url.rsplit(":", 1)[1])
    half = b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: appl"
    # Every deadline runs from the server's accept, which comes after this: so no connection may
    # close before start + 1 s. Half a request goes out as each connection opens (a loaded
    # machine could otherwise let a connection's silent second pass before its first byte).
    start = time.monotonic()
    partial = []
    for _ in range(50):
        partial.append(socket.create_connection(("127.0.0.1", port)))
        partial[-1].sendall(half)
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(50)]
    # a kept-alive connection: one request answered, then half of the next one's headers
    kept = socket.create_connection(("127.0.0.1", port))
    kept.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
    assert _read_response(kept).startswith(b"HTTP/1.1 200")  # all of it: head and body
    kept.sendall(half)
    received, closed_after = _read_until_closed([*partial, kept, *idle], start, timeout=15)

    assert [received[s][:13] for s in [*partial, kept]] == [b"HTTP/1.1 408 "] * 51
    assert b"did not arrive within 1 s" in received[kept]
    assert all(received[s] == b"" for s in idle)  # nothing was asked: closed without a word
    slowest = max(closed_after.values())
    assert HEADER_TIMEOUT - 0.1 < min(closed_after.values()) <= slowest < HEADER_TIMEOUT + 3, (
        sorted(closed_after.values()))
    resp = requests.post(f"{url}/invocations", data=body, timeout=10,
                         headers={"Content-Type": "application/json"})
    assert resp.status_code == 200


def _read_response(sock) -> bytes:
    """One whole response (its head and ``content-length`` bytes of body), however it arrives."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
    while len(body) < length:
        body += sock.recv(4096)
    return data


def _read_until_closed(socks, start, timeout):
    """What each socket received until the server closed it, and when (seconds after start)."""
    selector = selectors.DefaultSelector()
    for sock in socks:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    received = {sock: b"" for sock in socks}
    closed_after = {}
    while len(closed_after) < len(socks) and time.monotonic() - start < timeout:
        for key, _ in selector.select(timeout=0.5):
            try:
                chunk = key.fileobj.recv(65536)
            except ConnectionResetError:
                chunk = b""
            received[key.fileobj] += chunk
            if not chunk:
                closed_after[key.fileobj] = time.monotonic() - start
                selector.unregister(key.fileobj)
                key.fileobj.close()
    assert len(closed_after) == len(socks), f"{len(socks) - len(closed_after)} still open"
    return received, closed_after


@pytest.fixture(scope="module")
def sleepy(module_store):
    """``sleepy``: a model that sleeps as long as asked, registered twice (champion, challenger)."""
    client = module_store.client
    with using_store(module_store):
        uri = log_sleeper()
        v1 = mlflow.register_model(uri, "sleepy").version
        v2 = mlflow.register_model(uri, "sleepy").version
    client.set_registered_model_alias("sleepy", "champion", v1)
    client.set_registered_model_alias("sleepy", "challenger", v2)
    return str(v1), str(v2)


@pytest.mark.slow
@pytest.mark.parametrize("sent_to", ["process group", "main process"])
def test_sigterm_under_traffic_stops_in_order_with_the_shadow_runs_logged(
        sleepy, module_store, sent_to):
    """A 2-worker ``serve --shadow`` (every answer shadowed) stopped under traffic.

    The request in flight is answered; the main process exits at most 3 s after that answer,
    once its workers and their shadow processes have ended; each shadow run is FINISHED and
    accounts for every answer the clients got (scored, or dropped at the stop); nothing of
    the server is left running.
    """
    champion, challenger = sleepy
    client = module_store.client
    before = {r.info.run_id for r in names.shadow_runs(client, "sleepy", challenger)}
    port = free_port()
    cmd = [sys.executable, "-m", "serving", "serve", "sleepy@champion", "--port", str(port),
           "--workers", "2", "--shadow", "sleepy@challenger", "--shadow-sample", "1"]
    url = f"http://127.0.0.1:{port}"
    with running(cmd, f"{url}/ping", "serving-stop", env={"MLFLOW_TRACKING_URI": module_store.uri},
                 cwd=module_store.path) as server:
        deadline = time.monotonic() + 180  # each worker's shadow process has loaded its model
        while len(_new_runs(client, challenger, before)) < 2:
            assert time.monotonic() < deadline, "the shadow processes never started"
            time.sleep(0.5)
        traffic = _Traffic(url, clients=3)
        time.sleep(2)
        slow = traffic.one(seconds=3.0)
        time.sleep(0.5)  # the slow request is being scored
        signalled = time.monotonic()
        if sent_to == "process group":
            os.killpg(server.pid, signal.SIGTERM)
        else:
            os.kill(server.pid, signal.SIGTERM)
        server.wait(60)
        exited = time.monotonic()
        left_at_exit = _running_in_group(server.pid)
        traffic.stop()
        slow.join(30)
        workers = {line["pid"] for line in _log_lines(server.log_path)
                   if line.get("msg") == "serving"}
        runs = _new_runs(client, challenger, before)
        shadows = {int(r.data.tags["mlops.pid"]) for r in runs}
        deadline = time.monotonic() + 5  # the fork server and resource trackers see EOF
        while (left := _running_in_group(server.pid)) and time.monotonic() < deadline:
            time.sleep(0.1)

    assert slow.status == 200  # the request in flight was answered
    in_flight = max(0.0, slow.answered - signalled)
    took = exited - signalled
    print(f"{sent_to}: exited {took:.2f} s after SIGTERM, {took - in_flight:.2f} s after the "
          f"last answer; {traffic.answered + 1} answers")  # shown with -rP
    assert took <= in_flight + STOP_BOUND_SECONDS, (
        f"stopped {took:.2f} s after SIGTERM, {took - in_flight:.2f} s after the last answer")
    assert server.returncode == 0
    assert len(workers) == 2 and len(shadows) == 2
    assert not (workers | shadows) & set(left_at_exit), "the main process exited first"
    assert left == [], left
    assert [r.info.status for r in runs] == ["FINISHED", "FINISHED"]
    accounted = sum(r.data.metrics[names.REQUESTS] + r.data.metrics[names.ERRORS]
                    + r.data.metrics[names.DROPPED] for r in runs)
    assert accounted == traffic.answered + 1, (accounted, traffic.answered)
    assert sum(r.data.metrics[names.REQUESTS] for r in runs) > 0


class _Traffic:
    """Clients posting fast requests on kept-alive connections until stopped."""

    BODY = json.dumps({"dataframe_split": {"columns": ["seconds"], "data": [[0.0]]}})

    def __init__(self, url: str, clients: int):
        self.url = url
        self.answered = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]
        for thread in self._threads:
            thread.start()

    def _run(self):
        with requests.Session() as session:
            while not self._stopping.is_set():
                try:
                    resp = session.post(f"{self.url}/invocations", data=self.BODY, timeout=30,
                                        headers={"Content-Type": "application/json"})
                except requests.RequestException:
                    time.sleep(0.05)  # the server is stopping: new connections are refused
                    continue
                if resp.status_code == 200:
                    with self._lock:
                        self.answered += 1

    def one(self, seconds: float) -> threading.Thread:
        """A request that takes ``seconds``, in a thread (``.status``, ``.answered`` once done)."""
        body = json.dumps({"dataframe_split": {"columns": ["seconds"], "data": [[seconds]]}})

        def _post():
            resp = requests.post(f"{self.url}/invocations", data=body, timeout=60,
                                 headers={"Content-Type": "application/json"})
            thread.answered = time.monotonic()
            thread.status = resp.status_code

        thread = threading.Thread(target=_post, daemon=True)
        thread.status, thread.answered = None, float("inf")
        thread.start()
        return thread

    def stop(self):
        self._stopping.set()
        for thread in self._threads:
            thread.join(30)


def _new_runs(client, challenger: str, before: set) -> list:
    return [r for r in names.shadow_runs(client, "sleepy", challenger)
            if r.info.run_id not in before]


def _log_lines(path: Path) -> list[dict]:
    lines = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                lines.append(json.loads(line))
            except ValueError:
                pass
    return lines


def _running_in_group(pgid: int) -> list[int]:
    """Processes of the process group still running (zombies not counted: nobody reaps them
    once their parent is gone, here where PID 1 is not an init)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        state, group = fields[0], int(fields[2])
        if group == pgid and state != "Z":
            found.append(int(entry.name))
    return found
