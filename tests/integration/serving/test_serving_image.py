"""``python -m serving image``: the build context, and its entrypoint run as the container runs it.

No container engine here: the entrypoint (``python -m serving container serve``, what SageMaker
runs) is started as a process with the image's layout and environment: the code the context
carries on PYTHONPATH, the model folder it carries, the ENV lines of its Dockerfile, and
``$PORT`` as Cloud Run and the KServe manifest set it. Then the SageMaker routes, the V2 routes
(as KServe probes and calls them), ``tritonclient.http`` (from the cached MLServer
environment, tests/support/mlserver.py, which ships it) and the ``kserve`` SDK's REST client
(its own cached environment, tests/support/kserve_sdk.py) score the model. The KServe manifests
are loaded into the kserve SDK's models.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import mlflow.pyfunc
import pytest
import requests
import yaml

from serving.cli import main
from tests.integration.serving.conftest import cancer_champion
from tests.support import kserve_sdk
from tests.support.mlserver import mlserver_bin
from tests.support.processes import REPO, free_port, running

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def context(module_store, tmp_path_factory):
    """The build context of numeric@champion, and the rows it was trained on."""
    version, X = cancer_champion(module_store, "numeric", 5)
    out = tmp_path_factory.mktemp("image") / "context"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", module_store.uri)
        mp.delenv("MLFLOW_REGISTRY_URI", raising=False)
        code = main(["image", "numeric@champion", "--output", str(out),
                     "--image-url", "registry.example/numeric:1"])
    assert code in (0, None)
    return out, version, X


def test_the_build_context_holds_the_image(context):
    out, version, _ = context
    dockerfile = (out / "Dockerfile").read_text()
    assert dockerfile.splitlines()[3] == (
        f"FROM python:{sys.version_info.major}.{sys.version_info.minor}-slim"
    )
    assert "RUN pip install --no-deps -r /app/requirements.lock" in dockerfile
    assert "COPY model /opt/ml/model" in dockerfile
    assert 'ENTRYPOINT ["python", "-m", "serving", "container"]' in dockerfile
    assert (out / "requirements.lock").read_text() == (REPO / "requirements.lock").read_text()
    assert (out / "model" / "MLmodel").is_file()
    assert (out / "app" / "serving" / "online" / "v2.py").is_file()
    assert not list(out.glob("app/**/__pycache__"))
    assert {p.name for p in (out / "app").iterdir()} == {"core", "serving"}
    runtime = yaml.safe_load((out / "kserve" / "servingruntime.yaml").read_text())
    isvc = yaml.safe_load((out / "kserve" / "inferenceservice.yaml").read_text())
    box = runtime["spec"]["containers"][0]
    assert box["image"] == "registry.example/numeric:1" and box["args"] == ["serve"]
    assert box["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    assert runtime["spec"]["protocolVersions"] == ["v2"]
    model = isvc["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"] and model["protocolVersion"] == "v2"
    assert isvc["metadata"]["annotations"]["mlops-registry/model-version"] == version
    # a second run into the same folder would mix two models: refused, nothing touched
    before = sorted(p.name for p in out.iterdir())
    assert main(["image", "numeric@champion", "--output", str(out)]) == 1
    assert sorted(p.name for p in out.iterdir()) == before


def _image_env(out) -> dict:
    """The ENV lines of the context's Dockerfile, paths mapped into the context's folder."""
    text = (out / "Dockerfile").read_text().replace("\\\n", " ")
    env = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            env.update(dict(re.findall(r"(\w+)=(\S+)", line)))
    env["PYTHONPATH"] = str(out / "app")
    env["MLOPS_MODEL_DIR"] = str(out / "model")
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{out / 'nowhere.db'}"
    return env


@pytest.fixture(scope="module")
def container(context):
    """The entrypoint as the image runs it, on $PORT, one worker."""
    out, version, X = context
    port = free_port()
    env = _image_env(out) | {"PORT": str(port), "MLOPS_WORKERS": "1"}
    cmd = [sys.executable, "-m", "serving", "container", "serve"]
    with running(cmd, f"http://127.0.0.1:{port}/ping", "container", env=env,
                 cwd=out / "app"):
        yield f"http://127.0.0.1:{port}", version, X


def test_the_entrypoint_serves_sagemaker_kserve_and_cloud_run(container):
    url, version, X = container
    rows = X.head(4)
    split = {"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}
    answer = requests.post(f"{url}/invocations", json=split, timeout=30)
    assert answer.status_code == 200 and answer.headers["x-model-version"] == version
    expected = answer.json()["predictions"]
    assert len(expected) == 4
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/numeric/ready",
                 f"/v2/models/numeric/versions/{version}/ready"):
        assert requests.get(f"{url}{path}", timeout=10).status_code == 200, path
    tensors = {"inputs": [{"name": c, "datatype": "FP64", "shape": [4], "data": rows[c].tolist()}
                          for c in rows.columns]}
    v2 = requests.post(f"{url}/v2/models/numeric/infer", json=tensors, timeout=30).json()
    assert v2["model_version"] == version and v2["outputs"][0]["data"] == expected
    other = requests.post(f"{url}/v2/models/numeric/versions/999/infer", json=tensors,
                          timeout=30)
    assert other.status_code == 404 and "version 999 not found" in other.json()["error"]


_TRITON = """
import json, sys
import numpy as np
import tritonclient.http as http

