"""The capture record: one JSON line per scored request, the format serving and monitoring share.

``python -m serving serve --capture DEST`` writes these lines (``serving.online.capture``);
``python -m monitoring`` (and ``python -m serving monitor``) reads them (``monitoring.capture``).
Both go through this module, so the format is written down once::

    {"ts": "2026-11-26T15:04:05.123Z", "request_id": "…", "model": "m", "version": "3",
     "content_type": "application/json", "request": {…the request as sent…},
     "response": {"predictions": […]}}

``request`` is the body as JSON when it was JSON, as text when it was text, else
``{"base64": "…"}``; ``response`` is the answer as sent. A request of the Open Inference
Protocol (``POST /v2/models/NAME/infer``) also carries ``"protocol": "v2"`` and, when it sent
binary tensors, ``"header_length"`` (its ``Inference-Header-Content-Length``: the JSON part's
length; the tensors' bytes follow it). Files are JSON lines
(``<dest>/<YYYY-MM-DD>/capture-<pid>-<time>-<n>.jsonl``). The reader also takes the lines of
SageMaker's data capture (``{"captureData": {"endpointInput": …, "endpointOutput": …}}``).
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

#: The fields of a record, in the order they are written.
FIELDS = ("ts", "request_id", "model", "version", "content_type", "request", "response")
#: What a file of records is named with (``*.jsonl``).
SUFFIX = ".jsonl"


@dataclass(frozen=True)
class CapturedRequest:
    """One captured request, as the scoring server received and answered it.

    Attributes:
        body: the request body, as sent.
        content_type: its content type.
        response: the answer, decoded (``{"predictions": [...]}``, a list, or ``{}`` if none).
        protocol: ``"mlflow"`` (MLflow's scoring protocol) or ``"v2"`` (Open Inference).
        header_length: a V2 request's JSON part's length when binary tensors follow it.
    """

    body: bytes
    content_type: str
    response: object
    protocol: str = "mlflow"
    header_length: int | None = None


def _embed(body: bytes, content_type: str):
    if content_type.startswith("application/json"):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            return body.decode("utf-8", "replace")
    if content_type.startswith("text/"):
        return body.decode("utf-8", "replace")
    return {"base64": base64.b64encode(body).decode()}


def encode_record(ts: float, request: bytes, content_type: str, response: bytes, model: str,
                  version: str, protocol: str | None = None,
                  header_length: str | int | None = None) -> bytes:
    """One record as a JSON line (ending in a newline).

    Args:
        ts: when the request was answered (Unix time).
        request: the request body, as received.
        content_type: the request's content type.
        response: the answer's body (JSON), as sent.
        model: the registered model's name.
        version: the version that answered.
        protocol: ``"v2"`` for an Open Inference Protocol request (None: MLflow's).
        header_length: a V2 request's ``Inference-Header-Content-Length``, if it sent one.
    """
    record = {
        "ts": datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds"),
        "request_id": uuid.uuid4().hex,
        "model": model,
        "version": version,
        "content_type": content_type,
        "request": _embed(request, content_type) if header_length is None
        else {"base64": base64.b64encode(request).decode()},
        "response": _embed(response, "application/json"),
    }
    if protocol is not None:
        record["protocol"] = protocol
    if header_length is not None:
        record["header_length"] = int(header_length)
    return orjson.dumps(record) + b"\n"


def decode_record(line: bytes) -> CapturedRequest:
    """A record (ours, or a line of SageMaker's data capture) back as the request and answer.

    Raises:
        orjson.JSONDecodeError: the line is not JSON.
        KeyError: the line is neither kind of record.
    """
    rec = orjson.loads(line)
    if "captureData" in rec:
        data = rec["captureData"]
        inp, out = data["endpointInput"], data.get("endpointOutput", {})
        response = _sagemaker_body(out)
        return CapturedRequest(_sagemaker_body(inp),
                               inp.get("observedContentType", "application/json"),
                               orjson.loads(response) if response else {})
    req = rec["request"]
    if isinstance(req, dict) and "base64" in req:
        body = base64.b64decode(req["base64"])
    elif isinstance(req, str):
        body = req.encode()
    else:
        body = orjson.dumps(req)
    length = rec.get("header_length")
    return CapturedRequest(body, rec.get("content_type", "application/json"),
                           rec.get("response") or {}, rec.get("protocol", "mlflow"),
                           int(length) if length is not None else None)


def _sagemaker_body(part: dict) -> bytes:
    raw = part.get("data", "")
    return base64.b64decode(raw) if part.get("encoding") == "BASE64" else raw.encode()
