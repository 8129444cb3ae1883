"""Rebuild a version from its lineage and show whether it is the same model.

:func:`reproduce_version` checks out the recorded commit in a temporary ``git worktree``
(applying the recorded diff), verifies the data file still has the recorded digest, compares
the installed package versions with the recorded ones, re-runs the workflow's steps up to
``train`` with the recorded settings and the cache off (a subprocess of the worktree's own code,
on this Python), then compares the new model's predictions (labels and probabilities) on the
version's own test split with the registered model's, bit for bit.

The recorded code and both models are the version's author's code: they run in children that
hold no credentials (:mod:`core.sandbox`). The re-run logs to the child's throwaway store, read
from here and removed afterwards; the registry's server gets one record run per reproduction in
the scratch experiment (tag ``mlops.reproduces``, outcome ``mlops.reproduced``).

The re-run is the workflow's command line, read through its documented interfaces only (the
registry never imports the workflow): ``python -m projects train --output json`` prints its
result as one JSON document on stdout (the workflow's ``projects/result.py`` lists the keys;
:func:`read_result` reads the ones used here), its one-line reason on stderr when it fails, and
the steps' runs show in the tracking store as they finish (the progress lines come from there).
A commit older than ``--output json`` is re-run without it; its model is then found through
the re-run's lineage.

The re-run stops after ``train``: evaluate and register would compare with the champion and
register a version, and neither shapes the model. The registry is only read.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from core import lineage as names
from core.names import MODEL_URI_TAG, REPRODUCED_TAG, REPRODUCES_RUN_TAG, STEP_TAG
from registry.errors import RegistryError
from registry.lineage import Lineage, read_lineage, read_run_lineage
from registry.reproduce_compare import (
    MODEL_STEPS,
    compare_predictions,
    diagnose,
    machine_changes,
    package_changes,
    predict_both,
)
from registry.versions import download

_logger = logging.getLogger(__name__)

#: Default experiment of the re-runs.
SCRATCH_EXPERIMENT = "mlops-registry-reproductions"
#: The step the re-run goes up to: the model exists after it.
RERUN_UNTIL = "train"
RERUN_TIMEOUT_SECONDS = 3600
_GIT_TIMEOUT = 120
#: Seconds between two looks at the tracking store for the re-run's finished steps.
PROGRESS_POLL_SECONDS = 2.0
#: The versions of the workflow's JSON document this module reads.
RESULT_FORMATS = (1,)


class CannotReproduce(RegistryError):
    """The reproduction cannot even start: unknown commit, changed data, nothing recorded."""


@dataclass
class Reproduction:
    """What a reproduction found."""

    ref: str
    identical: bool = False
    rows: int = 0
    run_id: str | None = None
    experiment_id: str | None = None
    seconds: float = 0.0
    original_seconds: float | None = None
    package_changes: list[tuple[str, str, str]] = field(default_factory=list)
    machine_changes: list[str] = field(default_factory=list)
    causes: list[str] = field(default_factory=list)
    differing: list[dict] = field(default_factory=list)
    n_differing: int = 0
    max_proba_delta: float | None = None


# --------------------------------------------------------------------------- checks
def _git(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=_GIT_TIMEOUT)


def find_repo(start: Path | None = None) -> Path:
    """The git checkout to take the commit from.

    ``start`` (``--repo``) when given, else the current directory's, else this code's.
    """
    candidates = (start,) if start else (Path.cwd(), Path(__file__).resolve().parents[1])
    for candidate in candidates:
        try:
            out = _git(["rev-parse", "--show-toplevel"], candidate)
        except (OSError, subprocess.SubprocessError):
            continue
        if out.returncode == 0:
            return Path(out.stdout.strip())
    if start:
        raise CannotReproduce(f"{start} is not a git checkout")
    raise CannotReproduce("no git checkout here to take the recorded commit from "
                          "(run it inside the project's checkout, or give --repo)")


def check_commit(repo: Path, commit: str | None, ref: str) -> None:
    """Refuse when the commit is unknown or absent from ``repo``."""
    if not commit or commit == "unknown":
        raise CannotReproduce(f"{ref}: the code commit is unknown (the workflow ran outside a "
                              "git checkout)")
    if _git(["cat-file", "-e", f"{commit}^{{commit}}"], repo).returncode != 0:
        raise CannotReproduce(f"{ref}: commit {commit[:12]} is not in {repo} (fetch it first)")


def check_data(lin: Lineage) -> None:
    """Refuse when a recorded data file is gone or its bytes changed (both digests named)."""
    data = lin.data
    if data.kind == "sql" and "***" in (data.location or ""):
        raise CannotReproduce(f"{lin.ref}: the data source is a SQL URL whose password was not "
                              "recorded; reproduction cannot connect to it")
    if data.kind != "file" or not data.file_sha256:
        return
    path = Path(data.location or "")
    if not path.is_file():
        raise CannotReproduce(f"{lin.ref}: data file {path} is gone (recorded sha256 "
                              f"{data.file_sha256[:16]})")
    now = names.file_sha256(path)
    if now != data.file_sha256:
        raise CannotReproduce(f"data changed: {path} has sha256 {now[:16]} now, {lin.ref} was "
                              f"trained on sha256 {data.file_sha256[:16]}")


def check_user_files(lin: Lineage) -> None:
    """Refuse when a recorded user file outside the checkout changed (inside, git has it)."""
    for path, digest in lin.user_files.items():
        if not Path(path).is_absolute():
            continue
        now = names.file_sha256(path) if Path(path).is_file() else "gone"
        if now != digest:
            raise CannotReproduce(f"code changed: {path} has sha256 {now[:16]} now, {lin.ref} "
                                  f"was trained with sha256 {digest[:16]}")


# --------------------------------------------------------------------------- the re-run
def absolute_uri(uri: str) -> str:
    """A tracking URI that means the same store from any working directory."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path = uri.removeprefix("sqlite:///")
        return f"sqlite:///{Path(path).resolve()}" if path and path != ":memory:" else uri
    if uri.startswith("file:") or "://" not in uri:
        path = uri.removeprefix("file://").removeprefix("file:")
        return Path(path).resolve().as_uri()
    return uri


