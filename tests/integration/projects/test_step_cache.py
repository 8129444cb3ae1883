"""The step cache on a real tracking store: what is reused and what runs again, and why.

The workflow runs in-process (as ``python -m projects main`` does after parsing) so the test can
point the code hasher at an edited copy of the repository and change the installed version a
key sees; everything else is real: the SQLite store, the runs, the registry.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from projects import STEPS, cache_keys

pytestmark = pytest.mark.integration
REPO = Path(cache_keys.__file__).resolve().parents[1]

BASE = """\
# the breast-cancer data, two of its columns declared
data:
  columns: {columns}
train:
  candidates:
    - {{estimator: linear, grid: {grid}}}
"""


def _conf(root: Path, columns: str, grid: str) -> Path:
    (root / "profiles").mkdir(parents=True)
    (root / "base.yaml").write_text(BASE.format(columns=columns, grid=grid))
    shutil.copy(REPO / "conf" / "profiles" / "local.yaml", root / "profiles" / "local.yaml")
    return root


def _run(conf: Path, monkeypatch) -> dict[str, bool]:
    from core.connection import connect
    from core.settings import load_settings
    from projects.workflow import Workflow

    monkeypatch.setenv("MLOPS_CONF_DIR", str(conf))
    result = Workflow(load_settings(overrides=["experiment=cache"]), connect()).run()
    return {step: result.steps[step].reused for step in STEPS}


def test_reordered_settings_edited_code_and_upgraded_packages(tmp_path, monkeypatch):
    one = _conf(tmp_path / "one", "{mean radius: float, mean area: float}",
                "{C: [1.0], tol: [0.0001]}")
    two = _conf(tmp_path / "two", "{mean area: float, mean radius: float}",
                "{tol: [0.0001], C: [1.0]}")
    assert not any(_run(one, monkeypatch).values())
    # the same settings, mappings written in another order: everything is reused
    assert all(_run(two, monkeypatch).values())

    # the evaluate step's code edited (in a copy the hasher reads): evaluate and register run
    copy = tmp_path / "repo"
    for package in ("projects", "core"):
        shutil.copytree(REPO / package, copy / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(cache_keys, "REPO_ROOT", copy)
    assert all(_run(two, monkeypatch).values())  # an unedited copy hashes the same
    evaluate = copy / "projects" / "evaluate.py"
    evaluate.write_text(evaluate.read_text() + "\n# evaluate edited\n")
    reused = _run(two, monkeypatch)
    assert [s for s in STEPS if not reused[s]] == ["evaluate", "register"]

    # an upgraded scikit-learn: every step runs again
    real = cache_keys._installed_version
    monkeypatch.setattr(cache_keys, "_installed_version",
                        lambda p: "99.0" if p == "scikit-learn" else real(p))
    assert not any(_run(two, monkeypatch).values())
