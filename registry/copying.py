"""Copy a version from one tracking server's registry to another's (dev to prod).

The copy carries the model artifacts (so the signature and requirements), the version's tags,
the source run's params and metrics, the test split (so ``validate`` works on the target) and
a link back to the source. On the target it is a new run in experiment
``mlops-registry-copies`` holding a logged model (MLflow 3's model entity, its MLmodel
re-pointed at the new id) plus a new version of the same registered model. Copying the same
source version again finds the earlier copy and changes nothing; a copy that fails mid-way is
removed again.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from core.connection import is_server
from core.names import (
    COPIED_TO_PREFIX,
    COPY_SOURCE_PREFIX,
    HISTORY_TAG_PREFIX,
    LEGACY_PROMOTED_BY_TAG,
    LEGACY_PROMOTION_REASON_TAG,
    PROMOTION_TAG_PREFIX,
    TEST_DATA_TAG,
)
from core.redaction import redact_url
from registry.errors import RegistryError, explain
from registry.versions import download, list_versions, model_location

_logger = logging.getLogger(__name__)

COPIES_EXPERIMENT = "mlops-registry-copies"
#: On the copy, where it came from (``link``, ``tracking_uri``, ``model``, ``run_id``...).
SOURCE_PREFIX = COPY_SOURCE_PREFIX
#: On the source version, one tag per target registry it was copied to (JSON: target, name,
#: version, link, at), so ``registry lineage`` lists the copies from the source side too:
#: :data:`core.names.COPIED_TO_PREFIX`.
#: Registered-model tags that belong to one registry and are not copied: its alias-move history.
LOCAL_TAG_PREFIXES = (HISTORY_TAG_PREFIX,)
#: Version tags that record moves made on the source registry (who promoted it there, when,
#: why): they describe moves that never happened on the target, so they stay behind. The two
#: legacy tags are what versions registered by earlier releases carry instead.
LOCAL_VERSION_TAG_PREFIXES = (PROMOTION_TAG_PREFIX, LEGACY_PROMOTED_BY_TAG,
                              LEGACY_PROMOTION_REASON_TAG, COPIED_TO_PREFIX)


@dataclass(frozen=True)
class CopyResult:
    """Where the copy landed: ``copied`` now, or ``exists`` from an earlier copy."""

    status: str
    name: str
    version: str
    run_id: str | None
    source_link: str


def source_link(tracking_uri: str, name: str, version: str) -> str:
    """A link to the source version: its UI page on an http(s) server, else its URI."""
    if is_server(tracking_uri):
        return f"{tracking_uri.rstrip('/')}/#/models/{name}/versions/{version}"
    return f"{tracking_uri}#models:/{name}/{version}"


def find_copy(client, name: str, link: str) -> str | None:
    """The target version already copied from ``link``, if any."""
    from mlflow.exceptions import MlflowException

    try:
        versions = list_versions(client, name)
    except MlflowException:
        return None
    for mv in versions:
        if (mv.tags or {}).get(SOURCE_PREFIX + "link") == link:
            return str(mv.version)
    return None


def _experiment_id(client) -> str:
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(COPIES_EXPERIMENT)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(COPIES_EXPERIMENT)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_ALREADY_EXISTS":
            return client.get_experiment_by_name(COPIES_EXPERIMENT).experiment_id
        raise


def copy_version(source, target, name: str, version: str) -> CopyResult:
    """Copy ``name/version`` from the ``source`` client's registry to the ``target``'s.

    Raises:
        RegistryError: unknown version, unreadable artifacts, or the target refused a write
            (everything created on the target so far is deleted again).
    """
    from mlflow.entities import Metric, Param
    from mlflow.exceptions import MlflowException
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    from registry.versions import resolve_version

    mv = resolve_version(source, f"{name}/{version}", allow_alias=False)
    version = str(mv.version)
    link = source_link(source.tracking_uri, name, version)
    existing = find_copy(target, name, link)
    if existing:
        _note_copy(source, target, name, version, existing)
        return CopyResult("exists", name, existing, None, link)

    tags = {k: v for k, v in (mv.tags or {}).items()
            if not k.startswith(LOCAL_VERSION_TAG_PREFIXES)}
    run = source.get_run(mv.run_id) if mv.run_id else None
    created_model = created_run = created_version = created_logged = None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            model_dir = download(source, model_location(source, name, version), Path(tmp) / "m")
            test_file = None
            if tags.get(TEST_DATA_TAG):
                test_file = download(source, tags[TEST_DATA_TAG], Path(tmp) / "t")
        except (MlflowException, OSError) as exc:
            raise RegistryError(f"cannot read {name}/{version}: {explain(exc)}") from None
        source_tags = {
            SOURCE_PREFIX + "link": link,
            SOURCE_PREFIX + "tracking_uri": redact_url(source.tracking_uri),
            SOURCE_PREFIX + "model": f"{name}/{version}",
            SOURCE_PREFIX + "run_id": mv.run_id or "",
            SOURCE_PREFIX + "model_source": mv.source or "",
        }
        try:
            exp_id = _experiment_id(target)
            new_run = target.create_run(
                exp_id, run_name=f"copy of {name}/{version}",
                tags={**source_tags, "mlflow.note.content": f"Copied from {link}"},
            )
            created_run = new_run.info.run_id
            if run is not None:
                params = [Param(k, v) for k, v in run.data.params.items()]
                metrics = [Metric(k, v, now(), 0) for k, v in run.data.metrics.items()]
                for i in range(0, len(params), 100):
                    target.log_batch(created_run, params=params[i:i + 100])
                for i in range(0, len(metrics), 1000):
                    target.log_batch(created_run, metrics=metrics[i:i + 1000])
            logged = target.create_logged_model(
                exp_id, name=_logged_model_name(mv), source_run_id=created_run,
                tags=source_tags, params=dict(run.data.params) if run is not None else None,
            )
            created_logged = logged.model_id
            _point_mlmodel_at(model_dir, logged.model_id)
            target.log_model_artifacts(logged.model_id, str(model_dir))
            target.finalize_logged_model(logged.model_id, "READY")
            if test_file is not None:
                target.log_artifact(created_run, str(test_file), "splits")
                tags[SOURCE_PREFIX + "test_data"] = tags[TEST_DATA_TAG]
                tags[TEST_DATA_TAG] = f"runs:/{created_run}/splits/{test_file.name}"
            target.update_run(created_run, status="FINISHED")

            try:
                target.get_registered_model(name)
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
                src_model = source.get_registered_model(name)
                model_tags = {
                    k: v for k, v in (src_model.tags or {}).items()
                    if not k.startswith(LOCAL_TAG_PREFIXES)
                }
                target.create_registered_model(
                    name, tags=model_tags, description=src_model.description or None
                )
                created_model = name
            # MLflow's SQL model registry looks a ``models:/<id>`` source up in the process-wide
            # tracking store, not the client's (a TODO in SqlAlchemyStore.create_model_version):
            # from one database to another it would look in the source. A server target
            # resolves it on the server, so this changes nothing there.
            with _use_tracking_uri(target.tracking_uri):
                new = target.create_model_version(
                    name,
                    source=f"models:/{created_logged}",
                    run_id=created_run,
                    model_id=created_logged,
                    tags={**tags, **source_tags},
                    description=(mv.description + "\n\n" if mv.description else "")
                    + f"Copied from {link}",
                )
            created_version = str(new.version)
        except MlflowException as exc:
            _undo(target, created_run, created_model, name, created_version, created_logged)
            raise RegistryError(explain(exc, f"copy {name}/{version} to the target")) from None
    _logger.info("copied %s/%s to %s as version %s", name, version, target.tracking_uri,
                 created_version)
    _note_copy(source, target, name, version, created_version)
    return CopyResult("copied", name, created_version, created_run, link)


def _note_copy(source, target, name: str, version: str, copied: str) -> None:
    """Tag the source version with where it was copied (best effort: the copy stands anyway).

    The target's address is stored without user or password (a URI may carry them).
    """
    import hashlib
    import json
    from urllib.parse import urlsplit, urlunsplit

    from mlflow.exceptions import MlflowException

    parts = urlsplit(target.tracking_uri)
    where = urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port
                                                                else ""))) \
        if parts.hostname else target.tracking_uri
    record = {"target": where, "name": name, "version": copied,
              "link": source_link(where, name, copied), "at": now()}
    key = COPIED_TO_PREFIX + hashlib.sha256(where.encode()).hexdigest()[:12]
    try:
        source.set_model_version_tag(name, version, key, json.dumps(record, sort_keys=True))
    except MlflowException as exc:
        _logger.warning("copy not noted on the source version: %s", explain(exc))


def now() -> int:
    """Milliseconds since the epoch."""
    import time

    return int(time.time() * 1000)


def _logged_model_name(mv) -> str:
    """The logged model's name at the source (``model`` by the workflow's convention)."""
    source = mv.source or ""
    return source.rstrip("/").rsplit("/", 1)[-1] if source.startswith("runs:/") else "model"


def _point_mlmodel_at(model_dir: Path, model_id: str) -> None:
    """Make the copied MLmodel name the target's logged model, not the source's."""
    from mlflow.models import Model

    path = Path(model_dir) / "MLmodel"
    mlmodel = Model.load(str(path))
    mlmodel.model_id = model_id
    mlmodel.save(str(path))


def _undo(target, run_id, model_name, name, version, logged_id=None) -> None:
    """Delete what a failed copy created on the target (best effort, logged)."""
    from mlflow.exceptions import MlflowException

    steps = []
    if version:
        steps.append(lambda: target.delete_model_version(name, version))
    if model_name:
        steps.append(lambda: target.delete_registered_model(model_name))
    if logged_id:
        steps.append(lambda: target.delete_logged_model(logged_id))
    if run_id:
        steps.append(lambda: target.delete_run(run_id))
    for step in steps:
        try:
            step()
        except MlflowException as exc:
            _logger.warning("cleanup after a failed copy: %s", exc)
