"""Built-in data sources: generated (synthetic), CSV and Parquet, local or behind any fsspec URL.

Every source is read through a DuckDB relation, so one SQL ``where`` filter and one column projection
work the same way for every kind::

    source.read(columns=None) -> pandas.DataFrame            all matching rows (training)
    source.batches(columns=None, batch_size=262_144)          iterator of pyarrow.RecordBatch, streamed
    source.count_rows() -> int | None                         cheap count, None when it would need a scan
    source.fingerprint() -> str                               "sha256:<hex>", a content digest for lineage
    source.describe() -> str                                  one line, no I/O

``where`` is a DuckDB SQL boolean expression on the raw columns (``"WEEK BETWEEN 1 AND 5"``), applied
before the projection, so it may use columns that ``columns`` leaves out. Column names are matched
exactly (case included). Every problem the user can fix raises :class:`MlopsError` with one line naming
the path: missing or empty file, no rows (or none matching ``where``), unreadable CSV or Parquet, a bad
``where``, an unknown column, a remote store that cannot be reached or refuses access.

Types. Parquet and synthetic data keep their Arrow types. CSV files are read with ``header=true``
(a header row is required) and DuckDB's sniffer picks the delimiter (unless given) and the types, except
for columns named like the synthetic data's (:data:`mlops_framework.synthetic.SCHEMA`), which are
always read as those types (WEEK INTEGER, WEEK_START_DATE DATE, TS TIMESTAMP, incomes DOUBLE, names
VARCHAR, MORTGAGERESPONSE TINYINT), so a CSV of the demo data reads back exactly as generated, whole-number
incomes stay floats and numeric-looking names stay strings. DuckDB's sniffer already keeps codes with
leading zeros ("053") as strings. In pandas, strings are plain object columns, dates are
``datetime.date`` objects, timestamps ``datetime64[us]``.

Remote files (``gs://``, ``s3://``, ``memory://``, any fsspec protocol) are listed and checked through
fsspec, then read by DuckDB through the same fsspec filesystem (``register_filesystem``). For ``gs://``
the environment variable ``STORAGE_EMULATOR_HOST`` selects an emulator (then anonymous access), and
``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT`` defaults to ``false`` (otherwise each bucket stalls 60 s).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import posixpath
from collections.abc import Iterator
from typing import TYPE_CHECKING

from mlops_framework.contracts import quote_identifier, sql_string  # noqa: F401  (shared with plugins)
from mlops_framework.errors import MlopsError

if TYPE_CHECKING:  # annotations only: importing these at start-up would slow every command
    import duckdb
    import pandas as pd
    import pyarrow as pa

DEFAULT_BATCH_SIZE = 262_144
# How long listing or checking a remote path may take before we say it cannot be reached.
_REMOTE_TIMEOUT_S = 30.0
_GLOB_CHARS = set("*?[")


@functools.cache
def _duckdb_types():
    import pyarrow as pa

    return {pa.date32(): "DATE", pa.int8(): "TINYINT", pa.int32(): "INTEGER", pa.int64(): "BIGINT",
            pa.timestamp("us"): "TIMESTAMP", pa.string(): "VARCHAR", pa.float64(): "DOUBLE"}


class _Source:
    """What every source shares. A subclass provides ``_open`` (a DuckDB connection and the raw
    relation), ``_label``, ``fingerprint`` and, when it can do better than None, ``count_rows``."""

    where: str | None = None

    def read(self, columns: list[str] | None = None) -> pd.DataFrame:
        """All rows matching ``where``, only ``columns`` (all when None), as a pandas DataFrame."""
        con, rel = self._open()
        try:
            table = self._run(self._select(rel, columns).to_arrow_table)
        finally:
            con.close()
        if table.num_rows == 0:
            raise self._no_rows()
        return table.to_pandas()

    def batches(
        self, columns: list[str] | None = None, batch_size: int = DEFAULT_BATCH_SIZE
    ) -> Iterator[pa.RecordBatch]:
        """Stream the rows as Arrow record batches of at most ``batch_size`` rows, holding a few batches
        in memory. Problems found before the first row (path, ``where``, columns) raise at the call."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise MlopsError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
        con, rel = self._open()
        try:
            selected = self._select(rel, columns)
            reader = self._run(lambda: selected.to_arrow_reader(batch_size))
        except BaseException:
            con.close()
            raise
        return self._stream(con, reader)

    def count_rows(self) -> int | None:
        """The number of rows matching ``where``; None when that would need reading all the data."""
        return None

    def fingerprint(self) -> str:  # pragma: no cover - every source overrides it
        raise NotImplementedError

    def describe(self) -> str:
        """One line for ``mlops plan``; touches nothing."""
        return self._label() + (f" where {self.where}" if self.where else "")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"

    # -- shared machinery -------------------------------------------------------------------------

    def _label(self) -> str:  # pragma: no cover
        raise NotImplementedError

    def _open(self) -> tuple[duckdb.DuckDBPyConnection, duckdb.DuckDBPyRelation]:  # pragma: no cover

        raise NotImplementedError

    def _stream(self, con, reader) -> Iterator[pa.RecordBatch]:
        rows = 0
        try:
            while True:
                try:
                    batch = self._run(reader.read_next_batch)
                except StopIteration:
                    break
                rows += batch.num_rows
                if batch.num_rows:
                    yield batch
        finally:
            con.close()
        if rows == 0:
            raise self._no_rows()

    def _count(self) -> int:
        con, rel = self._open()
        try:
            selected = self._select(rel, None)
            return int(self._run(lambda: selected.aggregate("count(*)").fetchall()[0][0]))
        finally:
            con.close()

    def _select(self, rel, columns) -> duckdb.DuckDBPyRelation:
        import duckdb

        available = rel.columns
        if columns is not None:
            if isinstance(columns, str) or not all(isinstance(c, str) for c in columns):
                raise MlopsError(f"columns must be a list of column names, got {columns!r}")
            if not columns:
                raise MlopsError(f"columns is empty: name at least one column of {self._label()}")
            for c in columns:
                if c not in available:
                    near = [a for a in available if a.lower() == c.lower()]
                    hint = f" (did you mean {near[0]!r}?)" if near else ""
                    raise MlopsError(
                        f"unknown column {c!r}{hint} in {self._label()}; available: {', '.join(available)}"
                    )
            twice = sorted({c for c in columns if columns.count(c) > 1})
            if twice:
                raise MlopsError(f"columns lists {', '.join(map(repr, twice))} more than once")
        if self.where is not None:
            if not isinstance(self.where, str) or not self.where.strip():
                raise MlopsError(f"where must be a SQL condition such as \"WEEK <= 5\", got {self.where!r}")
            try:
                rel = rel.filter(self.where)
            except duckdb.Error as e:
                raise MlopsError(
                    f"bad where {self.where!r} for {self._label()}: {_one_line(e)}; "
                    f"available columns: {', '.join(available)}"
                ) from None
        if columns is not None:
            rel = rel.project(", ".join(quote_identifier(c) for c in columns))
        return rel

    def _run(self, fn):
        """Call ``fn`` (a DuckDB execution), turning engine errors into one-line MlopsErrors."""
        import duckdb

        try:
            return fn()
        except duckdb.Error as e:
            what = f" with where {self.where!r}" if self.where else ""
            raise MlopsError(f"cannot read {self._label()}{what}: {_one_line(e)}") from None

    def _no_rows(self) -> MlopsError:
        if self.where:
            return MlopsError(f"no rows match where {self.where!r} in {self._label()}")
        return MlopsError(f"no rows in {self._label()}")


