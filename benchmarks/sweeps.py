"""Target 5: the framework's sweep against a bare Optuna loop doing the same trials on the same workers.

- framework: the command a user types, an Optuna search of 8 trials on 2 warm workers::

    mlops run -m hydra/sweeper=mlops_optuna hydra.sweeper.sampler=random hydra.sweeper.seed=42 \
        hydra.sweeper.n_trials=8 hydra.sweeper.n_jobs=2 'model.params.max_depth=range(1,9)' \
        pipeline=train data.weeks=10 data.rows_per_week=5000

  Each trial composes its config (a worker's first trial starts from the composition the sweep's own
  process made to check the first trial, its later trials copy it and apply their values:
  ``mlops_framework.trial_composition``), loads the rows, encodes, splits (a worker's later
  trials reuse what its first one read, encoded and split: ``mlops_framework.shared_data``), trains (50,000 rows, default model
  params), evaluates validation and holdout and keeps its model; the sweep records every trial, then ranks
  them, registers the best one's model, aliases it and writes the leaderboard and its chart.
- bare loop (:func:`bare_optuna`): one Python process generates the same rows once, one-hot encodes and
  splits them (60/20/20, stratified) once, then an Optuna study with the same sampler (random, seed 42)
  over the same depths runs the trials on 2 threads (asked one by one, 2 at a time), each fit with
  ``cores // 2`` XGBoost threads, scoring validation F1: the same trials with the data already in memory and
  nothing recorded. The detail line says whether both ran the same depths.

Both are timed as whole processes (start-up and imports included), alternating, medians of the rounds.
The ratio, framework / bare, is the framework's per-trial overhead. (It replaces "1 worker / 2 workers",
which 2 cores capped near 1.3x: docs/benchmarks.md.)
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import time

from benchmarks.common import REPO, Row, median, user_env
from benchmarks.startup import _command

SEED = 42


def trial_overrides(sizes) -> list[str]:
    overrides = ["hydra/sweeper=mlops_optuna", "hydra.sweeper.sampler=random", f"hydra.sweeper.seed={SEED}",
                 f"hydra.sweeper.n_trials={sizes.sweep_trials}", f"model.params.max_depth=range(1,{sizes.sweep_trials + 1})",
                 "pipeline=train", f"data.weeks={sizes.sweep_weeks}", f"data.rows_per_week={sizes.sweep_rows_per_week}"]
    if sizes.n_estimators:  # --quick: tiny trials
        overrides.append(f"model.params.n_estimators={sizes.n_estimators}")
    return overrides


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process's children that have ended and been reaped."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _adopt_orphans(on: bool = True) -> bool:
    """Make this process the reaper of its descendants' orphans (Linux), so that the CPU time of a sweep's
    forkserver and workers, which outlive the command by a moment, is counted (``on=False``: stop). False
    where unavailable."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl(36, int(on), 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def _reap_orphans(deadline_s: float = 30.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(0.05)


def _sweep(ctx, n_jobs: int) -> tuple[float, str, list, float]:
    """Wall seconds of the command, the error line if it failed, the depths its trials ran and the CPU
    seconds of its whole process tree (forkserver and workers included)."""
    home = ctx.scratch(f"sweep-home-{n_jobs}")
    shutil.rmtree(home, ignore_errors=True)
    command = [*_command(), "run", "-m", *trial_overrides(ctx.sizes), f"hydra.sweeper.n_jobs={n_jobs}"]
    cpu = _cpu_seconds()
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=REPO, env=user_env({**os.environ, "MLOPS_HOME": str(home)}),
                          capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - started
    _reap_orphans()
    cpu = _cpu_seconds() - cpu
    depths = sorted(json.loads(path.read_text())["optuna"]["params"]["model.params.max_depth"]
                    for path in home.glob("multiruns/*/*/trial.json"))
    shutil.rmtree(home, ignore_errors=True)
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        return seconds, (lines[-1] if lines else f"exit {proc.returncode}")[:200], depths, cpu
    return seconds, "", depths, cpu


