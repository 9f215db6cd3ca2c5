"""Interactive charts for the run report and the sweep leaderboard, drawn by plotly.

A ``Page`` collects HTML and plotly figures and renders one self-contained file: plotly.js is inlined
once in the page (no network when it is viewed), each chart has hover values and plotly's own tick
choice. plotly is imported here only, when a page is drawn.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

HEIGHT = 320
HOVER = "%{fullData.name}<br>%{x}: %{y:.4~g}<extra></extra>"

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1280px}
h1{font-size:22px}h2{font-size:18px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}
h3{font-size:15px;margin:18px 0 6px}
table{border-collapse:collapse;font-size:13px;margin:6px 0}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}.alert{background:#fde2e1}.ok{background:#e3f4e1}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:12px}
.card{border:1px solid #e3e3e3;padding:6px;border-radius:4px}.muted{color:#666;font-size:12px}
"""


def escape(value) -> str:
    return html.escape(str(value))


def _layout(fig, *, title, x_title=None, y_title=None, height=HEIGHT):
    fig.update_layout(title={"text": escape(title), "x": 0.01, "font": {"size": 14}}, template="plotly_white",
                      height=height, margin={"l": 60, "r": 20, "t": 44, "b": 50}, hovermode="closest",
                      legend={"orientation": "h", "yanchor": "top", "y": -0.18, "x": 0})
    fig.update_xaxes(title_text=x_title, automargin=True)
    fig.update_yaxes(title_text=y_title, automargin=True, separatethousands=True)
    return fig


def line_chart(x, series: dict, *, title, x_title=None, y_title=None, hlines=(), height=HEIGHT):
    """One line per series over ``x`` (None values are gaps); ``hlines``: ``[(label, y), ...]`` dashed."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, ys in series.items():
        fig.add_trace(go.Scatter(x=list(x), y=list(ys), name=str(name), mode="lines+markers", hovertemplate=HOVER))
    for label, value in hlines:
        fig.add_hline(y=value, line_dash="dash", line_color="#d62728", annotation_text=escape(label),
                      annotation_position="top right")
    legend = len(series) > 1
    fig.update_layout(showlegend=legend)
    return _layout(fig, title=title, x_title=x_title, y_title=y_title, height=height + (30 if legend else 0))


def bar_chart(labels, groups: dict, *, title, x_title=None, y_title=None, horizontal=False, height=None):
    """Grouped bars: ``groups`` maps a series name to one value per label; ``horizontal`` for long labels."""
    import plotly.graph_objects as go

    labels = [str(label) for label in labels]
    fig = go.Figure()
    for name, values in groups.items():
        if horizontal:
            fig.add_trace(go.Bar(y=labels, x=list(values), name=str(name), orientation="h",
                                 hovertemplate="%{y}: %{x:.4~g}<extra></extra>"))
        else:
            fig.add_trace(go.Bar(x=labels, y=list(values), name=str(name), hovertemplate=HOVER))
    fig.update_layout(barmode="group", showlegend=len(groups) > 1)
    if horizontal:
        fig.update_yaxes(autorange="reversed", type="category")
        height = height or max(HEIGHT // 2, 60 + 22 * len(labels))
    else:
        fig.update_xaxes(type="category")
    return _layout(fig, title=title, x_title=x_title, y_title=y_title, height=height or HEIGHT)


def trials_chart(points, best_so_far, *, title, metric, hover_texts=()):
    """A sweep: each trial's ``metric`` by trial number, and the best so far as a step line."""
    import plotly.graph_objects as go

    fig = go.Figure()
    if points:
        xs, ys = zip(*points)
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", name="trial", marker={"size": 9},
                                 text=list(hover_texts) or None,
                                 hovertemplate="trial %{x}: %{y:.4f}<br>%{text}<extra></extra>" if hover_texts
                                 else "trial %{x}: %{y:.4f}<extra></extra>"))
        bx, by = zip(*best_so_far)
        fig.add_trace(go.Scatter(x=bx, y=by, mode="lines", line_shape="hv", name="best so far",
                                 line={"color": "#d62728"}, hovertemplate="best after trial %{x}: %{y:.4f}<extra></extra>"))
    last = max((x for x, _ in points), default=1)
    fig.update_xaxes(tickformat="d", tick0=0, dtick=max(1, math.ceil((last + 1) / 12)), range=[-0.5, last + 0.5])
    return _layout(fig, title=title, x_title="trial", y_title=metric, height=400)


def figure_html(fig, card=True) -> str:
    """The ``<div>`` and ``<script>`` drawing one figure in a ``Page`` (which carries plotly.js once)."""
    div = fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False, "responsive": True})
    return f'<div class="card">{div}</div>' if card else div


class Page:
    """An HTML page of headings, tables and charts, written as one self-contained file."""

    def __init__(self, title):
        self.title, self.parts = title, []

    def add(self, markup: str):
        """Raw HTML (escape what comes from data with ``escape``)."""
        if markup:
            self.parts.append(markup)

    def chart(self, fig, card=True):
        """A plotly figure, drawn in place."""
        self.parts.append(figure_html(fig, card=card))

    def render(self) -> str:
        from plotly.offline import get_plotlyjs

        return "\n".join([
            '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
            f"<title>{escape(self.title)}</title><style>{CSS}</style>",
            f'<script type="text/javascript">{get_plotlyjs()}</script></head><body>',
            *self.parts, "</body></html>"])

    def write(self, path) -> Path:
        """Write the page to ``path`` (through a temporary file, so a reader never sees half a page)."""
        from mlops_framework.files import write_text_atomic

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, self.render())
        return path