# -- synthetic ------------------------------------------------------------------------------------


class SyntheticSource(_Source):
    """The generated mortgage-lending data (see :mod:`mlops_framework.synthetic`); needs no file."""

    def __init__(
        self,
        weeks: int = 20,
        rows_per_week: int = 5000,
        seed: int = 0,
        drift_from_week: int | None = None,
        drift_strength: float = 1.0,
        start_date: str = "2024-01-01",
        where: str | None = None,
    ):
        self.weeks = weeks
        self.rows_per_week = rows_per_week
        self.seed = seed
        self.drift_from_week = drift_from_week
        self.drift_strength = drift_strength
        self.start_date = start_date
        self.where = where

    def _args(self) -> dict:
        return {
            "weeks": self.weeks,
            "rows_per_week": self.rows_per_week,
            "seed": self.seed,
            "drift_from_week": self.drift_from_week,
            "drift_strength": self.drift_strength,
            "start_date": self.start_date,
        }

    def _open(self):
        import duckdb
        import pyarrow as pa

        from mlops_framework import synthetic

        weeks = synthetic.generate(**self._args())  # checks the arguments now, generates lazily
        reader = pa.RecordBatchReader.from_batches(
            synthetic.SCHEMA, (batch for table in weeks for batch in table.to_batches())
        )
        con = duckdb.connect()
        return con, con.from_arrow(reader)

    def count_rows(self) -> int:
        """Known without generating anything when there is no ``where``; else generated and counted."""
        if self.where:
            return self._count()
        from mlops_framework import synthetic

        synthetic.generate(**self._args())  # the argument check only
        return int(self.weeks) * int(self.rows_per_week)

    def fingerprint(self) -> str:
        """sha256 of the generator's version and arguments and the ``where``: no data is generated."""
        from mlops_framework import synthetic

        doc = {"generator": "mlops_framework.synthetic", "version": synthetic.GENERATOR_VERSION,
               **self._args(), "where": self.where}
        return "sha256:" + hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()

    def _label(self) -> str:
        drift = (
            f"drift from week {self.drift_from_week} (strength {self.drift_strength})"
            if self.drift_from_week is not None else "no drift"
        )
        rows = f"{self.rows_per_week:,}" if isinstance(self.rows_per_week, int) else repr(self.rows_per_week)
        return (
            f"synthetic mortgage data: {self.weeks} weeks x {rows} rows from {self.start_date}, "
            f"seed {self.seed}, {drift}"
        )


