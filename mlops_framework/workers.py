"""Warm worker processes for sweep trials: the heavy imports happen once, a trial can time out alone.

``WorkerPool`` forks its workers from Python's forkserver, which imports ``preload`` (xgboost, pandas,
scikit-learn, ...) once, while the parent goes on composing trial configs. Each worker then runs one task
at a time with its thread limits set (``OMP_NUM_THREADS`` and friends = ``threads``), so that N trials
side by side don't oversubscribe the cores. Tasks travel with cloudpickle (Hydra's task function is a
closure). A task that runs past its timeout, or whose worker dies, is reported as failed and the worker
replaced; the other workers keep going. Used by the local launcher and the Optuna sweeper.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "NUMBA_NUM_THREADS")

# What a local trial imports; imported once in the forkserver so that no worker pays for it.
DEFAULT_PRELOAD = (
    "cloudpickle", "numpy", "pandas", "pyarrow", "pyarrow.parquet", "duckdb", "xgboost", "sklearn.model_selection",
    "sklearn.metrics", "hydra.core.utils", "mlops_framework.pipeline",
    "mlops_framework.stages", "mlops_framework.features", "mlops_framework.model", "mlops_local.registry",
    "mlops_local.sources", "mlops_local.synthetic", "mlops_framework.sweeps",
)


def cores() -> int:
    """CPU cores this process may use (CPU affinity and cgroup quotas counted, as joblib counts them)."""
    from joblib import cpu_count

    return cpu_count()


def thread_env(threads: int, keep_user_settings: bool = True) -> dict[str, str]:
    """Thread limits for a trial's process; with ``keep_user_settings``, variables the user set win."""
    if keep_user_settings:
        return {var: os.environ.get(var, str(threads)) for var in THREAD_VARS}
    return {var: str(threads) for var in THREAD_VARS}


@dataclass
class Outcome:
    """How one task ended: ``ok`` with ``value``, or not with ``error`` (one line) after ``seconds``."""

    key: Any
    ok: bool
    value: Any = None
    error: str | None = None
    seconds: float = 0.0


def _serve(connection, env: dict[str, str], preload: Sequence[str]) -> None:
    """A worker's loop: import what ``preload`` names and the forkserver did not (it may have been started
    with other modules), then receive a pickled ``(function, args)``, send back ``(ok, value or error)``."""
    import importlib

    import cloudpickle

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the workers
    os.environ.update(env)
    for name in preload:
        try:
            importlib.import_module(name)
        except ImportError:  # as the forkserver's preload: the trial that needs it reports it
            pass
    while True:
        try:
            payload = connection.recv_bytes()
        except (EOFError, OSError):
            return
        function, args = cloudpickle.loads(payload)
        try:
            reply = (True, function(*args))
        except BaseException as error:  # noqa: BLE001 - a trial's failure is its result, the worker lives on
            reply = (False, f"{type(error).__name__}: {error}")
        try:
            connection.send_bytes(cloudpickle.dumps(reply))
        except Exception as error:  # e.g. an unpicklable return value
            connection.send_bytes(cloudpickle.dumps((False, f"the result could not be sent back: {error}")))


