"""Nobody is granted the ledger of alias moves: the governance server writes it, everyone reads it."""

from __future__ import annotations

import pytest

from core.ledger import LEDGER_EXPERIMENT
from tracking.auth import UsersFileError, load_users_file


def test_a_users_file_granting_the_ledger_is_refused_saying_why(tmp_path):
    users = tmp_path / "users.yaml"
    users.write_text(
        "users:\n"
        f"  - {{name: rita, role: release_manager, password_env: P, experiments: "
        f"{{{LEDGER_EXPERIMENT}: EDIT}}}}\n"
    )
    with pytest.raises(UsersFileError, match=f"{LEDGER_EXPERIMENT} is the ledger of alias moves, "
                       "written by the tracking server only"):
        load_users_file(users)
