"""Target 1: batch scoring from Parquet, predictions joined to the input rows and written out.

- framework: the command a user types, ``mlops run pipeline=score data=parquet data.path=F
  data.partition_by=WEEK scoring.version=v1``, with the defaults (the DuckDB sink), in its own
  process: wall time and peak RSS of the whole process, start-up, imports and model load included.
- limit: ``booster.inplace_predict`` on a prebuilt float32 matrix of the same rows and features, same
  model, one call (building the matrix is not timed).
- notebook: a script that reads the whole table into pandas, ``get_dummies``, realigns the columns to the
  model's, ``predict`` then ``predict_proba`` on an ``XGBClassifier`` holding the same booster,
  ``to_parquet``: the whole process's wall time, like the framework's.
- breakdown (in-process, labelled so): the ``score`` stage alone, imports excluded, with the Parquet sink.

Framework and limit run alternately, each in a fresh process, ``repeats`` times; the ratio is of
their medians. The notebook way runs once at full size (it takes the longest and 5+ GiB).
"""

from __future__ import annotations

import time
from pathlib import Path

from benchmarks.common import GIB, MODEL_NAME, Row, build_run, child, load_model, median


def user_command(home: str, version: str, data: str) -> list[str]:
    """``mlops run pipeline=score`` on a Parquet file, everything else the defaults."""
    return ["mlops", "run", "pipeline=score", "data=parquet", f"data.path={data}", "data.partition_by=WEEK",
            f"scoring.version={version}",
            f"registry.model_name={MODEL_NAME}", f"paths.home={home}"]

SCORE_COLUMN = "PREDICTED_SCORE"
TABLE = "PREDICTIONS_WITH_GROUND_TRUTH"
CLASS_COLUMN = "PREDICTED_RESPONSE"


# ---------------------------------------------------------------------- children
def framework(home: str, version: str, data: str, out: str, partition_by: str | None = "WEEK") -> dict:
    """The score stage of ``mlops run pipeline=score data=parquet scoring=parquet``."""
    import shutil

    from mlops_framework import stages

    shutil.rmtree(out, ignore_errors=True)
    Path(out).unlink(missing_ok=True)
    overrides = [
        f"paths.home={home}", "pipeline=score", "data=parquet", f"data.path={data}",
        "scoring=parquet", f"scoring.sink.path={out}", f"scoring.version={version}",
        f"registry.model_name={MODEL_NAME}",
    ]
    overrides.append(f"scoring.sink.partition_by={partition_by or 'null'}")  # a file brings no partitions
    run = build_run(overrides)
    import pyarrow.parquet  # noqa: F401 - libraries are imported before the clock starts, as for the limit
    import xgboost  # noqa: F401 - (importing them is start-up, target 3, not throughput)

    started, cpu = time.perf_counter(), time.process_time()
    stages.score(run)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {"rows": run.results["scored"]["rows"], "seconds": seconds, "cpu_s": cpu}


def limit(home: str, version: str, data: str) -> dict:
    """One ``inplace_predict`` over a prebuilt float32 matrix of every row (the build is not timed)."""
    import numpy as np
    import pyarrow.parquet as pq

    model = load_model(home, version)
    contract = model.contract
    file = pq.ParquetFile(data)
    n = file.metadata.num_rows
    matrix = np.empty((n, len(contract.feature_names)), dtype=np.float32)
    row = 0
    for batch in file.iter_batches(batch_size=262_144, columns=contract.input_columns):
        matrix[row:row + batch.num_rows] = contract.encode_batch(batch)
        row += batch.num_rows
    booster = model._booster
    started, cpu = time.perf_counter(), time.process_time()
    scores = booster.inplace_predict(matrix)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    assert scores.shape == (n,)
    return {"rows": n, "seconds": seconds, "cpu_s": cpu, "features": matrix.shape[1]}


def notebook(home: str, version: str, data: str, out: str) -> dict:
    """The demo notebook's way, with the model's own column list for the realignment."""
    import pandas as pd
    import xgboost

    from mlops_local.registry import LocalRegistry

    registry = LocalRegistry(Path(home) / "registry")
    path = registry.artifact_path(MODEL_NAME, version)
    contract = load_model(home, version).contract
    model = xgboost.XGBClassifier()
    model.load_model(path / "model.ubj")

    started = time.perf_counter()
    df = pd.read_parquet(data)
    X = pd.get_dummies(df[contract.input_columns], columns=list(contract.categorical), dtype="float32")
    X = X.reindex(columns=contract.feature_names, fill_value=0)  # realign with the training columns
    df[CLASS_COLUMN] = model.predict(X)
    df[SCORE_COLUMN] = model.predict_proba(X)[:, 1]
    df.to_parquet(out, index=False)
    return {"rows": len(df), "seconds": time.perf_counter() - started}


