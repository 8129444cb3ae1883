"""The ``kserve`` Python SDK, KServe's own client and resource models, in a cached environment.

kserve is not a dependency of the project (nor of its tests' lock): it pins pandas below 3 and
brings fastapi, grpcio, protobuf and the Kubernetes client in versions of its own. The
environment is built on first use and cached (tests/support/cached_env.py); the tests run
scripts in it (:func:`kserve_python`).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.support.cached_env import cached_venv

KSERVE_VERSION = "0.21.0"
REQUIREMENTS = (f"kserve=={KSERVE_VERSION}",)


def kserve_python() -> Path:
    """The interpreter of the cached environment holding the kserve SDK; built first if none."""
    return cached_venv(f"kserve-{KSERVE_VERSION}", REQUIREMENTS) / "bin" / "python"


# Loads a manifest into the SDK's model class the way its ApiClient loads an API answer (JSON
# keys through attribute_map, nested models through openapi_types, kserve's models first then
# the Kubernetes client's), with client-side validation on, and reports what the models refuse
# or do not know: unknown keys, values of the wrong type, missing required fields, and any
# difference after serializing the object back (a field dropped or changed on the way; fields
# the SDK adds with its defaults are listed apart). kserve's own
# models are generated classes that check required fields; the Kubernetes client's (37.x) are
# pydantic models that forbid extra keys and check every type themselves.
_VALIDATE = r"""
import json, re, sys
import pydantic
import yaml
import kserve
import kubernetes.client as k8s
from kserve import models as kmodels

PRIMITIVE = {"str": str, "int": int, "float": (int, float), "bool": bool}

def configuration():
    config = kserve.Configuration()
    config.client_side_validation = True
    return config

def load(data, kind, path, problems):
    inner = re.fullmatch(r"(?:list|List)\[(.*)\]", kind)
    if inner:
        if not isinstance(data, list):
            problems.append(f"{path}: a list expected, got {data!r}")
            return data
        return [load(item, inner[1], f"{path}[{i}]", problems) for i, item in enumerate(data)]
    inner = re.fullmatch(r"dict\([^,]*, (.*)\)|Dict\[[^,]*, (.*)\]", kind)
    if inner:
        if not isinstance(data, dict):
            problems.append(f"{path}: a mapping expected, got {data!r}")
            return data
        value_kind = inner[1] or inner[2]
        return {k: load(v, value_kind, f"{path}.{k}", problems) for k, v in data.items()}
    if kind == "object":
        return data
    if kind in PRIMITIVE:
        if not isinstance(data, PRIMITIVE[kind]) or (kind != "bool" and isinstance(data, bool)):
            problems.append(f"{path}: {kind} expected, got {data!r}")
        return data
    cls = getattr(kmodels, kind, None) or getattr(k8s, kind)
    if issubclass(cls, pydantic.BaseModel):
        try:
            return cls.model_validate(data)
        except pydantic.ValidationError as error:
            problems.extend(f"{path}." + ".".join(map(str, e["loc"])) + f": {e['msg']}"
                            for e in error.errors())
            return data
    if not isinstance(data, dict):
        problems.append(f"{path}: {kind} expected, got {data!r}")
        return data
    keys = {cls.attribute_map[attr]: attr for attr in cls.openapi_types}
    problems.extend(f"{path}.{key}: unknown to {kind}" for key in data if key not in keys)
    values = {attr: load(data[key], cls.openapi_types[attr], f"{path}.{key}", problems)
              for key, attr in keys.items() if key in data}
    try:
        return cls(**values, local_vars_configuration=configuration())
    except ValueError as error:
        problems.append(f"{path}: {error}")
        return data

def compare(data, back, path, problems, added):
    # every field of the manifest comes back with its value; the SDK defaults are listed
    if isinstance(data, dict) and isinstance(back, dict):
        for key, value in data.items():
            if key not in back:
                problems.append(f"{path}.{key}: dropped on the way back")
            else:
                compare(value, back[key], f"{path}.{key}", problems, added)
        added.update({f"{path}.{key}": back[key] for key in back if key not in data})
    elif isinstance(data, list) and isinstance(back, list) and len(data) == len(back):
        for i, (item, again) in enumerate(zip(data, back)):
            compare(item, again, f"{path}[{i}]", problems, added)
    elif data != back:
        problems.append(f"{path}: {data!r} came back as {back!r}")

report = {}
for path, kind in zip(sys.argv[1::2], sys.argv[2::2]):
    problems, added = [], {}
    data = yaml.safe_load(open(path))
    obj = load(data, kind, kind, problems)
    if not problems:
        back = kserve.ApiClient().sanitize_for_serialization(obj)
        compare(data, back, kind, problems, added)
    report[path] = {"class": type(obj).__name__, "problems": problems, "added": added}
print(json.dumps(report))
"""


def validate_manifests(manifests: dict[str, str]) -> dict:
    """Each manifest file loaded into the kserve SDK's model class named for it.

    Args:
        manifests: {path of a YAML file: SDK class name, e.g. ``V1beta1InferenceService``}.

    Returns:
        {path: {"class": the class loaded, "problems": [one line each],
        "added": {field path: value the SDK's defaults add on the way back}}}.
    """
    args = [arg for pair in manifests.items() for arg in pair]
    done = subprocess.run([str(kserve_python()), "-c", _VALIDATE, *args],
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"validating with the kserve SDK failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout)


# kserve's own REST client, protocol v2: health, readiness, then one inference with FP64
# tensors (the SDK sends them with the binary tensor extension by default).
_INFER = r"""
import asyncio, json, sys
import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

url, name, rows = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])

async def main():
    client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=30))
    try:
        checks = [await client.is_server_live(url), await client.is_server_ready(url),
                  await client.is_model_ready(url, name)]
        inputs = []
        for column, values in rows.items():
            tensor = InferInput(column, [len(values)], "FP64")
            tensor.set_data_from_numpy(np.array(values, dtype=np.float64))
            inputs.append(tensor)
        headers = {}
        answer = await client.infer(url, InferRequest(name, inputs), model_name=name,
                                    response_headers=headers)
    finally:
        await client.close()
    outputs = {out.name: out.as_numpy().tolist() for out in answer.outputs}
    # the SDK's InferResponse.from_bytes keeps no model_version: the server's header says it
    print(json.dumps({"checks": checks, "model_name": answer.model_name,
                      "x-model-version": headers.get("x-model-version"), "outputs": outputs}))

asyncio.run(main())
"""


def infer(url: str, name: str, rows: dict[str, list]) -> dict:
    """Score ``rows`` ({column: values}) at ``url`` with the kserve SDK's V2 REST client.

    Returns:
        {"checks": [live, ready, model ready], "model_name": ..., "x-model-version": the
        response's header, "outputs": {name: data}}.
    """
    done = subprocess.run([str(kserve_python()), "-c", _INFER, url, name, json.dumps(rows)],
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"the kserve SDK's client failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout)