# -- files ----------------------------------------------------------------------------------------


class _FileSource(_Source):
    path: str
    _what = "file"
    _many = False

    def _resolve(self) -> tuple[object, list[str]]:
        """Check the path now (it may have changed since the last call) and list its files."""
        return _resolve(self.path, self._what, allow_many=self._many)

    def _open(self):
        import duckdb

        fs, urls = self._resolve()
        con = duckdb.connect()
        try:
            if not _is_local(fs):
                con.register_filesystem(fs)
            return con, self._bind(con, urls)
        except BaseException:
            con.close()
            raise

    def _bind(self, con, urls) -> duckdb.DuckDBPyRelation:  # pragma: no cover

        raise NotImplementedError

    def fingerprint(self) -> str:
        """sha256 of the file's bytes (``sha256sum`` prints the same hex) for one file and no ``where``;
        otherwise sha256 over each file's name and digest, then the ``where``. Files are streamed."""
        fs, urls = self._resolve()
        digests = [(url, _sha256_file(fs, url)) for url in urls]
        if len(digests) == 1 and not self.where:
            return "sha256:" + digests[0][1]
        h = hashlib.sha256()
        for url, digest in digests:
            h.update(f"{posixpath.basename(url)}\t{digest}\n".encode())
        h.update(f"where\t{self.where or ''}\n".encode())
        return "sha256:" + h.hexdigest()


class CsvSource(_FileSource):
    """One CSV file with a header row: a local path or an fsspec URL such as ``gs://bucket/loans.csv``.

    ``delimiter`` None lets DuckDB sniff it. See the module docstring for the column types.
    ``count_rows()`` is None: counting would read the whole file.
    """

    _what = "CSV"

    def __init__(self, path: str, delimiter: str | None = None, where: str | None = None):
        self.path = path
        self.delimiter = delimiter
        self.where = where

    def _label(self) -> str:
        delim = "sniffed" if self.delimiter is None else repr(self.delimiter)
        return f"CSV {self.path} (delimiter {delim})"

    def _resolve(self):
        if self.delimiter is not None and (not isinstance(self.delimiter, str) or len(self.delimiter) != 1):
            raise MlopsError(f"CSV delimiter must be one character or null, got {self.delimiter!r}")
        return super()._resolve()

    def _bind(self, con, urls):
        import duckdb

        from mlops_framework.synthetic import SCHEMA

        options = ["header = true"]
        if self.delimiter is not None:
            options.append(f"delim = {sql_string(self.delimiter)}")

        def bind(opts):
            return con.sql(f"SELECT * FROM read_csv({sql_string(urls[0])}, {', '.join(opts)})")

        try:
            rel = bind(options)  # DuckDB sniffs the header and types
            known = {f.name: _duckdb_types()[f.type] for f in SCHEMA if f.name in rel.columns}
            if known:
                types = ", ".join(f"{sql_string(k)}: {sql_string(v)}" for k, v in known.items())
                rel = bind(options + [f"types = {{{types}}}"])
        except duckdb.Error as e:
            raise MlopsError(f"cannot read CSV {self.path}: {_one_line(e)}") from None
        return rel


