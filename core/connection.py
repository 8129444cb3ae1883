"""The MLflow connection: where the tracking store is, a client for it, and how long to wait.

Only the CLI layers call :func:`connect`; library code receives the client it works with.
:func:`prepare_process` (called by :func:`core.cli.run_group` before anything else) sets
MLflow's own client settings for the project's processes.
"""

from __future__ import annotations

import os
import re
import urllib.parse

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
#: The database schemes MLflow's SQLAlchemy stores serve (and migrate with alembic).
SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")

#: MLflow's HTTP client settings in the project's processes, unless the user set them.
#: MLflow's defaults (7 retries, backoff factor 2, capped at 120 s) wait about 4 minutes per
#: request for a server that is gone, and a failing workflow makes several requests on its
#: way out (17 minutes were seen). Five retries with MLflow's own factor wait 0, 4, 8, 16 and
#: 32 s (plus MLflow's jitter): a server that refuses connections, or a proxy answering
#: 502/503 for it, is given up on after about a minute, and a restart shorter than that is
#: ridden out. A server that accepts connections but never answers costs the timeout per
#: attempt on top; 30 s still lets a proxied upload of a large model reach S3 before the
#: server answers.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "5",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
#: The settings of a process that has given up on its server (:func:`give_up_on_server`):
#: each later request (closing the runs it can) is tried once, briefly.
GAVE_UP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
#: MLflow 3's usage telemetry: its background thread deletes ``_MLFLOW_TELEMETRY_SESSION_ID``
#: from ``os.environ`` (when its configuration cannot be fetched, e.g. offline) while request
#: threads copy the environment, which fails them with ``KeyError`` (one in ten parallel
#: tag writes of an alias move). Switched off before MLflow is imported, the thread never
#: starts; the project forces it off, whatever the environment says.
TELEMETRY_OFF = {"MLFLOW_DISABLE_TELEMETRY": "true"}
#: A command's stderr holds its log lines and at most one error line: MLflow's download
#: progress bars (a model fetched to score it, to hand it to a child) are left out unless the
#: user asks for them.
QUIET_DEFAULTS = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


def tracking_uri() -> str:
    """The tracking location: ``$MLFLOW_TRACKING_URI`` or the embedded SQLite store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def registry_uri() -> str:
    """The registry location: ``$MLFLOW_REGISTRY_URI`` or the tracking location."""
    return os.environ.get("MLFLOW_REGISTRY_URI") or tracking_uri()


def is_server(uri: str) -> bool:
    """Whether ``uri`` is a tracking server's (HTTP or HTTPS), not a store opened in-process."""
    return uri.startswith(("http://", "https://"))


def is_sql_store(uri: str) -> bool:
    """Whether ``uri`` is a SQLAlchemy database URL MLflow migrates with alembic."""
    return urllib.parse.urlparse(uri).scheme.split("+", 1)[0] in SQL_SCHEMES


def connect(uri: str | None = None):
    """Point the fluent API at ``uri`` (default :func:`tracking_uri`) and return a client.

    The registry is ``$MLFLOW_REGISTRY_URI`` when it is set and no ``uri`` is given, else the
    tracking location itself.

    Returns:
        mlflow.MlflowClient bound to the tracking and registry locations.
    """
    import mlflow

    reg = registry_uri() if uri is None else uri
    uri = uri or tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(reg)
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=reg)


def prepare_process() -> None:
    """Set MLflow's client settings for this process and the processes it starts.

    Called once at the start of every command line (:func:`core.cli.run_group`), before
    MLflow is imported: :data:`HTTP_DEFAULTS` and :data:`QUIET_DEFAULTS` where the user set
    no value, and
    :data:`TELEMETRY_OFF`. Child processes (the tracking server, scoring workers) inherit them.
    """
    import sys

    for key, value in {**HTTP_DEFAULTS, **QUIET_DEFAULTS}.items():
        os.environ.setdefault(key, value)
    os.environ.update(TELEMETRY_OFF)
    if "mlflow.telemetry" in sys.modules:  # imported already (a caller in the same process)
        from mlflow.telemetry import set_telemetry_client

        set_telemetry_client()  # sees the switch: no client, no thread


def give_up_on_server() -> None:
    """From now on, try each request to the tracking server once (:data:`GAVE_UP`).

    For a process that found its server unreachable and is on its way out: each run it still
    closes costs one quick attempt, not another minute of retries. MLflow reads these
    settings at every request. The keys exist already (:func:`prepare_process`), so this
    replaces values and never resizes ``os.environ`` under a thread that reads it.
    """
    os.environ.update(GAVE_UP)


#: What a request that never reached the server (or only its proxy's 502/503) raises.
_UNREACHABLE = (
    "requests.exceptions.ConnectionError", "requests.exceptions.Timeout",
    "requests.exceptions.RetryError", "urllib3.exceptions.MaxRetryError",
    "urllib3.exceptions.NewConnectionError",
)


def _chain(exc: BaseException | None):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) says the server could not be reached.

    MLflow wraps the HTTP error in an ``MlflowException`` raised while handling it; the
    project's own errors are raised from those. The chain is followed either way.
    """
    return any(_GATEWAY_DOWN.search(str(err))
               or any(f"{cls.__module__}.{cls.__qualname__}" in _UNREACHABLE
                      for cls in type(err).__mro__)
               for err in _chain(exc))


# MLflow 3.18 returns the last answer once its retries are spent instead of raising urllib3's
# RetryError: a gateway saying the server is down (502/503/504) reads "failed with error code".
_GATEWAY_DOWN = re.compile(r"failed with error code (50[234]) != 200")


_REQUEST_URL = re.compile(r"API request to (\S+?)/(?:ajax-)?api/")
_WHY = (
    (re.compile(r"\[Errno -?\d+\] ([^'\")\[\]]+)"), None),
    (re.compile(r"too many (\d{3}) error responses"), "answered {} every time"),
    (_GATEWAY_DOWN, "answered {} every time"),
    (re.compile(r"timed out", re.IGNORECASE), "no answer in time"),
)


def unreachable_line(exc: BaseException) -> str:
    """``the tracking server URL is unreachable (connection refused)``: the server ``exc`` names.

    A boto3 call that could not reach AWS names AWS's endpoint instead.

    The server is the one the failed request went to (MLflow's message holds its URL), else
    :func:`tracking_uri`; credentials in the URL are left out.
    """
    text = " ".join(str(err) for err in _chain(exc))
    why = "no connection"
    for pattern, wording in _WHY:
        if m := pattern.search(text):
            why = wording.format(*m.groups()) if wording else m.group(1).strip().lower()
            break
    aws = next((err for err in _chain(exc) if type(err).__module__.startswith("botocore")), None)
    if aws is not None:  # boto3 found AWS (or its AWS_ENDPOINT_URL) out of reach, not MLflow
        endpoint = getattr(aws, "kwargs", {}).get("endpoint_url") or "endpoint"
        return f"AWS {endpoint} is unreachable ({why})"
    found = _REQUEST_URL.search(text)
    server = found.group(1) if found else tracking_uri()
    server = re.sub(r"//[^/@]*@", "//", server)
    return f"the tracking server {server} is unreachable ({why})"
