"""A version the server moves a protected alias to gets its model card Approved by that move."""

from __future__ import annotations

import mlflow

from core.aliases import move_alias
from core.cards import APPROVED, ARCHIVED, DRAFT, card_status
from core.names import CARD_REVIEW_TAG, CARD_STATUS_TAG
from tracking.promotions import approve_card


def test_the_champion_s_card_goes_from_draft_to_approved_naming_the_move(tmp_path):
    import json

    client = mlflow.MlflowClient()
    client.create_registered_model("churn")
    for status in (DRAFT, ARCHIVED, None):
        client.create_model_version("churn", source=str(tmp_path),
                                    tags={CARD_STATUS_TAG: status} if status else None)
    moved = move_alias(client, "churn", "1", "champion", "release 1", by="rita").attempt
    assert approve_card(client, "churn", "1", moved) == APPROVED
    review = json.loads(client.get_model_version("churn", "1").tags[CARD_REVIEW_TAG])
    assert (review["attempt"], review["by"], review["reason"]) == (moved.id, "rita", "release 1")
    assert approve_card(client, "churn", "1", moved) == APPROVED  # again: nothing to do
    # an archived card stays archived, a version without a card has none: the move stands
    assert approve_card(client, "churn", "2", moved) == ARCHIVED
    assert approve_card(client, "churn", "3", moved) is None
    assert card_status(client, "churn", "3") is None
