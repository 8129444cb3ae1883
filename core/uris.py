"""The one place that builds and parses model URIs.

Accepted references: ``NAME@ALIAS``, ``NAME/VERSION``, ``models:/NAME@ALIAS``,
``models:/NAME/VERSION``, ``runs:/RUN_ID/PATH``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NAME = r"[^@/:\s][^@/]*?"
_MODEL_ALIAS = re.compile(rf"^(?:models:/)?(?P<name>{_NAME})@(?P<alias>[A-Za-z0-9_\-]+)$")
_MODEL_VERSION = re.compile(rf"^(?:models:/)?(?P<name>{_NAME})/(?P<version>\d+)$")
_RUN = re.compile(r"^runs:/(?P<run_id>[0-9a-fA-F]+)/(?P<path>.+)$")


class ModelRefError(ValueError):
    """A model reference that is not one of the accepted forms."""


@dataclass(frozen=True)
class ModelRef:
    """A parsed model reference: exactly one of ``alias``/``version``/``run_id`` is set."""

    name: str | None = None
    alias: str | None = None
    version: str | None = None
    run_id: str | None = None
    path: str | None = None

    @property
    def uri(self) -> str:
        """The MLflow URI of the reference."""
        if self.run_id:
            return run_uri(self.run_id, self.path or "model")
        if self.alias:
            return alias_uri(self.name, self.alias)
        return version_uri(self.name, self.version)

    def __str__(self) -> str:
        if self.run_id:
            return self.uri
        return f"{self.name}@{self.alias}" if self.alias else f"{self.name}/{self.version}"


def alias_uri(name: str, alias: str) -> str:
    """``models:/NAME@ALIAS``."""
    return f"models:/{name}@{alias}"


def version_uri(name: str, version: str | int) -> str:
    """``models:/NAME/VERSION``."""
    return f"models:/{name}/{version}"


def run_uri(run_id: str, path: str = "model") -> str:
    """``runs:/RUN_ID/PATH``."""
    return f"runs:/{run_id}/{path}"


def parse_model_ref(text: str, allow_run: bool = True) -> ModelRef:
    """Parse ``NAME@ALIAS``, ``NAME/VERSION`` or a ``models:/``/``runs:/`` URI.

    Raises:
        ModelRefError: with a one-line message naming the accepted forms.
    """
    text = (text or "").strip()
    if m := _MODEL_ALIAS.match(text):
        return ModelRef(name=m["name"], alias=m["alias"])
    if m := _MODEL_VERSION.match(text):
        return ModelRef(name=m["name"], version=m["version"])
    if allow_run and (m := _RUN.match(text)):
        return ModelRef(run_id=m["run_id"], path=m["path"])
    forms = "NAME@ALIAS, NAME/VERSION" + (", runs:/RUN_ID/PATH" if allow_run else "")
    raise ModelRefError(f"{text!r} is not a model reference; use {forms}")


#: The query that opens MLflow 3.17's UI in its model-training layout. Its workflow selector
#: (GenAI / model training, remembered per browser, GenAI by default) decides the layout; the
#: experiment's ``mlflow.experimentKind`` tag does not.
UI_LAYOUT_QUERY = "?workflowType=machine_learning"


def ui_path(experiment_id: str, run_id: str | None = None) -> str:
    """The UI's address (after the server URL) of an experiment's runs table or of one run.

    Opens the model-training layout, so the runs table, charts and models show, not the GenAI
    pages; every package that prints or writes a UI link uses this one.
    """
    run = f"/{run_id}" if run_id else ""
    return f"#/experiments/{experiment_id}/runs{run}{UI_LAYOUT_QUERY}"

