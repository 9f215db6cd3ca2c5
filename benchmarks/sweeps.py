"""Target 5: the framework's sweep against a bare Optuna loop doing the same trials on the same workers.

- framework: the command a user types, 8 trials on 2 warm workers::

    mlops run -m model.params.max_depth=1,...,8 pipeline=train data.weeks=10 \
        hydra/launcher=mlops_local hydra.launcher.n_jobs=2

  Each trial composes its config, loads the rows, encodes, splits, trains (50,000 rows, default model
  params), evaluates, registers and records itself; the sweep then ranks the trials.
- bare loop (:func:`bare_optuna`): one Python process generates the same rows once, one-hot encodes and
  splits them (60/20/20, stratified) once, then an Optuna study with a grid sampler over the same depths
  runs the trials on 2 threads (``study.optimize(n_jobs=2)``), each fit with ``cores // 2`` XGBoost
  threads, scoring validation F1: the same work with the data already in memory and nothing recorded.

Both are timed as whole processes (start-up and imports included), alternating, medians of the rounds.
The ratio, framework / bare, is the framework's per-trial overhead. (It replaces "1 worker / 2 workers",
which 2 cores capped near 1.3x: docs/benchmarks.md.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

from benchmarks.common import REPO, Row, median
from benchmarks.startup import _command


def trial_overrides(sizes) -> list[str]:
    depths = ",".join(str(d) for d in range(1, sizes.sweep_trials + 1))
    overrides = [f"model.params.max_depth={depths}", "pipeline=train", f"data.weeks={sizes.sweep_weeks}",
                 f"data.rows_per_week={sizes.sweep_rows_per_week}"]
    if sizes.n_estimators:  # --quick: tiny trials
        overrides.append(f"model.params.n_estimators={sizes.n_estimators}")
    return overrides


def _sweep(ctx, n_jobs: int) -> tuple[float, str]:
    """Wall seconds of the command and the error line if it failed."""
    home = ctx.scratch(f"sweep-home-{n_jobs}")
    shutil.rmtree(home, ignore_errors=True)
    command = [*_command(), "run", "-m", *trial_overrides(ctx.sizes), "hydra/launcher=mlops_local",
               f"hydra.launcher.n_jobs={n_jobs}"]
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=REPO, env={**os.environ, "MLOPS_HOME": str(home)},
                          capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - started
    shutil.rmtree(home, ignore_errors=True)
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        return seconds, (lines[-1] if lines else f"exit {proc.returncode}")[:200]
    return seconds, ""


def bare_optuna(trials: int, weeks: int, rows_per_week: int, n_estimators: int | None, workers: int = 2) -> dict:
    """The bare loop (run in a child process; its wall time is measured from outside)."""
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
        depth = trial.suggest_int("max_depth", 1, trials)
        model = xgboost.XGBClassifier(**params, max_depth=depth, n_jobs=threads).fit(X_train, y_train)
        return f1_score(y_val, model.predict(X_val), average="macro")

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.GridSampler({"max_depth": list(range(1, trials + 1))}))
    study.optimize(objective, n_trials=trials, n_jobs=workers)
    return {"best": study.best_params, "trials": len(study.trials)}


def run(ctx) -> list[Row]:
    from benchmarks.common import child

    sizes = ctx.sizes
    rounds = min(2, sizes.repeats)
    framework, bare = [], []
    for i in range(rounds):
        ctx.log(f"  sweep of {sizes.sweep_trials} trials on 2 workers: mlops run -m, then the bare Optuna loop "
                f"(round {i + 1} of {rounds})")
        seconds, error = _sweep(ctx, 2)
        if error:
            return [Row("sweeps", "mlops run -m / bare Optuna loop", None, "<=", 1.15, status="N/A",
                        detail=f"not available: {error}")]
        framework.append(seconds)
        result = child("benchmarks.sweeps:bare_optuna", trials=sizes.sweep_trials, weeks=sizes.sweep_weeks,
                       rows_per_week=sizes.sweep_rows_per_week, n_estimators=sizes.n_estimators)
        bare.append(result["child_s"])
    f, b = median(framework), median(bare)
    rows = [Row("sweeps", f"{sizes.sweep_trials} trials, 2 workers: mlops run -m / bare Optuna loop", f / b, "<=", 1.15,
                detail=f"framework {f:.1f} s, bare loop {b:.1f} s (whole processes, medians of {rounds}; runs: "
                       f"{', '.join(f'{x:.1f}/{y:.1f}' for x, y in zip(framework, bare))}); per trial the framework "
                       f"spends {(f - b) / sizes.sweep_trials:.2f} s more")]
    return rows

