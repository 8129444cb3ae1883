"""The server's secrets: its keys, the auth app's ini and the admin password policy.

* the server's keys (:data:`KEY_ENVS`: the one MLflow encrypts webhook secrets with, the one
  the auth app signs sessions and CSRF tokens with) outlive a restart: taken from the
  environment, else kept in a file next to a SQLite store (:func:`resolve_keys`); a database
  that replicas share needs them from the environment;
* the basic-auth ini (:func:`write_auth_config`, mode 0600: its ``database_uri`` may carry the
  database password) and where the auth app keeps its users (:func:`auth_database_uri`);
* the admin credentials come only from the environment, and a weak admin password is refused
  before a server starts (:func:`password_weakness`, :func:`check_admin_env`).

URLs are redacted by :mod:`core.redaction`, for every package.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from core.connection import is_sql_store
from core.errors import UsageError
from tracking.errors import ServerError

ADMIN_USERNAME_ENV = "MLFLOW_AUTH_ADMIN_USERNAME"
ADMIN_PASSWORD_ENV = "MLFLOW_AUTH_ADMIN_PASSWORD"
AUTH_CONFIG_ENV = "MLFLOW_AUTH_CONFIG_PATH"
SECRET_KEY_ENV = "MLFLOW_FLASK_SERVER_SECRET_KEY"
# The Fernet key MLflow encrypts webhook secrets with in the database. Unset, every server
# process draws its own: a webhook saved through one worker or replica cannot be delivered by
# another (its secret does not decrypt there), nor after a restart.
WEBHOOK_KEY_ENV = "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY"
# The server's keys: each must be the same for every process that serves one database, across
# restarts (SECRET_KEY_ENV signs the auth app's sessions and CSRF tokens).
KEY_ENVS = (WEBHOOK_KEY_ENV, SECRET_KEY_ENV)
# Where a SQLite store's keys are kept: the database file's name plus this suffix.
KEYS_FILE_SUFFIX = ".keys"


class WeakPasswordError(UsageError):
    """The admin password is too easy to guess; the message says why (exit 2)."""


class MissingKeysError(UsageError):
    """A server on a shared database needs its keys from the environment (exit 2)."""


# -- keys -------------------------------------------------------------------------------------


def new_keys() -> dict[str, str]:
    """Fresh values for :data:`KEY_ENVS` (what ``python -m tracking keys`` prints)."""
    import secrets

    from cryptography.fernet import Fernet

    return {WEBHOOK_KEY_ENV: Fernet.generate_key().decode(), SECRET_KEY_ENV: secrets.token_hex(32)}


def keys_file(backend_store_uri: str) -> Path | None:
    """Where the keys of a SQLite store are kept (next to the database); ``None`` elsewhere."""
    if not backend_store_uri.startswith("sqlite:///"):
        return None
    path = backend_store_uri[len("sqlite:///") :].split("?", 1)[0]
    if path in ("", ":memory:"):
        return None
    db = Path(path).expanduser().absolute()
    return db.with_name(db.name + KEYS_FILE_SUFFIX)


def _check_webhook_key(value: str) -> None:
    from cryptography.fernet import Fernet

    try:
        Fernet(value)
    except (ValueError, TypeError):
        # MLflow's workers would each crash on it at start, with a traceback
        raise UsageError(
            f"{WEBHOOK_KEY_ENV} is not a Fernet key (32 url-safe base64-encoded bytes); "
            "`python -m tracking keys` prints a new one"
        ) from None


def _read_keys(path: Path) -> dict[str, str]:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise ServerError(f"{path} is readable by other users (mode {mode:04o}): chmod 600 {path}")
    try:
        keys = json.loads(path.read_text())
        if not isinstance(keys, dict) or not all(isinstance(keys.get(k), str) for k in KEY_ENVS):
            raise ValueError
    except ValueError:
        raise ServerError(
            f"{path} does not hold the server's keys ({', '.join(KEY_ENVS)}); restore it from "
            "the backup of the database"
        ) from None
    return {k: keys[k] for k in KEY_ENVS}


def _create_keys(path: Path) -> bool:
    """Write new keys to ``path`` (mode 0600) unless it exists; whether this call wrote them.

    Written to a temporary file first and linked into place, so a launcher starting at the same
    moment on the same database reads either no file or a complete one, never half of it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, scratch = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(handle, 0o600)
        with os.fdopen(handle, "w") as f:
            json.dump(new_keys(), f)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(scratch, path)  # fails if it exists: the keys are made once
        except FileExistsError:
            return False
        return True
    finally:
        os.unlink(scratch)


