"""Governance the server enforces (``python -m tracking server --auth``), on SQLite and PostgreSQL.

The users are those of the users-and-permissions guide (docs/operations): a data scientist with EDIT on the model, a service that reads,
a release manager. Only the release manager (or an admin) moves ``champion``, whatever the
client; the history names the user the server authenticated.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest
import requests

from tests.integration.registry.conftest import log_candidate, register, write_policy
from tests.integration.tracking.conftest import launched, sqlite_copy
from tests.support.postgres import fresh_pg_database
from tests.support.processes import REPO, child_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ADMIN = ("admin", "admin-password-123")
ALICE = ("alice", "alice-password-123")
SCORING = ("scoring", "scoring-password-123")
RITA = ("rita", "rita-password-123")
ROB = ("rob", "rob-password-123")
MODEL = "governed-model"
USERS_FILE = textwrap.dedent(
    f"""\
    users:
      - {{name: alice, role: data_scientist, password_env: ALICE_PW,
          experiments: [mlops-registry], models: [{MODEL}]}}
      - {{name: scoring, role: service, password_env: SCORING_PW, models: [{MODEL}]}}
      - {{name: rita, role: release_manager, password_env: RITA_PW, models: [{MODEL}]}}
      - {{name: rob, role: release_manager, password_env: ROB_PW, models: [{MODEL}]}}
    """
)
PASSWORDS = {"ALICE_PW": ALICE[1], "SCORING_PW": SCORING[1], "RITA_PW": RITA[1],
             "ROB_PW": ROB[1]}  # fmt: skip


@contextlib.contextmanager
def _as(user):
    keys = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update(dict(zip(keys, user, strict=True)))
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def server(request, tmp_path_factory, template_sqlite_db):
    """The launcher with --auth, the README's users applied, two versions of MODEL."""
    tmp = tmp_path_factory.mktemp(f"governance-{request.param}")
    policies = tmp / "policies"  # the server's own policy folder (its approvals per alias)
    policies.mkdir()
    env = {"MLFLOW_AUTH_ADMIN_USERNAME": ADMIN[0], "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN[1],
           "MLOPS_POLICY_DIR": str(policies)}  # fmt: skip
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            backend = sqlite_copy(template_sqlite_db, tmp)
        else:
            backend = stack.enter_context(
                fresh_pg_database(request.getfixturevalue("pg_template"))
            )
        url, _ = stack.enter_context(
            launched(backend, str(tmp / "artifacts"), "--auth", env=env, cwd=tmp,
                     name=f"governance-{request.param}")
        )  # fmt: skip
        with _as(ADMIN):
            logged = log_candidate(url, n_features=3)
            versions = [register(url, MODEL, logged) for _ in range(2)]
        users = tmp / "users.yaml"
        users.write_text(USERS_FILE)
        applied = _apply(url, users)
        assert applied.returncode == 0, applied.stderr
        yield {"url": url, "versions": versions, "users": users, "applied": applied.stdout,
               "kind": request.param, "policies": policies,
               "artifacts": tmp / "artifacts"}  # fmt: skip


def _apply(url, users_file):
    env = child_env({"MLFLOW_AUTH_ADMIN_USERNAME": ADMIN[0],
                     "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN[1], "MLFLOW_TRACKING_URI": url,
                     **PASSWORDS})  # fmt: skip
    cmd = [sys.executable, "-m", "tracking", "users", "apply", str(users_file)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)


def _call(url, user, method, endpoint, ajax=False, **kwargs):
    base = "ajax-api" if ajax else "api"
    return requests.request(method, f"{url}/{base}/2.0/mlflow/{endpoint}", auth=user,
                            timeout=30, **kwargs)  # fmt: skip


def _alias(url, user, alias, version, method="POST", ajax=False):
    if method == "DELETE":  # a JSON body, as MLflow's client and UI send it
        return _call(url, user, "DELETE", "registered-models/alias", ajax,
                     json={"name": MODEL, "alias": alias})  # fmt: skip
    return _call(url, user, "POST", "registered-models/alias", ajax,
                 json={"name": MODEL, "alias": alias, "version": version})  # fmt: skip


