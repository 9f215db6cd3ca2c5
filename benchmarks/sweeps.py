"""Target 5: a sweep of small trials on 2 workers against the same sweep on 1 worker.

Both are the real command, differing only in ``hydra.launcher.n_jobs``::

    mlops run -m model.params.max_depth=1,...,8 pipeline=train data.weeks=10 \
        hydra/launcher=mlops_local hydra.launcher.n_jobs=N

With ``n_jobs=1`` the local launcher runs the trials in the command's own process, one after the other,
each XGBoost fit on all cores (as Hydra's basic launcher does); with 2, on two warm worker processes with
``cores // 2`` threads each. Each trial trains (50,000 rows, default model params), evaluates and registers
a version. The two runs alternate (serial first; twice in the full run, medians), each with a fresh
``MLOPS_HOME``. If the command fails the row says "not available" and the other targets are unaffected.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from benchmarks.common import REPO, Row, median
from benchmarks.startup import _command


def trial_overrides(sizes) -> list[str]:
    depths = ",".join(str(d) for d in range(1, sizes.sweep_trials + 1))
    overrides = [f"model.params.max_depth={depths}", "pipeline=train", f"data.weeks={sizes.sweep_weeks}",
                 f"data.rows_per_week={sizes.sweep_rows_per_week}"]
    if sizes.n_estimators:  # --quick: tiny trials
        overrides.append(f"model.params.n_estimators={sizes.n_estimators}")
    return overrides


def _sweep(ctx, n_jobs: int) -> tuple[float, list[float], str]:
    """Wall seconds of the command, the seconds between one trial's start and the next one's in the same
    process (from the trials' ``trial.json``; each process's first interval, which may include imports,
    left out), and the error line if it failed."""
    home = ctx.scratch(f"sweep-home-{n_jobs}")
    shutil.rmtree(home, ignore_errors=True)
    command = [*_command(), "run", "-m", *trial_overrides(ctx.sizes), "hydra/launcher=mlops_local",
               f"hydra.launcher.n_jobs={n_jobs}"]
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=REPO, env={**os.environ, "MLOPS_HOME": str(home)},
                          capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - started
    starts = {}
    for path in Path(home).glob("multiruns/*/*/trial.json"):
        record = json.loads(path.read_text())
        starts.setdefault(record["pid"], []).append(record["start_time"])
    intervals = [b - a for times in starts.values() for a, b in list(zip(sorted(times), sorted(times)[1:]))[1:]]
    shutil.rmtree(home, ignore_errors=True)
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        return seconds, intervals, (lines[-1] if lines else f"exit {proc.returncode}")[:200]
    return seconds, intervals, ""


def run(ctx) -> list[Row]:
    trials = ctx.sizes.sweep_trials
    rounds = min(2, ctx.sizes.repeats)
    measure = f"{trials} trials: 1 worker / 2 workers"
    serial, parallel, serial_cadence, worker_cadence = [], [], [], []
    for i in range(rounds):
        ctx.log(f"  sweep of {trials} trials on 1 worker, then on 2 (round {i + 1} of {rounds})")
        for n_jobs, times, cadence in ((1, serial, serial_cadence), (2, parallel, worker_cadence)):
            seconds, intervals, error = _sweep(ctx, n_jobs)
            if error:
                return [Row("sweeps", measure, None, ">=", 1.6, status="N/A", detail=f"not available: {error}")]
            times.append(seconds)
            cadence.extend(intervals)
    s, p = median(serial), median(parallel)
    # Once warm, the serial run starts a trial every `a` seconds and each of the 2 workers one every `b`:
    # 2 workers finish trials at most 2a/b times as fast, whatever start-up, imports and the leaderboard cost.
    detail = (f"serial {s:.1f} s, 2 workers {p:.1f} s (medians of {rounds}; whole command, start-up included; "
              f"runs: {', '.join(f'{x:.1f}/{y:.1f}' for x, y in zip(serial, parallel))})")
    if serial_cadence and worker_cadence:  # too few trials (--quick) leave no warm interval
        a, b = median(serial_cadence), median(worker_cadence)
        detail += (f"; warm, a trial every {a:.2f} s serially and every {b:.2f} s on each worker, so the trials "
                   f"alone allow at most {2 * a / b:.2f}x")
    return [Row("sweeps", measure, s / p, ">=", 1.6, detail=detail)]
