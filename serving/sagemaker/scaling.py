"""Application Auto Scaling of an endpoint's variant: target tracking on invocations.

The variant name is the same across updates (:data:`~serving.sagemaker.target.VARIANT_NAME`)
and rollouts keep the instance type, so the scaling target survives deploys and rollouts.
"""

from __future__ import annotations

import logging

from serving.sagemaker.aws import SageMakerError
from serving.sagemaker.resources import require_endpoint

_logger = logging.getLogger(__name__)

NAMESPACE = "sagemaker"
SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"
PREDEFINED_METRIC = "SageMakerVariantInvocationsPerInstance"
DEFAULT_SCALE_IN_COOLDOWN = 300
DEFAULT_SCALE_OUT_COOLDOWN = 60


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


def deregister(autoscaling, sm, endpoint: str, desc: dict | None = None) -> list[str]:
    """Remove the endpoint's scaling policies and targets; return the resource ids."""
    desc = desc or require_endpoint(sm, endpoint)
    ids = [resource_id(endpoint, v["VariantName"]) for v in desc.get("ProductionVariants", [])]
    if not ids:
        return []
    found = autoscaling.describe_scalable_targets(
        ServiceNamespace=NAMESPACE, ResourceIds=ids, ScalableDimension=SCALABLE_DIMENSION
    ).get("ScalableTargets", [])
    removed = []
    for target in found:
        rid = target["ResourceId"]
        policies = autoscaling.describe_scaling_policies(
            ServiceNamespace=NAMESPACE, ResourceId=rid, ScalableDimension=SCALABLE_DIMENSION
        ).get("ScalingPolicies", [])
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
