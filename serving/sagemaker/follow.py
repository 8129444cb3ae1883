"""Keep an endpoint on the version an alias names: guarded rollout, and revert on rollback.

``python -m serving sagemaker follow NAME@ALIAS --endpoint E`` closes the loop between the
registry and SageMaker. When the alias moves (a release manager's promotion), the follower
runs the guarded rollout of :mod:`serving.sagemaker.rollout` (blue/green canary, the
guardrail alarms, SageMaker's automatic rollback). When SageMaker rolls the update back, the
registry must not keep naming the version that failed: the follower moves the alias back to
the version that serves, through THE alias move (kind ``revert``, the alarm's name as the
reason), compared against the version that failed, so a newer promotion made meanwhile wins.

State lives where it survives a crash: the endpoint's tags say which version serves
(``mlops.model_version``) and which rollout is under way (``mlops.follow.*``: version,
previous version, endpoint config, model); the registry says where the alias points. A
restarted follower reads both and finishes what the last one started. SageMaker cannot stop a
blue/green update half way, so a rollout in progress when the alias moves again is finished
(succeeds or rolls back, never left half done) and then the newer version is rolled out.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from core.aliases import current_user, move_alias, read_state
from core.errors import LostRace, MlopsError
from core.models import alias_holder
from serving.sagemaker import metrics as _metrics
from serving.sagemaker.aws import SageMakerError
from serving.sagemaker.endpoints import discard, tag_endpoint, wait_for_endpoint
from serving.sagemaker.package import resolve_model
from serving.sagemaker.resources import alarm_names, endpoint_tags, require_endpoint
from serving.sagemaker.rollout import (
    DEFAULT_BAKE_MINUTES,
    DEFAULT_CANARY_PERCENT,
    DEFAULT_MAX_5XX,
    DEFAULT_MAX_LATENCY_MS,
    DEFAULT_TERMINATION_WAIT_SECONDS,
    RolloutError,
    deployment_config,
    rollout,
)
from serving.sagemaker.target import (
    TAG_FOLLOW_CONFIG,
    TAG_FOLLOW_FAILED,
    TAG_FOLLOW_MODEL,
    TAG_FOLLOW_PREVIOUS,
    TAG_FOLLOW_VERSION,
    TAG_MODEL_NAME,
    TAG_MODEL_VERSION,
    Target,
)

_logger = logging.getLogger(__name__)

DEFAULT_POLL_SECONDS = 30.0


@dataclass(frozen=True)
class RolloutSettings:
    """The guardrails of every rollout the follower runs (those of ``sagemaker rollout``)."""

    canary_percent: int = DEFAULT_CANARY_PERCENT
    bake_minutes: float = DEFAULT_BAKE_MINUTES
    max_5xx: int = DEFAULT_MAX_5XX
    max_latency_ms: float = DEFAULT_MAX_LATENCY_MS
    termination_wait_seconds: int = DEFAULT_TERMINATION_WAIT_SECONDS
    timeout_seconds: float | None = None

    def check(self) -> None:
        """Refuse settings SageMaker would refuse, before anything runs."""
        deployment_config(canary_percent=self.canary_percent, bake_minutes=self.bake_minutes,
                          alarms=[], termination_wait_seconds=self.termination_wait_seconds)

    def wait_seconds(self) -> float:
        """How long to wait for one rollout: the update's own maximum plus 5 minutes."""
        if self.timeout_seconds:
            return self.timeout_seconds
        doc = deployment_config(canary_percent=self.canary_percent,
                                bake_minutes=self.bake_minutes, alarms=[],
                                termination_wait_seconds=self.termination_wait_seconds)
        return doc["BlueGreenUpdatePolicy"]["MaximumExecutionTimeoutInSeconds"] + 300


@dataclass(frozen=True)
class Step:
    """What one pass did: ``idle``, ``rolled out``, ``reverted``, ``rolled back``, ``waiting``.

    ``detail`` is the line a user reads.
    """

    action: str
    detail: str
    version: str | None = None


