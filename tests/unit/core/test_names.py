"""Every ``mlops.*`` name lives in core/names.py: none typed elsewhere, none written nowhere."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from core import names

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = ("core", "tracking", "projects", "registry", "serving", "monitoring")
CATALOGUE = ROOT / "core" / "names.py"
# "mlops." as the start of a name (also escaped in a regex), not "mlops-registry" or "mlops_idx"
_NAME = re.compile(r"(?<![\w-])mlops\\?\.")


def _sources() -> list[Path]:
    return [path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))]


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                    and isinstance(body[0].value.value, str)):
                out.add(id(body[0].value))
    return out


def _literals(path: Path) -> list[tuple[int, str]]:
    """The string constants (f-string parts included, docstrings not) naming ``mlops.``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skip = _docstrings(tree)
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in skip and _NAME.search(node.value)]


def test_no_mlops_name_is_typed_outside_the_catalogue():
    found = [f"{path.relative_to(ROOT)}:{line}: {value!r}"
             for path in _sources() if path != CATALOGUE
             for line, value in _literals(path)]
    assert not found, ("mlops.* names typed as literals; use core.names:\n" + "\n".join(found))


def test_the_scan_sees_plain_strings_f_strings_and_regexes(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text('"""Docstrings may say mlops.task."""\n'
                      'A = "mlops.task"\nB = f"mlops.{A}_run"\nC = r"^mlops\\.x$"\n'
                      'D = f"no tag {A} (tag mlops.metric.{A})"\nE = "mlops-registry"\n')
    assert sorted(line for line, _ in _literals(sample)) == [2, 3, 4, 5]


def _catalogue() -> dict[str, str]:
    return {key: value for key, value in vars(names).items()
            if key.isupper() and isinstance(value, str) and value.startswith(names.PREFIX)
            and value != names.PREFIX}


def _used_identifiers() -> set[str]:
    """Every name and attribute a package module (the catalogue aside) refers to."""
    used: set[str] = set()
    for path in _sources():
        if path == CATALOGUE:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Name):
                used.add(node.id)
            elif isinstance(node, ast.Attribute):
                used.add(node.attr)
            elif isinstance(node, ast.alias):
                used.add(node.name)
    return used


# the catalogue's helpers stand for the patterns they fill in
_HELPERS = {"STEP_RUN_TAG": "step_run_tag", "STEP_REUSED_TAG": "step_reused_tag",
            "CACHE_PART_TAG": "cache_part_tag", "METRIC_TAG_PREFIX": "metric_tag"}


def test_every_catalogue_name_is_used_by_a_package():
    used = _used_identifiers()
    dead = sorted(key for key in _catalogue()
                  if key not in used and _HELPERS.get(key) not in used)
    assert not dead, f"names in core/names.py no package writes or reads: {dead}"


def test_names_are_unique_and_legacy_names_are_marked():
    catalogue = _catalogue()
    values = list(catalogue.values())
    assert len(values) == len(set(values)), "one name, one constant"
    legacy = {key for key in catalogue if key.startswith("LEGACY_")}
    assert {catalogue[key] for key in legacy} == set(names.LEGACY)


def test_the_catalogue_helpers_fill_in_the_patterns():
    assert names.metric_tag("test_f1") == "mlops.metric.test_f1"
    assert names.cache_part_tag("code") == "mlops.cache.code"
    assert names.step_run_tag("register") == "mlops.register_run"
    assert names.step_reused_tag("train") == "mlops.train_reused"
    assert names.step_of_run_tag("mlops.register_run") == "register"
    assert names.step_of_run_tag("mlops.train_reused") is None
    assert names.step_of_run_tag("mlops.run_id") is None
