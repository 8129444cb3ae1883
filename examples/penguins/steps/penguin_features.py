"""Features: applied inside the logged model, so every scorer computes them the same way."""

import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin


def add_ratios(df: pd.DataFrame) -> pd.DataFrame:
    """A feature function: the raw columns in, the same plus new ones out (no fitting)."""
    out = df.copy()
    length = pd.to_numeric(out["bill_length_mm"], errors="coerce")
    depth = pd.to_numeric(out["bill_depth_mm"], errors="coerce")
    out["bill_ratio"] = length / depth
    out["mass_per_flipper"] = (pd.to_numeric(out["body_mass_g"], errors="coerce")
                               / pd.to_numeric(out["flipper_length_mm"], errors="coerce"))
    return out


class MassVsIslandMean(TransformerMixin, BaseEstimator):
    """A fitted feature: body mass minus the island's mean mass *of the train split*."""

    def fit(self, X: pd.DataFrame, y=None):
        """Learn the mean mass per island on the rows given (the train split)."""
        mass = pd.to_numeric(X["body_mass_g"], errors="coerce")
        self.means_ = mass.groupby(X["island"]).mean().to_dict()
        self.overall_ = float(mass.mean())
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        """Add ``mass_vs_island`` (an island unseen in training: the overall mean)."""
        out = X.copy()
        mean = out["island"].map(self.means_).astype(float).fillna(self.overall_)
        out["mass_vs_island"] = pd.to_numeric(out["body_mass_g"], errors="coerce") - mean
        return out


def island_mass() -> MassVsIslandMean:
    """A transformer factory (no parameters): fitted on the train split inside the model."""
    return MassVsIslandMean()
