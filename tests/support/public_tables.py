"""Public tables that ship inside installed packages (no download), as the workflow reads them."""

from __future__ import annotations

from pathlib import Path


def public_table(name: str):
    """``(frame, target, task)`` of one public table: ``cancer``, ``diabetes`` or ``penguins``.

    ``penguins`` is palmerpenguins' raw table (text categories with gaps, dates as text), its
    row id column left out.
    """
    import pandas as pd
    from sklearn.datasets import load_breast_cancer, load_diabetes

    if name == "cancer":
        return load_breast_cancer(as_frame=True).frame, "target", "classification"
    if name == "diabetes":
        return load_diabetes(as_frame=True, scaled=False).frame, "target", "regression"
    if name == "penguins":
        import palmerpenguins

        raw = pd.read_csv(Path(palmerpenguins.__file__).parent / "data" / "penguins-raw.csv")
        return raw.drop(columns=["Individual ID"]), "Species", "classification"
    raise ValueError(f"unknown public table {name!r}")