def _worktree(repo: Path, commit: str, where: Path) -> Path:
    tree = where / "tree"
    out = _git(["worktree", "add", "--detach", str(tree), commit], repo)
    if out.returncode != 0:
        raise CannotReproduce(f"cannot check out {commit[:12]}: "
                              f"{(out.stderr.strip().splitlines() or ['git failed'])[-1]}")
    return tree


def _apply_diff(client, lin: Lineage, tree: Path, where: Path) -> None:
    from mlflow.exceptions import MlflowException

    try:
        patch = download(client, f"runs:/{lin.run_id}/{lin.diff}", where / "diff")
    except (MlflowException, OSError) as exc:
        raise CannotReproduce(f"{lin.ref}: the recorded diff cannot be read: "
                              f"{str(exc).splitlines()[0]}") from None
    if lin.diff_sha256 and names.file_sha256(patch) != lin.diff_sha256:
        raise CannotReproduce(f"{lin.ref}: the recorded diff does not match its digest")
    if patch.stat().st_size == 0:
        return
    out = _git(["apply", "--binary", "--whitespace=nowarn", str(patch)], tree)
    if out.returncode != 0:
        raise CannotReproduce(f"{lin.ref}: the recorded diff does not apply to "
                              f"{lin.commit[:12]}: {out.stderr.strip().splitlines()[-1]}")


def _settings_dir(lin: Lineage, where: Path) -> tuple[Path, str]:
    """A settings folder whose base is the recorded settings and whose profile is empty."""
    import yaml

    profile = lin.profile or (lin.settings or {}).get("profile") or "local"
    conf = where / "conf"
    (conf / "profiles").mkdir(parents=True)
    base = {k: v for k, v in (lin.settings or {}).items() if k != "profile"}
    (conf / "base.yaml").write_text(yaml.safe_dump(base, sort_keys=False))
    (conf / "profiles" / f"{profile}.yaml").write_text("{}\n")
    return conf, profile


