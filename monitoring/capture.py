"""Reading captured traffic: the JSON lines of ``serve --capture`` or of SageMaker's data capture.

The record format is :mod:`core.capture`'s (the scoring server writes it with the same module);
here the lines are found (a folder, a file or an ``s3://`` prefix) and turned into the inputs
and predictions the drift statistics compare.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd

from core.capture import SUFFIX, decode_record
from monitoring.errors import MonitorError


def read_capture_lines(path: str, s3_client=None) -> list[bytes]:
    """All JSON lines under a local folder/file or an ``s3://bucket/prefix``."""
    lines: list[bytes] = []
    if path.startswith("s3://"):
        bucket, _, prefix = path.removeprefix("s3://").partition("/")
        paginator = s3_client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                if obj["Key"].endswith((SUFFIX, ".json")):
                    body = s3_client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
                    lines.extend(body.splitlines())
    else:
        root = Path(path)
        if not root.exists():
            raise MonitorError(f"captured data {path!r}: no such file or folder")
        files = [root] if root.is_file() else sorted(root.rglob(f"*{SUFFIX}"))
        for file in files:
            lines.extend(file.read_bytes().splitlines())
    return [line for line in lines if line.strip()]


def request_rows(body: bytes, content_type: str | None, schema=None) -> pd.DataFrame:
    """A captured request's rows, parsed as ``mlflow models serve`` parses a request.

    MLflow's own parser (the scoring server's pyfunc path uses it too): any body the server
    answered, including those pyfunc answered (nulls, numeric strings, extra columns), gives its
    rows, with the values the request sent, before the model's schema enforcement.

    Raises:
        MonitorError: a body MLflow cannot read.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.pyfunc import scoring_server as stock

    mime = (content_type or "").split(";", 1)[0].strip().lower()
    try:
        if mime == stock.CONTENT_TYPE_CSV:
            return stock.parse_csv_input(io.StringIO(body.decode("utf-8")), schema)
        if mime == stock.CONTENT_TYPE_PARQUET:
            return stock.parse_parquet_input(io.BytesIO(body))
        data, _ = stock._split_data_and_params(body.decode("utf-8"))
        frame = stock.infer_and_parse_data(data, schema)
    except MlflowException as exc:
        raise MonitorError(f"a captured request cannot be read: {' '.join(exc.message.split())}"
                           [:300]) from None
    except Exception as exc:  # noqa: BLE001 - whatever the parser says, in one line
        raise MonitorError(f"a captured request cannot be read: {' '.join(str(exc).split())}"
                           [:300]) from None
    return frame if isinstance(frame, pd.DataFrame) else pd.DataFrame(frame)


def captured_frames(lines: list[bytes], parse) -> tuple[pd.DataFrame, np.ndarray]:
    """Captured inputs as one DataFrame and the predictions the server answered.

    Args:
        lines: JSON lines written by the capture (ours or SageMaker's data capture).
        parse: ``parse(body: bytes, content_type: str) -> DataFrame`` (the scoring protocol).
    """
    frames, predictions = [], []
    for line in lines:
        rec = decode_record(line)
        body, ctype, resp = rec.body, rec.content_type, rec.response
        if rec.protocol == "v2":
            frame = v2_request_rows(body, rec.header_length)
            outputs = resp.get("outputs") if isinstance(resp, dict) else None
            resp = outputs[0].get("data", []) if outputs else []
        else:
            frame = parse(body, ctype)
        frames.append(frame)
        preds = resp.get("predictions", resp) if isinstance(resp, dict) else resp
        preds = np.asarray(preds)
        if preds.ndim == 2 and preds.shape[1] == 1:
            preds = preds[:, 0]
        if preds.ndim == 1 and len(preds) == len(frame):
            predictions.append(preds)
    if not frames:
        raise MonitorError("no captured requests found")
    inputs = pd.concat(frames, ignore_index=True)
    preds = np.concatenate(predictions) if predictions else np.array([])
    return inputs, preds


# V2 datatypes and the numpy types of their binary form (little-endian, row-major)
_V2_DTYPES = {
    "BOOL": "?", "UINT8": "<u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8",
    "INT8": "<i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8",
    "FP16": "<f2", "FP32": "<f4", "FP64": "<f8",
}


def v2_request_rows(body: bytes, header_length: int | None = None) -> pd.DataFrame:
    """A captured Open Inference Protocol request's rows: one column per input tensor.

    Args:
        body: the request as sent (JSON, or JSON then binary tensors).
        header_length: the JSON part's length when binary tensors follow it.

    Raises:
        MonitorError: a body that is not a V2 request of column tensors.
    """
    try:
        head = json.loads(body[:header_length] if header_length is not None else body)
        tail = memoryview(body)[header_length:] if header_length is not None else None
        columns, pos = {}, 0
        for tensor in head["inputs"]:
            size = (tensor.get("parameters") or {}).get("binary_data_size")
            if size is not None:
                values = _v2_binary(tensor["datatype"], tail[pos:pos + size])
                pos += size
            else:
                values = np.asarray(tensor["data"], dtype=object).reshape(-1)
            shape = tensor["shape"]
            if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
                raise ValueError(f"input {tensor['name']!r} of shape {shape} is not a column")
            columns[tensor["name"]] = values
        frame = pd.DataFrame(columns)
    except MonitorError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever is wrong with it, in one line
        raise MonitorError(f"a captured V2 request cannot be read: {' '.join(str(exc).split())}"
                           [:300]) from None
    return frame.infer_objects()


def _v2_binary(datatype: str, raw: memoryview) -> np.ndarray:
    if datatype != "BYTES":
        return np.frombuffer(raw, dtype=_V2_DTYPES[datatype])
    values, pos = [], 0  # each element: a 4-byte little-endian length, then the bytes
    while pos < len(raw):
        n = int.from_bytes(raw[pos:pos + 4], "little")
        values.append(bytes(raw[pos + 4:pos + 4 + n]).decode("utf-8", "replace"))
        pos += 4 + n
    return np.asarray(values, dtype=object)