@dataclass(frozen=True)
class ServerKeys:
    """The server's keys and where they came from.

    ``values`` maps the variables of :data:`KEY_ENVS` that were not in the environment to the
    values to give the server; ``path`` is the keys file they were read from (``None``: none
    needed one); ``created`` says the file was written by this start.
    """

    values: dict[str, str]
    path: Path | None = None
    created: bool = False


def resolve_keys(backend_store_uri: str, env: dict, auth: bool = False) -> ServerKeys:
    """The keys the server needs: from ``env``, else from the store's keys file, made once.

    A SQLite store is the state of one server on one host: its keys live next to the database
    (``mlflow.db`` -> ``mlflow.db.keys``, mode 0600), created at the first start and read at
    every later one, so webhook secrets saved before a restart still decrypt after it, and
    signed-in users stay signed in. A store on a database server (PostgreSQL) may be shared by
    replicas on other hosts, which a file on one host cannot reach, and a key kept in the
    database would sit next to the secrets it protects: the keys must come from the
    environment, the same on every replica (the webhook key always, the session key with
    ``--auth``). A store that is no SQL database (``file:``) has no webhooks; its keys only
    last the process, as MLflow's own would.

    Args:
        backend_store_uri: the server's backend store.
        env: the server's environment; values there win.
        auth: the server runs the auth app (it needs :data:`SECRET_KEY_ENV`).

    Raises:
        MissingKeysError: a shared database without its keys in the environment (one line).
        UsageError: the webhook key in the environment is no Fernet key.
        ServerError: the keys file is readable by others, or does not hold the keys.
    """
    if env.get(WEBHOOK_KEY_ENV):
        _check_webhook_key(env[WEBHOOK_KEY_ENV])
    missing = [k for k in KEY_ENVS if not env.get(k)]
    if not missing:
        return ServerKeys({})
    path = keys_file(backend_store_uri)
    if path is not None:
        created = not path.exists() and _create_keys(path)
        kept = _read_keys(path)
        return ServerKeys({k: kept[k] for k in missing}, path, created)
    if is_sql_store(backend_store_uri) and not backend_store_uri.startswith("sqlite"):
        needed = [WEBHOOK_KEY_ENV] + ([SECRET_KEY_ENV] if auth else [])
        if any(k in missing for k in needed):
            raise MissingKeysError(
                f"a server on a shared database needs {' and '.join(needed)} in the "
                "environment, the same on every replica and at every start (`python -m "
                "tracking keys` prints new ones; see .env.example)"
            )
    return ServerKeys({k: v for k, v in new_keys().items() if k in missing})



# -- auth -------------------------------------------------------------------------------------


def auth_database_uri(backend_store_uri: str) -> str:
    """Where the basic-auth app keeps users: next to a SQLite store, else in the same database.

    MLflow's auth tables and their alembic version table (``alembic_version_auth``) do not
    collide with the tracking schema, so a PostgreSQL backend can hold both.
    """
    if backend_store_uri.startswith("sqlite:///"):
        path = Path(backend_store_uri[len("sqlite:///") :]).expanduser()
        return f"sqlite:///{path.parent / 'basic_auth.db'}"
    return backend_store_uri


