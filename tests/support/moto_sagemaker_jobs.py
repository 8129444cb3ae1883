"""What the SageMaker double runs beside its endpoints: data capture, async inference, transforms.

A part of :class:`tests.support.moto_sagemaker.SageMakerDouble` (see that module's docstring for
what the double simulates and what it does not): SageMaker's data capture lines, the
``InvokeEndpointAsync`` queue scored in the background, and batch transform jobs run against
the real scoring server. The mixin uses the double's state (its lock, moto's S3, the routing
and the scoring servers).
"""

from __future__ import annotations

import json
import random
import threading
import urllib.parse
from pathlib import Path


class JobsMixin:
    """Data capture, async inference and batch transform of :class:`SageMakerDouble`."""

    # ------------------------------------------------------------------ held transform jobs
    def hold_transform(self, job: str) -> None:
        """Keep transform job ``job`` (created later) ``InProgress`` until :meth:`release_transform`."""
        with self._lock:
            self._held_jobs.setdefault(job, threading.Event())

    def release_transform(self, job: str) -> None:
        """Let a held transform job run to its end."""
        with self._lock:
            self._held_jobs.setdefault(job, threading.Event()).set()

    # ------------------------------------------------------------------ data capture
    def capture(self, backend, endpoint: str, config_name: str, variant: str, body: bytes,
                content_type: str, answer: bytes, answer_type: str) -> None:
        """SageMaker data capture: one JSON line per invocation under the config's S3 URI.

        The layout and fields are those SageMaker writes
        (``<uri>/<endpoint>/<variant>/yyyy/mm/dd/hh/<id>.jsonl``); each invocation is its own
        object here, where SageMaker batches a few minutes of lines into one.
        """
        cfg = backend.endpoint_configs[config_name].data_capture_config or {}
        if not cfg.get("EnableCapture"):
            return
        if random.uniform(0, 100) >= float(cfg.get("InitialSamplingPercentage", 100)):
            return
        import base64
        import datetime
        import uuid

        def part(data: bytes, ctype: str, mode: str) -> dict:
            return {"observedContentType": ctype, "mode": mode, "encoding": "BASE64",
                    "data": base64.b64encode(data).decode()}

        now = datetime.datetime.now(datetime.UTC)
        line = json.dumps({
            "captureData": {"endpointInput": part(body, content_type, "INPUT"),
                            "endpointOutput": part(answer, answer_type, "OUTPUT")},
            "eventMetadata": {"eventId": str(uuid.uuid4()),
                              "inferenceTime": now.isoformat(timespec="seconds")},
            "eventVersion": "0",
        }).encode() + b"\n"
        dest = urllib.parse.urlparse(cfg["DestinationS3Uri"])
        key = "/".join(x for x in (dest.path.strip("/"), endpoint, variant,
                                   now.strftime("%Y/%m/%d/%H"), f"{uuid.uuid4().hex}.jsonl") if x)
        self._s3(backend.account_id).put_object(dest.netloc, key, line)

    # ------------------------------------------------------------------ async inference
    def _run_async(self, backend, endpoint, input_location: str, content_type: str,
                   accept: str | None, answer_at: str, failure_at: str) -> None:
        """Score a queued asynchronous request and write its answer (or failure) to S3."""
        s3 = self._s3(backend.account_id)

        def put(uri: str, data: bytes) -> None:
            parsed = urllib.parse.urlparse(uri)
            s3.put_object(parsed.netloc, parsed.path.lstrip("/"), data)

        try:
            source = urllib.parse.urlparse(input_location)
            body = s3.get_object(source.netloc, source.path.lstrip("/")).value
            _, variant = self.route(backend, endpoint, None)
            model = backend._models[variant["ModelName"]]
            url = self.scoring_url(backend.account_id, model.primary_container["ModelDataUrl"])
            status, _, answer = self._post(url, body, content_type, accept)
            if status >= 400:
                raise RuntimeError(f"Received client error ({status}) from primary with message "
                                   f"\"{answer.decode(errors='replace')}\"")
            put(answer_at, answer)
        except Exception as exc:  # noqa: BLE001 - what SageMaker writes to the failure path
            put(failure_at, " ".join(str(exc).split()).encode())

    # ------------------------------------------------------------------ batch transform
    def _run_transform(self, backend, job) -> None:
        """Run a transform job as SageMaker would, against the real scoring server."""
        from moto.core.utils import utcnow

        with self._lock:
            held = self._held_jobs.get(job.transform_job_name)
        while held is not None and not held.wait(0.2):
            with self._lock:
                if self._closed:
                    return
        try:
            model = backend._models[job.model_name]
            url = self.scoring_url(backend.account_id, model.primary_container["ModelDataUrl"])
            source = job.transform_input["DataSource"]["S3DataSource"]["S3Uri"]
            parsed = urllib.parse.urlparse(source)
            s3 = self._s3(backend.account_id)
            bucket = s3.get_bucket(parsed.netloc)
            prefix = parsed.path.lstrip("/")
            keys, _, _, _ = s3.list_objects(bucket, prefix, None, None, 1000)
            if not keys:
                raise LookupError(f"no objects under {source}")
            out = urllib.parse.urlparse(job.transform_output["S3OutputPath"])
            out_prefix = out.path.strip("/")
            content_type = job.transform_input.get("ContentType", "text/csv")
            accept = job.transform_output.get("Accept")
            for key in sorted(keys, key=lambda k: k.name):
                body = key.value
                records = [body] if job.transform_input.get("SplitType", "None") == "None" else [
                    line for line in body.splitlines() if line.strip()
                ]
                answers = []
                for record in records:
                    status, _, answer = self._post(url, record, content_type, accept)
                    if status >= 400:
                        raise RuntimeError(
                            f"ClientError: {status} from the model for {key.name}: "
                            f"{answer.decode(errors='replace')[:300]}"
                        )
                    answers.append(answer)
                relative = key.name[len(prefix):].lstrip("/") or Path(key.name).name
                target = f"{out_prefix}/{relative}.out".lstrip("/")
                s3.put_object(out.netloc, target, b"\n".join(answers))
            job.transform_job_status = "Completed"
        except Exception as exc:  # noqa: BLE001 - the job's failure reason, as SageMaker shows
            job.transform_job_status = "Failed"
            job.failure_reason = " ".join(str(exc).split())[:1000]
        job.transform_end_time = job.last_modified_time = utcnow()
