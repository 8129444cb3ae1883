"""Copies in the lineage: ``copy`` notes the copy on the source version, so ``lineage`` of the
source lists where it went, and the copy's lineage names where it came from. A dev server on
SQLite, a prod server on SQLite then PostgreSQL (the package's shared servers)."""

from __future__ import annotations

import json

import pytest

from registry.cli import main
from tests.integration.registry.conftest import register, unique

pytestmark = pytest.mark.integration


def test_lineage_lists_copies_and_the_copy_names_its_source(dev_server, dev_logged,
                                                            registry_server, monkeypatch,
                                                            capsys):
    dev, prod = dev_server, registry_server
    name = unique("copies")
    version = register(dev, name, dev_logged)

    def cli(uri, *args):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
        capsys.readouterr()
        code = main(list(args))
        return code, capsys.readouterr().out

    code, _ = cli(dev, "copy", f"{name}/{version}", "--to-registry", prod)
    assert code == 0
    code, out = cli(dev, "lineage", f"{name}/{version}", "--output", "json")
    assert code == 0
    copies = json.loads(out)["copies"]
    assert [(c["target"], c["name"], c["link"]) for c in copies] == [
        (prod, name, f"{prod}/#/models/{name}/versions/{copies[0]['version']}")]
    copied = copies[0]["version"]

    # copying again finds the earlier copy: still one entry
    assert cli(dev, "copy", f"{name}/{version}", "--to-registry", prod)[0] == 0
    assert len(json.loads(cli(dev, "lineage", f"{name}/{version}", "--output", "json")[1])
               ["copies"]) == 1

    code, out = cli(prod, "lineage", f"{name}/{copied}", "--output", "json")
    assert code == 0
    doc = json.loads(out)
    assert doc["copied_from"]["model"] == f"{name}/{version}"
    assert doc["copied_from"]["link"] == f"{dev}/#/models/{name}/versions/{version}"
    assert doc["copies"] == []  # the source's notes stay on the source
