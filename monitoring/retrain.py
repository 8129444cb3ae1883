"""The retrain trigger: run the training workflow on new data, through its public interface.

The interface, in one place:

* **How it is started**: the MLflow Project at the repository's root, entry point
  :data:`ENTRY_POINT`, with the ``-P`` parameters below. ``MLproject``'s header documents every
  ``-P`` name; this trigger uses ``source``, ``profile``, ``model_name``, ``target`` and ``set``,
  and through ``set`` the settings keys ``register.trigger`` and ``register.trigger_reason``
  (:class:`core.settings.RegisterSettings`), so the workflow records its alias moves with kind
  ``retrain`` and a reason naming the monitoring run. It is started with MLflow's own API
  (``mlflow.projects.run``, what ``mlflow run`` calls) in a process of its own, whose output is
  kept apart from the monitor's.
* **What it answers**: the workflow's run id, which ``mlflow.projects.run`` returns. What the run
  registered is read from MLflow with that id (:func:`read_outcome`): the tags the workflow
  writes on its run and on its register step's run. Never the workflow's printed lines.

``tests/unit/monitoring/test_retrain.py`` fails if a ``-P`` name stops being documented in
``MLproject`` or a settings key stops existing.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from core import names

_logger = logging.getLogger(__name__)

#: The MLproject entry point the trigger runs (every step; unchanged steps reused).
ENTRY_POINT = "main"
#: The ``-P`` parameters the trigger passes (MLproject documents each).
PARAMETERS = ("source", "profile", "model_name", "target", "set")
#: The settings keys it sets through ``-P set=`` (core.settings: register.*).
TRIGGER_KEY = "register.trigger"
REASON_KEY = "register.trigger_reason"
TRIGGER = "retrain"
#: The identity the retraining workflow logs and registers as (never the monitor's own).
RETRAIN_USERNAME = "MLOPS_RETRAIN_USERNAME"
RETRAIN_PASSWORD = "MLOPS_RETRAIN_PASSWORD"  # noqa: S105 - a variable's name, not a password

# What the workflow records in MLflow (projects: its run's and its register step's tags).
_TAG_VERSION = names.MODEL_VERSION_TAG
_TAG_REGISTER_RUN = names.step_run_tag("register")
_TAG_CROWNED = names.CROWNED_TAG
_TAG_CROWN_REASON = names.CROWN_REASON_TAG


@dataclass(frozen=True)
class Retrained:
    """How the workflow's process ended, and the run it logged to.

    Attributes:
        returncode: the workflow's exit code (0: it ran to the end).
        stdout: what it printed (for a person reading a failure; never parsed).
        stderr: its error output; the last line is its one-line reason on failure.
        run_id: the workflow's MLflow run, or None when it never started one.
    """

    returncode: int
    stdout: str
    stderr: str
    run_id: str | None


@dataclass(frozen=True)
class Outcome:
    """What a workflow run registered, as MLflow holds it."""

    run_id: str
    model_name: str
    version: str | None
    aliases: tuple[str, ...] = ()
    crowned: bool = False
    crown_reason: str = ""


def trigger_reason(monitor_run_id: str | None) -> str:
    """The reason recorded with the new version's alias moves."""
    return (f"retraining after monitoring run {monitor_run_id} crossed a threshold"
            if monitor_run_id else "retraining after monitoring crossed a threshold")


def workflow_parameters(data: str, profile: str, model_name: str, target: str | None = None,
                        reason: str = "") -> dict[str, str]:
    """The ``-P`` parameters of a retraining run of :data:`ENTRY_POINT`."""
    # ';' separates settings in `set`, so the reason must not contain one
    sets = f"{TRIGGER_KEY}={TRIGGER};{REASON_KEY}={reason.replace(';', ',')}"
    params = {"source": data, "profile": profile, "model_name": model_name, "set": sets}
    if target:
        params["target"] = target
    return params


