"""validate (explore & clean): profile the data, check its rules and types, drop bad rows.

It changes no value: imputation, clipping and encoding are fitted on the train split inside
the model (:mod:`projects.features`), so test rows never shape them and served rows get them.
"""

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
    missing_values: int = 0
    coerced_values: int = 0
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


def did_you_mean(name: str, columns) -> str:
    """`` (did you mean 'Species'?)`` for the closest column name, or an empty string."""
    import difflib

    names = [str(c) for c in columns]
    folded = {n.lower(): n for n in names}
    match = folded.get(name.lower()) or next(
        iter(difflib.get_close_matches(name, names, n=1, cutoff=0.6)), None) or next(
        iter(difflib.get_close_matches(name.lower(), list(folded), n=1, cutoff=0.6)), None)
    if match in folded and match not in names:
        match = folded[match]
    return f" (did you mean {match!r}?)" if match else ""


def infer_task(y: pd.Series) -> tuple[str, str]:
    """``(task, why)`` for ``task: auto``.

    A numeric target with more than 20 distinct values, or more than 10 with fractions, is
    regression; anything else (text, booleans, few distinct numbers) is classification.
    """
    y = y.dropna()
    distinct = int(y.nunique())
    if pd.api.types.is_bool_dtype(y) or not pd.api.types.is_numeric_dtype(y):
        return "classification", f"non-numeric target with {distinct} classes"
    fractional = bool((np.asarray(y, dtype=float) % 1 != 0).any())
    if distinct > 20 or (fractional and distinct > 10):
        return "regression", f"numeric target with {distinct} distinct values"
    return "classification", f"numeric target with only {distinct} distinct values"


def _cells(col: pd.Series, mask: pd.Series, limit: int = 3) -> str:
    """The first bad cells as ``'abc' (row 12)``: rows counted from 1, as in the file."""
    positions = np.flatnonzero(mask.to_numpy())[:limit]
    def cell(value) -> str:
        text = repr(value)
        return text if len(text) <= 40 else text[:37] + "..."

    shown = ", ".join(f"{cell(col.iloc[i])} (row {i + 1})" for i in positions)
    more = int(mask.sum()) - len(positions)
    return shown + (f" and {more} more" if more > 0 else "")


def type_problems(df: pd.DataFrame, target: str, declared: dict[str, str] | None,
                  share: float) -> dict[str, pd.Series]:
    """Text cells that are not numbers, in columns that are numbers (declared, or mostly).

    Returns:
        ``{column: mask of the unparsable cells}`` for each such column with bad cells.
    """
    from projects.features import numeric_share, unparsable

    declared = declared or {}
    out = {}
    for name in df.columns:
        col = df[name]
        if name == target or pd.api.types.is_numeric_dtype(col) or \
                pd.api.types.is_bool_dtype(col) or pd.api.types.is_datetime64_any_dtype(col):
            continue
        wants_number = declared.get(str(name)) in ("int", "float")
        if not wants_number and not share <= numeric_share(col) < 1.0:
            continue
        bad = unparsable(col)
        if bad.any():
            out[name] = bad
    return out


def check_types(df: pd.DataFrame, target: str, declared: dict[str, str] | None, share: float,
                coerce: bool) -> dict[str, int]:
    """Numbers written as text: fail on unparsable cells, or count them with ``coerce``.

    The cells are left as they are: the model's pipeline parses the column (on the train
    split and at serving time alike), and an unparsable cell becomes missing there.

    Returns:
        ``{column: unparsable cells}`` (with ``coerce``).

    Raises:
        DataError: naming the column, how many cells, the first values and their rows.
    """
    counts = {}
    for name, bad in type_problems(df, target, declared, share).items():
        if not coerce or int(bad.sum()) == int(df[name].notna().sum()):  # none parses: no help
            rule = f"type {declared[name]}" if name in (declared or {}) else "numeric"
            raise DataError(str(name), rule,
                            f"{int(bad.sum())} of {len(df)} cells are not numbers: "
                            f"{_cells(df[name], bad)}; fix them, or set clean.coerce=true to "
                            "make them missing")
        counts[str(name)] = int(bad.sum())
    return counts


def check_data(
    df: pd.DataFrame, target: str, task: str, declared: dict[str, str] | None = None,
    share: float = 0.9, coerce: bool = False,
) -> None:
    """Check the raw data against the workflow's rules (a pandera schema plus table rules).

    Raises:
        DataError: naming the column and the rule: missing target column (with the closest
            name), empty table, all-null column, wrong declared type (with the bad cells),
            target with a single class.
    """
    import pandera.pandas as pa

    if target not in df.columns:
        raise DataError(target, "required column",
                        f"not in the data{did_you_mean(target, df.columns)}; columns: "
                        f"{', '.join(map(str, df.columns[:20]))}"
                        f"{' ...' if len(df.columns) > 20 else ''}")
    if len(df) == 0:
        raise DataError("*", "non-empty", "the table has 0 rows")
    for name in df.columns:
        if df[name].isna().all():
            raise DataError(str(name), "not all null", f"all {len(df)} values are missing")
    declared = declared or {}
    for name in declared:
        if name not in df.columns:
            raise DataError(name, "declared column",
                            f"declared in data.columns but missing{did_you_mean(name, df.columns)}")
    check_types(df, target, declared, share, coerce)
    numeric_text = {n for n, k in declared.items() if k in ("int", "float")
                    and not pd.api.types.is_numeric_dtype(df[n])}  # parsed by the model
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
            for name, kind in declared.items() if name not in numeric_text
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
            values = ", ".join(map(plain, labels.unique()[:3]))
            raise DataError(target, "at least two classes", f"only one class ({values})")
    elif task == "regression" and not pd.api.types.is_numeric_dtype(labels):
        raise DataError(target, "numeric target", f"regression needs numbers, found {labels.dtype}"
                        f" (values like {', '.join(map(plain, labels.unique()[:3]))})")


def clean_data(
    df: pd.DataFrame,
    target: str,
    drop_duplicates: bool = True,
) -> tuple[pd.DataFrame, CleaningReport]:
    """Drop the rows no model can learn from: duplicates and rows without a target.

    Nothing is imputed or clipped here: that is fitted on the train split, inside the model.
    """
    report = CleaningReport(rows_in=len(df))
    out = df
    if drop_duplicates:
        dup = out.duplicated()
        report.duplicates_dropped = int(dup.sum())
        out = out.loc[~dup]
    missing_target = out[target].isna()
    report.missing_target_dropped = int(missing_target.sum())
    out = out.loc[~missing_target]
    features = [c for c in out.columns if c != target]
    missing = out[features].isna().sum() if features else pd.Series(dtype=int)
    report.missing_values = int(missing.sum())
    report.per_column = {str(c): {"missing": int(n)} for c, n in missing.items() if n}
    report.rows_out = len(out)
    return out.reset_index(drop=True), report


def plain(value) -> str:
    """A value as a person writes it: ``171.0``, not ``np.float64(171.0)``."""
    return str(value.item() if isinstance(value, np.generic) else value)
