"""Reading the registry: resolve references, describe versions, list models.

Every function takes the MLflow client it reads through (the CLI makes it with
``core.connection.connect``), so the same code reads a dev and a prod server.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from core import models, names
from registry.errors import RegistryError

_logger = logging.getLogger(__name__)

METRIC_TAG_PREFIX = names.METRIC_TAG_PREFIX
#: The lineage tags ``show`` and ``diff`` compare.
LINEAGE_TAGS = (names.DATA_DIGEST_TAG, names.GIT_COMMIT_TAG, names.SETTINGS_HASH_TAG)


def quote(value: str) -> str:
    """A value quoted for an MLflow search filter."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def get_model(client, name: str):
    """The registered model ``name``.

    Raises:
        RegistryError: ``unknown model 'name'``.
    """
    try:
        return models.get_model(client, name)
    except models.ModelNotFound as exc:
        raise RegistryError(str(exc)) from None


def resolve_version(client, ref: str, allow_alias: bool = True):
    """The ModelVersion behind ``NAME/VERSION`` (or ``NAME@ALIAS``), via the one resolver.

    Raises:
        RegistryError: unknown model, version or alias.
        ModelRefError: malformed reference (bad usage).
    """
    try:
        return models.resolve_model(client, ref, allow_run=False,
                                    allow_alias=allow_alias).model_version
    except models.ModelNotFound as exc:
        raise RegistryError(str(exc)) from None


def registry_uri_of(client) -> str:
    """The registry location the client talks to."""
    return getattr(client, "_registry_uri", None) or client.tracking_uri


def download(client, uri: str, dst: str | Path) -> Path:
    """Download ``uri`` (an artifact or ``runs:/`` URI) through ``client``'s server."""
    import mlflow

    path = mlflow.artifacts.download_artifacts(
        artifact_uri=uri,
        dst_path=str(dst),
        tracking_uri=client.tracking_uri,
        registry_uri=registry_uri_of(client),
    )
    return Path(path)


def model_location(client, name: str, version: str) -> str:
    """Where the artifacts of ``name/version`` are stored."""
    return client.get_model_version_download_uri(name, version).rstrip("/")


def schema_columns(schema) -> dict[str, str] | None:
    """An MLflow schema as ``{column: type}``; unnamed tensors get ``[i]`` names."""
    from mlflow.types.schema import TensorSpec

    if schema is None:
        return None
    columns = {}
    for i, spec in enumerate(schema.inputs):
        name = getattr(spec, "name", None) or f"[{i}]"
        kind = getattr(spec, "type", None)
        if isinstance(spec, TensorSpec):
            text = f"tensor({getattr(kind, 'name', kind)}, {tuple(spec.shape)})"
        else:
            text = str(getattr(kind, "name", None) or kind)
        if getattr(spec, "required", True) is False:
            text += " (optional)"
        columns[name] = text
    return columns


@dataclass(frozen=True)
class ModelFiles:
    """What the registry reads from a version's model artifacts."""

    inputs: dict[str, str] | None = None
    outputs: dict[str, str] | None = None
    requirements: tuple[str, ...] = ()
    flavors: tuple[str, ...] = ()
    problem: str | None = None


def read_model_files(client, name: str, version: str) -> ModelFiles:
    """Signature, flavors and requirements of ``name/version`` (MLmodel + requirements.txt)."""
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    location = model_location(client, name, version)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            mlmodel = Model.load(str(download(client, f"{location}/MLmodel", tmp)))
        except (MlflowException, OSError) as exc:
            return ModelFiles(problem=f"cannot read MLmodel: {str(exc).splitlines()[0]}")
        sig = mlmodel.signature
        requirements: tuple[str, ...] = ()
        try:
            text = download(client, f"{location}/requirements.txt", tmp).read_text()
            requirements = tuple(
                line.strip() for line in text.splitlines()
                if line.strip() and not line.startswith("#")
            )
        except (MlflowException, OSError):
            _logger.debug("no requirements.txt in %s", location)
    return ModelFiles(
        inputs=schema_columns(sig.inputs) if sig and sig.inputs else None,
        outputs=schema_columns(sig.outputs) if sig and sig.outputs else None,
        requirements=requirements,
        flavors=tuple(mlmodel.flavors),
    )