def write_auth_config(path: Path, database_uri: str, default_permission: str = "READ") -> Path:
    """Write the basic-auth ini, readable and writable by its owner only (mode 0600).

    The file holds no admin credentials (those come from the environment), but it does hold a
    secret when the store is PostgreSQL: ``database_uri`` is the users' database, and that URI
    carries the database password. Hence 0600, and the launcher deletes it when the server stops.
    """
    text = (
        "# Written by `python -m tracking server --auth`; deleted when the server stops.\n"
        "# database_uri may carry the database password: keep this file mode 0600.\n"
        "[mlflow]\n"
        f"default_permission = {default_permission}\n"
        f"database_uri = {database_uri}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its old mode through O_CREAT
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


MIN_PASSWORD_LENGTH = 12  # the minimum MLflow's own sign-up form asks for

# Passwords every guessing list starts with (and their obvious suffixes); a short list is
# enough here: the length rule, the repeated-character and the sequence rules catch the rest
# of what such lists hold.
COMMON_PASSWORDS = frozenset(
    """
    password password1 password12 password123 password1234 passw0rd p@ssw0rd p@ssword
    administrator admin123 admin1234 adminadmin administrator1 changeme changeme123
    letmein letmein123 welcome welcome123 welcome1234 qwerty qwertyuiop qwerty123 qwerty12345
    iloveyou iloveyou123 trustno1 football baseball superman dragon monkey sunshine princess
    starwars whatever mlflow mlflow123 mlflowadmin mlflow-admin mlflow_admin mlflowpassword
    secret secret123 mysecretpassword postgres postgres123 1q2w3e4r5t6y 1qaz2wsx3edc
    zaq12wsx asdfghjkl asdfghjkl123 zxcvbnm zxcvbnm123 passwordpassword
    """.split()
)
_SEQUENCES = (
    "abcdefghijklmnopqrstuvwxyz",
    "0123456789",
    "qwertyuiopasdfghjklzxcvbnm",
)


def _is_sequence(text: str) -> bool:
    """A run of one keyboard or alphabet row, forwards or backwards (``123456789012``...)."""
    lowered = text.lower()
    for row in _SEQUENCES:
        for seq in (row, row[::-1]):
            looped = seq * (len(lowered) // len(seq) + 2)
            if lowered in looped:
                return True
    return False


def password_weakness(password: str) -> str | None:
    """Why ``password`` is too easy to guess, or ``None`` when it is acceptable."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"it is shorter than {MIN_PASSWORD_LENGTH} characters"
    if len(set(password)) == 1:
        return "it repeats one character"
    for size in range(2, len(password) // 2 + 1):
        if len(password) % size == 0 and password == password[:size] * (len(password) // size):
            return f"it repeats {password[:size]!r}"
    if _is_sequence(password):
        return "it is a keyboard or alphabet sequence"
    if password.lower() in COMMON_PASSWORDS:
        return "it is a common password"
    return None


def check_admin_env(env: dict | None = None, strength: bool = False) -> None:
    """Refuse to go on without the admin credentials in the environment.

    Args:
        env: where to look (default: ``os.environ``).
        strength: also refuse a weak admin password (when starting a server; a client that
            only logs in with it does not judge it).

    Raises:
        ServerError: one line naming the missing variables (exit 1).
        WeakPasswordError: one line saying why the admin password is refused (exit 2).
    """
    env = os.environ if env is None else env
    missing = [k for k in (ADMIN_USERNAME_ENV, ADMIN_PASSWORD_ENV) if not env.get(k)]
    if missing:
        raise ServerError(
            f"--auth needs the admin credentials in the environment: set {' and '.join(missing)}"
        )
    why = password_weakness(env[ADMIN_PASSWORD_ENV]) if strength else None
    if why:
        raise WeakPasswordError(f"{ADMIN_PASSWORD_ENV} is refused: {why}")
