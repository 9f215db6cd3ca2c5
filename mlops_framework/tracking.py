"""Experiment tracking: the ``tracker`` config group, driving every chosen tracker through one run.

``tracker=[local,mlflow]`` selects several; each option puts its settings under its own name
(``tracker.mlflow.uri=...``) with a ``kind:`` naming a class registered through ``register_trackers``.
``track`` opens one run in each tracker around ``cli.execute``'s run and registers a ``RunTracking`` on
the plugin manager, so the lifecycle hooks (``after_stage_run``) feed it every stage's metrics; when the
run ends it logs the artifacts, the registered version and the final status. A tracker that fails is
reported once (``mlops: warning: ...``) and left out for the rest of the run: tracking never fails a run.

A multirun is one parent run per tracker: ``start_sweep`` (called by the sweep callback when the
multirun starts) opens it and records the parents' ids in the sweep's ``sweep.json`` (``trackers``: name
-> id), where each trial's ``track`` finds them, in this process, in a launcher's forked workers or in a
subprocess alike.
"""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path

from mlops_framework.hookspecs import hookimpl

ARTIFACTS = ("resolved_config.yaml", "evaluation.json", "retrain_evaluation.json", "contract.json", "report.html",
             "summary.json")
MAX_PARAM_LENGTH = 500


def build_trackers(config, components) -> dict:
    """``{name: tracker}`` for the options chosen in a resolved config's ``tracker`` group (in order)."""
    return {name: components.build("tracker", values, where=f"tracker.{name}")
            for name, values in (config.get("tracker") or {}).items() if values}


def plan_lines(config, components) -> list[str]:
    """Where each tracker would write, one line each, touching nothing."""
    return [f"tracker {name}: {tracker.describe()}" for name, tracker in build_trackers(config, components).items()]


