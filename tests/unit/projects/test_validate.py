import numpy as np
import pandas as pd
import pytest

from projects.errors import DataError
from projects.validate import check_data, clean_data, profile_data, profile_html


def frame(n=40):
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "x": rng.normal(size=n),
            "colour": rng.choice(["red", "blue"], size=n),
            "target": np.arange(n) % 2,
        }
    )


def test_good_data_passes():
    check_data(frame(), "target", "classification", {"x": "float", "colour": "str"})


@pytest.mark.parametrize(
    ("mutate", "declared", "column", "rule"),
    [
        (lambda df: df.drop(columns=["target"]), {}, "target", "required column"),
        (lambda df: df.iloc[0:0], {}, "*", "non-empty"),
        (lambda df: df.assign(x=np.nan), {}, "x", "not all null"),
        (lambda df: df.assign(x=["a"] * len(df)), {"x": "float"}, "x", "type float"),
        (lambda df: df.assign(target=1), {}, "target", "at least two classes"),
    ],
    ids=["missing-target", "empty", "all-null", "wrong-type", "one-class"],
)
def test_bad_data_names_column_and_rule(mutate, declared, column, rule):
    with pytest.raises(DataError) as err:
        check_data(mutate(frame()), "target", "classification", declared)
    assert err.value.column == column
    assert err.value.rule == rule
    assert rule in str(err.value)
    if column != "*":
        assert repr(column) in str(err.value)


def test_regression_needs_a_numeric_target():
    df = frame().assign(target=["a", "b"] * 20)
    with pytest.raises(DataError, match="numeric target"):
        check_data(df, "target", "regression")


def test_cleaning_only_drops_rows_and_changes_no_value():
    df = frame()
    df = pd.concat([df, df.iloc[[0, 1]]], ignore_index=True)
    df.loc[5, "x"] = np.nan
    df.loc[6, "x"] = 1e6
    df.loc[7, "target"] = np.nan
    clean, report = clean_data(df, "target", True)
    assert report.duplicates_dropped == 2
    assert report.missing_target_dropped == 1
    assert report.missing_values == 1 and report.per_column == {"x": {"missing": 1}}
    # imputation and clipping are the model's (fitted on the train split), not validate's
    assert clean["x"].isna().sum() == 1 and clean["x"].max() == 1e6
    assert report.rows_out == len(clean) == 39


def test_profile_lists_every_column_with_a_distribution_plot():
    df = frame()
    profile = profile_data(df)
    assert list(profile["column"]) == ["x", "colour", "target"]
    assert profile.set_index("column").loc["colour", "distinct"] == 2
    page = profile_html(df, profile, clean_data(df, "target")[1])
    assert page.count("<svg") == 3
    assert "Data profile (40 rows, 3 columns)" in page


def test_profile_page_escapes_names_and_values_from_the_data():
    evil_name = "<script>alert('name')</script>"
    evil_value = "<img src=x onerror=alert('value')>"
    df = pd.DataFrame({
        evil_name: [1.0, 2.0, 3.0, 4.0],
        "colour": [evil_value, "red", evil_value, "blue"],
        "target": [0, 1, 0, 1],
    })
    profile = profile_data(df)
    page = profile_html(df, profile, clean_data(df, "target")[1])
    assert "<script>" not in page and "<img" not in page
    assert "&lt;script&gt;alert(&#39;name&#39;)&lt;/script&gt;" in page
    assert page.count("<svg") == 3  # the plots are still rendered as markup
