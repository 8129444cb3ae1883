"""The alias follower against a real (SQLite) registry: swap on move, keep serving on failure."""

from __future__ import annotations

import mlflow
import pytest

from core.models import ModelNotFound, resolve_model
from core.uris import parse_model_ref
from serving.online.app import ModelHolder, Served
from serving.online.follow import AliasFollower
from serving.online.model import load_scorer
from tests.support.serving_models import cancer_data, fit_pipeline, log_sklearn_version


@pytest.fixture
def registry():
    X, y = cancer_data()
    client = mlflow.MlflowClient()
    v1 = log_sklearn_version(client, "cancer", fit_pipeline(X, y, C=1.0), X)
    v2 = log_sklearn_version(client, "cancer", fit_pipeline(X, y, C=0.01), X)
    client.set_registered_model_alias("cancer", "champion", v1)
    return client, v1, v2


def _serving(client, ref):
    info = resolve_model(client, ref)
    return ModelHolder(Served(info, load_scorer(info.uri)))


def test_follower_swaps_to_the_new_version(registry):
    client, v1, v2 = registry
    ref = parse_model_ref("cancer@champion")
    holder = _serving(client, ref)
    follower = AliasFollower(client, ref, holder, poll_seconds=60)
    assert follower.check() is False
    client.set_registered_model_alias("cancer", "champion", v2)
    assert follower.check() is True
    assert holder.current.info.version == v2
    assert holder.current.info.uri == f"models:/cancer/{v2}"
    assert holder.current.scorer.kind == "sklearn"


def test_a_version_that_fails_to_load_leaves_the_old_one_serving(registry):
    client, v1, v2 = registry
    ref = parse_model_ref("cancer@champion")
    holder = _serving(client, ref)

    def broken(uri):
        raise OSError("artifact store unreachable")

    follower = AliasFollower(client, ref, holder, poll_seconds=60, loader=broken)
    client.set_registered_model_alias("cancer", "champion", v2)
    assert follower.check() is False
    assert holder.current.info.version == v1
    client.delete_registered_model_alias("cancer", "champion")
    assert follower.check() is False  # alias gone: keep serving
    assert holder.current.info.version == v1


def test_resolve_names_the_missing_alias(registry):
    client, _, _ = registry
    with pytest.raises(ModelNotFound) as info:
        resolve_model(client, parse_model_ref("cancer@nope"))
    assert str(info.value) == "model 'cancer' has no alias 'nope'"
    with pytest.raises(ModelNotFound) as info:
        resolve_model(client, parse_model_ref("nosuch@champion"))
    assert str(info.value) == "unknown model 'nosuch'"
    info = resolve_model(client, parse_model_ref("models:/cancer/2"))
    assert (info.name, info.version, info.alias) == ("cancer", "2", None)


def test_fast_path_uses_arrays_for_a_plain_pipeline_and_matches_pyfunc(registry):
    import json

    X, _ = cancer_data()
    scorer = load_scorer("models:/cancer@champion")
    assert scorer.kind == "sklearn" and scorer.as_array
    rows = X.sample(40, random_state=3)
    body = json.dumps({"dataframe_split": json.loads(rows.to_json(orient="split", index=False))})
    got = json.loads(scorer.score(body.encode(), "application/json"))["predictions"]
    assert got == mlflow.pyfunc.load_model("models:/cancer@champion").predict(rows).tolist()


def test_a_webhook_only_wakes_the_follower_and_the_registry_decides(registry):
    import time

    from serving.online.webhooks import AliasEvent

    client, v1, v2 = registry
    ref = parse_model_ref("cancer@champion")
    holder = _serving(client, ref)
    loaded: list[str] = []

    def loader(uri):
        loaded.append(uri)
        return load_scorer(uri)

    follower = AliasFollower(client, ref, holder, poll_seconds=600, loader=loader).start()
    try:
        # announced, but the registry still names v1: nothing is loaded
        for i in range(50):
            follower.on_event(AliasEvent("cancer", "champion", v2, "created", f"d{i}"))
        time.sleep(1.0)
        assert (holder.current.info.version, loaded) == (v1, [])
        client.set_registered_model_alias("cancer", "champion", v2)
        follower.on_event(AliasEvent("cancer", "champion", v2, "created", "d-real"))
        deadline = time.monotonic() + 10
        while holder.current.info.version != v2:
            assert time.monotonic() < deadline, "the announced move was not followed"
            time.sleep(0.02)
    finally:
        follower.stop()
    assert loaded == [f"models:/cancer/{v2}"]


def test_a_load_the_registry_no_longer_confirms_is_dropped(registry):
    client, v1, v2 = registry
    ref = parse_model_ref("cancer@champion")
    holder = _serving(client, ref)

    def loader(uri):  # the alias moves back while the new version loads
        client.set_registered_model_alias("cancer", "champion", v1)
        return load_scorer(uri)

    follower = AliasFollower(client, ref, holder, poll_seconds=600, loader=loader)
    client.set_registered_model_alias("cancer", "champion", v2)
    assert follower.check() is False
    assert holder.current.info.version == v1
