"""The ``local`` backend: every stage in this process, with DuckDB files as the warehouse."""

import contextlib
import os
import time
from pathlib import Path

from mlops_framework.errors import MlopsError
from mlops_framework.pipeline import run_stages

WAREHOUSE_WAIT_S = float(os.environ.get("MLOPS_WAREHOUSE_WAIT_S", 600))


class LocalBackend:
    """Runs every stage in this process, on this machine's cores, with DuckDB as the warehouse.

    A run that writes to a DuckDB warehouse holds ``<warehouse>.lock`` from before its first stage to
    after its last: concurrent runs on one warehouse wait their turn (at most ``MLOPS_WAREHOUSE_WAIT_S``
    seconds, then one message and nothing done), so none registers a version it then cannot score."""

    def plan(self, run):
        return [f"{stage.name}: {stage.describe(run)}" for stage in run.stages]

    def execute(self, run):
        with contextlib.ExitStack() as held:
            for path in warehouses(run):
                held.enter_context(warehouse_lock(path))
            run_stages(run)


def warehouses(run):
    """The DuckDB files this run's stages write to, sorted (one lock order for every run). A run that
    writes none (a sweep's trial: train and register only) takes no lock and runs in parallel."""
    from mlops_local.sinks import DuckDBSink

    names = {stage.name for stage in run.stages}
    paths = set()
    if "score" in names and isinstance(run.scoring.sink, DuckDBSink):
        paths.add(run.scoring.sink.path)
    if "monitor" in names and run.monitor is not None:
        paths.add(run.monitor.warehouse)
    if "explain" in names and run.retrain is not None:
        paths.add(run.retrain.warehouse)
    return sorted(str(Path(p).expanduser().resolve()) for p in paths if p)


@contextlib.contextmanager
def warehouse_lock(path, wait_s=None):
    """Hold an exclusive lock on ``path + '.lock'``, waiting at most ``wait_s`` seconds for it."""
    import fcntl

    wait_s = WAREHOUSE_WAIT_S if wait_s is None else wait_s
    lock_path = Path(f"{path}.lock")
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise MlopsError(f"cannot use the warehouse {path}: {error.strerror} ({lock_path}); "
                         f"nothing was done") from None
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise MlopsError(f"warehouse {path} is busy with another run; waited {wait_s:g}s "
                                     f"(MLOPS_WAREHOUSE_WAIT_S); nothing was done, try again") from None
                time.sleep(0.2)
        yield
    finally:
        os.close(fd)
