"""``LocalLauncher``: the trials of a multirun on this machine's cores, each worker warm from the start.

Compared with Hydra's joblib launcher (loky workers that each import xgboost, pandas and scikit-learn on
their first trial), the workers fork from a forkserver that starts importing ``preload`` as soon as Hydra
sets the launcher up, while the sweeper is still validating the trial configs; a new trial starts the
moment a worker is free; each trial gets ``cores // workers`` threads; and a trial past ``timeout_s`` is
stopped and reported failed while the others go on. A trial runs exactly as under Hydra's own launchers
(``run_job``: its config, ``.hydra/``, output directory ``<sweep dir>/<num>``, the job callbacks).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Optional, Sequence

from hydra.core.utils import JobReturn, JobStatus, filter_overrides, setup_globals
from hydra.errors import CompactHydraException
from hydra.plugins.launcher import Launcher
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class LauncherConfigError(CompactHydraException):
    """A launcher setting that cannot work; reported (message only) before any trial runs."""


class LocalLauncher(Launcher):
    def __init__(self, n_jobs: int = -1, threads_per_trial: Optional[int] = None, timeout_s: Optional[float] = None,
                 preload: Sequence[str] = ()):
        self.n_jobs, self.threads_per_trial, self.timeout_s = n_jobs, threads_per_trial, timeout_s
        self.preload = list(preload)
        self.config: Optional[DictConfig] = None
        self.hydra_context = self.task_function = None

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        """Keep what ``launch`` needs; with a task to run (``mlops plan -m`` sets up without one), start
        the forkserver now, so that its imports overlap with the sweeper validating the trial configs."""
        from mlops_framework.workers import start_forkserver

        if self.n_jobs == 0 or self.n_jobs < -1:
            raise LauncherConfigError(f"hydra.launcher.n_jobs must be -1 or at least 1, not {self.n_jobs}")
        if self.threads_per_trial is not None and self.threads_per_trial < 1:
            raise LauncherConfigError(f"hydra.launcher.threads_per_trial must be at least 1, not "
                                      f"{self.threads_per_trial}")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise LauncherConfigError(f"hydra.launcher.timeout_s must be positive, not {self.timeout_s}")
        self.hydra_context, self.task_function, self.config = hydra_context, task_function, config
        if self._in_workers(trials=None) and task_function is not None:
            start_forkserver(self.preload)

    def _in_workers(self, trials: Optional[int]) -> bool:
        return self.workers(trials)[0] > 1 or self.timeout_s is not None

    def workers(self, trials: Optional[int]) -> tuple[int, int]:
        """``(workers, threads per trial)`` for ``trials`` trials (None: not known yet)."""
        from mlops_framework.workers import cores as count_cores

        cores = count_cores()
        workers = cores if self.n_jobs == -1 else self.n_jobs
        if trials is not None:
            workers = max(1, min(workers, trials))
        return workers, self.threads_per_trial or max(1, cores // workers)

    def plan(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int = 0) -> List[str]:
        """One line per trial: where it runs and its overrides. Starts nothing."""
        workers, threads = self.workers(len(job_overrides))
        where = (f"{workers} local worker(s), {threads} thread(s) each" if self._in_workers(len(job_overrides))
                 else "in this process, one after the other")
        limit = f", stopped after {self.timeout_s:g} s" if self.timeout_s is not None else ""
        return [f"trial {initial_job_idx + offset}: {where}{limit}, overrides: "
                f"{' '.join(filter_overrides(overrides)) or '(none)'}"
                for offset, overrides in enumerate(job_overrides)]

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from hydra.core.singleton import Singleton

        from mlops_framework.workers import WorkerPool

        setup_globals()
        assert self.config is not None and self.hydra_context is not None, "setup() first"
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        workers, threads = self.workers(len(job_overrides))
        for line in self.plan(job_overrides, initial_job_idx):
            log.info(line)
        state = Singleton.get_state()
        jobs = [(initial_job_idx + offset, list(overrides)) for offset, overrides in enumerate(job_overrides)]
        if not self._in_workers(len(job_overrides)):
            return [run_trial(number, overrides, self.hydra_context, self.config, self.task_function, state)
                    for number, overrides in jobs]
        results: dict[int, JobReturn] = {}
        pending = list(jobs)
        with WorkerPool(workers, threads, self.preload, keep_user_settings=self.threads_per_trial is None) as pool:
            while pending or pool.busy:
                while pending and pool.idle:
                    number, overrides = pending.pop(0)
                    pool.submit((number, overrides), run_trial, number, overrides, self.hydra_context, self.config,
                                self.task_function, state, timeout=self.timeout_s)
                for outcome in pool.wait():
                    number, overrides = outcome.key
                    results[number] = outcome.value if outcome.ok else self._failed(number, overrides, outcome.error)
        return [results[number] for number, _ in jobs]

    def _failed(self, number: int, overrides: List[str], error: str) -> JobReturn:
        """The result of a trial stopped from outside (timed out, its worker died), reported as a trial that
        fails reports itself (a return value ``{"error": ...}``), so that the sweep goes on; the job-end
        callbacks run, so that its leaderboard row says why."""
        from omegaconf import open_dict, read_write

        config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        set_job_number(config, number)
        output_dir = Path(str(config.hydra.sweep.dir)) / str(config.hydra.sweep.subdir)
        with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
            config.hydra.runtime.output_dir = str(output_dir.resolve())
        result = JobReturn(overrides=overrides, cfg=config, hydra_cfg=config, status=JobStatus.COMPLETED,
                           working_dir=str(output_dir), task_name=str(config.hydra.job.name),
                           _return_value={"error": error})
        log.error(f"trial {number} failed: {error}")
        try:
            self.hydra_context.callbacks.on_job_end(config=config, job_return=result)
        except Exception as callback_error:  # a callback must not lose the other trials
            log.warning(f"trial {number}: job-end callback failed: {callback_error}")
        return result


def set_job_number(config: DictConfig, number: int) -> None:
    from omegaconf import open_dict

    with open_dict(config):
        config.hydra.job.id = f"{config.hydra.job.name}_{number}"
        config.hydra.job.num = number


def run_trial(number, overrides, hydra_context, config, task_function, singleton_state, composed=None) -> JobReturn:
    """Run one trial in this process as Hydra's launchers do; returns its ``JobReturn``. Its config is
    Hydra's, without redoing what earlier trials here, or the process that sent ``composed``, composed
    (``mlops_framework.trial_composition``)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.utils import run_job

    from mlops_framework.trial_composition import adopt, load_sweep_config

    setup_globals()
    restore_singletons(singleton_state)
    if composed is not None:
        adopt(composed)
    sweep_config = load_sweep_config(hydra_context.config_loader, config, list(overrides))
    set_job_number(sweep_config, number)
    HydraConfig.instance().set_config(sweep_config)
    return run_job(hydra_context=hydra_context, config=sweep_config, task_function=task_function,
                   job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")


def restore_singletons(singleton_state) -> None:
    """Hydra's ``Singleton.set_state``, keeping this process's plugin registry when it has one.

    The state sent to a trial leaves Hydra's ``Plugins`` out (it does not pickle), and ``set_state`` builds
    a new one by scanning every plugin module again: 0.06-0.5 s of every trial on a worker, which already
    scanned the same installed plugins for its first trial. A worker's first trial scans once, as before.
    """
    from hydra.core.plugins import Plugins
    from hydra.core.singleton import Singleton

    plugins = Singleton._instances.get(Plugins)
    if plugins is not None:  # set_state makes this dict the process's singletons: the registry goes in
        singleton_state["instances"].setdefault(Plugins, plugins)
    Singleton.set_state(singleton_state)
