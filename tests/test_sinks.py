"""Sinks publish all or nothing: partitions replaced, previous data intact after any failure."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlops_framework.errors import MlopsError
from mlops_framework.features import FeatureContract
from mlops_framework.scoring import score_to_sink
from mlops_local.sinks import DuckDBSink, ParquetSink

REPO = Path(__file__).resolve().parents[1]
TABLE = "PREDICTIONS_WITH_GROUND_TRUTH"


def predictions(weeks, rows_per_week=100, version=0):
    """Prediction rows for the given weeks; ``version`` changes every score."""
    weeks = np.repeat(np.asarray(weeks, dtype=np.int64), rows_per_week)
    n = len(weeks)
    rng = np.random.default_rng(version)
    return pa.table(
        {
            "WEEK": weeks,
            "LOAN_ID": np.arange(n, dtype=np.int64) + 1000 * weeks,
            "COUNTY_NAME": pa.array(rng.choice(["Adams", "Baker", "Clark"], n)),
            "MORTGAGERESPONSE": rng.integers(0, 2, n),
            "PREDICTED_SCORE": np.full(n, version / 10.0),
            "PREDICTED_RESPONSE": np.full(n, version % 2, dtype=np.int64),
        }
    )


def write_all(sink, table, batch_rows=70):
    with sink.open() as writer:
        for batch in table.to_batches(max_chunksize=batch_rows):
            writer.write(batch)


def read_duckdb(path, table=TABLE):
    with duckdb.connect(str(path)) as con:
        return con.sql(f'SELECT * FROM "{table}" ORDER BY WEEK, LOAN_ID').to_arrow_table()


def rows_of(table, week):
    import pyarrow.compute as pc

    return table.filter(pc.equal(table.column("WEEK"), week))


# ---------------------------------------------------------------------- DuckDB
def test_duckdb_rescoring_a_week_replaces_only_that_week(tmp_path):
    path = tmp_path / "warehouse" / "local.duckdb"  # parent directories are created
    sink = DuckDBSink(path, partition_by=["WEEK"])
    write_all(sink, predictions([1, 2, 3], version=1))
    first = read_duckdb(path)
    assert first.num_rows == 300

    write_all(sink, predictions([2], rows_per_week=150, version=2), batch_rows=40)  # week 2 spans 4 batches
    second = read_duckdb(path)
    assert second.num_rows == 100 + 150 + 100
    assert rows_of(second, 1).equals(rows_of(first, 1))
    assert rows_of(second, 3).equals(rows_of(first, 3))
    week2 = rows_of(second, 2)
    assert week2.num_rows == 150 and set(week2.column("PREDICTED_SCORE").to_pylist()) == {0.2}


def test_duckdb_partitions_by_several_columns_including_nulls(tmp_path):
    path = tmp_path / "w.duckdb"
    sink = DuckDBSink(path, partition_by=["WEEK", "COUNTY_NAME"])
    first = predictions([1, 2], version=1)
    write_all(sink, first)
    update = predictions([1], rows_per_week=10, version=3)
    update = update.set_column(2, "COUNTY_NAME", pa.array(["Adams"] * 5 + [None] * 5))
    write_all(sink, update)
    with duckdb.connect(str(path)) as con:
        groups = dict(
            ((week, county), (n, score))
            for week, county, n, score in con.execute(
                f"SELECT WEEK, COUNTY_NAME, count(*), max(PREDICTED_SCORE) FROM {TABLE} GROUP BY ALL"
            ).fetchall()
        )
    old = first.to_pandas().groupby(["WEEK", "COUNTY_NAME"]).size()
    assert groups[(1, "Adams")] == (5, 0.3) and groups[(1, None)] == (5, 0.3)
    assert groups[(1, "Baker")] == (old[(1, "Baker")], 0.1)  # other counties of week 1 untouched
    assert groups[(2, "Clark")] == (old[(2, "Clark")], 0.1)


def test_duckdb_without_partitions_replaces_the_table(tmp_path):
    path = tmp_path / "w.duckdb"
    sink = DuckDBSink(path)
    write_all(sink, predictions([1, 2, 3], version=1))
    write_all(sink, predictions([4], version=2))
    assert read_duckdb(path).equals(predictions([4], version=2))
    assert "DuckDB table" in sink.describe() and str(path) in sink.describe()


def test_duckdb_column_mismatch_names_the_columns_and_keeps_the_table(tmp_path):
    path = tmp_path / "w.duckdb"
    sink = DuckDBSink(path, partition_by=["WEEK"])
    write_all(sink, predictions([1]))
    different = predictions([1]).drop_columns(["MORTGAGERESPONSE"]).append_column("EXTRA", pa.array(range(100)))
    with pytest.raises(MlopsError) as info:
        write_all(sink, different)
    assert "EXTRA" in str(info.value) and "MORTGAGERESPONSE" in str(info.value)
    assert read_duckdb(path).equals(predictions([1]))


def test_duckdb_quotes_the_table_name(tmp_path):
    path = tmp_path / "w.duckdb"
    name = 'weekly "scores"; DROP TABLE x'
    write_all(DuckDBSink(path, table=name), predictions([1]))
    write_all(DuckDBSink(path, table=name), predictions([2]))
    with duckdb.connect(str(path)) as con:
        assert con.execute('SELECT count(*), min(WEEK) FROM "weekly ""scores""; DROP TABLE x"').fetchone() == (100, 2)


def _tiny_model():
    import xgboost as xgb

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"WEEK": rng.integers(1, 4, 200), "LOAN_AMOUNT_000S": rng.gamma(2, 100, 200)})
    frame["COUNTY_NAME"] = rng.choice(["Adams", "Baker", "Clark"], 200)
    frame["MORTGAGERESPONSE"] = (frame.LOAN_AMOUNT_000S < 200).astype(int)

    class Model:
        contract = FeatureContract.fit(
            frame, numeric=["LOAN_AMOUNT_000S"], categorical=["COUNTY_NAME"], target="MORTGAGERESPONSE"
        )
        booster = xgb.train(
            {"objective": "binary:logistic", "nthread": 1},
            xgb.DMatrix(contract.encode_frame(frame), label=contract.encode_target(frame.MORTGAGERESPONSE)),
            num_boost_round=5,
        )

        def predict_scores(self, X):
            return self.booster.inplace_predict(X)

    return Model()


def test_error_from_the_batch_iterator_leaves_the_previous_table(tmp_path):
    model = _tiny_model()
    inputs = predictions([1, 2, 3]).drop_columns(["PREDICTED_SCORE", "PREDICTED_RESPONSE"])
    inputs = inputs.append_column("LOAN_AMOUNT_000S", pa.array(np.linspace(50, 400, 300)))
    path = tmp_path / "w.duckdb"
    for partition_by in (["WEEK"], None):
        sink = DuckDBSink(path, partition_by=partition_by)
        assert score_to_sink(model, inputs.to_batches(max_chunksize=100), sink).rows == 300
        before = read_duckdb(path)

        def failing():
            yield from inputs.to_batches(max_chunksize=40)[:5]  # weeks 1 and 2 are already deleted and rewritten
            raise ConnectionError("warehouse read failed")

        with pytest.raises(ConnectionError):
            score_to_sink(model, failing(), sink)
        assert read_duckdb(path).equals(before)


KILLED_WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np, pyarrow as pa
    from mlops_local.sinks import DuckDBSink

    path, partition = sys.argv[1], sys.argv[2] == "partition"
    n = 200_000
    batch = pa.record_batch({
        "WEEK": np.full(n, 2, dtype=np.int64),
        "LOAN_ID": np.arange(n, dtype=np.int64),
        "COUNTY_NAME": pa.array(np.random.default_rng(0).choice(["Adams", "Baker", "Clark"], n)),
        "MORTGAGERESPONSE": np.zeros(n, dtype=np.int64),
        "PREDICTED_SCORE": np.full(n, 0.9),
        "PREDICTED_RESPONSE": np.ones(n, dtype=np.int64),
    })
    with DuckDBSink(path, partition_by=["WEEK"] if partition else None).open() as writer:
        writer.write(batch)
        print("writing", flush=True)
        while True:
            writer.write(batch)
    """
)


