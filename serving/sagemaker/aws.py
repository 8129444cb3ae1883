"""boto3 clients for the CLI layer, and the errors every SageMaker command reports.

Library functions receive the clients they use; only the CLI builds them, through
:class:`Aws`, which imports boto3 lazily so local work never loads it.

Errors are :class:`core.errors.MlopsError` subclasses, so the command line maps them to exit codes
like every other command line of the project (:func:`core.errors.classify`); AWS's own
errors become one through :func:`as_sagemaker_error` at the command-line boundary.
"""

from __future__ import annotations

import logging
from functools import cached_property

from core.errors import MlopsError

_logger = logging.getLogger(__name__)


class SageMakerError(MlopsError):
    """A SageMaker operation that cannot go on; the message is one line a user can act on."""


class Aws:
    """One boto3 session for a region and the clients made from it (created on first use).

    Args:
        region: AWS region name; ``None`` lets boto3 read ``AWS_DEFAULT_REGION`` and the config.
    """

    def __init__(self, region: str | None = None):
        self._region = region

    @cached_property
    def session(self):
        """The boto3 session (credentials from the usual chain: env, profile, role)."""
        import boto3

        return boto3.Session(region_name=self._region)

    @property
    def region(self) -> str | None:
        """The session's region."""
        return self.session.region_name

    def client(self, service: str):
        """A boto3 client of ``service`` in this session's region (cached)."""
        cache = self.__dict__.setdefault("_clients", {})
        if service not in cache:
            cache[service] = self.session.client(service)
        return cache[service]

    @property
    def sagemaker(self):
        """SageMaker control-plane client."""
        return self.client("sagemaker")

    @property
    def runtime(self):
        """SageMaker runtime client (``InvokeEndpoint``)."""
        return self.client("sagemaker-runtime")

    @property
    def s3(self):
        """S3 client."""
        return self.client("s3")

    @property
    def cloudwatch(self):
        """CloudWatch client (guardrail alarms)."""
        return self.client("cloudwatch")

    @property
    def autoscaling(self):
        """Application Auto Scaling client."""
        return self.client("application-autoscaling")


def client_error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ``ClientError`` (``""`` for anything else)."""
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def client_error_message(exc: BaseException) -> str:
    """The AWS error message of a botocore ``ClientError``, on one line."""
    response = getattr(exc, "response", None) or {}
    message = response.get("Error", {}).get("Message") or str(exc)
    return " ".join(str(message).split())


def as_sagemaker_error(exc: BaseException) -> SageMakerError | None:
    """An error of boto3/botocore as one :class:`SageMakerError` line, else None.

    A ``ClientError`` carries AWS's code and message (``AWS AccessDenied: ...``); botocore's
    own errors (no credentials, endpoint unreachable) keep their text (``AWS: ...``).
    """
    if client_error_code(exc):
        return SageMakerError(f"AWS {client_error_code(exc)}: {client_error_message(exc)}")
    if type(exc).__module__.startswith(("botocore", "boto3")):
        return SageMakerError(f"AWS: {' '.join(str(exc).split())}")
    return None
