"""The governance app's pure parts: protected aliases from the settings, refusal wording."""

from __future__ import annotations

import pytest

from core.settings import SettingsError, load_settings
from tracking import governance
from tracking import server as srv


def test_champion_is_protected_by_default_and_settings_can_add_aliases():
    assert load_settings().governance.protected_aliases == ("champion",)
    settings = load_settings(None, ["governance.protected_aliases=[champion, prod]"])
    assert settings.governance.protected_aliases == ("champion", "prod")
    with pytest.raises(SettingsError, match="unknown key"):
        load_settings(None, ["governance.nope=1"])


def test_the_launcher_passes_the_protected_aliases_to_the_server_app():
    config = srv.ServerConfig(server=load_settings().server, auth=True,
                              protected_aliases=("champion", "prod"))  # fmt: skip
    env = srv.server_env(config, base={"PATH": "/usr/bin"})
    assert governance.protected_aliases(env) == ("champion", "prod")
    assert governance.protected_aliases({}) == ("champion",)
    assert srv.build_command(config)[-2:] == ["--app-name", "mlops-governance"]


def test_the_refusal_says_who_may_move_the_alias():
    message = governance.refusal("alice", "set", "champion", "m")
    assert message == (
        "alice may not set alias 'champion' of m: 'champion' is protected, only a release "
        "manager or an admin may set or delete it (python -m registry promote)"
    )


def test_the_entry_point_names_the_factory():
    from importlib.metadata import entry_points

    found = {e.name: e.value for e in entry_points(group="mlflow.app")}
    assert found["mlops-governance"] == "tracking.governance:create_app"


def _canonical(method, path, body=b"", query="", content_type=None, fields=None):
    """What a Flask app behind :class:`governance.CanonicalParams` sees of one request."""
    import json

    from flask import Flask, jsonify, request
    from werkzeug.test import Client

    app = Flask("canonical")

    @app.route(path, methods=[method])
    def seen():
        return jsonify(
            {"is_json": request.is_json, "body": request.get_json(force=True, silent=True),
             "silent": request.get_json(silent=True), "args": dict(request.args)}
        )  # fmt: skip

    app.wsgi_app = governance.CanonicalParams(app.wsgi_app, app, fields or {})
    headers = {"Content-Type": content_type} if content_type else {}
    resp = Client(app).open(path, method=method, data=body, query_string=query, headers=headers)
    return resp.status_code, json.loads(resp.data)


ALIAS = "/api/2.0/mlflow/registered-models/alias"


def test_a_delete_body_is_json_for_every_reader_whatever_its_content_type():
    body = b'{"name": "prod", "alias": "champion"}'
    for content_type in ("text/plain", None, "application/x-www-form-urlencoded"):
        status, seen = _canonical("DELETE", ALIAS, body, content_type=content_type)
        assert status == 200 and seen["is_json"]
        assert seen["silent"] == seen["body"] == {"name": "prod", "alias": "champion"}


def test_a_write_whose_query_and_body_disagree_gets_400():
    body = b'{"name": "prod", "alias": "champion"}'
    status, seen = _canonical("DELETE", ALIAS, body, "name=mine", "text/plain")
    assert status == 400
    assert seen == {
        "error_code": "INVALID_PARAMETER_VALUE",
        "message": "the query string says name='mine' but the body says name='prod': send a "
        "write's parameters in its body only",
    }
    # the query may repeat the body; a version is a number in one and text in the other
    status, _ = _canonical("POST", ALIAS, b'{"name": "m", "version": 3}', "name=m&version=3",
                           "application/json")  # fmt: skip
    assert status == 200
    # under a static prefix too
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("_MLFLOW_STATIC_PREFIX", "/mlflow")
        status, _ = _canonical("DELETE", "/mlflow" + ALIAS, body, "name=mine", "text/plain")
    assert status == 400


def test_the_body_is_the_one_the_handler_parses():
    rename = "/api/2.0/mlflow/registered-models/rename"
    fields = {(rename, "POST"): {"newName": "new_name"}}
    double = b'"{\\"name\\": \\"m\\", \\"newName\\": \\"prod\\"}"'  # older clients' double encoding
    status, seen = _canonical("POST", rename, double, content_type="application/json",
                              fields=fields)  # fmt: skip
    assert status == 200
    assert seen["silent"] == {"name": "m", "new_name": "prod"}
    # a POST keeps its content type (MLflow refuses a non-JSON one: no cross-site form writes)
    status, seen = _canonical("POST", rename, b'{"name": "m"}', content_type="text/plain")
    assert status == 200 and not seen["is_json"]


def test_the_launcher_s_address_carries_the_static_prefix():
    config = srv.ServerConfig(server=load_settings().server,
                              extra_env={"MLFLOW_STATIC_PREFIX": "/mlflow"})  # fmt: skip
    assert config.url.endswith(":5000/mlflow")
