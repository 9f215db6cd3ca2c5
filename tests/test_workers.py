"""The warm worker pool under sweeps: thread limits, a task's error, a timeout, a dying worker."""

import os
import time

import pytest

from mlops_framework.workers import WorkerPool


def report():
    return os.getpid(), os.environ["OMP_NUM_THREADS"]


def fail():
    raise ValueError("bad trial")


def sleep(seconds):
    time.sleep(seconds)
    return os.getpid()


def die():
    os._exit(3)


@pytest.fixture
def pool():
    with WorkerPool(2, threads=1, preload=("json",), keep_user_settings=False) as workers:
        yield workers


def run_all(pool, *tasks, timeout=None):
    for key, (function, *args) in enumerate(tasks):
        pool.submit(key, function, *args, timeout=timeout)
    outcomes = {}
    while pool.busy:
        outcomes.update((o.key, o) for o in pool.wait())
    return outcomes


def test_each_worker_runs_with_its_thread_limit(pool):
    outcomes = run_all(pool, (report,), (sleep, 0.3))
    pid, threads = outcomes[0].value
    assert outcomes[0].ok and threads == "1"
    assert pid != os.getpid() and outcomes[1].value not in (pid, os.getpid()), "two separate worker processes"


def test_a_failing_task_reports_its_error_and_the_worker_lives_on(pool):
    first = run_all(pool, (fail,), (report,))
    assert not first[0].ok and first[0].error == "ValueError: bad trial"
    pids = {run_all(pool, (report,), (report,))[k].value[0] for k in (0, 1)}
    assert len(pids) == 2 and pool.idle == 2


def test_a_task_past_its_timeout_is_stopped_and_its_worker_replaced(pool):
    started = time.monotonic()
    outcomes = run_all(pool, (sleep, 60), (sleep, 0.1), timeout=2)
    assert time.monotonic() - started < 30
    assert not outcomes[0].ok and "timed out after 2 s" in outcomes[0].error
    assert outcomes[1].ok
    again = run_all(pool, (report,), (report,))
    assert all(o.ok for o in again.values()), "the pool has two working workers again"


def test_a_worker_that_dies_fails_its_task_only(pool):
    outcomes = run_all(pool, (die,), (sleep, 0.5))
    assert not outcomes[0].ok and "worker process died (exit code 3)" in outcomes[0].error
    assert outcomes[1].ok
    assert run_all(pool, (report,))[0].ok


def test_a_warm_call_runs_in_a_fork_of_the_started_forkserver_and_reports_its_error(pool):
    from mlops_framework.errors import MlopsError
    from mlops_framework.workers import call_warm

    assert call_warm(os.getpid) != os.getpid()  # the pool started the forkserver: the sweep's end registers there
    with pytest.raises(MlopsError, match="ValueError: bad trial"):
        call_warm(fail)


def appears(path, deadline_s=60.0):
    deadline = time.monotonic() + deadline_s
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return os.getpid()


def test_a_warm_call_runs_meanwhile_here_while_the_fork_works(pool, tmp_path):
    from mlops_framework.workers import call_warm

    flag = tmp_path / "meanwhile-ran"
    forked = call_warm(appears, str(flag), meanwhile=flag.touch)  # the fork waits for what meanwhile does
    assert forked and forked != os.getpid()


def imported(name):
    import sys

    return name in sys.modules


def test_workers_import_their_preload_when_the_forkserver_was_started_without_it(pool):
    from mlops_framework.workers import start_forkserver

    start_forkserver()  # running already (the pool's, or the command line's early start): keeps its imports
    with WorkerPool(1, threads=1, preload=("colorsys",)) as other:
        assert run_all(other, (imported, "colorsys"))[0].value is True


@pytest.mark.parametrize("overrides, started", [
    (["-m", "hydra/sweeper=mlops_optuna", "model.params.max_depth=range(1,9)"], True),
    (["-m", "hparams_search=mortgage_grid"], True),
    (["-m", "+hparams_search=mortgage_optuna"], True),
    (["-m", "hydra/launcher=mlops_local", "seed=1,2"], True),
    (["-m", "seed=1,2"], False),
    (["-m", "hydra/launcher=basic", "hparams_search=null", "seed=1,2"], False),
])
def test_the_forkserver_starts_before_hydra_only_for_commands_choosing_warm_workers(overrides, started, monkeypatch):
    from mlops_framework import workers

    calls = []
    monkeypatch.setattr(workers, "start_forkserver", lambda *preload: calls.append(preload))
    assert workers.start_forkserver_for(overrides) is started
    assert calls == ([()] if started else [])