def _local_client(child: Path):
    """An MlflowClient of the child's throwaway store (:func:`core.sandbox.prepared_store`)."""
    import mlflow

    from core.sandbox import prepared_store

    uri = prepared_store(child)  # a migrated empty store, copied from the user's cache
    return mlflow.MlflowClient(uri, uri)


def _scratch_run(client, into: str, lin: Lineage,
                 artifacts: Path | None = None) -> tuple[str, str]:
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(into)
    if exp is None:
        try:
            exp_id = client.create_experiment(
                into, artifact_location=artifacts.as_uri() if artifacts else None)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            exp_id = client.get_experiment_by_name(into).experiment_id
    else:
        exp_id = exp.experiment_id
    run = client.create_run(exp_id, run_name=f"reproduce {lin.ref}", tags={
        names.REPRODUCES_TAG: lin.ref,
        REPRODUCES_RUN_TAG: lin.run_id or "",
        "mlflow.note.content": f"Re-run of the workflow behind {lin.ref} (workflow run "
                               f"{lin.run_id}, commit {lin.commit}) with the cache off.",
    })
    return exp_id, run.info.run_id


def rerun_command(lin: Lineage, profile: str, as_json: bool = True) -> list[str]:
    """The workflow command the worktree runs: recorded settings, cache off, up to train.

    Args:
        lin: the version's lineage.
        profile: the settings profile of the re-run (its file is empty: the base holds all).
        as_json: ask for the JSON document on stdout (``--output json``).
    """
    cmd = [sys.executable, "-m", "projects", RERUN_UNTIL, "--profile", profile,
           "--set", "cache=false"]
    if lin.data.kind == "file" and lin.data.location:
        # the recorded source may be relative to where the original ran
        cmd += ["--set", f"data.source={lin.data.location}"]
    if as_json:
        cmd += ["--output", "json"]
    return cmd


def read_result(text: str) -> dict:
    """The workflow's JSON document (``--output json``), checked for what reproduction reads.

    Raises:
        RegistryError: not one JSON object, an unknown ``format``, or no ``run_id``.
    """
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise RegistryError("the re-run printed no JSON document on stdout")
    if doc.get("format") not in RESULT_FORMATS:
        raise RegistryError(f"the re-run's JSON document has format {doc.get('format')!r}; "
                            f"this registry reads {', '.join(map(str, RESULT_FORMATS))}")
    if not doc.get("run_id") or not isinstance(doc.get("steps"), dict):
        raise RegistryError("the re-run's JSON document names no workflow run or steps")
    return doc


