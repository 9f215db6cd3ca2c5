"""``MlopsOptunaSweeper``: an Optuna study driven by ask/tell, trials on a pool of warm worker processes.

How a sweep runs:

1. The search space is ``hydra.sweeper.params`` with the command line's overrides on top (a sweep
   override such as ``model.params.max_depth=3,6`` becomes a dimension; a plain one is fixed).
2. The study is created in, or loaded from, ``storage`` (default ``<sweep dir>/optuna.journal``), so a
   killed or finished sweep resumes with ``hydra.sweep.dir=<that dir>``: its trials keep their numbers.
3. ``n_jobs`` warm worker processes (``mlops_framework.workers.WorkerPool``: forked after ``preload`` was
   imported once) each run one trial at a time with ``OMP_NUM_THREADS`` (and the BLAS equivalents) set to
   ``threads_per_trial``. The sweeper asks for a trial whenever a worker is free and tells Optuna its
   result as soon as it finishes: no worker waits for a batch to end.
4. A worker runs the trial as the local launcher does (``run_job``: the trial's config, ``.hydra/``, its
   output directory ``<sweep dir>/<trial number>``) and reads the metric from the files the run left.
   A trial that raises, exits, lacks the metric or runs past ``timeout_s`` is told ``FAIL`` and the
   study goes on; a worker that dies or is stopped is replaced.

The sweeper records the study (name, storage, best trial) in ``sweep.json`` and each trial's Optuna
state in ``<trial>/trial.json``; the leaderboard and the best-version alias are written at the end of
the sweep by ``mlops_framework.sweeps.SweepCallback``. ``plan`` describes the study for ``mlops plan -m``.
"""

from __future__ import annotations

import io
import logging
import math
import re
import sys
import time
from pathlib import Path
from typing import Any, List

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
from hydra.errors import CompactHydraException
from hydra.plugins.sweeper import Sweeper
from omegaconf import OmegaConf

log = logging.getLogger(__name__)

SAFE_VALUE = re.compile(r"^[\w.:/+-]+$")


class SweepConfigError(CompactHydraException):
    """A sweeper setting or search space that cannot work; reported (message only) before any trial runs."""


# ------------------------------------------------------------------------------ search space
def search_space(params, arguments, config_loader=None):
    """``({name: distribution}, {name: key element}, [fixed overrides])`` from config params and the command line.

    ``params`` maps keys to values in Hydra's override grammar; ``arguments`` are the command line's
    overrides, which win over ``params`` key by key.
    """
    import optuna.distributions as dist

    parser = OverridesParser.create(config_loader=config_loader)
    lines = {}
    for key, value in (params or {}).items():
        lines[str(key).lstrip("+~")] = f"{key}={value}"
    for line in arguments:
        lines[parser.parse_override(line).key_or_group] = line
    space, keys, fixed = {}, {}, []
    for override in parser.parse_overrides(list(lines.values())):
        name = override.key_or_group
        if not override.is_sweep_override():
            fixed.append(override.input_line)
            continue
        value = override.value()
        keys[name] = override.get_key_element()
        space[name] = _distribution(name, value, dist)
    return space, keys, fixed


def _distribution(name, value, dist):
    if not isinstance(value, (ChoiceSweep, RangeSweep, IntervalSweep)):  # glob(...) has no tags
        raise SweepConfigError(f"search space {name}: unsupported sweep {value}")
    log_scale = "log" in value.tags
    if isinstance(value, ChoiceSweep):
        choices = list(value.list)
        bad = [c for c in choices if c is not None and not isinstance(c, (bool, int, float, str))]
        if bad or log_scale:
            raise SweepConfigError(f"search space {name}: choices must be plain values without tags, not {value}")
        return dist.CategoricalDistribution(choices)
    if isinstance(value, RangeSweep):
        values = list(value.range())
        if log_scale or not values:
            raise SweepConfigError(f"search space {name}: {value} is empty or tagged log (use tag(log, interval(...)))")
        if all(isinstance(v, int) for v in (value.start, value.stop, value.step)):
            return dist.IntDistribution(values[0], values[-1], step=value.step)
        return dist.FloatDistribution(float(values[0]), float(values[-1]), step=float(value.step))
    if "int" in value.tags:
        return dist.IntDistribution(int(value.start), int(value.end), log=log_scale)
    return dist.FloatDistribution(float(value.start), float(value.end), log=log_scale)


