"""Safe updates: SageMaker deployment guardrails, then the registry alias.

``rollout`` sends ``UpdateEndpoint`` with a ``DeploymentConfig`` — blue/green with a canary
share of capacity, a bake period, and automatic rollback when a CloudWatch alarm on the
endpoint's 5xx errors or model latency fires — which mlflow's SageMaker client does not send.
Only when the endpoint ends up serving the new version does the alias move; after a failure
or rollback the old fleet keeps serving and the alias stays where it was. The move is THE alias
move of :mod:`core.aliases` (compare-and-set, recorded in ``python -m registry history``): a
promotion made while the canary bakes wins over the rollout.
"""

from __future__ import annotations

import logging

from core.aliases import current_user, move_alias, read_state
from core.errors import LostRace, MlopsError
from core.models import alias_holder, as_json
from serving.sagemaker.aws import SageMakerError
from serving.sagemaker.endpoints import (
    Deployment,
    discard,
    live_variant,
    serves,
    tag_endpoint,
    wait_for_endpoint,
)
from serving.sagemaker.package import (
    create_endpoint_config,
    create_model,
    resolve_model,
    upload_archive,
)
from serving.sagemaker.resources import TRANSITIONAL, alarm_names, require_endpoint
from serving.sagemaker.target import VARIANT_NAME, Target

_logger = logging.getLogger(__name__)

DEFAULT_CANARY_PERCENT = 10
DEFAULT_BAKE_MINUTES = 10.0
DEFAULT_ALIAS = "champion"
# 5xx errors in one minute that count as a failed canary.
DEFAULT_MAX_5XX = 1
# p99 model latency (milliseconds) over one minute that counts as a failed canary.
DEFAULT_MAX_LATENCY_MS = 1000.0
# Keep the old fleet (and watch the alarms) this long after all traffic moved.
DEFAULT_TERMINATION_WAIT_SECONDS = 120
ALARM_PERIOD_SECONDS = 60
MAX_BAKE_MINUTES = 60  # SageMaker's limit on WaitIntervalInSeconds (3600)
MAX_CANARY_PERCENT = 50  # SageMaker's limit on a canary's CAPACITY_PERCENT
MAX_TERMINATION_WAIT_SECONDS = 3600  # SageMaker's limit on TerminationWaitInSeconds


class RolloutError(SageMakerError):
    """The update failed or was rolled back; the old version keeps serving."""


def put_guardrail_alarms(
    cloudwatch,
    endpoint: str,
    *,
    max_5xx: int = DEFAULT_MAX_5XX,
    max_latency_ms: float = DEFAULT_MAX_LATENCY_MS,
) -> list[str]:
    """Create (or update) the CloudWatch alarms the rollout watches; return their names.

    Both watch ``AWS/SageMaker`` metrics of the endpoint's variant over one-minute periods:
    ``Invocation5XXErrors`` (sum) and ``ModelLatency`` (p99, microseconds). Missing data
    (no traffic) is not a breach.
    """
    five_xx, latency = alarm_names(endpoint)
    dimensions = [
        {"Name": "EndpointName", "Value": endpoint},
        {"Name": "VariantName", "Value": VARIANT_NAME},
    ]
    common = {
        "Namespace": "AWS/SageMaker",
        "Dimensions": dimensions,
        "Period": ALARM_PERIOD_SECONDS,
        "EvaluationPeriods": 1,
        "ComparisonOperator": "GreaterThanOrEqualToThreshold",
        "TreatMissingData": "notBreaching",
    }
    cloudwatch.put_metric_alarm(
        AlarmName=five_xx,
        AlarmDescription=f"{endpoint}: rollout guardrail on 5xx errors",
        MetricName="Invocation5XXErrors",
        Statistic="Sum",
        Threshold=float(max_5xx),
        **common,
    )
    cloudwatch.put_metric_alarm(
        AlarmName=latency,
        AlarmDescription=f"{endpoint}: rollout guardrail on p99 model latency",
        MetricName="ModelLatency",
        ExtendedStatistic="p99",
        Threshold=float(max_latency_ms) * 1000.0,  # ModelLatency is in microseconds
        Unit="Microseconds",
        **common,
    )
    return [five_xx, latency]