def _speaks_json(tree: Path, env: dict) -> bool:
    """Whether the worktree's workflow offers ``--output json`` (its ``--help`` lists it)."""
    try:
        out = subprocess.run([sys.executable, "-m", "projects", RERUN_UNTIL, "--help"], cwd=tree,
                             env=env, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and "--output" in out.stdout


def finished_steps(client, experiment_id: str, run_id: str) -> list[tuple[str, float]]:
    """The model steps the re-run ``run_id`` finished so far, with their seconds, in order.

    Read from the tracking store: the steps are the workflow run's child runs (``mlops.step``).
    """
    runs = client.search_runs(
        [experiment_id], max_results=100, order_by=["attributes.start_time ASC"],
        filter_string=f"tags.`mlflow.parentRunId` = '{run_id}' and "
                      "attributes.status = 'FINISHED'")
    out = []
    for run in runs:
        step = run.data.tags.get(STEP_TAG)
        if step in MODEL_STEPS and run.info.end_time and run.info.start_time:
            out.append((step, (run.info.end_time - run.info.start_time) / 1000))
    return out


def _run_workflow(local, lin: Lineage, tree: Path, conf: Path, profile: str,
                  experiment_id: str, run_id: str, child: Path,
                  echo: Callable[[str], None] = lambda _line: None) -> dict | None:
    """Re-run the workflow in ``tree`` into ``run_id`` of the throwaway store; its JSON document.

    The re-run is the version's code (the recorded commit and diff): it runs in a child without
    credentials (:func:`core.sandbox.child_environment`), logging to the throwaway store in
    ``child`` that ``local`` (an MlflowClient of it) reads. None: old code without the document.

    Raises:
        RegistryError: the re-run failed (its one-line reason) or ran out of time.
    """
    from core.sandbox import child_environment

    client = local
    env = child_environment(child, {
        "MLFLOW_RUN_ID": run_id,  # the workflow logs into this run, as under mlflow run
        "MLOPS_CONF_DIR": str(conf),
        "PYTHONPATH": str(tree),  # the worktree's code, never this checkout's
        "PYTHONHASHSEED": "0",
    })
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    as_json = _speaks_json(tree, env)
    shown: set[str] = set()

    def show_progress() -> None:  # each step as it finishes: a long re-run shows life
        from mlflow.exceptions import MlflowException

        try:
            done = finished_steps(client, experiment_id, run_id)
        except MlflowException as exc:  # progress only: the re-run's outcome decides
            _logger.debug("progress not read: %s", exc)
            return
        for step, seconds in done:
            if step not in shown:
                shown.add(step)
                echo(f"           {step:<8} done in {seconds:.2f}s")

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(rerun_command(lin, profile, as_json), cwd=tree, env=env,
                                text=True, stdout=out, stderr=err)
        deadline = time.monotonic() + RERUN_TIMEOUT_SECONDS
        try:
            while True:
                try:
                    code = proc.wait(timeout=PROGRESS_POLL_SECONDS)
                    break
                except subprocess.TimeoutExpired:
                    if time.monotonic() > deadline:
                        proc.kill()
                        code = proc.wait()
                        break
                    show_progress()
            show_progress()
        finally:
            if proc.poll() is None:  # interrupted: the child goes too (it ends its runs KILLED)
                proc.terminate()
                proc.wait()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if code != 0:
        lines = [x for x in stderr.splitlines() if x.strip()]
        last = next((x for x in reversed(lines) if x.startswith("error:")),
                    lines[-1] if lines else f"exit {code}")
        _logger.info("re-run output:\n%s", "\n".join(lines[-200:]))
        if code < 0:
            last = f"stopped after {RERUN_TIMEOUT_SECONDS} s"
        raise RegistryError(f"the re-run failed: {last}")
    return read_result(stdout) if as_json else None


def _end_if_running(client, run_id: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        if client.get_run(run_id).info.status == "RUNNING":
            _terminate(client, run_id, "FAILED")
    except MlflowException as exc:
        _logger.warning("could not end scratch run %s: %s", run_id, exc)


def _terminate(client, run_id: str, status: str) -> None:
    """End the record run; MLflow's "View run" line goes to stderr (stdout: the JSON only)."""
    with contextlib.redirect_stdout(sys.stderr):
        client.set_terminated(run_id, status)


def original_seconds(lin: Lineage) -> float | None:
    """How long the steps up to train took when they were computed (reused ones included)."""
    seconds = [s.seconds for s in lin.steps if s.step in MODEL_STEPS]
    if not seconds or any(v is None for v in seconds):
        return None
    return float(sum(seconds))


# --------------------------------------------------------------------------- the command
def reproduce_version(client, mv, into: str | None = None, repo: Path | None = None,
                      echo: Callable[[str], None] = lambda _line: None) -> Reproduction:
    """Re-run the workflow behind ``mv`` and compare the new model's predictions with it.

    Args:
        client: the registry's MLflow client (the scratch run goes to its tracking store).
        mv: the ModelVersion to reproduce.
        into: the scratch experiment (default :data:`SCRATCH_EXPERIMENT`).
        repo: the git checkout holding the commit (default: :func:`find_repo`).
        echo: where progress lines go (the command line prints them).

    Raises:
        CannotReproduce: nothing recorded, commit unknown, data changed (one line).
        RegistryError: the re-run failed, or the models cannot be compared.
    """
    from registry.scoring import load_test_data

    lin = read_lineage(client, mv, with_history=False)
    result = Reproduction(lin.ref, original_seconds=original_seconds(lin))
    if not lin.recorded or lin.settings is None:
        raise CannotReproduce(f"{lin.ref}: its workflow run recorded no lineage (registered "
                              "before the workflow recorded it); nothing to re-run")
    repo = find_repo(repo)
    check_commit(repo, lin.commit, lin.ref)
    check_data(lin)
    check_user_files(lin)
    result.package_changes = package_changes(lin.packages)
    result.machine_changes = machine_changes(lin.machine, names.machine())
    where = Path(tempfile.mkdtemp(prefix="mlops-reproduce-"))
    tree = None
    try:
        tree = _worktree(repo, lin.commit, where)
        if lin.dirty and lin.diff:
            _apply_diff(client, lin, tree, where)
        applied = " + the recorded diff" if lin.dirty and lin.diff else ""
        echo(f"code       {lin.commit[:12]}{applied}, in a temporary worktree")
        if lin.diff_withheld:  # their changes are not in the tree: the re-run may differ there
            echo(f"code       without the changes to {', '.join(lin.diff_withheld)}: left out of "
                 "the recorded diff (a secret)")
        if lin.data.file_sha256:
            echo(f"data       {lin.data.location}: sha256 {lin.data.file_sha256[:16]}, "
                 "as recorded")
        if result.package_changes:
            echo("packages   differ: " + ", ".join(f"{n} {was} recorded, {now} installed"
                                                   for n, was, now in result.package_changes))
        else:
            echo(f"packages   as recorded ({len(lin.packages)} checked)")
        if result.machine_changes:
            echo("machine    differs: " + "; ".join(result.machine_changes))
        conf, profile = _settings_dir(lin, where)
        # the record of this reproduction, on the registry's server (the re-run itself logs to
        # the child's throwaway store: it holds no credentials for the server)
        result.experiment_id, result.run_id = _scratch_run(client, into or SCRATCH_EXPERIMENT,
                                                           lin)
        child = where / "child"
        local = _local_client(child)
        local_exp, local_run = _scratch_run(local, into or SCRATCH_EXPERIMENT, lin,
                                            artifacts=child / "artifacts")
        echo(f"re-run     the workflow up to {RERUN_UNTIL}, recorded settings, cache off, "
             f"without credentials; recorded in run {result.run_id} "
             f"(experiment {into or SCRATCH_EXPERIMENT})")
        start = time.perf_counter()
        try:
            doc = _run_workflow(local, lin, tree, conf, profile, local_exp, local_run, child,
                                echo)
        except BaseException:
            _end_if_running(client, result.run_id)
            raise
        finally:
            result.seconds = time.perf_counter() - start
        rerun = read_run_lineage(local, local_run, lin.name)
        if lin.data.digest and rerun.data.digest:
            same = lin.data.digest == rerun.data.digest
            echo(f"data       digest {rerun.data.digest} as the re-run read it: " + (
                "as recorded" if same else f"the version was trained on {lin.data.digest}"))
        if doc is not None:  # the workflow's own account of what it logged
            model_uri = doc.get("model_uri")
        else:  # a commit older than --output json: the re-run's lineage names the train run
            train = rerun.step("train")
            model_uri = (local.get_run(train.run_id).data.tags.get(MODEL_URI_TAG) if train
                         else None)
        if not model_uri:
            _end_if_running(client, result.run_id)
            raise RegistryError(f"the re-run (run {result.run_id}) logged no model")
        try:
            X, _y = load_test_data(client, lin.tags)
            old, new = predict_both(client, local, lin, model_uri, X, where / "compare")
        except BaseException:
            _end_if_running(client, result.run_id)
            raise
    finally:
        if tree is not None:
            _git(["worktree", "remove", "--force", str(tree)], repo)
            _git(["worktree", "prune"], repo)  # a tree removed by other means is forgotten too
        shutil.rmtree(where, ignore_errors=True)

    result.rows = len(X)
    result.differing, result.n_differing, result.max_proba_delta = compare_predictions(
        old, new, X.index)
    result.identical = result.n_differing == 0
    if not result.identical:
        result.causes = diagnose(lin, rerun, result.package_changes, result.machine_changes)
    client.set_tag(result.run_id, REPRODUCED_TAG,
                   "identical" if result.identical else f"{result.n_differing} rows differ")
    _terminate(client, result.run_id, "FINISHED")
    return result

