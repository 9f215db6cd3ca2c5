"""``MLJobLauncher``: every trial of a multirun (``mlops run -m hydra/launcher=ml_job ...``) is one Snowflake ML Job.

For each trial the launcher:

1. loads the trial's config as Hydra's launchers do (``load_sweep_config``), with ``hydra.job.num`` and its
   output directory ``<sweep dir>/<num>``, where ``.hydra/`` and ``trial.json`` are written;
2. checks, resolves (secrets redacted) and builds the run with ``mlops_framework.runner.prepare``, as
   ``mlops run`` does, and writes the same payload as ``backend=ml_job`` (``mlops_snowflake.ml_job.build_payload``:
   ``resolved_config.yaml`` with ``backend: {kind: local}``, so the trial's stages run inside the job);
3. submits it with ``snowflake.ml.jobs.submit_directory`` on the pool ``MLJobBackend.choose_pool`` picks,
   with ``MLJobBackend.submit_arguments`` (job name ``<MLOPS_MODEL>_T<num>``), at most ``max_parallel`` in flight;
4. polls the jobs' ``status``; a DONE job's ``result()`` (the run's ``RunResult`` as a dict) is the trial's
   return value and is written to ``<trial dir>/summary.json`` so that the sweep's leaderboard ranks it; FAILED, INTERNAL_ERROR,
   CANCELLED, a result that cannot be read, or no end within ``timeout_s`` fail the trial the way a local
   trial fails (a return value ``{"error": ...}``, with the last log lines), and the other trials go on:
   Hydra's sweeper would stop the whole sweep at a FAILED ``JobReturn``.

``plan_submissions`` lists what would be submitted, one line per trial, without connecting.
"""

from __future__ import annotations

import copy
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any, List, Optional, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus, _save_config, setup_globals
from hydra.plugins.launcher import Launcher
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

log = logging.getLogger(__name__)


class _Trial:
    """One trial: its Hydra config, the run built from it, where it goes, and (once submitted) its job."""

    def __init__(self, number, overrides, sweep_config, task_config, run, output_dir, pool, why, arguments):
        self.number, self.overrides = number, list(overrides)
        self.sweep_config, self.task_config, self.run = sweep_config, task_config, run
        self.output_dir, self.pool, self.why, self.arguments = output_dir, pool, why, arguments
        self.job = None
        self.submitted = None
        self.result: Optional[JobReturn] = None


