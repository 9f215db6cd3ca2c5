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


def _sweep(ctx, n_jobs: int) -> tuple[float, float, str]:
    """Wall seconds of the command, seconds from the first trial's start to the last one's end (from the
    trials' ``trial.json``), and the error line if it failed."""
    home = ctx.scratch(f"sweep-home-{n_jobs}")
    shutil.rmtree(home, ignore_errors=True)
    command = [*_command(), "run", "-m", *trial_overrides(ctx.sizes), "hydra/launcher=mlops_local",
               f"hydra.launcher.n_jobs={n_jobs}"]
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=REPO, env={**os.environ, "MLOPS_HOME": str(home)},
                          capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - started
    records = [json.loads(path.read_text()) for path in Path(home).glob("multiruns/*/*/trial.json")]
    trials = (max(r["start_time"] + r["seconds"] for r in records) - min(r["start_time"] for r in records)
              if records else float("nan"))
    shutil.rmtree(home, ignore_errors=True)
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        return seconds, trials, (lines[-1] if lines else f"exit {proc.returncode}")[:200]
    return seconds, trials, ""


def run(ctx) -> list[Row]:
    trials = ctx.sizes.sweep_trials
    rounds = min(2, ctx.sizes.repeats)
    measure = f"{trials} trials: 1 worker / 2 workers"
    serial, parallel, serial_trials, parallel_trials = [], [], [], []
    for i in range(rounds):
        ctx.log(f"  sweep of {trials} trials on 1 worker, then on 2 (round {i + 1} of {rounds})")
        for n_jobs, times, phases in ((1, serial, serial_trials), (2, parallel, parallel_trials)):
            seconds, phase, error = _sweep(ctx, n_jobs)
            if error:
                return [Row("sweeps", measure, None, ">=", 1.6, status="N/A", detail=f"not available: {error}")]
            times.append(seconds)
            phases.append(phase)
    s, p = median(serial), median(parallel)
    st, pt = median(serial_trials), median(parallel_trials)
    # The trials alone (first start to last end) show what parallel workers can gain at most once
    # start-up, config composition, imports and the leaderboard are left out.
    return [Row("sweeps", measure, s / p, ">=", 1.6,
                detail=f"serial {s:.1f} s, 2 workers {p:.1f} s (medians of {rounds}; whole command, start-up "
                       f"included; runs: {', '.join(f'{a:.1f}/{b:.1f}' for a, b in zip(serial, parallel))}); "
                       f"the trials alone: serial {st:.1f} s, 2 workers {pt:.1f} s ({st / pt:.2f}x)")]
