"""The step cache key: computed code closure, canonical settings, model package versions."""

import shutil
from pathlib import Path

import pytest

from core.settings import load_settings
from projects import STEPS, cache_keys
from projects.cache_keys import (
    MODEL_PACKAGES,
    cache_key,
    code_hash,
    settings_hash,
    step_code_files,
)

REPO = Path(cache_keys.__file__).resolve().parents[1]


@pytest.fixture
def copy_of_repo(tmp_path):
    """The repository's ``projects`` and ``core`` packages, copied: a tree the test may edit."""
    root = tmp_path / "repo"
    for package in ("projects", "core"):
        shutil.copytree(REPO / package, root / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _edit(path: Path) -> None:
    path.write_text(path.read_text() + "\n# an edit\n")


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


def test_the_code_of_a_step_is_its_computed_import_closure():
    files = {step: set(step_code_files(step)) for step in STEPS}
    # the step's module and what it imports, transitively (train imports prepare)
    assert {"projects.train", "projects.prepare", "projects.workflow"} <= files["train"]
    assert {"projects.evaluate", "projects.train", "projects.prepare"} <= files["evaluate"]
    # the foundation's modules count too: the alias move shapes register's outputs
    assert {"core.aliases", "core.ledger", "projects.register"} <= files["register"]
    assert {"core.settings", "core.runs", "projects.errors"} <= files["ingest"]
    # and only what the step imports: another step's module is not part of ingest's code,
    # nor what a helper only evaluate calls imports (the champion lookup)
    assert not {"projects.train", "projects.evaluate", "core.aliases", "core.models"} & files["ingest"]
    assert {"core.models", "core.aliases"} <= files["evaluate"]
    assert "projects.evaluate" not in files["register"]
    # nothing outside the repository's packages
    assert all(m.split(".")[0] in ("projects", "core") for f in files.values() for m in f)


def test_a_copied_tree_hashes_the_same(copy_of_repo):
    for step in STEPS:
        assert code_hash(step, copy_of_repo) == code_hash(step, REPO), step


def test_editing_the_evaluate_step_changes_evaluate_only(copy_of_repo):
    before = {step: code_hash(step, copy_of_repo) for step in STEPS}
    _edit(copy_of_repo / "projects" / "evaluate.py")
    after = {step: code_hash(step, copy_of_repo) for step in STEPS}
    assert [s for s in STEPS if before[s] != after[s]] == ["evaluate"]
    # register follows through its input, evaluate's key (the workflow test runs the chain)
    s = load_settings()
    edited, original = cache_key("evaluate", s, "t", copy_of_repo), cache_key("evaluate", s, "t")
    assert edited != original
    assert cache_key("register", s, edited) != cache_key("register", s, original)


def test_editing_a_module_reached_only_through_imports_changes_its_importers(copy_of_repo):
    before = {step: code_hash(step, copy_of_repo) for step in STEPS}
    # prepare.py is imported by train.py, which evaluate.py imports
    _edit(copy_of_repo / "projects" / "prepare.py")
    after = {step: code_hash(step, copy_of_repo) for step in STEPS}
    assert [s for s in STEPS if before[s] != after[s]] == ["prepare", "train", "evaluate"]
    # a foundation module only the alias moves use: register's, and evaluate's champion
    # lookup (it applies a recorded but unapplied champion move first)
    _edit(copy_of_repo / "core" / "ledger.py")
    again = {step: code_hash(step, copy_of_repo) for step in STEPS}
    assert [s for s in STEPS if again[s] != after[s]] == ["evaluate", "register"]
    # a module every step runs (the step chain imports it at module level)
    _edit(copy_of_repo / "core" / "runs.py")
    last = {step: code_hash(step, copy_of_repo) for step in STEPS}
    assert all(last[s] != again[s] for s in STEPS)


def test_the_step_chain_counts_per_step_the_file_of_each_steps_run(copy_of_repo):
    # the chain's files: its module and its class's bases, found from the source
    files = {step: set(step_code_files(step, copy_of_repo)) for step in STEPS}
    chain = {"projects.workflow", "projects.run_summary"}  # the chain and what every run says
    assert all(chain <= files[step] for step in STEPS)
    assert [s for s in STEPS if "projects.data_steps" in files[s]] == [
        "ingest", "validate", "prepare"]
    # register loads the model too (its card's per-class metrics): the loader's file is its too
    assert [s for s in STEPS if "projects.model_steps" in files[s]] == [
        "train", "evaluate", "register"]
    assert [s for s in STEPS if "projects.crowning" in files[s]] == ["register"]
    # editing a step's run changes the keys of the steps it holds, and only those
    for module, steps in (("crowning", ["register"]),
                          ("model_steps", ["train", "evaluate", "register"]),
                          ("data_steps", ["ingest", "validate", "prepare"]),
                          ("workflow", list(STEPS))):
        before = {step: code_hash(step, copy_of_repo) for step in STEPS}
        _edit(copy_of_repo / "projects" / f"{module}.py")
        after = {step: code_hash(step, copy_of_repo) for step in STEPS}
        assert [s for s in STEPS if before[s] != after[s]] == steps, module


def test_a_new_base_of_the_step_chain_is_followed_without_listing_it(copy_of_repo):
    (copy_of_repo / "projects" / "extra_step_runs.py").write_text(
        "class Extra:\n    def _extra_helper(self):\n        from core import lineage\n\n"
        "        return lineage\n\n    def ingest_more(self):\n        return None\n")
    chain = copy_of_repo / "projects" / "workflow.py"
    text = chain.read_text().replace(
        "class Workflow(DataSteps,", "class Workflow(Extra, DataSteps,").replace(
        "from projects.data_steps import DataSteps",
        "from projects.data_steps import DataSteps\nfrom projects.extra_step_runs import Extra")
    chain.write_text(text)
    files = step_code_files("ingest", copy_of_repo)
    assert "projects.extra_step_runs" in files  # nothing calls its methods: every step's
    assert "core.lineage" in files


def test_a_new_import_is_followed_without_listing_it(copy_of_repo):
    helper = copy_of_repo / "projects" / "helper_for_test.py"
    helper.write_text("VALUE = 1\n")
    before = code_hash("ingest", copy_of_repo)
    ingest = copy_of_repo / "projects" / "ingest.py"
    ingest.write_text(ingest.read_text() + "\n\ndef _uses_helper():\n"
                      "    from . import helper_for_test\n\n    return helper_for_test\n")
    assert "projects.helper_for_test" in step_code_files("ingest", copy_of_repo)
    changed = code_hash("ingest", copy_of_repo)
    assert changed != before
    helper.write_text("VALUE = 2\n")
    assert code_hash("ingest", copy_of_repo) != changed


def test_a_changed_package_version_changes_every_key(monkeypatch):
    s = load_settings()
    before = {step: cache_key(step, s, "input") for step in STEPS}
    assert set(cache_keys.package_versions()) == set(MODEL_PACKAGES)
    real = cache_keys._installed_version
    for package in MODEL_PACKAGES:
        monkeypatch.setattr(cache_keys, "_installed_version",
                            lambda p, package=package: "0.0.dev" if p == package else real(p))
        after = {step: cache_key(step, s, "input") for step in STEPS}
        assert all(after[step] != before[step] for step in STEPS), package


def _conf(root: Path, base: str) -> Path:
    (root / "profiles").mkdir(parents=True)
    (root / "base.yaml").write_text(base)
    shutil.copy(REPO / "conf" / "profiles" / "local.yaml", root / "profiles" / "local.yaml")
    return root


BASE = """\
data:
  columns: {{{columns}}}
train:
  candidates:
{candidates}
"""
LINEAR = "    - {estimator: linear, grid: {C: [0.1, 1.0], max_iter: [100]}}\n"
LINEAR_REORDERED = "    - {estimator: linear, grid: {max_iter: [100], C: [0.1, 1.0]}}\n"
FOREST = "    - {estimator: random_forest, grid: {n_estimators: [10]}}\n"


def test_a_reordered_mapping_in_a_settings_file_keeps_every_key(tmp_path, monkeypatch):
    one = _conf(tmp_path / "one", BASE.format(columns="mean radius: float, mean area: float",
                                              candidates=LINEAR + FOREST))
    two = _conf(tmp_path / "two", BASE.format(columns="mean area: float, mean radius: float",
                                              candidates=LINEAR_REORDERED + FOREST))
    monkeypatch.setenv("MLOPS_CONF_DIR", str(one))
    first = load_settings()
    monkeypatch.setenv("MLOPS_CONF_DIR", str(two))
    second = load_settings()
    assert list(first.data.columns) != list(second.data.columns)  # the files differ in order
    for step in STEPS:
        assert cache_key(step, first, "input") == cache_key(step, second, "input"), step
    # the order of the candidates is meaningful (a list): it changes train's key
    three = _conf(tmp_path / "three", BASE.format(columns="", candidates=FOREST + LINEAR))
    four = _conf(tmp_path / "four", BASE.format(columns="", candidates=LINEAR + FOREST))
    monkeypatch.setenv("MLOPS_CONF_DIR", str(three))
    forest_first = load_settings()
    monkeypatch.setenv("MLOPS_CONF_DIR", str(four))
    linear_first = load_settings()
    assert settings_hash(forest_first, "train") != settings_hash(linear_first, "train")
    assert settings_hash(forest_first, "prepare") == settings_hash(linear_first, "prepare")


def test_what_started_a_run_is_not_part_of_any_key():
    plain = load_settings()
    retrain = load_settings(overrides=["register.trigger=retrain",
                                       "register.trigger_reason=monitoring run abc"])
    assert all(settings_hash(plain, s) == settings_hash(retrain, s) for s in STEPS)
    crowning = load_settings(overrides=["register.auto_champion=true"])
    assert settings_hash(plain, "register") != settings_hash(crowning, "register")


def _fresh_process(monkeypatch):
    """Forget what this process parsed: the next keys come from the cache folder or ast."""
    monkeypatch.setattr(cache_keys, "_IMPORT_SETS", cache_keys._ImportSets())
    cache_keys._file_imports.cache_clear()
    cache_keys._workflow_import_map.cache_clear()


def test_import_sets_kept_between_runs_give_the_same_keys(copy_of_repo, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    stored = tmp_path / "cache" / "mlops-registry" / cache_keys._ImportSets.FILE
    _fresh_process(monkeypatch)
    parsed = {step: code_hash(step, copy_of_repo) for step in STEPS}
    assert stored.is_file()
    _fresh_process(monkeypatch)
    with monkeypatch.context() as m:
        m.setattr(cache_keys.ast, "parse", None)  # a warm cache parses nothing
        assert {step: code_hash(step, copy_of_repo) for step in STEPS} == parsed
    # an edit is still seen with a warm cache: the new import is followed
    _fresh_process(monkeypatch)
    (copy_of_repo / "projects" / "helper_for_test.py").write_text("VALUE = 1\n")
    ingest = copy_of_repo / "projects" / "ingest.py"
    ingest.write_text(ingest.read_text() + "\n\ndef _uses_helper():\n"
                      "    from . import helper_for_test\n\n    return helper_for_test\n")
    assert "projects.helper_for_test" in step_code_files("ingest", copy_of_repo)
    edited = {step: code_hash(step, copy_of_repo) for step in STEPS}
    assert edited["ingest"] != parsed["ingest"]
    # a corrupt cache file reads as empty: the keys are parsed again, the same
    stored.write_text("{not json")
    _fresh_process(monkeypatch)
    assert {step: code_hash(step, copy_of_repo) for step in STEPS} == edited


def test_kept_import_sets_drop_the_oldest_entries_first(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(cache_keys._ImportSets, "LIMIT", 2)
    for key in ("b", "a", "c"):  # one process each: loaded, one entry added, saved
        sets = cache_keys._ImportSets()
        sets.get(key, lambda key=key: [key])
        sets.save()
    assert list(cache_keys._ImportSets()._load()) == ["a", "c"]
