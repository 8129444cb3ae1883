"""The production model cannot be deleted, swapped or renamed from outside, by any route.

A data scientist of the README's users file (EDIT on ``mlops-registry-model``, MANAGE on a model
of her own) sends every mutating route of MLflow's app (read from its Flask url_map here, so a
route a new MLflow adds is sent too) in every body form, naming the release manager's model,
its ``champion`` and its versions. Afterwards ``champion`` holds the same version, the versions
and the name are there, and every request whose query string and body disagree got 400. On
SQLite and PostgreSQL, without and with a static prefix (one server each, per module).
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.integration.tracking.conftest import launcher_cmd, sqlite_copy
from tests.integration.tracking.test_governance import (
    ADMIN,
    ALICE,
    RITA,
    SCORING,
    _as,
    _readme_users_file,
)
from tests.support.postgres import fresh_pg_database
from tests.support.processes import REPO, child_env, free_port, running

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROD = "mlops-registry-model"
OWN = "alice-own-model"
PREFIX = "/mlflow"
# The routes the matrix sends: everything that writes the registry, tags, renames or deletes,
# runs and experiments (the ledger of alias moves is a run).
ROUTE_FILTER = re.compile(
    r"registered-model|model-version|alias|tag|rename|delete|prompt|runs/|experiments/")
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
# Searches and bulk gets MLflow takes as a POST: reads (some served outside the Flask app).
READS_BY_POST = re.compile(r"/(?:[\w-]*search[\w-]*|get[\w-]*)/?$")
BODY_FORMS = ("json", "text", "none", "query", "disagree")


@pytest.fixture(
    scope="module",
    # each backend once and the prefix once: the guard reads the request before the store, and
    # strips the prefix before matching, so the other two corners add time, not coverage
    params=[
        ("sqlite", ""),
        pytest.param(("postgres", PREFIX), marks=pytest.mark.postgres),
    ],
    ids=["sqlite", "postgres-prefix"],
)
def server(request, tmp_path_factory, template_sqlite_db):
    """The launcher with --auth (and the prefix), the README's users, champion set by rita."""
    kind, prefix = request.param
    tmp = tmp_path_factory.mktemp(f"routes-{kind}")
    env = {"MLFLOW_AUTH_ADMIN_USERNAME": ADMIN[0], "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN[1]}
    if prefix:
        env["MLFLOW_STATIC_PREFIX"] = prefix  # what `mlflow server --static-prefix` reads
    with contextlib.ExitStack() as stack:
        if kind == "sqlite":
            backend = sqlite_copy(template_sqlite_db, tmp)
        else:
            backend = stack.enter_context(fresh_pg_database(request.getfixturevalue("pg_template")))
            env.update(_team_keys())
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(_auth_config(tmp / "auth.ini", backend))
        port = free_port()
        cmd = launcher_cmd(backend, str(tmp / "artifacts"), port, "--auth")
        url = f"http://127.0.0.1:{port}{prefix}"
        proc = stack.enter_context(
            running(cmd, f"{url}/health", f"routes-{kind}", env=env, cwd=tmp)
        )
        versions = _setup(url, tmp)
        # the launcher found /health under the prefix too: it prints the address once healthy
        assert f"MLflow tracking server: {url} " in proc.log_path.read_text()
        yield {"url": url, "prefix": prefix, "kind": kind, "versions": versions}


def _auth_config(path, backend):
    """The launcher's auth config plus MLflow's credential cache.

    Without it every request pays a scrypt check of the password (~0.3 s of CPU here); the
    matrix sends ~500 requests per server. The checks the matrix tests do not depend on it.
    """
    from tracking.secrets import auth_database_uri, write_auth_config

    write_auth_config(path, auth_database_uri(backend))
    with path.open("a") as f:
        f.write("auth_cache_ttl_seconds = 600\n")
    return path


def _team_keys() -> dict:
    """The keys the launcher wants in the environment for a shared database, when it does."""
    from tests.integration.tracking import conftest

    return conftest.team_keys() if hasattr(conftest, "team_keys") else {}


def _setup(url, tmp):
    """Two versions of PROD, champion on the first (rita's move), and alice's own model."""
    from core.aliases import move_alias

    run = _call(url, ADMIN, "POST", "runs/create", json={"experiment_id": "0"})
    assert run.status_code == 200, run.text
    run_id = run.json()["run"]["info"]["run_id"]
    versions = {}
    for name in (PROD, PROD, OWN):
        if name not in versions:
            created = _call(url, ADMIN, "POST", "registered-models/create", json={"name": name})
            assert created.status_code == 200, created.text
            versions[name] = []
        made = _call(
            url,
            ADMIN,
            "POST",
            "model-versions/create",
            json={"name": name, "source": f"runs:/{run_id}/model", "run_id": run_id},
        )
        assert made.status_code == 200, made.text
        versions[name].append(made.json()["model_version"]["version"])
    users = tmp / "users.yaml"
    users.write_text(_readme_users_file())
    applied = subprocess.run(
        [sys.executable, "-m", "tracking", "users", "apply", str(users)],
        capture_output=True, text=True, cwd=REPO, timeout=120,
        env=child_env({"MLFLOW_AUTH_ADMIN_USERNAME": ADMIN[0],
                       "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN[1], "MLFLOW_TRACKING_URI": url,
                       "ALICE_PASSWORD": ALICE[1], "SCORING_PASSWORD": SCORING[1],
                       "RITA_PASSWORD": RITA[1]}),
    )  # fmt: skip
    assert applied.returncode == 0, applied.stderr
    # the worst case for the matrix: alice holds MANAGE on a model of her own
    import mlflow
    from mlflow.server.auth.client import AuthServiceClient

    with _as(ADMIN):
        AuthServiceClient(url).grant_user_permission("alice", "registered_model", OWN, "MANAGE")
    with _as(RITA):
        client = mlflow.MlflowClient(url, url)
        move_alias(client, PROD, versions[PROD][0], "champion", "release 1")
    assert _state(url)["aliases"] == {"champion": versions[PROD][0]}
    return versions


def _call(url, user, method, endpoint, api="api/2.0", **kwargs):
    return requests.request(method, f"{url}/{api}/mlflow/{endpoint}", auth=user, timeout=60,
                            **kwargs)  # fmt: skip


def _state(url) -> dict:
    """What the registry holds for PROD, read as the admin."""
    model = _call(url, ADMIN, "GET", "registered-models/get", params={"name": PROD})
    if model.status_code != 200:
        return {"exists": False}
    found = _call(url, ADMIN, "GET", "model-versions/search",
                  params={"filter": f"name='{PROD}'"})  # fmt: skip
    assert found.status_code == 200, found.text
    body = model.json()["registered_model"]
    return {
        "exists": True,
        "aliases": {a["alias"]: a["version"] for a in body.get("aliases", [])},
        "versions": sorted(v["version"] for v in found.json().get("model_versions", [])),
    }


def _history(url, name=PROD) -> list[dict]:
    model = _call(url, ADMIN, "GET", "registered-models/get", params={"name": name})
    assert model.status_code == 200, model.text
    tags = model.json()["registered_model"].get("tags", [])
    records = [json.loads(t["value"]) for t in tags if t["key"].startswith("mlops.history.")]
    return sorted(records, key=lambda r: r["id"])


def mutating_routes() -> list[tuple[str, str]]:
    """``(rule, method)`` of every matching mutating route of MLflow's Flask app, unprefixed."""
    from mlflow.server import app

    return sorted(
        {
            (rule.rule, method)
            for rule in app.url_map.iter_rules()
            for method in rule.methods & MUTATING
            if ROUTE_FILTER.search(rule.rule) and "/mlflow-artifacts/" not in rule.rule
            and not READS_BY_POST.search(rule.rule)
        }
    )


def _payload(version: str, record: dict, rule: str) -> dict:
    """Every parameter a write names, all naming the production model's objects and the ledger.

    ``key`` and ``value`` rewrite the champion's history record as a forged one; a run's or an
    experiment's route gets the ledger's ``run_id`` and ``experiment_id`` (the registry's routes
    none, so their own guards answer).
    """
    forged = {**record["record"], "reason": "forged", "at": 9999999999999}
    payload = {
        "name": PROD, "alias": "champion", "version": version, "new_name": f"{PROD}-stolen",
        "key": record["key"], "value": json.dumps(forged), "stage": "Archived",
        "archive_existing_versions": True, "description": "stolen", "source": "runs:/0/model",
    }  # fmt: skip
    if re.search(r"/(?:runs|experiments)/", rule):
        payload.update(run_id=record["ledger_run"], experiment_id=record["ledger_experiment"])
    return payload


def _send(url, rule, method, form, version, own_version, record):
    path = re.sub(r"<(?:\w+:)?(\w+)>", r"\1-x", rule)  # a value for each path parameter
    target = f"{url}{path}"
    body = json.dumps(_payload(version, record, rule))
    kwargs: dict = {}
    if form == "json":
        kwargs = {"data": body, "headers": {"Content-Type": "application/json"}}
    elif form == "text":
        kwargs = {"data": body, "headers": {"Content-Type": "text/plain"}}
    elif form == "none":
        kwargs = {"data": body.encode()}  # requests sends no Content-Type for bytes
    elif form == "query":
        kwargs = {"params": {k: str(v) for k, v in _payload(version, record, rule).items()}}
    else:  # the permission check's object in the query, production's in the body
        kwargs = {
            "data": body,
            "headers": {"Content-Type": "text/plain"},
            "params": {"name": OWN, "alias": "challenger", "version": own_version},
        }
    resp = requests.request(method, target, auth=ALICE, timeout=60, **kwargs)
    return rule, method, form, resp.status_code, resp.text[:200]


def _record(url) -> dict:
    """What the server keeps: the ledger (params, experiment, runs) and PROD's mlops.* tags."""
    exp = _call(url, ADMIN, "GET", "experiments/get-by-name",
                params={"experiment_name": "mlops-registry-ledger"})  # fmt: skip
    assert exp.status_code == 200, exp.text
    experiment = exp.json()["experiment"]
    runs = _call(url, ADMIN, "POST", "runs/search",
                 json={"experiment_ids": [experiment["experiment_id"]], "run_view_type": "ALL"})
    assert runs.status_code == 200, runs.text
    (run,) = runs.json()["runs"]
    model = _call(url, ADMIN, "GET", "registered-models/get", params={"name": PROD})
    tags = {t["key"]: t["value"] for t in model.json()["registered_model"].get("tags", [])}
    found = _call(url, ADMIN, "GET", "model-versions/search", params={"filter": f"name='{PROD}'"})
    version_tags = {(v["version"], t["key"]): t["value"]
                    for v in found.json()["model_versions"] for t in v.get("tags", [])}
    history = sorted(k for k in tags if k.startswith("mlops.history."))
    return {
        "experiment": (experiment["name"], experiment["lifecycle_stage"]),
        "ledger_experiment": experiment["experiment_id"], "ledger_run": run["info"]["run_id"],
        "params": {p["key"]: p["value"] for p in run["data"].get("params", [])},
        "run": (run["info"]["lifecycle_stage"], run["info"]["status"],
                sorted((t["key"], t["value"]) for t in run["data"].get("tags", []))),
        "tags": {k: v for k, v in tags.items() if k.startswith("mlops.")},
        "version_tags": {k: v for k, v in version_tags.items() if k[1].startswith("mlops.")},
        "key": history[-1], "record": json.loads(tags[history[-1]]),
    }  # fmt: skip


def _assert_only_refusals_added(before: dict, after: dict) -> None:
    same = ("experiment", "ledger_experiment", "ledger_run", "run", "version_tags")
    assert {k: after[k] for k in same} == {k: before[k] for k in same}
    assert {k: after["params"][k] for k in before["params"]} == before["params"]
    assert all("/.chain/" in k for k in set(after["params"]) - set(before["params"]))
    assert {k: after["tags"][k] for k in before["tags"]} == before["tags"]
    added = [json.loads(after["tags"][k]) for k in set(after["tags"]) - set(before["tags"])]
    assert {(r["outcome"], r["by"]) for r in added} <= {("refused", "alice")}


def test_no_route_in_any_body_form_changes_the_production_model(server):
    url, versions = server["url"], server["versions"]
    before = _state(url)
    record = _record(url)
    routes = mutating_routes()
    assert len(routes) >= 90  # api and ajax-api twins of the registry, tags, deletes, prompts
    for required in ("registered-models/rename", "registered-models/delete", "model-versions/"
                     "delete", "registered-models/alias", "model-versions/set-tag"):  # fmt: skip
        assert any(rule.endswith(required) for rule, _ in routes), required
    jobs = [(rule, method, form) for rule, method in routes for form in BODY_FORMS]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(
            lambda job: _send(url, *job, versions[PROD][0], versions[OWN][0], record), jobs
        ))  # fmt: skip
    after = _state(url)
    # the ledger and the record the server keeps: nothing changed but the refusals it recorded
    _assert_only_refusals_added(record, _record(url))
    assert after["exists"], "the production model is gone or renamed"
    assert after["aliases"] == before["aliases"] == {"champion": versions[PROD][0]}
    # she may register versions (EDIT); none of production's went away
    assert set(before["versions"]) == set(versions[PROD]) <= set(after["versions"])
    gone = _call(url, ADMIN, "GET", "registered-models/get", params={"name": f"{PROD}-stolen"})
    assert gone.status_code == 404
    disagreeing = [r for r in results if r[2] == "disagree" and r[3] != 400]
    assert disagreeing == [], disagreeing[:5]
    assert len(results) == len(routes) * len(BODY_FORMS)


