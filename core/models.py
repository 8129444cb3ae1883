"""The one model-reference resolver: what ``NAME@ALIAS`` / ``NAME/VERSION`` names right now.

Every package resolves references through :func:`resolve_model` (the registry's commands, the
scoring server, SageMaker deployment, monitoring), so an alias means the same version to all
of them and an unknown model, alias or version reads the same everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

# the lookups live one layer down, so core.aliases (which this resolver calls to apply a
# recorded move) reads models without importing this module back; re-exported for callers
from core.lookup import ModelNotFound as ModelNotFound
from core.lookup import alias_holder as alias_holder
from core.lookup import as_json as as_json
from core.lookup import get_model as get_model
from core.lookup import not_found as not_found
from core.uris import ModelRef, parse_model_ref, version_uri


@dataclass(frozen=True)
class ResolvedModel:
    """The concrete model a reference resolved to."""

    uri: str
    name: str | None = None
    version: str | None = None
    alias: str | None = None
    run_id: str | None = None
    model_version: object | None = None  # the mlflow ModelVersion, when from the registry

    def as_dict(self) -> dict:
        """The fields ``/version`` reports."""
        return {
            "model_name": self.name,
            "model_version": self.version,
            "alias": self.alias,
            "run_id": self.run_id,
            "model_uri": self.uri,
        }


def resolve_model(client, ref: ModelRef | str, allow_run: bool = True,
                  allow_alias: bool = True) -> ResolvedModel:
    """Resolve ``ref`` to a concrete version (an alias to the version it points at now).

    An alias whose last recorded move was never applied is brought up to date first
    (:func:`core.aliases.apply_recorded_moves`).

    Args:
        client: MLflow client of the registry.
        ref: a parsed :class:`ModelRef` or its text (``NAME@ALIAS``, ``NAME/VERSION``,
            ``models:/...``, ``runs:/RUN_ID/PATH``).
        allow_run: accept ``runs:/`` references (they name no registered version).
        allow_alias: accept ``NAME@ALIAS``; else only ``NAME/VERSION``.

    Raises:
        ModelRefError: the text is not a model reference (bad usage).
        ModelNotFound: the registry has no such model, alias or version.
    """
    from mlflow.exceptions import MlflowException

    if isinstance(ref, str):
        ref = parse_model_ref(ref, allow_run=allow_run)
    if ref.run_id:
        if not allow_run:
            raise ModelNotFound(f"{ref}: give a registered model (NAME/VERSION or NAME@ALIAS)")
        return ResolvedModel(uri=ref.uri, run_id=ref.run_id)
    if ref.alias and not allow_alias:
        raise ModelNotFound(f"{ref}: give a version (NAME/VERSION), not an alias")
    model = get_model(client, ref.name)
    if ref.alias:
        # core.aliases reads models through this module: imported here, not at the top
        from core.aliases import apply_recorded_moves

        # a move recorded as won but never applied is applied before the alias is read
        apply_recorded_moves(client, model, ref.alias)
    try:
        if ref.alias:
            mv = client.get_model_version_by_alias(ref.name, ref.alias)
        else:
            mv = client.get_model_version(ref.name, ref.version)
    except MlflowException as exc:
        if not (not_found(exc) or exc.error_code == "INVALID_PARAMETER_VALUE"):
            raise
        what = f"alias {ref.alias!r}" if ref.alias else f"version {ref.version}"
        raise ModelNotFound(f"model {ref.name!r} has no {what}") from None
    return ResolvedModel(
        uri=version_uri(mv.name, mv.version),
        name=mv.name,
        version=str(mv.version),
        alias=ref.alias,
        run_id=mv.run_id,
        model_version=mv,
    )
