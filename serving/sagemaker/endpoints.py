"""Real-time endpoints: deploy a version, wait, describe, invoke, delete.

``deploy`` creates the endpoint or, when it exists, updates it to a new endpoint config
(SageMaker's default blue/green, all at once). For a guarded update with canary traffic and
automatic rollback use :func:`serving.sagemaker.rollout.rollout`.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from serving.sagemaker.aws import SageMakerError, client_error_code, client_error_message
from serving.sagemaker.package import (
    ModelSource,
    create_endpoint_config,
    create_model,
    resolve_model,
    upload_archive,
)
from serving.sagemaker.preflight import require_serverless
from serving.sagemaker.resources import (
    TRANSITIONAL,
    describe_endpoint,
    endpoint_tags,
    owned_alarm_names,
    require_endpoint,
)
from serving.sagemaker.scaling import deregister, restore, snapshot
from serving.sagemaker.target import (
    DEFAULT_TIMEOUT_SECONDS,
    POLL_MAX_SECONDS,
    POLL_MIN_SECONDS,
    TAG_ENDPOINT,
    TAG_MODEL_NAME,
    TAG_MODEL_VERSION,
    TAG_RUN_ID,
    AsyncOutput,
    Serverless,
    Target,
    check_name,
)

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Deployment:
    """What a deploy or rollout left behind."""

    endpoint: str
    action: str
    status: str
    endpoint_config: str
    model: str
    source: ModelSource
    extra: dict = field(default_factory=dict)


def wait_for_endpoint(
    sm,
    endpoint: str,
    *,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict:
    """Poll until the endpoint leaves its transitional states; return the last description.

    Polls back off from :data:`POLL_MIN_SECONDS` to :data:`POLL_MAX_SECONDS`.

    Raises:
        SageMakerError: still transitional after ``timeout_seconds``, or the endpoint vanished.
    """
    deadline = clock() + timeout_seconds
    delay = POLL_MIN_SECONDS
    while True:
        desc = describe_endpoint(sm, endpoint)
        if desc is None:
            raise SageMakerError(f"endpoint {endpoint} disappeared while waiting for it")
        status = desc["EndpointStatus"]
        if status not in TRANSITIONAL:
            return desc
        if clock() >= deadline:
            raise SageMakerError(
                f"endpoint {endpoint} still {status} after {timeout_seconds:.0f}s; follow it "
                f"with `python -m serving sagemaker status --endpoint {endpoint}`"
            )
        _logger.info("endpoint %s is %s; waiting", endpoint, status)
        sleep(min(delay, max(deadline - clock(), 0.0)))
        delay = min(delay * 2, POLL_MAX_SECONDS)


def tag_endpoint(sm, endpoint_arn: str, tags: list[dict[str, str]]) -> None:
    """Set tags on the endpoint, replacing the values of keys already there."""
    sm.add_tags(ResourceArn=endpoint_arn, Tags=tags)


@dataclass(frozen=True)
class Hosting:
    """How an endpoint runs its model: instances (real-time or asynchronous) or serverless."""

    instance_type: str | None = None
    instance_count: int | None = None
    serverless: Serverless | None = None
    async_output: AsyncOutput | None = None

    @property
    def kind(self) -> str:
        """``serverless``, ``async`` or ``real-time``."""
        if self.serverless is not None:
            return "serverless"
        return "async" if self.async_output is not None else "real-time"

    def __str__(self) -> str:
        if self.serverless is not None:
            return str(self.serverless)
        where = f"{self.instance_count} x {self.instance_type}"
        return f"{where}, {self.async_output}" if self.async_output else where


def choose_hosting(live: LiveVariant | None, target: Target, *, instance_type: str | None = None,
                   instance_count: int | None = None, serverless: Serverless | None = None,
                   async_output: AsyncOutput | None = None) -> Hosting:
    """What a deploy asks for: flags change an endpoint's hosting, settings pick a new one's.

    ``serverless`` (a flag) makes it serverless; ``instance_type``/``instance_count`` or
    ``async_output`` (flags) put it on instances. Without such flags an existing endpoint keeps
    its hosting (serverless, asynchronous, or its live instance type and current count), and a
    new endpoint is serverless when the settings say so, else on the target's instances.
    """
    if serverless is not None and async_output is not None:
        raise SageMakerError("an endpoint is serverless or asynchronous, not both; drop "
                             "--serverless or --async")
    if serverless is not None:
        return Hosting(serverless=serverless)
    instances_asked = bool(instance_type or instance_count or async_output)
    if live is None:
        if target.serverless is not None and not instances_asked:
            return Hosting(serverless=target.serverless)
        return Hosting(instance_type or target.instance_type,
                       instance_count or target.instance_count, async_output=async_output)
    if live.serverless is not None and not instances_asked:
        return Hosting(serverless=live.serverless)
    return Hosting(instance_type or live.instance_type or target.instance_type,
                   instance_count or live.instance_count or target.instance_count,
                   async_output=async_output or live.async_output)


def deploy(
    sm,
    s3,
    client,
    *,
    ref: str,
    endpoint: str,
    target: Target,
    synchronous: bool = True,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    instance_type: str | None = None,
    instance_count: int | None = None,
    serverless: Serverless | None = None,
    async_output: AsyncOutput | None = None,
    autoscaling=None,
) -> Deployment:
    """Create the endpoint serving ``ref``, or update it to ``ref`` when it exists.

    Steps: model archive to S3 (once per model), SageMaker model, endpoint config, then
    ``CreateEndpoint`` or ``UpdateEndpoint``; the endpoint is tagged with the model name,
    version and run id once the version serves (at once when not ``synchronous``).

    The hosting is :func:`choose_hosting`'s: an update keeps the live variant's instance type
    and current count (autoscaling may have changed it), or its serverless or asynchronous
    config, unless flags ask for others. An endpoint that already serves the version with the
    same settings is left alone (action ``already serving``). An update that does not take
    removes the model and endpoint config it made: only the serving ones stay.

    Switching between serverless and instances is a replacement (action ``replaced``):
    SageMaker's blue/green update, all at once, so the old fleet keeps answering until the
    new one is InService. Instance autoscaling, which a serverless endpoint cannot have, is
    removed first (``autoscaling`` client given) and put back when the switch does not take.

    Args:
        sm: boto3 SageMaker client.
        s3: boto3 S3 client.
        client: ``mlflow.MlflowClient`` of the registry.
        ref: ``NAME@ALIAS`` or ``NAME/VERSION``.
        endpoint: endpoint name.
        target: region, role, bucket, image and default instances.
        synchronous: wait until the endpoint serves the version (or fails).
        timeout_seconds: how long to wait when ``synchronous``.
        instance_type: instance type asked for explicitly (a flag), or None.
        instance_count: instance count asked for explicitly (a flag), or None.
        serverless: serverless memory and concurrency asked for (a flag), or None.
        async_output: asynchronous endpoint's S3 locations asked for (a flag), or None.
        autoscaling: boto3 ``application-autoscaling`` client (a switch to serverless removes
            the instance scaling).

    Raises:
        SageMakerError: bad reference, endpoint busy, a serverless limit crossed, or the
            endpoint did not take the version.
    """
    check_name(endpoint)
    source = resolve_model(client, ref)
    existing = describe_endpoint(sm, endpoint)
    if existing is not None and existing["EndpointStatus"] in TRANSITIONAL:
        raise SageMakerError(
            f"endpoint {endpoint} is {existing['EndpointStatus']}; wait until it is InService"
        )
    if existing is not None and existing["EndpointStatus"] == "Failed":
        raise SageMakerError(
            f"endpoint {endpoint} is Failed ({existing.get('FailureReason') or 'no reason'}); "
            f"SageMaker cannot update it: `python -m serving sagemaker delete --endpoint "
            f"{endpoint}` first"
        )
    live = live_variant(sm, existing) if existing is not None else None
    hosting = choose_hosting(live, target, instance_type=instance_type,
                             instance_count=instance_count, serverless=serverless,
                             async_output=async_output)
    if hosting.serverless is not None:
        require_serverless(hosting.serverless, data_capture_uri=target.data_capture_uri,
                           variants=len(existing.get("ProductionVariants", [])) if existing
                           else 1)
    switching = live is not None and (live.serverless is None) != (hosting.serverless is None)
    if live is not None and not switching and serves(sm, existing, source) and (
        hosting == live.hosting
    ) and (target.data_capture_uri or None) == live.data_capture_uri:
        _logger.info("endpoint %s already serves %s; nothing changed", endpoint, source.uri)
        return Deployment(endpoint, "already serving", existing["EndpointStatus"],
                          existing["EndpointConfigName"], live.model_name, source,
                          {"hosting": hosting})
    data_url = upload_archive(s3, source, bucket=target.bucket, prefix=target.archive_prefix)
    model = create_model(sm, source, endpoint=endpoint, model_data_url=data_url, target=target)
    try:
        config = create_endpoint_config(
            sm, source, endpoint=endpoint, model_name=model,
            instance_type=hosting.instance_type, instance_count=hosting.instance_count,
            data_capture_uri=target.data_capture_uri, capture_percent=target.capture_percent,
            serverless=hosting.serverless, async_output=hosting.async_output,
        )
    except Exception:
        discard(sm, None, model)
        raise
    tags = source.tags(endpoint)
    extra: dict = {"hosting": hosting, "scaling_removed": []}
    saved_scaling: list[dict] = []
    try:
        if existing is None:
            arn = sm.create_endpoint(EndpointName=endpoint, EndpointConfigName=config,
                                     Tags=tags)["EndpointArn"]
            action = "created"
        else:
            arn = existing["EndpointArn"]
            if switching and hosting.serverless is not None and autoscaling is not None:
                saved_scaling = snapshot(autoscaling, endpoint, existing)
                extra["scaling_removed"] = deregister(autoscaling, sm, endpoint, desc=existing)
            sm.update_endpoint(EndpointName=endpoint, EndpointConfigName=config)
            action = "replaced" if switching else "updated"
    except Exception:  # refused at once (throttled, a limit): nothing serves what was made
        discard(sm, config, model)
        if saved_scaling:
            restore(autoscaling, saved_scaling)
        raise
    if switching:
        extra["replaced"] = live.hosting
    _logger.info("%s endpoint %s with %s (config %s)", action, endpoint, source.uri, config)
    if not synchronous:
        tag_endpoint(sm, arn, tags)
        return Deployment(endpoint, action, "Creating" if existing is None else "Updating",
                          config, model, source, extra)
    desc = wait_for_endpoint(sm, endpoint, timeout_seconds=timeout_seconds)
    if desc["EndpointStatus"] != "InService" or desc["EndpointConfigName"] != config:
        reason = desc.get("FailureReason") or "no reason given"
        restored = ""
        if existing is not None and desc["EndpointConfigName"] != config:
            # the old config serves on: what this update made serves nothing
            discard(sm, config, model)
            if saved_scaling:
                restored = "; its instance autoscaling is back: " + ", ".join(
                    restore(autoscaling, saved_scaling))
        raise SageMakerError(
            f"endpoint {endpoint} did not take {source.name} version {source.version} "
            f"({desc['EndpointStatus']}, serving config {desc['EndpointConfigName']}): "
            f"{reason}{restored}"
        )
    tag_endpoint(sm, arn, tags)
    return Deployment(endpoint, action, desc["EndpointStatus"], config, model, source, extra)


@dataclass(frozen=True)
class LiveVariant:
    """What the endpoint's variant runs now: its model, hosting and data capture."""

    model_name: str
    instance_type: str | None
    instance_count: int | None
    data_capture_uri: str | None
    serverless: Serverless | None = None
    async_output: AsyncOutput | None = None

    @property
    def hosting(self) -> Hosting:
        """The live hosting, comparable with :func:`choose_hosting`'s."""
        if self.serverless is not None:
            return Hosting(serverless=self.serverless)
        return Hosting(self.instance_type, self.instance_count, async_output=self.async_output)