@dataclass
class Follower:
    """Keeps ``endpoint`` on the version ``name@alias`` names (see the module docstring).

    Args:
        sm, s3, cloudwatch: boto3 clients.
        client: ``mlflow.MlflowClient`` of the registry.
        name, alias: what to follow.
        endpoint: an existing endpoint (``deploy`` creates it).
        target: role, bucket, image of the models the rollouts create.
        settings: the rollouts' guardrails.
    """

    sm: object
    s3: object
    cloudwatch: object
    client: object
    name: str
    alias: str
    endpoint: str
    target: Target
    settings: RolloutSettings = field(default_factory=RolloutSettings)
    wake: threading.Event = field(default_factory=threading.Event)
    stopping: threading.Event = field(default_factory=threading.Event)

    # ------------------------------------------------------------------ one pass
    def step(self) -> Step:
        """Finish a rollout under way, else start one if the alias names another version.

        Blocks while a rollout runs (until SageMaker settles it).
        """
        desc = require_endpoint(self.sm, self.endpoint)
        tags = endpoint_tags(self.sm, desc["EndpointArn"])
        if tags.get(TAG_FOLLOW_VERSION):
            return self._finish(desc["EndpointArn"], tags)
        serving = tags.get(TAG_MODEL_VERSION) if tags.get(TAG_MODEL_NAME) == self.name else None
        wanted = alias_holder(self.client, self.name, self.alias)
        _metrics.follow_alias_seen(self.name, self.alias, wanted)
        if wanted is None:
            return Step("idle", f"{self.name}@{self.alias} names no version; endpoint "
                                f"{self.endpoint} keeps version {serving or '?'}", serving)
        if wanted == serving:
            return Step("idle", f"endpoint {self.endpoint} serves {self.name}@{self.alias} "
                                f"(version {wanted})", wanted)
        if wanted == tags.get(TAG_FOLLOW_FAILED):
            return Step("waiting", f"version {wanted} was rolled back on {self.endpoint}; "
                                   f"waiting for {self.alias} to move", serving)
        return self._start(desc["EndpointArn"], wanted, serving)

    def _start(self, arn: str, version: str, serving: str | None) -> Step:
        s = self.settings
        started = rollout(
            self.sm, self.s3, self.cloudwatch, self.client, ref=f"{self.name}/{version}",
            endpoint=self.endpoint, target=self.target, canary_percent=s.canary_percent,
            bake_minutes=s.bake_minutes, alias=None, max_5xx=s.max_5xx,
            max_latency_ms=s.max_latency_ms, termination_wait_seconds=s.termination_wait_seconds,
            synchronous=False,
        )
        if started.action == "already serving":  # tags were stale: record what serves
            tag_endpoint(self.sm, arn, started.source.tags(self.endpoint))
            return Step("idle", f"endpoint {self.endpoint} already serves version {version}",
                        version)
        # Recorded on the endpoint before waiting: a restarted follower finishes it.
        tag_endpoint(self.sm, arn, _tags({
            TAG_FOLLOW_VERSION: version, TAG_FOLLOW_PREVIOUS: serving or "",
            TAG_FOLLOW_CONFIG: started.endpoint_config, TAG_FOLLOW_MODEL: started.model,
        }))
        _metrics.follow_rollout("started")
        _logger.info("rolling out %s version %s to %s (%d%% canary, %g min bake)", self.name,
                     version, self.endpoint, s.canary_percent, s.bake_minutes)
        return self._finish(arn, endpoint_tags(self.sm, arn))

    def _finish(self, arn: str, tags: dict[str, str]) -> Step:
        version = tags[TAG_FOLLOW_VERSION]
        previous = tags.get(TAG_FOLLOW_PREVIOUS) or None
        config = tags.get(TAG_FOLLOW_CONFIG, "")
        after = wait_for_endpoint(self.sm, self.endpoint,
                                  timeout_seconds=self.settings.wait_seconds())
        clear = {TAG_FOLLOW_VERSION: "", TAG_FOLLOW_PREVIOUS: "", TAG_FOLLOW_CONFIG: "",
                 TAG_FOLLOW_MODEL: ""}
        if after["EndpointStatus"] == "InService" and after["EndpointConfigName"] == config:
            source = resolve_model(self.client, f"{self.name}/{version}")
            tag_endpoint(self.sm, arn, source.tags(self.endpoint) + _tags(
                {**clear, TAG_FOLLOW_FAILED: ""}))
            holder = alias_holder(self.client, self.name, self.alias)
            moved = "" if holder == version else (
                f"; {self.alias} moved to version {holder} meanwhile: that rollout comes next")
            _metrics.follow_rollout("succeeded")
            return Step("rolled out", f"endpoint {self.endpoint} rolled out {self.name} "
                                      f"version {version}{moved}", version)
        # Rolled back or failed: what the rollout made serves nothing; the old fleet serves.
        discard(self.sm, config, tags.get(TAG_FOLLOW_MODEL))
        why = self._why(after)
        reverted = self._revert(version, previous, why)
        # Only while the alias still names the version that failed is it kept from a retry;
        # a later promotion of it (after a revert) is a new decision and rolls out again.
        still = alias_holder(self.client, self.name, self.alias) == version
        tag_endpoint(self.sm, arn, _tags({**clear, TAG_FOLLOW_FAILED: version if still else ""}))
        _metrics.follow_rollout("reverted" if reverted else "rolled_back")
        return Step("reverted" if reverted else "rolled back",
                    f"rollout of {self.name} version {version} to {self.endpoint} rolled back "
                    f"({why}); {reverted or f'alias {self.alias} left as it is'}", previous)

    def _why(self, after: dict) -> str:
        """The alarm(s) that rolled the update back, else SageMaker's failure reason."""
        names = alarm_names(self.endpoint)
        try:
            found = self.cloudwatch.describe_alarms(AlarmNames=names).get("MetricAlarms", [])
        except Exception:  # noqa: BLE001 - the failure reason still says why
            found = []
        firing = [a["AlarmName"] for a in found if a.get("StateValue") == "ALARM"]
        reason = " ".join(str(after.get("FailureReason") or "").split())
        if not firing:
            firing = [n for n in names if n in reason]
        if firing:
            return f"alarm {', '.join(firing)}"
        return f"update failed: {reason or 'no reason given'}"

    def _revert(self, failed: str, previous: str | None, why: str) -> str:
        """Move the alias back to ``previous`` if it still names ``failed``; say what happened."""
        if previous is None:
            return ""
        try:
            state = read_state(self.client, self.name, self.alias, expect=failed)
            outcome = move_alias(
                self.client, self.name, previous, self.alias, kind="revert", by=current_user(),
                state=state,
                reason=f"SageMaker rolled back endpoint {self.endpoint}: {why} "
                       f"(rollout of version {failed})",
            )
        except LostRace:
            holder = alias_holder(self.client, self.name, self.alias)
            return (f"alias {self.alias} had moved to version {holder} meanwhile and stays "
                    "there")
        except MlopsError as exc:
            return f"alias {self.alias} NOT reverted: {exc}"
        if outcome.status == "unchanged":
            return f"alias {self.alias} already on version {previous}"
        return f"alias {self.alias} reverted to version {previous}"

    # ------------------------------------------------------------------ the service
    def once(self, max_steps: int = 4) -> list[Step]:
        """Bring the endpoint to the alias (finish, then roll out the newest); return the passes.

        Raises:
            RolloutError: the last rollout rolled back (the alias reverted or not, as said).
        """
        steps = []
        for _ in range(max_steps):
            step = self.step()
            steps.append(step)
            if step.action in ("idle", "waiting"):
                break
            if step.action in ("reverted", "rolled back"):
                raise RolloutError(step.detail)
        return steps

    def run(self, poll_seconds: float = DEFAULT_POLL_SECONDS, report=print) -> None:
        """Follow until :attr:`stopping` is set: a pass on every webhook wake-up or poll."""
        while not self.stopping.is_set():
            try:
                step = self.step()
                if step.action != "idle" or self.wake.is_set():
                    report(step.detail)
            except (MlopsError, SageMakerError) as exc:
                report(f"error: {exc}")
            except Exception as exc:  # noqa: BLE001 - AWS or the registry may be briefly away
                _logger.warning("follow pass failed: %s", exc, exc_info=True)
                report(f"error: {' '.join(str(exc).split())}")
            self.wake.wait(poll_seconds)
            self.wake.clear()

    def on_event(self, event) -> None:
        """A webhook delivery: look now if it is about the followed alias."""
        if event.name == self.name and event.alias == self.alias:
            _logger.info("webhook: %s@%s -> %s", event.name, event.alias, event.version)
            self.wake.set()


def _tags(values: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in values.items()]
