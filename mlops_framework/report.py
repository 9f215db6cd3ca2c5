"""The run report: one self-contained HTML file (inline SVG charts, no script, no network).

``write_report(results, path)`` renders what the lifecycle stages left in ``run.results``: the alerts,
the promotions (gate decisions with champion and candidate metrics), each monitor run's metrics per
window, drift per column over time, baseline vs last-window histograms and confusion matrices, and
the challenger's SHAP explanation. Sections without data are left out.
"""

from __future__ import annotations

import datetime as dt
import html
import math
from pathlib import Path

from mlops_framework.alerts import DRIFT, QUALITY
from mlops_framework.metrics import metric_names

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px}h2{font-size:18px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}
h3{font-size:15px;margin:18px 0 6px}
table{border-collapse:collapse;font-size:13px;margin:6px 0}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}.alert{background:#fde2e1}.ok{background:#e3f4e1}
.grid{display:flex;flex-wrap:wrap;gap:10px}.card{border:1px solid #e3e3e3;padding:6px;border-radius:4px}
.muted{color:#666;font-size:12px}svg{background:#fff}
"""


def _e(value) -> str:
    return html.escape(str(value))


def _fmt(value, digits=4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    return str(value)


def _day(value) -> str:
    return value.date().isoformat() if isinstance(value, dt.datetime) else str(value)[:10]


# ---------------------------------------------------------------------- SVG charts
def line_chart(series: dict, x_labels: list, *, title: str, width=600, height=240, hlines=None,
               y_min=None, y_max=None) -> str:
    """Lines over categorical x positions. ``series``: label -> list of y (None: gap)."""
    left, right, top, bottom = 48, 170, 24, 46
    values = [y for ys in series.values() for y in ys if y is not None and not math.isnan(y)]
    values += [y for _, y in (hlines or [])]
    if not values:
        return ""
    lo = min(values) if y_min is None else y_min
    hi = max(values) if y_max is None else y_max
    if hi == lo:
        hi, lo = hi + 1, lo - 1 if lo != 0 else 0
    pad = (hi - lo) * 0.05
    lo, hi = lo - (pad if y_min is None else 0), hi + (pad if y_max is None else 0)
    n = max(len(x_labels), 1)
    plot_w, plot_h = width - left - right, height - top - bottom

    def x(i):
        return left + (plot_w * (i + 0.5) / n)

    def y(v):
        return top + plot_h * (1 - (v - lo) / (hi - lo))

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">',
             f'<title>{_e(title)}</title>',
             f'<text x="{left}" y="15" font-size="13" font-weight="600">{_e(title)}</text>',
             f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#bbb"/>']
    for k in range(5):
        v = lo + (hi - lo) * k / 4
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{left - 4}" y="{y(v) + 4:.1f}" font-size="10" text-anchor="end">{_fmt(v, 3)}</text>')
    step = max(1, math.ceil(n * 72 / plot_w))  # about 72 px per label
    for i, label in enumerate(x_labels):
        if i % step == 0:
            parts.append(f'<text x="{x(i):.1f}" y="{top + plot_h + 14}" font-size="10" text-anchor="middle">{_e(label)}</text>')
    for label, value in hlines or []:
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(value):.1f}" y2="{y(value):.1f}" '
                     f'stroke="#d62728" stroke-dasharray="5,4"/>')
        parts.append(f'<text x="{left + plot_w - 2}" y="{y(value) - 3:.1f}" font-size="10" fill="#d62728" '
                     f'text-anchor="end">{_e(label)}</text>')
    for k, (label, ys) in enumerate(series.items()):
        color = PALETTE[k % len(PALETTE)]
        points = [(x(i), y(v)) for i, v in enumerate(ys) if v is not None and not math.isnan(v)]
        if len(points) > 1:
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        for px, py in points:
            parts.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2.5" fill="{color}"/>')
        ly = top + 12 + 14 * k
        parts.append(f'<rect x="{left + plot_w + 8}" y="{ly - 8}" width="10" height="10" fill="{color}"/>')
        parts.append(f'<text x="{left + plot_w + 22}" y="{ly + 1}" font-size="10">{_e(str(label)[:24])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(labels: list, groups: dict, *, title: str, width=None, height=220, horizontal=False) -> str:
    """Grouped bars: ``groups`` maps a series label to one value per label."""
    if horizontal:
        return _hbar_chart(labels, groups, title=title, width=width or 560)
    n, g = max(len(labels), 1), max(len(groups), 1)
    width = width or max(320, min(900, 60 + n * (14 * g + 10)))
    left, right, top, bottom = 44, 10, 36, 60
    plot_w, plot_h = width - left - right, height - top - bottom
    hi = max([v for vs in groups.values() for v in vs if v is not None] + [1e-12])
    band = plot_w / n
    bar = band * 0.8 / g
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">',
             f'<title>{_e(title)}</title>',
             f'<text x="{left}" y="14" font-size="12" font-weight="600">{_e(title)}</text>',
             f'<line x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="#999"/>',
             f'<text x="{left - 4}" y="{top + 4}" font-size="10" text-anchor="end">{_fmt(hi, 3)}</text>']
    for k, (name, values) in enumerate(groups.items()):
        color = PALETTE[k % len(PALETTE)]
        parts.append(f'<rect x="{left + 110 * k}" y="20" width="9" height="9" fill="{color}"/>'
                     f'<text x="{left + 110 * k + 12}" y="28" font-size="10">{_e(name)}</text>')
        for i, v in enumerate(values):
            if v is None:
                continue
            h = plot_h * v / hi
            parts.append(f'<rect x="{left + band * i + band * 0.1 + bar * k:.1f}" y="{top + plot_h - h:.1f}" '
                         f'width="{bar:.1f}" height="{h:.1f}" fill="{color}"><title>{_e(labels[i])}: {_fmt(v)}</title></rect>')
    for i, label in enumerate(labels):
        cx = left + band * (i + 0.5)
        parts.append(f'<text x="{cx:.1f}" y="{top + plot_h + 10}" font-size="9" text-anchor="end" '
                     f'transform="rotate(-35 {cx:.1f} {top + plot_h + 10})">{_e(str(label)[:18])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _hbar_chart(labels, groups, *, title, width):
    values = next(iter(groups.values()))
    row = 18
    left, top = 210, 24
    height = top + row * len(labels) + 10
    hi = max([v for v in values if v is not None] + [1e-12])
    plot_w = width - left - 60
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">',
             f'<title>{_e(title)}</title>',
             f'<text x="4" y="14" font-size="12" font-weight="600">{_e(title)}</text>']
    for i, (label, v) in enumerate(zip(labels, values)):
        yy = top + row * i
        w = plot_w * (v or 0) / hi
        parts.append(f'<text x="{left - 6}" y="{yy + 12}" font-size="11" text-anchor="end">{_e(str(label)[:32])}</text>'
                     f'<rect x="{left}" y="{yy + 2}" width="{w:.1f}" height="{row - 5}" fill="{PALETTE[0]}"/>'
                     f'<text x="{left + w + 4:.1f}" y="{yy + 12}" font-size="10">{_fmt(v, 3)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def confusion_matrix(tn, fp, fn, tp, *, title) -> str:
    total = max(tn + fp + fn + tp, 1)
    cells = ""
    for label, row in (("actual 0", (tn, fp)), ("actual 1", (fn, tp))):
        cells += f'<tr><th class="l">{label}</th>'
        for k, count in enumerate(row):
            good = (label == "actual 0") == (k == 0)
            shade = int(255 - 120 * count / total)
            color = f"rgb({shade},{255 if good else shade},{shade})" if good else f"rgb(255,{shade},{shade})"
            cells += f'<td style="background:{color}">{count:,}</td>'
        cells += "</tr>"
    return (f'<div class="card"><div class="muted">{_e(title)}</div><table><tr><th></th><th>pred 0</th>'
            f'<th>pred 1</th></tr>{cells}</table></div>')


# ---------------------------------------------------------------------- sections
def _table(rows: list[dict], columns: list[str], *, row_class=None) -> str:
    head = "".join(f'<th class="l">{_e(c)}</th>' for c in columns)
    body = ""
    for row in rows:
        cls = f' class="{row_class(row)}"' if row_class else ""
        body += f"<tr{cls}>" + "".join(f'<td class="l">{_e(_fmt(row.get(c)))}</td>' for c in columns) + "</tr>"
    return f"<table><tr>{head}</tr>{body}</table>"


def _alerts_section(alerts) -> str:
    if not alerts:
        return "<h2>Alerts</h2><p class=\"ok\">No alert fired.</p>"
    rows = [a.to_dict() if hasattr(a, "to_dict") else dict(a) for a in alerts]
    for row in rows:
        row["window"] = f"{_day(row['window_start'])} .. {_day(row['window_end'])}"
    return (f"<h2>Alerts ({len(rows)} fired)</h2>"
            + _table(rows, ["rule", "model_version", "window", "metric", "column", "value", "op", "threshold"],
                     row_class=lambda r: "alert"))


def _promotions_section(promotions) -> str:
    if not promotions:
        return ""
    out = ["<h2>Promotions</h2>"]
    rows = [{"alias": p["alias"], "candidate": p["candidate"], "champion": p["champion"] or "(none)",
             "promoted": "yes" if p.get("promoted") else "no", "reason": p["reason"]} for p in promotions]
    out.append(_table(rows, ["alias", "candidate", "champion", "promoted", "reason"],
                      row_class=lambda r: "ok" if r["promoted"] == "yes" else "alert"))
    for p in promotions:
        comparison = p.get("comparison")
        if not comparison or not comparison.get("champion"):
            continue
        metrics = [m for m in metric_names(comparison.get("task", "binary"))
                   if comparison["candidate"].get(m) is not None and comparison["champion"].get(m) is not None]
        out.append(f"<h3>{_e(p['candidate'])} (candidate) vs {_e(p['champion'])} (champion) on the same "
                   f"{comparison['holdout_rows']:,} holdout rows</h3>")
        out.append(bar_chart(metrics, {f"{p['champion']} champion": [comparison["champion"][m] for m in metrics],
                                       f"{p['candidate']} candidate": [comparison["candidate"][m] for m in metrics]},
                             title="holdout metrics", width=420))
    return "".join(out)


def _monitor_section(index, result, alerts) -> str:
    perf = result["performance"]
    labels = [_day(p["window_start"]) for p in perf]
    version = result.get("model_version") or "?"
    out = [f"<h2>Monitor run {index}: {_e(result.get('model_name'))} {_e(version)}</h2>",
           f"<p class=\"muted\">{_e(result.get('source'))}; baseline {_e(result.get('baseline'))} "
           f"({result.get('baseline_rows', 0):,} rows); windows of {_e(result.get('window'))}; "
           f"run {_e(result.get('run_id'))}</p>"]
    thresholds = {}
    for a in alerts:
        thresholds.setdefault(a.metric, set()).add(a.threshold)
    out.append('<h3>Performance per window</h3><div class="grid">')
    out.append(line_chart({m: [p[m] for p in perf] for m in QUALITY}, labels, title="metrics over time",
                          hlines=[(f"f1 alert < {t}", t) for t in sorted(thresholds.get("f1", ()))]))
    out.append(bar_chart(labels, {"rows": [p["rows"] for p in perf]}, title="rows per window", height=240))
    out.append("</div>")
    columns = list(dict.fromkeys(d["column"] for d in result["drift"]))
    out.append('<h3>Drift per column against the baseline</h3><div class="grid">')
    for metric in DRIFT:
        series = {c: [next((d[metric] for d in result["drift"] if d["column"] == c and d["window_start"] == p["window_start"]), None)
                      for p in perf] for c in columns}
        if not any(v is not None for vs in series.values() for v in vs):
            continue
        hl = [(f"alert > {t}", t) for t in sorted(thresholds.get(metric, ()))]
        out.append(line_chart(series, labels, title=metric, hlines=hl))
    out.append("</div>")
    last = perf[-1]["window_start"] if perf else None
    rows = [d for d in result["drift"] if d["window_start"] == last]
    out.append(f"<h3>Last window ({_day(last)}): drift of each column</h3>")
    out.append(_table(rows, ["column", "role", "kind", "psi", "jensen_shannon", "hellinger", "wasserstein",
                             "difference_of_means", "null_share"],
                      row_class=lambda r: "alert" if (r.get("psi") or 0) > 0.2 else ""))
    out.append(f"<h3>Baseline vs last window ({_day(last)}): probability-normalised histograms</h3><div class=\"grid\">")
    for d in rows:
        out.append(bar_chart(d["bins"], {"baseline": d["baseline_hist"], "last window": d["current_hist"]},
                             title=f"{d['column']} (PSI {_fmt(d['psi'], 3)})", height=230))
    out.append("</div><h3>Confusion matrices per window</h3><div class=\"grid\">")
    for p in perf:
        out.append(confusion_matrix(p["tn"], p["fp"], p["fn"], p["tp"],
                                    title=f"{_day(p['window_start'])}: F1 {_fmt(p['f1'], 3)}"))
    out.append("</div>")
    return "".join(out)


def _monitor_comparison(runs) -> str:
    if len(runs) < 2:
        return ""
    windows = sorted({p["window_start"] for r in runs for p in r["performance"]})
    series = {}
    for i, r in enumerate(runs, 1):
        by_window = {p["window_start"]: p["f1"] for p in r["performance"]}
        series[f"run {i}: {r.get('model_version') or '?'}"] = [by_window.get(w) for w in windows]
    return ("<h2>F1 per window, monitor run by monitor run</h2>"
            + line_chart(series, [_day(w) for w in windows], title="f1 by scoring model", width=700))


def _explanation_section(explanation) -> str:
    if not explanation:
        return ""
    labels = list(explanation["global"])
    out = [f"<h2>Explanation of {_e(explanation.get('version'))}: mean |SHAP contribution| (log-odds)</h2>",
           f"<p class=\"muted\">XGBoost pred_contribs on {explanation['rows']:,} holdout rows; one-hot dummies summed "
           f"into their column; per-row table: {_e(', '.join(explanation.get('written_to') or []))}</p>",
           '<div class="grid">',
           bar_chart(labels, {"mean |SHAP|": [explanation["global"][k] for k in labels]}, title="by input column",
                     horizontal=True)]
    encoded = explanation.get("global_encoded") or {}
    if encoded:
        keys = list(encoded)[:15]
        out.append(bar_chart(keys, {"mean |SHAP|": [encoded[k] for k in keys]}, title="by model feature (top 15)",
                             horizontal=True))
    out.append("</div>")
    return "".join(out)


def render(results: dict, *, model_name=None, aliases=None) -> str:
    runs = results.get("monitor_runs") or ([results["monitor"]] if results.get("monitor") else [])
    alerts = results.get("alerts") or []
    alias_text = ", ".join(f"{a} &rarr; {_e(v)}" for a, v in sorted((aliases or {}).items())) or "none"
    parts = ["<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
             f"<title>mlops report: {_e(model_name or '')}</title><style>{CSS}</style></head><body>",
             f"<h1>Model report: {_e(model_name or '')}</h1>",
             f"<p>Aliases now: {alias_text}. Generated {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}.</p>",
             _alerts_section(alerts), _promotions_section(results.get("promotions")),
             _monitor_comparison(runs)]
    for i, result in enumerate(runs, 1):
        parts.append(_monitor_section(i, result, result.get("alerts") or []))
    parts.append(_explanation_section(results.get("explanation")))
    parts.append("</body></html>")
    return "\n".join(p for p in parts if p)


def write_report(results: dict, path, *, model_name=None, aliases=None) -> Path:
    """Render the report of ``results`` into ``path`` (an HTML file); return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(results, model_name=model_name, aliases=aliases), encoding="utf-8")
    return path