def live_variant(sm, desc: dict) -> LiveVariant:
    """The serving variant of a described endpoint: current count (autoscaling's), type, model."""
    serving = sm.describe_endpoint_config(EndpointConfigName=desc["EndpointConfigName"])
    variant = serving["ProductionVariants"][0]
    live = {v["VariantName"]: v for v in desc.get("ProductionVariants", [])}
    current = live.get(variant["VariantName"], {})
    capture = serving.get("DataCaptureConfig") or {}
    serverless = variant.get("ServerlessConfig")
    count = current.get("CurrentInstanceCount")
    return LiveVariant(
        model_name=variant.get("ModelName", ""),
        instance_type=variant.get("InstanceType"),
        instance_count=count if count else variant.get("InitialInstanceCount"),
        data_capture_uri=capture.get("DestinationS3Uri") if capture.get("EnableCapture") else None,
        serverless=Serverless(int(serverless["MemorySizeInMB"]),
                              int(serverless["MaxConcurrency"])) if serverless else None,
        async_output=AsyncOutput.from_config(serving.get("AsyncInferenceConfig")),
    )


def serves(sm, desc: dict, source: ModelSource) -> bool:
    """Whether the InService endpoint serves exactly ``source`` (its tags name it)."""
    if desc.get("EndpointStatus") != "InService":
        return False
    tags = endpoint_tags(sm, desc["EndpointArn"])
    return (tags.get(TAG_MODEL_NAME), tags.get(TAG_MODEL_VERSION)) == (
        source.name, source.version
    ) and tags.get(TAG_RUN_ID, "") == (source.run_id or "")


