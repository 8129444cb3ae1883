"""prepare: deterministic train/validation/test split and the preprocessing pipeline."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from projects.errors import DataError


def plain(value) -> str:
    """A value as a person writes it: ``171.0``, not ``np.float64(171.0)``."""
    if hasattr(value, "item"):
        try:
            value = value.item()
        except (ValueError, AttributeError):
            pass
    return repr(value) if isinstance(value, str) else str(value)

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
        counts = stratify.value_counts()
        rare = plain(counts.idxmin())
        hint = ""
        if pd.api.types.is_numeric_dtype(stratify) and counts.size > 10:
            hint = (f"; {counts.size} distinct numeric values: for a regression set "
                    "data.task=regression (-P task=regression)")
        raise DataError(target, "stratified split",
                        f"class {rare} has {int(counts.min())} row(s), fewer than 3{hint}")
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


@dataclass(frozen=True)
class Preprocessing:
    """How the model's pipeline treats the columns (the ``clean`` settings and ``features``).

    Everything here is fitted on the train split only, inside the logged model.
    """

    impute: str = "median"
    outliers: str = "clip"
    outlier_iqr: float = 3.0
    datetimes: str = "calendar"
    numeric_share: float = 0.9
    max_distinct_share: float = 0.5
    max_categories: int = 30
    features: tuple[str, ...] = ()
    #: columns used as features even when they look like identifiers or free text
    keep: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings) -> Preprocessing:
        """The preprocessing the settings declare."""
        c = settings.clean
        return cls(c.impute, c.outliers, c.outlier_iqr, c.datetimes, c.numeric_share,
                   c.max_distinct_share, c.max_categories, tuple(settings.features.code),
                   tuple(settings.features.keep))


def feature_steps(refs: tuple[str, ...]) -> list[tuple[str, object]]:
    """The user's feature code as pipeline steps, in order.

    A reference to a function of one parameter is a feature function (DataFrame in,
    DataFrame out, wrapped in a ``FunctionTransformer``); a class, or a function without
    parameters, is a factory of a scikit-learn transformer (fitted on the train split).

    Raises:
        WorkflowError: the file or function cannot be loaded, or the factory's result is not
            a transformer.
    """
    import inspect

    from sklearn.preprocessing import FunctionTransformer

    from core import usercode
    from projects.errors import WorkflowError

    steps = []
    for i, ref in enumerate(refs):
        try:
            func = usercode.load(ref)
        except usercode.UserCodeError as exc:
            raise WorkflowError(f"features: {exc}") from None
        name = f"feature{i}_{getattr(func, '__name__', 'step')}"
        if isinstance(func, type) or _required_parameters(inspect, func) == 0:
            try:
                transformer = func()
            except Exception as exc:  # noqa: BLE001 - the user's factory failed: one line
                raise WorkflowError(f"features: {ref}: {type(exc).__name__}: {exc}") from None
            if not (hasattr(transformer, "fit") and hasattr(transformer, "transform")):
                raise WorkflowError(f"features: {ref} returned {type(transformer).__name__}, "
                                    "not a transformer (fit/transform)")
            if hasattr(transformer, "set_output"):
                try:
                    transformer.set_output(transform="pandas")
                except Exception:  # noqa: BLE001 - arrays are turned into frames later
                    pass
            steps.append((name, transformer))
        else:
            steps.append((name, FunctionTransformer(func, validate=False)))
    return steps


def _required_parameters(inspect, func) -> int:
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return 1
    return sum(1 for p in params if p.default is p.empty
               and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


#: How text categories reach the estimator: one-hot columns in a sparse matrix (linear
#: models, forests), the same one-hot columns dense (an estimator that refuses sparse input),
#: or category codes for an estimator's native categorical support (histogram boosting).
ENCODINGS = ("sparse", "dense", "native")
# histogram gradient boosting takes at most 255 categories per column (its max_bins)
_NATIVE_MAX_CATEGORIES = 255


def build_preprocessor(prep: Preprocessing | FeatureTypes | None = None,
                       encoding: str = "sparse") -> Pipeline:
    """Unfitted preprocessing: the user's features, column kinds, then impute/scale/encode.

    Columns are chosen by their type after :class:`projects.features.TidyFrame` (numbers,
    then text categories), so a feature function may add or drop columns. Rare categories
    (fewer than 5 rows) and those beyond ``max_categories`` per column share one code, so a
    dense encoding stays as narrow as the sparse one.

    Args:
        prep: the ``clean`` settings and the user's feature code.
        encoding: one of :data:`ENCODINGS`.
    """
    from sklearn.compose import make_column_selector
    from sklearn.preprocessing import FunctionTransformer, OrdinalEncoder

    from projects.features import TidyFrame, as_categories, ship_by_value

    ship_by_value()
    if not isinstance(prep, Preprocessing):
        prep = Preprocessing()
    numeric = [("scale", StandardScaler())]
    if prep.impute != "none":
        numeric.insert(0, ("impute", SimpleImputer(strategy=prep.impute)))
    if encoding == "native":
        # codes typed as pandas categories: HistGradientBoosting splits on them natively
        # (categorical_features="from_dtype"); an unseen category becomes missing
        encoder = [
            ("codes", OrdinalEncoder(
                handle_unknown="use_encoded_value", unknown_value=np.nan, min_frequency=5,
                max_categories=min(prep.max_categories, _NATIVE_MAX_CATEGORIES))),
            ("categories", FunctionTransformer(as_categories, feature_names_out="one-to-one")),
        ]
    else:
        encoder = [("onehot", OneHotEncoder(
            handle_unknown="infrequent_if_exist", min_frequency=5,
            max_categories=prep.max_categories, sparse_output=encoding == "sparse"))]
    categorical = Pipeline([
        ("impute", SimpleImputer(strategy="constant", fill_value="(missing)")), *encoder])
    encode = ColumnTransformer(
        [("numeric", Pipeline(numeric), make_column_selector(dtype_include="number")),
         ("categorical", categorical, make_column_selector(dtype_exclude="number"))],
        remainder="drop", verbose_feature_names_out=False,
        sparse_threshold=0.3 if encoding == "sparse" else 0.0,
    )
    if encoding == "native":
        encode.set_output(transform="pandas")  # the category dtype reaches the estimator
    tidy = TidyFrame(prep.datetimes, prep.outliers, prep.outlier_iqr, prep.numeric_share,
                     prep.max_distinct_share, prep.keep)
    return Pipeline([*feature_steps(prep.features), ("tidy", tidy), ("encode", encode)])


def drop_train_outliers(train: pd.DataFrame, target: str, outlier_iqr: float
                        ) -> tuple[pd.DataFrame, int]:
    """``clean.outliers: drop``: rows of the train split outside its own fences, dropped.

    Only the train split loses rows (fences learnt on it); validation and test rows are what
    the model will be served, so they stay.
    """
    numeric = [c for c in train.columns if c != target
               and pd.api.types.is_numeric_dtype(train[c])
               and not pd.api.types.is_bool_dtype(train[c])]
    if not numeric or train.empty:
        return train, 0
    values = train[numeric].astype(float)
    q1, q3 = values.quantile(0.25), values.quantile(0.75)
    low, high = q1 - outlier_iqr * (q3 - q1), q3 + outlier_iqr * (q3 - q1)
    bad = (values.lt(low) | values.gt(high)).any(axis=1)
    return train.loc[~bad].reset_index(drop=True), int(bad.sum())
