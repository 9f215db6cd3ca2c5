"""Where predictions land: all or nothing.

A sink stores its settings in ``__init__`` and does its work in ``open()``, a context manager that
yields a writer with ``.write(batch)``. Leaving the ``with`` block normally publishes everything
written; leaving it by an exception (or the process dying) leaves the previous data exactly as it
was. A sink that receives no batch at all leaves its destination untouched.

- :class:`DuckDBSink`: one transaction in a local DuckDB file. With ``partition_by`` it replaces only
  the partitions present in the new data (re-scoring week 5 replaces week 5); without, the table.
- :class:`ParquetSink`: one file replaced atomically, or a hive-style directory
  ``PATH/COL=VALUE/part-0.parquet`` whose touched partitions are replaced (partition columns are
  kept in the directory names, not in the files, as Hive, Spark, pyarrow and DuckDB expect).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import urllib.parse
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from mlops_framework.contracts import check_same_columns, partition_columns, quote_identifier
from mlops_framework.errors import MlopsError

if TYPE_CHECKING:  # annotations only: importing these at start-up would slow every command
    import pyarrow as pa

_BATCH_VIEW = "__mlops_batch"
_HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"


# ---------------------------------------------------------------------- DuckDB
class DuckDBSink:
    """Predictions into a table of a local DuckDB file, in one transaction."""

    def __init__(self, path, table: str = "PREDICTIONS_WITH_GROUND_TRUTH", partition_by: list[str] | None = None):
        self.path = path
        self.table = table
        self.partition_by = partition_columns(partition_by)

    def as_source(self, where: str | None = None):
        """A data source reading back what this sink wrote (``kind: duckdb``), e.g. for monitoring."""
        from mlops_local.sources import DuckDBTableSource

        return DuckDBTableSource(path=str(self.path), table=self.table, where=where)

    def describe(self) -> str:
        where = f"DuckDB table {self.table} in {self.path}"
        if self.partition_by:
            return f"{where} (replacing partitions by {', '.join(self.partition_by)})"
        return f"{where} (replacing the table)"

    def existing_columns(self) -> list[str] | None:
        import duckdb

        if not Path(self.path).is_file():
            return None
        try:
            with duckdb.connect(str(self.path), read_only=True) as con:
                return _table_columns(con, self.table) or None
        except duckdb.Error:
            return None

    @contextlib.contextmanager
    def open(self) -> Iterator["_DuckDBWriter"]:
        import duckdb

        path = Path(self.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            con = duckdb.connect(str(path))
        except duckdb.Error as exc:
            raise MlopsError(f"cannot open the DuckDB file {path}: {exc}") from exc
        # One thread appends into whole row groups; several leave partial ones that the checkpoint
        # at close must rewrite (measured: 2x faster, half the file size). The setting belongs to
        # the database instance, which other connections in this process may share: restore it.
        threads = None
        try:
            threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
            con.execute("SET threads = 1")
            con.begin()
            writer = _DuckDBWriter(con, self.table, list(self.partition_by or []))
            try:
                yield writer
                writer.finish()
            except BaseException:
                writer.abort()
                with contextlib.suppress(duckdb.Error):
                    con.rollback()
                raise
            try:
                con.commit()
            except duckdb.Error as exc:
                raise MlopsError(f"could not commit predictions to {self.describe()}: {exc}") from exc
        finally:
            if threads is not None:
                with contextlib.suppress(duckdb.Error):
                    con.execute(f"SET threads = {int(threads)}")
            con.close()


class _DuckDBWriter:
    """Streams every batch into the table through ONE ``INSERT`` statement, run in a thread that pulls
    the batches as ``write`` hands them over.

    DuckDB keeps a transaction's rows in memory when they arrive as many small statements (10M rows:
    1.5 GiB), but writes them out to the file as it goes when they arrive as one statement (0.2 GiB).
    The rows being replaced are deleted after the insert, in the same transaction: those whose
    ``rowid`` is at most the table's largest before the insert (new rows always number higher) and,
    with ``partition_by``, whose key is among the keys written.
    """

    _QUEUED = 2  # batches waiting for the insert: memory is bounded by a few batches

    def __init__(self, con, table: str, partition_by: list[str]):
        self._con = con
        self._table = table
        self._quoted = quote_identifier(table)
        self._partition_by = partition_by
        self._schema = None
        self._existed = False
        self._old_rows_end = None  # the largest rowid before this write; None: nothing to replace
        self._queue = None
        self._thread = None
        self._error: BaseException | None = None
        self._stopping = None
        self.rows = 0
        self.replaced: dict[tuple, int] = {}  # partition key -> rows it held before (existing partitions)
        self.written: dict[tuple, int] = {}  # partition key -> rows written now

    def write(self, batch: pa.RecordBatch | pa.Table) -> None:
        import pyarrow as pa

        if isinstance(batch, pa.Table):
            for part in batch.to_batches():
                self.write(part)
            return
        if self._thread is None:
            self._start(batch)
        elif batch.schema != self._schema:
            try:
                batch = batch.select(self._schema.names).cast(self._schema)
            except (KeyError, pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise MlopsError(f"a batch of predictions for table {self._table} does not match the "
                                 f"first batch's columns and types: {exc}") from exc
        if self._partition_by:
            self._count_written(batch)
        self._hand_over(batch)
        self.rows += batch.num_rows

    def finish(self) -> None:
        """End the stream, wait for the insert, then delete the rows it replaces."""
        if self._thread is None:
            return  # no batch: the table stays as it was
        self._hand_over(_END)
        self._thread.join()
        self._raise_insert_error()
        if self._old_rows_end is None:
            return
        old = f"{self._quoted}.rowid <= {int(self._old_rows_end)}"
        if not self._partition_by:
            self._con.execute(f"DELETE FROM {self._quoted} WHERE {old}")
            return
        written = f"SELECT DISTINCT {', '.join(quote_identifier(c) for c in self._partition_by)} FROM {self._quoted} " \
                  f"WHERE rowid > {int(self._old_rows_end)}"  # the keys this write brought
        match = " AND ".join(
            f"{self._quoted}.{quote_identifier(c)} IS NOT DISTINCT FROM k.{quote_identifier(c)}" for c in self._partition_by
        )
        columns = ", ".join(f"k.{quote_identifier(c)}" for c in self._partition_by)
        for *key, n in self._con.execute(f"SELECT {columns}, count(*) FROM {self._quoted} JOIN ({written}) AS k "
                                         f"ON {match} WHERE {old} GROUP BY ALL").fetchall():
            self.replaced[tuple(key)] = n
        self._con.execute(f"DELETE FROM {self._quoted} USING ({written}) AS k WHERE {old} AND {match}")

    def abort(self) -> None:
        """Stop the insert (its transaction is then rolled back by the sink)."""
        if self._thread is not None and self._thread.is_alive():
            self._stopping.set()
            self._thread.join()

    def _start(self, batch) -> None:
        import queue
        import threading

        import pyarrow as pa

        con = self._con
        names = batch.schema.names
        missing_keys = [c for c in self._partition_by if c not in names]
        if missing_keys:
            raise MlopsError(f"partition column(s) {', '.join(missing_keys)} are not in the predictions")
        existing = _table_columns(con, self._table)
        if existing:
            self._existed = True
            check_same_columns(self._table, existing, names)
            self._old_rows_end = con.execute(f"SELECT max(rowid) FROM {self._quoted}").fetchall()[0][0]
        else:
            with _registered(con, _BATCH_VIEW, batch):
                con.execute(f"CREATE TABLE {self._quoted} AS SELECT * FROM {_BATCH_VIEW} LIMIT 0")
        self._schema = batch.schema
        self._queue = queue.Queue(maxsize=self._QUEUED)
        self._stopping = threading.Event()
        reader = pa.RecordBatchReader.from_batches(self._schema, self._handed_over())
        self._thread = threading.Thread(target=self._insert, args=(reader,), name="mlops-duckdb-insert", daemon=True)
        self._thread.start()

    def _insert(self, reader) -> None:
        try:
            with _registered(self._con, _BATCH_VIEW, reader):
                self._con.execute(f"INSERT INTO {self._quoted} BY NAME SELECT * FROM {_BATCH_VIEW}")
        except BaseException as exc:  # noqa: BLE001 - reported by the writer's thread
            self._error = exc

    def _handed_over(self):
        import queue

        while True:
            try:
                item = self._queue.get(timeout=0.1)
            except queue.Empty:
                if self._stopping.is_set():
                    raise _Stopped()
                continue
            if item is _END:
                return
            yield item

    def _hand_over(self, item) -> None:
        import queue

        while True:
            self._raise_insert_error()
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _raise_insert_error(self) -> None:
        if self._error is None and (self._thread is None or self._thread.is_alive() or self._queue.empty()):
            return
        if self._error is None:
            raise MlopsError(f"the insert into table {self._table} ended before its input did")
        raise MlopsError(f"could not insert predictions into table {self._table}: {self._error}") from self._error

    def _count_written(self, batch) -> None:
        for key, count in _partition_counts(batch, self._partition_by).items():
            self.written[key] = self.written.get(key, 0) + count

    def describe_replaced(self) -> str | None:
        """What re-scoring replaced, e.g. ``WEEK 20-25: 1,000 rows -> 1,300`` (None: nothing replaced)."""
        return describe_replaced(self._partition_by, self.replaced, self.written)


def _table_columns(con, table: str) -> list[str]:
    """The columns of ``table`` in ``con``'s current schema, in order ([]: no such table)."""
    return [row[0] for row in con.execute(
        "SELECT column_name FROM information_schema.columns "
        "WHERE lower(table_name) = lower(?) AND table_schema = current_schema() ORDER BY ordinal_position",
        [table],
    ).fetchall()]


