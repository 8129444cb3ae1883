"""The workflow's JSON document (``--output json``): its keys, numbers and the registry's reader."""

from __future__ import annotations

import json
import math

import pytest

from projects.result import RESULT_FORMAT, StepOutcome, WorkflowResult, result_document


def _result(until: str = "register") -> WorkflowResult:
    steps = {
        "ingest": StepOutcome("ingest", "i" * 32, "k-ingest", True, {"mlops.data_digest": "d"}),
        "validate": StepOutcome("validate", "v" * 32, "k-validate", True,
                                {"mlops.task": "classification"}),
        "prepare": StepOutcome("prepare", "p" * 32, "k-prepare", False),
        "train": StepOutcome("train", "t" * 32, "k-train", False,
                             {"mlops.model_uri": "models:/m-abc", "mlops.positive_class": "1"},
                             {"best_val_roc_auc": 0.91, "best_val_f1": math.nan}),
    }
    result = WorkflowResult("w" * 32, "7", steps, timings={"train": 1.23456, "total": 4.5},
                            model_name_from="data source", until=until)
    if until == "register":
        steps["evaluate"] = StepOutcome("evaluate", "e" * 32, "k-evaluate", False, {},
                                        {"test_roc_auc": 0.9, "champion_test_roc_auc": 0.8})
        steps["register"] = StepOutcome("register", "r" * 32, "k-register", False)
        result.model_name, result.model_version = "cancer", "3"
        result.aliases, result.crowned, result.crown_reason = ["challenger"], False, "why"
    return result


def test_the_document_of_a_whole_run():
    doc = result_document(_result())
    assert set(doc) == {"format", "run_id", "experiment_id", "until", "steps", "task",
                        "positive_class", "model_uri", "metrics", "model", "timings"}
    assert doc["format"] == RESULT_FORMAT
    assert (doc["run_id"], doc["experiment_id"], doc["until"]) == ("w" * 32, "7", "register")
    assert doc["steps"]["ingest"] == {"run_id": "i" * 32, "reused": True,
                                      "cache_key": "k-ingest"}
    assert list(doc["steps"]) == ["ingest", "validate", "prepare", "train", "evaluate",
                                  "register"]
    assert (doc["task"], doc["positive_class"]) == ("classification", "1")
    assert doc["model_uri"] == "models:/m-abc"
    # the best candidate's validation metrics and evaluate's; NaN is null (JSON has no NaN)
    assert doc["metrics"] == {"best_val_f1": None, "best_val_roc_auc": 0.91,
                              "champion_test_roc_auc": 0.8, "test_roc_auc": 0.9}
    assert doc["model"] == {"name": "cancer", "version": "3", "aliases": ["challenger"],
                            "crowned": False, "crown_reason": "why", "name_from": "data source"}
    assert doc["timings"] == {"train": 1.235, "total": 4.5}
    assert json.loads(json.dumps(doc, allow_nan=False)) == doc


def test_a_run_that_stops_at_train_has_no_model_version():
    doc = result_document(_result("train"))
    assert doc["until"] == "train" and doc["model"] is None
    assert doc["model_uri"] == "models:/m-abc"
    assert set(doc["steps"]) == {"ingest", "validate", "prepare", "train"}


def test_the_registry_reads_the_document_the_workflow_prints():
    from registry.errors import RegistryError
    from registry.reproduce import read_result

    doc = result_document(_result("train"))
    assert read_result(json.dumps(doc)) == doc
    for bad in ("", "INFO train done\n", "[]", json.dumps({**doc, "format": 99}),
                json.dumps({**doc, "run_id": None})):
        with pytest.raises(RegistryError):
            read_result(bad)