def deployment_config(
    *,
    canary_percent: int,
    bake_minutes: float,
    alarms: list[str],
    termination_wait_seconds: int = DEFAULT_TERMINATION_WAIT_SECONDS,
) -> dict:
    """The ``DeploymentConfig`` of a guarded blue/green update.

    ``canary_percent`` of the new fleet's capacity takes traffic first for ``bake_minutes``;
    100 shifts everything at once (still baked and guarded).
    """
    if not (1 <= canary_percent <= MAX_CANARY_PERCENT or canary_percent == 100):
        raise SageMakerError(
            f"--canary {canary_percent}: use 1 to {MAX_CANARY_PERCENT} (SageMaker's largest "
            "canary), or 100 for all at once"
        )
    if not 0 <= termination_wait_seconds <= MAX_TERMINATION_WAIT_SECONDS:
        raise SageMakerError(
            f"--termination-wait-seconds {termination_wait_seconds}: use 0 to "
            f"{MAX_TERMINATION_WAIT_SECONDS} (SageMaker's limit)"
        )
    if not 0 <= bake_minutes <= MAX_BAKE_MINUTES:
        raise SageMakerError(
            f"--bake-minutes {bake_minutes:g}: use 0 to {MAX_BAKE_MINUTES} (SageMaker's limit)"
        )
    wait = int(round(bake_minutes * 60))
    routing: dict = {"WaitIntervalInSeconds": wait}
    if canary_percent == 100:
        routing["Type"] = "ALL_AT_ONCE"
    else:
        routing["Type"] = "CANARY"
        routing["CanarySize"] = {"Type": "CAPACITY_PERCENT", "Value": canary_percent}
    return {
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": routing,
            "TerminationWaitInSeconds": termination_wait_seconds,
            # SageMaker accepts 600..28800 and needs room for the bake and the termination wait.
            "MaximumExecutionTimeoutInSeconds": min(
                28800, max(600, wait + termination_wait_seconds + 600)
            ),
        },
        "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": name} for name in alarms]},
    }


def refuse_unguarded(live, endpoint: str, ref: str) -> None:
    """Canary rollouts with alarm rollback are for real-time endpoints on instances.

    SageMaker's deployment guardrails do not run on serverless endpoints, and this rollout
    builds real-time configs, so an asynchronous endpoint would lose its S3 output: both are
    refused with the command that does update them (``deploy``: blue/green, all at once).
    """
    kind = live.hosting.kind
    if kind == "real-time":
        return
    why = ("SageMaker's deployment guardrails (canary, alarm rollback) do not run on "
           "serverless endpoints" if kind == "serverless" else
           "canary rollouts here are for real-time endpoints (they would drop its S3 output)")
    raise SageMakerError(
        f"endpoint {endpoint} is {kind}: {why}; update it all at once with `python -m serving "
        f"sagemaker deploy {ref} --endpoint {endpoint}` (the old fleet answers until the new "
        "one is InService)")


def refuse_unguarded_endpoint(sm, endpoint: str, ref: str) -> None:
    """``follow`` at start: :func:`refuse_unguarded` on the endpoint as it is now.

    SageMaker out of reach is a warning: follow still starts and each pass says so, and a
    rollout refuses a serverless or asynchronous endpoint itself.
    """
    from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError

    from serving.sagemaker.resources import describe_endpoint

    try:
        desc = describe_endpoint(sm, endpoint)
    except (EndpointConnectionError, ConnectTimeoutError) as exc:
        _logger.warning("could not check %s's hosting at start: %s", endpoint, exc)
        return
    if desc is not None:
        refuse_unguarded(live_variant(sm, desc), endpoint, ref)


