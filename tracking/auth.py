"""Users and permissions of a basic-auth tracking server, provisioned from a YAML file.

The file names each user, a role and the resources the role applies to; passwords never live
in it, only the name of the environment variable that holds each one::

    users:
      - name: alice
        role: data_scientist          # EDIT on the listed experiments and models
        password_env: ALICE_PASSWORD
        experiments: [mlops-registry]
        models: [mlops-registry-model]
      - name: scoring
        role: service                 # READ on the listed experiments and models
        password_env: SCORING_PASSWORD
        models: [mlops-registry-model]
      - name: rita
        role: release_manager         # MANAGE on the listed models; moves protected aliases
        password_env: RITA_PASSWORD
        models: [mlops-registry-model]

A data scientist with EDIT on a model registers versions and sets unprotected aliases
(``challenger``); the tracking server (:mod:`tracking.governance`) leaves protected aliases
(``champion``) to release managers and admins, whatever their permission on the model. A
user also gets MLflow's role of the same name (the server reads ``release_manager`` and
``service`` from there); ``admin`` makes the
user an admin of the server (``admin: true`` does too).

A mapping instead of a list (``models: {mlops-registry-model: EDIT}``) sets the permission of
each resource explicitly. Applying is idempotent: existing users get their password reset to
the environment's value and their permissions set again; missing experiments are created.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core.errors import MlopsError
from core.settings import SettingsError, read_yaml_mapping
from tracking.governance import ROLE_DESCRIPTIONS, ROLE_WORKSPACE

_logger = logging.getLogger(__name__)

PERMISSIONS = ("READ", "USE", "EDIT", "MANAGE", "NO_PERMISSIONS")
Role = Literal["data_scientist", "service", "release_manager", "admin"]

# What each role may do on the resources listed for it. EDIT on a model registers versions and
# sets aliases; the server refuses protected ones to all but release managers and admins.
ROLE_PERMISSIONS: dict[str, dict[str, str]] = {
    "data_scientist": {"experiments": "EDIT", "models": "EDIT"},
    "service": {"experiments": "READ", "models": "READ"},
    "release_manager": {"experiments": "READ", "models": "MANAGE"},
    "admin": {"experiments": "MANAGE", "models": "MANAGE"},
}


_RESOURCE_TYPES = {"experiments": "experiment", "models": "registered_model"}


class UsersFileError(MlopsError, ValueError):
    """A users file that cannot be applied; the message is one line (exit 1)."""


class UserSpec(BaseModel):
    """One user of the file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    role: Role
    password_env: str = Field(min_length=1)
    admin: bool = False
    experiments: dict[str, str] = Field(default_factory=dict)
    models: dict[str, str] = Field(default_factory=dict)

    @field_validator("experiments", "models", mode="before")
    @classmethod
    def _listed(cls, value, info):
        """A list takes the role's permission later; a mapping is explicit."""
        if value is None:
            return {}
        if isinstance(value, list | tuple):
            return {str(item): "" for item in value}
        return value

    @field_validator("experiments", "models")
    @classmethod
    def _known_permissions(cls, value: dict[str, str], info) -> dict[str, str]:
        from core.ledger import LEDGER_EXPERIMENT

        if info.field_name == "experiments" and LEDGER_EXPERIMENT in value:
            raise ValueError(
                f"{LEDGER_EXPERIMENT} is the ledger of alias moves, written by the tracking "
                "server only: nobody needs a grant on it (everyone reads it); leave it out"
            )
        for resource, permission in value.items():
            if permission and permission.upper() not in PERMISSIONS:
                raise ValueError(f"{resource}: unknown permission {permission!r}")
        return {k: v.upper() for k, v in value.items()}

    def grants(self) -> list[tuple[str, str, str]]:
        """``(kind, resource name, permission)`` for every listed resource."""
        out = []
        for kind in ("experiments", "models"):
            for resource, permission in getattr(self, kind).items():
                out.append((kind, resource, permission or ROLE_PERMISSIONS[self.role][kind]))
        return out


