"""validate (explore & clean): profile the data, check its schema, apply the cleaning rules."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from projects.errors import DataError

_PANDAS_KIND = {"int": "i", "float": "f", "str": "O", "bool": "b"}


@dataclass
class CleaningReport:
    """What cleaning did, as counts a person can read in the run."""

    rows_in: int = 0
    rows_out: int = 0
    duplicates_dropped: int = 0
    missing_target_dropped: int = 0
    outlier_rows_dropped: int = 0
    values_clipped: int = 0
    values_imputed: int = 0
    per_column: dict = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        """The report as MLflow metrics."""
        return {k: float(v) for k, v in self.__dict__.items() if k != "per_column"}


def profile_data(df: pd.DataFrame) -> pd.DataFrame:
    """Per column: type, missing count and share, distinct values, min/max/mean (numeric)."""
    rows = []
    n = len(df)
    for name in df.columns:
        col = df[name]
        numeric = pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)
        missing = int(col.isna().sum())
        rows.append(
            {
                "column": name,
                "type": str(col.dtype),
                "missing": missing,
                "missing_share": round(missing / n, 4) if n else 0.0,
                "distinct": int(col.nunique(dropna=True)),
                "min": float(col.min()) if numeric and missing < n else None,
                "max": float(col.max()) if numeric and missing < n else None,
                "mean": float(col.mean()) if numeric and missing < n else None,
            }
        )
    return pd.DataFrame(rows)


def distribution_svg(col: pd.Series, bins: int = 24, width: int = 160, height: int = 36) -> str:
    """A small inline SVG of a column's distribution: a histogram, or top-10 value bars."""
    col = col.dropna()
    if col.empty:
        return ""
    if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
        counts, _ = np.histogram(col.to_numpy(dtype=float), bins=bins)
    else:
        counts = col.astype(str).value_counts().head(10).to_numpy()
    peak = max(int(counts.max()), 1)
    step = width / len(counts)
    bars = "".join(
        f"<rect x='{i * step:.1f}' y='{height - height * c / peak:.1f}' width='{step * 0.9:.1f}'"
        f" height='{height * c / peak:.1f}'/>"
        for i, c in enumerate(counts)
    )
    return f"<svg width='{width}' height='{height}' fill='#3b7dd8'>{bars}</svg>"


_PROFILE_PAGE = """<html><head><meta charset="utf-8"><style>body{font-family:sans-serif;\
font-size:13px}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}</style>
</head><body><h2>Data profile ({{ rows }} rows, {{ columns|length }} columns)</h2>
<table><thead><tr>{% for h in header %}<th>{{ h }}</th>{% endfor %}</tr></thead><tbody>
{% for row in table %}<tr>{% for cell in row %}<td>{{ cell }}</td>{% endfor %}</tr>
{% endfor %}</tbody></table>
<h2>Cleaning</h2><table>{% for k, v in cleaning %}<tr><td>{{ k }}</td><td>{{ v }}</td></tr>
{% endfor %}</table></body></html>
"""


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def profile_html(df: pd.DataFrame, profile: pd.DataFrame, report: CleaningReport) -> str:
    """A self-contained HTML page the MLflow UI renders.

    The per-column profile with a distribution plot per column, and what cleaning did. Rendered
    by Jinja2 with autoescaping: column names and values from the data are text, never markup;
    only the SVG plots, built here from numbers, are marked safe.
    """
    from jinja2 import Environment
    from markupsafe import Markup

    sample = df.sample(20_000, random_state=0) if len(df) > 20_000 else df
    header = [*map(str, profile.columns), "distribution"]
    table = [
        [*(_cell(v) for v in row), Markup(distribution_svg(sample[row[0]]))]
        for row in profile.itertuples(index=False, name=None)
    ]
    cleaning = [(k, f"{v:g}") for k, v in report.metrics().items()]
    template = Environment(autoescape=True).from_string(_PROFILE_PAGE)
    return template.render(rows=len(df), columns=list(df.columns), header=header, table=table,
                           cleaning=cleaning)


