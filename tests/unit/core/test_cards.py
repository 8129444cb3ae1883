"""The model card: its document, its markdown, and the status lifecycle only the server moves."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest

from core import cards
from core.names import CARD_REVIEW_TAG, CARD_STATUS_TAG


def _card(**changes) -> dict:
    card = cards.build_card(
        "churn", "4", intended_use="Rank EU customers for the retention team's calls.",
        limitations=["Not validated outside the EU.", "Weekly data only."],
        data={"source": "s3://bucket/churn.parquet", "digest": "ab12", "rows": 569,
              "schema": {"tenure": "long", "plan": "string"}, "ignored": "not a card key"},
        test_metrics={"test_roc_auc": 0.91, "test_f1": 0.8},
        per_class=cards.per_class_metrics(["yes", "no", "no", "yes"], ["yes", "no", "yes", "yes"]),
        champion={"version": "3", "metrics": {"roc_auc": 0.89}},
        lineage={"commit": "abc1234", "workflow_run": "r1"})
    card.update(changes)
    return card


def test_the_card_holds_what_the_issue_lists_and_renders_it():
    card = _card()
    assert card["status"] == cards.DRAFT and card["format"] == cards.FORMAT
    assert card["data"] == {"source": "s3://bucket/churn.parquet", "digest": "ab12", "rows": 569,
                            "schema": {"tenure": "long", "plan": "string"}}
    assert card["metrics"]["test"] == {"roc_auc": 0.91, "f1": 0.8}
    assert card["metrics"]["per_class"] == {
        "no": {"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2},
        "yes": {"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2}}
    json.dumps(card, allow_nan=False)  # the JSON document is plain JSON
    assert cards.build_card("m", "1", intended_use="", limitations=[], data={},
                            test_metrics={"test_log_loss": float("inf")})["metrics"]["test"] == {
        "log_loss": None}  # not a number JSON cannot hold

    md = cards.render_markdown(card)
    for line in ("# Model card: churn v4", "**Status:** Draft",
                 "Rank EU customers for the retention team's calls.",
                 "- rows: 569", "- schema: `tenure` long, `plan` string",
                 "| metric | this version | champion v3 |", "| roc_auc | 0.91 | 0.89 |",
                 "| f1 | 0.8 | - |", "| no | 1 | 0.5 | 0.6667 | 2 |",
                 "_Not validated yet (`python -m registry validate`)._", "- commit: abc1234",
                 "_None yet._", "- Not validated outside the EU.", "- Weekly data only."):
        assert line in md.splitlines(), line
    bare = cards.render_markdown(_card(intended_use="", limitations=[]))
    assert "_Not stated (setting `card.intended_use`)._" in bare
    assert "_None stated (setting `card.limitations`)._" in bare


@pytest.mark.parametrize(("current", "status", "error"), [
    ("Draft", "PendingReview", None), ("PendingReview", "Approved", None),
    ("PendingReview", "Draft", None), ("Approved", "Archived", None), ("Draft", "Draft", None),
    ("Draft", "Approved", "a Draft card cannot become Approved (allowed: Archived, "
                          "PendingReview)"),
    ("Archived", "PendingReview", "a Archived card cannot become PendingReview (allowed: none)"),
    ("Draft", "Shipped", "unknown card status 'Shipped'"),
    (None, "PendingReview", "the version has no model card"),
])
def test_the_lifecycle(current, status, error):
    if error is None:
        cards.check_transition(current, status)
    else:
        with pytest.raises(cards.CardError, match=error.replace("(", r"\(").replace(")", r"\)")):
            cards.check_transition(current, status)


def test_the_server_moves_the_status_and_the_card_shows_its_review(tmp_path):
    client = mlflow.MlflowClient()
    with mlflow.start_run() as run:
        mlflow.log_dict(_card(), cards.JSON_PATH)
    client.create_registered_model("churn")
    mv = client.create_model_version("churn", f"runs:/{run.info.run_id}/model",
                                     run_id=run.info.run_id,
                                     tags=cards.creation_tags(run.info.run_id))

    def download(uri: str) -> Path:
        return Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path / "dl")))

    assert cards.read_card(client, "churn", mv.version, download)["status"] == cards.DRAFT
    assert cards.set_card_status(client, "churn", mv.version, cards.PENDING_REVIEW) == "Draft"
    review = {"request": "r-1", "approvals": [{"by": "bob", "at": "2026-12-07T23:00:00Z",
                                               "reason": "checked"}],
              "gates": [{"gate": "roc_auc", "passed": True, "value": 0.91, "expected": 0.85}]}
    cards.set_card_status(client, "churn", mv.version, cards.APPROVED, review)
    card = cards.read_card(client, "churn", mv.version, download)
    assert (card["status"], card["approvals"], card["gates"]) == (
        "Approved", review["approvals"], review["gates"])
    md = cards.render_markdown(card)
    assert "- bob at 2026-12-07T23:00:00Z: checked" in md
    assert "- roc_auc: passed (0.91 vs 0.85)" in md

    with pytest.raises(cards.CardError, match="cannot become Draft"):
        cards.set_card_status(client, "churn", mv.version, cards.DRAFT, {"request": "r-2"})
    tags = client.get_model_version("churn", mv.version).tags
    assert tags[CARD_STATUS_TAG] == "Approved"  # a refused move writes nothing
    assert json.loads(tags[CARD_REVIEW_TAG])["request"] == "r-1"

    bare = client.create_model_version("churn", f"runs:/{run.info.run_id}/model",
                                       run_id=run.info.run_id)
    with pytest.raises(cards.CardError, match=r"churn/2 has no model card"):
        cards.read_card(client, "churn", bare.version, download)