def discard(sm, config: str | None, model: str | None) -> None:
    """Remove the config and model of an update that did not take (they serve nothing)."""
    for call, kwargs in (
        (sm.delete_endpoint_config, {"EndpointConfigName": config}),
        (sm.delete_model, {"ModelName": model}),
    ):
        if not next(iter(kwargs.values())):
            continue
        try:
            call(**kwargs)
        except Exception:  # noqa: BLE001 - cleanup is best effort; the outcome is reported
            _logger.warning("could not delete %s after the failed update", kwargs)


def hosting_json(hosting: Hosting) -> dict:
    """``{"kind", "serverless", "async"}``: the hosting as ``status --output json`` shows it."""
    serverless = hosting.serverless
    out = hosting.async_output
    return {
        "kind": hosting.kind,
        "serverless": {"memory_mb": serverless.memory_mb,
                       "max_concurrency": serverless.max_concurrency} if serverless else None,
        "async": {"output": out.output_path, "failure": out.failure_path,
                  "success_topic": out.success_topic, "error_topic": out.error_topic}
        if out else None,
    }


def endpoint_status(sm, endpoint: str, cloudwatch=None) -> dict:
    """What serves on the endpoint: status, model version, variants, deployment, alarms, hosting.

    The hosting is :func:`hosting_json`'s.

    Args:
        sm: boto3 SageMaker client.
        endpoint: endpoint name.
        cloudwatch: boto3 CloudWatch client; when given, guardrail alarm states are included.
    """
    desc = require_endpoint(sm, endpoint)
    tags = endpoint_tags(sm, desc["EndpointArn"])
    status = {
        "endpoint": endpoint,
        "status": desc["EndpointStatus"],
        "endpoint_config": desc["EndpointConfigName"],
        "model_name": tags.get(TAG_MODEL_NAME, ""),
        "model_version": tags.get(TAG_MODEL_VERSION, ""),
        "run_id": tags.get(TAG_RUN_ID, ""),
        "failure_reason": desc.get("FailureReason", ""),
        "variants": [
            {
                "name": v.get("VariantName"),
                "instances": v.get("CurrentInstanceCount"),
                "weight": v.get("CurrentWeight"),
            }
            for v in desc.get("ProductionVariants", [])
        ],
        "last_deployment": desc.get("LastDeploymentConfig") or {},
        "alarms": {},
        "hosting": hosting_json(live_variant(sm, desc).hosting),
    }
    if cloudwatch is not None:
        names = owned_alarm_names(endpoint)
        found = cloudwatch.describe_alarms(AlarmNames=names).get("MetricAlarms", [])
        status["alarms"] = {a["AlarmName"]: a["StateValue"] for a in found}
    return status