def format_value(value):
    """A value as Hydra's override grammar reads it back unchanged."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    text = str(value)
    if isinstance(value, str) and not (SAFE_VALUE.match(text) and _bare_string(text)):
        # Hydra unescapes a backslash only before a quote or at the end of a quoted value
        escaped = re.sub(r"(\\+)(?='|$)", lambda run: run[1] * 2, text).replace("'", "\\'")
        return "'" + escaped + "'"
    return text


def _bare_string(text):
    """Whether Hydra reads ``text`` unquoted back as the same string (not null, a bool or a number)."""
    if text.lower() in ("null", "true", "false"):
        return False
    try:
        float(text)
    except ValueError:
        return True
    return False


def describe_distribution(distribution):
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


def _first_value(distribution):
    return distribution.choices[0] if hasattr(distribution, "choices") else distribution.low


# ------------------------------------------------------------------------------ the sweeper
class MlopsOptunaSweeper(Sweeper):
    def __init__(self, metric, direction, n_trials, n_jobs, threads_per_trial, sampler, seed, study_name,
                 storage, params, timeout_s=None, preload=()):
        self.metric, self.direction = metric, direction
        self.n_trials, self.n_jobs, self.threads_per_trial = n_trials, n_jobs, threads_per_trial
        self.sampler_name, self.seed = sampler, seed
        self.study_name, self.storage = study_name, storage
        self.params = dict(params or {})
        self.timeout_s, self.preload = timeout_s, list(preload)
        self.config = self.hydra_context = self.task_function = None

    def setup(self, *, hydra_context, task_function, config):
        from mlops_framework.workers import start_forkserver

        self.hydra_context, self.task_function, self.config = hydra_context, task_function, config
        if task_function is not None:
            start_forkserver(self.preload)  # its imports overlap with opening the study

    # -- settings ---------------------------------------------------------------------------
    def _check(self):
        if self.direction not in ("maximize", "minimize"):
            raise SweepConfigError(f"hydra.sweeper.direction must be maximize or minimize, not {self.direction!r}")
        if self.n_trials < 1:
            raise SweepConfigError(f"hydra.sweeper.n_trials must be at least 1, not {self.n_trials}")
        if self.sampler_name not in ("tpe", "random"):
            raise SweepConfigError(f"hydra.sweeper.sampler must be tpe or random, not {self.sampler_name!r}")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise SweepConfigError(f"hydra.sweeper.timeout_s must be positive, not {self.timeout_s}")

    def workers(self):
        from mlops_framework.workers import cores as count_cores

        cores = count_cores()
        workers = cores if self.n_jobs in (None, -1) else self.n_jobs
        if workers < 1:
            raise SweepConfigError(f"hydra.sweeper.n_jobs must be -1 or at least 1, not {self.n_jobs}")
        workers = min(workers, self.n_trials)
        threads = self.threads_per_trial or max(1, cores // workers)
        return workers, threads

    def _storage(self, sweep_dir):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        location = self.storage or str(sweep_dir / "optuna.journal")
        if "://" in location:
            return location, location
        Path(location).parent.mkdir(parents=True, exist_ok=True)
        return location, JournalStorage(JournalFileBackend(location))

    def _sampler(self, seed):
        import optuna

        if self.sampler_name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        return optuna.samplers.TPESampler(seed=seed)

    def search(self, arguments):
        """``(space, keys, fixed, first trial's overrides)`` for the command line's ``arguments``, once the
        settings are checked, the space is known not to be empty and the first trial's config composes
        (each searched key at its first value). ``mlops plan -m`` shows the same."""
        from mlops_framework.trial_composition import load_sweep_config

        self._check()
        space, keys, fixed = search_space(self.params, arguments, self.hydra_context.config_loader)
        if not space:
            raise SweepConfigError("the search space is empty: set hydra.sweeper.params or sweep a key on the "
                                   "command line, e.g. model.params.max_depth=range(3,10)")
        first = [*fixed, *(f"{keys[name]}={format_value(_first_value(d))}" for name, d in space.items())]
        # Hydra's validate_batch_is_legal, the same composition, kept for the workers' first trials
        load_sweep_config(self.hydra_context.config_loader, self.config, first)
        return space, keys, fixed, first

    def plan(self, arguments):
        """``(lines, first trial's overrides, label)`` for ``mlops plan -m``: the study's settings and search
        space after the sweeper's own checks; its trials are asked for while it runs, so the trial to plan
        takes each searched key's first value. Starts nothing."""
        space, _, fixed, sample = self.search(arguments)
        workers, threads = self.workers()
        sweep_dir = str(self.config.hydra.sweep.dir)
        lines = [
            f"sweep: Optuna study {self.study_name!r}, {self.n_trials} trials, {workers} at once "
            f"({threads} thread{'s' if threads != 1 else ''} each)",
            f"  objective: {self.direction} {self.metric}",
            f"  sampler:   {self.sampler_name}, seed {self.seed}",
            f"  storage:   {self.storage or sweep_dir + '/optuna.journal'} (a study already there is resumed)",
            "  trials:    chosen by the sampler while the study runs, not known in advance"
            + (f"; each stopped after {self.timeout_s:g} s" if self.timeout_s else ""),
            f"  search space ({len(space)} keys):",
            *(f"    {name}: {describe_distribution(distribution)}" for name, distribution in space.items()),
        ]
        if fixed:
            lines.append(f"  fixed in every trial: {' '.join(fixed)}")
        return lines, sample, "a trial, each searched key at its first value"

    # -- the sweep --------------------------------------------------------------------------
    def sweep(self, arguments: List[str]) -> Any:
        import optuna
        from optuna.trial import TrialState

        from mlops_framework import sweep_record

        space, keys, fixed, _ = self.search(arguments)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        workers, threads = self.workers()

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        location, storage = self._storage(sweep_dir)
        study = optuna.create_study(storage=storage, study_name=self.study_name, direction=self.direction,
                                    load_if_exists=True)
        if study.direction.name.lower() != self.direction:
            raise SweepConfigError(f"study {self.study_name!r} in {location} was created to "
                                   f"{study.direction.name.lower()}, not {self.direction}")
        stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING))
        for trial in stale:  # left running by a killed session
            study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        before = len(study.trials)
        seed = None if self.seed is None else self.seed + before
        study.sampler = self._sampler(seed)
        sweep_record.update_record(sweep_dir, study={
            "name": self.study_name, "storage": location, "metric": self.metric, "direction": self.direction,
            "sampler": self.sampler_name, "sampler_seed": seed, "trials_before": before,
            "n_trials": self.n_trials, "workers": workers, "threads_per_trial": threads,
            "search_space": {name: repr(d) for name, d in space.items()}, "fixed": fixed,
        })
        log.info(f"Optuna study {self.study_name!r} ({location}): {self.n_trials} trials, {workers} at once, "
                 f"{threads} thread(s) each, {self.direction} {self.metric}; {before} earlier trials")

        results = self._optimize(study, space, keys, fixed, workers, threads, sweep_dir)

        finished = [t for t in study.trials if t.state == TrialState.COMPLETE]
        best = None
        if finished:
            trial = study.best_trial
            best = {"number": trial.number, "value": trial.value, "params": trial.params,
                    "trial_dir": trial.user_attrs.get("trial_dir")}
            log.info(f"best trial of the study: #{trial.number} {self.metric}={trial.value:.4f} {trial.params}")
        sweep_record.update_record(sweep_dir, study={"trials_after": len(study.trials), "best": best})
        return results

    def _optimize(self, study, space, keys, fixed, workers, threads, sweep_dir):
        import cloudpickle
        from hydra.core.singleton import Singleton
        from optuna.trial import TrialState

        from mlops_framework import sweep_record, trial_composition
        from mlops_framework.workers import WorkerPool

        # what every trial runs with, pickled once (each trial unpickles its own copy): 10-20 ms a trial less here
        context = cloudpickle.dumps((self.hydra_context, self.config, self.task_function, Singleton.get_state()))
        composed = trial_composition.composed()  # the first trial's, composed by search(): sent to each worker
        results, asked, running = [], 0, {}
        with WorkerPool(workers, threads, self.preload, keep_user_settings=self.threads_per_trial is None) as pool:
            try:
                while asked < self.n_trials or pool.busy:
                    while asked < self.n_trials and pool.idle:
                        trial = study.ask(space)
                        overrides = fixed + [f"{keys[name]}={format_value(value)}"
                                             for name, value in trial.params.items()]
                        trial.set_user_attr("trial_dir", str(sweep_dir / str(trial.number)))
                        log.info(f"\t#{trial.number} : {' '.join(overrides)}")
                        running[trial.number] = trial
                        pool.submit(trial.number, run_trial, trial.number, overrides, context, self.metric,
                                    composed if asked < workers else None, timeout=self.timeout_s)
                        asked += 1
                    for done in pool.wait():
                        trial = running.pop(done.key)
                        outcome = done.value if done.ok else {
                            "value": None, "error": done.error, "seconds": done.seconds,
                            "trial_dir": str(sweep_dir / str(trial.number))}
                        value = outcome["value"]
                        ok = value is not None and not math.isnan(value)
                        if ok:
                            study.tell(trial, value)
                        else:
                            trial.set_user_attr("error", outcome["error"])
                            study.tell(trial, state=TrialState.FAIL)
                            log.warning(f"trial #{trial.number} failed: {outcome['error']}")
                        sweep_record.update_trial(outcome["trial_dir"], optuna={
                            "number": trial.number, "state": "COMPLETE" if ok else "FAIL", "value": value,
                            "params": trial.params, "study": self.study_name, "seconds": round(outcome["seconds"], 3),
                        }, error=outcome["error"])
                        results.append(outcome)
            finally:  # interrupted: the running trials failed (the pool kills their workers)
                for trial in running.values():
                    study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        return results


