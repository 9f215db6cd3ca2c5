"""The end of a sweep: which trials register their model, the leaderboard, and the ``SWEEP_BEST`` alias.

``SweepCallback`` (a Hydra callback in ``conf/config.yaml``, key ``hydra.callbacks.sweep``) writes
``sweep.json`` when a multirun starts, ``trial.json`` around each trial (wherever the launcher runs it)
and, when the multirun ends, the leaderboard (``mlops_framework.leaderboard``) and the best version's alias.
The files are described in ``mlops_framework.sweep_record``.

Which trials register (``hydra.callbacks.sweep.register``):

- ``best`` (default): every trial keeps its model in a local registry in its own directory
  (``<trial>/model``); when the sweep ends, only the best trial's model is registered, in the registry the
  trials were configured with, its lineage naming the sweep directory and trial.
- ``all``: every trial registers its own version as it finishes (as a plain ``mlops run`` does).
- ``none``: trials keep their models in their directories; nothing is registered and no alias moves.

``SWEEP_BEST`` (``hydra.callbacks.sweep.promote``, ``null`` for none) is an alias of the trained model that
points at the registered version of the best trial (by the sweep's metric and direction; failed trials
never count) of the latest sweep that ended with registration on. It moves only there, or when asked
(``mlops sweep show --promote``, ``mlops sweep rerun --register``): a sweep with ``register=none`` and a
plain ``mlops sweep rerun`` leave it where it is. Each move is in ``mlops registry history``, its reason
naming the sweep directory, the trial and the metric. A resumed Optuna study ranks all its trials, earlier
sessions' included; a best trial registered before is not registered twice.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

from hydra.experimental.callback import Callback

from mlops_framework import tracking
from mlops_framework.errors import MlopsError
from mlops_framework.leaderboard import leaderboard, print_board, write_chart, write_csv
from mlops_framework.sweep_record import (DEFAULT_ALIAS, DEFAULT_DIRECTION, DEFAULT_METRIC, DEFAULT_REGISTER,
                                          REGISTER_POLICIES, TRIAL, now, read_json, read_record,
                                          start_record, update_record, update_trial, write_json)


class SweepCallback(Callback):
    """Records every multirun: ``sweep.json`` at the start, ``trial.json`` per trial, and at the end the
    leaderboard, the best trial's registration and alias, and exit status 1 when trials failed (a grid), or
    all did (a search).

    ``metric``/``direction`` rank the trials unless the sweeper has its own (the Optuna sweeper's win);
    ``register`` is ``best``, ``all`` or ``none`` (see the module docstring); ``promote`` is the alias set on
    the best trial's registered version, ``null`` for none.
    """

    def __init__(self, metric=DEFAULT_METRIC, direction=DEFAULT_DIRECTION, promote=DEFAULT_ALIAS,
                 register=DEFAULT_REGISTER):
        if register not in REGISTER_POLICIES:
            raise MlopsError(f"hydra.callbacks.sweep.register must be one of {', '.join(REGISTER_POLICIES)}, "
                             f"not {register!r}")
        self.metric, self.direction, self.promote, self.register = metric, direction, promote, register

    def on_multirun_start(self, config, **kwargs):
        from omegaconf import OmegaConf

        start_record(config, metric=self.metric, direction=self.direction, promote=self.promote,
                     register=self.register)
        tracking.start_sweep(config, config.hydra.sweep.dir)  # the trackers' parent run of every trial
        stages = OmegaConf.select(config, "pipeline.stages", default=[]) or []
        launcher = str(OmegaConf.select(config, "hydra.launcher._target_", default=""))
        sweeper = str(OmegaConf.select(config, "hydra.sweeper._target_", default=""))
        parallel = "BasicLauncher" not in launcher or "mlops_optuna" in sweeper
        if "score" in stages and parallel:
            print(f"mlops: warning: every trial of this parallel sweep scores into the same sink; "
                  f"add pipeline=train and score the best version afterwards "
                  f"(scoring.version={self.promote or 'vN'})", file=sys.stderr)

    def on_job_start(self, config, **kwargs):
        if _multirun(config):
            import os
            import time

            write_json(Path(str(config.hydra.runtime.output_dir)) / TRIAL, {
                "number": config.hydra.job.num, "overrides": list(config.hydra.overrides.task), "started": now(),
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
        started = read_json(trial_dir / TRIAL, {}).get("start_time") or time.time()
        update_trial(trial_dir, finished=now(), seconds=round(time.time() - started, 3),
                     status="failed" if error else "ok", error=error)

    def on_multirun_end(self, config, **kwargs):
        sweep_dir = Path(str(config.hydra.sweep.dir))
        record = read_record(sweep_dir)
        board = finish(sweep_dir, register=record.get("register", self.register),
                       alias=record.get("promote", self.promote))
        tracking.end_sweep(sweep_dir, board)
        failed = [row for row in board["rows"] if row["status"] != "ok"]
        if failed and (not board["best"] or "study" not in record):
            details = "; ".join(f"#{row['trial']}: {row['error'] or 'no metrics'}" for row in failed[:5])
            print(f"mlops: error: {len(failed)} of {len(board['rows'])} trials failed ({details})", file=sys.stderr)
            raise SystemExit(1)


def _multirun(config):
    from hydra.types import RunMode

    return config.hydra.get("mode") == RunMode.MULTIRUN


# ------------------------------------------------------------------------------ the best version
def _registry_for(trial_dir):
    """The registry a trial was configured with, and its resolved ``registry`` settings."""
    from mlops_framework.config import load_yaml
    from mlops_framework.pipeline import build_registry
    from mlops_framework.plugins import Components, get_plugin_manager

    resolved = load_yaml((Path(trial_dir) / "resolved_config.yaml").read_text())
    components = Components(get_plugin_manager())
    return build_registry(resolved, components), resolved["registry"], components


def register_trial(board, row):
    """Register the model a trial kept in its directory, in the registry the trial was configured with;
    record the version in ``trial.json`` (``registered``) and in ``row``. A trial registered before is not
    registered again. Returns ``{"model", "version"}``."""
    registered = read_json(Path(row["dir"]) / TRIAL, {}).get("registered")
    if registered:
        row.update(model=registered["model"], version=registered["version"])
        return registered
    registry, settings, components = _registry_for(row["dir"])
    kept = components.build("registry", {"kind": "local", "root": str(row["kept"])}, where="the trial's own registry")
    name = row["model"]
    record = kept.versions(name)[-1]
    tags = next((m["tags"] for m in kept.models() if m["name"] == name), {})
    lineage = {**(record.get("lineage") or {}), "sweep": {
        "dir": board["sweep_dir"], "trial": row["trial"], "metric": board["metric"], "value": row["value"]}}
    version = registry.log_model(
        kept.load_model(name, record["version_name"]), model_name=name, version_name=settings.get("version_name"),
        comment=record.get("comment"), metrics=record.get("metrics"), metadata=record.get("metadata"), tags=tags,
        sample_input=_sample_input(kept, record), signature=record.get("signature"),
        lineage=lineage)
    registered = {"model": name, "version": version["version_name"], "registry": registry.describe()}
    update_trial(row["dir"], registered=registered)
    row.update(model=name, version=version["version_name"])
    return registered


def _sample_input(registry, record):
    """The sample input a version of a local registry keeps (checked against its sha256 first), or None."""
    if not record.get("sample_input"):
        return None
    import pandas as pd

    artifact = registry.artifact_path(record["model_name"], record["version_name"])
    return pd.read_parquet(artifact.parent / record["sample_input"])


def promote(board, alias):
    """Point ``alias`` at the best trial's registered version; the history entry names the sweep, trial and metric.

    Returns ``{"model", "version", "alias", "moved"}``, or None when no trial succeeded or registered.
    """
    best = board["best"]
    if not best or not best["version"]:
        return None
    registry, _, _ = _registry_for(best["dir"])
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


def _warn(action, error):
    print(f"mlops: warning: could not {action}: {error}", file=sys.stderr)


def finish(sweep_dir, *, register=DEFAULT_REGISTER, alias=DEFAULT_ALIAS, metric=None, direction=None, out=None):
    """Rank the trials; register the best one's kept model (``register="best"``); write the leaderboard (CSV
    and chart), print it, set the alias, and record the best in ``sweep.json``. Returns the leaderboard."""
    sweep_dir = Path(sweep_dir)
    board = leaderboard(sweep_dir, metric=metric, direction=direction)
    best = board["best"]
    if best and best["kept"] and register == "best":
        from mlops_framework import charts
        from mlops_framework.workers import call_warm

        try:  # the chart's imports (its table needs the version) overlap with registering in the fork
            registered = call_warm(register_trial, {key: board[key] for key in ("sweep_dir", "metric")}, dict(best),
                                   meanwhile=charts.prepare)
            best.update(model=registered["model"], version=registered["version"])
        except Exception as error:  # the leaderboard stands; say why nothing was registered
            _warn(f"register trial {best['trial']}'s model", error)
    write_csv(board, sweep_dir / "leaderboard.csv")
    promoted = None
    if alias and register != "none":
        try:
            promoted = promote(board, alias)
        except MlopsError as error:
            _warn(f"set alias {alias}", error)
    chart = write_chart(board, sweep_dir)
    record = board["record"]
    started = record.get("started")
    seconds = None
    if started:
        seconds = round((dt.datetime.now(dt.timezone.utc) - dt.datetime.fromisoformat(started)).total_seconds(), 3)
    ok = sum(row["status"] == "ok" for row in board["rows"])
    update_record(sweep_dir, finished=now(), seconds=seconds, trials={"ok": ok, "failed": len(board["rows"]) - ok},
                  best=None if not best else {
                      "trial": best["trial"], "metric": board["metric"], "value": best["value"],
                      "params": {k: best["params"].get(k) for k in board["param_keys"]},
                      "model": best["model"], "version": best["version"], "alias": (promoted or {}).get("alias"),
                  })
    print_board(board, promoted, [sweep_dir / "leaderboard.csv", chart], out=out)
    return board