def check_data(
    df: pd.DataFrame, target: str, task: str, declared: dict[str, str] | None = None
) -> None:
    """Check the raw data against the workflow's rules (a pandera schema plus table rules).

    Raises:
        DataError: naming the column and the rule: missing target column, empty table,
            all-null column, wrong declared type, target with a single class.
    """
    import pandera.pandas as pa

    if target not in df.columns:
        raise DataError(target, "required column", f"not in the data (columns: {list(df.columns)})")
    if len(df) == 0:
        raise DataError("*", "non-empty", "the table has 0 rows")
    for name in df.columns:
        if df[name].isna().all():
            raise DataError(str(name), "not all null", f"all {len(df)} values are missing")
    declared = declared or {}
    for name in declared:
        if name not in df.columns:
            raise DataError(name, "declared column", "declared in data.columns but missing")
    schema = pa.DataFrameSchema(
        {
            name: pa.Column(
                checks=pa.Check(
                    lambda s, kind=_PANDAS_KIND[kind]: s.dtype.kind == kind
                    or (kind == "f" and s.dtype.kind in "iu")
                    or (kind == "O" and pd.api.types.is_string_dtype(s)),
                    element_wise=False,
                    error=f"dtype {kind}",
                ),
                nullable=True,
            )
            for name, kind in declared.items()
        }
        | {target: pa.Column(nullable=True)},
        strict=False,
    )
    try:
        schema.validate(df, lazy=False)
    except pa.errors.SchemaError as exc:
        column = str(getattr(exc, "column_name", None) or target)
        found = str(df[column].dtype) if column in df.columns else "?"
        raise DataError(column, f"type {declared.get(column)}", f"found {found}") from None
    labels = df[target].dropna()
    if task == "classification":
        if labels.nunique() < 2:
            values = ", ".join(map(str, labels.unique()[:3]))
            raise DataError(target, "at least two classes", f"only one class ({values})")
    elif not pd.api.types.is_numeric_dtype(labels):
        raise DataError(target, "numeric target", f"regression needs numbers, found {labels.dtype}")


def clean_data(
    df: pd.DataFrame,
    target: str,
    drop_duplicates: bool,
    impute: str,
    outliers: str,
    outlier_iqr: float,
) -> tuple[pd.DataFrame, CleaningReport]:
    """Apply the declared cleaning rules; return the clean frame and what was done."""
    report = CleaningReport(rows_in=len(df))
    out = df
    if drop_duplicates:
        dup = out.duplicated()
        report.duplicates_dropped = int(dup.sum())
        out = out.loc[~dup]
    missing_target = out[target].isna()
    report.missing_target_dropped = int(missing_target.sum())
    out = out.loc[~missing_target].copy()
    features = [c for c in out.columns if c != target]
    numeric = [
        c
        for c in features
        if pd.api.types.is_numeric_dtype(out[c]) and not pd.api.types.is_bool_dtype(out[c])
    ]
    if outliers != "none" and numeric and len(out):
        values = out[numeric].astype(float)
        q1, q3 = values.quantile(0.25), values.quantile(0.75)
        low, high = q1 - outlier_iqr * (q3 - q1), q3 + outlier_iqr * (q3 - q1)
        outside = values.lt(low) | values.gt(high)
        if outliers == "drop":
            bad = outside.any(axis=1)
            report.outlier_rows_dropped = int(bad.sum())
            out = out.loc[~bad]
        else:
            report.values_clipped = int(outside.to_numpy().sum())
            for c in numeric:
                if outside[c].any():
                    out[c] = values[c].clip(low[c], high[c])
    if impute != "none":
        for c in features:
            n_missing = int(out[c].isna().sum())
            if not n_missing:
                continue
            if impute == "most_frequent" or c not in numeric:
                fill = out[c].mode(dropna=True).iloc[0]
            else:
                fill = getattr(out[c], impute)()
            out[c] = out[c].fillna(fill)
            report.values_imputed += n_missing
            report.per_column[c] = {"imputed": n_missing, "fill": _plain(fill)}
    report.rows_out = len(out)
    return out.reset_index(drop=True), report


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value