def workflow_environment(workdir: Path, env: dict | None = None) -> dict[str, str]:
    """The retraining workflow's environment: the trust boundary's, with its own identity.

    The workflow runs code the monitor did not write (the project's steps, the data scientist's
    feature and estimator files), so it gets :func:`core.sandbox.child_environment`: none of the
    monitor's credentials, cloud keys or secrets. It must still log and register on the
    tracking server, so it gets that server's URI and, when set, the identity meant for it:
    :data:`RETRAIN_USERNAME` / :data:`RETRAIN_PASSWORD` become its
    ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` (a user with the data
    scientist's rights: register a version, move ``challenger``, never ``champion``).

    Args:
        workdir: the child's own folder (its ``HOME``).
        env: the monitor's environment (default ``os.environ``): the tracking URI, ``PATH``
            and the retraining identity are read from it.
    """
    from core.sandbox import child_environment

    env = dict(os.environ if env is None else env)
    # PATH finds python and mlflow; this checkout is importable wherever the monitor runs
    extra = {"PATH": env.get("PATH", ""), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        if env.get(name):
            extra[name] = env[name]
    if env.get(RETRAIN_USERNAME):
        extra["MLFLOW_TRACKING_USERNAME"] = env[RETRAIN_USERNAME]
        extra["MLFLOW_TRACKING_PASSWORD"] = env.get(RETRAIN_PASSWORD, "")
    if "MLFLOW_REGISTRY_URI" not in extra and "MLFLOW_TRACKING_URI" in extra:
        extra["MLFLOW_REGISTRY_URI"] = extra["MLFLOW_TRACKING_URI"]
    return child_environment(workdir, extra, parent=env)


def retrain(project: str, data: str, profile: str, experiment: str, model_name: str,
            target: str | None = None, env: dict | None = None,
            monitor_run_id: str | None = None) -> Retrained:
    """Run the training workflow on ``data`` for the same registered model; wait for it.

    The new version becomes ``challenger``, and champion only under the workflow's
    auto-champion decision (automatic: the embedded store with the ``local`` profile). Its
    alias moves are recorded with kind ``retrain`` and a reason naming ``monitor_run_id``.

    Args:
        project: the MLflow Project (the repository's root).
        data: the new labelled data (``-P source``).
        profile: settings profile.
        experiment: the workflow's experiment.
        model_name: the registered model.
        target: target column, if not the settings'.
        env: the monitor's environment (the tracking store, ``python`` on ``PATH``); the
            workflow gets :func:`workflow_environment` of it, never its credentials.
        monitor_run_id: the monitoring run that crossed a threshold.
    """
    spec = {"uri": project, "entry_point": ENTRY_POINT, "experiment_name": experiment,
            "parameters": workflow_parameters(data, profile, model_name, target,
                                              trigger_reason(monitor_run_id))}
    with tempfile.TemporaryDirectory() as tmp:
        answer = Path(tmp) / "run.json"
        cmd = [sys.executable, "-m", "monitoring.retrain", json.dumps(spec), str(answer)]
        _logger.info("retraining: %s %s", ENTRY_POINT, spec["parameters"])
        proc = subprocess.run(cmd, capture_output=True, text=True,
                              env=workflow_environment(Path(tmp) / "child", env))
        run_id = json.loads(answer.read_text())["run_id"] if answer.is_file() else None
    return Retrained(proc.returncode, proc.stdout, proc.stderr, run_id)


def read_outcome(client, run_id: str, model_name: str) -> Outcome:
    """What the workflow run ``run_id`` registered, read from MLflow."""
    tags = client.get_run(run_id).data.tags
    version = tags.get(_TAG_VERSION) or None
    if version is None:
        return Outcome(run_id, model_name, None)
    crowned, reason = False, ""
    if register_run := tags.get(_TAG_REGISTER_RUN):
        step = client.get_run(register_run).data.tags
        crowned, reason = step.get(_TAG_CROWNED) == "True", step.get(_TAG_CROWN_REASON, "")
    aliases = tuple(sorted(client.get_model_version(model_name, version).aliases or ()))
    return Outcome(run_id, model_name, version, aliases, crowned, reason)


def _launch(argv: list[str]) -> int:
    """``python -m monitoring.retrain SPEC ANSWER``: run the project, write its run id first.

    The run id goes to the file ``ANSWER`` as soon as MLflow created the run, so the caller has
    it whatever the workflow's end.
    """
    import mlflow
    import mlflow.projects

    spec, answer = json.loads(argv[0]), Path(argv[1])
    submitted = mlflow.projects.run(spec["uri"], spec["entry_point"],
                                    parameters=spec["parameters"],
                                    experiment_name=spec["experiment_name"],
                                    env_manager="local", synchronous=False)
    answer.write_text(json.dumps({"run_id": submitted.run_id}))
    if submitted.wait():
        return 0
    client = mlflow.MlflowClient()
    if client.get_run(submitted.run_id).info.status == "RUNNING":  # ended before it could say
        client.set_terminated(submitted.run_id, "FAILED")
    return 1


if __name__ == "__main__":
    sys.exit(_launch(sys.argv[1:]))
