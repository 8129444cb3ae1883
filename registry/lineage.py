"""Where a version came from, read from what the workflow and the registry already record.

Nothing here is a parallel record: the version's run is the workflow run; its tags name every
step's run (``mlops.<step>_run``, ``mlops.<step>_reused``) and the step runs carry the parts of
their cache keys; the workflow run's ``lineage/`` artifacts (written by the workflow, names in
:mod:`core.lineage`) hold the commit, the diff, the resolved settings and the package versions;
the ingest run's dataset input holds the data's schema and rows; the alias history comes from
:func:`core.aliases.read_history`; copies from the tags :mod:`registry.copying` writes.

A version registered before the workflow recorded lineage still shows what its tags hold (the
commit with ``+dirty``, the data digest); the rest reads "not recorded".
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from core import lineage as names
from core.aliases import Attempt, read_history
from core.names import COPIED_TO_PREFIX, SETTINGS_HASH_TAG, step_of_run_tag
from core.names import COPY_SOURCE_PREFIX as SOURCE_PREFIX
from registry.versions import download

_logger = logging.getLogger(__name__)

#: Steps in workflow order; steps of another name follow, by start time.
STEP_ORDER = ("ingest", "validate", "prepare", "train", "evaluate", "register")


@dataclass(frozen=True)
class StepRun:
    """One step of the workflow run: its run, and whether it was reused (from which run)."""

    step: str
    run_id: str
    reused: bool
    workflow_run: str | None
    status: str | None
    start: int | None
    end: int | None
    cache: dict[str, str] = field(default_factory=dict)

    @property
    def seconds(self) -> float | None:
        """How long the step's run took (when it ran, not when it was reused)."""
        if self.start is not None and self.end is not None:
            return (self.end - self.start) / 1000
        return None


@dataclass(frozen=True)
class DataLineage:
    """The data a version was trained on."""

    source: str | None = None
    kind: str | None = None
    location: str | None = None
    file_sha256: str | None = None
    digest: str | None = None
    rows: int | None = None
    schema: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Lineage:
    """Everything ``registry lineage`` shows about one version."""

    name: str
    version: str
    aliases: tuple[str, ...]
    tags: dict[str, str]
    run_id: str | None
    run_name: str | None
    experiment_id: str | None
    run_status: str | None
    run_start: int | None
    run_end: int | None
    recorded: bool
    commit: str | None
    dirty: bool | None
    diff: str | None
    diff_sha256: str | None
    python: str | None
    packages: dict[str, str]
    machine: dict
    settings: dict | None
    settings_hash: str | None
    profile: str | None
    user_files: dict[str, str]
    data: DataLineage
    steps: tuple[StepRun, ...]
    history: tuple[Attempt, ...]
    copies: tuple[dict, ...]
    copied_from: dict[str, str]
    #: Files the workflow left out of the diff because they held a secret ({path: [kinds]}).
    diff_withheld: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        """``NAME/VERSION``."""
        return f"{self.name}/{self.version}"

    def step(self, name: str) -> StepRun | None:
        """The step run of ``name``, if the workflow run names one."""
        return next((s for s in self.steps if s.step == name), None)


def read_json_artifact(client, run_id: str, path: str):
    """A JSON artifact of a run, or None when the run has none at ``path``."""
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory(prefix="lineage-") as tmp:
        try:
            local = download(client, f"runs:/{run_id}/{path}", tmp)
            return json.loads(Path(local).read_text())
        except (MlflowException, OSError, ValueError) as exc:
            _logger.debug("no %s on run %s: %s", path, run_id, exc)
            return None


def _data(ingest_run, record: dict | None, tags: dict[str, str]) -> DataLineage:
    data = (record or {}).get("data") or {}
    digest = tags.get(names.DATA_DIGEST_TAG)
    rows = schema = None
    source = data.get("source")
    if ingest_run is not None:
        digest = ingest_run.data.tags.get(names.DATA_DIGEST_TAG, digest)
        rows = ingest_run.data.metrics.get("rows")
        source = source or ingest_run.data.params.get("source")
        for item in (ingest_run.inputs.dataset_inputs if ingest_run.inputs else []):
            if any(t.key == "mlflow.data.context" and t.value == "raw" for t in item.tags):
                schema = names.dataset_schema(item.dataset)
                if rows is None:
                    rows = (json.loads(item.dataset.profile or "{}") or {}).get("num_rows")
    return DataLineage(source=source, kind=data.get("kind"), location=data.get("location"),
                       file_sha256=data.get("file_sha256"), digest=digest,
                       rows=int(rows) if rows is not None else None, schema=schema or {})