def test_the_issue_s_delete_shapes_are_refused(server):
    """The report's requests: query on her model, production's champion in a text/plain body."""
    url, versions = server["url"], server["versions"]
    v1, own = versions[PROD][0], versions[OWN][0]
    body = json.dumps({"name": PROD, "alias": "champion"})
    for api in ("api/2.0", "ajax-api/2.0"):
        shaped = _call(url, ALICE, "DELETE", "registered-models/alias", api, data=body,
                       params={"name": OWN, "alias": "challenger"},
                       headers={"Content-Type": "text/plain"})  # fmt: skip
        assert shaped.status_code == 400
        assert shaped.json()["message"] == (
            f"the query string says name='{OWN}' but the body says name='{PROD}': send a "
            "write's parameters in its body only"
        )
        deletes = [
            ("registered-models/alias", {"name": PROD, "alias": "champion"}),
            ("model-versions/delete", {"name": PROD, "version": v1}),
            ("registered-models/delete", {"name": PROD}),
        ]
        for endpoint, params in deletes:
            plain = _call(url, ALICE, "DELETE", endpoint, api, data=json.dumps(params),
                          headers={"Content-Type": "text/plain"})  # fmt: skip
            assert plain.status_code == 403, (endpoint, plain.text)
            mixed = _call(url, ALICE, "DELETE", endpoint, api, data=json.dumps(params),
                          params={"name": OWN, "version": own})  # fmt: skip
            assert mixed.status_code == 400, (endpoint, mixed.text)
    # MLflow's own check refuses her deletes (EDIT); a set reaches the guard and is recorded
    body = json.dumps({"name": PROD, "alias": "champion", "version": v1})
    assert _call(url, ALICE, "POST", "registered-models/alias", data=body,
                 headers={"Content-Type": "application/json"}).status_code == 403  # fmt: skip
    assert _state(url)["aliases"] == {"champion": v1}
    last = _history(url)[-1]
    assert (last["alias"], last["by"], last["outcome"]) == ("champion", "alice", "refused")


