"""Application Auto Scaling of an endpoint's variant: target tracking on invocations.

The variant name is the same across updates (:data:`~serving.sagemaker.target.VARIANT_NAME`)
and rollouts keep the instance type, so the scaling target survives deploys and rollouts.
"""

from __future__ import annotations

import logging

from serving.sagemaker.aws import SageMakerError
from serving.sagemaker.resources import backlog_alarm_name, require_endpoint

_logger = logging.getLogger(__name__)

NAMESPACE = "sagemaker"
SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"
PREDEFINED_METRIC = "SageMakerVariantInvocationsPerInstance"
DEFAULT_SCALE_IN_COOLDOWN = 300
DEFAULT_SCALE_OUT_COOLDOWN = 60
BACKLOG_METRIC = "ApproximateBacklogSizePerInstance"
NO_CAPACITY_METRIC = "HasBacklogWithoutCapacity"
DEFAULT_BACKLOG_PER_INSTANCE = 5.0


def resource_id(endpoint: str, variant: str) -> str:
    """Application Auto Scaling's id of an endpoint variant."""
    return f"endpoint/{endpoint}/variant/{variant}"


def policy_name(endpoint: str) -> str:
    """Name of the endpoint's target-tracking policy."""
    return f"{endpoint}-invocations-per-instance"


def autoscale(
    autoscaling,
    sm,
    endpoint: str,
    *,
    min_capacity: int,
    max_capacity: int,
    target_invocations: float,
    scale_in_cooldown: int = DEFAULT_SCALE_IN_COOLDOWN,
    scale_out_cooldown: int = DEFAULT_SCALE_OUT_COOLDOWN,
) -> list[dict]:
    """Register every variant of the endpoint and attach a target-tracking policy.

    Args:
        autoscaling: boto3 ``application-autoscaling`` client.
        sm: boto3 SageMaker client.
        endpoint: an existing endpoint.
        min_capacity: fewest instances per variant (at least 1).
        max_capacity: most instances per variant.
        target_invocations: invocations per instance per minute to hold.
        scale_in_cooldown: seconds between scale-in steps.
        scale_out_cooldown: seconds between scale-out steps.

    Returns:
        One entry per variant: resource id, bounds and the policy ARN.
    """
    if min_capacity < 1:
        raise SageMakerError(f"--min {min_capacity}: real-time endpoints need at least 1 instance")
    if max_capacity < min_capacity:
        raise SageMakerError(f"--max {max_capacity} is below --min {min_capacity}")
    if target_invocations <= 0:
        raise SageMakerError(f"--target-invocations {target_invocations:g}: use a positive number")
    desc = require_endpoint(sm, endpoint)
    if desc["EndpointStatus"] != "InService":
        raise SageMakerError(
            f"endpoint {endpoint} is {desc['EndpointStatus']}; autoscaling needs it InService"
        )
    if any(v.get("CurrentServerlessConfig") for v in desc.get("ProductionVariants", [])):
        raise SageMakerError(
            f"endpoint {endpoint} is serverless: it scales itself up to its max concurrency; "
            f"change that with `python -m serving sagemaker deploy NAME@ALIAS --endpoint "
            f"{endpoint} --serverless MEMORY_MB:MAX_CONCURRENCY`")
    done = []
    for variant in desc.get("ProductionVariants", []):
        rid = resource_id(endpoint, variant["VariantName"])
        autoscaling.register_scalable_target(
            ServiceNamespace=NAMESPACE,
            ResourceId=rid,
            ScalableDimension=SCALABLE_DIMENSION,
            MinCapacity=min_capacity,
            MaxCapacity=max_capacity,
        )
        policy = autoscaling.put_scaling_policy(
            PolicyName=policy_name(endpoint),
            ServiceNamespace=NAMESPACE,
            ResourceId=rid,
            ScalableDimension=SCALABLE_DIMENSION,
            PolicyType="TargetTrackingScaling",
            TargetTrackingScalingPolicyConfiguration={
                "TargetValue": float(target_invocations),
                "PredefinedMetricSpecification": {"PredefinedMetricType": PREDEFINED_METRIC},
                "ScaleInCooldown": scale_in_cooldown,
                "ScaleOutCooldown": scale_out_cooldown,
            },
        )
        _logger.info("scaling %s between %d and %d", rid, min_capacity, max_capacity)
        done.append({"resource_id": rid, "min": min_capacity, "max": max_capacity,
                     "policy_arn": policy.get("PolicyARN", "")})
    return done


def snapshot(autoscaling, endpoint: str, desc: dict) -> list[dict]:
    """The endpoint's scalable targets with their policies, as :func:`restore` re-creates them."""
    return [{"target": target, "policies": policies}
            for target, policies in _targets(autoscaling, endpoint, desc)]


def _targets(autoscaling, endpoint: str, desc: dict) -> list[tuple[dict, list[dict]]]:
    """Each scalable target of the endpoint's variants, with its scaling policies."""
    ids = [resource_id(endpoint, v["VariantName"]) for v in desc.get("ProductionVariants", [])]
    if not ids:
        return []
    found = autoscaling.describe_scalable_targets(
        ServiceNamespace=NAMESPACE, ResourceIds=ids, ScalableDimension=SCALABLE_DIMENSION
    ).get("ScalableTargets", [])
    return [(target, autoscaling.describe_scaling_policies(
        ServiceNamespace=NAMESPACE, ResourceId=target["ResourceId"],
        ScalableDimension=SCALABLE_DIMENSION).get("ScalingPolicies", [])) for target in found]


