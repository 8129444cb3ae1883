from core.settings import load_settings
from projects.pipeline import cache_key, code_hash, settings_hash


def test_key_changes_with_settings_the_step_depends_on_only():
    base = load_settings()
    other_train = load_settings(overrides=["train.metric=f1"])
    assert settings_hash(base, "ingest") == settings_hash(other_train, "ingest")
    assert settings_hash(base, "prepare") == settings_hash(other_train, "prepare")
    assert settings_hash(base, "train") != settings_hash(other_train, "train")


def test_key_changes_with_input_and_is_stable():
    s = load_settings()
    assert cache_key("ingest", s, "a") == cache_key("ingest", s, "a")
    assert cache_key("ingest", s, "a") != cache_key("ingest", s, "b")
    assert cache_key("train", s, "a") != cache_key("prepare", s, "a")


def test_code_hash_covers_the_step_module():
    assert code_hash("train") != code_hash("ingest")
    assert len(code_hash("register")) == 16
