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
    assert any(re.match(r"^mlflow(\[.*\])?==3\.17\.2$", p) for p in pip)


def test_every_direct_dependency_is_locked():
    lock = _lock()
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in deps:
        assert re.split(r"[<>=\[ ]", dep)[0].lower() in lock, dep


def test_mlproject_has_a_typed_entry_point_per_step():
    spec = yaml.safe_load((REPO / "MLproject").read_text())
    assert spec["conda_env"] == "conda.yaml"
    assert list(spec["entry_points"]) == ["main", "ingest", "validate", "prepare", "train",
                                          "evaluate", "register"]
    for name, entry in spec["entry_points"].items():
        assert entry["command"].startswith(f"python -m projects {name} ")
        for param, decl in entry["parameters"].items():
            assert decl["type"] in {"string", "float"}, (name, param)
            assert "{" + param + "}" in entry["command"]
