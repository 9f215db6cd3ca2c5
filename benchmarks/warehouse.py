"""Target 4: writing predictions into the local warehouse (DuckDB) against writing them to Parquet.

One process scores the big input once with ``score_to_sink`` into memory, keeping exactly the batches a
sink receives (input rows plus predictions), then alternates, ``repeats`` times, writing them all:
- ``DuckDBSink`` as conf/scoring/duckdb.yaml configures it (table PREDICTIONS_WITH_GROUND_TRUTH,
  partition_by WEEK), into a fresh file, committed;
- the reference: ``pyarrow.parquet.ParquetWriter`` with its defaults, one file;
- for information, the framework's ``ParquetSink`` (one file).
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from benchmarks.common import Row, child, load_model, median


class _Memory:
    """A sink keeping every batch in memory."""

    def __init__(self):
        self.batches = []

    def describe(self) -> str:
        return "memory"

    @contextlib.contextmanager
    def open(self):
        yield self

    def write(self, batch) -> None:
        self.batches.append(batch)


def compare(home: str, version: str, data: str, out_dir: str, repeats: int) -> dict:
    import pyarrow.parquet as pq

    from mlops_framework.scoring import score_to_sink
    from mlops_local.sinks import DuckDBSink, ParquetSink
    from mlops_local.sources import ParquetSource

    model = load_model(home, version)
    memory = _Memory()
    score_to_sink(model, ParquetSource(data).batches(), memory, threshold=model.threshold, progress=False)
    batches = memory.batches
    rows = sum(b.num_rows for b in batches)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    db, pq_raw, pq_sink = out / "warehouse.duckdb", out / "raw.parquet", out / "sink.parquet"

    def duckdb_sink():
        db.unlink(missing_ok=True)
        Path(f"{db}.wal").unlink(missing_ok=True)
        with DuckDBSink(db, partition_by=["WEEK"]).open() as writer:
            for batch in batches:
                writer.write(batch)

    def parquet_raw():
        with pq.ParquetWriter(pq_raw, batches[0].schema) as writer:
            for batch in batches:
                writer.write_batch(batch)

    def parquet_sink():
        with ParquetSink(pq_sink).open() as writer:
            for batch in batches:
                writer.write(batch)

    variants = {"duckdb": duckdb_sink, "parquet": parquet_raw, "parquet_sink": parquet_sink}
    times: dict[str, list[float]] = {name: [] for name in variants}
    for i in range(repeats):
        for name in (list(variants) if i % 2 == 0 else list(reversed(variants))):
            started = time.perf_counter()
            variants[name]()
            times[name].append(time.perf_counter() - started)
    sizes = {"duckdb": os.path.getsize(db), "parquet": os.path.getsize(pq_raw), "parquet_sink": os.path.getsize(pq_sink)}
    for path in (db, pq_raw, pq_sink):
        path.unlink(missing_ok=True)
    return {"rows": rows, "batches": len(batches), "times": times, "bytes": sizes}


def run(ctx) -> list[Row]:
    sizes = ctx.sizes
    data = ctx.data(sizes.score_weeks)
    model = ctx.model()
    ctx.log(f"  writing {sizes.score_rows:,} predictions: DuckDB sink vs Parquet, {sizes.repeats} rounds")
    result = child("benchmarks.warehouse:compare", home=model["home"], version=model["version"], data=str(data),
                   out_dir=str(ctx.scratch("warehouse")), repeats=sizes.repeats)
    n = result["rows"]
    rate = {name: n / median(values) for name, values in result["times"].items()}
    mib = {name: size / (1 << 20) for name, size in result["bytes"].items()}
    return [
        Row("warehouse", f"DuckDB sink / Parquet write, {n / 1e6:g}M rows", rate["duckdb"] / rate["parquet"], ">=", 0.5,
            detail=f"DuckDB sink {rate['duckdb'] / 1e6:.2f}M rows/s ({mib['duckdb']:.0f} MiB); pyarrow ParquetWriter "
                   f"{rate['parquet'] / 1e6:.2f}M rows/s ({mib['parquet']:.0f} MiB); ParquetSink "
                   f"{rate['parquet_sink'] / 1e6:.2f}M rows/s ({mib['parquet_sink']:.0f} MiB)"),
    ]