@contextlib.contextmanager
def _registered(con, name: str, data):
    """``data`` (Arrow) visible to ``con``'s SQL as the view ``name`` while the block runs."""
    con.register(name, data)
    try:
        yield
    finally:
        con.unregister(name)


class _Stopped(Exception):
    """Ends the insert's input when the write is abandoned."""


_END = object()


def describe_replaced(partition_by: list[str], replaced: dict, written: dict) -> str | None:
    """One line for the partitions that existed before and were replaced: their keys (runs of
    consecutive integers shortened to ``a-b``), the rows they held and the rows written into them."""
    if not replaced:
        return None
    keys = sorted(replaced, key=lambda k: tuple((v is not None, v) for v in k))
    old = sum(replaced.values())
    new = sum(written.get(k, 0) for k in keys)
    if len(partition_by) == 1 and all(isinstance(k[0], int) for k in keys):
        values = sorted(k[0] for k in keys)
        runs, start = [], values[0]
        for a, b in zip(values, values[1:] + [None]):
            if b != a + 1:
                runs.append(f"{start}" if start == a else f"{start}-{a}")
                start = b
        label = f"{partition_by[0]} {', '.join(runs)}"
    else:
        shown = ["/".join(str(v) for v in k) for k in keys[:5]]
        label = f"{'/'.join(partition_by)} {', '.join(shown)}" + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
    return f"{label}: {old:,} rows -> {new:,}"


