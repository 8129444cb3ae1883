import pytest

from core.uris import ModelRefError, alias_uri, parse_model_ref, run_uri, version_uri


@pytest.mark.parametrize(
    ("text", "uri"),
    [
        ("m@champion", "models:/m@champion"),
        ("models:/m@champion", "models:/m@champion"),
        ("m/3", "models:/m/3"),
        ("models:/my model/12", "models:/my model/12"),
        ("runs:/abc123/model", "runs:/abc123/model"),
    ],
)
def test_parse_round_trips(text, uri):
    assert parse_model_ref(text).uri == uri


def test_builders():
    assert alias_uri("m", "a") == "models:/m@a"
    assert version_uri("m", 2) == "models:/m/2"
    assert run_uri("r") == "runs:/r/model"


@pytest.mark.parametrize("text", ["", "m", "m@", "m/x", "runs:/zz"])
def test_bad_refs_name_the_accepted_forms(text):
    with pytest.raises(ModelRefError, match="NAME@ALIAS, NAME/VERSION"):
        parse_model_ref(text)
