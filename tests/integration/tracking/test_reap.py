"""No run left RUNNING: trainers SIGKILLed mid-train, then reaped by the next workflow start or by
``python -m tracking runs reap``. Real processes on a temporary SQLite store.

To know exactly which runs a SIGKILL leaves open, the trainer is frozen (SIGSTOP), the store is
read, and it is killed only while a candidate run is open; otherwise it continues (SIGCONT).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

from core.runs import HEARTBEAT_TAG, REAPED_TAG, process_mark
from tests.support.processes import REPO, child_env
from tracking.cli import main

pytestmark = pytest.mark.integration
# slow enough to be caught mid-train: 60 candidates, each logged as its own run after the
# sweep, so candidate runs stay open for a window of a second or more, not a few milliseconds
_GRID = ", ".join(str(round(0.05 * 1.12**i, 4)) for i in range(60))
SLOW_SWEEP = ["--n-jobs", "1", "--candidates", f"[{{estimator: linear, grid: {{C: [{_GRID}]}}}}]"]
QUICK_SWEEP = ["--n-jobs", "1", "--candidates", "[{estimator: linear, grid: {C: [1.0]}}]"]
OPEN_RUNS_SQL = """
    SELECT r.run_uuid, COALESCE(t.value, 'workflow') FROM runs r
    LEFT JOIN tags t ON t.run_uuid = r.run_uuid AND t.key = 'mlops.step'
    WHERE r.status = 'RUNNING'
"""


def _open_runs(db: Path) -> dict[str, str] | None:
    """Run id -> step of the RUNNING runs, None when the store is locked by the frozen writer."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True,
                                                timeout=0.2)) as con:  # fmt: skip
            return dict(con.execute(OPEN_RUNS_SQL).fetchall())
    except sqlite3.OperationalError:
        return None


def _group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = (entry / "stat").read_text()
                if int(stat[stat.rindex(")") + 2:].split()[2]) == pgid:
                    pids.append(int(entry.name))
    return pids


def _wait_stopped(pids: list[int], timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                break
            if stat[stat.rindex(")") + 2] in "TtZ":
                break
            time.sleep(0.005)


def kill_mid_candidate(proc: subprocess.Popen, db: Path, group: bool, timeout=150) -> dict:
    """SIGKILL ``proc`` (or its whole group) while a candidate run is open; the runs left open."""
    send = (lambda sig: os.killpg(proc.pid, sig)) if group else (lambda sig: proc.send_signal(sig))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            proc.log.seek(0)
            raise AssertionError(f"the trainer ended first:\n{proc.log.read()[-3000:]}")
        send(signal.SIGSTOP)
        _wait_stopped(_group_pids(proc.pid) if group else [proc.pid])
        runs = _open_runs(db)
        if runs and "train.candidate" in runs.values():
            send(signal.SIGKILL)
            proc.wait(10)
            return runs
        send(signal.SIGCONT)
        time.sleep(0.03)
    send(signal.SIGKILL)
    raise AssertionError("no candidate run was seen open")


def _assert_reaped(client, run_ids, why: str):
    for run_id in run_ids:
        run = client.get_run(run_id)
        assert run.info.status == "FAILED", run_id
        assert run.info.end_time is not None
        assert why in run.data.tags[REAPED_TAG]
        assert run.data.tags["mlflow.note.content"].startswith("**Reaped:** ")


def _start(cmd: list[str], cwd: Path, **popen) -> subprocess.Popen:
    """Start ``cmd`` with its output in a file (a full pipe would stall it)."""
    log = open(cwd / f"{cmd[2]}-{time.time_ns()}.log", "w+")  # noqa: SIM115 - closed by GC
    proc = subprocess.Popen(cmd, cwd=cwd, env=child_env(), stdout=log, stderr=log, **popen)
    proc.log = log
    return proc


@pytest.mark.slow
def test_killed_trainer_runs_end_failed_when_the_workflow_starts_again(tmp_path):
    db = tmp_path / "mlflow.db"
    workflow = [sys.executable, "-m", "projects", "main", "--experiment", "reap"]
    trainer = _start([*workflow, *SLOW_SWEEP], tmp_path)
    try:
        left = kill_mid_candidate(trainer, db, group=False)
    finally:
        if trainer.poll() is None:
            trainer.kill()
    client = mlflow.MlflowClient()
    # what the user saw before this change: the workflow, its train step and a candidate open
    assert sorted(left.values()) == ["train", "train.candidate", "workflow"]
    for run_id in left:
        run = client.get_run(run_id)
        assert run.info.status == "RUNNING"
        assert run.data.tags["mlops.pid"] == str(trainer.pid)
        assert run.data.tags[HEARTBEAT_TAG]

    again = subprocess.run([*workflow, *QUICK_SWEEP], cwd=tmp_path, env=child_env(),
                           capture_output=True, text=True, timeout=150)  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    for run_id in left:
        assert f"reaped run {run_id}" in again.stderr
    _assert_reaped(client, left, f"process {trainer.pid} on ")
    exp = client.get_experiment_by_name("reap").experiment_id
    assert client.search_runs([exp], "attributes.status = 'RUNNING'") == []
    new_id = next(x for x in again.stdout.splitlines() if x.startswith("workflow run")).split()[2]
    assert client.get_run(new_id).info.status == "FINISHED"


@pytest.mark.slow
def test_killed_mlflow_run_group_leaves_nothing_open_after_runs_reap(tmp_path):
    db = tmp_path / "mlflow.db"
    client = mlflow.MlflowClient()
    exp = client.create_experiment("group", artifact_location=str(tmp_path / "artifacts"))
    params = ["-P", "n_jobs=1", "-P", "candidates=" + SLOW_SWEEP[-1]]
    cmd = [sys.executable, "-m", "mlflow", "run", str(REPO), "--env-manager", "local",
           "--experiment-id", exp, *params]  # fmt: skip
    group = _start(cmd, tmp_path, start_new_session=True)
    try:
        left = kill_mid_candidate(group, db, group=True)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group.pid, signal.SIGKILL)
    assert sorted(left.values()) == ["train", "train.candidate", "workflow"]
    parent = next(client.get_run(r) for r, step in left.items() if step == "workflow")
    # the `mlflow run` process created the parent run: it is the run's own process; the
    # workflow child that resumed it is recorded too
    assert parent.data.tags["mlops.pid"] == str(group.pid)
    child_pid = parent.data.tags["mlops.resumed_by"].split("/")[1]
    assert child_pid != str(group.pid)
    assert all(client.get_run(r).data.tags["mlops.pid"] == child_pid
               for r, step in left.items() if step != "workflow")  # fmt: skip

    reap = subprocess.run([sys.executable, "-m", "tracking", "runs", "reap"], cwd=tmp_path,
                          env=child_env(), capture_output=True, text=True, timeout=120)  # fmt: skip
    assert reap.returncode == 0, reap.stderr[-3000:]
    assert "closed 3 run(s), ended FAILED" in reap.stdout
    assert all(run_id in reap.stdout for run_id in left)
    _assert_reaped(client, left, " on ")
    assert client.search_runs([exp], "attributes.status = 'RUNNING'") == []


