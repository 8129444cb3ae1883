"""``make run PARAMS=...`` hands every pair to ``mlflow run`` intact, each as one ``-P``.

A stand-in for mlflow (``MLFLOW=``) prints the arguments it was given: nothing runs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def _make_run(tmp_path: Path, params: str | None):
    fake = tmp_path / "mlflow"
    fake.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    fake.chmod(0o755)
    venv = Path(sys.executable).parent.parent
    cmd = ["make", "-s", "-C", str(ROOT), "run", f"VENV={venv}", f"MLFLOW={fake}",
           "-o", "venv", "-o", f"{venv}/bin/.runtime"]
    if params is not None:
        cmd.append(f"PARAMS={params}")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def _ps(out) -> list[str]:
    args = json.loads(out.stdout.strip().splitlines()[-1])
    assert args[:6] == ["run", ".", "--env-manager", "local", "--experiment-name",
                        "mlops-registry"]
    rest = args[6:]
    assert rest[::2] == ["-P"] * (len(rest) // 2)
    return rest[1::2]


@pytest.mark.parametrize(("params", "expected"), [
    # the command: half of it used to run as a shell command
    ("set=clean.outliers=drop;split.seed=7", ["set=clean.outliers=drop;split.seed=7"]),
    ("profile=team", ["profile=team"]),
    ("estimators=linear metric=f1", ["estimators=linear", "metric=f1"]),
    # spaces, quotes of both kinds, $ and backquotes reach mlflow as written
    ("set='clean.outliers=drop; split.seed=7' target=\"Clutch Completion\"",
     ["set=clean.outliers=drop; split.seed=7", "target=Clutch Completion"]),
    ("candidates='[{estimator: linear, grid: {C: [0.5, 1]}}]'",
     ["candidates=[{estimator: linear, grid: {C: [0.5, 1]}}]"]),
    ("source=\"it's $HOME `id`.csv\"", ["source=it's $HOME `id`.csv"]),
])
def test_every_pair_reaches_mlflow_run_intact(tmp_path, params, expected):
    out = _make_run(tmp_path, params)
    assert out.returncode == 0, out.stderr
    assert _ps(out) == expected


def test_no_params_and_bad_params(tmp_path):
    assert _ps(_make_run(tmp_path, None)) == []
    bad = _make_run(tmp_path, "oops")
    assert bad.returncode != 0
    assert "error: PARAMS: expected key=value, got 'oops'" in bad.stderr
    unclosed = _make_run(tmp_path, "set='a")
    assert unclosed.returncode != 0
    assert "error: PARAMS: No closing quotation" in unclosed.stderr
    assert "Traceback" not in unclosed.stderr