@dataclass(frozen=True)
class VersionInfo:
    """One version, as ``show`` and ``diff`` present it."""

    name: str
    version: str
    run_id: str | None
    source: str
    created: int
    description: str
    aliases: tuple[str, ...]
    tags: dict[str, str]
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    files: ModelFiles = ModelFiles()

    @property
    def ref(self) -> str:
        """``NAME/VERSION``."""
        return f"{self.name}/{self.version}"


def aliases_of(client, name: str) -> dict[str, list[str]]:
    """``{version: [alias, ...]}`` of a registered model (recorded moves applied first)."""
    from core.aliases import apply_recorded_moves

    out: dict[str, list[str]] = {}
    for alias, version in apply_recorded_moves(client, get_model(client, name)).items():
        out.setdefault(str(version), []).append(alias)
    return out


def tag_metrics(tags: dict[str, str]) -> dict[str, float]:
    """``mlops.metric.<name>`` tags as ``{name: value}``."""
    out = {}
    for key, value in tags.items():
        if key.startswith(METRIC_TAG_PREFIX):
            try:
                out[key[len(METRIC_TAG_PREFIX):]] = float(value)
            except ValueError:
                continue
    return out


def describe_version(client, mv, with_files: bool = True) -> VersionInfo:
    """Everything ``show`` prints about a ModelVersion: run, metrics, params, files, tags."""
    from mlflow.exceptions import MlflowException

    params: dict[str, str] = {}
    metrics = tag_metrics(mv.tags or {})
    if mv.run_id:
        try:
            run = client.get_run(mv.run_id)
            params = dict(run.data.params)
            metrics = {**dict(run.data.metrics), **metrics}
        except MlflowException as exc:
            _logger.warning("source run %s unreadable: %s", mv.run_id, exc)
    return VersionInfo(
        name=mv.name,
        version=str(mv.version),
        run_id=mv.run_id,
        source=mv.source,
        created=int(mv.creation_timestamp or 0),
        description=mv.description or "",
        aliases=tuple(sorted(aliases_of(client, mv.name).get(str(mv.version), []))),
        tags=dict(mv.tags or {}),
        params=params,
        metrics=metrics,
        files=read_model_files(client, mv.name, str(mv.version)) if with_files else ModelFiles(),
    )


def list_versions(client, name: str) -> list:
    """All versions of ``name``, newest first."""
    versions = client.search_model_versions(f"name = {quote(name)}", max_results=10000)
    return sorted(versions, key=lambda v: int(v.version), reverse=True)


@dataclass(frozen=True)
class ModelRow:
    """One line of ``list``."""

    name: str
    version: str
    aliases: tuple[str, ...]
    created: int
    metrics: dict[str, float]
    run_id: str | None


def list_models(client, name: str | None = None) -> list[ModelRow]:
    """Registered models (or just ``name``) with their versions, aliases and key metrics."""
    from core.aliases import apply_recorded_moves
    from core.ledger import find_ledger, model_key

    if name:
        models = [get_model(client, name)]
    else:
        models = list(client.search_registered_models(max_results=1000))
    ledger = find_ledger(client)
    moves = ledger.every_slot() if ledger else {}  # one read for every model listed
    rows = []
    for model in sorted(models, key=lambda m: m.name):
        by_version: dict[str, list[str]] = {}
        # a move recorded as won but never applied is applied before its alias is listed
        aliases = apply_recorded_moves(client, model, None, ledger,
                                       moves.get(model_key(model.name), {}))
        for alias, version in aliases.items():
            by_version.setdefault(str(version), []).append(alias)
        for mv in list_versions(client, model.name):
            rows.append(ModelRow(
                name=model.name,
                version=str(mv.version),
                aliases=tuple(sorted(by_version.get(str(mv.version), []))),
                created=int(mv.creation_timestamp or 0),
                metrics=tag_metrics(mv.tags or {}),
                run_id=mv.run_id,
            ))
    return rows
