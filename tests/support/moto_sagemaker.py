"""An honest test double for Amazon SageMaker: moto 5.2.5, extended in-process.

AWS cannot exist here (no account, no network), so the SageMaker tests talk to moto with
boto3 over HTTP. moto 5.2.5 does not implement ``UpdateEndpoint`` and answers
``InvokeEndpoint`` with a placeholder, so this module extends moto's backends in this process
and then starts ``moto.server.ThreadedMotoServer``. What the double adds, and how faithful it is:

- ``UpdateEndpoint`` is recorded, with its ``DeploymentConfig``, in :attr:`SageMakerDouble.updates`.
  The endpoint stays ``Updating`` for the provisioning time, the canary bake
  (``WaitIntervalInSeconds``) and ``TerminationWaitInSeconds`` — all multiplied by
  :attr:`SageMakerDouble.time_scale` so minutes pass in seconds. If any alarm of
  ``AutoRollbackConfiguration`` is in ``ALARM`` in moto's CloudWatch meanwhile (tests put it
  there with ``SetAlarmState``, as CloudWatch would when the canary's 5xx errors climb), the
  update rolls back: the endpoint is ``InService`` on its old config, with a ``FailureReason``,
  exactly the outcome SageMaker's deployment guardrails produce. A config whose model archive
  is missing from S3 fails the same way (SageMaker cannot download the model data).
- An update can be made to fail (:meth:`SageMakerDouble.fail_next_update`): the endpoint
  stays ``InService`` on its old config with the ``FailureReason``, as when SageMaker cannot
  provision the new fleet.
- ``CreateEndpoint`` ends ``Failed`` when a variant's model archive is missing from S3.
- ``InvokeEndpoint`` is answered by the model archive the code under test pushed to (moto) S3:
  downloaded, unpacked and served by the real MLflow scoring server
  (``mlflow models serve -m DIR --env-manager local``), which is what the ``mlflow-pyfunc``
  image runs on SageMaker. During a canary, the canary share of requests goes to the new
  config. A 4xx/5xx from the model becomes SageMaker's ``ModelError`` (HTTP 424).
- ``CreateTransformJob`` runs: each object under the input prefix (whole, or line by line)
  goes to the scoring server; answers land in ``OUTPUT/KEY.out``; the job ends ``Completed``
  or ``Failed`` with the reason.
- ``AddTags`` replaces the values of keys already present (moto appended duplicates).
- ``ListModels`` honours ``NameContains``, ``MaxResults`` and ``NextToken`` (moto ignored them
  and returned every model in one page), as the sweep of batch models relies on them.
- ``InvokeEndpointAsync`` (moto answers with a placeholder in a bucket of its own) reads the
  request from its ``InputLocation``, scores it on the endpoint's scoring server in the
  background and writes the answer to ``S3OutputPath/ID.out`` (a failure to
  ``S3FailurePath/ID-error.out``), the paths SageMaker reports; the request is answered
  ``202`` at once. Not simulated: the queue's backlog metrics and scaling from zero
  (``HasBacklogWithoutCapacity``): requests are scored at once whatever the instance count.
- A transform job can be held ``InProgress`` (:meth:`SageMakerDouble.hold_transform`) until a
  test releases it, as a long job on SageMaker would stay (``--async``, a wait that times out).

Not simulated: pulling the image (its URI is not checked here; ``preflight`` checks ECR),
instance provisioning (``provision_seconds`` stands in), CloudWatch metrics (alarms change
state only through ``SetAlarmState``), and the exact ``RollingBack`` interlude.
"""

from __future__ import annotations

import contextlib
import json
import random
import sys
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.moto_sagemaker_jobs import JobsMixin
from tests.support.processes import free_port, running

ACCOUNT_ID = "123456789012"
_TRANSITIONAL = ("Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting")
#: The double whose patches are installed in this process (at most one).
_INSTALLED: list = []
_INSTALLED_LOCK = threading.Lock()


