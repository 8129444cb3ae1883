"""MLflow's client settings in the project's processes, and the line for a server that is gone."""

from __future__ import annotations

import json
import subprocess
import sys

import mlflow
import pytest

from core.connection import HTTP_DEFAULTS, unreachable, unreachable_line
from tests.support.processes import REPO, child_env, free_port

# What MLflow reads as "a CI run or a test" (telemetry off by itself): gone from the probe's
# environment, so the probe sees what a user's shell gives a command line.
_CI_VARIABLES = ("PYTEST_CURRENT_TEST", "GITHUB_ACTIONS", "CI", "CIRCLECI", "GITLAB_CI",
                 "JENKINS_URL", "TRAVIS", "TF_BUILD", "BUILDKITE")

PROBE = '''
import json, os, sys

import click

@click.group()
def cli():
    pass

@cli.command()
def probe():
    import mlflow  # after start-up, as every command imports it
    from mlflow.telemetry import get_telemetry_client

    keys = ("MLFLOW_DISABLE_TELEMETRY", "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
            "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "MLFLOW_HTTP_REQUEST_TIMEOUT")
    print(json.dumps({"env": {k: os.environ.get(k) for k in keys},
                      "telemetry": get_telemetry_client() is not None}))

if sys.argv[1] == "command-line":
    from core.cli import run_group

    sys.exit(run_group(cli, ["probe"], "probe"))
probe.main(args=[], standalone_mode=False)  # plain MLflow, for comparison
'''


def _probe(tmp_path, how: str, **env) -> dict:
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    child = child_env(env)
    for key in [k for k in child if k.startswith("MLFLOW_") or k in _CI_VARIABLES]:
        if key not in env:
            del child[key]
    out = subprocess.run([sys.executable, str(script), how], cwd=REPO, env=child,
                         capture_output=True, text=True, timeout=120, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_a_command_line_runs_with_telemetry_off_and_a_minute_of_retries(tmp_path):
    seen = _probe(tmp_path, "command-line", MLFLOW_HTTP_REQUEST_TIMEOUT="77")
    assert seen["telemetry"] is False
    assert seen["env"] == {
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": HTTP_DEFAULTS["MLFLOW_HTTP_REQUEST_MAX_RETRIES"],
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": HTTP_DEFAULTS["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"],
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "77",  # the user's own value is kept
    }


def test_without_the_command_line_mlflow_starts_its_telemetry(tmp_path):
    """The control: the same process without the project's start-up has telemetry on."""
    seen = _probe(tmp_path, "plain")
    assert seen["telemetry"] is True
    assert seen["env"]["MLFLOW_DISABLE_TELEMETRY"] is None


@pytest.mark.parametrize("status_code", [None, 503])
def test_an_unreachable_server_is_named_in_one_line(monkeypatch, status_code):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    if status_code is None:
        url = f"http://127.0.0.1:{free_port()}"  # nobody listens
        why = "connection refused"
        client = mlflow.MlflowClient(tracking_uri=url)
        with pytest.raises(mlflow.exceptions.MlflowException) as caught:
            client.get_experiment("0")
    else:
        pytest.importorskip("werkzeug")
        from werkzeug.serving import make_server
        from werkzeug.wrappers import Response

        server = make_server("127.0.0.1", 0, lambda env, start: Response(
            "down", status=status_code)(env, start))
        url = f"http://127.0.0.1:{server.server_port}"
        why = f"answered {status_code} every time"
        # the server the command talks to (MLflow 3.18's message names the endpoint only)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        import threading

        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            client = mlflow.MlflowClient(tracking_uri=url)
            with pytest.raises(mlflow.exceptions.MlflowException) as caught:
                client.get_experiment("0")
        finally:
            server.shutdown()
    assert unreachable(caught.value)
    assert unreachable_line(caught.value) == f"the tracking server {url} is unreachable ({why})"


def test_aws_out_of_reach_names_aws_not_the_tracking_server(monkeypatch):
    """boto3 refused at AWS's endpoint (here nobody listens on it): the line names that endpoint."""
    import boto3

    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")
    client = boto3.client("sagemaker", endpoint_url=url, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    with pytest.raises(Exception) as caught:
        client.list_endpoints()
    assert unreachable(caught.value)
    assert unreachable_line(caught.value) == f"AWS {url}/ is unreachable (connection refused)"


def test_a_refusal_is_not_an_unreachable_server(tmp_path):
    client = mlflow.MlflowClient()
    with pytest.raises(mlflow.exceptions.MlflowException) as caught:
        client.get_registered_model("no-such-model")
    assert not unreachable(caught.value)