@pytest.mark.parametrize("mode", ["partition", "table"])
def test_sigkill_mid_write_leaves_the_previous_table_and_a_usable_file(tmp_path, mode):
    path = tmp_path / "w.duckdb"
    sink = DuckDBSink(path, partition_by=["WEEK"] if mode == "partition" else None)
    previous = predictions([1, 2, 3], version=1)
    write_all(sink, previous)
    size_before = path.stat().st_size
    script = tmp_path / "writer.py"
    script.write_text(KILLED_WRITER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen(
        [sys.executable, str(script), str(path), mode], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        line = child.stdout.readline()
        assert line == "writing\n", child.stderr.read()
        deadline = time.monotonic() + 30
        while path.stat().st_size <= size_before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert path.stat().st_size > size_before  # uncommitted row groups have reached the file
        time.sleep(0.2)
        assert child.poll() is None, "the writer finished before it was killed"
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
        child.stdout.close()
        child.stderr.close()

    assert read_duckdb(path).equals(previous)
    write_all(sink, predictions([2], version=4))
    after = read_duckdb(path)
    if mode == "partition":
        assert after.num_rows == 300 and rows_of(after, 1).equals(rows_of(previous, 1))
        assert rows_of(after, 2).equals(predictions([2], version=4))
    else:
        assert after.equals(predictions([2], version=4))


# ---------------------------------------------------------------------- Parquet
def test_parquet_file_is_replaced_atomically(tmp_path):
    path = tmp_path / "out" / "predictions.parquet"
    sink = ParquetSink(path)
    write_all(sink, predictions([1], version=1))
    write_all(sink, predictions([2], version=2))
    assert pq.read_table(path).equals(predictions([2], version=2))

    with pytest.raises(RuntimeError, match="boom"):
        with sink.open() as writer:
            writer.write(predictions([3]).to_batches()[0])
            raise RuntimeError("boom")
    assert pq.read_table(path).equals(predictions([2], version=2))
    assert os.listdir(path.parent) == ["predictions.parquet"]  # the temporary file is gone
    assert "Parquet file" in sink.describe()


def test_parquet_partitions_are_replaced_others_untouched(tmp_path):
    path = tmp_path / "predictions"
    sink = ParquetSink(path, partition_by=["WEEK"])
    write_all(sink, predictions([1, 2, 3], version=1))
    assert sorted(os.listdir(path)) == ["WEEK=1", "WEEK=2", "WEEK=3"]
    untouched = {w: (path / f"WEEK={w}" / "part-0.parquet").stat() for w in (1, 3)}

    write_all(sink, predictions([2], rows_per_week=150, version=2), batch_rows=40)
    for week, stat in untouched.items():
        assert (path / f"WEEK={week}" / "part-0.parquet").stat().st_mtime_ns == stat.st_mtime_ns
        assert (path / f"WEEK={week}" / "part-0.parquet").stat().st_ino == stat.st_ino
    assert os.listdir(path / "WEEK=2") == ["part-0.parquet"]
    week2 = pq.read_table(path / "WEEK=2")
    assert week2.num_rows == 150 and set(week2.column("PREDICTED_SCORE").to_pylist()) == {0.2}
    assert "WEEK" not in week2.column_names  # hive style: the value lives in the directory name
    everything = pq.read_table(path).to_pandas()
    assert everything.WEEK.astype(int).value_counts().sort_index().to_dict() == {1: 100, 2: 150, 3: 100}
    assert sorted(os.listdir(tmp_path)) == ["predictions"]  # no staging directory left behind


def test_failed_partitioned_parquet_write_changes_nothing(tmp_path):
    path = tmp_path / "predictions"
    sink = ParquetSink(path, partition_by=["WEEK"])
    write_all(sink, predictions([1, 2], version=1))
    before = pq.read_table(path)
    with pytest.raises(RuntimeError, match="boom"):
        with sink.open() as writer:
            writer.write(predictions([2, 3], version=2).to_batches()[0])
            raise RuntimeError("boom")
    assert pq.read_table(path).equals(before)
    assert sorted(os.listdir(tmp_path)) == ["predictions"]
    assert sorted(os.listdir(path)) == ["WEEK=1", "WEEK=2"]


def test_parquet_path_kind_mismatch_is_a_clear_error(tmp_path):
    directory = tmp_path / "dir"
    directory.mkdir()
    with pytest.raises(MlopsError, match="is a directory"):
        with ParquetSink(directory).open():
            pass
    file = tmp_path / "file.parquet"
    file.write_bytes(b"x")
    with pytest.raises(MlopsError, match="is a file"):
        with ParquetSink(file, partition_by=["WEEK"]).open():
            pass
    with pytest.raises(MlopsError, match="NOPE"):
        write_all(ParquetSink(tmp_path / "p", partition_by=["NOPE"]), predictions([1]))


def test_duckdb_sink_shares_the_file_with_an_open_connection_and_restores_its_settings(tmp_path):
    path = tmp_path / "w.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("SET threads = 3")
        write_all(DuckDBSink(path), predictions([1]))  # same database instance as `con`
        assert con.execute("SELECT current_setting('threads')").fetchone() == (3,)
        assert con.execute(f"SELECT count(*) FROM {TABLE}").fetchone() == (100,)
