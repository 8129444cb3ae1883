"""prepare: deterministic train/validation/test split and the preprocessing pipeline."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from projects.errors import DataError

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class FeatureTypes:
    """Which feature columns are numeric and which categorical."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]


def feature_types(df: pd.DataFrame, target: str) -> FeatureTypes:
    """Numeric features are numeric dtypes (bool excluded); every other feature is categorical."""
    numeric, categorical = [], []
    for name in df.columns:
        if name == target:
            continue
        col = df[name]
        if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
            numeric.append(name)
        else:
            categorical.append(name)
    return FeatureTypes(tuple(numeric), tuple(categorical))


def split_data(
    df: pd.DataFrame, target: str, task: str, test_size: float, val_size: float, seed: int
) -> dict[str, pd.DataFrame]:
    """Split into train/val/test, stratified on the target for classification, seeded.

    Raises:
        DataError: a split would be empty or a class too small to stratify.
    """
    stratify = df[target] if task == "classification" else None
    if stratify is not None and stratify.value_counts().min() < 3:
        rare = stratify.value_counts().idxmin()
        raise DataError(target, "stratified split", f"class {rare!r} has fewer than 3 rows")
    try:
        rest, test = train_test_split(
            df, test_size=test_size, random_state=seed, stratify=stratify
        )
        train, val = train_test_split(
            rest,
            test_size=val_size,
            random_state=seed,
            stratify=rest[target] if stratify is not None else None,
        )
    except ValueError as exc:
        raise DataError("*", "split sizes", str(exc).splitlines()[0]) from None
    return {
        "train": train.reset_index(drop=True),
        "val": val.reset_index(drop=True),
        "test": test.reset_index(drop=True),
    }


def build_preprocessor(types: FeatureTypes) -> ColumnTransformer:
    """Unfitted preprocessing: impute+scale numeric columns, impute+one-hot categorical ones."""
    steps = []
    if types.numeric:
        steps.append(
            (
                "numeric",
                Pipeline(
                    [("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]
                ),
                list(types.numeric),
            )
        )
    if types.categorical:
        steps.append(
            (
                "categorical",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="most_frequent")),
                        ("onehot", OneHotEncoder(handle_unknown="ignore", min_frequency=5)),
                    ]
                ),
                list(types.categorical),
            )
        )
    return ColumnTransformer(steps, remainder="drop", verbose_feature_names_out=False)