@dataclass(frozen=True)
class Invocation:
    """An endpoint's answer."""

    body: bytes
    content_type: str
    variant: str

    def json(self):
        """The body parsed as JSON."""
        return json.loads(self.body)


def _snake(name: str) -> str:
    """``TrafficRoutingConfiguration`` -> ``traffic_routing_configuration``."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def _snake_keys(value):
    if isinstance(value, dict):
        return {_snake(str(k)): _snake_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_snake_keys(v) for v in value]
    return value


def status_json(info: dict) -> dict:
    """``status --output json``: the endpoint as scripts read it.

    Keys: ``endpoint``, ``status`` (SageMaker's ``EndpointStatus``), ``endpoint_config``,
    ``model_name``, ``model_version`` (a string), ``run_id`` (null when the endpoint was not
    deployed by this project), ``failure_reason`` (null when none), ``variants``
    (``[{"name", "instances", "weight"}]``), ``last_deployment`` (SageMaker's
    ``LastDeploymentConfig`` with snake_case keys, ``{}`` when none) and ``alarms``
    (``{alarm name: state}``), ``hosting`` (``{"kind": "real-time" | "serverless" |
    "async", "serverless": {"memory_mb", "max_concurrency"} | null, "async": {"output",
    "failure", "success_topic", "error_topic"} | null}``).
    """
    return {
        "endpoint": info["endpoint"],
        "status": info["status"],
        "endpoint_config": info["endpoint_config"],
        "model_name": info["model_name"] or None,
        "model_version": str(info["model_version"]) if info["model_version"] else None,
        "run_id": info["run_id"] or None,
        "failure_reason": info["failure_reason"] or None,
        "variants": [{"name": v["name"], "instances": v["instances"], "weight": v["weight"]}
                     for v in info["variants"]],
        "last_deployment": _snake_keys(info["last_deployment"]),
        "alarms": dict(info["alarms"]),
        "hosting": info.get("hosting"),
    }


def invoke(runtime, endpoint: str, body: bytes | str, content_type: str = "application/json",
           accept: str = "application/json") -> Invocation:
    """``InvokeEndpoint``: send ``body`` in the MLflow scoring protocol, return the answer.

    Raises:
        SageMakerError: the endpoint is missing, or the model refused the input (``ModelError``).
    """
    try:
        resp = runtime.invoke_endpoint(
            EndpointName=endpoint, Body=body, ContentType=content_type, Accept=accept
        )
    except Exception as exc:  # botocore ClientError: report AWS's own message on one line
        if client_error_code(exc):
            raise SageMakerError(
                f"endpoint {endpoint}: {client_error_code(exc)}: {client_error_message(exc)}"
            ) from None
        raise
    return Invocation(
        body=resp["Body"].read(),
        content_type=resp.get("ContentType", ""),
        variant=resp.get("InvokedProductionVariant", ""),
    )


def predict_frame(runtime, endpoint: str, frame) -> list:
    """Score a pandas DataFrame on the endpoint (``dataframe_split``); return the predictions."""
    payload = {"dataframe_split": json.loads(frame.to_json(orient="split", index=False))}
    answer = invoke(runtime, endpoint, json.dumps(payload))
    parsed = answer.json()
    return parsed["predictions"] if isinstance(parsed, dict) and "predictions" in parsed else parsed


def delete(
    sm,
    endpoint: str,
    *,
    cloudwatch=None,
    autoscaling=None,
    synchronous: bool = True,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, list[str]]:
    """Delete the endpoint, the endpoint configs and models made for it, its alarms and scaling.

    Model archives in S3 stay: they belong to model versions and other endpoints may use them.

    Returns:
        The names deleted, by kind.
    """
    desc = require_endpoint(sm, endpoint)
    deleted: dict[str, list[str]] = {"endpoint": [], "configs": [], "models": [], "alarms": [],
                                     "scaling": []}
    if autoscaling is not None:
        deleted["scaling"] = deregister(autoscaling, sm, endpoint, desc=desc)
    configs = _own_configs(sm, endpoint) | {desc["EndpointConfigName"]}
    sm.delete_endpoint(EndpointName=endpoint)
    deleted["endpoint"].append(endpoint)
    if synchronous:
        deadline = time.monotonic() + timeout_seconds
        while describe_endpoint(sm, endpoint) is not None:
            if time.monotonic() > deadline:
                raise SageMakerError(f"endpoint {endpoint} still deleting after {timeout_seconds}s")
            sleep(POLL_MIN_SECONDS)
    models: set[str] = set()
    for config in sorted(configs):
        try:
            info = sm.describe_endpoint_config(EndpointConfigName=config)
        except Exception as exc:  # botocore ClientError: already gone
            if client_error_code(exc) == "ValidationException":
                continue
            raise
        models.update(v["ModelName"] for v in info["ProductionVariants"])
        sm.delete_endpoint_config(EndpointConfigName=config)
        deleted["configs"].append(config)
    for model in sorted(models):
        try:
            sm.delete_model(ModelName=model)
            deleted["models"].append(model)
        except Exception as exc:  # botocore ClientError: shared or already gone
            if client_error_code(exc) != "ValidationException":
                raise
    if cloudwatch is not None:
        names = owned_alarm_names(endpoint)
        existing = cloudwatch.describe_alarms(AlarmNames=names).get("MetricAlarms", [])
        if existing:
            cloudwatch.delete_alarms(AlarmNames=[a["AlarmName"] for a in existing])
            deleted["alarms"] = [a["AlarmName"] for a in existing]
    return deleted


def _own_configs(sm, endpoint: str) -> set[str]:
    """Endpoint configs this tool made for ``endpoint`` (name prefix and endpoint tag)."""
    names: set[str] = set()
    # resource_name keeps at least the first 30 characters of the endpoint name
    stem = endpoint[:30]
    kwargs: dict = {"NameContains": stem, "MaxResults": 100}
    while True:
        page = sm.list_endpoint_configs(**kwargs)
        for item in page.get("EndpointConfigs", []):
            if not item["EndpointConfigName"].startswith(stem):
                continue
            tags = endpoint_tags(sm, item["EndpointConfigArn"])
            if tags.get(TAG_ENDPOINT) == endpoint:
                names.add(item["EndpointConfigName"])
        if not page.get("NextToken"):
            return names
        kwargs["NextToken"] = page["NextToken"]