class UsersFile(BaseModel):
    """The whole file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    users: tuple[UserSpec, ...]


def load_users_file(path: str | Path) -> UsersFile:
    """Read and validate a users file.

    Raises:
        UsersFileError: missing file, bad YAML, unknown key or role; one line.
    """
    path = Path(path)
    if not path.is_file():
        raise UsersFileError(f"{path}: no such file")
    try:
        raw = read_yaml_mapping(path, "users keys")
    except SettingsError as exc:
        raise UsersFileError(str(exc)) from None
    try:
        return UsersFile.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "file"
        message = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        raise UsersFileError(f"{path}: {where}: {message}") from None


@dataclass(frozen=True)
class Applied:
    """One line of what ``apply_users`` did."""

    user: str
    action: str  # created | updated | unchanged
    resource_type: str
    resource: str
    permission: str


def _passwords(spec: UsersFile, env: Mapping[str, str]) -> dict[str, str]:
    missing = [u.password_env for u in spec.users if not env.get(u.password_env)]
    if missing:
        raise UsersFileError(f"passwords missing from the environment: {', '.join(missing)}")
    return {u.name: env[u.password_env] for u in spec.users}


def apply_users(
    auth_client, tracking_client, spec: UsersFile, env: Mapping[str, str] | None = None
) -> list[Applied]:
    """Create or update the users of ``spec`` and grant their permissions.

    Args:
        auth_client: ``mlflow.server.auth.client.AuthServiceClient`` logged in as admin.
        tracking_client: ``mlflow.MlflowClient`` of the same server (resolves experiments).
        spec: the validated users file.
        env: where the passwords are read (default: ``os.environ``).

    Returns:
        One :class:`Applied` per user and grant.

    Raises:
        UsersFileError: a password variable is unset.
    """
    from mlflow.exceptions import RestException

    passwords = _passwords(spec, os.environ if env is None else env)
    applied: list[Applied] = []
    experiment_ids: dict[str, str] = {}
    for user in spec.users:
        try:
            auth_client.create_user(user.name, passwords[user.name])
            action = "created"
        except RestException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            auth_client.update_user_password(user.name, passwords[user.name])
            action = "updated"
        is_admin = user.admin or user.role == "admin"
        # set both ways: a user moved out of the admin role stops being one
        auth_client.update_user_admin(user.name, is_admin)
        applied.append(Applied(user.name, action, "user", user.role, "ADMIN" if is_admin else ""))
        role_action = _sync_role(auth_client, user.name, user.role)
        applied.append(Applied(user.name, role_action, "role", user.role, ""))
        for kind, resource, permission in user.grants():
            resource_id = resource
            if kind == "experiments":
                if resource not in experiment_ids:
                    experiment_ids[resource] = _experiment_id(tracking_client, resource)
                resource_id = experiment_ids[resource]
            grant = _grant(auth_client, user.name, _RESOURCE_TYPES[kind], resource_id, permission)
            applied.append(Applied(user.name, grant, _RESOURCE_TYPES[kind], resource, permission))
            _logger.info("%s: %s %s on %s %s", user.name, grant, permission, kind, resource)
    return applied


def _role_id(auth_client, name: str) -> int:
    for role in auth_client.list_roles(ROLE_WORKSPACE):
        if role.name == name:
            return role.id
    return auth_client.create_role(ROLE_WORKSPACE, name, ROLE_DESCRIPTIONS[name]).id


def _sync_role(auth_client, username: str, wanted: str) -> str:
    """Give ``username`` MLflow's role named ``wanted`` and none of the other project roles.

    Returns:
        ``assigned`` (the role was given), ``unchanged``.
    """
    held = [r for r in auth_client.list_user_roles(username) if r.name in ROLE_DESCRIPTIONS]
    for role in held:
        if role.name != wanted:
            auth_client.unassign_role(username, role.id)
    if any(role.name == wanted for role in held):
        return "unchanged"
    auth_client.assign_role(username, _role_id(auth_client, wanted))
    return "assigned"


def _grant(auth_client, username: str, resource_type: str, resource_id: str, permission: str):
    """Grant, or replace an existing grant; return created | updated | unchanged."""
    from mlflow.exceptions import RestException

    try:
        auth_client.grant_user_permission(username, resource_type, resource_id, permission)
        return "created"
    except RestException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    current = auth_client.get_user_permission(username, resource_type, resource_id)
    if current.permission == permission:
        return "unchanged"
    # The API has no update of a user's grant: revoke and grant again.
    auth_client.revoke_user_permission(username, resource_type, resource_id)
    auth_client.grant_user_permission(username, resource_type, resource_id, permission)
    return "updated"


def _experiment_id(tracking_client, name: str) -> str:
    exp = tracking_client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    _logger.info("creating experiment %s", name)
    return tracking_client.create_experiment(name)
