"""THE catalogue of every ``mlops.*`` name: the tags (and params) the packages write and read.

The packages may not import each other, so a name one writes and another reads lives here,
once. Each constant says who writes it and who reads it; a test
(``tests/unit/core/test_names.py``) fails when a package types an ``mlops.`` name as a literal
instead of using this module, and when a name here is written nowhere.

Slices with more than names keep their public constants where callers already import them:
:mod:`core.lineage` (the lineage record), :mod:`core.shadow` (shadow runs), :mod:`core.runs`
(run lifecycle), :mod:`core.aliases` (the history) and :mod:`core.ledger` bind theirs to the
constants below.

"UI" below means a person reading the run or version page in the MLflow UI; ``projects``'
steps are ``ingest``, ``validate``, ``prepare``, ``train``, ``evaluate`` and ``register``.
"""

from __future__ import annotations

import re

#: Every name starts with this (``registry show`` groups a version's ``mlops.*`` tags by it).
PREFIX = "mlops."

# ------------------------------------------------------------------ workflow: step runs
# The step of a child run; projects (each step run) writes it, projects' step cache and
# registry.reproduce (step timings) read it.
STEP_TAG = "mlops.step"
# The step's cache key; projects writes it on each computed step run and reads it to reuse one.
CACHE_KEY_TAG = "mlops.cache_key"
# One part of a step's cache key (code, settings, input, packages): projects writes it on each
# computed step run; registry.lineage and registry.reproduce read it (see cache_part_tag).
CACHE_PART_TAG = "mlops.cache.{part}"
# The data's content digest: projects writes it (ingest run, workflow run, version tag);
# projects (register, summary), registry (diff, lineage, policy's required_tags) read it.
DATA_DIGEST_TAG = "mlops.data_digest"
# Where the data came from (password redacted): projects' ingest run writes it; UI.
SOURCE_TAG = "mlops.source"
# The data rule a validate run failed on: projects' validate step writes it; UI.
FAILED_RULE_TAG = "mlops.failed_rule"
# classification or regression: projects (validate run, version tag) writes it; projects (cli,
# result), registry.scoring, serving.shadow and monitoring.monitor read it.
TASK_TAG = "mlops.task"
# Why that task (declared or inferred): projects' validate run writes it; projects.cli reads it.
TASK_REASON_TAG = "mlops.task_reason"
# The columns prepare treats as numeric / categorical: projects' prepare run writes them; UI.
NUMERIC_FEATURES_TAG = "mlops.numeric_features"
CATEGORICAL_FEATURES_TAG = "mlops.categorical_features"
# The estimator a train candidate run fitted: projects' train step writes it; UI.
ESTIMATOR_TAG = "mlops.estimator"
# Why a run failed: projects writes it (a failed train candidate, a failed workflow run); UI.
ERROR_TAG = "mlops.error"
# The step a failed workflow run stopped in: projects writes it; UI.
FAILED_STEP_TAG = "mlops.failed_step"
# The binary task's positive class: projects (train run, version tag) writes it; projects (cli,
# result, evaluate, register, summary) and registry.scoring read it.
POSITIVE_CLASS_TAG = "mlops.positive_class"
# Why that class (declared, or the minority): projects' train run writes it; projects.cli reads.
POSITIVE_CLASS_REASON_TAG = "mlops.positive_class_reason"
# The winning candidate's estimator: projects writes it (train run, workflow run); the summary
# reads it from the train run.
BEST_ESTIMATOR_TAG = "mlops.best_estimator"
# The logged model's URI: projects writes it (train, evaluate and workflow runs); projects
# (evaluate, result) and registry.reproduce read it. serving.sagemaker also writes it on the
# SageMaker model and endpoint it deploys (AWS tags), and reads it back.
MODEL_URI_TAG = "mlops.model_uri"
# The train step's cache key a tuning study (an Optuna study run) belongs to: projects' train
# step writes it on the study run and reads it to resume an unfinished study.
STUDY_KEY_TAG = "mlops.study_key"
# Why a tuning trial was pruned (its intermediate score against the median): projects writes
# it on the trial run; UI.
PRUNED_TAG = "mlops.pruned"
# Columns train dropped (identifiers, constants): projects' train run writes it; UI.
DROPPED_COLUMNS_TAG = "mlops.dropped_columns"
# The champion version evaluate scored against: projects' evaluate run writes it; UI.
CHAMPION_VERSION_TAG = "mlops.champion_version"
# Whether (or why not) the champion was scored on this test set: projects' evaluate run writes
# it; projects' register step reads it.
CHAMPION_COMPARISON_TAG = "mlops.champion_comparison"
# The registered model's name and version: projects writes them (register run; the version
# also on the workflow run), monitoring.monitor on its runs, serving.sagemaker on the SageMaker
# model and endpoint (AWS tags); projects (reuse, result) and monitoring.retrain read them.
MODEL_NAME_TAG = "mlops.model_name"
MODEL_VERSION_TAG = "mlops.model_version"
# The auto-champion decision and why: projects' register run writes it; UI.
AUTO_CHAMPION_TAG = "mlops.auto_champion"
# Why the new version is not challenger (a newer one won): projects' register run writes it; UI.
CHALLENGER_LOST_TAG = "mlops.challenger_lost"
# Whether the version was crowned champion, and why: projects' register run writes them;
# projects (result) and monitoring.retrain read them.
CROWNED_TAG = "mlops.crowned"
CROWN_REASON_TAG = "mlops.crown_reason"