def rollout(
    sm,
    s3,
    cloudwatch,
    client,
    *,
    ref: str,
    endpoint: str,
    target: Target,
    canary_percent: int = DEFAULT_CANARY_PERCENT,
    bake_minutes: float = DEFAULT_BAKE_MINUTES,
    alias: str | None = DEFAULT_ALIAS,
    max_5xx: int = DEFAULT_MAX_5XX,
    max_latency_ms: float = DEFAULT_MAX_LATENCY_MS,
    termination_wait_seconds: int = DEFAULT_TERMINATION_WAIT_SECONDS,
    synchronous: bool = True,
    timeout_seconds: float | None = None,
) -> Deployment:
    """Update an existing endpoint to ``ref`` behind guardrails; move ``alias`` on success.

    The new endpoint config keeps the serving variant's instance type and current count
    (autoscaling may have changed it).

    Args:
        sm: boto3 SageMaker client.
        s3: boto3 S3 client.
        cloudwatch: boto3 CloudWatch client (guardrail alarms).
        client: ``mlflow.MlflowClient`` of the registry (the alias move).
        ref: ``NAME@ALIAS`` or ``NAME/VERSION`` to roll out.
        endpoint: an existing, InService endpoint.
        target: role, bucket, image (instance settings come from the endpoint).
        canary_percent: share of the new fleet's capacity that takes traffic first (1-100).
        bake_minutes: how long the canary takes traffic before the rest shifts (0-60).
        alias: registry alias set to the rolled-out version on success; ``None`` moves nothing.
        max_5xx: 5xx errors per minute that roll back.
        max_latency_ms: p99 model latency per minute that rolls back.
        termination_wait_seconds: how long the old fleet stays (and alarms count) afterwards.
        synchronous: wait for the outcome; without it the alias is never moved.
        timeout_seconds: how long to wait; default the update's own maximum plus 5 minutes.

    The alias moves through :func:`core.aliases.move_alias` (kind ``rollout``, recorded in
    the model's history with the endpoint, canary settings and deployment config as the
    reason), compared against the alias as it was before the update started.

    Raises:
        RolloutError: the update failed or rolled back (the alias did not move).
        LostRace: the endpoint serves the new version, but the alias was moved by someone
            else during the rollout; it stays where they put it.
        SageMakerError: bad input, endpoint missing or busy, or the registry refused the
            alias move (the endpoint then serves the new version; the message says so).
    """
    source = resolve_model(client, ref)
    desc = require_endpoint(sm, endpoint)
    status = desc["EndpointStatus"]
    if status in TRANSITIONAL:
        raise SageMakerError(f"endpoint {endpoint} is {status}; wait until it is InService")
    if status != "InService":
        raise SageMakerError(
            f"endpoint {endpoint} is {status}, so there is nothing safe to roll out over; "
            f"use `python -m serving sagemaker deploy {ref} --endpoint {endpoint}`"
        )
    live = live_variant(sm, desc)
    refuse_unguarded(live, endpoint, ref)
    config_doc = deployment_config(
        canary_percent=canary_percent, bake_minutes=bake_minutes, alarms=alarm_names(endpoint),
        termination_wait_seconds=termination_wait_seconds,
    )
    # The alias move at the end is a compare-and-set against the alias as it is now: a
    # release manager who moves it while the canary bakes wins, and this rollout says so.
    state = read_state(client, source.name, alias) if alias and synchronous else None
    instance_type = live.instance_type or target.instance_type
    instance_count = live.instance_count or target.instance_count
    extra = {"deployment_config": config_doc, "alias": alias, "alias_moved": False,
             "alias_outcome": None}
    if serves(sm, desc, source):
        # Nothing to roll out: the version already takes all the traffic.
        _logger.info("endpoint %s already serves %s; no update", endpoint, source.uri)
        if alias and synchronous:
            extra.update(_move(client, source, alias, endpoint, state, canary_percent,
                               bake_minutes, max_5xx, max_latency_ms, config_doc))
        return Deployment(endpoint, "already serving", status, desc["EndpointConfigName"],
                          live.model_name, source, extra)

    data_url = upload_archive(s3, source, bucket=target.bucket, prefix=target.archive_prefix)
    model = create_model(sm, source, endpoint=endpoint, model_data_url=data_url, target=target)
    config = None
    try:
        config = create_endpoint_config(
            sm, source, endpoint=endpoint, model_name=model,
            instance_type=instance_type, instance_count=instance_count,
            data_capture_uri=target.data_capture_uri, capture_percent=target.capture_percent,
        )
        put_guardrail_alarms(cloudwatch, endpoint, max_5xx=max_5xx,
                             max_latency_ms=max_latency_ms)
        sm.update_endpoint(
            EndpointName=endpoint, EndpointConfigName=config, DeploymentConfig=config_doc
        )
    except Exception:  # refused at once: what this rollout made serves nothing
        discard(sm, config, model)
        raise
    _logger.info(
        "rolling out %s to %s: %d%% canary, %g min bake, rollback on %s",
        source.uri, endpoint, canary_percent, bake_minutes, ", ".join(alarm_names(endpoint)),
    )
    if not synchronous:
        return Deployment(endpoint, "rolling out", "Updating", config, model, source, extra)

    if timeout_seconds is None:
        timeout_seconds = config_doc["BlueGreenUpdatePolicy"]["MaximumExecutionTimeoutInSeconds"]
        timeout_seconds += 300
    after = wait_for_endpoint(sm, endpoint, timeout_seconds=timeout_seconds)
    if after["EndpointStatus"] != "InService" or after["EndpointConfigName"] != config:
        discard(sm, config, model)
        what = "rolled back" if after["EndpointConfigName"] != config else "failed"
        reason = after.get("FailureReason") or "no reason given"
        held = alias_holder(client, source.name, alias) if alias else None
        kept = f"; alias {alias} stays on version {held}" if held else ""
        raise RolloutError(
            f"rollout of {source.name} version {source.version} to {endpoint} {what} "
            f"({after['EndpointStatus']}, serving {after['EndpointConfigName']}): {reason}{kept}"
        )
    tag_endpoint(sm, after["EndpointArn"], source.tags(endpoint))
    if alias:
        extra.update(_move(client, source, alias, endpoint, state, canary_percent,
                           bake_minutes, max_5xx, max_latency_ms, config_doc))
    return Deployment(endpoint, "rolled out", after["EndpointStatus"], config, model, source,
                      extra)


