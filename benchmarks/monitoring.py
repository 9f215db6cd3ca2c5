"""Target 6: monitoring a big predictions table, against scoring the same rows and against a peer, in one run.

Every contender is the command a user types, in its own process, wall time and peak RSS of the whole
process (start-up, imports, the report stage and exit included), with the defaults (the DuckDB sink) and
Python's bytecode cache on, as after ``pip install`` (``common.user_env``):

- score: ``mlops run pipeline=score data=parquet data.path=BIG data.partition_by=WEEK scoring.version=v1``
  into the default DuckDB table, once.
- monitor: ``mlops run pipeline=monitor`` over that table (the default baseline ``WEEK <= 5``); the median
  of ``repeats`` runs, each a first run (the monitor tables are emptied before each).
- incremental: one more week is scored into the table (its own WEEK partition), then the same monitor
  command runs again and computes only the new week's window; median of ``repeats`` runs, each run's
  recorded rows removed before the next; then the same command with nothing new (its fixed cost).
- peer: Evidently's ``DataDriftPreset`` report (``benchmarks/peer.py``) on the same rows and the same
  columns the monitor watches (from the Parquet file: reference WEEK <= 5, current the rest), in its
  own Python (``MLOPS_BENCH_PEER_PYTHON``); skipped, saying so, when that is not set.

The breakdown of each monitor run (the stage's phases, from ``monitor-1.json`` of the run) is in the
details, labelled so. Goals (issues 14 and 17): monitor peak RSS < 1 GiB; monitor <= half the score
command's time; incremental <= 10% of the first; Evidently's time >= 5x the monitor's, the monitor's
peak RSS < a quarter of Evidently's. ``--score-weeks`` sets the size (FULL: 100 weeks x 100,000 rows).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from pathlib import Path

from benchmarks.common import GIB, MODEL_NAME, Row, child, median
from benchmarks.peer import PEER_ENV, run_peer

MONITOR_TABLES = ("MONITOR_PERFORMANCE", "MONITOR_DRIFT", "MONITOR_ALERTS", "MONITOR_BASELINES")


# ---------------------------------------------------------------------- children
def next_week(data: str, out: str, weeks: int) -> dict:
    """Week 1 of ``data`` moved to week ``weeks + 1`` (new ids and times): one more week of applications."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.ParquetFile(data).read_row_group(0)
    shift = dt.timedelta(weeks=weeks)
    columns = {name: table.column(name) for name in table.column_names}
    columns["WEEK"] = pc.add(columns["WEEK"], pa.scalar(weeks, columns["WEEK"].type))
    columns["LOAN_ID"] = pc.add(columns["LOAN_ID"], pa.scalar(10 ** 12, pa.int64()))
    columns["TS"] = pc.add(columns["TS"], pa.scalar(shift, pa.duration("us")))
    columns["WEEK_START_DATE"] = pc.add(columns["WEEK_START_DATE"], pa.scalar(shift, pa.duration("s"))).cast(pa.date32())
    pq.write_table(pa.table(columns, schema=table.schema), out)
    return {"rows": table.num_rows}


