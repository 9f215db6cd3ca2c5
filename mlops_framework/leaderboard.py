"""The leaderboard of a sweep: its trials ranked by a metric, as a table, ``leaderboard.csv`` and an
interactive chart (``leaderboard.html``), read from the files the sweep left (``mlops_framework.sweep_record``)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from mlops_framework.errors import MlopsError
from mlops_framework.sweep_record import (DEFAULT_METRIC, TRIAL, read_json, read_record,
                                          trial_metrics)


def _trial_dirs(sweep_dir):
    dirs = [p for p in Path(sweep_dir).iterdir()
            if p.is_dir() and any((p / name).exists() for name in (".hydra", TRIAL, "summary.json"))]
    return sorted(dirs, key=lambda p: (0, int(p.name), "") if p.name.isdigit() else (1, 0, p.name))


def _overrides(trial_dir):
    from mlops_framework.config import load_yaml

    lines = []
    path = trial_dir / ".hydra" / "overrides.yaml"
    if path.exists():
        lines = load_yaml(path.read_text()) or []
    else:
        lines = read_json(trial_dir / TRIAL, {}).get("overrides") or []
    params = {}
    for line in lines:
        key, _, value = str(line).partition("=")
        params[key.lstrip("+~")] = value
    return params


def _task_metric(sweep_dir):
    """``validation_`` + the default metric of the task the trials trained (f1, or rmse for regression)."""
    from mlops_framework.metrics import default_metric

    for trial_dir in _trial_dirs(sweep_dir):
        task = ((read_json(trial_dir / "evaluation.json", {}) or {}).get("validation") or {}).get("task")
        if task:
            return f"validation_{default_metric(task)}"
    return DEFAULT_METRIC


def metric_direction(metric):
    from mlops_framework.metrics import direction

    return direction(metric)


def leaderboard(sweep_dir, *, metric=None, direction=None):
    """The trials of a sweep ranked by ``metric``: a dict of rows (best first, failed last) and settings."""
    sweep_dir = Path(sweep_dir)
    record = read_record(sweep_dir)
    study = record.get("study") or {}
    metric = metric or study.get("metric") or record.get("metric") or _task_metric(sweep_dir)
    direction = direction or study.get("direction") or record.get("direction") or metric_direction(metric)
    if direction not in ("maximize", "minimize"):
        raise MlopsError(f"direction must be maximize or minimize, not {direction!r}")
    rows = []
    for trial_dir in _trial_dirs(sweep_dir):
        trial = read_json(trial_dir / TRIAL, {})
        summary = read_json(trial_dir / "summary.json", {}) or {}
        metrics = trial_metrics(trial_dir)
        value = metrics.get(metric)
        error = trial.get("error")
        if value is None and not error:
            error = "no metrics (failed or still running)" if not summary else f"no metric {metric!r}"
        rows.append({
            "rank": None, "trial": trial_dir.name, "status": "ok" if value is not None and not error else "failed",
            "value": value, "metrics": metrics, "params": _overrides(trial_dir),
            "seconds": trial.get("seconds") or (trial.get("optuna") or {}).get("seconds"),
            **_model_version(trial_dir, trial), "error": error, "dir": str(trial_dir),
        })
    searched = list((study.get("search_space") or record.get("search_space") or {}))
    varying = [key for key in dict.fromkeys(k for row in rows for k in row["params"])
               if len({row["params"].get(key) for row in rows}) > 1]
    param_keys = [k for k in dict.fromkeys([*searched, *varying]) if not k.startswith("hydra.")]
    sign = -1 if direction == "maximize" else 1
    ok = sorted((r for r in rows if r["status"] == "ok"), key=lambda r: (sign * r["value"], _number(r["trial"])))
    for rank, row in enumerate(ok, 1):
        row["rank"] = rank
    rows = ok + [r for r in rows if r["status"] != "ok"]
    return {"sweep_dir": str(sweep_dir), "metric": metric, "direction": direction, "param_keys": param_keys,
            "rows": rows, "best": ok[0] if ok else None, "record": record}


def _model_version(trial_dir, trial):
    """``{"model", "version", "kept"}`` of a trial: the version it registered (its result, ``runner.RunResult``,
    local or from an ML Job; or ``trial.json``'s ``registered`` when the sweep registered it at the end), or
    None with ``kept``, the local registry in the trial directory holding its model."""
    from mlops_framework.runner import read_result

    result = read_result(trial_dir)
    model, version = (result.model, result.version) if result else (None, None)
    kept = trial.get("kept_in")
    if kept and Path(kept).exists():
        registered = trial.get("registered") or {}
        return {"model": registered.get("model") or model, "version": registered.get("version"), "kept": kept}
    if kept:  # the trial failed before it kept a model
        return {"model": model, "version": None, "kept": None}
    return {"model": model, "version": version, "kept": None}


def _number(name):
    return int(name) if str(name).isdigit() else math.inf


def _metric_keys(board):
    keys = dict.fromkeys(k for row in board["rows"] for k in row["metrics"])
    return [board["metric"], *sorted(k for k in keys if k != board["metric"])]


def write_csv(board, path):
    metric_keys = _metric_keys(board)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["rank", "trial", "status", *metric_keys, *board["param_keys"], "seconds", "model",
                         "version", "error", "dir"])
        for row in board["rows"]:
            writer.writerow([row["rank"] or "", row["trial"], row["status"],
                             *("" if row["metrics"].get(k) is None else row["metrics"][k] for k in metric_keys),
                             *(row["params"].get(k, "") for k in board["param_keys"]),
                             "" if row["seconds"] is None else row["seconds"], row["model"] or "",
                             row["version"] or "", row["error"] or "", row["dir"]])


def write_chart(board, sweep_dir):
    """``leaderboard.html``: the metric of each trial by trial number and the best so far (hover: params)."""
    from mlops_framework.charts import Page, escape, trials_chart

    rows = sorted((r for r in board["rows"] if r["status"] == "ok" and r["trial"].isdigit()),
                  key=lambda r: _number(r["trial"]))
    points = [(_number(r["trial"]), r["value"]) for r in rows]
    best_so_far, best = [], None
    better = max if board["direction"] == "maximize" else min
    for x, y in points:
        best = y if best is None else better(best, y)
        best_so_far.append((x, best))
    short = _short_keys(board["param_keys"])
    hover = ["<br>".join(escape(f"{short[k]}={_brief(r['params'][k])}") for k in board["param_keys"]
                         if k in r["params"]) for r in rows]
    title = f"{Path(sweep_dir).name}: {board['metric']} ({board['direction']})"
    page = Page(f"sweep {Path(sweep_dir).name}")
    page.add(f"<h1>Sweep {escape(Path(sweep_dir).name)}</h1>")
    if board["record"].get("command"):
        page.add(f'<p class="muted">{escape(board["record"]["command"])}</p>')
    page.chart(trials_chart(points, best_so_far, title=title, metric=board["metric"], hover_texts=hover), card=False)
    page.add(f"<pre>{escape(format_board(board))}</pre>")
    return page.write(Path(sweep_dir) / "leaderboard.html")


def _short_keys(keys):
    short = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: s if short.count(s) == 1 else k for k, s in zip(keys, short)}


def _brief(value):
    """``0.2536999076681772`` -> ``0.2537`` for the printed table (the CSV keeps every digit)."""
    try:
        number = float(value)
    except ValueError:
        return value
    return value if "." not in value or len(value) <= 7 else f"{number:.4g}"


def format_board(board, top=None):
    metric = board["metric"]
    others = [k for k in ("holdout_f1", "holdout_roc_auc") if k != metric]
    short = _short_keys(board["param_keys"])
    header = ["RANK", "TRIAL", "STATUS", metric.upper(), *(k.upper() for k in others), "SECONDS", "VERSION", "PARAMS"]
    lines = []
    for row in board["rows"][:top] if top else board["rows"]:
        values = [row["metrics"].get(k) for k in (metric, *others)]
        params = " ".join(f"{short[k]}={_brief(row['params'][k])}" for k in board["param_keys"] if k in row["params"])
        version = f"{row['model']} {row['version']}" if row["version"] else ("(kept)" if row["kept"] else "")
        lines.append([str(row["rank"] or "-"), row["trial"], row["status"],
                      *("" if v is None else f"{v:.4f}" for v in values),
                      "" if row["seconds"] is None else f"{row['seconds']:.1f}", version,
                      params if row["status"] == "ok" else f"{params}  ({row['error']})"])
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]
    rendered = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    rendered += ["  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip() for line in lines]
    return "\n".join(rendered)


def print_board(board, promoted, written, out=None, top=None):
    ok = sum(row["status"] == "ok" for row in board["rows"])
    lines = [f"sweep    {board['sweep_dir']}  ({len(board['rows'])} trials: {ok} ok, {len(board['rows']) - ok} failed; "
             f"ranked by {board['metric']}, {board['direction']})"]
    if board["record"].get("command"):
        lines.append(f"command  {board['record']['command']}")
    lines += ["", format_board(board, top=top), ""]
    best = board["best"]
    if best:
        line = f"best     trial {best['trial']}: {board['metric']}={best['value']:.4f}"
        if best["version"]:
            line += f", {best['model']} {best['version']}"
        elif best.get("kept"):
            line += f", model kept in {best['kept']} (not registered)"
        if promoted:
            line += f" -> alias {promoted['alias']}" + ("" if promoted["moved"] else " (already)")
        lines.append(line)
    if written:
        lines.append("wrote    " + ", ".join(str(p) for p in written))
    print("\n".join(lines), file=out)