def restore(autoscaling, saved: list[dict]) -> list[str]:
    """Register the targets and put the policies :func:`snapshot` saved; return the ids."""
    keys = ("PolicyName", "PolicyType", "TargetTrackingScalingPolicyConfiguration",
            "StepScalingPolicyConfiguration")
    for item in saved:
        target = item["target"]
        autoscaling.register_scalable_target(
            ServiceNamespace=NAMESPACE, ResourceId=target["ResourceId"],
            ScalableDimension=SCALABLE_DIMENSION, MinCapacity=target["MinCapacity"],
            MaxCapacity=target["MaxCapacity"])
        for policy in item["policies"]:
            autoscaling.put_scaling_policy(
                ServiceNamespace=NAMESPACE, ResourceId=target["ResourceId"],
                ScalableDimension=SCALABLE_DIMENSION, **{k: policy[k] for k in keys if k in policy})
    return [item["target"]["ResourceId"] for item in saved]


def deregister(autoscaling, sm, endpoint: str, desc: dict | None = None) -> list[str]:
    """Remove the endpoint's scaling policies and targets; return the resource ids."""
    desc = desc or require_endpoint(sm, endpoint)
    removed = []
    for target, policies in _targets(autoscaling, endpoint, desc):
        rid = target["ResourceId"]
        for policy in policies:
            autoscaling.delete_scaling_policy(
                PolicyName=policy["PolicyName"], ServiceNamespace=NAMESPACE,
                ResourceId=rid, ScalableDimension=SCALABLE_DIMENSION,
            )
        autoscaling.deregister_scalable_target(
            ServiceNamespace=NAMESPACE, ResourceId=rid, ScalableDimension=SCALABLE_DIMENSION
        )
        removed.append(rid)
    return removed


def scale_to_zero(autoscaling, cloudwatch, endpoint: str, *, max_capacity: int,
                  backlog_per_instance: float = DEFAULT_BACKLOG_PER_INSTANCE,
                  variant: str = "AllTraffic") -> dict:
    """Scale an asynchronous endpoint between zero and ``max_capacity`` instances on its queue.

    AWS's pattern for asynchronous inference: a target-tracking policy holds
    ``ApproximateBacklogSizePerInstance`` at ``backlog_per_instance`` (and scales in to zero
    when the queue is empty); target tracking cannot scale out from zero, so a step policy
    adds one instance when the alarm ``ENDPOINT-async-backlog`` sees
    ``HasBacklogWithoutCapacity`` (requests waiting, no instance).

    Returns:
        The resource id, bounds, both policies' names and the alarm's name.
    """
    if max_capacity < 1:
        raise SageMakerError(f"--max-instances {max_capacity}: use at least 1")
    rid = resource_id(endpoint, variant)
    dimensions = [{"Name": "EndpointName", "Value": endpoint}]
    autoscaling.register_scalable_target(
        ServiceNamespace=NAMESPACE, ResourceId=rid, ScalableDimension=SCALABLE_DIMENSION,
        MinCapacity=0, MaxCapacity=max_capacity,
    )
    tracking = f"{endpoint}-async-backlog-per-instance"
    autoscaling.put_scaling_policy(
        PolicyName=tracking, ServiceNamespace=NAMESPACE, ResourceId=rid,
        ScalableDimension=SCALABLE_DIMENSION, PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": float(backlog_per_instance),
            "CustomizedMetricSpecification": {
                "MetricName": BACKLOG_METRIC, "Namespace": "AWS/SageMaker",
                "Dimensions": dimensions, "Statistic": "Average"},
            "ScaleInCooldown": DEFAULT_SCALE_IN_COOLDOWN,
            "ScaleOutCooldown": DEFAULT_SCALE_OUT_COOLDOWN,
        },
    )
    step = f"{endpoint}-async-scale-from-zero"
    policy = autoscaling.put_scaling_policy(
        PolicyName=step, ServiceNamespace=NAMESPACE, ResourceId=rid,
        ScalableDimension=SCALABLE_DIMENSION, PolicyType="StepScaling",
        StepScalingPolicyConfiguration={
            "AdjustmentType": "ChangeInCapacity", "MetricAggregationType": "Average",
            "Cooldown": DEFAULT_SCALE_OUT_COOLDOWN,
            "StepAdjustments": [{"MetricIntervalLowerBound": 0.0, "ScalingAdjustment": 1}],
        },
    )
    alarm = backlog_alarm_name(endpoint)
    cloudwatch.put_metric_alarm(
        AlarmName=alarm, AlarmDescription=f"requests wait on {endpoint} with no instance: "
                                          "add one (scale up from zero)",
        Namespace="AWS/SageMaker", MetricName=NO_CAPACITY_METRIC, Dimensions=dimensions,
        Statistic="Average", Period=60, EvaluationPeriods=2, Threshold=1.0,
        ComparisonOperator="GreaterThanOrEqualToThreshold", TreatMissingData="missing",
        AlarmActions=[policy["PolicyARN"]],
    )
    _logger.info("scaling %s between 0 and %d on its backlog", rid, max_capacity)
    return {"resource_id": rid, "min": 0, "max": max_capacity,
            "policies": [tracking, step], "alarm": alarm}