url, name, rows = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
client = http.InferenceServerClient(url)
assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(name)
meta = client.get_model_metadata(name)
inputs = []
for spec in meta["inputs"]:
    tensor = http.InferInput(spec["name"], [len(rows[spec["name"]])], spec["datatype"])
    tensor.set_data_from_numpy(np.array(rows[spec["name"]], dtype=np.float64))  # binary
    inputs.append(tensor)
result = client.infer(name, inputs)
print(json.dumps({"version": meta["versions"], "labels": result.as_numpy("output-0").tolist()}))
"""


def test_tritonclient_scores_the_container(container):
    """``tritonclient.http`` as shipped with MLServer (binary tensors by default)."""
    url, version, X = container
    rows = X.head(3)
    python = mlserver_bin().parent / "python"
    done = subprocess.run(
        [str(python), "-c", _TRITON, url.removeprefix("http://"), "numeric",
         json.dumps(rows.to_dict(orient="list"))],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    answer = json.loads(done.stdout)
    split = {"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}
    expected = requests.post(f"{url}/invocations", json=split, timeout=30).json()["predictions"]
    assert answer["version"] == [version]
    assert [label for (label,) in answer["labels"]] == expected


def test_the_kserve_manifests_load_into_the_kserve_sdk(context, tmp_path):
    """Every field is one the SDK's models know, of their type, and survives a round trip."""
    out, _, _ = context
    runtime, isvc = out / "kserve" / "servingruntime.yaml", out / "kserve" / "inferenceservice.yaml"
    # one broken copy of each: the check must catch a misspelled field and a missing one
    bad_runtime, bad_isvc = tmp_path / "runtime.yaml", tmp_path / "isvc.yaml"
    doc = yaml.safe_load(runtime.read_text())
    doc["spec"]["protocolVersion"] = doc["spec"].pop("protocolVersions")
    bad_runtime.write_text(yaml.safe_dump(doc))
    doc = yaml.safe_load(isvc.read_text())
    del doc["spec"]["predictor"]["model"]["modelFormat"]
    bad_isvc.write_text(yaml.safe_dump(doc))
    report = kserve_sdk.validate_manifests({
        str(runtime): "V1alpha1ServingRuntime", str(isvc): "V1beta1InferenceService",
        str(bad_runtime): "V1alpha1ServingRuntime", str(bad_isvc): "V1beta1InferenceService",
    })
    assert report[str(runtime)] == {"class": "V1alpha1ServingRuntime", "problems": [],
                                    "added": {}}
    # the SDK's ModelSpec embeds a container whose name defaults to "" (KServe names it)
    assert report[str(isvc)] == {"class": "V1beta1InferenceService", "problems": [],
                                 "added": {"V1beta1InferenceService.spec.predictor.model.name": ""}}
    assert report[str(bad_runtime)]["problems"] == [
        "V1alpha1ServingRuntime.spec.protocolVersion: unknown to V1alpha1ServingRuntimeSpec"
    ]
    [missing] = report[str(bad_isvc)]["problems"]
    assert missing.startswith("V1beta1InferenceService.spec.predictor.model: ")
    assert "`model_format`, must not be `None`" in missing


def test_the_kserve_sdk_scores_the_container(container, context):
    """kserve's ``InferenceRESTClient`` (protocol v2, binary tensors): pyfunc's answer."""
    url, version, X = container
    rows = X.head(5)
    answer = kserve_sdk.infer(url, "numeric", rows.to_dict(orient="list"))
    expected = mlflow.pyfunc.load_model(str(context[0] / "model")).predict(rows)
    assert answer["checks"] == [True, True, True]
    assert answer["model_name"] == "numeric" and answer["x-model-version"] == version
    assert answer["outputs"] == {"output-0": [[int(label)] for label in expected]}