class MLJobLauncher(Launcher):
    def __init__(self, connection: Any = None, compute_pool: Optional[str] = None,
                 cpu_compute_pool: str = "SYSTEM_COMPUTE_POOL_CPU", gpu_compute_pool: str = "SYSTEM_COMPUTE_POOL_GPU",
                 stage_name: str = "MLOPS_JOBS", pip_requirements=None, external_access_integrations=None,
                 env_vars=None, runtime_environment: Optional[str] = None, query_warehouse: Optional[str] = None,
                 target_instances: int = 1, timeout_s: float = 7200, poll_s: float = 10, max_parallel: int = 4):
        from mlops_framework.errors import MlopsError

        if int(max_parallel) < 1:
            raise MlopsError(f"hydra.launcher.max_parallel must be at least 1, not {max_parallel}")
        plain = lambda value: OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value  # noqa: E731
        self.connection = plain(connection)
        self.settings = {
            "compute_pool": compute_pool, "cpu_compute_pool": cpu_compute_pool, "gpu_compute_pool": gpu_compute_pool,
            "stage_name": stage_name, "target_instances": target_instances,
            "pip_requirements": plain(pip_requirements), "external_access_integrations": plain(external_access_integrations),
            "env_vars": plain(env_vars), "runtime_environment": runtime_environment, "query_warehouse": query_warehouse,
            "timeout_s": timeout_s, "poll_s": poll_s,
        }
        self.max_parallel = int(max_parallel)
        self.config: Optional[DictConfig] = None
        self.hydra_context = None
        self.task_function = None
        self._components = None
        self._session = None

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    @property
    def config_loader(self):
        return self.hydra_context.config_loader

    def backend(self):
        """The ``MLJobBackend`` whose helpers choose the pool and the submit arguments (it never runs here)."""
        from mlops_snowflake.ml_job import MLJobBackend

        return MLJobBackend(connection=self.connection, **self.settings)

    # ------------------------------------------------------------------ preparing trials (no connection)

    def components(self):
        if self._components is None:
            from mlops_framework.plugins import Components, get_plugin_manager

            self._components = Components(get_plugin_manager())
        return self._components

    def prepare(self, overrides: Sequence[str], number: int) -> _Trial:
        """The trial's configs, run, output directory, pool and submit arguments; connects nowhere."""
        from mlops_framework import runner

        sweep_config = self.config_loader.load_sweep_config(self.config, list(overrides))
        with read_write(sweep_config), open_dict(sweep_config):
            sweep_config.hydra.job.id = f"ml_job_{number}"
            sweep_config.hydra.job.num = number
        HydraConfig.instance().set_config(sweep_config)
        output_dir = Path(str(sweep_config.hydra.sweep.dir)) / str(sweep_config.hydra.sweep.subdir)
        with read_write(sweep_config.hydra.runtime), open_dict(sweep_config.hydra.runtime):
            sweep_config.hydra.runtime.output_dir = str(output_dir.resolve())
        HydraConfig.instance().set_config(sweep_config)
        task_config = copy.deepcopy(sweep_config)
        with read_write(task_config), open_dict(task_config):
            del task_config["hydra"]
        # the trial's stages run inside its job
        _, run = runner.prepare(task_config, self.components(), output_dir, backend={"kind": "local"})
        backend = self.backend()
        pool, why = backend.choose_pool(run)
        arguments = backend.submit_arguments(run)
        arguments["name"] = f"{arguments['name']}_T{number}"
        return _Trial(number, overrides, sweep_config, task_config, run, output_dir, pool, why, arguments)

    def plan(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int = 0) -> List[str]:
        """One line per trial: job name, pool, stage and the trial's overrides. Connects nowhere."""
        lines = []
        for offset, overrides in enumerate(job_overrides):
            trial = self.prepare(overrides, initial_job_idx + offset)
            lines.append(f"trial {trial.number}: ML Job {trial.arguments['name']} on compute pool {trial.pool} "
                         f"({trial.why}), payload to @{trial.arguments['stage_name']}, "
                         f"overrides: {' '.join(trial.overrides) or '(none)'}")
        return lines

    # ------------------------------------------------------------------ running them

    def session(self):
        if self._session is None:
            from mlops_snowflake import connection as connection_module

            self._session = connection_module.resolve(self.connection).session()
        return self._session

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        assert self.config is not None and self.hydra_context is not None, "setup() first"
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info(f"ML Job launcher: {len(job_overrides)} trial(s), at most {self.max_parallel} in flight, "
                 f"sweep dir {sweep_dir}")
        trials: List[_Trial] = []
        for offset, overrides in enumerate(job_overrides):
            number = initial_job_idx + offset
            try:
                trials.append(self.prepare(overrides, number))
            except Exception as error:  # a trial whose config cannot run fails alone
                trial = _Trial(number, overrides, None, None, None, None, None, None, None)
                trial.result = JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED,
                                         _return_value={"error": f"{type(error).__name__}: {error}"})
                trials.append(trial)
        pending = [t for t in trials if t.result is None]
        in_flight: List[_Trial] = []
        poll_s = float(self.settings["poll_s"])
        while pending or in_flight:
            while pending and len(in_flight) < self.max_parallel:
                trial = pending.pop(0)
                if self._submit(trial):
                    in_flight.append(trial)
            for trial in list(in_flight):
                if self._check(trial):
                    in_flight.remove(trial)
            if in_flight:
                time.sleep(poll_s)
        return [trial.result for trial in trials]

    def _submit(self, trial: _Trial) -> bool:
        from snowflake.ml import jobs

        from mlops_snowflake.ml_job import build_payload, job_config_text

        HydraConfig.instance().set_config(trial.sweep_config)
        try:
            hydra_dir = trial.output_dir / str(trial.sweep_config.hydra.output_subdir or ".hydra")
            trial.output_dir.mkdir(parents=True, exist_ok=True)
            _save_config(trial.task_config, "config.yaml", hydra_dir)
            _save_config(trial.sweep_config.hydra, "hydra.yaml", hydra_dir)
            _save_config(trial.sweep_config.hydra.overrides.task, "overrides.yaml", hydra_dir)
            # as a local trial leaves it: the sweep's promotion step reads the registry from it
            (trial.output_dir / "resolved_config.yaml").write_text(job_config_text(trial.run.config))
            self.hydra_context.callbacks.on_job_start(config=trial.sweep_config, task_function=self.task_function)
            with tempfile.TemporaryDirectory(prefix="mlops-trial-") as directory:
                build_payload(trial.run, directory)
                log.info(f"trial {trial.number}: submitting ML Job {trial.arguments['name']} to {trial.pool}")
                trial.job = jobs.submit_directory(directory, trial.pool, session=self.session(), **trial.arguments)
            trial.submitted = time.monotonic()
            log.info(f"trial {trial.number}: ML Job {trial.job.id} submitted ({' '.join(trial.overrides)})")
            return True
        except Exception as error:
            self._finish(trial, JobStatus.FAILED, error)
            return False

    def _check(self, trial: _Trial) -> bool:
        """True once the trial's job has ended (or timed out) and its ``JobReturn`` is set."""
        from mlops_framework.errors import MlopsError
        from mlops_snowflake.ml_job import DONE_STATE, FAILED_STATES, LOG_TAIL_LINES, _logs

        job = trial.job
        try:
            status = job.status
        except Exception as error:  # the status query itself failed: try again at the next poll
            log.warning(f"trial {trial.number}: ML Job {job.id} status unavailable: {error}")
            status = None
        if status == DONE_STATE:
            try:
                result = job.result()
            except Exception as error:
                self._finish(trial, JobStatus.FAILED, MlopsError(
                    f"ML Job {job.id} is DONE but its result could not be read: {error}"))
                return True
            if isinstance(result, dict):  # the job's RunResult, plus where it ran: the trial's summary.json
                from mlops_framework.runner import SUMMARY_FILE, RunResult

                summary = RunResult.from_dict(result)
                summary.extra.update(job_id=job.id, compute_pool=trial.pool)
                (trial.output_dir / SUMMARY_FILE).write_text(json.dumps(summary.to_dict(), indent=2, default=str))
            self._finish(trial, JobStatus.COMPLETED, result)
            return True
        if status in FAILED_STATES:
            tail = "\n".join(_logs(job)[-LOG_TAIL_LINES:]) or "(no logs)"
            self._finish(trial, JobStatus.FAILED, MlopsError(
                f"ML Job {job.id} ended {status} on {trial.pool}. Last {LOG_TAIL_LINES} log lines:\n{tail}"))
            return True
        timeout_s = float(self.settings["timeout_s"])
        if time.monotonic() - trial.submitted >= timeout_s:
            self._finish(trial, JobStatus.FAILED, MlopsError(
                f"ML Job {job.id} is still {status} after {timeout_s:g}s; it keeps running. Follow it with "
                f"snowflake.ml.jobs.get_job({job.id!r}) or raise hydra.launcher.timeout_s"))
            return True
        return False

    def _finish(self, trial: _Trial, status: JobStatus, value: Any) -> None:
        failed = status == JobStatus.FAILED
        trial.result = JobReturn(overrides=trial.overrides, cfg=trial.task_config, hydra_cfg=trial.sweep_config,
                                 working_dir=str(trial.output_dir), task_name=str(trial.sweep_config.hydra.job.name),
                                 status=JobStatus.COMPLETED, _return_value={"error": str(value)} if failed else value)
        if failed:
            log.error(f"trial {trial.number} failed: {value}")
        else:
            log.info(f"trial {trial.number}: ML Job {trial.job.id} DONE")
        try:
            self.hydra_context.callbacks.on_job_end(config=trial.sweep_config, job_return=trial.result)
        except Exception as error:  # a callback must not lose the other trials
            log.warning(f"trial {trial.number}: job-end callback failed: {error}")


def plan_submissions(launcher: MLJobLauncher, job_overrides: Sequence[Sequence[str]],
                     initial_job_idx: int = 0) -> List[str]:
    """One line per trial (job name, pool, stage, overrides) for a set-up launcher; connects nowhere."""
    return launcher.plan(job_overrides, initial_job_idx)
