"""Sweeps: what a multirun leaves behind, its leaderboard, its best version, and ``mlops sweep``.

A sweep directory (Hydra's ``hydra.sweep.dir``, ``$MLOPS_HOME/multiruns/<time>`` by default) holds::

    sweep.json          the command line, git commit, seeds, search space, metric; the study and the best trial
    multirun.yaml       Hydra's composed config of the sweep
    leaderboard.csv     every trial ranked by the metric: params, metrics, seconds, model version
    leaderboard.svg     the metric by trial number with the best so far (leaderboard.png with matplotlib)
    optuna.journal      the Optuna study (Optuna searches with the default storage)
    N/                  one trial: .hydra/, resolved_config.yaml, evaluation.json, summary.json, trial.json

``SweepCallback`` (a Hydra callback in ``conf/config.yaml``) writes ``sweep.json`` when a multirun
starts, ``trial.json`` around each trial (wherever the launcher runs it) and, when the multirun ends,
the leaderboard, and points an alias (``SWEEP_BEST``) at the best trial's registered version. The
alias's history entry names the sweep directory, the trial and its metric.
``mlops sweep show|list|rerun`` reads the same files; ``plan`` (``mlops plan -m``) lists what a multirun
would launch before any of it exists.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
import os
import shlex
import subprocess
import sys
from pathlib import Path

from hydra.experimental.callback import Callback

from mlops_framework.errors import MlopsError
from mlops_framework.metrics import default_metric
from mlops_framework.metrics import direction as metric_direction

RECORD = "sweep.json"
TRIAL = "trial.json"
DEFAULT_METRIC = "validation_f1"
DEFAULT_ALIAS = "SWEEP_BEST"
RECORDED_ENV = ("MLOPS_HOME", "MLOPS_PLUGINS", "MLOPS_DISABLE_PLUGINS", "OMP_NUM_THREADS")
SEED_KEYS = ("seed", "random_state")


# ------------------------------------------------------------------------------ files
def _now():
    return dt.datetime.now(dt.timezone.utc).isoformat()


def _read_json(path, default=None):
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return default


def _write_json(path, data):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def read_record(sweep_dir):
    """``sweep.json`` of a sweep directory, or ``{}``."""
    return _read_json(Path(sweep_dir) / RECORD, {})


def update_record(sweep_dir, **fields):
    """Merge ``fields`` into ``sweep.json`` (dict values are merged one level deep)."""
    record = read_record(sweep_dir)
    for key, value in fields.items():
        if isinstance(value, dict) and isinstance(record.get(key), dict):
            record[key] = {**record[key], **value}
        else:
            record[key] = value
    _write_json(Path(sweep_dir) / RECORD, record)
    return record


def update_trial(trial_dir, **fields):
    """Merge ``fields`` into a trial's ``trial.json``."""
    path = Path(trial_dir) / TRIAL
    _write_json(path, {**_read_json(path, {}), **fields})


def trial_metrics(trial_dir):
    """A trial's metrics: ``validation_*`` and ``holdout_*`` from evaluation.json, else summary.json's."""
    trial_dir = Path(trial_dir)
    metrics = dict((_read_json(trial_dir / "summary.json", {}) or {}).get("metrics") or {})
    for part, values in (_read_json(trial_dir / "evaluation.json", {}) or {}).items():
        for name, value in (values or {}).items():
            if isinstance(value, float):
                metrics[f"{part}_{name}"] = value
    return metrics


# ------------------------------------------------------------------------------ recording a sweep
def git_state():
    """The commit and dirtiness of the checkout this package runs from (``MLOPS_GIT_COMMIT`` wins)."""
    if os.environ.get("MLOPS_GIT_COMMIT"):
        return {"commit": os.environ["MLOPS_GIT_COMMIT"], "dirty": None}
    where = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        status = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    if head.returncode != 0:
        return {"commit": None, "dirty": None}
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip()) if status.returncode == 0 else None}