def _steps(client, run) -> tuple[StepRun, ...]:
    from mlflow.exceptions import MlflowException

    out = []
    for key, run_id in (run.data.tags if run is not None else {}).items():
        step = step_of_run_tag(key)
        if step is None or step == "id":
            continue
        reused = run.data.tags.get(names.step_reused_tag(step)) == "true"
        try:
            step_run = client.get_run(run_id)
        except MlflowException:
            out.append(StepRun(step, run_id, reused, None, "deleted", None, None))
            continue
        cache = {p: step_run.data.tags[names.CACHE_PART_TAG.format(part=p)]
                 for p in names.CACHE_PARTS if names.CACHE_PART_TAG.format(part=p)
                 in step_run.data.tags}
        out.append(StepRun(step, run_id, reused, step_run.data.tags.get("mlflow.parentRunId"),
                           step_run.info.status, step_run.info.start_time,
                           step_run.info.end_time, cache))
    order = {s: i for i, s in enumerate(STEP_ORDER)}
    return tuple(sorted(out, key=lambda s: (order.get(s.step, len(order)), s.start or 0)))


def _history(client, name: str, version: str) -> tuple[Attempt, ...]:
    """Alias moves to this version and away from it (the previous holder), oldest first."""
    return tuple(a for a in read_history(client, name)
                 if a.version == version or (a.previous == version and a.outcome == "won"))


def _copies(tags: dict[str, str]) -> tuple[dict, ...]:
    out = []
    for key, value in sorted(tags.items()):
        if key.startswith(COPIED_TO_PREFIX):
            try:
                out.append(json.loads(value))
            except ValueError:
                out.append({"target": value})
    return tuple(out)


def read_lineage(client, mv, with_history: bool = True) -> Lineage:
    """The lineage of a ModelVersion (resolved by :func:`registry.versions.resolve_version`)."""
    from registry.versions import aliases_of

    name, version = mv.name, str(mv.version)
    return _read(client, name, version, dict(mv.tags or {}), mv.run_id,
                 tuple(sorted(aliases_of(client, name).get(version, []))),
                 _history(client, name, version) if with_history else ())


def read_run_lineage(client, run_id: str, name: str) -> Lineage:
    """The lineage of a workflow run that registered nothing (a reproduction's re-run)."""
    return _read(client, name, "-", {}, run_id, (), ())


def _read(client, name: str, version: str, tags: dict[str, str], run_id: str | None,
          aliases: tuple[str, ...], history: tuple[Attempt, ...]) -> Lineage:
    from mlflow.exceptions import MlflowException

    run = None
    if run_id:
        try:
            run = client.get_run(run_id)
        except MlflowException as exc:
            _logger.warning("workflow run %s unreadable: %s", run_id, exc)
    record = read_json_artifact(client, run_id, names.RECORD_ARTIFACT) if run else None
    settings = (read_json_artifact(client, run_id, record.get("settings")
                                   or names.SETTINGS_ARTIFACT) if record else None)
    steps = _steps(client, run)
    ingest = None
    if (first := next((s for s in steps if s.step == "ingest"), None)) is not None:
        try:
            ingest = client.get_run(first.run_id)
        except MlflowException:
            ingest = None
    commit_tag = (run.data.tags.get(names.GIT_COMMIT_TAG) if run else None) or tags.get(
        names.GIT_COMMIT_TAG)
    commit = (record or {}).get("commit") or commit_tag
    dirty = (record or {}).get("dirty")
    # versions registered by earlier releases carry the commit with "+dirty" appended
    if dirty is None and commit_tag:
        dirty = commit_tag.endswith("+dirty")
    if commit:
        commit = commit.removesuffix("+dirty")
    return Lineage(
        name=name,
        version=version,
        aliases=aliases,
        tags=tags,
        run_id=run_id,
        run_name=run.data.tags.get("mlflow.runName") if run else None,
        experiment_id=run.info.experiment_id if run else None,
        run_status=run.info.status if run else None,
        run_start=run.info.start_time if run else None,
        run_end=run.info.end_time if run else None,
        recorded=record is not None,
        commit=commit,
        dirty=dirty,
        diff=(record or {}).get("diff"),
        diff_sha256=(record or {}).get("diff_sha256"),
        diff_withheld=dict((record or {}).get("diff_withheld") or {}),
        python=(record or {}).get("python"),
        packages=dict((record or {}).get("packages") or {}),
        machine=dict((record or {}).get("machine") or {}),
        settings=settings,
        settings_hash=tags.get(SETTINGS_HASH_TAG),
        profile=(record or {}).get("profile"),
        user_files=dict((record or {}).get("user_files") or {}),
        data=_data(ingest, record, tags),
        steps=steps,
        history=history,
        copies=_copies(tags),
        copied_from={k.removeprefix(SOURCE_PREFIX): v for k, v in tags.items()
                     if k.startswith(SOURCE_PREFIX)},
    )