@dataclass
class Update:
    """One recorded ``UpdateEndpoint`` call and what became of it."""

    account: str
    region: str
    endpoint: str
    old_config: str
    new_config: str
    deployment_config: dict | None
    started: float
    bake_until: float
    done_at: float
    alarms: list[str] = field(default_factory=list)
    missing_archives: list[str] = field(default_factory=list)
    outcome: str = "InProgress"  # InProgress | Succeeded | RolledBack | Failed
    reason: str = ""
    fail_reason: str = ""  # set by SageMakerDouble.fail_next_update

    @property
    def canary_percent(self) -> int:
        routing = (self.deployment_config or {}).get("BlueGreenUpdatePolicy", {}).get(
            "TrafficRoutingConfiguration", {}
        )
        if routing.get("Type") == "CANARY":
            return int(routing.get("CanarySize", {}).get("Value", 0))
        return 100


class SageMakerDouble(JobsMixin):
    """The extended moto SageMaker: state, scoring servers, and the patches installed.

    Attributes:
        url: the moto server's endpoint URL (``AWS_ENDPOINT_URL``).
        updates: every ``UpdateEndpoint`` call, in order.
        time_scale: factor applied to bake and termination waits (1.0 = real time).
        provision_seconds: how long a new fleet takes before its canary starts.
    """

    def __init__(self, workdir: Path, time_scale: float = 0.05, provision_seconds: float = 0.5):
        self.workdir = workdir
        self.time_scale = time_scale
        self.provision_seconds = provision_seconds
        self.updates: list[Update] = []
        self.url = ""
        self._pending: dict[tuple[str, str, str], Update] = {}
        self._held: set[str] = set()
        self._failing: dict[str, str] = {}
        self._held_jobs: dict[str, threading.Event] = {}
        self._stack = contextlib.ExitStack()
        self._scorers: dict[tuple[str, str], str] = {}
        self._scorer_locks: dict[tuple[str, str], threading.Lock] = {}
        self._lock = threading.RLock()
        self._originals: list[tuple[type, str, Any]] = []
        self._server = None
        self._closed = False

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> SageMakerDouble:
        """Install the patches and start the threaded moto server on a free port.

        Raises:
            RuntimeError: another double is installed in this process. The patches are moto's
                classes' own methods, so a second double would take over the first one's
                endpoints (a test module importing ``sagemaker_moto`` makes its own copy of the
                session fixture: take it from the serving conftest only).
        """
        from moto.server import ThreadedMotoServer

        with _INSTALLED_LOCK:
            if _INSTALLED:
                raise RuntimeError("a SageMaker double is already installed in this process: "
                                   "use the session's sagemaker_moto fixture (serving conftest)")
            _INSTALLED.append(self)
        self._install()
        port = free_port()
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self._server.start()
        self.url = f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        """Stop the scoring servers and moto; restore moto's own methods."""
        with self._lock:
            self._closed = True
        try:
            self._stack.close()
        finally:
            if self._server is not None:
                self._server.stop()
            for cls, name, original in reversed(self._originals):
                setattr(cls, name, original)
            self._originals.clear()
            with _INSTALLED_LOCK:
                if self in _INSTALLED:
                    _INSTALLED.remove(self)

    def _patch(self, cls: type, name: str, func) -> None:
        self._originals.append((cls, name, cls.__dict__.get(name)))
        setattr(cls, name, func)

    def hold(self, endpoint: str) -> None:
        """Keep the endpoint's next update from finishing (a long bake, as long as a test needs).

        Alarms still roll it back; :meth:`release` lets it finish once its bake is over.
        """
        with self._lock:
            self._held.add(endpoint)

    def release(self, endpoint: str) -> None:
        """Let a held update finish."""
        with self._lock:
            self._held.discard(endpoint)

    def fail_next_update(self, endpoint: str, reason: str) -> None:
        """Make the endpoint's next update fail once provisioned (as when SageMaker cannot
        get the instances, or the container does not pass its health check)."""
        with self._lock:
            self._failing[endpoint] = reason

    def updates_for(self, endpoint: str) -> list[Update]:
        """The recorded updates of one endpoint."""
        return [u for u in self.updates if u.endpoint == endpoint]

    # ------------------------------------------------------------------ moto access
    @staticmethod
    def _s3(account: str):
        from moto.s3.models import s3_backends

        return s3_backends[account]["aws"]

    @staticmethod
    def _cloudwatch(account: str, region: str):
        from moto.cloudwatch.models import cloudwatch_backends

        return cloudwatch_backends[account][region]

    def _archive(self, account: str, url: str):
        """The S3 object behind a ``ModelDataUrl`` (``None`` when missing)."""
        parsed = urllib.parse.urlparse(url)
        try:
            return self._s3(account).get_object(parsed.netloc, parsed.path.lstrip("/"))
        except Exception:  # noqa: BLE001 - moto raises MissingBucket/MissingKey
            return None

    def _missing_archives(self, backend, config) -> list[str]:
        missing = []
        for variant in config.production_variants:
            model = backend._models.get(variant["ModelName"])
            url = (model.primary_container or {}).get("ModelDataUrl", "") if model else ""
            if not url or self._archive(backend.account_id, url) is None:
                missing.append(url or variant["ModelName"])
        return missing

    # ------------------------------------------------------------------ scoring servers
    def scoring_url(self, account: str, model_data_url: str) -> str:
        """URL of a real MLflow scoring server serving the archive (started on first use)."""
        obj = self._archive(account, model_data_url)
        if obj is None:
            raise LookupError(f"model data {model_data_url} not found in S3")
        key = (model_data_url, obj.etag)
        with self._lock:
            if key in self._scorers:
                return self._scorers[key]
            lock = self._scorer_locks.setdefault(key, threading.Lock())
        with lock:
            if key in self._scorers:
                return self._scorers[key]
            model_dir = Path(tempfile.mkdtemp(prefix="model-", dir=self.workdir))
            archive = model_dir.parent / f"{model_dir.name}.tar.gz"
            archive.write_bytes(obj.value)
            with tarfile.open(archive) as tar:
                tar.extractall(model_dir, filter="data")
            port = free_port()
            cmd = [
                sys.executable, "-m", "mlflow", "models", "serve", "-m", str(model_dir),
                "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port),
            ]
            server = running(cmd, f"http://127.0.0.1:{port}/ping", "sagemaker-container",
                             timeout=120)
            server.__enter__()
            with self._lock:
                if self._closed:  # the double stopped while this server came up
                    server.__exit__(None, None, None)
                    raise RuntimeError("the SageMaker double is stopped")
                self._stack.push(server.__exit__)
                self._scorers[key] = f"http://127.0.0.1:{port}"
            return self._scorers[key]

    def warm(self, backend, config) -> None:
        """Start the config's scoring servers in the background, as SageMaker provisions."""

        def run():
            for variant in config.production_variants:
                model = backend._models.get(variant["ModelName"])
                url = (model.primary_container or {}).get("ModelDataUrl") if model else None
                if url:
                    with contextlib.suppress(Exception):  # invoke reports it if it persists
                        self.scoring_url(backend.account_id, url)

        threading.Thread(target=run, daemon=True).start()

    @staticmethod
    def _post(url: str, body: bytes, content_type: str, accept: str | None):
        headers = {"Content-Type": content_type or "application/json"}
        if accept:
            headers["Accept"] = accept
        request = urllib.request.Request(
            f"{url}/invocations", data=body, headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as resp:
                return resp.status, resp.headers.get("Content-Type", ""), resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers.get("Content-Type", ""), exc.read()

    # ------------------------------------------------------------------ endpoint state
    def advance(self, backend, endpoint) -> None:
        """Move a pending update forward in (scaled) time; roll back on an alarm in ALARM."""
        key = (backend.account_id, backend.region_name, endpoint.endpoint_name)
        with self._lock:
            update = self._pending.get(key)
            if update is None:
                return
            now = time.monotonic()
            if update.fail_reason and now >= update.started + self.provision_seconds:
                self._finish(backend, endpoint, update, "Failed", update.fail_reason)
                return
            if update.missing_archives and now >= update.started + self.provision_seconds:
                self._finish(backend, endpoint, update, "Failed",
                             "Failed to download model data for "
                             + ", ".join(update.missing_archives)
                             + ". Please ensure that the model data exists in S3.")
                return
            alarms = self._cloudwatch(backend.account_id, backend.region_name).alarms
            firing = [n for n in update.alarms if n in alarms and alarms[n].state_value == "ALARM"]
            if firing:
                self._finish(backend, endpoint, update, "RolledBack",
                             "Deployment was rolled back: alarm(s) " + ", ".join(firing)
                             + " in ALARM during the blue/green deployment.")
            elif now >= update.done_at and endpoint.endpoint_name not in self._held:
                self._finish(backend, endpoint, update, "Succeeded", "")

    def _finish(self, backend, endpoint, update: Update, outcome: str, reason: str) -> None:
        from moto.core.utils import utcnow

        update.outcome = outcome
        update.reason = reason
        if outcome == "Succeeded":
            config = backend.endpoint_configs[update.new_config]
            endpoint.endpoint_config_name = update.new_config
            endpoint.production_variants = endpoint._process_production_variants(
                config.production_variants
            )
            endpoint.failure_reason = None
        else:
            endpoint.failure_reason = reason
        endpoint.endpoint_status = "InService"
        if update.deployment_config:
            endpoint.last_deployment_config = update.deployment_config
        endpoint.pending_deployment_summary = None
        endpoint.last_modified_time = utcnow()
        del self._pending[(update.account, update.region, update.endpoint)]

    def route(self, backend, endpoint, target_variant: str | None) -> tuple[str, dict]:
        """Pick the config and variant a request goes to (canary share to the new fleet)."""
        config_name = endpoint.endpoint_config_name
        update = self._pending.get((backend.account_id, backend.region_name,
                                    endpoint.endpoint_name))
        if (
            update is not None
            and not update.missing_archives
            and time.monotonic() >= update.started + self.provision_seconds
            and random.uniform(0, 100) < update.canary_percent
        ):
            config_name = update.new_config
        variants = backend.endpoint_configs[config_name].production_variants
        if target_variant:
            chosen = [v for v in variants if v["VariantName"] == target_variant]
            if not chosen:
                from moto.sagemaker.exceptions import ValidationError

                raise ValidationError(
                    f"Target variant {target_variant} not found for endpoint "
                    f"{endpoint.endpoint_name}."
                )
            return config_name, chosen[0]
        weights = [float(v.get("InitialVariantWeight", 1.0) or 0.0) for v in variants]
        if sum(weights) <= 0:
            weights = [1.0] * len(variants)
        return config_name, random.choices(variants, weights=weights)[0]

    # ------------------------------------------------------------------ patches
    def _install(self) -> None:
        from moto.core.exceptions import JsonRESTError
        from moto.core.responses import ActionResult
        from moto.core.utils import utcnow
        from moto.sagemaker.exceptions import ValidationError
        from moto.sagemaker.models import FakeEndpoint, SageMakerModelBackend, sagemaker_backends
        from moto.sagemaker.responses import SageMakerResponse
        from moto.sagemakerruntime.responses import SageMakerRuntimeResponse

        double = self

        class ModelError(JsonRESTError):
            code = 424

            def __init__(self, message: str):
                super().__init__("ModelError", message)

        original_create = SageMakerModelBackend.create_endpoint
        original_describe = SageMakerModelBackend.describe_endpoint
        original_transform = SageMakerModelBackend.create_transform_job

        def create_endpoint(backend, endpoint_name, endpoint_config_name, tags):
            endpoint = original_create(backend, endpoint_name, endpoint_config_name, tags)
            missing = double._missing_archives(
                backend, backend.endpoint_configs[endpoint_config_name]
            )
            if missing:
                endpoint.endpoint_status = "Failed"
                endpoint.failure_reason = (
                    "Failed to download model data for " + ", ".join(missing)
                    + ". Please ensure that the model data exists in S3."
                )
            else:
                double.warm(backend, backend.endpoint_configs[endpoint_config_name])
            return endpoint

        def describe_endpoint(backend, endpoint_name):
            endpoint = backend.endpoints.get(endpoint_name)
            if endpoint is not None:
                double.advance(backend, endpoint)
            return original_describe(backend, endpoint_name)

        def update_endpoint(backend, endpoint_name, endpoint_config_name, deployment_config=None):
            endpoint = backend.endpoints.get(endpoint_name)
            if endpoint is None:
                arn = FakeEndpoint.arn_formatter(
                    endpoint_name, backend.account_id, backend.region_name
                )
                raise ValidationError(message=f"Could not find endpoint \"{arn}\".")
            double.advance(backend, endpoint)
            if endpoint.endpoint_status in _TRANSITIONAL:
                raise ValidationError(
                    message=f"Cannot update in-progress endpoint \"{endpoint.arn}\"."
                )
            config = backend.endpoint_configs.get(endpoint_config_name)
            if config is None:
                raise ValidationError(
                    message=f"Could not find endpoint configuration \"{endpoint_config_name}\"."
                )
            policy = (deployment_config or {}).get("BlueGreenUpdatePolicy", {})
            bake = float(policy.get("TrafficRoutingConfiguration", {}).get(
                "WaitIntervalInSeconds", 0))
            termination = float(policy.get("TerminationWaitInSeconds", 0))
            now = time.monotonic()
            bake_until = now + double.provision_seconds + bake * double.time_scale
            alarms = [
                a["AlarmName"]
                for a in (deployment_config or {}).get("AutoRollbackConfiguration", {}).get(
                    "Alarms", [])
            ]
            update = Update(
                account=backend.account_id, region=backend.region_name, endpoint=endpoint_name,
                old_config=endpoint.endpoint_config_name, new_config=endpoint_config_name,
                deployment_config=deployment_config, started=now, bake_until=bake_until,
                done_at=bake_until + termination * double.time_scale, alarms=alarms,
                missing_archives=double._missing_archives(backend, config),
            )
            with double._lock:
                update.fail_reason = double._failing.pop(endpoint_name, "")
                double.updates.append(update)
                double._pending[(backend.account_id, backend.region_name, endpoint_name)] = update
            if not update.missing_archives:
                double.warm(backend, config)
            endpoint.endpoint_status = "Updating"
            endpoint.failure_reason = None
            endpoint.pending_deployment_summary = {
                "EndpointConfigName": endpoint_config_name,
                "StartTime": utcnow(),
            }
            endpoint.last_modified_time = utcnow()
            return endpoint.arn

        def update_endpoint_response(response):
            arn = response.sagemaker_backend.update_endpoint(
                endpoint_name=response._get_param("EndpointName"),
                endpoint_config_name=response._get_param("EndpointConfigName"),
                deployment_config=response._get_param("DeploymentConfig"),
            )
            return ActionResult({"EndpointArn": arn})

        def add_tags(backend, arn, tags):
            resource = backend._get_resource_from_arn(arn)
            merged = {t["Key"]: t["Value"] for t in resource.tags or []}
            merged.update({t["Key"]: t["Value"] for t in tags or []})
            resource.tags = [{"Key": k, "Value": v} for k, v in merged.items()]
            return resource.tags

        def create_transform_job(backend, **kwargs):
            job = original_transform(backend, **kwargs)
            job.transform_job_status = "InProgress"
            threading.Thread(
                target=double._run_transform, args=(backend, job), daemon=True
            ).start()
            return job

        def list_models_response(response):
            contains = response._get_param("NameContains") or ""
            size = int(response._get_param("MaxResults") or 10)
            start = int(response._get_param("NextToken") or 0)
            models = sorted(
                (m for m in response.sagemaker_backend.list_models() if contains in m.model_name),
                key=lambda m: m.model_name,
            )
            page = models[start:start + size]
            result = {"Models": [{"ModelName": m.model_name, "ModelArn": m.arn,
                                  "CreationTime": m.creation_time} for m in page]}
            if start + size < len(models):
                result["NextToken"] = str(start + size)
            return ActionResult(result)

        def invoke_endpoint(response):
            params = response._get_params()
            name = params.get("EndpointName") or urllib.parse.unquote(
                response.path.split("/")[2]
            )
            backend = sagemaker_backends[response.current_account][response.region]
            endpoint = backend.endpoints.get(name)
            if endpoint is None:
                raise ValidationError(
                    message=f"Endpoint {name} of account {response.current_account} not found."
                )
            double.advance(backend, endpoint)
            if endpoint.endpoint_status not in ("InService", "Updating", "SystemUpdating"):
                raise ValidationError(
                    message=f"Endpoint {name} is {endpoint.endpoint_status}, not in service."
                )
            config_name, variant = double.route(
                backend, endpoint, response.headers.get("X-Amzn-SageMaker-Target-Variant")
            )
            model = backend._models[variant["ModelName"]]
            url = double.scoring_url(
                backend.account_id, model.primary_container["ModelDataUrl"]
            )
            body = response.body if isinstance(response.body, bytes) else str(
                response.body or "").encode()
            status, content_type, answer = double._post(
                url, body, response.headers.get("Content-Type", ""),
                response.headers.get("Accept"),
            )
            if status >= 400:
                raise ModelError(
                    f"Received client error ({status}) from primary with message "
                    f"\"{answer.decode(errors='replace')}\". See CloudWatch logs for {name}."
                )
            double.capture(backend, endpoint.endpoint_name, config_name, variant["VariantName"],
                           body, response.headers.get("Content-Type", ""), answer, content_type)
            headers = {
                "Content-Type": content_type,
                "x-Amzn-Invoked-Production-Variant": variant["VariantName"],
            }
            return 200, headers, answer

        self._patch(SageMakerModelBackend, "create_endpoint", create_endpoint)
        self._patch(SageMakerModelBackend, "describe_endpoint", describe_endpoint)
        self._patch(SageMakerModelBackend, "update_endpoint", update_endpoint)
        self._patch(SageMakerModelBackend, "add_tags", add_tags)
        self._patch(SageMakerModelBackend, "create_transform_job", create_transform_job)
        self._patch(SageMakerResponse, "update_endpoint", update_endpoint_response)
        self._patch(SageMakerResponse, "list_models", list_models_response)
        def invoke_endpoint_async(response):
            # moto answers InvokeEndpointAsync with a placeholder object in a bucket of its own;
            # SageMaker queues the request, scores it on the endpoint's container and writes
            # the answer under the config's S3OutputPath (a failure under S3FailurePath)
            name = urllib.parse.unquote(response.path.split("/")[2])
            backend = sagemaker_backends[response.current_account][response.region]
            endpoint = backend.endpoints.get(name)
            if endpoint is None:
                raise ValidationError(
                    message=f"Endpoint {name} of account {response.current_account} not found."
                )
            config = backend.endpoint_configs[endpoint.endpoint_config_name]
            output = (config.async_inference_config or {}).get("OutputConfig") or {}
            if not output.get("S3OutputPath"):
                raise ValidationError(
                    message=f"Endpoint {name} is not an async inference endpoint.")
            inference = response.headers.get("X-Amzn-SageMaker-Inference-Id") or str(
                uuid.uuid4())
            answer_at = f"{output['S3OutputPath'].rstrip('/')}/{inference}.out"
            failure_at = f"{output.get('S3FailurePath', output['S3OutputPath']).rstrip('/')}/" \
                f"{inference}-error.out"
            job = (backend, endpoint, response.headers.get("X-Amzn-SageMaker-InputLocation", ""),
                   response.headers.get("X-Amzn-SageMaker-Content-Type", "application/json"),
                   response.headers.get("X-Amzn-SageMaker-Accept"), answer_at, failure_at)
            threading.Thread(target=double._run_async, args=job, daemon=True).start()
            headers = {"X-Amzn-SageMaker-OutputLocation": answer_at,
                       "X-Amzn-SageMaker-FailureLocation": failure_at}
            return 202, headers, json.dumps({"InferenceId": inference})

        self._patch(SageMakerRuntimeResponse, "invoke_endpoint", invoke_endpoint)
        self._patch(SageMakerRuntimeResponse, "invoke_endpoint_async", invoke_endpoint_async)

@pytest.fixture(scope="session")
def sagemaker_moto(tmp_path_factory):
    """The extended moto (see the module docstring) on a free port for the whole session.

    AWS itself cannot exist here; this honest double stands in for S3, SageMaker, CloudWatch,
    IAM, STS, ECR and Application Auto Scaling, driven by boto3 over HTTP.
    """
    double = SageMakerDouble(tmp_path_factory.mktemp("sagemaker-double")).start()
    try:
        yield double
    finally:
        double.stop()