class ParquetSource(_FileSource):
    """Parquet: one file, a directory of files (searched recursively; names starting with ``_`` or
    ``.`` are skipped) or a glob such as ``gs://bucket/loans/*.parquet``; local or any fsspec URL."""

    _what = "Parquet"
    _many = True

    def __init__(self, path: str, where: str | None = None):
        self.path = path
        self.where = where

    def _label(self) -> str:
        return f"Parquet {self.path}"

    def _bind(self, con, urls):
        import duckdb

        try:
            return con.sql(f"SELECT * FROM read_parquet({_sql_list(urls)})")
        except duckdb.Error as e:
            raise MlopsError(
                f"cannot read Parquet {self.path} (corrupt, or not Parquet): {_one_line(e)}"
            ) from None

    def count_rows(self) -> int:
        """From the files' footers without ``where`` (no data read); with it, DuckDB counts the
        matching rows, reading only the columns the condition uses."""
        import duckdb

        if self.where:
            return self._count()
        fs, urls = self._resolve()
        con = duckdb.connect()
        try:
            if not _is_local(fs):
                con.register_filesystem(fs)
            query = f"SELECT sum(num_rows) FROM parquet_file_metadata({_sql_list(urls)})"
            return int(self._run(lambda: con.sql(query).fetchall()[0][0]) or 0)
        finally:
            con.close()


# -- helpers --------------------------------------------------------------------------------------