def _model(url):
    resp = _call(url, ADMIN, "GET", "registered-models/get", params={"name": MODEL})
    assert resp.status_code == 200, resp.text
    return resp.json()["registered_model"]


def _aliases(url) -> dict[str, str]:
    return {a["alias"]: a["version"] for a in _model(url).get("aliases", [])}


def _history(url) -> list[dict]:
    tags = _model(url).get("tags", [])
    records = [json.loads(t["value"]) for t in tags if t["key"].startswith("mlops.history.")]
    return sorted(records, key=lambda r: r["id"])


def test_users_apply_gives_the_release_manager_role_once(server):
    assert "release_manager" in server["applied"] and "assigned" in server["applied"]
    again = _apply(server["url"], server["users"])
    assert again.returncode == 0, again.stderr
    assert "assigned" not in again.stdout and "created" not in again.stdout


def test_data_scientist_sets_challenger_not_champion(server):
    url, (v1, _) = server["url"], server["versions"]
    assert _alias(url, ALICE, "challenger", v1).status_code == 200
    refused = _alias(url, ALICE, "champion", v1)
    assert refused.status_code == 403
    assert refused.json()["message"] == (
        f"alice may not set alias 'champion' of {MODEL} over MLflow's alias route: 'champion' "
        "is protected and moves only through the server's promotion route (python -m registry "
        "promote / rollback)"
    )
    # the UI's own call (the ajax twin), and a delete, are refused the same way
    assert _alias(url, ALICE, "champion", v1, ajax=True).status_code == 403
    assert _alias(url, ALICE, "champion", v1, "DELETE", ajax=True).status_code == 403
    assert "champion" not in _aliases(url) and _aliases(url)["challenger"] == v1
    # the refusal is in the history, under the user the server authenticated
    last = _history(url)[-1]
    assert (last["alias"], last["by"], last["outcome"]) == ("champion", "alice", "refused")


def test_data_scientist_registers_versions(server):
    url = server["url"]
    run = _call(url, ALICE, "POST", "runs/create",
                json={"experiment_id": _experiment_id(url)})  # fmt: skip
    assert run.status_code == 200, run.text
    run_id = run.json()["run"]["info"]["run_id"]
    created = _call(url, ALICE, "POST", "model-versions/create",
                    json={"name": MODEL, "source": f"runs:/{run_id}/model",
                          "run_id": run_id})  # fmt: skip
    assert created.status_code == 200, created.text


def _experiment_id(url):
    resp = _call(url, ALICE, "GET", "experiments/get-by-name",
                 params={"experiment_name": "mlops-registry"})  # fmt: skip
    assert resp.status_code == 200, resp.text
    return resp.json()["experiment"]["experiment_id"]


def test_the_python_client_is_refused_too(server):
    import mlflow

    url, (v1, _) = server["url"], server["versions"]
    with _as(ALICE):
        client = mlflow.MlflowClient(url, url)
        with pytest.raises(mlflow.exceptions.MlflowException, match="protected"):
            client.set_registered_model_alias(MODEL, "champion", v1)
    assert "champion" not in _aliases(url)


def test_service_gets_403_on_every_write(server):
    url, (v1, _) = server["url"], server["versions"]
    assert _call(url, SCORING, "GET", "registered-models/get",
                 params={"name": MODEL}).status_code == 200  # fmt: skip
    writes = [
        _alias(url, SCORING, "challenger", v1),
        _alias(url, SCORING, "champion", v1),
        _alias(url, SCORING, "challenger", v1, "DELETE"),
        _call(url, SCORING, "POST", "model-versions/create",
              json={"name": MODEL, "source": "runs:/0/model"}),
        _call(url, SCORING, "POST", "registered-models/set-tag",
              json={"name": MODEL, "key": "k", "value": "v"}),
        _call(url, SCORING, "DELETE", "model-versions/delete",
              json={"name": MODEL, "version": v1}),
        _call(url, SCORING, "DELETE", "registered-models/delete", json={"name": MODEL}),
        _call(url, SCORING, "POST", "registered-models/create", json={"name": "scoring-own"}),
    ]  # fmt: skip
    assert [w.status_code for w in writes] == [403] * len(writes)