def test_a_prompt_creator_gets_edit_like_a_model_creator(server):
    url = server["url"]
    for resource_type, tags in (
        ("prompt", [{"key": "mlflow.prompt.is_prompt", "value": "true"}]),
        ("registered_model", []),
    ):
        name = f"alice-{resource_type}-{server['kind']}"
        created = _call(
            url, ALICE, "POST", "registered-models/create", json={"name": name, "tags": tags}
        )
        assert created.status_code == 200, created.text
        grants = _call(url, ADMIN, "GET", "users/permissions/list", "api/3.0",
                       params={"username": "alice"})  # fmt: skip
        assert grants.status_code == 200, grants.text
        held = {
            (g["resource_type"], g["permission"])
            for g in grants.json()["permissions"]
            if g["resource_pattern"] == name
        }
        assert held == {(resource_type, "EDIT")}
        # EDIT does not delete: her own prompt or model stays for the release manager
        deleted = _call(url, ALICE, "DELETE", "registered-models/delete", json={"name": name})
        assert deleted.status_code == 403


def test_renames_of_production_names_are_for_release_managers(server):
    url, versions = server["url"], server["versions"]
    v1 = versions[PROD][0]

    def rename(user, name, new_name):
        return _call(
            url, user, "POST", "registered-models/rename", json={"name": name, "newName": new_name}
        )  # camelCase, as protobuf allows

    # away, and onto the name it holds: refused and recorded in production's history
    away = rename(ALICE, PROD, f"{PROD}-old")
    assert away.status_code == 403
    assert away.json()["message"] == (
        f"alice may not rename the production model {PROD} to {PROD}-old: it holds or held the "
        "protected alias champion; only a release manager or an admin may"
    )
    assert rename(ALICE, OWN, PROD).status_code == 403
    refused = [r for r in _history(url) if r["outcome"] == "refused" and r["by"] == "alice"]
    assert {r["reason"] for r in refused} >= {
        f"rename the production model {PROD} to {PROD}-old",
        f"rename {OWN} onto the production name {PROD}",
    }
    # the release manager renames; champion and her permission follow the model
    moved = rename(RITA, PROD, f"{PROD}-next")
    assert moved.status_code == 200, moved.text
    try:
        held = _call(url, ADMIN, "GET", "registered-models/get", params={"name": f"{PROD}-next"})
        aliases = held.json()["registered_model"]["aliases"]
        assert aliases == [{"alias": "champion", "version": v1}]
        # the freed name held champion (the ledger says so): nobody else takes it
        taken = rename(ALICE, OWN, PROD)
        assert taken.status_code == 403
        assert "onto the production name" in taken.json()["message"]
        assert _history(url, OWN)[-1]["reason"] == f"rename {OWN} onto the production name {PROD}"
    finally:
        back = rename(RITA, f"{PROD}-next", PROD)
        assert back.status_code == 200, back.text
    assert _state(url)["aliases"] == {"champion": v1}


