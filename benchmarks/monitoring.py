"""Target 6: monitoring a big predictions table, against scoring the same rows, in one run.

- score: ``mlops run pipeline=score data=parquet data.path=BIG`` composed as the CLI does, into the
  default DuckDB table (partitioned by WEEK), in a fresh process; the score stage is timed (model load,
  scoring, the commit), as in the scoring target.
- monitor: ``mlops run pipeline=monitor monitor.baseline='WEEK <= 5'`` (the monitor stage) over that
  table, in a fresh process; the stage is timed, the peak RSS (``getrusage``) is the whole process's.
  Whole-process times (start-up included) are in the details.
- incremental: one more week is scored into the table, then the same monitor command runs again; it
  computes only the new week's window (the others' fingerprints are unchanged).

Goals (issue 14): monitor peak RSS < 1 GiB; monitor time <= half the score time; incremental monitor
time <= 10% of the first monitor's. ``--score-weeks`` sets the size (FULL: 100 weeks x 100,000 rows).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from benchmarks.common import GIB, MODEL_NAME, Row, child


def stages(overrides: list[str]) -> dict:
    """The run ``mlops run OVERRIDES`` composes, its stages timed (libraries imported before the clock
    starts, as in the scoring target); the process's peak RSS covers everything."""
    import pyarrow.parquet  # noqa: F401
    import xgboost  # noqa: F401

    from benchmarks.common import build_run

    run = build_run(overrides)
    started = time.perf_counter()
    for stage in run.stages:
        stage.run(run)
    monitor = run.results.get("monitor") or {}
    return {"seconds": time.perf_counter() - started, "exit": 0,
            "windows": len(monitor.get("performance") or []), "unchanged": monitor.get("windows_unchanged")}


def next_week(data: str, out: str, weeks: int) -> dict:
    """Week 1 of ``data`` moved to week ``weeks + 1`` (new ids and times): one more week of applications."""
    import datetime as dt

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


def _check(result: dict, what: str) -> dict:
    if result["exit"] != 0:
        raise RuntimeError(f"{what} exited {result['exit']}")
    return result


def run(ctx) -> list[Row]:
    sizes = ctx.sizes
    big = ctx.data(sizes.score_weeks)
    model = ctx.model()
    home = ctx.scratch("monitor-home")
    shutil.rmtree(home, ignore_errors=True)
    shutil.copytree(model["home"], home)
    for leftover in ("warehouse.duckdb", "warehouse.duckdb.wal"):
        (home / leftover).unlink(missing_ok=True)
    common = [f"paths.home={home}", f"registry.model_name={MODEL_NAME}"]
    score = ["pipeline=score", "data=parquet", f"scoring.version={model['version']}", *common]
    monitor = ["pipeline=monitor", "pipeline.stages=[monitor]", "monitor.baseline='WEEK <= 5'",
               "alerts.notifiers.console=null", *common]
    n = sizes.score_rows

    ctx.log(f"  scoring {n:,} rows into the warehouse (mlops run pipeline=score)")
    scored = _check(child("benchmarks.monitoring:stages", overrides=[*score, f"data.path={big}"]), "score")
    ctx.log(f"  monitoring them (mlops run pipeline=monitor)")
    first = _check(child("benchmarks.monitoring:stages", overrides=monitor), "monitor")
    extra = ctx.scratch("next-week.parquet")
    week = child("benchmarks.monitoring:next_week", data=str(big), out=str(extra), weeks=sizes.score_weeks)
    ctx.log(f"  scoring one more week ({week['rows']:,} rows), monitoring again")
    _check(child("benchmarks.monitoring:stages", overrides=[*score, f"data.path={extra}"]), "score one week")
    again = _check(child("benchmarks.monitoring:stages", overrides=monitor), "monitor again")
    os.environ.get("MLOPS_BENCH_KEEP") or shutil.rmtree(home, ignore_errors=True)

    stage = lambda r: r["seconds"]  # noqa: E731 - the stage, as the scoring target times it
    whole = lambda r: r["child_s"]  # noqa: E731 - the whole process: start-up, imports, work, exit
    return [
        Row("monitoring", f"monitor peak RSS, {n / 1e6:g}M rows", first["peak_rss"] / GIB, "<", 1.0, unit="GiB",
            detail=f"the whole process composing and running pipeline=monitor; incremental run "
                   f"{again['peak_rss'] / GIB:.2f} GiB"),
        Row("monitoring", f"monitor stage / score stage, {n / 1e6:g}M rows", stage(first) / stage(scored), "<=", 0.5,
            detail=f"monitor {stage(first):.1f} s ({first['windows']} windows), score {stage(scored):.1f} s; whole "
                   f"processes {whole(first):.1f} s / {whole(scored):.1f} s"),
        Row("monitoring", "incremental monitor / first monitor, one more week", stage(again) / stage(first), "<=", 0.10,
            detail=f"{stage(again):.2f} s for {again['windows']} new window ({again['unchanged']} unchanged) after "
                   f"{week['rows']:,} new rows; whole processes {whole(again):.1f} s / {whole(first):.1f} s"),
    ]
