"""Evaluate's plots stay readable: long class names, many classes, long column names.

Rendered with matplotlib's Agg renderer on public tables nobody here wrote (palmerpenguins'
raw table, vega_datasets' airports); every text is measured as drawn (``get_window_extent``).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import matplotlib
import pandas as pd
import pytest
from matplotlib.text import Text
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.tree import DecisionTreeClassifier

from projects.evaluate import plot_evaluation

matplotlib.use("Agg")


def _penguins() -> tuple[pd.DataFrame, str]:
    """Three species with names of 33-41 characters; columns with spaces and parentheses."""
    import palmerpenguins

    raw = pd.read_csv(Path(palmerpenguins.__file__).parent / "data" / "penguins-raw.csv")
    columns = ["Culmen Length (mm)", "Culmen Depth (mm)", "Flipper Length (mm)",
               "Body Mass (g)", "Delta 15 N (o/oo)", "Delta 13 C (o/oo)"]
    return raw[[*columns, "Species"]], "Species"


def _airports() -> tuple[pd.DataFrame, str]:
    """The 40 states with the most airports, predicted from the coordinates: many classes."""
    import vega_datasets

    df = pd.read_csv(Path(vega_datasets.__file__).parent / "_data" / "airports.csv")
    top = df["state"].value_counts().index[:40]
    df = df[df["state"].isin(top)]
    return df[["latitude", "longitude", "state"]].sample(1500, random_state=0), "state"


def _long_names(table: pd.DataFrame, target: str) -> pd.DataFrame:
    """The airports' states renamed to long names (many classes, each a long label)."""
    return table.assign(**{target: "Airports of the state of " + table[target] + " (USA)"})


def _figures(table: pd.DataFrame, target: str) -> dict:
    model = make_pipeline(SimpleImputer(), DecisionTreeClassifier(max_depth=6, random_state=0))
    model.fit(table.drop(columns=[target]), table[target])
    return plot_evaluation("classification", model, table, target)


def _texts(fig, renderer):
    """Every text the figure draws (tick labels: those of the ticks in view, as drawn)."""
    drawn = list(fig.texts)
    for ax in fig.axes:
        drawn += [*ax.texts, ax.title, ax._left_title, ax._right_title, ax.xaxis.label,
                  ax.yaxis.label, *_ticks_in_view(ax.xaxis, 0), *_ticks_in_view(ax.yaxis, 1)]
        legend = ax.get_legend()
        if legend is not None:
            drawn += legend.get_texts()
    assert all(isinstance(t, Text) for t in drawn)
    return [(t, t.get_window_extent(renderer)) for t in drawn
            if t.get_visible() and t.get_text().strip()]



def _ticks_in_view(axis, coordinate: int) -> list[Text]:
    """The tick labels an axis draws: the locator's ticks outside the view limits are not."""
    low, high = sorted(axis.get_view_interval())
    eps = (high - low) * 1e-9
    return [t for t in axis.get_ticklabels(which="both")
            if low - eps <= t.get_position()[coordinate] <= high + eps]


def _overlap(a, b, slack: float = 0.5) -> bool:
    return (min(a.x1, b.x1) - max(a.x0, b.x0) > slack
            and min(a.y1, b.y1) - max(a.y0, b.y0) > slack)


@pytest.mark.parametrize("case", ["penguins-long-names", "airports-40-classes",
                                  "airports-40-long-names"])
def test_every_label_is_inside_the_figure_and_none_overlaps(case):
    table, target = _penguins() if case.startswith("penguins") else _airports()
    if case.endswith("long-names") and case.startswith("airports"):
        table = _long_names(table, target)
    figures = _figures(table, target)
    assert "confusion_matrix.png" in figures and "feature_importance.png" in figures
    for name, fig in figures.items():
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        box = fig.bbox
        texts = _texts(fig, renderer)
        assert texts, name
        for text, extent in texts:
            assert (extent.x0 >= box.x0 - 1 and extent.y0 >= box.y0 - 1
                    and extent.x1 <= box.x1 + 1 and extent.y1 <= box.y1 + 1), (
                f"{name}: {text.get_text()!r} is clipped: {extent} outside {box}")
        for ax in fig.axes:
            # tick labels, axis labels and the title: none on another
            labels = [t for t in (*_ticks_in_view(ax.xaxis, 0), *_ticks_in_view(ax.yaxis, 1),
                                  ax.xaxis.label, ax.yaxis.label, ax.title)
                      if t.get_visible() and t.get_text()]

            extents = [(t.get_text(), t.get_window_extent(renderer)) for t in labels]
            for (ta, a), (tb, b) in itertools.combinations(extents, 2):
                assert not _overlap(a, b), f"{name}: {ta!r} overlaps {tb!r}"
            # the counts in the cells: none on another
            cells = [t.get_window_extent(renderer) for t in ax.texts if t.get_visible()]
            for a, b in itertools.combinations(cells, 2):
                assert not _overlap(a, b), f"{name}: cell counts overlap"
        matplotlib.pyplot.close(fig)


def test_the_confusion_matrix_grows_with_its_classes():
    few = _figures(*_penguins())["confusion_matrix.png"]
    many = _figures(*_airports())["confusion_matrix.png"]
    assert many.get_size_inches()[0] > few.get_size_inches()[0]
    assert many.get_size_inches()[1] > few.get_size_inches()[1]
    # every class is named on both axes, as the target holds it (wrapped, never renamed)
    ax = few.axes[0]
    shown = {t.get_text().replace("\n", " ") for t in ax.get_xticklabels()}
    assert shown == set(_penguins()[0]["Species"].dropna().unique())
    matplotlib.pyplot.close("all")
