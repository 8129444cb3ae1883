"""Registered-model lookups every reader shares: a model, an alias's holder, "not found".

Below both :mod:`core.models` (the one reference resolver) and :mod:`core.aliases` (the one
alias move), which each need them: neither imports the other for them.
"""

from __future__ import annotations

import json

from core.errors import MlopsError


class ModelNotFound(MlopsError, LookupError):
    """The reference names no model version (unknown model, alias or version)."""


def not_found(exc: BaseException) -> bool:
    """Whether an MLflow error says the thing asked for does not exist."""
    code = getattr(exc, "error_code", "")
    return code == "RESOURCE_DOES_NOT_EXIST" or "not found" in str(exc).lower()


def get_model(client, name: str):
    """The registered model ``name``.

    Raises:
        ModelNotFound: ``unknown model 'name'``.
    """
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if not_found(exc):
            raise ModelNotFound(f"unknown model {name!r}") from None
        raise


def alias_holder(client, name: str, alias: str) -> str | None:
    """The version ``alias`` points at, or None if the model has no such alias."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        if not_found(exc) or exc.error_code == "INVALID_PARAMETER_VALUE":
            return None
        raise


def as_json(obj) -> str:
    """Compact JSON for tag values."""
    return json.dumps(obj, separators=(",", ":"), sort_keys=True, default=str)