def test_the_release_manager_still_promotes_deletes_and_renames(server):
    import mlflow

    from core.aliases import move_alias

    url, versions = server["url"], server["versions"]
    v1, v2 = versions[PROD]
    # an unprotected version is hers to delete; the champion's is nobody's until it moves
    held = _call(url, RITA, "DELETE", "model-versions/delete", json={"name": PROD, "version": v1})
    assert held.status_code == 403
    assert _history(url)[-1]["reason"] == f"delete version {v1} of {PROD}"
    with _as(RITA):
        client = mlflow.MlflowClient(url, url)
        assert move_alias(client, PROD, v2, "champion", "release 2").status == "promoted"
        assert move_alias(client, PROD, v1, "champion", "back to 1").status == "promoted"
    won = [(r["by"], r["version"]) for r in _history(url) if r["outcome"] == "won"]
    assert won[-2:] == [("rita", v2), ("rita", v1)]
    # not over MLflow's alias route: champion moves only through the server's promotion route
    for method, body in (("DELETE", {"name": PROD, "alias": "champion"}),
                         ("POST", {"name": PROD, "alias": "champion", "version": v2})):
        plain = _call(url, RITA, method, "registered-models/alias", json=body)
        assert plain.status_code == 403
        assert "moves only through the server's promotion route" in plain.json()["message"]
    assert _state(url)["aliases"] == {"champion": v1}