# ---------------------------------------------------------------------- Parquet
class ParquetSink:
    """Predictions into one Parquet file, or a hive-partitioned directory of them."""

    def __init__(self, path, partition_by: list[str] | None = None):
        self.path = path
        self.partition_by = partition_columns(partition_by)

    def as_source(self, where: str | None = None):
        """A data source reading back what this sink wrote (``kind: parquet``), e.g. for monitoring."""
        from mlops_local.sources import ParquetSource

        return ParquetSource(path=str(self.path), where=where)

    def describe(self) -> str:
        if self.partition_by:
            return f"Parquet dataset {self.path} (replacing partitions by {', '.join(self.partition_by)})"
        return f"Parquet file {self.path}"

    @contextlib.contextmanager
    def open(self):
        path = Path(self.path)
        if self.partition_by:
            if path.exists() and not path.is_dir():
                raise MlopsError(f"{path} is a file, but partitioned Parquet output is a directory")
            writer = _PartitionedParquetWriter(path, list(self.partition_by))
        else:
            if path.is_dir():
                raise MlopsError(f"{path} is a directory; give a file path or set partition_by")
            writer = _ParquetFileWriter(path)
        try:
            yield writer
        except BaseException:
            writer.abort()
            raise
        writer.commit()


class _ParquetFileWriter:
    def __init__(self, path: Path):
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._path = path
        self._tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
        self._writer: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None
        self.rows = 0

    def write(self, batch) -> None:
        import pyarrow.parquet as pq

        if self._writer is None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._schema = batch.schema
            self._writer = pq.ParquetWriter(self._tmp, self._schema, **_parquet_options(batch))
        self._writer.write(_conform(batch, self._schema))
        self.rows += batch.num_rows

    def commit(self) -> None:
        if self._writer is None:
            return
        try:
            self._writer.close()
            os.replace(self._tmp, self._path)
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise

    def abort(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
        self._tmp.unlink(missing_ok=True)


class _PartitionedParquetWriter:
    def __init__(self, path: Path, partition_by: list[str]):
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._path = path
        self._partition_by = partition_by
        self._staging = path.parent / f".{path.name}.staging-{uuid.uuid4().hex}"
        self._writers: dict[tuple, tuple[pq.ParquetWriter, Path]] = {}
        self._schema: pa.Schema | None = None
        self._options: dict | None = None  # ParquetWriter options, chosen on the first batch
        self.rows = 0

    def write(self, batch) -> None:
        import pyarrow.parquet as pq

        if self._schema is None:
            missing = [c for c in self._partition_by if c not in batch.schema.names]
            if missing:
                raise MlopsError(f"partition column(s) {', '.join(missing)} are not in the predictions")
            kept = next(iter(sorted(self._path.glob("**/*.parquet"))), None) if self._path.is_dir() else None
            if kept is not None:  # the other partitions stay: the new rows must have their columns
                check_same_columns(self._path, [*self._partition_by, *pq.read_schema(kept).names], batch.schema.names)
            self._schema = batch.schema
            self._staging.mkdir(parents=True)
        batch = _conform(batch, self._schema)
        for key, part in _split_by_partition(batch, self._partition_by):
            entry = self._writers.get(key)
            if entry is None:
                rel = Path(*(f"{c}={_partition_segment(v)}" for c, v in zip(self._partition_by, key)))
                directory = self._staging / rel
                directory.mkdir(parents=True)
                data_schema = _drop_fields(self._schema, self._partition_by)
                if self._options is None:
                    self._options = _parquet_options(batch.drop_columns(self._partition_by))
                entry = self._writers[key] = (
                    pq.ParquetWriter(directory / "part-0.parquet", data_schema, **self._options), rel
                )
            entry[0].write(part.drop_columns(self._partition_by))
        self.rows += batch.num_rows

    def commit(self) -> None:
        if self._schema is None:
            return
        done: list[tuple[Path, Path | None, bool]] = []  # (partition, its old copy, new one in place)
        try:
            for writer, _ in self._writers.values():
                writer.close()
            trash = self._staging / ".replaced"
            trash.mkdir()
            for i, (_, rel) in enumerate(self._writers.values()):
                target = self._path / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                old = trash / str(i) if target.exists() else None
                if old is not None:
                    os.replace(target, old)
                done.append((target, old, False))
                os.replace(self._staging / rel, target)
                done[-1] = (target, old, True)
        except BaseException:
            for target, old, placed in reversed(done):  # put the previous partitions back
                with contextlib.suppress(OSError):
                    if placed:
                        shutil.rmtree(target)
                    if old is not None:
                        os.replace(old, target)
            raise
        finally:
            shutil.rmtree(self._staging, ignore_errors=True)

    def abort(self) -> None:
        for writer, _ in self._writers.values():
            with contextlib.suppress(Exception):
                writer.close()
        shutil.rmtree(self._staging, ignore_errors=True)


# ---------------------------------------------------------------------- helpers
def _parquet_options(batch) -> dict:
    """ParquetWriter options for data like ``batch`` (the first one written).

    pyarrow's default tries a dictionary for every column and falls back to plain encoding only after
    hashing a page of a high-cardinality column (ids, timestamps, scores): half the cost of writing
    predictions, for nothing. Columns with few distinct values in the first 16,384 rows (at most one
    in 64, or 16) keep the dictionary: the files come out no bigger, written about 1.3x faster.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    sample = batch.slice(0, 16_384)
    limit = max(16, sample.num_rows // 64)
    dictionary = []
    for field, column in zip(sample.schema, sample.columns):
        kind = field.type
        if pa.types.is_dictionary(kind) or pa.types.is_boolean(kind):
            dictionary.append(field.name)
        elif pa.types.is_primitive(kind) or pa.types.is_string(kind) or pa.types.is_large_string(kind) \
                or pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_decimal(kind):
            try:
                distinct = pc.count_distinct(column, mode="all").as_py()
            except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
                continue
            if distinct <= limit:
                dictionary.append(field.name)
    return {"use_dictionary": dictionary}


def _conform(batch, schema: pa.Schema):
    """Later batches may differ from the first in details (dictionary vs plain strings, nulls)."""
    import pyarrow as pa

    if batch.schema.equals(schema):
        return batch
    try:
        return batch.select(schema.names).cast(schema)
    except (KeyError, pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise MlopsError(f"a batch of predictions does not match the first batch's columns: {exc}") from exc


def _drop_fields(schema: pa.Schema, names: list[str]) -> pa.Schema:
    for name in names:
        schema = schema.remove(schema.get_field_index(name))
    return schema


def _partition_counts(batch, columns: list[str]) -> dict[tuple, int]:
    """The rows of each distinct partition-value tuple of a batch, as Python values, in order of first
    appearance. Not Arrow's ``group_by``: it loads pyarrow's dataset module, which imports pandas."""
    import numpy as np

    group = _partition_groups(batch, columns)
    if group is None:
        return {}
    first = np.unique(group, return_index=True)[1]
    return {tuple(batch.column(c)[int(row)].as_py() for c in columns): int(count)
            for row, count in zip(first, np.bincount(group))}


def _partition_groups(batch, columns: list[str]):
    """Each row's group number (``numpy`` int64), groups numbered in order of first appearance: the key
    columns dictionary-encoded, nulls included. None for an empty batch."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    n = batch.num_rows
    if n == 0:
        return None
    group = np.zeros(n, dtype=np.int64)
    for column in columns:
        array = batch.column(column)
        if isinstance(array, pa.ChunkedArray):
            array = array.combine_chunks()
        if pa.types.is_dictionary(array.type):
            array = pc.cast(array, array.type.value_type)
        encoded = pc.dictionary_encode(array, null_encoding="encode")
        indices = encoded.indices  # int32, no nulls; read through its buffer: to_numpy imports pandas
        codes = np.frombuffer(indices.buffers()[1], dtype=np.int32, count=len(indices), offset=4 * indices.offset)
        group = group * len(encoded.dictionary) + codes
    if len(columns) > 1:  # renumber the combined codes in order of first appearance
        _, first, group = np.unique(group, return_index=True, return_inverse=True)
        rank = np.empty(len(first), dtype=np.int64)
        rank[np.argsort(first)] = np.arange(len(first))
        group = rank[group]
    return group


def _split_by_partition(batch, columns: list[str]):
    """(key, rows) for each distinct partition key of a batch, key as in :func:`_partition_counts`.

    One pass instead of one filter per key (:func:`_partition_groups`). Rows already grouped by key (data
    arriving in partition order, the usual case) are sliced without a copy; others are gathered once, stably."""
    import numpy as np
    import pyarrow as pa

    group = _partition_groups(batch, columns)
    if group is None:
        return
    if (np.diff(group) < 0).any():
        batch = batch.take(pa.array(np.argsort(group, kind="stable")))
    counts = np.bincount(group)
    start = 0
    for count in counts.tolist():
        key = tuple(batch.column(c)[start].as_py() for c in columns)
        yield key, batch.slice(start, count)
        start += count


def _partition_segment(value) -> str:
    if value is None:
        return _HIVE_NULL
    if isinstance(value, (dt.date, dt.datetime)):
        value = value.isoformat()
    return urllib.parse.quote(str(value), safe=" -_.:")