def bare_optuna(trials: int, weeks: int, rows_per_week: int, n_estimators: int | None, workers: int = 2) -> dict:
    """The bare loop (run in a child process; its wall time is measured from outside)."""
    from concurrent.futures import ThreadPoolExecutor

    import optuna
    import pandas as pd
    import pyarrow as pa
    import xgboost
    from sklearn.metrics import f1_score
    from sklearn.model_selection import train_test_split

    from mlops_local import synthetic

    frame = pa.concat_tables(synthetic.generate(weeks=weeks, rows_per_week=rows_per_week, seed=42)).to_pandas()
    X = pd.get_dummies(frame[["APPLICANT_INCOME_000S", "LOAN_AMOUNT_000S", "LOAN_TYPE_NAME", "LOAN_PURPOSE_NAME",
                              "COUNTY_NAME"]], dtype="float32")
    y = frame["MORTGAGERESPONSE"].to_numpy()
    X_rest, _, y_rest, _ = train_test_split(X, y, test_size=0.2, random_state=42, stratify=y)
    X_train, X_val, y_train, y_val = train_test_split(X_rest, y_rest, test_size=0.25, random_state=42, stratify=y_rest)
    threads = max(1, (os.cpu_count() or 1) // workers)
    params = {"n_estimators": n_estimators or 200, "learning_rate": 0.1, "tree_method": "hist", "random_state": 42}

    def objective(trial):
        depth = trial.params["max_depth"]
        model = xgboost.XGBClassifier(**params, max_depth=depth, n_jobs=threads).fit(X_train, y_train)
        return f1_score(y_val, model.predict(X_val), average="macro")

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=SEED))
    # asked one by one as the sweeper asks (study.optimize(n_jobs=2) would reseed the sampler), run 2 at a time
    asked = [study.ask({"max_depth": optuna.distributions.IntDistribution(1, trials)}) for _ in range(trials)]
    with ThreadPoolExecutor(workers) as pool:
        for trial, value in zip(asked, pool.map(objective, asked)):
            study.tell(trial, value)
    return {"best": study.best_params, "trials": len(study.trials),
            "depths": sorted(trial.params["max_depth"] for trial in study.trials)}


def run(ctx) -> list[Row]:
    from benchmarks.common import child

    sizes = ctx.sizes
    rounds = min(2, sizes.repeats)
    counted = _adopt_orphans()
    framework, bare, framework_cpu, bare_cpu = [], [], [], []
    for i in range(rounds):
        ctx.log(f"  Optuna search of {sizes.sweep_trials} trials on 2 workers: mlops run -m, then the bare Optuna loop "
                f"(round {i + 1} of {rounds})")
        seconds, error, depths, cpu = _sweep(ctx, 2)
        if error:
            return [Row("sweeps", "mlops run -m / bare Optuna loop", None, "<=", 1.15, status="N/A",
                        detail=f"not available: {error}")]
        framework.append(seconds)
        framework_cpu.append(cpu)
        cpu = _cpu_seconds()
        result = child("benchmarks.sweeps:bare_optuna", trials=sizes.sweep_trials, weeks=sizes.sweep_weeks,
                       rows_per_week=sizes.sweep_rows_per_week, n_estimators=sizes.n_estimators)
        bare_cpu.append(_cpu_seconds() - cpu)
        bare.append(result["child_s"])
        same = "the same depths" if depths == result["depths"] else \
            f"DIFFERENT depths (framework {depths}, bare {result['depths']})"
    f, b = median(framework), median(bare)
    if counted:
        _adopt_orphans(False)
    fc, bc = median(framework_cpu), median(bare_cpu)
    cpu_line = (f"; CPU seconds of the whole process trees, which a busy machine inflates less: framework {fc:.1f}, "
                f"bare loop {bc:.1f} ({fc / bc:.2f}x)" if counted else "")
    rows = [Row("sweeps", f"{sizes.sweep_trials} trials, 2 workers: mlops run -m / bare Optuna loop", f / b, "<=", 1.15,
                detail=f"framework {f:.1f} s, bare loop {b:.1f} s (whole processes, medians of {rounds}; runs: "
                       f"{', '.join(f'{x:.1f}/{y:.1f}' for x, y in zip(framework, bare))}); per trial the framework "
                       f"spends {(f - b) / sizes.sweep_trials:.2f} s more; both ran {same}{cpu_line}")]
    return rows
