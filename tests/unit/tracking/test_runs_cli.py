"""``python -m tracking runs reap``: flags, exit codes, output (in process, on the test store)."""

from __future__ import annotations

import subprocess
import time

import mlflow
import pytest

from core.runs import REAPED_TAG, process_mark
from tracking.cli import main


@pytest.mark.parametrize(
    ("args", "code", "expected"),
    [
        (["--older-than", "5x"], 2,
         "error: Invalid value for '--older-than': '5x' is not a duration"),
        (["--older-than", "0s"], 2, "error: Invalid value for '--older-than': '0s': the duration"),
        (["--frobnicate"], 2, "error: No such option '--frobnicate'"),
        (["--experiment", "nope"], 1, "error: no experiment named or numbered 'nope'"),
    ],
)  # fmt: skip
def test_bad_input_is_one_error_line(capsys, args, code, expected):
    assert main(["runs", "reap", *args]) == code
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(expected), lines


def test_nothing_to_reap(capsys):
    assert main(["runs", "reap"]) == 0
    assert capsys.readouterr().out.strip() == "nothing to reap"


def test_reap_by_experiment_id_closes_a_dead_run_of_this_host(capsys):
    client = mlflow.MlflowClient()
    exp = client.create_experiment("cli")
    gone = subprocess.Popen(["true"])  # a process that has exited
    gone.wait()
    run_id = client.create_run(exp, run_name="trainer", tags={
        **process_mark().tags(), "mlops.pid": str(gone.pid)}).info.run_id  # fmt: skip
    # a young run of another host is left to its owner
    young = client.create_run(exp, start_time=int(time.time() * 1000),
                              tags={"mlops.host": "other", "mlops.pid": "1"}).info.run_id
    assert main(["runs", "reap", "--experiment", exp, "--older-than", "1d"]) == 0
    out = capsys.readouterr().out
    assert "closed 1 run(s), ended FAILED" in out
    assert run_id in out and "trainer" in out and young not in out
    assert f"process {gone.pid} on" in client.get_run(run_id).data.tags[REAPED_TAG]
    assert client.get_run(run_id).info.status == "FAILED"
    assert client.get_run(young).info.status == "RUNNING"
    client.set_terminated(young)