def _move(client, source, alias: str, endpoint: str, state, canary_percent: int,
          bake_minutes: float, max_5xx: int, max_latency_ms: float, config_doc: dict) -> dict:
    """Move ``alias`` to the version the endpoint now serves (THE alias move, kind rollout)."""
    why = rollout_reason(
        endpoint, canary_percent=canary_percent, bake_minutes=bake_minutes,
        max_5xx=max_5xx, max_latency_ms=max_latency_ms, deployment=config_doc,
    )
    try:
        outcome = move_alias(
            client, source.name, source.version, alias, reason=why, by=current_user(),
            kind="rollout", state=state,
        )
    except LostRace:
        holder = alias_holder(client, source.name, alias)
        raise LostRace(
            f"endpoint {endpoint} serves {source.name} version {source.version} (rolled "
            f"out), but alias {alias} was moved to {_v(holder)} during the rollout and "
            f"stays there; to make the rollout win: `python -m registry promote "
            f"{source.name}/{source.version} --to {alias} --reason ...`"
        ) from None
    except MlopsError as exc:  # e.g. 403: the registry refused; say what serves anyway
        raise SageMakerError(
            f"endpoint {endpoint} serves {source.name} version {source.version} (rolled "
            f"out), but alias {alias} did not move: {exc}"
        ) from None
    _logger.info("alias %s of %s now on version %s", alias, source.name, source.version)
    return {"alias_outcome": outcome.status, "alias_moved": outcome.status == "promoted"}


def rollout_reason(endpoint: str, *, canary_percent: int, bake_minutes: float, max_5xx: int,
                   max_latency_ms: float, deployment: dict) -> str:
    """The reason recorded with the rollout's alias move: endpoint, canary and guardrails.

    The deployment config is included whole (compact JSON) so the history tells exactly
    which update SageMaker ran before the alias moved.
    """
    return (
        f"SageMaker rollout to endpoint {endpoint}: canary {canary_percent}%, bake "
        f"{bake_minutes:g} min, rollback at {max_5xx} 5xx/min or p99 {max_latency_ms:g} ms; "
        f"deployment config {as_json(deployment)}"
    )


def _v(version: str | None) -> str:
    return f"version {version}" if version else "no version"