def flatten(data, prefix="") -> dict:
    """``{"model": {"params": {"max_depth": 6}}}`` -> ``{"model.params.max_depth": "6"}`` (lists as JSON)."""
    flat = {}
    for key, value in (data or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            flat[name] = text[:MAX_PARAM_LENGTH]
    return flat


def stage_metrics(stage_name, results) -> list[tuple[dict, int | None]]:
    """The metrics a finished stage produced, as ``(metrics, step)`` batches: monitor windows are a history
    with step = window index."""
    batches = []
    if stage_name in ("evaluate", "retrain"):
        batches.append(({k: v for k, v in (results.get("metrics") or {}).items() if _number(v)}, None))
    elif stage_name == "score" and results.get("scored"):
        scored = results["scored"]
        batches.append(({"scored_rows": scored["rows"], "scoring_seconds": scored["seconds"]}, None))
    elif stage_name == "monitor" and results.get("monitor_runs"):
        number = len(results["monitor_runs"])
        prefix = "monitor_" if number == 1 else f"monitor{number}_"
        for step, window in enumerate(results["monitor_runs"][-1].get("performance") or []):
            batches.append(({f"{prefix}{k}": v for k, v in window.items() if _number(v)}, step))
    elif stage_name == "promote" and results.get("promotions"):
        comparison = results["promotions"][-1].get("comparison") or {}
        for side in ("candidate", "champion"):
            batches.append(({f"promote_{side}_{k}": v for k, v in (comparison.get(side) or {}).items() if _number(v)},
                            len(results["promotions"]) - 1))
    return [(metrics, step) for metrics, step in batches if metrics]


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


class Guarded:
    """One tracker, called only until its first failure, which is reported once as a warning."""

    def __init__(self, name, tracker):
        self.name, self.tracker, self.failed = name, tracker, False

    def call(self, method, *args, **kwargs):
        if self.failed:
            return None
        try:
            return getattr(self.tracker, method)(*args, **kwargs)
        except Exception as error:  # any failure of a tracking backend: the run goes on without it
            self.failed = True
            print(f"mlops: warning: tracker {self.name} ({_describe(self.tracker)}) failed in {method}: "
                  f"{type(error).__name__}: {_first_line(error)}; the run goes on without it", file=sys.stderr)
            return None


def _describe(tracker):
    try:
        return tracker.describe()
    except Exception:
        return type(tracker).__name__


def _first_line(error):
    return (str(error).strip().splitlines() or [""])[0][:300]


class RunTracking:
    """The trackers of one run, fed by the lifecycle hooks while it is registered on the plugin manager."""

    def __init__(self, trackers: dict, run):
        self.trackers = [Guarded(name, tracker) for name, tracker in trackers.items()]
        self.run = run
        self.counts = {}
        self.version_logged = False

    def each(self, method, *args, **kwargs):
        for guarded in self.trackers:
            guarded.call(method, *args, **kwargs)

    def start(self, *, parents: dict, trial=None):
        from mlops_framework.lineage import git_commit

        run = self.run
        name = run.output_dir.name if run.output_dir else "run"
        tags = {"mlops.backend": str(run.config.get("backend", {}).get("kind")),
                "mlops.git_commit": git_commit() or "unknown",
                "mlops.pipeline": ",".join(stage.name for stage in run.stages)}
        from mlops_framework.config import redact

        params = flatten(redact({k: v for k, v in run.config.items() if k != "tracker"}))
        if trial is not None:
            tags["mlops.trial"] = str(trial)
            params["trial"] = str(trial)
            name = f"trial-{trial}"
        for guarded in self.trackers:
            parent = parents.get(guarded.name)
            guarded.call("start_run", name=name, output_dir=run.output_dir, parent_id=parent)
            guarded.call("set_tags", tags)
            guarded.call("log_params", params)

    @hookimpl
    def after_stage_run(self, stage, run, seconds):
        if run is not self.run:
            return
        self._log_metrics({f"seconds_{stage.name}": round(seconds, 3)})
        if stage.name == "load" and run.results.get("data_fingerprint"):
            self.each("set_tags", {"mlops.data_fingerprint": str(run.results["data_fingerprint"])})
        for metrics, step in stage_metrics(stage.name, run.results):
            self._log_metrics(metrics, step)
        if stage.name == "register":
            self._log_version()

    def _log_metrics(self, metrics, step=None):
        """A key logged again (retrain after evaluate) continues its history: step = times logged before."""
        if step is None:
            step = max(self.counts.get(key, 0) for key in metrics)
        for key in metrics:
            self.counts[key] = max(self.counts.get(key, 0), step + 1)
        self.each("log_metrics", metrics, step=step)

    def _log_version(self):
        version = self.run.results.get("version")
        if version and not self.version_logged:
            self.version_logged = True
            self.each("set_tags", {"mlops.model_name": str(version.get("model_name", self.run.registration.model_name)),
                                   "mlops.model_version": str(version["version_name"]),
                                   "mlops.registry": self.run.registry.describe()})

    def finish(self, status):
        """What a backend running the stages elsewhere (an ML Job) brought back unobserved, the artifacts,
        then the status."""
        unlogged = {k: v for k, v in (self.run.results.get("metrics") or {}).items()
                    if _number(v) and k not in self.counts}
        if unlogged:
            self._log_metrics(unlogged)
        self._log_version()
        output_dir = self.run.output_dir
        if output_dir and self.run.results.get("contract") is not None and not (output_dir / "contract.json").exists():
            (output_dir / "contract.json").write_text(json.dumps(self.run.results["contract"].to_dict(), indent=2))
        if output_dir:
            for name in [*ARTIFACTS, *sorted(path.name for path in output_dir.glob("monitor-*.json"))]:
                if (output_dir / name).is_file():
                    self.each("log_artifact", output_dir / name)
        self.each("end_run", status)


@contextmanager
def track(trackers: dict, components):
    """Yields ``begin(run)`` (``runner.execute``'s ``announce``): it opens a run in each of ``trackers``
    (``build_trackers``) and feeds it the stages; leaving closes them FINISHED, or FAILED on an exception."""
    opened = []

    def begin(run):
        if trackers:
            tracking = RunTracking(trackers, run)
            tracking.start(**_sweep_trial())
            components.pm.register(tracking)
            opened.append(tracking)

    status = "FAILED"
    try:
        yield begin
        status = "FINISHED"
    finally:
        for tracking in opened:
            components.pm.unregister(tracking)
            tracking.finish(status)


def _sweep_trial() -> dict:
    """``{"parents", "trial"}``: a multirun trial's number and its parent runs (from ``sweep.json``)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
            return {"parents": {}, "trial": None}
        hydra = HydraConfig.get()
    except Exception:  # not under Hydra (plan, tests, an ML Job's entry point)
        return {"parents": {}, "trial": None}
    from mlops_framework.sweep_record import read_record

    return {"parents": read_record(hydra.sweep.dir).get("trackers") or {}, "trial": hydra.job.num}


# ------------------------------------------------------------------------------ sweeps: one parent run
_SWEEP: dict = {}


def start_sweep(config, sweep_dir) -> None:
    """Open the parent run of a multirun in each tracker and record the ids in ``sweep.json``."""
    from omegaconf import OmegaConf

    from mlops_framework.config import redact
    from mlops_framework.plugins import Components, get_plugin_manager
    from mlops_framework.sweep_record import update_record

    try:
        values = OmegaConf.to_container(config.tracker, resolve=True) if config.get("tracker") else {}
        trackers = build_trackers({"tracker": redact(values)}, Components(get_plugin_manager()))
    except Exception as error:
        print(f"mlops: warning: the sweep has no parent run in its trackers: {_first_line(error)}", file=sys.stderr)
        return
    parents = {}
    _SWEEP["guarded"] = guarded = [Guarded(name, tracker) for name, tracker in trackers.items()]
    for item in guarded:
        parent_id = item.call("start_run", name=f"sweep-{Path(sweep_dir).name}", output_dir=Path(sweep_dir),
                              parent_id=None, sweep=True)
        if parent_id is not None:
            item.call("set_tags", {"mlops.sweep_dir": str(sweep_dir)})
            parents[item.name] = parent_id
    update_record(sweep_dir, trackers=parents)


def end_sweep(sweep_dir, board=None) -> None:
    """Close the parent runs: the best trial's metric and version, the leaderboard, the status."""
    best = (board or {}).get("best")
    for item in _SWEEP.pop("guarded", []):
        if best:
            item.call("log_metrics", {f"best_{board['metric']}": best["value"]}, step=None)
            item.call("set_tags", {"mlops.best_trial": str(best["trial"]),
                                   **({"mlops.model_version": f"{best['model']} {best['version']}"}
                                      if best.get("version") else {})})
        for name in ("leaderboard.csv", "sweep.json"):
            if (Path(sweep_dir) / name).is_file():
                item.call("log_artifact", Path(sweep_dir) / name)
        item.call("end_run", "FINISHED" if best else "FAILED")
