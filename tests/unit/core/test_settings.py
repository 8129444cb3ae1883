import pytest

from core.settings import SettingsError, load_settings, parse_overrides


def test_local_profile_is_default_and_crowns_champion():
    s = load_settings()
    assert s.profile == "local"
    assert s.register.auto_champion is None  # automatic: the workflow decides by the store
    assert s.data.source == "bundled:breast_cancer"
    assert s.data.task == "auto" and s.metric == "auto"  # decided from the data by validate
    assert s.with_task("classification").metric == "roc_auc"


def test_team_profile_leaves_promotion_to_release_managers():
    s = load_settings("team")
    assert s.register.auto_champion is False
    assert s.server.workers == 4


def test_overrides_win_and_are_typed():
    s = load_settings("local", ["train.metric=f1", "cache=false", "split.seed=7", "data.task=regression"])
    assert s.train.metric == "f1"
    assert s.cache is False
    assert s.split.seed == 7
    assert s.metric == "f1"


def test_auto_metric_follows_the_task():
    assert load_settings(overrides=["data.task=regression"]).metric == "rmse"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.metrc=f1"], "setting train.metrc: unknown key"),
        (["split.test_size=abc"], "setting split.test_size:"),
        (["split.test_size=1.5"], "setting split.test_size:"),
        (["clean.impute=sometimes"], "setting clean.impute:"),
        (["nosuch=1"], "setting nosuch: unknown key"),
        (["novalue"], "expected key=value"),
    ],
)
def test_bad_settings_fail_with_one_line_naming_the_key(overrides, message):
    with pytest.raises(SettingsError) as err:
        load_settings("local", overrides)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_profile():
    with pytest.raises(SettingsError, match="unknown profile 'prod'; known profiles: aws, local, team"):
        load_settings("prod")


def test_settings_are_frozen():
    s = load_settings()
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="frozen"):
        s.cache = False  # type: ignore[misc]


def test_parse_overrides_nests_and_parses_yaml():
    assert parse_overrides(["a.b=1", "a.c=[1, 2]", "d=x"]) == {"a": {"b": 1, "c": [1, 2]}, "d": "x"}


def test_every_key_of_the_settings_files_is_commented():
    from core.settings import conf_dir

    for path in [conf_dir() / "base.yaml", *sorted((conf_dir() / "profiles").glob("*.yaml"))]:
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            stripped = line.strip()
            if not stripped or stripped.startswith(("#", "-")) or ":" not in stripped:
                continue
            previous = lines[i - 1].strip() if i else ""
            assert previous.startswith("#") or "#" in line, f"{path.name}:{i + 1} {stripped} has no comment"


@pytest.mark.parametrize("raw", ["no", "yes", "1e3", "off", "null", "007", "2026-12-01", "[x]"])
def test_text_settings_keep_the_text_as_written(raw):
    settings = load_settings(overrides=[f"data.target={raw}", f"register.model_name={raw}"])
    assert settings.data.target == raw
    assert settings.register.model_name == raw


def test_typed_settings_are_read_as_values():
    settings = load_settings(overrides=["cache=false", "split.seed=7", "split.test_size=0.3",
                                        "data.columns={a: float}", "train.n_jobs=1"])
    assert settings.cache is False and settings.split.seed == 7
    assert settings.split.test_size == 0.3 and settings.data.columns == {"a": "float"}
    # a mapping entry whose values are text
    assert load_settings(overrides=["data.columns.no=str"]).data.columns == {"no": "str"}