# ------------------------------------------------------------------------------ in a worker
class _Tee(io.TextIOBase):
    """Writes to a stream and keeps the last few kilobytes, to report why a trial failed."""

    def __init__(self, stream, keep=4000):
        self.stream, self.keep, self.tail = stream, keep, ""

    def write(self, text):
        self.tail = (self.tail + text)[-self.keep:]
        return self.stream.write(text)

    def flush(self):
        self.stream.flush()


def run_trial(number, overrides, context, metric, composed=None):
    """Run one trial in this (worker) process as the local launcher does; return its metric or why it failed.
    ``context``: the pickled Hydra context, sweep config, task function and Hydra singletons' state;
    ``composed``: the sweep process's compositions (``trial_composition.composed``), for a worker's first trial."""
    import cloudpickle
    from hydra.core.utils import JobStatus, setup_globals

    from hydra_plugins.mlops_local_launcher.launcher import run_trial as run_job_here
    from mlops_framework import sweep_record

    started = time.time()
    hydra_context, config, task_function, singleton_state = cloudpickle.loads(context)
    setup_globals()  # the resolvers the sweep dir's interpolation uses
    trial_dir = Path(str(config.hydra.sweep.dir)) / str(number)
    error = None
    saved_stderr, sys.stderr = sys.stderr, _Tee(sys.stderr)
    try:
        ret = run_job_here(number, overrides, hydra_context, config, task_function, singleton_state, composed)
        trial_dir = Path(str(ret.hydra_cfg.hydra.runtime.output_dir))
        if ret.status == JobStatus.FAILED:
            error = f"{type(ret._return_value).__name__}: {ret._return_value}"
        elif isinstance(ret.return_value, dict) and ret.return_value.get("error"):
            error = str(ret.return_value["error"])
    except SystemExit as exit_:
        error = _last_error(sys.stderr.tail) or f"the trial exited with status {exit_.code}"
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    finally:
        sys.stderr = saved_stderr
    value = None
    if error is None:
        metrics = sweep_record.trial_metrics(trial_dir)
        if metric in metrics and metrics[metric] is not None:
            value = float(metrics[metric])
        else:
            error = f"metric {metric!r} not in the trial's metrics ({', '.join(sorted(metrics)) or 'none'})"
    return {"value": value, "error": error, "seconds": time.time() - started, "trial_dir": str(trial_dir)}


def _last_error(text):
    lines = [line for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or [None])[-1]