def _one_line(exc: BaseException) -> str:
    """The useful line of an engine error: DuckDB's first line, or the last line of a Python traceback
    that DuckDB wrapped (an fsspec filesystem failing inside a read)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    if lines[0].startswith("Traceback"):
        line = lines[-1]
    elif "CSV Error on Line" in lines[0]:  # the reason is on a later line
        skip = ("Original Line", "Possible Solution", "file =")
        reason = next((x for x in lines[1:] if not x.startswith(skip)), "")
        line = f"{lines[0]}: {reason}" if reason else lines[0]
    else:
        line = lines[0]
    return line if len(line) <= 300 else line[:297] + "..."


def _sql_list(values: list[str]) -> str:
    return "[" + ", ".join(sql_string(v) for v in values) + "]"


def _is_local(fs) -> bool:
    return "file" in _protocols(fs)


def _protocols(fs) -> tuple[str, ...]:
    p = fs.protocol
    return (p,) if isinstance(p, str) else tuple(p)


def _filesystem(protocol: str | None):
    """The fsspec filesystem for a protocol (None: local), with the GCS emulator honoured."""
    import fsspec

    if protocol in (None, "file", "local"):
        return fsspec.filesystem("file")
    kwargs: dict = {"skip_instance_cache": True}  # a fresh view: no stale listings, current env
    if protocol in ("gs", "gcs"):
        os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
        if os.environ.get("STORAGE_EMULATOR_HOST", "") not in ("", "default"):
            kwargs["token"] = "anon"
    try:
        fs = fsspec.filesystem(protocol, **kwargs)
        if protocol in ("gs", "gcs"):
            # DuckDB never closes the files it opens through fsspec; gcsfs's default "adaptive" cache
            # then leaves a background prefetch task pending ("Task was destroyed but it is
            # pending!"). The plain read-ahead cache has no background task.
            fs.open = functools.partial(fs.open, cache_type="readahead")
        return fs
    except ImportError as e:
        raise MlopsError(f"reading {protocol}:// paths needs an extra package: {_one_line(e)}") from None
    except ValueError as e:
        raise MlopsError(f"unknown storage protocol {protocol}:// ({_one_line(e)})") from None


def _call(fs, path: str, method: str, *args):
    """``fs.method(*args)`` with remote failures (unreachable, forbidden, timed out) as MlopsError."""
    fn = getattr(fs, method)
    if _is_local(fs):
        return fn(*args)
    from fsspec.asyn import AsyncFileSystem

    kwargs = {"timeout": _REMOTE_TIMEOUT_S} if isinstance(fs, AsyncFileSystem) else {}
    try:
        return fn(*args, **kwargs)
    except FileNotFoundError:
        raise
    except Exception as e:  # the remote store's own errors: many libraries, many classes
        text = _one_line(e)
        if type(e).__name__ == "FSTimeoutError":
            reason = f"no answer within {_REMOTE_TIMEOUT_S:g} s"
        elif "forbidden" in text.lower() or "401" in text or "403" in text or "credential" in text.lower():
            reason = f"access refused ({text}); check the credentials"
        else:
            reason = f"{type(e).__name__}: {text}"
        hint = (
            f" (storage emulator at {os.environ['STORAGE_EMULATOR_HOST']})"
            if _protocols(fs)[0] in ("gs", "gcs") and os.environ.get("STORAGE_EMULATOR_HOST") else ""
        )
        raise MlopsError(f"cannot reach or authorise {path}{hint}: {reason}") from None


def _resolve(path: str, what: str, *, allow_many: bool) -> tuple[object, list[str]]:
    """Check ``path`` and list the files it names: (filesystem, URLs or local paths DuckDB reads)."""
    from fsspec.core import split_protocol

    if not isinstance(path, str) or not path.strip():
        raise MlopsError(f"{what} path must be a file path or URL, got {path!r}")
    protocol, _ = split_protocol(path)
    fs = _filesystem(protocol)
    local = _is_local(fs)
    bare = fs._strip_protocol(os.path.expanduser(path) if local else path)

    def url(p: str) -> str:
        return p if local else fs.unstrip_protocol(p)

    try:
        if allow_many and _GLOB_CHARS & set(bare):
            found = sorted(p for p in _call(fs, path, "glob", bare) if _call(fs, path, "isfile", p))
            if not found:
                raise MlopsError(f"no {what} files match {path}")
        else:
            info = _call(fs, path, "info", bare)
            if info.get("type") == "directory":
                if not allow_many:
                    raise MlopsError(f"{what} path {path} is a directory; name one file")
                root = bare.rstrip("/")
                found = sorted(
                    p for p in _call(fs, path, "find", root)
                    if not any(part[:1] in "._" for part in posixpath.relpath(p, root).split("/"))
                )
                if not found:
                    raise MlopsError(f"no {what} files in directory {path}")
            else:
                found = [bare]
    except FileNotFoundError:
        raise MlopsError(f"{what} file not found: {path}") from None
    for p in found:
        size = _call(fs, path, "size", p)
        if not size:
            raise MlopsError(f"empty file: {url(p) if len(found) > 1 else path} ({what} needs data)")
    return fs, [url(p) for p in found]


def _sha256_file(fs, url: str) -> str:
    h = hashlib.sha256()
    try:
        with fs.open(url, "rb", block_size=8 << 20) as f:
            while chunk := f.read(8 << 20):
                h.update(chunk)
    except FileNotFoundError:
        raise MlopsError(f"file not found: {url} (it went away while being fingerprinted)") from None
    except OSError as e:
        raise MlopsError(f"cannot read {url} to fingerprint it: {_one_line(e)}") from None
    return h.hexdigest()


# -- a DuckDB table -------------------------------------------------------------------------------


class DuckDBTableSource(_Source):
    """A table of a local DuckDB file, such as the warehouse's scored predictions (``kind: duckdb``).

    The file is opened read-only for each read, so a table written by an earlier stage of the same run
    (``DuckDBSink.as_source()``) is read back as committed."""

    def __init__(self, path: str, table: str, where: str | None = None):
        self.path = path
        self.table = table
        self.where = where

    def _label(self) -> str:
        return f"DuckDB table {self.table} in {self.path}"

    def _open(self):
        import duckdb

        if not os.path.isfile(str(self.path)):
            raise MlopsError(f"DuckDB file not found: {self.path} (has anything been scored into it yet?)")
        try:
            con = duckdb.connect(str(self.path), read_only=True)
        except duckdb.Error as e:
            raise MlopsError(f"cannot open the DuckDB file {self.path}: {_one_line(e)}") from None
        try:
            return con, con.table(quote_identifier(self.table))
        except duckdb.Error:
            tables = sorted(row[0] for row in con.execute("SHOW TABLES").fetchall())
            con.close()
            raise MlopsError(f"no table {self.table} in {self.path}; tables: {', '.join(tables) or 'none'}") from None

    def count_rows(self) -> int:
        return self._count()

    def fingerprint(self) -> str:
        """sha256 of the table's name, the ``where``, its row count and an order-independent hash of
        its rows (DuckDB's ``hash``), computed in the database."""
        con, rel = self._open()
        try:
            selected = self._select(rel, None)
            count, digest = self._run(
                lambda: selected.query("x", "SELECT count(*), bit_xor(hash(x)) FROM x").fetchall()[0])
        finally:
            con.close()
        doc = {"duckdb_table": self.table, "where": self.where, "rows": count, "hash": str(digest)}
        return "sha256:" + hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