def test_release_manager_promotes_and_the_history_names_her(server, tmp_path):
    url, (v1, _) = server["url"], server["versions"]
    write_policy(tmp_path, MODEL)
    env = {"MLFLOW_TRACKING_URI": url, "MLOPS_POLICY_DIR": str(tmp_path), "COLUMNS": "250"}

    def promote(user, ref, reason):
        extra = {**env, "MLFLOW_TRACKING_USERNAME": user[0], "MLFLOW_TRACKING_PASSWORD": user[1]}
        cmd = [sys.executable, "-m", "registry", "promote", ref, "--reason", reason]
        return subprocess.run(cmd, capture_output=True, text=True, env=child_env(extra),
                              cwd=tmp_path, timeout=180)  # fmt: skip

    denied = promote(ALICE, f"{MODEL}/{v1}", "let me")
    assert denied.returncode == 1
    assert [ln for ln in denied.stderr.splitlines() if ln.startswith("error:")] == [
        "error: refused by the tracking server (403): alice may not set alias 'champion' of "
        f"{MODEL}: 'champion' is protected, only a release manager or an admin may set or delete "
        "it (python -m registry promote)"
    ], denied.stderr
    assert "champion" not in _aliases(url)
    done = promote(RITA, f"{MODEL}/{v1}", "release 1")
    assert done.returncode == 0, done.stderr
    assert _aliases(url)["champion"] == v1
    won = [r for r in _history(url) if r["outcome"] == "won" and r["alias"] == "champion"]
    assert [(r["by"], r["version"], r["reason"]) for r in won] == [("rita", v1, "release 1")]


def test_the_server_writes_who_moved_not_the_client(server):
    import mlflow

    from core.aliases import move_alias

    url, (_, v2) = server["url"], server["versions"]
    with _as(RITA):
        client = mlflow.MlflowClient(url, url)
        move_alias(client, MODEL, v2, "champion", "claims to be someone else", by="mallory")
        version = client.get_model_version(MODEL, v2)
    record = _history(url)[-1]
    assert (record["by"], record["version"], record["outcome"]) == ("rita", v2, "won")
    assert version.tags["mlops.promotion.champion.by"] == "rita"


def test_a_version_or_model_holding_champion_is_not_deleted(server):
    url = server["url"]
    holder = _aliases(url).get("champion") or server["versions"][0]
    if "champion" not in _aliases(url):
        assert _alias(url, RITA, "champion", holder).status_code == 200
    for user in (RITA, ADMIN):
        version = _call(url, user, "DELETE", "model-versions/delete",
                        json={"name": MODEL, "version": holder})  # fmt: skip
        assert version.status_code == 403
        assert "holds the protected alias champion" in version.json()["message"]
    model = _call(url, ADMIN, "DELETE", "registered-models/delete", json={"name": MODEL})
    assert model.status_code == 403
    assert _aliases(url)["champion"] == holder


def test_a_data_scientist_creating_a_model_gets_edit_not_manage(server):
    url = server["url"]
    created = _call(url, ALICE, "POST", "registered-models/create",
                    json={"name": f"alice-own-{server['kind']}"})  # fmt: skip
    assert created.status_code == 200, created.text
    from mlflow.server.auth.client import AuthServiceClient

    with _as(ADMIN):
        perm = AuthServiceClient(url).get_user_permission(
            "alice", "registered_model", f"alice-own-{server['kind']}"
        )
    assert perm.permission == "EDIT"


def _readme_users_file() -> str:
    text = (REPO / "docs" / "operations" / "users-and-permissions.md").read_text()
    start = text.index("# users.yaml\n")
    return text[start : text.index("```", start)]


