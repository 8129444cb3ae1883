import re
import tomllib

import yaml

from tests.support.processes import REPO


def _lock() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)(\[.*\])?==([^\s;]+)", line)
        if m:
            pins[m.group(1).lower()] = m.group(3)
    return pins


def test_conda_yaml_pins_the_lock_files_versions():
    lock = _lock()
    env = yaml.safe_load((REPO / "conda.yaml").read_text())
    pip = next(d for d in env["dependencies"] if isinstance(d, dict))["pip"]
    assert pip, "conda.yaml has no pip pins"
    for pin in pip:
        name, version = re.match(r"^([A-Za-z0-9_.\-]+)(?:\[.*\])?==(.+)$", pin).groups()
        assert lock[name.lower()] == version, pin
    # the MLflow the project pins (pyproject.toml) is the one conda.yaml installs
    pinned = next(d for d in tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "dependencies"] if d.startswith("mlflow"))
    version = pinned.split("==")[1]
    assert any(re.match(rf"^mlflow(\[.*\])?=={re.escape(version)}$", p) for p in pip)


def test_every_direct_dependency_is_locked():
    lock = _lock()
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in deps:
        assert re.split(r"[<>=\[ ]", dep)[0].lower() in lock, dep


def test_mlproject_has_an_entry_point_per_step_and_declares_no_parameters():
    # declared parameters are logged by `mlflow run` ('' for a default) and their defaults
    # would override the settings file: each -P reaches the command as --name value instead
    spec = yaml.safe_load((REPO / "MLproject").read_text())
    assert spec["conda_env"] == "conda.yaml"
    assert list(spec["entry_points"]) == ["main", "ingest", "validate", "prepare", "train",
                                          "evaluate", "register"]
    for name, entry in spec["entry_points"].items():
        assert entry["command"] == f"python -m projects {name}"
        assert not entry.get("parameters"), name


def test_every_documented_p_name_is_an_option_of_every_step():
    from projects.cli import cli

    text = (REPO / "MLproject").read_text()
    documented = re.findall(r"^#   ([a-z_]+(?:, [a-z_]+)*)\s{2,}", text, re.MULTILINE)
    names = [n for group in documented for n in group.split(", ")]
    assert {"set", "source", "target", "positive_class", "model_name", "n_jobs"} <= set(names)
    for step, command in cli.commands.items():
        options = {o for p in command.params for o in p.opts}
        for name in names:
            assert f"--{name}" in options, (step, name)
