"""Serving unit tests log their models into the test's own folder."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _own_experiment(own_experiment):
    """Every test here logs into its own experiment (tests/unit/conftest.py)."""
    yield