def test_the_readme_users_file_gives_each_group_what_it_needs(server, tmp_path):
    import mlflow

    from core.aliases import move_alias
    from core.errors import MlopsError

    url, name = server["url"], "mlops-registry-model"
    with _as(ADMIN):
        logged = log_candidate(url, n_features=3)
        # register() gives the newest version challenger, as the workflow does: move the first
        version, newest = [register(url, name, logged) for _ in range(2)]
    users = tmp_path / "users.yaml"
    users.write_text(_readme_users_file())
    env = child_env({"MLFLOW_AUTH_ADMIN_USERNAME": ADMIN[0],
                     "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN[1], "MLFLOW_TRACKING_URI": url,
                     "ALICE_PASSWORD": ALICE[1], "SCORING_PASSWORD": SCORING[1],
                     "RITA_PASSWORD": RITA[1]})  # fmt: skip
    cmd = [sys.executable, "-m", "tracking", "users", "apply", str(users)]
    applied = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO,
                             timeout=300)
    assert applied.returncode == 0, applied.stderr

    def move(user, alias, to=version):
        with _as(user):
            client = mlflow.MlflowClient(url, url)
            return move_alias(client, name, to, alias, "readme users").status

    # the workflow's challenger move, as the data scientist; champion is not hers
    assert move(ALICE, "challenger") == "promoted"
    with pytest.raises(MlopsError, match="refused by the tracking server .403.: alice may not"):
        move(ALICE, "champion")
    # the service reads the alias it serves and moves nothing
    with pytest.raises(MlopsError, match="403"):
        move(SCORING, "challenger", newest)
    with _as(SCORING):
        client = mlflow.MlflowClient(url, url)
        assert client.get_model_version_by_alias(name, "challenger").version == version
    # the release manager promotes
    assert move(RITA, "champion") == "promoted"


def _requests(url, user, action, body=None, params=None):
    import mlflow

    from core.approvals import call

    with _as(user):
        return call(mlflow.MlflowClient(url, url), action, body, params)


