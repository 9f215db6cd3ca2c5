"""What every benchmark shares: sizes, the cached data, the benchmark model, subprocess runs, results."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GIB = 1 << 30
MODEL_NAME = "BENCH_XGB"


class BenchError(Exception):
    """A measurement could not be made (a child process failed); its target is reported as an error."""


@dataclass(frozen=True)
class Sizes:
    score_weeks: int  # the big scoring input: score_weeks x rows_per_week rows
    small_weeks: int  # the small one (peak RSS comparison, output check against the notebook way)
    rows_per_week: int
    repeats: int  # runs of each scoring / warehouse measurement (medians are reported)
    train_weeks: int  # training data: train_weeks x train_rows_per_week rows
    train_rows_per_week: int
    train_repeats: int
    startup_repeats: int
    sweep_trials: int
    sweep_weeks: int
    sweep_rows_per_week: int
    n_estimators: int | None = None  # None: conf/model/xgboost.yaml's; --quick trains small models
    big_train_trees: int | None = None  # the training commands on score_rows rows (None: n_estimators)
    big_train_rounds: int = 2  # rounds of those commands (each contender once a round)

    @property
    def score_rows(self) -> int:
        return self.score_weeks * self.rows_per_week

    @property
    def small_rows(self) -> int:
        return self.small_weeks * self.rows_per_week

    @property
    def train_rows(self) -> int:
        return self.train_weeks * self.train_rows_per_week


# 369,245 rows (the demo notebook's size) = 5 weeks x 73,849.
# 10M-row training: 50 trees, one round (200 trees and two rounds of the bare script, which needs 9 GiB,
# would take over an hour on 2 cores).
FULL = Sizes(score_weeks=100, small_weeks=10, rows_per_week=100_000, repeats=3, train_weeks=5,
             train_rows_per_week=73_849, train_repeats=5, startup_repeats=7, sweep_trials=8,
             sweep_weeks=10, sweep_rows_per_week=5_000, big_train_trees=50, big_train_rounds=1)
QUICK = Sizes(score_weeks=2, small_weeks=2, rows_per_week=20_000, repeats=1, train_weeks=2,
              train_rows_per_week=5_000, train_repeats=1, startup_repeats=2, sweep_trials=2,
              sweep_weeks=4, sweep_rows_per_week=300, n_estimators=20)


@dataclass
class Row:
    """One line of the table: ``value`` of ``measure`` against ``goal`` (``op`` is >= or <=)."""

    target: str
    measure: str
    value: float | None
    op: str
    goal: float
    unit: str = "x"
    detail: str = ""
    passed: bool | None = field(default=None)
    status: str = ""

    def __post_init__(self) -> None:
        if self.status:
            return
        if self.value is None:
            self.status = "N/A"
            return
        self.passed = {">=": self.value >= self.goal, "<=": self.value <= self.goal,
                       "<": self.value < self.goal}[self.op]
        self.status = "PASS" if self.passed else "FAIL"

    def to_dict(self) -> dict:
        return asdict(self)


def bench_dir() -> Path:
    """Where data and scratch output live: ``$MLOPS_BENCH_DIR`` or ``/tmp/mlops-bench``. Never committed."""
    path = Path(os.environ.get("MLOPS_BENCH_DIR") or "/tmp/mlops-bench").expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def median(values) -> float:
    return float(statistics.median(values))


def child(function: str, timeout: float = 900, **kwargs) -> dict:
    """Run ``module:function(**kwargs)`` in a fresh Python process; its dict result plus its peak RSS
    (``peak_rss``, bytes, from the child's own ``getrusage``) and wall time (``child_s``)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.child", function, json.dumps(kwargs)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
        raise BenchError(f"{function} failed (exit {proc.returncode}):\n{tail}")
    result = json.loads(lines[-1])
    result["child_s"] = time.perf_counter() - started
    return result


def user_env(base: dict | None = None) -> dict:
    """The environment of a command as a user runs it: Python's bytecode cache on, as after ``pip install``
    (which compiles it). A session environment with ``PYTHONDONTWRITEBYTECODE=1`` makes every command
    compile the framework's modules again (0.1-0.2 s a command, measured); the cache is kept under the
    bench directory (``PYTHONPYCACHEPREFIX``), never in the repository."""
    env = {**(os.environ if base is None else base), "PYTHONPYCACHEPREFIX": str(bench_dir() / "pycache")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def command(argv: list[str], timeout: float = 900) -> dict:
    """Run a command as a user types it, in its own process (``user_env``): wall time and the peak RSS of
    that process (``os.wait4``'s rusage, imports and all). ``mlops`` is the console script next to this Python."""
    if argv[0] == "mlops":
        argv = [str(Path(sys.executable).with_name("mlops")), *argv[1:]]
    started = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=user_env())
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise BenchError(f"{' '.join(argv[:4])} ... ran past {timeout:.0f} s") from None
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        tail = "\n".join((stderr or stdout).strip().splitlines()[-8:])
        raise BenchError(f"{' '.join(argv[:4])} ... failed (exit {proc.returncode}):\n{tail}")
    return {"seconds": seconds, "stdout": stdout}


def measure_command(argv: list[str]) -> dict:
    """``command(argv)`` and its peak RSS; run it in a fresh process (``child``), so that the peak of
    RUSAGE_CHILDREN is this command's alone."""
    import resource

    result = command(argv)
    result["command_peak_rss"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return result


# ---------------------------------------------------------------------- run in children
def make_parquet(path: str, weeks: int, rows_per_week: int, seed: int) -> dict:
    """Generate synthetic weeks straight into one Parquet file (one row group per week), atomically."""
    import pyarrow.parquet as pq

    from mlops_local import synthetic

    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    started = time.perf_counter()
    writer = None
    try:
        for table in synthetic.generate(weeks=weeks, rows_per_week=rows_per_week, seed=seed):
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table, row_group_size=rows_per_week)
        writer.close()
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return {"seconds": time.perf_counter() - started}


def train_overrides(home: str, sizes: dict) -> list[str]:
    """The config of the benchmark model: the defaults (conf/model/xgboost.yaml) on train_rows rows."""
    overrides = [
        f"paths.home={home}",
        f"data.weeks={sizes['train_weeks']}",
        f"data.rows_per_week={sizes['train_rows_per_week']}",
        f"registry.model_name={MODEL_NAME}",
        "pipeline=train",
    ]
    if sizes.get("n_estimators"):
        overrides.append(f"model.params.n_estimators={sizes['n_estimators']}")
    return overrides


def build_run(overrides: list[str]):
    """A ``Run`` composed exactly as ``mlops run OVERRIDES`` would compose it."""
    from mlops_framework import config
    from mlops_framework.cli import _components
    from mlops_framework.pipeline import build_run as _build_run

    components = _components()
    cfg = config.compose(overrides, components)
    config.check(cfg, components)
    return _build_run(config.resolved(cfg), components)


def register_model(home: str, sizes: dict) -> dict:
    """Train and register the benchmark model with the framework's own stages (pipeline=train)."""
    run = build_run(train_overrides(home, sizes))
    started = time.perf_counter()
    run.backend.execute(run)
    return {"version": run.results["version"]["version_name"], "seconds": time.perf_counter() - started,
            "features": len(run.results["contract"].feature_names)}


def load_model(home: str, version: str):
    """The registered benchmark model, loaded as scoring loads it."""
    from mlops_local.registry import LocalRegistry

    return LocalRegistry(Path(home) / "registry").load_model(MODEL_NAME, version)


# ---------------------------------------------------------------------- run in the parent
class Context:
    """Sizes, the data directory, and the data and model each benchmark asks for (made once, cached)."""

    def __init__(self, sizes: Sizes, log=print):
        self.sizes = sizes
        self.dir = bench_dir()
        self.log = log
        self._model: dict | None = None

    def data(self, weeks: int, seed: int = 1) -> Path:
        """A cached Parquet file of ``weeks`` x ``rows_per_week`` synthetic rows (scoring seed 1)."""
        from mlops_local.synthetic import GENERATOR_VERSION

        rows = self.sizes.rows_per_week
        path = self.dir / "data" / f"synthetic-v{GENERATOR_VERSION}-seed{seed}-{weeks}x{rows}.parquet"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            self.log(f"  generating {weeks * rows:,} rows into {path} (once)")
            child("benchmarks.common:make_parquet", path=str(path), weeks=weeks, rows_per_week=rows, seed=seed)
        return path

    def model(self) -> dict:
        """Train and register the benchmark model once per invocation: {home, version, features}."""
        if self._model is None:
            import shutil

            home = self.dir / "home"
            shutil.rmtree(home, ignore_errors=True)
            self.log(f"  training the benchmark model on {self.sizes.train_rows:,} rows (framework stages)")
            result = child("benchmarks.common:register_model", home=str(home), sizes=asdict(self.sizes))
            self._model = {"home": str(home), "version": result["version"], "features": result["features"]}
        return self._model

    def scratch(self, name: str) -> Path:
        path = self.dir / "out" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path