class _Worker:
    def __init__(self, context, env, preload):
        self.connection, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, env, preload), daemon=True)
        self.process.start()
        child.close()
        self.task = None  # (key, started, deadline) while busy

    def stop(self, kill: bool = False) -> None:
        if kill and self.process.is_alive():
            self.process.kill()
        self.connection.close()
        self.process.join(timeout=None if kill else 5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


class WorkerPool:
    """``workers`` processes, each running one task at a time: ``submit`` to an idle one, ``wait`` for outcomes."""

    def __init__(self, workers: int, threads: int, preload: Sequence[str] = DEFAULT_PRELOAD,
                 keep_user_settings: bool = True):
        start_forkserver(preload)
        self._context = multiprocessing.get_context("forkserver")
        self._env = thread_env(threads, keep_user_settings)
        self._preload = tuple(preload)
        self._workers = [_Worker(self._context, self._env, self._preload) for _ in range(workers)]

    @property
    def idle(self) -> int:
        return sum(worker.task is None for worker in self._workers)

    @property
    def busy(self) -> int:
        return len(self._workers) - self.idle

    def submit(self, key: Any, function: Callable, *args: Any, timeout: float | None = None) -> None:
        """Run ``function(*args)`` on an idle worker; ``timeout`` seconds later it is killed and reported."""
        import cloudpickle

        worker = next(w for w in self._workers if w.task is None)
        started = time.monotonic()
        worker.task = (key, started, None if timeout is None else started + timeout)
        worker.connection.send_bytes(cloudpickle.dumps((function, args)))

    def wait(self) -> list[Outcome]:
        """Block until at least one running task ends (done, failed, timed out or its worker died)."""
        import cloudpickle
        from multiprocessing.connection import wait as wait_for

        busy = [w for w in self._workers if w.task is not None]
        if not busy:
            return []
        while True:
            deadlines = [w.task[2] for w in busy if w.task[2] is not None]
            timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            ready = set(wait_for([w.connection for w in busy] + [w.process.sentinel for w in busy], timeout))
            outcomes, now = [], time.monotonic()
            for worker in busy:
                key, started, deadline = worker.task
                if worker.connection in ready:
                    try:
                        ok, value = cloudpickle.loads(worker.connection.recv_bytes())
                    except (EOFError, OSError):
                        outcomes.append(self._replace(worker, f"the worker process died (exit code "
                                                              f"{_exit_code(worker.process)})", now))
                        continue
                    worker.task = None
                    outcomes.append(Outcome(key, ok, value if ok else None, None if ok else value, now - started))
                elif worker.process.sentinel in ready:
                    outcomes.append(self._replace(worker, f"the worker process died (exit code "
                                                          f"{_exit_code(worker.process)})", now))
                elif deadline is not None and now >= deadline:
                    outcomes.append(self._replace(worker, f"timed out after {deadline - started:g} s; the trial "
                                                          f"was stopped", now))
            if outcomes:
                return outcomes

    def _replace(self, worker: _Worker, error: str, now: float) -> Outcome:
        key, started, _ = worker.task
        worker.stop(kill=True)
        self._workers[self._workers.index(worker)] = _Worker(self._context, self._env, self._preload)
        return Outcome(key, False, None, error, now - started)

    def close(self, kill: bool = False) -> None:
        """Stop the workers: let them finish (``kill=False``, all idle) or kill the running ones."""
        for worker in self._workers:
            worker.stop(kill=kill or worker.task is not None)
        self._workers = []

    def __enter__(self) -> "WorkerPool":
        self._previous_handler = _exit_on_sigterm()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close(kill=exc_info[0] is not None)
        if self._previous_handler is not None:
            signal.signal(signal.SIGTERM, self._previous_handler)


def _exit_on_sigterm():
    """Turn SIGTERM into SystemExit while the pool is open, so that its workers are killed on the way out
    (the default action would leave them running orphaned). Returns the previous handler to restore."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    return signal.signal(signal.SIGTERM, handler)


_forkserver_started = False


def start_forkserver(preload: Sequence[str] = DEFAULT_PRELOAD) -> None:
    """Start Python's forkserver importing ``preload`` in the background; returns at once.

    Call it as early as possible (``start_forkserver_for``, a launcher's ``setup``): the imports then
    overlap with whatever the parent does next. A forkserver already running keeps what it imported (a
    ``WorkerPool``'s workers import the rest of their ``preload``).
    """
    global _forkserver_started
    from multiprocessing import forkserver

    forkserver.set_forkserver_preload(list(preload))
    forkserver.ensure_running()
    _forkserver_started = True


# Command-line choices whose trials run on warm workers (``hparams_search`` options choose one of them).
_WORKER_CHOICES = {"hydra/sweeper": "mlops_optuna", "hydra/launcher": "mlops_local", "hparams_search": None}


def start_forkserver_for(overrides: Sequence[str]) -> bool:
    """Start the forkserver (``DEFAULT_PRELOAD``) now when a multirun's command line chooses the Optuna
    sweeper, the local launcher or an ``hparams_search`` option, whose trials run on warm workers, so that
    its imports overlap with Hydra composing the sweep's config (2 s of start-up here) rather than follow
    it. Whether the trials do use workers is known only later (``n_jobs``); a forkserver started for
    nothing still registers the best trial (``call_warm``). Returns whether it was started."""
    for override in overrides:
        key, _, value = override.lstrip("+").partition("=")
        if key in _WORKER_CHOICES and value not in ("", "null") and _WORKER_CHOICES[key] in (None, value):
            start_forkserver()
            return True
    return False


def call_warm(function: Callable, *args: Any, meanwhile: Callable[[], Any] | None = None) -> Any:
    """``function(*args)`` in a process forked from this process's forkserver when a sweep started one (its
    heavy imports done there), else in this process. A failure in the fork raises ``MlopsError`` with its
    one-line error. The sweep's end registers the best trial's model this way: unpickling the model would
    otherwise import xgboost and scikit-learn in the parent, which needs neither. ``meanwhile()`` runs in
    this process while the fork works (after ``function`` when there is no fork); its result is dropped."""
    if not _forkserver_started:
        try:
            return function(*args)
        finally:
            if meanwhile is not None:
                meanwhile()
    from mlops_framework.errors import MlopsError

    with WorkerPool(1, cores()) as pool:
        pool.submit(None, function, *args)
        if meanwhile is not None:
            meanwhile()
        (outcome,) = pool.wait()
    if not outcome.ok:
        raise MlopsError(outcome.error)
    return outcome.value


def _exit_code(process) -> Any:
    process.join(timeout=1)
    return process.exitcode