def test_nobody_writes_the_record_the_server_keeps_and_the_steering_race_fails(server,
                                                                              monkeypatch,
                                                                              capsys):
    """The issue's insider: a data scientist claims the ledger slot after the release manager's.

    She cannot: nobody writes the ledger or an mlops.* tag over MLflow's routes, the release
    manager and the admin included; champion ends where the release manager put it, the history
    names her, and the chain verifies.
    """
    import mlflow

    from core.aliases import move_alias
    from core.errors import MlopsError
    from core.ledger import slot_key
    from registry.cli import main

    url, versions = server["url"], server["versions"]
    v1, v2 = versions[PROD]
    before = _record(url)
    head = max(int(k.rsplit("/", 1)[1]) for k in before["params"] if "/champion/" in k)
    steer = {"run_id": before["ledger_run"], "key": slot_key(PROD, "champion", head + 1),
             "value": f"0000000000000-steer v{v2} p{v1}"}
    forged = {**before["record"], "reason": "forged", "at": 9999999999999}
    for user in (ALICE, RITA, ADMIN):
        writes = [
            _call(url, user, "POST", "runs/log-parameter", json=steer),
            _call(url, user, "POST", "runs/log-batch", json={
                "run_id": steer["run_id"], "params": [{"key": steer["key"], "value": "x"}]}),
            _call(url, user, "POST", "runs/create",
                  json={"experiment_id": before["ledger_experiment"]}),
            _call(url, user, "POST", "experiments/create",
                  json={"name": "mlops-registry-ledger"}),
            _call(url, user, "POST", "registered-models/set-tag",
                  json={"name": PROD, "key": before["key"], "value": json.dumps(forged)}),
            _call(url, user, "DELETE", "registered-models/delete-tag",
                  json={"name": PROD, "key": before["key"]}),
            _call(url, user, "POST", "model-versions/set-tag",
                  json={"name": PROD, "version": v1, "key": "mlops.promotion.champion.reason",
                        "value": "forged"}),
            _call(url, user, "POST", "model-versions/create",
                  json={"name": PROD, "source": "runs:/0/model",
                        "tags": [{"key": "mlops.promotion.champion.by", "value": "rita"}]}),
            _call(url, user, "POST", "model-versions/create",  # a card approved at birth
                  json={"name": PROD, "source": "runs:/0/model",
                        "tags": [{"key": "mlops.card_status", "value": "Approved"}]}),
        ]  # fmt: skip
        assert [w.status_code for w in writes] == [403] * len(writes), [w.text for w in writes]
    assert writes[0].json()["message"] == (
        "admin may not write the ledger of alias moves (experiment mlops-registry-ledger): the "
        "tracking server writes it; move aliases with python -m registry promote / rollback")
    assert writes[4].json()["message"].startswith(
        f"admin may not set the tag {before['key']} of {PROD}: mlops.* tags on models and "
        "versions are written by the tracking server only; use python -m registry promote")
    _assert_only_refusals_added(before, _record(url))

    # her own route to champion is refused and recorded; a claim for no version is never made
    with _as(ALICE):
        client = mlflow.MlflowClient(url, url)
        with pytest.raises(MlopsError, match=r"refused by the tracking server \(403\): alice may"):
            move_alias(client, PROD, v2, "champion", "steer", by="rita")
    with _as(RITA):
        client = mlflow.MlflowClient(url, url)
        with pytest.raises(MlopsError, match="not found|does not exist|unknown"):
            move_alias(client, PROD, "999", "champion", "no such version")
        outcome = move_alias(client, PROD, v2, "champion", "release 2", by="mallory")
    assert (outcome.status, outcome.version) == ("promoted", v2)
    assert _state(url)["aliases"] == {"champion": v2}
    last = _history(url)[-1]
    assert (last["by"], last["version"], last["outcome"]) == ("rita", v2, "won")
    assert _history(url)[-2]["by"] == "alice" and _history(url)[-2]["outcome"] == "refused"

    # the chain the server wrote verifies, read as the data scientist
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    mlflow.set_tracking_uri(url)  # the autouse fixture's store otherwise (reset afterwards)
    mlflow.set_registry_uri(url)
    with _as(ALICE):
        assert main(["audit", "verify", PROD]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{PROD}: the chain is whole (") and " records)" in out
    with _as(RITA):  # champion back where the other tests expect it
        move_alias(mlflow.MlflowClient(url, url), PROD, v1, "champion", "back to 1")
