"""Target 3: ``mlops --help`` and ``mlops plan`` wall time, each a fresh process, median of repeats.

One unmeasured run of each comes first (file-system cache, Python's bytecode cache). Commands run with
the bytecode cache on, as after ``pip install`` (``common.user_env``); the detail also gives the median
of the same command as this machine's sessions run it (``PYTHONDONTWRITEBYTECODE=1``, no cache of the
framework's own modules: every run compiles them), measured alternately with the row's runs. Heavy
modules imported by each command are listed in the detail (that none are is a test, not this
benchmark's business).
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import REPO, Row, median, user_env

HEAVY = ("xgboost", "sklearn", "pandas", "scipy", "snowflake.connector", "snowflake.snowpark", "snowflake.ml",
         "duckdb", "pyarrow")  # the bare "snowflake" namespace is preloaded by a .pth file: not counted
_PROBE = (
    "import sys; from mlops_framework.cli import main; main(sys.argv[1:]); "
    f"print('HEAVY=' + ','.join(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)"
)


def _command() -> list[str]:
    script = Path(sys.executable).parent / "mlops"
    return [str(script)] if script.exists() else [sys.executable, "-m", "mlops_framework.cli"]


def _time(args: list[str], env: dict, cwd: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one run; CPU time says how much of the wall time a busy machine added."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=120)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return seconds, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def _heavy(args: list[str], env: dict, cwd: str) -> str:
    proc = subprocess.run([sys.executable, "-c", _PROBE, *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=120)
    found = [line[6:] for line in proc.stderr.splitlines() if line.startswith("HEAVY=")]
    return (found[-1] or "none") if found else "?"


def run(ctx) -> list[Row]:
    home = ctx.scratch("startup-home")
    env = user_env({**os.environ, "MLOPS_HOME": str(home)})
    uncached = {**env, "PYTHONDONTWRITEBYTECODE": "1"}  # this machine's sessions: the framework compiled each run
    uncached.pop("PYTHONPYCACHEPREFIX")
    cwd = str(REPO)
    rows = []
    for args in (["--help"], ["plan"]):
        command = [*_command(), *args]
        _time(command, env, cwd)  # warm-up: the bytecode cache is written
        runs, compiling = [], []
        for _ in range(ctx.sizes.startup_repeats):
            runs.append(_time(command, env, cwd))
            compiling.append(_time(command, uncached, cwd)[0])
        times = [wall for wall, _ in runs]
        ctx.log(f"  mlops {' '.join(args)}: " + ", ".join(f"{t:.2f}" for t in times) + " s")
        rows.append(Row(
            "startup", f"mlops {' '.join(args)}, median of {len(times)}", median(times), "<", 0.5, unit="s",
            detail=f"min {min(times):.2f} s, max {max(times):.2f} s, CPU time median {median(c for _, c in runs):.2f} s; "
                   f"without the bytecode cache (PYTHONDONTWRITEBYTECODE=1) {median(compiling):.2f} s; "
                   f"heavy modules imported: {_heavy(args, env, cwd)}",
        ))
    return rows
