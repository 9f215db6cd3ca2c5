"""The run report: one self-contained HTML file of interactive charts (plotly, its script inlined; no network).

``write_report(results, path)`` renders what the lifecycle stages left in ``run.results``: the alerts,
the promotions (gate decisions with champion and candidate metrics), each monitor run's metrics per
window, drift per column over time, baseline vs last-window histograms and confusion matrices, and
the challenger's SHAP explanation. Sections without data are left out. One chart per metric family
(classification quality, rows, each drift measure), drawn by ``mlops_framework.charts``.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

from mlops_framework.alerts import DRIFT, QUALITY
from mlops_framework.charts import Page, bar_chart, escape, figure_html, line_chart
from mlops_framework.metrics import metric_names

def _e(value) -> str:
    return escape(value)


def _fmt(value, digits=4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    return str(value)


def _day(value) -> str:
    return value.date().isoformat() if isinstance(value, dt.datetime) else str(value)[:10]


# ---------------------------------------------------------------------- tables
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
        out.append('<div class="grid">' + figure_html(bar_chart(
            metrics, {f"{p['champion']} champion": [comparison["champion"][m] for m in metrics],
                      f"{p['candidate']} candidate": [comparison["candidate"][m] for m in metrics]},
            title="holdout metrics", y_title="value")) + "</div>")
    return "".join(out)


def _monitor_section(index, result, alerts) -> str:
    perf = result["performance"]
    labels = [_day(p["window_start"]) for p in perf]
    version = result.get("model_version") or "?"
    out = [f"<h2>Monitor run {index}: {_e(result.get('model_name'))} {_e(version)}</h2>",
           f"<p class=\"muted\">{_e(result.get('source'))}; baseline {_e(result.get('baseline'))} "
           f"({result.get('baseline_rows', 0):,} rows); windows of {_e(result.get('window'))}; "
           f"run {_e(result.get('run_id'))}</p>"]
    if not perf:  # every window was computed by an earlier run: its report has the charts
        out.append(f"<p>No new windows: all {result.get('windows_total', 0):,} unchanged since the last monitor run; "
                   "their results are in the monitor tables.</p>")
        return "".join(out)
    thresholds = {}
    for a in alerts:
        thresholds.setdefault(a.metric, set()).add(a.threshold)
    out.append('<h3>Performance per window</h3><div class="grid">')
    out.append(figure_html(line_chart(labels, {m: [p[m] for p in perf] for m in QUALITY},
                                      title="classification quality per window", x_title="window start",
                                      hlines=[(f"f1 alert < {t}", t) for t in sorted(thresholds.get("f1", ()))])))
    out.append(figure_html(bar_chart(labels, {"rows": [p["rows"] for p in perf]}, title="rows per window",
                                     x_title="window start", y_title="rows")))
    out.append("</div>")
    columns = list(dict.fromkeys(d["column"] for d in result["drift"]))
    out.append('<h3>Drift per column against the baseline</h3><div class="grid">')
    for metric in DRIFT:
        series = {c: [next((d[metric] for d in result["drift"] if d["column"] == c and d["window_start"] == p["window_start"]), None)
                      for p in perf] for c in columns}
        if not any(v is not None for vs in series.values() for v in vs):
            continue
        hl = [(f"alert > {t}", t) for t in sorted(thresholds.get(metric, ()))]
        out.append(figure_html(line_chart(labels, series, title=f"{metric} per column", x_title="window start",
                                          y_title=metric, hlines=hl)))
    out.append("</div>")
    last = perf[-1]["window_start"] if perf else None
    rows = [d for d in result["drift"] if d["window_start"] == last]
    out.append(f"<h3>Last window ({_day(last)}): drift of each column</h3>")
    out.append(_table(rows, ["column", "role", "kind", "psi", "jensen_shannon", "hellinger", "wasserstein",
                             "difference_of_means", "null_share"],
                      row_class=lambda r: "alert" if (r.get("psi") or 0) > 0.2 else ""))
    out.append(f"<h3>Baseline vs last window ({_day(last)}): probability-normalised histograms</h3><div class=\"grid\">")
    for d in rows:
        out.append(figure_html(bar_chart(d["bins"], {"baseline": d["baseline_hist"], "last window": d["current_hist"]},
                                         title=f"{d['column']} (PSI {_fmt(d['psi'], 3)})", y_title="share of rows")))
    out.append("</div><h3>Confusion matrices per window</h3><div class=\"grid\">")
    for p in perf:
        if p.get("tn") is None:  # no labels yet, or not two classes
            continue
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
            + figure_html(line_chart([_day(w) for w in windows], series, title="f1 by scoring model",
                                     x_title="window start", y_title="f1")))


def _explanation_section(explanation) -> str:
    if not explanation:
        return ""
    labels = list(explanation["global"])
    out = [f"<h2>Explanation of {_e(explanation.get('version'))}: mean |SHAP contribution| (log-odds)</h2>",
           f"<p class=\"muted\">XGBoost pred_contribs on {explanation['rows']:,} holdout rows; one-hot dummies summed "
           f"into their column; per-row table: {_e(', '.join(explanation.get('written_to') or []))}</p>",
           '<div class="grid">',
           figure_html(bar_chart(labels, {"mean |SHAP|": [explanation["global"][k] for k in labels]},
                                 title="by input column", horizontal=True))]
    encoded = explanation.get("global_encoded") or {}
    if encoded:
        keys = list(encoded)[:15]
        out.append(figure_html(bar_chart(keys, {"mean |SHAP|": [encoded[k] for k in keys]},
                                         title="by model feature (top 15)", horizontal=True)))
    out.append("</div>")
    return "".join(out)


def render(results: dict, *, model_name=None, aliases=None) -> Page:
    """The report of ``results`` as a ``Page``."""
    runs = results.get("monitor_runs") or ([results["monitor"]] if results.get("monitor") else [])
    alerts = results.get("alerts") or []
    alias_text = ", ".join(f"{_e(a)} &rarr; {_e(v)}" for a, v in sorted((aliases or {}).items())) or "none"
    page = Page(f"mlops report: {model_name or ''}")
    page.add(f"<h1>Model report: {_e(model_name or '')}</h1>")
    page.add(f"<p>Aliases now: {alias_text}. Generated {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}.</p>")
    page.add(_alerts_section(alerts))
    page.add(_promotions_section(results.get("promotions")))
    page.add(_monitor_comparison(runs))
    for i, result in enumerate(runs, 1):
        page.add(_monitor_section(i, result, result.get("alerts") or []))
    page.add(_explanation_section(results.get("explanation")))
    return page


def write_report(results: dict, path, *, model_name=None, aliases=None) -> Path:
    """Render the report of ``results`` into ``path`` (an HTML file); return the path."""
    return render(results, model_name=model_name, aliases=aliases).write(path)
