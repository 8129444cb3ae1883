"""The model's own data handling: types, datetimes, clipping, fitted on the train split only.

:class:`TidyFrame` is the first fitted step of every logged model (after the user's feature
functions): it decides each column's kind from the train split (numeric, numbers written as
text, boolean, datetime, category, or free text to drop), learns the clipping fences there, and
applies exactly that at predict time, so a served row is treated as the training rows were.

This module is pickled *by value* into each model (see :func:`ship_by_value`): a model served
from another directory, without this repository, still loads. It therefore imports nothing of
the project, only numpy, pandas and scikit-learn.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

NUMERIC, BOOL, DATETIME, CATEGORY, DROP = "numeric", "bool", "datetime", "category", "drop"
_TRUE = {"true", "yes", "y", "t", "1"}
_FALSE = {"false", "no", "n", "f", "0"}
# a free-text/identifier column must also have at least this many distinct values
_MIN_TEXT_DISTINCT = 50
# names of identifier columns: id, ID, customer_id, "Unnamed: 0" (the index pandas writes),
# rownames/"" (the row names R writes), index (a DataFrame's index written as a column)
_ID_NAME = re.compile(r"^(?:id|.*[ _.-]id|unnamed: ?\d+|rownames|row\.names|index|)$",
                      re.IGNORECASE)
# a unique integer column spanning at most this many times its count numbers the rows (the
# train split is a shuffled sample of them); a measurement's range is far wider
_COUNTER_SPAN = 3


def to_frame(X) -> pd.DataFrame:
    """A DataFrame with string column names (a user transformer may return an array)."""
    if isinstance(X, pd.DataFrame):
        return X if all(isinstance(c, str) for c in X.columns) else X.rename(columns=str)
    arr = np.asarray(X)
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    return pd.DataFrame(arr, columns=[f"f{i}" for i in range(arr.shape[1])])


def parse_numbers(col: pd.Series) -> pd.Series:
    """Numbers of a column (text cells parsed, unparsable ones missing), as float."""
    if pd.api.types.is_bool_dtype(col):
        return col.astype(float)
    if pd.api.types.is_numeric_dtype(col):
        return col.astype(float)
    text = col.astype("string").str.strip().str.replace(",", "", regex=False)
    return pd.to_numeric(text, errors="coerce").astype(float)


def unparsable(col: pd.Series) -> pd.Series:
    """Mask of the cells that are present but not numbers."""
    return col.notna() & parse_numbers(col).isna()


def numeric_share(col: pd.Series) -> float:
    """Share of the present cells of a text column that parse as numbers."""
    present = col.dropna()
    if present.empty:
        return 0.0
    return float(parse_numbers(present).notna().mean())


def _bool_text(col: pd.Series) -> bool:
    values = set(col.dropna().astype(str).str.strip().str.lower().unique())
    return bool(values) and values <= (_TRUE | _FALSE) and not values <= {"0", "1"}


def _parse_dates(col: pd.Series) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(col):
        out = col
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # one inferred format, vectorised; per-cell parsing only when that format misses
            out = pd.to_datetime(col, errors="coerce")
            if out.isna().sum() > col.isna().sum():
                out = pd.to_datetime(col, errors="coerce", format="mixed")
    if getattr(out.dt, "tz", None) is not None:
        out = out.dt.tz_convert("UTC").dt.tz_localize(None)
    return out


def _looks_like_dates(col: pd.Series) -> bool:
    sample = col.dropna().astype(str).head(200)
    if sample.empty or not sample.str.contains(r"\d{1,4}[-/.:]\d{1,2}", regex=True).all():
        return False
    return bool(_parse_dates(sample).notna().mean() >= 0.9)


def identifier_reason(name: str, col: pd.Series, kind: str) -> str | None:
    """Why a column identifies rows rather than describing them, or None.

    Args:
        name: the column's name: ``id``, ``*_id``, ``Unnamed: 0`` (the index pandas writes),
            R's row names are identifiers whatever they hold.
        col: its train-split values: integers unique per row whose span is close to their
            count number the rows (a row counter sampled into the split); text unique per row
            without spaces is a key or a code, not prose.
        kind: its kind from :func:`column_kind` (dates and numbers written as text are
            never identifiers by their values).
    """
    if _ID_NAME.match(str(name).strip()):
        return "identifier (named like an id)"
    present = col.dropna()
    if len(present) < _MIN_TEXT_DISTINCT or not present.is_unique:
        return None
    if kind == NUMERIC and pd.api.types.is_integer_dtype(present):
        span = int(present.max()) - int(present.min()) + 1
        if span <= _COUNTER_SPAN * len(present):
            return "identifier (integers unique per row, numbering the rows)"
    elif kind in (CATEGORY, DROP) and not present.astype(str).str.contains(r"\s").any():
        return "identifier (text unique per row)"
    return None


def column_kind(col: pd.Series, numeric_share_min: float = 0.9,
                max_distinct_share: float = 0.5) -> tuple[str, str]:
    """``(kind, why)`` of a column, as seen on the train split."""
    if pd.api.types.is_bool_dtype(col):
        return BOOL, "boolean"
    if pd.api.types.is_datetime64_any_dtype(col):
        return DATETIME, "datetime"
    if pd.api.types.is_numeric_dtype(col):
        return NUMERIC, "numeric"
    present = col.dropna()
    if present.empty:
        return CATEGORY, "empty"
    if _bool_text(present):
        return BOOL, "true/false text"
    if numeric_share(present) >= numeric_share_min:
        return NUMERIC, "numbers written as text"
    if _looks_like_dates(present):
        return DATETIME, "dates written as text"
    distinct = present.astype(str).nunique()
    if distinct >= _MIN_TEXT_DISTINCT and distinct > max_distinct_share * len(present):
        return DROP, (f"free text or identifier ({distinct} distinct values in "
                      f"{len(present)} rows)")
    return CATEGORY, "category"


class TidyFrame(TransformerMixin, BaseEstimator):
    """Column kinds, datetime calendar features and clipping, learnt from the train split.

    Identifiers (:func:`identifier_reason`) and free text are left out of the features; a
    column left out is never read at predict time, so a client may omit it.

    Args:
        datetimes: ``calendar`` (year, month, day, weekday, day of year, hour when present)
            or ``drop``.
        outliers: ``clip`` clips numeric columns to the fences learnt in ``fit``; else none.
        outlier_iqr: fence width in inter-quartile ranges.
        numeric_share: share of parsable cells above which a text column is numeric.
        max_distinct_share: text columns more distinct than this share of rows are dropped.
        keep: columns used as features even when they look like identifiers or free text
            (``features.keep``).
    """

    def __init__(self, datetimes: str = "calendar", outliers: str = "clip",
                 outlier_iqr: float = 3.0, numeric_share: float = 0.9,
                 max_distinct_share: float = 0.5, keep: tuple[str, ...] = ()):
        self.datetimes = datetimes
        self.outliers = outliers
        self.outlier_iqr = outlier_iqr
        self.numeric_share = numeric_share
        self.max_distinct_share = max_distinct_share
        self.keep = keep

    def fit(self, X, y=None):
        """Learn each column's kind, the dropped columns and the clipping fences from ``X``."""
        X = to_frame(X)
        keep = set(self.keep or ())
        self.kinds_: dict[str, str] = {}
        self.dropped_: dict[str, str] = {}
        self.identifiers_: dict[str, str] = {}
        self.hours_: dict[str, bool] = {}
        for name in X.columns:
            kind, why = column_kind(X[name], self.numeric_share, self.max_distinct_share)
            if name in keep:
                if kind == DROP:  # the user's choice: a category, its rare values pooled
                    kind, why = CATEGORY, "category (features.keep)"
            elif (reason := identifier_reason(name, X[name], kind)) is not None:
                kind, why = DROP, reason
                self.identifiers_[name] = reason
            if kind == DATETIME and self.datetimes == "drop":
                kind, why = DROP, "datetime column (clean.datetimes: drop)"
            if kind == DROP:
                self.dropped_[name] = why
            self.kinds_[name] = kind
            if kind == DATETIME:
                stamps = _parse_dates(X[name]).dropna()
                self.hours_[name] = bool((stamps.dt.hour != 0).any() if len(stamps) else False)
        self.low_: dict[str, float] = {}
        self.high_: dict[str, float] = {}
        if self.outliers == "clip":
            for name, kind in self.kinds_.items():
                if kind != NUMERIC:
                    continue
                values = parse_numbers(X[name]).dropna()
                if values.empty:
                    continue
                q1, q3 = np.quantile(values.to_numpy(), [0.25, 0.75])
                width = self.outlier_iqr * (q3 - q1)
                self.low_[name], self.high_[name] = float(q1 - width), float(q3 + width)
        self.feature_names_in_ = np.asarray(list(X.columns), dtype=object)
        self.n_features_in_ = len(X.columns)
        return self

    def _calendar(self, name: str, col: pd.Series) -> dict[str, np.ndarray]:
        stamps = _parse_dates(col)
        parts = {"year": stamps.dt.year, "month": stamps.dt.month, "day": stamps.dt.day,
                 "weekday": stamps.dt.weekday, "dayofyear": stamps.dt.dayofyear}
        if self.hours_.get(name):
            parts["hour"] = stamps.dt.hour
        return {f"{name}_{k}": v.astype(float).to_numpy() for k, v in parts.items()}

    def transform(self, X):
        """Apply the kinds and fences learnt in ``fit`` (unparsable cells become missing)."""
        X = to_frame(X)
        out: dict[str, object] = {}
        for name, kind in self.kinds_.items():
            if kind == DROP:
                continue  # never read: a client may leave it out (optional in the signature)
            # a column the signature marks optional (it had gaps) may be left out: all missing
            col = X[name] if name in X.columns else pd.Series(np.nan, index=X.index, dtype=object)
            if kind == NUMERIC:
                values = parse_numbers(col).to_numpy()
                if name in self.low_:
                    values = np.clip(values, self.low_[name], self.high_[name])
                out[name] = values
            elif kind == BOOL:
                if pd.api.types.is_bool_dtype(col):
                    out[name] = col.astype(float).to_numpy()
                else:
                    text = col.astype("string").str.strip().str.lower()
                    out[name] = np.where(text.isin(_TRUE), 1.0,
                                         np.where(text.isin(_FALSE), 0.0, np.nan))
            elif kind == DATETIME:
                out.update(self._calendar(name, col))
            elif kind == CATEGORY:
                # text as text (an int-like category served as a number still matches)
                out[name] = col.astype(str).where(col.notna(), np.nan).to_numpy(dtype=object)
        return pd.DataFrame(out, index=X.index)

    def get_feature_names_out(self, input_features=None):
        """The output columns: calendar parts for datetimes, dropped columns left out."""
        names = []
        for name, kind in self.kinds_.items():
            if kind == DATETIME:
                names += [f"{name}_{k}" for k in ("year", "month", "day", "weekday", "dayofyear")]
                names += [f"{name}_hour"] if self.hours_.get(name) else []
            elif kind != DROP:
                names.append(name)
        return np.asarray(names, dtype=object)


def as_categories(X) -> pd.DataFrame:
    """Category codes typed as pandas categories (histogram boosting's native categories)."""
    return to_frame(X).astype("category")


def ship_by_value() -> None:
    """Pickle this module's code into the models (cloudpickle by value), not a reference.

    A model then loads where this repository is not installed (a scoring container, a
    colleague's laptop): only numpy, pandas and scikit-learn are needed.
    """
    import sys

    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