def forget_monitor_runs(warehouse: str, since: str) -> dict:
    """Delete what monitor runs recorded at or after ``since`` (UTC), so the next run repeats the same work."""
    import duckdb

    deleted = 0
    with duckdb.connect(warehouse) as con:
        tables = {row[0] for row in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        for table in MONITOR_TABLES:
            if table in tables:
                deleted += con.execute(f"DELETE FROM {table} WHERE MONITORED_AT >= ?",
                                       [dt.datetime.fromisoformat(since)]).fetchone()[0]
    return {"deleted": deleted}


# ---------------------------------------------------------------------- parent
def _mlops(*overrides: str) -> list[str]:
    return ["mlops", "run", *overrides]


def _measure(argv: list[str]) -> dict:
    return child("benchmarks.common:measure_command", argv=argv)


def _last_monitor(home: Path) -> dict:
    """``monitor-1.json`` of the newest run under ``home``: the monitor's result and its phase timings."""
    runs = sorted((home / "runs").glob("*/monitor-1.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(runs[-1].read_text()) if runs else {}


def _phases(result: dict) -> str:
    seconds = result.get("seconds") or {}
    return ", ".join(f"{name} {value:.2f}" for name, value in seconds.items()) + " s" if seconds else "not recorded"


def _runs(results: list[dict], digits: int) -> str:
    return ", ".join(f"{r['seconds']:.{digits}f}" for r in results)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None).isoformat()


def run(ctx) -> list[Row]:
    sizes = ctx.sizes
    big = ctx.data(sizes.score_weeks)
    model = ctx.model()
    home = ctx.scratch("monitor-home")
    shutil.rmtree(home, ignore_errors=True)
    shutil.copytree(model["home"], home)
    for leftover in ("warehouse.duckdb", "warehouse.duckdb.wal"):
        (home / leftover).unlink(missing_ok=True)
    warehouse = str(home / "warehouse.duckdb")
    common = [f"paths.home={home}", f"registry.model_name={MODEL_NAME}"]
    score = ["pipeline=score", "data=parquet", "data.partition_by=WEEK", f"scoring.version={model['version']}", *common]
    monitor = _mlops("pipeline=monitor", *common)
    n = sizes.score_rows
    repeats = max(sizes.repeats, 1)

    ctx.log(f"  scoring {n:,} rows into the warehouse: mlops run pipeline=score")
    scored = _measure(_mlops(*score, f"data.path={big}"))
    first, first_runs = [], []
    for i in range(repeats):
        ctx.log(f"  monitoring them: mlops run pipeline=monitor, round {i + 1} of {repeats}")
        since = _now()
        first.append(_measure(monitor))
        first_runs.append(_last_monitor(home))
        if i < repeats - 1:
            child("benchmarks.monitoring:forget_monitor_runs", warehouse=warehouse, since=since)
    extra = ctx.scratch("next-week.parquet")
    week = child("benchmarks.monitoring:next_week", data=str(big), out=str(extra), weeks=sizes.score_weeks)
    ctx.log(f"  scoring one more week ({week['rows']:,} rows), monitoring again")
    _measure(_mlops(*score, f"data.path={extra}"))
    again, again_runs = [], []
    for i in range(repeats):
        since = _now()
        again.append(_measure(monitor))
        again_runs.append(_last_monitor(home))
        if i < repeats - 1:
            child("benchmarks.monitoring:forget_monitor_runs", warehouse=warehouse, since=since)
    ctx.log("  monitoring again with nothing new (the command's fixed cost)")
    idle = [_measure(monitor) for _ in range(repeats)]
    os.environ.get("MLOPS_BENCH_KEEP") or shutil.rmtree(home, ignore_errors=True)

    watched = sorted({d["column"] for d in first_runs[-1].get("drift", []) if d.get("role") == "feature"})
    peer = None
    if os.environ.get(PEER_ENV):
        ctx.log(f"  the peer: Evidently's data-drift report on the same {n:,} rows, {len(watched)} columns")
        peer = run_peer(str(big), watched, baseline_weeks=5)
    else:
        ctx.log(f"  the peer (Evidently) is skipped: {PEER_ENV} is not set (see benchmarks/peer.py)")

    first_s, again_s, score_s = (median(r["seconds"] for r in rs) for rs in (first, again, [scored]))
    first_rss = max(r["command_peak_rss"] for r in first) / GIB
    again_rss = max(r["command_peak_rss"] for r in again) / GIB
    windows = len(first_runs[-1].get("performance") or [])
    new = again_runs[-1]
    rows = [
        Row("monitoring", f"mlops run pipeline=monitor peak RSS, {n / 1e6:g}M rows", first_rss, "<", 1.0, unit="GiB",
            detail=f"the whole process, largest of {repeats}; incremental run {again_rss:.2f} GiB"),
        Row("monitoring", f"pipeline=monitor / pipeline=score, {n / 1e6:g}M rows", first_s / score_s, "<=", 0.5,
            detail=f"monitor {first_s:.1f} s (runs: {_runs(first, 1)}; {windows} "
                   f"windows), score {score_s:.1f} s ({scored['command_peak_rss'] / GIB:.2f} GiB); breakdown of the "
                   f"monitor stage in-process: {_phases(first_runs[-1])}"),
        Row("monitoring", "incremental pipeline=monitor / first, one more week", again_s / first_s, "<=", 0.10,
            detail=f"{again_s:.2f} s (runs: {_runs(again, 2)}) computing "
                   f"{len(new.get('performance') or [])} new window(s), {new.get('windows_unchanged')} of "
                   f"{new.get('windows_total')} unchanged, after {week['rows']:,} new rows; breakdown of the "
                   f"monitor stage in-process: {_phases(new)}; the same command with nothing new "
                   f"{median(r['seconds'] for r in idle):.2f} s (runs: {_runs(idle, 2)}): its fixed cost, "
                   f"start-up, composing, the recorded results, one scan of the table, the report"),
    ]
    if peer is None:
        skipped = f"skipped: {PEER_ENV} is not set (Evidently lives in its own environment, see benchmarks/peer.py)"
        rows += [Row("monitoring", f"Evidently / pipeline=monitor time, {n / 1e6:g}M rows", None, ">=", 5.0,
                     status="SKIPPED", detail=skipped),
                 Row("monitoring", f"pipeline=monitor / Evidently peak RSS, {n / 1e6:g}M rows", None, "<", 0.25,
                     status="SKIPPED", detail=skipped)]
    else:
        rows += [
            Row("monitoring", f"Evidently / pipeline=monitor time, {n / 1e6:g}M rows", peer["seconds"] / first_s,
                ">=", 5.0, detail=f"Evidently's DataDriftPreset report {peer['seconds']:.1f} s on {peer['rows']:,} rows, "
                                  f"{len(watched)} columns ({', '.join(watched)}), whole process; the monitor "
                                  f"{first_s:.1f} s (drift and performance for {windows} windows)"),
            Row("monitoring", f"pipeline=monitor / Evidently peak RSS, {n / 1e6:g}M rows",
                first_rss / (peer["peak_rss"] / GIB), "<", 0.25,
                detail=f"monitor {first_rss:.2f} GiB, Evidently {peer['peak_rss'] / GIB:.2f} GiB"),
        ]
    return rows
