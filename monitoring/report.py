"""The monitoring report: one HTML page of the gates, the drift table and the distributions."""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd

from monitoring.drift import Gate, is_numeric

#: The monitoring report; Jinja2 escapes every value (feature names come from user data).
_REPORT_PAGE = """<html><head><meta charset="utf-8"><style>body{font-family:sans-serif;\
font-size:13px}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}
.bad{background:#fdd}.ok{background:#efe}</style></head><body>
<h2>{{ title }}</h2><h3>Gates</h3><table><tr><th>gate</th><th>value</th><th>limit</th>
<th>result</th><th>detail</th></tr>
{% for g in gates %}<tr class="{{ 'ok' if g.passed else 'bad' }}"><td>{{ g.name }}</td>
<td>{{ '%.4g'|format(g.value) }}</td><td>{{ '%.4g'|format(g.limit) }}</td>
<td>{{ 'pass' if g.passed else 'FAIL' }}</td><td>{{ g.detail }}</td></tr>
{% endfor %}</table>
<h3>Feature drift</h3><table><thead><tr>{% for h in header %}<th>{{ h }}</th>{% endfor %}</tr>
</thead><tbody>{% for row in rows %}<tr>{% for cell in row %}<td>{{ cell }}</td>{% endfor %}</tr>
{% endfor %}</tbody></table>
<h3>Distributions (training vs live)</h3>
{% for png in plots %}<img src="data:image/png;base64,{{ png }}">{% endfor %}
</body></html>
"""


def _report_cell(value) -> str:
    if isinstance(value, float | np.floating):
        return "" if np.isnan(value) else f"{value:.4g}"
    return str(value)


def report_html(title: str, drift: pd.DataFrame, gates: list[Gate], reference: pd.DataFrame,
                live: pd.DataFrame, pred_ref=None, pred_live=None) -> str:
    """A readable HTML report: gates, the per-feature table and overlaid distributions."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    def figure_png(fig) -> str:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=72)
        return base64.b64encode(buf.getvalue()).decode()

    shown = list(drift.sort_values("psi", ascending=False)["feature"][:12])
    plots = []
    for col in shown + (["prediction"] if pred_ref is not None and len(pred_live) else []):
        ref = pd.Series(pred_ref) if col == "prediction" else reference[col]
        cur = pd.Series(pred_live) if col == "prediction" else live[col]
        fig = Figure(figsize=(3.4, 2.2))
        ax = fig.subplots()
        if is_numeric(ref) and is_numeric(cur):
            both = np.concatenate([ref.dropna().to_numpy(float), cur.dropna().to_numpy(float)])
            edges = np.histogram_bin_edges(both, bins=30)
            ax.hist(ref.dropna(), bins=edges, density=True, alpha=0.5, label="training")
            ax.hist(cur.dropna(), bins=edges, density=True, alpha=0.5, label="live")
        else:
            r = ref.astype(str).value_counts(normalize=True)
            c = cur.astype(str).value_counts(normalize=True)
            cats = list(dict.fromkeys([*r.index[:8], *c.index[:8]]))
            x = np.arange(len(cats))
            ax.bar(x - 0.2, r.reindex(cats, fill_value=0), 0.4, label="training")
            ax.bar(x + 0.2, c.reindex(cats, fill_value=0), 0.4, label="live")
            ax.set_xticks(x, cats, fontsize=6, rotation=30)
        ax.set_title(str(col)[:40], fontsize=8)
        ax.tick_params(labelsize=6)
        ax.legend(fontsize=6)
        fig.tight_layout()
        plots.append(figure_png(fig))
    # drifted features first, then by PSI: what needs a look is at the top
    ordered = drift.sort_values(["drifted", "psi"], ascending=[False, False])
    rows = [[_report_cell(v) for v in row]
            for row in ordered.itertuples(index=False, name=None)]
    from jinja2 import Environment

    template = Environment(autoescape=True).from_string(_REPORT_PAGE)
    return template.render(title=title, gates=gates, header=[str(c) for c in ordered.columns],
                           rows=rows, plots=plots)
