"""Ingest: the Palmer penguins table, as the palmerpenguins package ships it (no download)."""

import pandas as pd


def load_penguins() -> pd.DataFrame:
    """The raw table: categoricals (island, sex), missing values, a text target (species)."""
    from palmerpenguins import load_penguins as load

    return load()
