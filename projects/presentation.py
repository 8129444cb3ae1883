"""What people see of a workflow in the MLflow UI: run names and the model version's description.

Pure functions (strings in, strings out): the pipeline hands them the values it already holds.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from core.uris import ui_path

#: The experiment tag the MLflow UI (3.x) chooses its layout from.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
#: The kind of a classic model-training experiment: runs table, charts, models; no GenAI tabs.
MODEL_TRAINING_KIND = "custom_model_development"
# run names longer than this are cut (the runs table shows ~40 characters)
_MAX_NAME = 120


def data_name(source: str, table: str | None = None) -> str:
    """A short name of the data: ``bundled:iris`` -> ``iris``, ``/d/churn.csv`` -> ``churn``.

    Args:
        source: the ``data.source`` setting.
        table: the SQL table (``data.table``), the name of a SQL source when given.
    """
    if source.startswith("bundled:"):
        return source.split(":", 1)[1]
    if re.match(r"^[a-z][a-z0-9+]*://", source) and not source.startswith(("s3://", "file://")):
        return table or "sql"  # a database URL: its path may hold credentials, never shown
    name = PurePosixPath(source.removeprefix("file://").rstrip("/")).name
    return name.split(".")[0] or "data"


#: The registered model of the bundled default data (``make run``), as the README names it.
DEFAULT_MODEL_NAME = "mlops-registry-model"
#: Characters a derived model name keeps: MLflow refuses ``/`` and ``:``, model references
#: split on ``@`` and ``/``; the rest would need quoting in a shell or a URL.
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]+")


def model_name_for_data(source: str, table: str | None = None,
                        default_source: str | None = None) -> str:
    """The registered model's name when ``register.model_name`` is empty: the data's name.

    A data file is named by its stem, a SQL source by its table, a bundled dataset by its
    name (``My Churn (2024).csv`` -> ``My-Churn-2024``), so a new data file lands in a new
    model instead of a new version of another one. The bundled default data keeps
    :data:`DEFAULT_MODEL_NAME`.

    Args:
        source: the ``data.source`` setting.
        table: the SQL table (``data.table``).
        default_source: the settings' default source (its model is :data:`DEFAULT_MODEL_NAME`).
    """
    if default_source is not None and source == default_source:
        return DEFAULT_MODEL_NAME
    if ".py:" in source and "://" not in source:  # the user's loader: the function's name
        source = source.rsplit(":", 1)[1]
    name = _NAME_UNSAFE.sub("-", data_name(source, table)).strip("-.")
    return name[:_MAX_NAME] or "data"


def failed_run_name(data: str, step: str | None) -> str:
    """``churn · failed in train``: the workflow run of a failure, named as one."""
    return " · ".join([data, f"failed in {step}" if step else "failed"])[:_MAX_NAME]


def failure_note(error: str, step: str | None, finished: dict[str, str],
                 experiment_id: str) -> str:
    """The markdown note (``mlflow.note.content``) of a failed workflow run.

    Args:
        error: the one-line reason, as the command line printed it.
        step: the step that failed (None: before the first step).
        finished: run ids of the steps that finished (or were reused) before it, by step.
        experiment_id: the experiment of those runs (for the UI links).
    """
    where = f"in step `{step}`" if step else "before its first step"
    lines = [f"**This workflow run failed {where}.**", "", f"    {error}", ""]
    if finished:
        lines += ["Steps that finished before it (their outputs are kept and reused by the "
                  "next run):", ""]
        lines += [f"- [{name}]({run_link(experiment_id, run_id)})"
                  for name, run_id in finished.items()]
        if "train" in finished or step == "train":
            lines += ["", "The train step's candidate runs are nested under it."]
    return "\n".join(lines)


def _number(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def candidate_run_name(estimator: str, params: dict) -> str:
    """``random_forest n_estimators=200 max_depth=8``: a candidate named by what it tried."""
    text = " ".join([estimator, *(f"{k}={_number(v)}" for k, v in params.items())])
    return text[:_MAX_NAME]


def workflow_run_name(data: str, estimator: str | None, metric: str,
                      metrics: dict[str, float]) -> str:
    """``breast_cancer · random_forest · roc_auc 0.994``: data, chosen estimator, test metric.

    The selection metric on the test split when evaluate ran, else on validation; parts that
    the steps run so far did not produce are left out.
    """
    parts = [data]
    if estimator:
        parts.append(estimator)
    value = metrics.get(f"test_{metric}", metrics.get(f"val_{metric}"))
    if value is not None:
        parts.append(f"{metric} {value:.3f}")
    return " · ".join(parts)[:_MAX_NAME]


def run_link(experiment_id: str, run_id: str) -> str:
    """A relative UI link to a run, in the model-training layout."""
    return ui_path(experiment_id, run_id)


def _md_cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def version_description(
    *,
    metric: str,
    test_metrics: dict[str, float],
    champion_version: str | None,
    champion_metrics: dict[str, float],
    champion_note: str | None,
    crowned: bool | None,
    crown_reason: str,
    data: dict[str, str],
    validation: dict[str, float],
    runs: dict[str, str],
    experiment_id: str,
) -> str:
    """The markdown description of a registered version: what a release manager reads first.

    Args:
        metric: the selection metric.
        test_metrics: the version's ``test_*`` metrics.
        champion_version: the champion it was compared with (None: there was none).
        champion_metrics: the champion's ``test_*`` metrics on the same test set (may be empty).
        champion_note: why the champion was not scored (evaluate's comparison tag).
        crowned: whether this version became champion (None: not decided yet).
        crown_reason: why (or why not).
        data: ``source``, ``rows``, ``digest`` (and ``target``) of the data.
        validation: the validate step's cleaning metrics (rows in/out, ...).
        runs: run ids by label (``workflow``, ``train``, ``evaluate``, ...).
        experiment_id: the experiment of those runs (for the UI links).
    """
    lines = [f"**Selection metric:** `{metric}`", ""]
    if champion_version is None:
        lines.append("No champion to compare with: this was the first candidate.")
    elif champion_metrics:
        lines.append(f"Compared with the champion (version {champion_version}) on the same "
                     "test set:")
    else:
        lines.append(f"The champion (version {champion_version}) was not scored on this test "
                     f"set: {_md_cell(champion_note or 'no comparison')}.")
    lines += ["", "| metric | this version | champion | delta |", "|---|---:|---:|---:|"]
    for key in sorted(test_metrics):
        value = test_metrics[key]
        champ = champion_metrics.get(key)
        delta = f"{value - champ:+.4f}" if champ is not None else "–"
        champ_text = f"{champ:.4f}" if champ is not None else "–"
        name = f"**{key}**" if key == f"test_{metric}" else key
        lines.append(f"| {name} | {value:.4f} | {champ_text} | {delta} |")
    if crowned is not None:
        verdict = "became **champion**" if crowned else "is **not** champion"
        lines += ["", f"This version {verdict}: {_md_cell(crown_reason)}"]
    lines += ["", "**Data**", ""]
    for key in ("source", "target", "rows", "digest"):
        if data.get(key) not in (None, ""):
            lines.append(f"- {key}: `{_md_cell(data[key])}`")
    lines += ["", "**Validation**", ""]
    if validation:
        lines.append("Schema and rules passed before and after cleaning; "
                     + ", ".join(f"{k} {_number(v)}" for k, v in sorted(validation.items())) + ".")
    else:
        lines.append("Schema and rules passed.")
    lines += ["", "**Runs**", ""]
    for label, run_id in runs.items():
        if run_id:
            lines.append(f"- [{label}]({run_link(experiment_id, run_id)})")
    return "\n".join(lines)