def test_runs_reap_closes_silent_runs_of_other_hosts_never_live_ones(tmp_path, capsys):
    client = mlflow.MlflowClient()
    exp = client.create_experiment("hosts")
    other = client.create_experiment("elsewhere")
    now = int(time.time() * 1000)
    hours = 3600 * 1000
    away = {"mlops.host": "gpu-box-7", "mlops.pid": "4242", "mlops.pid_start": "b:1"}

    def run(name, start, tags, experiment=exp):
        return client.create_run(experiment, start_time=start, tags=tags,
                                 run_name=name).info.run_id  # fmt: skip

    old_away = run("old-away", now - 3 * hours, away)
    young_away = run("young-away", now - 10 * 60 * 1000, away)
    untagged = run("old-untagged", now - 30 * hours, {})
    metric_recent = run("old-but-logging", now - 5 * hours, away)
    client.log_metric(metric_recent, "loss", 0.5, timestamp=now - 60 * 1000)
    beating = run("old-but-beating", now - 5 * hours,
                  {**away, HEARTBEAT_TAG: "2999-01-01T00:00:00.000+00:00"})
    other_exp = run("old-away-other-experiment", now - 3 * hours, away, other)
    sleeper = subprocess.Popen(["sleep", "120"])
    alive = me = None
    try:
        # alive on this host: never reaped, however old
        alive = run("alive-here", now - 50 * hours, process_mark(sleeper.pid).tags())
        me = run("this-process", now - 50 * hours, process_mark().tags())
        # the pid lives, but it is not the process that ran it: the pid was reused
        reused = run("pid-reused", now - 60 * 1000,
                     {**process_mark(sleeper.pid).tags(), "mlops.pid_start": "old-boot:1"})

        base = [sys.executable, "-m", "tracking", "runs", "reap", "--older-than", "2h",
                "--experiment", "hosts"]  # fmt: skip
        # in this process: the dry run shows the same runs and changes nothing
        assert main([*base[3:], "--dry-run"]) == 0
        dry = capsys.readouterr().out
        assert "would close (dry run)" in dry
        assert client.get_run(old_away).info.status == "RUNNING"

        done = subprocess.run(base, cwd=tmp_path, env=child_env(), capture_output=True,
                              text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr
        closed = {old_away, untagged, reused}
        assert "closed 3 run(s), ended FAILED" in done.stdout
        for run_id in (*closed, young_away, metric_recent, beating, alive, me, other_exp):
            assert (run_id in dry) == (run_id in closed), run_id
            assert (run_id in done.stdout) == (run_id in closed), run_id
            status = client.get_run(run_id).info.status
            assert status == ("FAILED" if run_id in closed else "RUNNING"), run_id
        assert "not heard from for 3h" in client.get_run(old_away).data.tags[REAPED_TAG]
        assert "gpu-box-7" in client.get_run(old_away).data.tags[REAPED_TAG]
        # the end time is the last sign of life, not the moment of reaping
        assert client.get_run(old_away).info.end_time == now - 3 * hours
        assert f"process {sleeper.pid} on " in client.get_run(reused).data.tags[REAPED_TAG]

    finally:
        sleeper.kill()
        sleeper.wait()
        for run_id in (alive, me):  # leave the store tidy
            if run_id:
                client.set_terminated(run_id)