def _packages():
    import importlib.metadata

    from mlops_framework.lineage import package_versions

    versions = package_versions()
    for name in ("hydra-core", "optuna", "joblib"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def _seeds(config):
    """Every ``seed``/``random_state`` value of the job config, resolved, plus the sweeper's seed."""
    from omegaconf import OmegaConf

    seeds = {}

    def walk(node, path):
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{path}.{key}" if path else str(key))
        elif path.rsplit(".", 1)[-1] in SEED_KEYS:
            try:
                seeds[path] = OmegaConf.select(config, path)
            except Exception:  # an interpolation only a job can resolve
                seeds[path] = node

    walk({k: v for k, v in OmegaConf.to_container(config, resolve=False).items() if k != "hydra"}, "")
    sweeper_seed = OmegaConf.select(config, "hydra.sweeper.seed", default=None)
    if sweeper_seed is not None:
        seeds["hydra.sweeper.seed"] = sweeper_seed
    return seeds


def _command(config):
    """The arguments of ``mlops run`` that reproduce this multirun, without the plugins' search path."""
    from omegaconf import OmegaConf

    if sys.argv and sys.argv[0] == "mlops run":
        args = list(sys.argv[1:])
    else:
        args = ["-m", *OmegaConf.to_container(config.hydra.overrides.hydra),
                *OmegaConf.to_container(config.hydra.overrides.task)]
    try:
        from mlops_framework import config as mlops_config
        from mlops_framework.plugins import Components, get_plugin_manager

        automatic = set(mlops_config.search_path_overrides(Components(get_plugin_manager())))
    except MlopsError:
        automatic = set()
    args = [arg for arg in args if arg not in automatic]
    if "-m" not in args and "--multirun" not in args:
        args.insert(0, "-m")
    return args


def _search_space(config):
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    space = {str(k): str(v) for k, v in (OmegaConf.select(config, "hydra.sweeper.params", default=None) or {}).items()}
    parser = OverridesParser.create()
    for override in parser.parse_overrides(OmegaConf.to_container(config.hydra.overrides.task)):
        if override.is_sweep_override():
            space[override.key_or_group] = override.input_line.split("=", 1)[1]
    return space


def start_record(config, *, metric, direction, promote):
    """Write ``sweep.json`` for a multirun that starts now (an earlier session's record is kept inside)."""
    from omegaconf import OmegaConf

    sweep_dir = Path(str(config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    previous = read_record(sweep_dir)
    sessions = previous.pop("previous_sessions", []) + ([previous] if previous else [])
    sweeper = OmegaConf.select(config, "hydra.sweeper", default={}) or {}
    launcher = OmegaConf.to_container(config.hydra.launcher, resolve=True)
    argv = _command(config)
    env = {name: os.environ[name] for name in RECORDED_ENV if name in os.environ}
    record = {
        "sweep_dir": str(sweep_dir.resolve()),
        "command": " ".join([*(f"{k}={shlex.quote(v)}" for k, v in env.items()), "mlops", "run",
                             *map(shlex.quote, argv)]),
        "argv": argv,
        "cwd": os.getcwd(),
        "env": env,
        "git": git_state(),
        "seeds": _seeds(config),
        "sweeper": sweeper.get("_target_"),
        "launcher": launcher,
        "search_space": _search_space(config),
        "metric": sweeper.get("metric") or metric,
        "direction": sweeper.get("direction") or direction,
        "promote": promote,
        "started": _now(),
        "python": sys.version.split()[0],
        "packages": _packages(),
    }
    if sessions:
        record["previous_sessions"] = sessions
    _write_json(sweep_dir / RECORD, record)
    stages = OmegaConf.select(config, "pipeline.stages", default=[]) or []
    parallel = "BasicLauncher" not in str(launcher.get("_target_")) or "mlops_optuna" in str(sweeper.get("_target_"))
    if "score" in stages and parallel:
        print(f"mlops: warning: every trial of this parallel sweep scores into the same sink; "
              f"add pipeline=train and score the best version afterwards (scoring.version={promote or 'vN'})",
              file=sys.stderr)
    return record


class SweepCallback(Callback):
    """Records every multirun: ``sweep.json`` at the start, ``trial.json`` per trial, and at the end the
    leaderboard, the best version's alias, and exit status 1 when trials failed (a grid), or all did (a search).

    ``metric``/``direction`` rank the trials unless the sweeper has its own (the Optuna sweeper's win);
    ``promote`` is the alias set on the best trial's version, ``null`` for none.
    """

    def __init__(self, metric=None, direction=None, promote=DEFAULT_ALIAS):
        self.metric, self.direction, self.promote = metric, direction, promote

    def on_multirun_start(self, config, **kwargs):
        start_record(config, metric=self.metric, direction=self.direction, promote=self.promote)

    def on_job_start(self, config, **kwargs):
        if _multirun(config):
            import time

            _write_json(Path(str(config.hydra.runtime.output_dir)) / TRIAL, {
                "number": config.hydra.job.num, "overrides": list(config.hydra.overrides.task), "started": _now(),
                "start_time": time.time(), "threads": os.environ.get("OMP_NUM_THREADS"), "pid": os.getpid()})

    def on_job_end(self, config, job_return, **kwargs):
        if not _multirun(config):
            return
        import time

        from hydra.core.utils import JobStatus

        trial_dir = Path(str(config.hydra.runtime.output_dir))
        value, error = job_return._return_value, None
        if job_return.status == JobStatus.FAILED:
            error = f"{type(value).__name__}: {value}"
        elif isinstance(value, dict) and value.get("error"):
            error = str(value["error"])
        started = _read_json(trial_dir / TRIAL, {}).get("start_time") or time.time()
        update_trial(trial_dir, finished=_now(), seconds=round(time.time() - started, 3),
                     status="failed" if error else "ok", error=error)

    def on_multirun_end(self, config, **kwargs):
        sweep_dir = Path(str(config.hydra.sweep.dir))
        record = read_record(sweep_dir)
        board = finish(sweep_dir, promote=record.get("promote", self.promote))
        failed = [row for row in board["rows"] if row["status"] != "ok"]
        if failed and (not board["best"] or "study" not in record):
            details = "; ".join(f"#{row['trial']}: {row['error'] or 'no metrics'}" for row in failed[:5])
            print(f"mlops: error: {len(failed)} of {len(board['rows'])} trials failed ({details})", file=sys.stderr)
            raise SystemExit(1)


def _multirun(config):
    from hydra.types import RunMode

    return config.hydra.get("mode") == RunMode.MULTIRUN


# ------------------------------------------------------------------------------ the leaderboard
def _trial_dirs(sweep_dir):
    dirs = [p for p in Path(sweep_dir).iterdir()
            if p.is_dir() and any((p / name).exists() for name in (".hydra", TRIAL, "summary.json"))]
    return sorted(dirs, key=lambda p: (0, int(p.name), "") if p.name.isdigit() else (1, 0, p.name))


def _overrides(trial_dir):
    import yaml

    lines = []
    path = trial_dir / ".hydra" / "overrides.yaml"
    if path.exists():
        lines = yaml.safe_load(path.read_text()) or []
    else:
        lines = _read_json(trial_dir / TRIAL, {}).get("overrides") or []
    params = {}
    for line in lines:
        key, _, value = str(line).partition("=")
        params[key.lstrip("+~")] = value
    return params


def _task_metric(sweep_dir):
    """``validation_`` + the default metric of the task the trials trained (f1, or rmse for regression)."""
    for trial_dir in _trial_dirs(sweep_dir):
        task = ((_read_json(trial_dir / "evaluation.json", {}) or {}).get("validation") or {}).get("task")
        if task:
            return f"validation_{default_metric(task)}"
    return DEFAULT_METRIC


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
        trial = _read_json(trial_dir / TRIAL, {})
        summary = _read_json(trial_dir / "summary.json", {}) or {}
        metrics = trial_metrics(trial_dir)
        value = metrics.get(metric)
        error = trial.get("error")
        if value is None and not error:
            error = "no metrics (failed or still running)" if not summary else f"no metric {metric!r}"
        rows.append({
            "rank": None, "trial": trial_dir.name, "status": "ok" if value is not None and not error else "failed",
            "value": value, "metrics": metrics, "params": _overrides(trial_dir),
            "seconds": trial.get("seconds") or (trial.get("optuna") or {}).get("seconds"),
            **_model_version(trial_dir), "error": error, "dir": str(trial_dir),
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


def _model_version(trial_dir):
    """``{"model", "version"}`` of a trial's result (``runner.RunResult``, local or from an ML Job)."""
    from mlops_framework.runner import read_result

    result = read_result(trial_dir)
    return {"model": result.model if result else None, "version": result.version if result else None}


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


def write_plot(board, sweep_dir):
    """``leaderboard.png`` with matplotlib when installed, else ``leaderboard.svg``: metric by trial, best so far."""
    points = [(_number(r["trial"]), r["value"]) for r in board["rows"] if r["status"] == "ok" and r["trial"].isdigit()]
    points.sort()
    best_so_far, best = [], None
    better = max if board["direction"] == "maximize" else min
    for x, y in points:
        best = y if best is None else better(best, y)
        best_so_far.append((x, best))
    title = f"{Path(sweep_dir).name}: {board['metric']} ({board['direction']})"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        path = Path(sweep_dir) / "leaderboard.svg"
        path.write_text(_svg(points, best_so_far, title, board["metric"]))
        return path
    figure, axes = plt.subplots(figsize=(7, 4))
    if points:
        axes.scatter(*zip(*points), label="trial")
        axes.step(*zip(*best_so_far), where="post", color="tab:red", label="best so far")
    axes.set(title=title, xlabel="trial", ylabel=board["metric"])
    axes.legend()
    path = Path(sweep_dir) / "leaderboard.png"
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)
    return path


def _svg(points, best_so_far, title, metric, width=640, height=360, pad=56):
    from xml.sax.saxutils import escape

    xs = [x for x, _ in points] or [0, 1]
    ys = [y for _, y in points] or [0, 1]
    x0, x1 = min(xs), max(max(xs), min(xs) + 1)
    y0, y1 = min(ys), max(ys)
    margin = max((y1 - y0) * 0.05, 0.005)
    y0, y1 = y0 - margin, y1 + margin

    def sx(x):
        return pad + (x - x0) / (x1 - x0) * (width - 2 * pad)

    def sy(y):
        return height - pad - (y - y0) / (y1 - y0) * (height - 2 * pad)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
             f'font-size="12"><rect width="100%" height="100%" fill="white"/>',
             f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="14">{escape(title)}</text>',
             f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="black"/>',
             f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="black"/>',
             f'<text x="{width / 2}" y="{height - 16}" text-anchor="middle">trial</text>',
             f'<text x="14" y="{height / 2}" text-anchor="middle" transform="rotate(-90 14 {height / 2})">'
             f'{escape(metric)}</text>']
    for y in (y0, (y0 + y1) / 2, y1):
        parts.append(f'<text x="{pad - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{y:.4f}</text>')
    for x in sorted({x0, x1}):
        parts.append(f'<text x="{sx(x):.1f}" y="{height - pad + 16}" text-anchor="middle">{x}</text>')
    if best_so_far:
        path, previous = [], None
        for x, y in best_so_far:
            if previous is not None:
                path.append(f"{sx(x):.1f},{sy(previous):.1f}")
            path.append(f"{sx(x):.1f},{sy(y):.1f}")
            previous = y
        parts.append(f'<polyline points="{" ".join(path)}" fill="none" stroke="#d62728" stroke-width="2"/>')
    for x, y in points:
        parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="4" fill="#1f77b4"><title>trial {x}: '
                     f'{y:.4f}</title></circle>')
    parts.append(f'<text x="{width - pad}" y="{pad - 8}" text-anchor="end" fill="#d62728">best so far</text></svg>')
    return "\n".join(parts) + "\n"


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
        version = f"{row['model']} {row['version']}" if row["version"] else ""
        lines.append([str(row["rank"] or "-"), row["trial"], row["status"],
                      *("" if v is None else f"{v:.4f}" for v in values),
                      "" if row["seconds"] is None else f"{row['seconds']:.1f}", version,
                      params if row["status"] == "ok" else f"{params}  ({row['error']})"])
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]
    rendered = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    rendered += ["  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip() for line in lines]
    return "\n".join(rendered)


# ------------------------------------------------------------------------------ the best version
def _registry_for(trial_dir):
    import yaml

    from mlops_framework.pipeline import build_registry
    from mlops_framework.plugins import Components, get_plugin_manager

    resolved = yaml.safe_load((Path(trial_dir) / "resolved_config.yaml").read_text())
    return build_registry(resolved, Components(get_plugin_manager()))


def promote(board, alias):
    """Point ``alias`` at the best trial's version; the history entry names the sweep, trial and metric.

    Returns ``{"model", "version", "alias", "moved"}``, or None when no trial succeeded or registered.
    """
    best = board["best"]
    if not best or not best["version"]:
        return None
    registry = _registry_for(best["dir"])
    alias = alias.upper()
    try:
        current = registry.get_version(best["model"], alias)["version_name"]
    except MlopsError:
        current = None
    moved = current != best["version"]
    if moved:
        reason = (f"best of sweep {board['sweep_dir']} (trial {best['trial']}): "
                  f"{board['metric']}={best['value']:.4f}, {board['direction']}")
        metrics = {k: v for k, v in best["metrics"].items() if v is not None}
        registry.set_alias(best["model"], best["version"], alias, reason=reason, metrics=metrics)
    return {"model": best["model"], "version": best["version"], "alias": alias, "moved": moved}


def finish(sweep_dir, *, promote=DEFAULT_ALIAS, metric=None, direction=None, out=None):
    """Write the leaderboard (CSV and plot), print it, set the alias, and record the best in ``sweep.json``."""
    sweep_dir = Path(sweep_dir)
    board = leaderboard(sweep_dir, metric=metric, direction=direction)
    write_csv(board, sweep_dir / "leaderboard.csv")
    plot = write_plot(board, sweep_dir)
    promoted = _promote(board, promote) if promote else None
    best = board["best"]
    record = board["record"]
    started = record.get("started")
    seconds = None
    if started:
        seconds = round((dt.datetime.now(dt.timezone.utc) - dt.datetime.fromisoformat(started)).total_seconds(), 3)
    ok = sum(row["status"] == "ok" for row in board["rows"])
    update_record(sweep_dir, finished=_now(), seconds=seconds, trials={"ok": ok, "failed": len(board["rows"]) - ok},
                  best=None if not best else {
                      "trial": best["trial"], "metric": board["metric"], "value": best["value"],
                      "params": {k: best["params"].get(k) for k in board["param_keys"]},
                      "model": best["model"], "version": best["version"], "alias": (promoted or {}).get("alias"),
                  })
    _print_board(board, promoted, [sweep_dir / "leaderboard.csv", plot], out=out)
    return board


def _promote(board, alias):
    try:
        return promote(board, alias)
    except MlopsError as error:  # the leaderboard stands; say why the alias did not move
        print(f"mlops: warning: could not set alias {alias}: {error}", file=sys.stderr)
        return None


def _print_board(board, promoted, written, out=None, top=None):
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
        if promoted:
            line += f" -> alias {promoted['alias']}" + ("" if promoted["moved"] else " (already)")
        lines.append(line)
    if written:
        lines.append("wrote    " + ", ".join(str(p) for p in written))
    print("\n".join(lines), file=out)


# ------------------------------------------------------------------------------ planning a sweep
def plan(overrides, components):
    """What ``mlops run -m OVERRIDES`` would launch, worked out without running a trial or writing a file.

    The multirun config is composed as ``mlops run -m`` composes it, and its sweeper and launcher are
    instantiated as Hydra instantiates them, without the callbacks (so no ``sweep.json``). Returns
    ``(lines, trial, label)``:

    - a grid (Hydra's basic sweeper): a header naming the sweeper, the launcher and the number of trials,
      then one line per trial: the launcher's own ``plan(job_overrides, initial_job_idx) -> [str]`` where it
      has one (the ML Job launcher's: job name, compute pool, stage), else the trial's number and overrides.
      ``trial`` is the first trial's overrides.
    - an Optuna search (``hydra/sweeper=mlops_optuna``): the study's settings and search space; its trials
      are asked for while it runs, so ``trial`` takes each searched key's first value, as the sweeper's own
      check before the first trial does.

    Every listed trial's config is composed, as a sweep does before launching, so a bad override fails here.
    """
    from hydra import initialize_config_dir
    from hydra._internal.callbacks import Callbacks
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.plugins import Plugins
    from hydra.errors import HydraException
    from hydra.types import HydraContext, RunMode
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from mlops_framework import config

    try:
        # job name "cli": the one hydra.main gives `mlops run`, whose task function lives in cli.py
        with initialize_config_dir(config_dir=str(config.conf_dir()), version_base="1.3", job_name="cli"):
            hydra = GlobalHydra.instance().hydra
            cfg = hydra.compose_config("config", [*overrides, "hydra.mode=MULTIRUN",
                                                  *config.search_path_overrides(components)],
                                       run_mode=RunMode.MULTIRUN)
            context = HydraContext(config_loader=hydra.config_loader, callbacks=Callbacks())
            # no task function: the sweeper and launcher are set up to be asked, not to run (nor warm workers)
            sweeper = Plugins.instance().instantiate_sweeper(config=cfg, hydra_context=context, task_function=None)
            arguments = OmegaConf.to_container(cfg.hydra.overrides.task)
            # by name: Hydra's plugin scan executes the plugin modules again, so their classes are new objects
            if type(sweeper).__name__ == "BasicSweeper":
                return _plan_grid(cfg, sweeper, arguments)
            if type(sweeper).__name__ == "MlopsOptunaSweeper":
                return _plan_search(cfg, sweeper, arguments)
            raise MlopsError(f"mlops plan -m lists the trials of a grid (hydra/sweeper=basic) or an Optuna search "
                             f"(hydra/sweeper=mlops_optuna), not of {_plugin(cfg, 'sweeper', sweeper)}")
    except (HydraException, OmegaConfBaseException) as error:
        if isinstance(error.__cause__, MlopsError):  # a sweeper or launcher refusing its settings
            raise error.__cause__ from None
        raise MlopsError(config._first_paragraph(error)) from error


def _plugin(cfg, kind, plugin, settings=()):
    """``JoblibLauncher (hydra/launcher=joblib, n_jobs=-1)``: the class, the config option, chosen settings."""
    node = cfg.hydra[kind]
    shown = [f"hydra/{kind}={cfg.hydra.runtime.choices.get(f'hydra/{kind}')}"]
    shown += [f"{key}={node[key]}" for key in settings if key in node]
    return f"{type(plugin).__name__} ({', '.join(shown)})"


def _plan_grid(cfg, sweeper, arguments):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    # as BasicSweeper.sweep: hydra.sweeper.params first, the command line's overrides replacing them key by key
    lines = [f"{key}={value}" for key, value in (sweeper.params or {}).items()]
    parser = OverridesParser.create(config_loader=sweeper.hydra_context.config_loader)
    batches = sweeper.split_arguments(parser.parse_overrides([*lines, *arguments]), sweeper.max_batch_size)
    launcher = sweeper.launcher
    trials, number = [], 0
    for batch in batches:
        sweeper.validate_batch_is_legal(batch)
        if callable(getattr(launcher, "plan", None)):
            trials += launcher.plan(batch, initial_job_idx=number)
        else:
            trials += [f"trial {number + i}: {' '.join(overrides) or '(no overrides)'}"
                       for i, overrides in enumerate(batch)]
        number += len(batch)
    header = (f"sweep: {number} trial{'s' if number != 1 else ''}, sweeper {_plugin(cfg, 'sweeper', sweeper)}, "
              f"launcher {_plugin(cfg, 'launcher', launcher, ('n_jobs', 'max_parallel'))}, "
              f"sweep dir {cfg.hydra.sweep.dir}")
    return [header, *(f"  {line}" for line in trials)], list(batches[0][0]), "trial 0"


def _plan_search(cfg, sweeper, arguments):
    from hydra_plugins.mlops_optuna_sweeper.sweeper import format_value

    space, _, fixed, sample = sweeper.search(arguments)  # the sweeper's own checks, as a sweep makes them
    workers, threads = sweeper.workers()
    sweep_dir = str(cfg.hydra.sweep.dir)
    lines = [
        f"sweep: Optuna study {sweeper.study_name!r}, {sweeper.n_trials} trials, {workers} at once "
        f"({threads} thread{'s' if threads != 1 else ''} each), sweeper {_plugin(cfg, 'sweeper', sweeper)}, "
        f"sweep dir {sweep_dir}",
        f"  objective: {sweeper.direction} {sweeper.metric}",
        f"  sampler:   {sweeper.sampler_name}, seed {sweeper.seed}",
        f"  storage:   {sweeper.storage or sweep_dir + '/optuna.journal'} (a study already there is resumed)",
        "  trials:    chosen by the sampler while the study runs, not known in advance"
        + (f"; each stopped after {sweeper.timeout_s:g} s" if sweeper.timeout_s else ""),
        f"  search space ({len(space)} keys):",
        *(f"    {name}: {_distribution_text(distribution, format_value)}" for name, distribution in space.items()),
    ]
    if fixed:
        lines.append(f"  fixed in every trial: {' '.join(fixed)}")
    return lines, sample, "a trial, each searched key at its first value"


def _distribution_text(distribution, format_value):
    """``int in [3, 10]``, ``float in [0.01, 0.3], log scale``, ``one of a, b``: an Optuna distribution, briefly."""
    if hasattr(distribution, "choices"):
        return "one of " + ", ".join(format_value(choice) for choice in distribution.choices)
    kind = "int" if type(distribution).__name__.startswith("Int") else "float"
    text = f"{kind} in [{distribution.low}, {distribution.high}]"
    if distribution.log:
        return text + ", log scale"
    if distribution.step not in (None, 1):
        return text + f", step {distribution.step}"
    return text


# ------------------------------------------------------------------------------ mlops sweep
def main(argv):
    from mlops_framework.cli import options_first

    parser = argparse.ArgumentParser(prog="mlops sweep", description="Leaderboards of sweeps (mlops run -m ...).")
    parser.add_argument("-c", "--config", action="append", default=[], metavar="OVERRIDE",
                        help="a config override locating the home, e.g. -c paths.home=/data/mlops")
    sub = parser.add_subparsers(dest="action", required=True)
    show = sub.add_parser("show", help="rank the trials of a sweep; write leaderboard.csv and a plot")
    show.add_argument("dir", nargs="?", help="a sweep directory (default: the latest under HOME/multiruns)")
    show.add_argument("--metric", help="rank by this metric (default: the sweep's)")
    show.add_argument("--direction", choices=("maximize", "minimize"))
    show.add_argument("--promote", nargs="?", const="", metavar="ALIAS",
                      help=f"point ALIAS (default: the sweep's, else {DEFAULT_ALIAS}) at the best trial's version")
    show.add_argument("--top", type=int, help="print only the first N rows")
    show.add_argument("--json", action="store_true", help="print JSON")
    sub.add_parser("list", help="the sweeps under HOME/multiruns, oldest first")
    rerun = sub.add_parser("rerun", help="run a sweep's recorded command again and compare the metrics")
    rerun.add_argument("dir", nargs="?", help="a sweep directory (default: the latest)")
    args = parser.parse_args(options_first(argv, flags=()))  # --json belongs to `show`

    if args.action == "list":
        return _list(args.config)
    sweep_dir = _sweep_dir(args.dir, args.config)
    if args.action == "rerun":
        return _rerun(sweep_dir)
    record = read_record(sweep_dir)
    alias = None
    if args.promote is not None:
        alias = args.promote or record.get("promote") or DEFAULT_ALIAS
    board = leaderboard(sweep_dir, metric=args.metric, direction=args.direction)
    if not board["rows"]:
        raise MlopsError(f"{sweep_dir} has no trials")
    if args.metric and board["best"] is None:
        known = sorted({k for row in board["rows"] for k in row["metrics"]})
        raise MlopsError(f"no trial has the metric {args.metric!r}; metrics: {', '.join(known) or 'none'}")
    write_csv(board, sweep_dir / "leaderboard.csv")
    plot = write_plot(board, sweep_dir)
    promoted = promote(board, alias) if alias else None
    if args.json:
        print(json.dumps({k: v for k, v in board.items() if k != "record"} | {"promoted": promoted}, indent=2,
                         default=str))
    else:
        _print_board(board, promoted, [sweep_dir / "leaderboard.csv", plot], top=args.top)
    return 0


def _home(overrides):
    from mlops_framework import config
    from mlops_framework.plugins import Components, get_plugin_manager

    cfg = config.compose(overrides, Components(get_plugin_manager()))
    return Path(str(cfg.paths.home))


def _sweeps(overrides):
    root = _home(overrides) / "multiruns"
    found = [p for p in root.glob("*") if p.is_dir() and ((p / RECORD).exists() or (p / "multirun.yaml").exists())] \
        if root.is_dir() else []

    def started(path):
        return read_record(path).get("started") or dt.datetime.fromtimestamp(
            path.stat().st_mtime, dt.timezone.utc).isoformat()

    return root, sorted(found, key=lambda p: (started(p), p.name))


def _sweep_dir(given, overrides):
    if given:
        path = Path(given)
        if not path.is_dir():
            raise MlopsError(f"no sweep directory {given}")
        return path
    root, found = _sweeps(overrides)
    if not found:
        raise MlopsError(f"no sweeps under {root}; run one with mlops run -m ...")
    return found[-1]


def _list(overrides):
    root, found = _sweeps(overrides)
    if not found:
        print(f"(no sweeps under {root})")
        return 0
    for path in found:
        record = read_record(path)
        best = record.get("best") or {}
        trials = record.get("trials") or {}
        line = f"{path.name}  {trials.get('ok', '?')} ok {trials.get('failed', '?')} failed"
        if best:
            line += f"  best {best.get('metric')}={best.get('value'):.4f} ({best.get('model')} {best.get('version')})"
        print(f"{line}  {record.get('command', '')}".rstrip())
    return 0


def _rerun(sweep_dir):
    """Run the recorded command into a new sweep directory; compare params and metrics trial by trial."""
    record = read_record(sweep_dir)
    if not record.get("argv"):
        raise MlopsError(f"{sweep_dir} has no {RECORD} with a recorded command")
    stamp = dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
    new_dir = Path(sweep_dir).parent / f"{stamp}-rerun-of-{Path(sweep_dir).name}"
    argv = [a for a in record["argv"] if not a.startswith("hydra.sweep.dir=")]
    command = [sys.executable, "-m", "mlops_framework.cli", "run", *argv, f"hydra.sweep.dir={new_dir}"]
    cwd = record.get("cwd") if record.get("cwd") and Path(record["cwd"]).is_dir() else None
    print(f"rerun    {record['command']}\ninto     {new_dir}", flush=True)
    result = subprocess.run(command, cwd=cwd, env={**os.environ, **record.get("env", {})})
    old, new = leaderboard(sweep_dir), leaderboard(new_dir)
    old_rows = {row["trial"]: row for row in old["rows"]}
    differences = []
    for row in new["rows"]:
        before = old_rows.get(row["trial"])
        if before is None:
            differences.append(f"trial {row['trial']} is new")
        elif before["params"] != row["params"] or before["metrics"] != row["metrics"]:
            differences.append(f"trial {row['trial']}: {old['metric']} {before['value']} -> {row['value']}")
    missing = sorted(set(old_rows) - {row["trial"] for row in new["rows"]}, key=_number)
    differences += [f"trial {name} did not run" for name in missing]
    if differences:
        print("differs  " + "\n         ".join(differences))
        return 1
    print(f"same     params and metrics in all {len(new['rows'])} trials")
    return result.returncode