def _registry_cli(monkeypatch, capsys, url, user, *argv):
    """``python -m registry ARGV`` in this process (no interpreter start): (exit code, stdout)."""
    from registry.cli import main

    for key, value in {"MLFLOW_TRACKING_URI": url, "MLFLOW_REGISTRY_URI": url,
                       "MLFLOW_TRACKING_USERNAME": user[0],
                       "MLFLOW_TRACKING_PASSWORD": user[1], "MLFLOW_LOGGING_LEVEL": "ERROR",
                       "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    capsys.readouterr()
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_four_eyes_request_approvals_rejection_and_expiry(server, tmp_path, monkeypatch, capsys):
    import mlflow

    from core.aliases import move_alias
    from core.errors import MlopsError

    url, v1 = server["url"], server["versions"][0]
    policy = server["policies"] / f"{MODEL}.yaml"  # read by the server, never by the client
    policy.write_text("aliases:\n  champion: {approvals: 1, expire_after: 1h}\n")
    # a version whose run the admin (a release manager's rights) created: its author
    run = _call(url, ADMIN, "POST", "runs/create",
                json={"experiment_id": _experiment_id(url), "user_id": "admin"})  # fmt: skip
    run_id = run.json()["run"]["info"]["run_id"]
    created = _call(url, ADMIN, "POST", "model-versions/create",
                    json={"name": MODEL, "source": f"runs:/{run_id}/model", "run_id": run_id})
    authored = created.json()["model_version"]["version"]
    before = _aliases(url).get("champion")
    # promote (the one alias move) files a request where approvals are required
    with _as(RITA):
        outcome = move_alias(mlflow.MlflowClient(url, url), MODEL, authored, "champion",
                             "release authored")  # fmt: skip
    assert outcome.status == "requested" and _aliases(url).get("champion") == before
    rid = outcome.request["id"]
    assert (outcome.request["by"], outcome.request["required"]) == ("rita", 1)
    for user, refusal in [(RITA, "rita filed request"), (ADMIN, "admin is an author of"),
                          (ALICE, "alice may not approve a move of 'champion'")]:
        with pytest.raises(MlopsError, match=f"\\(403\\): {refusal}"):
            _requests(url, user, "approve", {"id": rid})
    code, out, err = _registry_cli(monkeypatch, capsys, url, ROB, "approve", rid, "--reason",
                                   "checked the gates")  # fmt: skip
    assert code == 0, err
    assert out.startswith(f"approved {rid}: {MODEL}/{authored} is champion now; previous: ")
    assert _aliases(url)["champion"] == authored
    won = [r for r in _history(url) if r.get("request") == rid]
    assert [(r["outcome"], r["by"], [a["by"] for a in r["approvals"]]) for r in won] == [
        ("won", "rita", ["rob"])]
    # rejected: nothing moves, and it cannot be approved afterwards
    # (forced: no policy on this side; the request records the missing policy as its gate)
    code, out, err = _registry_cli(monkeypatch, capsys, url, RITA, "request", f"{MODEL}/{v1}",
                                   "--to", "champion", "--reason", "back to 1", "--force",
                                   "--policy", str(tmp_path / "none.yaml"))  # fmt: skip
    assert code == 0, err
    back = {"id": out.splitlines()[0]}
    assert "1 approval(s) to go" in err
    _requests(url, ROB, "reject", {"id": back["id"], "reason": "not this week"})
    with pytest.raises(MlopsError, match="\\(409\\): request .* is rejected"):
        _requests(url, ROB, "approve", {"id": back["id"]})
    # expired: a short expire_after from the server's policy
    policy.write_text("aliases:\n  champion: {approvals: 1, expire_after: 1s}\n")
    late = _requests(url, RITA, "create", {"name": MODEL, "version": v1, "alias": "champion",
                                           "reason": "too late"})["request"]  # fmt: skip
    policy.unlink()
    time.sleep(1.2)
    env = child_env({"MLFLOW_TRACKING_URI": url, "MLFLOW_TRACKING_USERNAME": ROB[0],
                     "MLFLOW_TRACKING_PASSWORD": ROB[1]})  # fmt: skip
    listed = subprocess.run([sys.executable, "-m", "registry", "requests", MODEL, "--output",
                             "json"], capture_output=True, text=True, env=env, cwd=tmp_path,
                            timeout=120)  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    states = {r["id"]: r["status"] for r in json.loads(listed.stdout)["requests"]}
    assert [states[i] for i in (rid, back["id"], late["id"])] == ["executed", "rejected",
                                                                  "expired"]  # fmt: skip
    with pytest.raises(MlopsError, match="\\(409\\): request .* is expired"):
        _requests(url, ROB, "approve", {"id": late["id"]})
    assert _aliases(url)["champion"] == authored


def test_approvals_need_the_team_server(tmp_path, monkeypatch, capsys):
    from registry.cli import main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/embedded.db")
    assert main(["approve", "0000000000001-abc"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "error: approvals need the team's tracking server (python -m tracking server --auth); on "
        "this store nobody can enforce them: python -m registry promote moves the alias directly"]
    assert not (tmp_path / "embedded.db").exists()  # a refused command opens no store


def _version_folder(server, version):
    """The folder of ``version``'s model files in the server's artifact store."""
    import urllib.parse

    import mlflow

    with _as(ADMIN):
        uri = mlflow.MlflowClient(server["url"], server["url"]).get_model_version_download_uri(
            MODEL, version)
    assert uri.startswith("mlflow-artifacts:"), uri
    return server["artifacts"] / urllib.parse.urlparse(uri).path.lstrip("/")


def test_approvals_bind_their_evidence(server, tmp_path, monkeypatch, capsys):
    from core.evidence import PARTS

    url = server["url"]
    policy = server["policies"] / f"{MODEL}.yaml"
    policy.write_text("aliases:\n  champion: {approvals: 1}\n")
    no_policy = ("--force", "--policy", str(tmp_path / "none.yaml"))
    try:
        with _as(ADMIN):  # a version of its own: its files are nobody else's
            version = register(url, MODEL, log_candidate(url, n_features=2))
        before = _aliases(url).get("champion")
        code, out, err = _registry_cli(monkeypatch, capsys, url, RITA, "request",
                                       f"{MODEL}/{version}", "--reason", "evidence", *no_policy)
        assert code == 0, err
        rid = out.splitlines()[0]
        code, out, err = _registry_cli(monkeypatch, capsys, url, ROB, "requests", MODEL,
                                       "--output", "json")  # fmt: skip
        filed = next(r for r in json.loads(out)["requests"] if r["id"] == rid)
        assert len(filed["evidence"]["digest"]) == 64
        assert set(filed["evidence"]["parts"]) == set(PARTS)
        assert "MLmodel" in filed["evidence"]["parts"]["model files"]
        # an insider with storage access rewrites the model after the request
        folder = _version_folder(server, version)
        changed = sorted(["MLmodel", next(p.name for p in folder.glob("model.*"))])
        for name in changed:
            (folder / name).write_bytes((folder / name).read_bytes() + b"\n")
        code, out, err = _registry_cli(monkeypatch, capsys, url, ROB, "approve", rid)
        assert (code, out) == (1, "")
        assert err.splitlines() == [
            f"error: refused by the tracking server (409): request {rid} is void: model files "
            f"changed since the request: {', '.join(changed)}"]
        assert _aliases(url).get("champion") == before
        states = {r["id"]: r["status"] for r in _requests(url, ROB, "list", params={
            "name": MODEL})["requests"]}  # fmt: skip
        assert states[rid] == "void"
        # the same version requested again (its files as they are now) is approved, and the
        # executed move's history record carries the evidence digest the approver saw
        code, out, err = _registry_cli(monkeypatch, capsys, url, RITA, "request",
                                       f"{MODEL}/{version}", "--reason", "again", *no_policy)
        again = out.splitlines()[0]
        code, out, err = _registry_cli(monkeypatch, capsys, url, ROB, "requests", MODEL)
        digest = next(r for r in _requests(url, ROB, "list", params={"name": MODEL})["requests"]
                      if r["id"] == again)["evidence"]["digest"]  # fmt: skip
        assert digest[:12] in out
        code, out, err = _registry_cli(monkeypatch, capsys, url, ROB, "approve", again)
        assert code == 0, err
        assert _aliases(url)["champion"] == version
        code, out, err = _registry_cli(monkeypatch, capsys, url, ROB, "history", MODEL,
                                       "--output", "json")  # fmt: skip
        moved = [a for a in json.loads(out)["attempts"] if a["request"] == again]
        assert [(a["outcome"], a["evidence"]) for a in moved] == [("won", digest)]
    finally:
        policy.unlink()


def test_emergency_rollback_and_its_review(server, tmp_path, monkeypatch, capsys):
    url, (v1, v2) = server["url"], server["versions"]
    policy = server["policies"] / f"{MODEL}.yaml"
    policy.write_text("aliases:\n  champion: {approvals: 1}\n")
    no_policy = ("--force", "--policy", str(tmp_path / "none.yaml"))

    def cli(user, *argv):
        return _registry_cli(monkeypatch, capsys, url, user, *argv)

    try:
        if _aliases(url).get("champion") != v2:  # champion on version 2, by four eyes
            code, out, err = cli(RITA, "request", f"{MODEL}/{v2}", "--reason", "v2", *no_policy)
            assert cli(ROB, "approve", out.splitlines()[0])[0] == 0
        # a plain rollback of an alias that needs approvals files a request
        code, out, err = cli(RITA, "rollback", MODEL, "--to", v1, "--reason", "slow")
        assert code == 0, err
        assert "1 approval(s) to go" in err and _aliases(url)["champion"] == v2
        assert cli(RITA, "reject", out.splitlines()[0], "--reason", "withdrawn")[0] == 0
        # --emergency: a reason, and a release manager
        code, out, err = cli(RITA, "rollback", MODEL, "--to", v1, "--emergency")
        assert (code, out, len(err.splitlines())) == (2, "", 1)
        assert "--reason" in err
        code, out, err = cli(ALICE, "rollback", MODEL, "--to", v1, "--emergency", "--reason",
                             "mine")  # fmt: skip
        assert (code, out) == (1, "")
        assert err.splitlines() == [
            "error: refused by the tracking server (403): alice may not make an emergency "
            f"rollback of 'champion' of {MODEL}: only a release manager or an admin may "
            "(python -m registry request files a request instead)"]
        assert _aliases(url)["champion"] == v2
        # one release manager rolls back at once
        code, out, err = cli(RITA, "rollback", MODEL, "--to", v1, "--emergency", "--reason",
                             "v2 answers 500s")  # fmt: skip
        assert code == 0, err
        lines = out.splitlines()
        assert lines[0] == (f"rolled back champion of {MODEL} to version {v1} (emergency); "
                            f"previous: {v2}")  # fmt: skip
        rid = lines[1].removeprefix("needs review by a second release manager: python -m "
                                    "registry review ")  # fmt: skip
        assert _aliases(url)["champion"] == v1
        record = next(r for r in _history(url) if r.get("request") == rid)
        assert (record["kind"], record["emergency"], record["by"], record["outcome"]) == (
            "rollback", True, "rita", "won")
        code, out, err = cli(ROB, "history", MODEL, "--alias", "champion")
        assert "rollback (emergency)" in out
        code, out, err = cli(ROB, "requests", MODEL, "--state", "needs-review", "--output",
                             "json")  # fmt: skip
        listed = json.loads(out)["requests"]
        assert [(r["id"], r["status"], r["emergency"]) for r in listed] == [
            (rid, "needs-review", True)]
        code, out, err = cli(ROB, "requests", MODEL, "--state", "needs-review")
        assert rid in out and "needs review" in out
        # never reviewed by the one who rolled back, nor by a data scientist
        for user, refusal in [(RITA, f"rita made emergency rollback {rid}: a second release "
                                     "manager reviews it, never the one who rolled back"),
                              (ALICE, f"alice may not review emergency rollback {rid}: only a "
                                      "release manager or an admin may")]:  # fmt: skip
            code, out, err = cli(user, "review", rid)
            assert (code, err.splitlines()) == (
                1, [f"error: refused by the tracking server (403): {refusal}"])
        code, out, err = cli(ROB, "review", rid, "--reason", "incident 42 confirmed")
        assert code == 0, err
        assert out == (f"reviewed {rid}: emergency rollback of champion of {MODEL} to version "
                       f"{v1} by rita, reviewed by rob\n")  # fmt: skip
        done = next(r for r in _requests(url, ROB, "list", params={"name": MODEL})["requests"]
                    if r["id"] == rid)  # fmt: skip
        assert (done["status"], done["review"]["by"], done["review"]["reason"]) == (
            "reviewed", "rob", "incident 42 confirmed")
        code, out, err = cli(ROB, "requests", MODEL, "--state", "needs-review", "--output",
                             "json")  # fmt: skip
        assert json.loads(out)["requests"] == []
        code, out, err = cli(ROB, "review", rid)
        assert code == 1 and "(409)" in err
    finally:
        policy.unlink()


def test_emergency_rollback_needs_the_team_server(tmp_path, monkeypatch, capsys):
    from registry.cli import main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/embedded.db")
    assert main(["rollback", MODEL, "--emergency", "--reason", "now"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "error: --emergency is for the team's tracking server, where approvals are enforced; "
        "on this store python -m registry rollback moves the alias directly"]
    assert not (tmp_path / "embedded.db").exists()  # a refused command opens no store
