"""Interactive charts for the run report and the sweep leaderboard, drawn by plotly.

A ``Page`` collects HTML and plotly figures and renders one self-contained file: plotly.js is inlined
once in the page (no network when it is viewed), each chart has hover values and plotly's own tick
choice. plotly is imported here only, when a page is drawn.
"""

from __future__ import annotations

import functools
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


def prepare() -> None:
    """Import plotly and make its template now, for the next chart (0.05 s a process, at its first chart)."""
    _template()


@functools.cache
def _template() -> dict:
    """plotly's ``plotly_white`` template as plain JSON, made once: figures are plain dicts (plotly's figure
    objects validate and deep-copy the template on every update, 50-80 ms a chart)."""
    import plotly.io as pio

    return pio.templates["plotly_white"].to_plotly_json()


def _figure(traces, *, title, x_title=None, y_title=None, height=HEIGHT, xaxis=(), yaxis=(), **layout) -> dict:
    return {"data": traces, "layout": {
        "title": {"text": escape(title), "x": 0.01, "font": {"size": 14}}, "template": _template(), "height": height,
        "margin": {"l": 60, "r": 20, "t": 44, "b": 50}, "hovermode": "closest",
        "legend": {"orientation": "h", "yanchor": "top", "y": -0.18, "x": 0},
        "xaxis": {"title": {"text": x_title}, "automargin": True, **dict(xaxis)},
        "yaxis": {"title": {"text": y_title}, "automargin": True, "separatethousands": True, **dict(yaxis)},
        **layout}}


def line_chart(x, series: dict, *, title, x_title=None, y_title=None, hlines=(), height=HEIGHT) -> dict:
    """One line per series over ``x`` (None values are gaps); ``hlines``: ``[(label, y), ...]`` dashed."""
    traces = [{"type": "scatter", "x": list(x), "y": list(ys), "name": str(name), "mode": "lines+markers",
               "hovertemplate": HOVER} for name, ys in series.items()]
    shapes = [{"type": "line", "xref": "x domain", "x0": 0, "x1": 1, "yref": "y", "y0": value, "y1": value,
               "line": {"dash": "dash", "color": "#d62728"}} for _, value in hlines]
    notes = [{"text": escape(label), "showarrow": False, "xref": "x domain", "x": 1, "xanchor": "right", "yref": "y",
              "y": value, "yanchor": "bottom"} for label, value in hlines]
    legend = len(series) > 1
    return _figure(traces, title=title, x_title=x_title, y_title=y_title, height=height + (30 if legend else 0),
                   showlegend=legend, shapes=shapes, annotations=notes)


def bar_chart(labels, groups: dict, *, title, x_title=None, y_title=None, horizontal=False, height=None) -> dict:
    """Grouped bars: ``groups`` maps a series name to one value per label; ``horizontal`` for long labels."""
    labels = [str(label) for label in labels]
    if horizontal:
        traces = [{"type": "bar", "y": labels, "x": list(values), "name": str(name), "orientation": "h",
                   "hovertemplate": "%{y}: %{x:.4~g}<extra></extra>"} for name, values in groups.items()]
        axes = {"yaxis": {"autorange": "reversed", "type": "category"}}
        height = height or max(HEIGHT // 2, 60 + 22 * len(labels))
    else:
        traces = [{"type": "bar", "x": labels, "y": list(values), "name": str(name), "hovertemplate": HOVER}
                  for name, values in groups.items()]
        axes = {"xaxis": {"type": "category"}}
    return _figure(traces, title=title, x_title=x_title, y_title=y_title, height=height or HEIGHT,
                   showlegend=len(groups) > 1, barmode="group", **axes)


def trials_chart(points, best_so_far, *, title, metric, hover_texts=()) -> dict:
    """A sweep: each trial's ``metric`` by trial number, and the best so far as a step line."""
    traces = []
    if points:
        xs, ys = zip(*points)
        traces.append({"type": "scatter", "x": list(xs), "y": list(ys), "mode": "markers", "name": "trial",
                       "marker": {"size": 9}, "text": list(hover_texts) or None,
                       "hovertemplate": "trial %{x}: %{y:.4f}<br>%{text}<extra></extra>" if hover_texts
                       else "trial %{x}: %{y:.4f}<extra></extra>"})
        bx, by = zip(*best_so_far)
        traces.append({"type": "scatter", "x": list(bx), "y": list(by), "mode": "lines",
                       "name": "best so far", "line": {"color": "#d62728", "shape": "hv"},
                       "hovertemplate": "best after trial %{x}: %{y:.4f}<extra></extra>"})
    last = max((x for x, _ in points), default=1)
    xaxis = {"tickformat": "d", "tick0": 0, "dtick": max(1, math.ceil((last + 1) / 12)), "range": [-0.5, last + 0.5]}
    return _figure(traces, title=title, x_title="trial", y_title=metric, height=400, xaxis=xaxis)


def figure_html(fig: dict, card=True) -> str:
    """The ``<div>`` and ``<script>`` drawing one figure in a ``Page`` (which carries plotly.js once)."""
    import plotly.io as pio

    div = pio.to_html(fig, full_html=False, include_plotlyjs=False, validate=False,
                      config={"displaylogo": False, "responsive": True})
    return f'<div class="card">{div}</div>' if card else div


class Page:
    """An HTML page of headings, tables and charts, written as one self-contained file."""

    def __init__(self, title):
        self.title, self.parts = title, []

    def add(self, markup: str):
        """Raw HTML (escape what comes from data with ``escape``)."""
        if markup:
            self.parts.append(markup)

    def chart(self, fig: dict, card=True):
        """A figure (plotly's JSON), drawn in place."""
        self.parts.append(figure_html(fig, card=card))

    def render(self) -> str:
        """The page; plotly.js (4.8 MB) is inlined only when a part draws a chart with it."""
        script = ""
        if any("Plotly.newPlot" in part for part in self.parts):
            from plotly.offline import get_plotlyjs

            script = f'<script type="text/javascript">{get_plotlyjs()}</script>'
        return "\n".join([
            '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
            f"<title>{escape(self.title)}</title><style>{CSS}</style>",
            f"{script}</head><body>",
            *self.parts, "</body></html>"])

    def write(self, path) -> Path:
        """Write the page to ``path`` (through a temporary file, so a reader never sees half a page)."""
        from mlops_framework.files import write_text_atomic

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, self.render())
        return path
