"""Every command ``make run`` prints as a hint works as printed from a plain shell.

A plain shell is one without the virtual environment: PATH holds only the system's folders, no
``VIRTUAL_ENV``. Before, the summary said ``python -m serving serve NAME@champion``, which
failed there with ``ModuleNotFoundError``.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import mlflow
import pytest
from click.testing import CliRunner

from projects.cli import _print_summary
from tests.support.processes import ARTIFACTS, free_port, stop, wait_healthy
from tests.support.serving_models import cancer_data, fit_pipeline, log_sklearn_version

ROOT = Path(__file__).resolve().parents[3]
PLAIN_PATH = "/usr/local/bin:/usr/bin:/bin"
MODEL = "hint-model"


def _plain_env(home: Path) -> dict[str, str]:
    """A login shell's environment in the checkout, without the virtual environment."""
    assert not (ROOT / ".venv" / "bin").samefile(Path("/usr/bin"))
    return {"PATH": PLAIN_PATH, "HOME": str(home), "LANG": "C.UTF-8"}


def _summary(uri: str, *, crowned: bool, aliases: list[str]) -> dict[str, str]:
    """The hints of the workflow's summary: ``{label: command}``."""
    result = SimpleNamespace(
        run_id="0123456789abcdef", experiment_id="1", steps={}, model_name=MODEL,
        model_version="1", aliases=aliases, crowned=crowned,
        crown_reason="auto-champion: embedded store with the local profile",
    )
    with CliRunner().isolation() as (out, _, _):
        _print_summary(result, uri)
    hints = {}
    for line in out.getvalue().decode().splitlines():
        label, _, rest = line.partition("  ")
        hints[label.strip()] = rest.split("→")[0].strip()
    return hints


def _run_as_printed(command: str, home: Path, extra: str = "", **kwargs):
    return subprocess.run(["bash", "-c", command + extra], cwd=ROOT, env=_plain_env(home),
                          capture_output=True, text=True, **kwargs)


def test_no_hint_is_a_bare_python_command(isolated_tracking):
    for crowned, aliases in ((True, ["champion"]), (False, ["challenger"])):
        for command in _summary(isolated_tracking, crowned=crowned, aliases=aliases).values():
            assert not command.startswith("python"), command


def test_serve_hint_serves_the_champion_from_a_plain_shell(isolated_tracking, tmp_path):
    X, y = cancer_data()
    client = mlflow.MlflowClient()
    version = log_sklearn_version(client, MODEL, fit_pipeline(X, y), X)
    client.set_registered_model_alias(MODEL, "champion", version)
    hints = _summary(isolated_tracking, crowned=True, aliases=["champion"])
    assert "promote it" not in hints
    serve = hints["serve it"]
    assert serve.startswith(f"make serve MODEL={MODEL}@champion MLFLOW_TRACKING_URI=")

    port = free_port()
    ARTIFACTS.mkdir(exist_ok=True)
    log = ARTIFACTS / f"printed-serve-hint-{os.getpid()}.log"
    with open(log, "wb") as out:
        # the hint as printed; ARGS only picks a free port (the default 5000 may be taken)
        proc = subprocess.Popen(["bash", "-c", f"{serve} ARGS='--port {port} --workers 1'"],
                                cwd=ROOT, env=_plain_env(tmp_path), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_healthy(f"http://127.0.0.1:{port}/ping", proc, 90, log)
        rows = X.head(3)
        body = {"dataframe_split": {"columns": list(rows.columns), "data": rows.values.tolist()}}
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as resp:
            assert len(json.loads(resp.read())["predictions"]) == 3
    finally:
        stop(proc)
    assert b"ModuleNotFoundError" not in log.read_bytes()


def test_promote_and_ui_hints_start_from_a_plain_shell(isolated_tracking, tmp_path):
    hints = _summary(isolated_tracking, crowned=False, aliases=["challenger"])
    promote = hints["promote it"]
    assert promote.startswith(f"make promote MODEL={MODEL}/1 REASON='why' MLFLOW_TRACKING_URI=")
    # as printed, against a store without the model: the registry's own one-line refusal
    done = _run_as_printed(promote, tmp_path, timeout=120)
    assert done.returncode != 0
    assert f"error: unknown model '{MODEL}'" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr

    ui = hints["open the UI"]
    assert ui.startswith("make ui")
    done = _run_as_printed(ui, tmp_path, " -n")  # -n: what make would run, without the UI
    assert done.returncode == 0, done.stderr
    assert ".venv/bin/python -m tracking ui" in done.stdout


@pytest.mark.parametrize("target", ["serve", "promote"])
def test_make_targets_say_what_they_need(target, tmp_path):
    done = _run_as_printed(f"make {target}", tmp_path, timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith("error: name the ")