def compare(warehouse: str, notebook_out: str) -> dict:
    """Rows whose score or class differ between the framework's table and the notebook's file (matched by
    LOAN_ID), and rows missing."""
    import duckdb
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    columns = ["LOAN_ID", SCORE_COLUMN, CLASS_COLUMN]
    with duckdb.connect(warehouse, read_only=True) as con:
        a = con.sql(f"SELECT {', '.join(columns)} FROM {TABLE}").to_arrow_table()
    b = ds.dataset(notebook_out, format="parquet").to_table(columns=columns)
    a = a.take(pc.sort_indices(a, [("LOAN_ID", "ascending")]))
    b = b.take(pc.sort_indices(b, [("LOAN_ID", "ascending")]))
    if a.num_rows != b.num_rows or not a.column("LOAN_ID").equals(b.column("LOAN_ID")):
        return {"rows": [a.num_rows, b.num_rows], "differ": max(a.num_rows, b.num_rows), "same_rows": False}
    score_a = a.column(SCORE_COLUMN).to_numpy()
    score_b = b.column(SCORE_COLUMN).to_numpy().astype(np.float64)
    class_a = a.column(CLASS_COLUMN).to_numpy().astype(np.int64)
    class_b = b.column(CLASS_COLUMN).to_numpy().astype(np.int64)
    differ = (score_a != score_b) | (class_a != class_b)
    return {"rows": [a.num_rows, b.num_rows], "differ": int(differ.sum()), "same_rows": True,
            "max_abs_score_diff": float(np.abs(score_a - score_b).max()) if len(score_a) else 0.0}


# ---------------------------------------------------------------------- parent
def run(ctx) -> list[Row]:
    import shutil

    sizes = ctx.sizes
    big, small = ctx.data(sizes.score_weeks), ctx.data(sizes.small_weeks)
    model = ctx.model()
    home = ctx.scratch("home-scoring")
    shutil.rmtree(home, ignore_errors=True)
    shutil.copytree(model["home"], home)  # the registered model, a fresh warehouse
    common = {"home": str(home), "version": model["version"]}
    out_n, out_stage = str(ctx.scratch("scored-notebook.parquet")), str(ctx.scratch("scored-stage"))

    def framework_command(data):
        return child("benchmarks.common:measure_command", argv=user_command(data=str(data), **common))

    fw, lim = [], []
    for i in range(sizes.repeats):
        ctx.log(f"  scoring {sizes.score_rows:,} rows: mlops run pipeline=score / limit, round {i + 1} of {sizes.repeats}")
        fw.append(framework_command(big))
        lim.append(child("benchmarks.scoring:limit", data=str(big), **common))
    ctx.log(f"  scoring {sizes.score_rows:,} rows the notebook way")
    nb = child("benchmarks.scoring:notebook", data=str(big), out=out_n, **common)
    ctx.log(f"  scoring {sizes.score_rows:,} rows: the score stage in-process, Parquet sink (breakdown)")
    stage = child("benchmarks.scoring:framework", data=str(big), out=out_stage, **common)
    if small == big:  # --quick: one size, its outputs compared
        fw_small = fw[-1]
    else:
        ctx.log(f"  scoring {sizes.small_rows:,} rows: mlops run and the notebook way, outputs compared")
        (home / "warehouse.duckdb").unlink()  # the table then holds the small run's rows only
        fw_small = framework_command(small)
        child("benchmarks.scoring:notebook", data=str(small), out=out_n, **common)
    same = child("benchmarks.scoring:compare", warehouse=str(home / "warehouse.duckdb"), notebook_out=out_n)

    n = sizes.score_rows
    fw_s, lim_s = median(r["seconds"] for r in fw), median(r["seconds"] for r in lim)
    rss_big = max(r["command_peak_rss"] for r in fw) / GIB
    rss_small = fw_small["command_peak_rss"] / GIB
    runs = ", ".join(f"{r['seconds']:.1f}" for r in fw)
    rows = [
        Row("scoring", f"mlops run pipeline=score / limit, {n / 1e6:g}M rows", lim_s / fw_s, ">=", 0.65,
            detail=f"the command {fw_s:.1f} s (runs: {runs} s; DuckDB sink, whole process); limit "
                   f"{lim_s:.1f} s of inplace_predict ({lim[0]['features']} features); breakdown, the score "
                   f"stage in-process with the Parquet sink: {stage['seconds']:.1f} s ({lim_s / stage['seconds']:.2f}x "
                   f"the limit, {stage['peak_rss'] / GIB:.2f} GiB)"),
        Row("scoring", f"mlops run pipeline=score / notebook way, {n / 1e6:g}M rows", nb["child_s"] / fw_s, ">=", 2.0,
            detail=f"notebook script {nb['child_s']:.1f} s, whole process; peak RSS {nb['peak_rss'] / GIB:.2f} GiB"),
        Row("scoring", f"peak RSS of mlops run, {n / 1e6:g}M rows", rss_big, "<", 1.0, unit="GiB",
            detail=f"largest of {len(fw)} runs; {rss_small:.2f} GiB at {sizes.small_rows / 1e6:g}M rows"),
    ]
    if small != big:
        rows.append(Row("scoring", f"peak RSS of mlops run, {sizes.small_rows / 1e6:g}M rows", rss_small, "<", 1.0,
                        unit="GiB", detail=f"growth from {sizes.small_rows / 1e6:g}M to {n / 1e6:g}M rows: "
                                           f"{(rss_big - rss_small) * 1024:+.0f} MiB"))
    rows.append(Row("scoring", f"rows differing from the notebook way, {sizes.small_rows / 1e6:g}M rows",
                    float(same["differ"]), "<=", 0, unit="rows",
                    detail=f"of {same['rows'][0]:,}; max |score difference| {same.get('max_abs_score_diff', float('nan')):g}"))
    return rows