# ------------------------------------------------------------------ workflow: workflow run
# The settings profile and the last step run: projects' workflow run writes them; UI.
PROFILE_TAG = "mlops.profile"
UNTIL_TAG = "mlops.until"
# The commit the workflow's code ran from (40 hex digits, never ``+dirty``; ``unknown``
# outside git): projects.record's git_state writes it on the workflow run and the version;
# registry.lineage (reproduce) and registry.versions (show, diff) read it.
GIT_COMMIT_TAG = "mlops.git_commit"
# ``true`` when that tree differed from the commit (the diff is then an artifact): written and
# read beside GIT_COMMIT_TAG.
GIT_DIRTY_TAG = "mlops.git_dirty"
# The run that computed (or was reused for) a step, and whether it was reused: projects'
# workflow run writes them; registry.lineage and monitoring.retrain (register's) read them.
STEP_RUN_TAG = "mlops.{step}_run"
STEP_REUSED_TAG = "mlops.{step}_reused"

# ------------------------------------------------------------------ version tags (register)
# The hash of the settings sections that shaped the model: projects' register writes it;
# registry (show, diff, lineage) reads it.
SETTINGS_HASH_TAG = "mlops.settings_hash"
# The metric candidates were chosen by: projects' register writes it; monitoring reads it.
SELECTION_METRIC_TAG = "mlops.selection_metric"
# The target column: projects' register writes it; registry.scoring, monitoring read it.
TARGET_TAG = "mlops.target"
# The train step's run: projects' register writes it; UI.
RUN_ID_TRAIN_TAG = "mlops.run_id_train"
# The test and train splits (runs:/ URIs): projects' register writes them; registry (scoring,
# validation, copy) and monitoring read them.
TEST_DATA_TAG = "mlops.test_data"
TRAIN_DATA_TAG = "mlops.train_data"
# ``mlops.metric.<name>``: a test metric of the version (``test_f1``...): projects' register
# writes them; registry (list, show, diff, policy) and monitoring read them (see metric_tag).
METRIC_TAG_PREFIX = "mlops.metric."
# The model card (core.cards): where its JSON is (a runs:/ URI) and its lifecycle status
# (Draft -> PendingReview -> Approved -> Archived): projects' register writes both when it
# creates the version (Draft); afterwards the tracking server's promotion flow moves the status
# and records the review (approvals, gates) through core.cards; registry's card command reads.
CARD_TAG = "mlops.card"
CARD_STATUS_TAG = "mlops.card_status"
CARD_REVIEW_TAG = "mlops.card_review"

# ------------------------------------------------------------------ registry
# ``mlops.history.<attempt id>``: a registered-model tag holding one alias-move record: written
# only by core.aliases (tracking.governance stamps and refuses through the same record); read by
# core.aliases.read_history (registry history, show, lineage).
HISTORY_TAG_PREFIX = "mlops.history."
# ``mlops.promotion.<alias>.<field>``: version tags of the move that gave it an alias: written
# by core.aliases; tracking.governance stamps ``.by``; registry (show, copy) reads them.
PROMOTION_TAG_PREFIX = "mlops.promotion."
# ``mlops.request.<request id>``: a registered-model tag holding one promotion request (alias,
# version, requester, approvals, state): written only by the tracking server's request routes
# (tracking.promotions, through core.approvals); read by core.approvals (registry requests).
REQUEST_TAG_PREFIX = "mlops.request."
#: A request's states; an emergency rollback's record is ``needs-review`` until a second release
#: manager reviews it (``reviewed``).
REQUEST_STATES = ("open", "approved", "executed", "rejected", "expired", "void", "needs-review",
                  "reviewed")
# The alias-move ledger's run: core.ledger writes and reads it.
LEDGER_TAG = "mlops.ledger"
# ``mlops.source.<field>``: on a copied version, where it came from: registry.copying writes
# them; registry (copy, lineage) reads them.
COPY_SOURCE_PREFIX = "mlops.source."
# ``mlops.copied_to.<target digest>``: on a source version, one copy of it: registry.copying
# writes them; registry.lineage reads them.
COPIED_TO_PREFIX = "mlops.copied_to."
# A reproduction's run: the version it reproduces (``NAME/VERSION``), the workflow run behind
# it, and the verdict: registry.reproduce writes them; UI.
REPRODUCES_TAG = "mlops.reproduces"
REPRODUCES_RUN_TAG = "mlops.reproduces_run"
REPRODUCED_TAG = "mlops.reproduced"
# Legacy version tags: the workflow of earlier releases wrote who crowned a version and why
# before every move went through core.aliases (now PROMOTION_TAG_PREFIX). Nothing writes them
# any more, but versions registered then still carry them: registry.copying leaves them behind.
LEGACY_PROMOTED_BY_TAG = "mlops.promoted_by"
LEGACY_PROMOTION_REASON_TAG = "mlops.promotion_reason"
#: Names kept only because stored models from an earlier release carry them.
LEGACY = frozenset({LEGACY_PROMOTED_BY_TAG, LEGACY_PROMOTION_REASON_TAG})

