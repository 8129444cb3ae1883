"""Run lifecycle: where runs record they run, when a RUNNING run is dead, how it is closed."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import threading
import time

import mlflow
import pytest

from core import runs
from core.runs import (
    HEARTBEAT_TAG,
    NOTE_TAG,
    REAPED_TAG,
    RESUMED_BY_TAG,
    find_stale_runs,
    format_duration,
    parse_duration,
    process_alive,
    process_mark,
    reap_dead_runs,
    run_with_status,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("30m", 1800), ("2h", 7200), ("1d", 86400), ("1w", 604800),
     ("1h30m", 5400), ("1.5h", 5400), (" 2H ", 7200), ("1d 2h", 93600)],
)  # fmt: skip
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["5x", "", "10", "h", "0s", "-1h", "2h and more", "1y"])
def test_parse_duration_refuses_what_is_not_a_duration(text):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_format_duration_keeps_the_two_largest_units():
    assert [format_duration(s) for s in (0, 40, 750, 7500, 3 * 86400 + 4 * 3600 + 5)] == [
        "0s", "40s", "12m 30s", "2h 5m", "3d 4h"]  # fmt: skip


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_process_alive_tells_live_dead_zombie_and_reused_pids_apart():
    me = process_mark()
    assert process_alive(me.pid, me.start)
    assert not process_alive(_dead_pid(), "")
    assert not process_alive(0, "")
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        mark = process_mark(sleeper.pid)
        assert process_alive(sleeper.pid, mark.start)
        # the pid is held by a process that started at another time: not the one recorded
        assert not process_alive(sleeper.pid, mark.start + "1")
        sleeper.send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 5
        while process_alive(sleeper.pid, mark.start) and time.monotonic() < deadline:
            time.sleep(0.01)
        # killed, not yet waited for: a zombie is gone
        assert os.path.exists(f"/proc/{sleeper.pid}")
        assert not process_alive(sleeper.pid, mark.start)
    finally:
        sleeper.kill()
        sleeper.wait()


def test_run_with_status_records_host_process_and_heartbeat():
    client = mlflow.MlflowClient()
    with run_with_status(run_name="r", tags={"mine": "1"}) as run:
        tags = client.get_run(run.info.run_id).data.tags
    me = process_mark()
    assert tags["mine"] == "1"
    assert tags["mlops.host"] == me.host and tags["mlops.pid"] == str(os.getpid())
    assert tags["mlops.pid_start"] == me.start and me.start.count(":") == 1
    assert tags[HEARTBEAT_TAG].startswith(time.strftime("%Y-", time.gmtime()))


def test_a_resumed_mlflow_run_records_its_launcher_and_who_resumed_it():
    client = mlflow.MlflowClient()
    exp = client.create_experiment("resume")
    project = client.create_run(exp, tags={"mlflow.project.backend": "local"}).info.run_id
    plain = client.create_run(exp).info.run_id
    for run_id in (project, plain):
        with run_with_status(run_id=run_id, tags={"mine": "1"}):
            pass
    launcher = runs.launcher_mark()
    project_tags = client.get_run(project).data.tags
    assert project_tags["mlops.pid"] == str(launcher.pid) != str(os.getpid())
    assert project_tags[RESUMED_BY_TAG] == process_mark().token()
    # created by someone unknown: this process is the one that closes it
    assert client.get_run(plain).data.tags["mlops.pid"] == str(os.getpid())
    # the caller's tags are written on the resumed run too
    assert project_tags["mine"] == client.get_run(plain).data.tags["mine"] == "1"


def test_heartbeat_refreshes_open_runs_and_stops_with_them(monkeypatch):
    monkeypatch.setattr(runs, "HEARTBEAT_SECONDS", 0.2)
    client = mlflow.MlflowClient()
    with run_with_status() as run:
        first = client.get_run(run.info.run_id).data.tags[HEARTBEAT_TAG]
        deadline = time.monotonic() + 10
        while client.get_run(run.info.run_id).data.tags[HEARTBEAT_TAG] == first:
            assert time.monotonic() < deadline, "no heartbeat"
            time.sleep(0.1)
    deadline = time.monotonic() + 5
    while any(t.name == "mlops-heartbeat" for t in threading.enumerate()):
        assert time.monotonic() < deadline, "the heartbeat thread outlived its runs"
        time.sleep(0.05)


def _run(client, exp, name, tags, start=None):
    return client.create_run(exp, run_name=name, tags=tags, start_time=start).info.run_id


def test_reap_dead_runs_closes_only_dead_runs_of_this_host():
    client = mlflow.MlflowClient()
    exp = client.create_experiment("reap")
    here = process_mark()
    gone = {**here.tags(), "mlops.pid": str(_dead_pid())}
    dead = _run(client, exp, "dead", {**gone, NOTE_TAG: "my notes"})
    mine = _run(client, exp, "mine", here.tags())
    ancient = int(time.time() * 1000) - 400 * 86400 * 1000
    elsewhere = _run(client, exp, "elsewhere", {**gone, "mlops.host": "other"}, ancient)
    untagged = _run(client, exp, "untagged", {}, ancient)
    excluded = _run(client, exp, "excluded", gone)
    # the creator is gone but the process that resumed the run lives
    resumed = _run(client, exp, "resumed", {**gone, RESUMED_BY_TAG: here.token()})

    assert reap_dead_runs(client, exp, exclude=[excluded]) == [dead]
    run = client.get_run(dead)
    assert run.info.status == "FAILED"
    assert run.info.end_time == run.info.start_time  # its last sign of life
    assert run.data.tags[REAPED_TAG].startswith(f"process {gone['mlops.pid']} on {here.host} "
                                                "is gone; closed FAILED by workflow start (")
    assert run.data.tags[NOTE_TAG].startswith("my notes\n\n**Reaped:** process ")
    for run_id in (mine, elsewhere, untagged, excluded, resumed):
        assert client.get_run(run_id).info.status == "RUNNING"
        client.set_terminated(run_id)


def test_find_stale_runs_ages_runs_of_other_hosts_by_their_last_sign_of_life():
    client = mlflow.MlflowClient()
    exp = client.create_experiment("age")
    now = int(time.time() * 1000)
    away = {"mlops.host": "other", "mlops.pid": "1"}
    silent = _run(client, exp, "silent", away, now - 7200_000)
    logging = _run(client, exp, "logging", away, now - 7200_000)
    client.log_metric(logging, "m", 1.0, timestamp=now - 60_000)
    beat = dt.datetime.fromtimestamp(now / 1000 - 1800, dt.UTC).isoformat()
    beating = _run(client, exp, "beating", {**away, HEARTBEAT_TAG: beat}, now - 7200_000)
    stale = find_stale_runs(client, [exp], older_than=3600, now_ms=now)
    assert {s.run_id for s in stale} == {silent}
    assert next(s for s in stale if s.run_id == silent).reason == (
        "not heard from for 2h (limit 1h) on other")
    assert find_stale_runs(client, [exp]) == []  # no age limit: other hosts are left alone
    for run_id in (silent, logging, beating):
        client.set_terminated(run_id)


def test_close_runs_leaves_a_run_that_ended_meanwhile():
    client = mlflow.MlflowClient()
    exp = client.create_experiment("race")
    run_id = _run(client, exp, "r", {**process_mark().tags(), "mlops.pid": str(_dead_pid())})
    [item] = find_stale_runs(client, [exp])
    client.set_terminated(run_id, "FINISHED")
    assert runs.close_runs(client, [item], "test") == ([], [])
    assert client.get_run(run_id).info.status == "FINISHED"
    assert REAPED_TAG not in client.get_run(run_id).data.tags
