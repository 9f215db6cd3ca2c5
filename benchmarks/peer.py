"""The peer that users would pick instead of the framework for drift reports: Evidently's data-drift report.

Evidently is installed for the benchmark only, in a virtual environment of its own (it pins pandas < 3
and many packages the framework does not need). Point ``MLOPS_BENCH_PEER_PYTHON`` at that
environment's Python::

    python3.11 -m venv /tmp/evidently && /tmp/evidently/bin/pip install evidently "pandas<3" pyarrow
    MLOPS_BENCH_PEER_PYTHON=/tmp/evidently/bin/python python -m benchmarks --only monitoring

:func:`evidently_drift` runs in that Python: it reads the same Parquet rows and columns the monitor
watches, splits them into the reference (the baseline weeks) and the current rows, and builds Evidently's
``DataDriftPreset`` report, as its documentation shows. Its whole process is timed from outside.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

PEER_ENV = "MLOPS_BENCH_PEER_PYTHON"


def evidently_drift(data: str, columns: list[str], baseline_weeks: int) -> dict:
    """Evidently's data-drift report over ``columns``: reference WEEK <= baseline_weeks, current the rest."""
    import pyarrow.parquet as pq
    from evidently import Report
    from evidently.presets import DataDriftPreset

    frame = pq.read_table(data, columns=[*columns, "WEEK"]).to_pandas()
    reference = frame[frame["WEEK"] <= baseline_weeks][columns]
    current = frame[frame["WEEK"] > baseline_weeks][columns]
    report = Report([DataDriftPreset()]).run(current_data=current, reference_data=reference)
    drifted = [m for m in report.dict()["metrics"] if str(m.get("metric_name", "")).startswith("ValueDrift(")]
    return {"rows": len(frame), "columns_checked": len(drifted)}


def run_peer(data: str, columns: list[str], baseline_weeks: int, timeout: float = 1800) -> dict | None:
    """Evidently's report in its own Python, timed as a whole process; None when no peer Python is set."""
    python = os.environ.get(PEER_ENV)
    if not python:
        return None
    code = ("import json, resource, sys; from benchmarks.peer import evidently_drift; "
            "r = evidently_drift(**json.loads(sys.argv[1])); "
            "r['peak_rss'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024; print(json.dumps(r))")
    repo = Path(__file__).resolve().parents[1]
    started = time.perf_counter()
    proc = subprocess.run([python, "-c", code, json.dumps({"data": data, "columns": columns,
                                                            "baseline_weeks": baseline_weeks})],
                          cwd=repo, env={**os.environ, "PYTHONPATH": str(repo)}, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"Evidently's report failed (exit {proc.returncode}): {tail}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["seconds"] = time.perf_counter() - started
    return result


if __name__ == "__main__":
    print(run_peer(sys.argv[1], sys.argv[2].split(","), int(sys.argv[3])))
