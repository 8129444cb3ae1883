"""Lookups of an endpoint and the names of what belongs to it, shared by every higher module.

Deploy, rollout, scaling, status and delete all need to find an endpoint and know the names
of its guardrail alarms; they live here, below all of them, so that those modules form
layers (``rollout`` over ``endpoints`` over ``scaling``) instead of importing each other.
"""

from __future__ import annotations

from serving.sagemaker.aws import SageMakerError, client_error_code
from serving.sagemaker.target import check_name

#: Endpoint states in which SageMaker refuses another update (wait for them to settle).
TRANSITIONAL = ("Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting")


def alarm_names(endpoint: str) -> list[str]:
    """Names of the endpoint's guardrail alarms (5xx errors, latency)."""
    return [f"{endpoint}-guardrail-5xx", f"{endpoint}-guardrail-latency"]


def backlog_alarm_name(endpoint: str) -> str:
    """Name of an asynchronous endpoint's alarm that scales it up from zero (backlog waiting)."""
    return f"{endpoint}-async-backlog"


def owned_alarm_names(endpoint: str) -> list[str]:
    """Every alarm this tool makes for the endpoint: guardrails and the async backlog alarm."""
    return [*alarm_names(endpoint), backlog_alarm_name(endpoint)]


def describe_endpoint(sm, endpoint: str) -> dict | None:
    """``DescribeEndpoint``, or ``None`` when the endpoint does not exist."""
    try:
        return sm.describe_endpoint(EndpointName=endpoint)
    except Exception as exc:  # botocore ClientError: "Could not find endpoint" is a 400
        if client_error_code(exc) == "ValidationException" and "not find" in str(exc).lower():
            return None
        raise


def require_endpoint(sm, endpoint: str) -> dict:
    """``DescribeEndpoint`` or a one-line error telling how to create it."""
    desc = describe_endpoint(sm, check_name(endpoint))
    if desc is None:
        raise SageMakerError(
            f"endpoint {endpoint} does not exist; create it with "
            f"`python -m serving sagemaker deploy NAME@ALIAS --endpoint {endpoint}`"
        )
    return desc


def endpoint_tags(sm, arn: str) -> dict[str, str]:
    """The tags of a SageMaker resource as a mapping."""
    tags: dict[str, str] = {}
    kwargs: dict = {"ResourceArn": arn}
    while True:
        page = sm.list_tags(**kwargs)
        tags.update({t["Key"]: t["Value"] for t in page.get("Tags", [])})
        if not page.get("NextToken"):
            return tags
        kwargs["NextToken"] = page["NextToken"]