# ------------------------------------------------------------------ run lifecycle (core.runs)
# Where an open run's process lives: core.runs writes them on every run it opens (the shadow's
# runs too); core.runs' reaper reads them.
HOST_TAG = "mlops.host"
PID_TAG = "mlops.pid"
# "<boot id>:<start time in clock ticks since boot>" of the process: a reused pid differs.
PID_START_TAG = "mlops.pid_start"
# The pid namespace: two containers with one hostname do not share their pids.
PID_NS_TAG = "mlops.pid_ns"
# "<host>/<pid>/<start marker>" of the process that resumed a run it did not create (the
# workflow inside `mlflow run`): the run is open while either process lives.
RESUMED_BY_TAG = "mlops.resumed_by"
# Refreshed while a run is open; written and read by core.runs (tracking runs reap).
HEARTBEAT_TAG = "mlops.heartbeat"
# Why, by whom and when a dead run was closed: core.runs writes it; UI.
REAPED_TAG = "mlops.reaped"

# ------------------------------------------------------------------ shadow (core.shadow)
# What a run is (``shadow``): serving.shadow writes it; core.shadow (registry's policy) reads it.
KIND_TAG = "mlops.kind"
# A shadow run's model, versions, task and tolerance: serving.shadow writes them; core.shadow
# (the registry's shadow gates) reads them.
SHADOW_MODEL_TAG = "mlops.shadow.model"
SHADOW_CHAMPION_VERSION_TAG = "mlops.shadow.champion_version"
SHADOW_CHALLENGER_VERSION_TAG = "mlops.shadow.challenger_version"
SHADOW_TASK_TAG = "mlops.shadow.task"
SHADOW_TOLERANCE_TAG = "mlops.shadow.tolerance"
# Version tag on the challenger: its latest shadow run; serving.shadow writes it; UI.
SHADOW_RUN_TAG = "mlops.shadow.run_id"

# ------------------------------------------------------------------ SageMaker (AWS tags)
# The endpoint a SageMaker model was made for, and the MLflow run of the deployed version:
# serving.sagemaker writes and reads them (with MODEL_NAME_TAG, MODEL_VERSION_TAG, MODEL_URI_TAG).
ENDPOINT_TAG = "mlops.endpoint"
RUN_ID_TAG = "mlops.run_id"
# A rollout under way on an endpoint, so a restarted `follow` finishes it: serving.sagemaker
# writes and reads them.
FOLLOW_VERSION_TAG = "mlops.follow.version"
FOLLOW_PREVIOUS_TAG = "mlops.follow.previous"
FOLLOW_CONFIG_TAG = "mlops.follow.config"
FOLLOW_MODEL_TAG = "mlops.follow.model"
FOLLOW_FAILED_TAG = "mlops.follow.failed"
# The transform job a batch model was made for: serving.sagemaker.batch writes and reads it.
TRANSFORM_JOB_TAG = "mlops.transform_job"

# ------------------------------------------------------------------ monitoring
# ``ok`` or ``threshold crossed``: monitoring.monitor writes it on its runs; UI.
MONITOR_VERDICT_TAG = "mlops.monitor.verdict"

_STEP_RUN = re.compile("^" + re.escape(STEP_RUN_TAG).replace(r"\{step\}", "(?P<step>[a-z_]+)")
                       + "$")


def metric_tag(name: str) -> str:
    """``mlops.metric.<name>``: the version tag holding test metric ``name``."""
    return METRIC_TAG_PREFIX + name


def cache_part_tag(part: str) -> str:
    """``mlops.cache.<part>``: one part of a step's cache key, on the step's run."""
    return CACHE_PART_TAG.format(part=part)


def step_run_tag(step: str) -> str:
    """``mlops.<step>_run``: the run that computed (or was reused for) ``step``."""
    return STEP_RUN_TAG.format(step=step)


def step_reused_tag(step: str) -> str:
    """``mlops.<step>_reused``: ``true`` when ``step`` was reused from an earlier run."""
    return STEP_REUSED_TAG.format(step=step)


def step_of_run_tag(key: str) -> str | None:
    """The step a ``mlops.<step>_run`` tag names, else None."""
    match = _STEP_RUN.match(key)
    return match["step"] if match else None
