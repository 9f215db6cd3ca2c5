"""Built-in data sources: generated (synthetic), CSV and Parquet, local or behind any fsspec URL.

Every source is read through a DuckDB relation, so one SQL ``where`` filter and one column projection
work the same way for every kind::

    source.read(columns=None) -> pandas.DataFrame            all matching rows (training)
    source.batches(columns=None, batch_size=262_144)          iterator of pyarrow.RecordBatch, streamed
    source.count_rows() -> int | None                         cheap count, None when it would need a scan
    source.fingerprint() -> str                               "sha256:<hex>", a content digest for lineage
    source.describe() -> str                                  one line, no I/O
    source.schema() -> [(column, DuckDB type), ...]           the columns as read, no full scan

``where`` is a DuckDB SQL boolean expression on the raw columns (``"WEEK BETWEEN 1 AND 5"``), applied
before the projection, so it may use columns that ``columns`` leaves out. Column names are matched
exactly (case included). Every problem the user can fix raises :class:`MlopsError` with one line naming
the path: missing or empty file, no rows (or none matching ``where``), unreadable CSV or Parquet, a bad
``where``, an unknown column, a remote store that cannot be reached or refuses access.

``where`` may compare with the whole table, named ``data``: ``"TS > (SELECT quantile_disc(TS, 0.7) FROM
data)"`` keeps the latest 30% of rows.

Types. Parquet files, DuckDB tables and synthetic data keep their types. A CSV file is read as it is:
``header=true`` (a header row is required; a UTF-8 BOM is ignored; title or comment lines above it are
skipped as DuckDB's sniffer finds them; ``.gz`` files are decompressed); the delimiter is the header line's
most frequent of ``, ; tab |``, else one space splitting it and the next line alike (unless given), and
numbers with decimal commas are read as numbers in a file not separated by commas; a space after every
delimiter of the header is dropped from the text values; a text column of numbers and placeholders of a
missing value (``?``, ``-``, ``n/a``...) is read as numbers; text is UTF-8, Latin-1 when the file's first MiB
is not UTF-8, or UTF-16 with its byte
order mark (unless ``encoding`` is given); DuckDB's sniffer picks every column's type from the first rows, for every file
whatever its column names (the synthetic generator's schema is the synthetic data's only). ``types`` overrides any column:
``{TS: VARCHAR, AMOUNT: double, DAY: {type: date, format: "%d/%m/%Y"}}`` (a DuckDB type or one of
string, int, float, bool, date, timestamp; a ``format`` is a strptime format). Then: values in
``null_values`` (default ``"", NA, N/A, n/a, #N/A, NULL, null, NaN, nan``) are missing; ISO-8601 timestamps
with a zone are converted to UTC; ``true/false`` in any case are BOOLEAN but ``YES/NO``-like labels stay text; codes with
leading zeros or dashes (``00012``, ``17-000003``) stay text. Refused with one message each: duplicate
column names, a line with fewer or more fields than the header (its line number), and a value that does
not parse as its column's type (the column, value, line and the ``types`` override that fixes it). In
pandas, strings are plain object columns, dates are ``datetime.date`` objects, timestamps
``datetime64[us]``.

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

from mlops_framework.contracts import check_sql_expression, partition_columns, quote_identifier, sql_string
from mlops_framework.errors import MlopsError

if TYPE_CHECKING:  # annotations only: importing these at start-up would slow every command
    import duckdb
    import pandas as pd
    import pyarrow as pa

DEFAULT_BATCH_SIZE = 262_144
# Read as missing in CSV files unless the data option's null_values says otherwise.
DEFAULT_NULL_VALUES = ("", "NA", "N/A", "n/a", "#N/A", "NULL", "null", "NaN", "nan")  # R, Excel, pandas
# Rows DuckDB's sniffer samples (its default), and that a BOOLEAN guess is checked on.
_SNIFF_ROWS = 20_480
# How long listing or checking a remote path may take before we say it cannot be reached.
_REMOTE_TIMEOUT_S = 30.0
_GLOB_CHARS = set("*?[")


@functools.cache
def _duckdb_types():
    import pyarrow as pa

    return {pa.date32(): "DATE", pa.int8(): "TINYINT", pa.int32(): "INTEGER", pa.int64(): "BIGINT",
            pa.timestamp("us"): "TIMESTAMP", pa.string(): "VARCHAR", pa.float64(): "DOUBLE"}


class _Source:
    """What every source shares. ``partition_by``: the columns a scoring sink with ``partition_by: auto``
    replaces one value at a time (None: the whole table). A subclass provides ``_open`` (a DuckDB connection and the raw
    relation), ``_label``, ``fingerprint`` and, when it can do better than None, ``count_rows``."""

    where: str | None = None
    partition_by: list[str] | None = None
    counts_cheaply = True  # count_rows() reads footers or one column, never generates or parses everything

    def read(self, columns: list[str] | None = None) -> pd.DataFrame:
        """All rows matching ``where``, only ``columns`` (all when None), as a pandas DataFrame."""
        con, rel = self._open()
        try:
            table = self._run(self._select(rel, columns).to_arrow_table)
        finally:
            con.close()
        if table.num_rows == 0:
            raise self._no_rows()
        from mlops_framework.features import to_frame

        return to_frame(table)

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

    def schema(self) -> list[tuple[str, str]]:
        """``[(column, DuckDB type name), ...]`` as :meth:`read` returns them, before ``where``. Reads no
        rows beyond what DuckDB's CSV sniffer samples (Parquet: the footers; synthetic: nothing)."""
        con, rel = self._open()
        try:
            return [(c, str(t)) for c, t in zip(rel.columns, rel.types)]
        finally:
            con.close()

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
            check_sql_expression(self.where, where="where")
            try:  # the condition may use the whole table as `data`, e.g. TS > (SELECT median(TS) FROM data)
                rel = rel.query("data", f"SELECT * FROM data WHERE {self.where}")
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
    """The generated mortgage-lending data (see :mod:`mlops_local.synthetic`); needs no file."""

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

    partition_by = ["WEEK"]  # scoring sinks with partition_by: auto replace one week at a time
    counts_cheaply = False  # with a where, counting generates every row

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

        from mlops_local import synthetic

        weeks = synthetic.generate(**self._args())  # checks the arguments now, generates lazily
        reader = pa.RecordBatchReader.from_batches(
            synthetic.SCHEMA, (batch for table in weeks for batch in table.to_batches())
        )
        con = duckdb.connect()
        if self.where and "select" in self.where.lower():  # a subquery reads the table twice: not a stream
            return con, con.from_arrow(reader.read_all())
        return con, con.from_arrow(reader)

    def schema(self) -> list[tuple[str, str]]:
        """The generator's columns as :meth:`read` returns them: the arguments are checked, nothing is
        generated, DuckDB names the types once a process (a sweep's trials each ask)."""
        from mlops_local import synthetic

        synthetic.generate(**self._args())  # the argument check only
        return list(_synthetic_schema())

    def count_rows(self) -> int:
        """Known without generating anything when there is no ``where``; else generated and counted."""
        if self.where:
            return self._count()
        from mlops_local import synthetic

        synthetic.generate(**self._args())  # the argument check only
        return int(self.weeks) * int(self.rows_per_week)

    def fingerprint(self) -> str:
        """sha256 of the generator's version and arguments and the ``where``: no data is generated."""
        from mlops_local import synthetic

        doc = {"generator": "mlops_local.synthetic", "version": synthetic.GENERATOR_VERSION,
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


@functools.cache
def _synthetic_schema() -> tuple[tuple[str, str], ...]:
    import duckdb

    from mlops_local import synthetic

    con = duckdb.connect()
    try:
        relation = con.from_arrow(synthetic.SCHEMA.empty_table())
        return tuple((column, str(type_)) for column, type_ in zip(relation.columns, relation.types))
    finally:
        con.close()


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
            return con, self._bind(con, urls, fs)
        except BaseException:
            con.close()
            raise

    def _bind(self, con, urls, fs) -> duckdb.DuckDBPyRelation:  # pragma: no cover

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

    The file is read as it is: the header line gives the delimiter (unless given), DuckDB's sniffer every
    column's type; ``types`` overrides any of them; ``null_values`` are read as missing; ``encoding`` is
    detected unless given. See the module docstring.
    ``count_rows()`` is None: counting would read the whole file.
    """

    _what = "CSV"

    def __init__(self, path: str, delimiter: str | None = None, types: dict | None = None,
                 null_values: list | None = DEFAULT_NULL_VALUES, partition_by: list | str | None = None,
                 where: str | None = None, encoding: str | None = None):
        self.path = path
        self.delimiter = delimiter
        self.encoding = encoding
        self.types = types
        self.null_values = null_values
        self.partition_by = partition_columns(partition_by)
        self.where = where

    def _label(self) -> str:
        delim = "sniffed" if self.delimiter is None else repr(self.delimiter)
        return f"CSV {self.path} (delimiter {delim})"

    def _resolve(self):
        if self.delimiter is not None and (not isinstance(self.delimiter, str) or len(self.delimiter) != 1):
            raise MlopsError(f"CSV delimiter must be one character or null, got {self.delimiter!r}")
        if self.null_values is not None and (
                isinstance(self.null_values, str) or not all(isinstance(v, str) for v in self.null_values)):
            raise MlopsError(f"null_values must be a list of strings such as ['', 'NA'], got {self.null_values!r}")
        if self.encoding is not None and _ENCODINGS.get(str(self.encoding).lower()) is None:
            raise MlopsError(f"CSV encoding must be one of {', '.join(sorted(set(_ENCODINGS.values())))} or null, "
                             f"got {self.encoding!r}")
        return super()._resolve()

    def _bind(self, con, urls, fs):
        import duckdb

        head = _csv_head(fs, urls[0], self.path)
        encoding = _ENCODINGS[str(self.encoding).lower()] if self.encoding else _encoding_of(head)
        lines = head.decode(encoding, errors="replace").removeprefix("\ufeff").split("\n")
        lines = [line.rstrip("\r") for line in lines]
        skip, delimiter = _header_position(con, urls[0], lines, self.delimiter, encoding)
        header = _csv_header(lines[skip] if skip < len(lines) else "", delimiter, self.path)
        overrides = _type_overrides(self.types, header, self.path)
        options = ["header = true", f"delim = {sql_string(delimiter)}", f"encoding = {sql_string(encoding)}"]
        if self.null_values is not None:
            options.append(f"nullstr = {_sql_list(list(self.null_values) or [''])}")
        read_types = {column: ("VARCHAR" if fmt else sql_type) for column, (sql_type, fmt) in overrides.items()}

        def bind(types):
            opts = options + ([f"types = {{{', '.join(f'{sql_string(k)}: {sql_string(v)}' for k, v in types.items())}}}"]
                              if types else [])
            return con.sql(f"SELECT * FROM read_csv({sql_string(urls[0])}, {', '.join(opts)})")

        try:
            rel = bind(read_types)  # DuckDB sniffs the dialect and the remaining columns' types
        except duckdb.Error as e:
            raise self._read_error(con, urls[0], header, options[1:3], e) from None
        if len(rel.columns) != len(header):
            raise self._read_error(con, urls[0], header, options[1:3], None)
        text = [c for c, t in zip(rel.columns, rel.types) if str(t) == "VARCHAR" and c not in overrides]
        if delimiter != "," and _decimal_comma_columns(con, urls[0], options, text):
            options.append("decimal_separator = ','")  # 12,5 is twelve and a half in this file
            rel = bind(read_types)
        sniffed_bool = [c for c, t in zip(rel.columns, rel.types) if str(t) == "BOOLEAN" and c not in overrides]
        not_bool = _not_true_false(con, urls[0], options, sniffed_bool)
        if not_bool:  # YES/NO, Y/N, T/F: labels, kept as written
            read_types.update({c: "VARCHAR" for c in not_bool})
            rel = bind(read_types)
        text = [c for c, t in zip(rel.columns, rel.types) if str(t) == "VARCHAR" and c not in overrides]
        spaced = _space_after_delimiter(lines[skip] if skip < len(lines) else "", delimiter)
        numbers = _numbers_with_placeholders(con, urls[0], options, text)
        return rel.project(", ".join(
            _numbers(c) if c in numbers else f"ltrim({quote_identifier(c)}, ' ') AS {quote_identifier(c)}"
            if spaced and c in text else _converted(c, str(t), overrides.get(c)) for c, t in zip(rel.columns, rel.types)))

    def validate(self) -> None:
        """Read every matching row once, converting every column as :meth:`read` does, so a value that does
        not parse (past the sniffer's sample, or against a ``types`` format), or no row matching ``where``,
        is refused now, not mid-way."""
        con, rel = self._open()
        try:
            selected = self._select(rel, None)
            counts = ", ".join(["count(*)", *(f"count({quote_identifier(c)})" for c in selected.columns)])
            rows = self._run(lambda: selected.aggregate(counts).fetchall())[0][0]
        finally:
            con.close()
        if rows == 0:
            raise self._no_rows()

    def _read_error(self, con, url, header, dialect, error) -> MlopsError:
        """Why the sniffer failed or saw the wrong number of columns: find the line that does not fit.
        ``dialect``: the ``delim`` and ``encoding`` options of the read."""
        import duckdb

        columns = "{" + ", ".join(f"{sql_string(c)}: 'VARCHAR'" for c in header) + "}"
        try:
            con.sql(f"SELECT count(*) FROM read_csv({sql_string(url)}, header = true, auto_detect = false, "
                    f"{', '.join(dialect)}, quote = '\"', columns = {columns})").fetchall()
        except duckdb.Error as e:
            error = e
        reason = _one_line(error) if error is not None else "the sniffer could not find the columns"
        return MlopsError(f"cannot read CSV {self.path}: {reason}")


# A column's type in the data option's ``types``: a friendly name or any DuckDB type.
_TYPE_NAMES = {"string": "VARCHAR", "str": "VARCHAR", "text": "VARCHAR", "varchar": "VARCHAR",
               "int": "BIGINT", "integer": "BIGINT", "bigint": "BIGINT", "float": "DOUBLE",
               "double": "DOUBLE", "number": "DOUBLE", "bool": "BOOLEAN", "boolean": "BOOLEAN",
               "date": "DATE", "timestamp": "TIMESTAMP", "datetime": "TIMESTAMP"}


def _type_overrides(types, header, path) -> dict[str, tuple[str, str | None]]:
    """``{column: (DuckDB type, strptime format or None)}`` from the data option's ``types``."""
    if not types:
        return {}
    if not isinstance(types, dict):
        raise MlopsError(f"types must map column names to types, e.g. {{TS: VARCHAR}}, got {types!r}")
    result = {}
    for column, spec in types.items():
        if column not in header:
            raise MlopsError(f"types names column {column!r}, which CSV {path} does not have; "
                             f"columns: {', '.join(header)}")
        fmt = None
        if isinstance(spec, dict):
            unknown = sorted(set(spec) - {"type", "format"})
            if unknown or "type" not in spec:
                raise MlopsError(f"types.{column} must be a type or {{type: ..., format: ...}}, got {spec!r}")
            spec, fmt = spec["type"], spec.get("format")
        if not isinstance(spec, str) or not spec.strip():
            raise MlopsError(f"types.{column} must be a type name such as VARCHAR, DOUBLE or timestamp, got {spec!r}")
        sql_type = _TYPE_NAMES.get(spec.strip().lower(), spec.strip().upper())
        if fmt is not None and sql_type not in ("DATE", "TIMESTAMP"):
            raise MlopsError(f"types.{column}: a format applies to date or timestamp only, not {spec}")
        result[column] = (sql_type, fmt)
    return result


def _converted(column, sniffed_type, override) -> str:
    """The projection of one column: zoned timestamps to UTC, formatted dates and timestamps parsed."""
    name = quote_identifier(column)
    if override and override[1]:
        sql_type, fmt = override
        parsed = f"try_strptime({name}, {sql_string(fmt)})"
        refusal = sql_string(f"column {column} has the value '") + f" || {name} || " + sql_string(
            f"', which does not match its types format {fmt!r}; fix the format, or read it as text with "
            f"data.types='{{{column}: VARCHAR}}'")
        return (f"CAST(CASE WHEN {name} IS NULL THEN NULL WHEN {parsed} IS NULL THEN error({refusal}) "
                f"ELSE {parsed} END AS {sql_type}) AS {name}")
    if sniffed_type == "TIMESTAMP WITH TIME ZONE":
        return f"timezone('UTC', {name}) AS {name}"
    return name


def _not_true_false(con, url, options, columns) -> list[str]:
    """Of the columns the sniffer called BOOLEAN, those whose sampled values are not all true/false."""
    if not columns:
        return []
    checks = ", ".join(
        f"bool_or(lower({quote_identifier(c)}) NOT IN ('true', 'false')) AS {quote_identifier(c)}" for c in columns)
    row = con.sql(f"SELECT {checks} FROM (SELECT * FROM read_csv({sql_string(url)}, {', '.join(options)}, "
                  f"all_varchar = true) LIMIT {_SNIFF_ROWS})").fetchall()[0]
    return [c for c, other in zip(columns, row) if other]


def _decimal_comma_columns(con, url, options, columns) -> list[str]:
    """Of the text columns, those whose sampled values are all numbers, some written with a decimal comma."""
    if not columns:
        return []
    checks = ", ".join(f"bool_and(regexp_full_match({quote_identifier(c)}, '[+-]?[0-9]*,?[0-9]+')) "
                       f"AND bool_or(contains({quote_identifier(c)}, ',')) AS {quote_identifier(c)}" for c in columns)
    row = con.sql(f"SELECT {checks} FROM (SELECT * FROM read_csv({sql_string(url)}, {', '.join(options)}, "
                  f"all_varchar = true) LIMIT {_SNIFF_ROWS})").fetchall()[0]
    return [c for c, numbers in zip(columns, row) if numbers]


def _space_after_delimiter(header: str, delimiter: str) -> bool:
    """Whether the header puts a space after every delimiter (``age, workclass, income``): the file's text
    values then start with that space too, which is formatting, not data."""
    return delimiter in header and header.count(delimiter) == header.count(delimiter + " ")


def _numbers_with_placeholders(con, url, options, columns) -> list[str]:
    """Of the text columns, those whose sampled values are all numbers but for a placeholder of a missing
    value (``?`` in UCI files, ``-``, ``.``, ``n/a``, ``nan``, ``none``, ``missing``), at least one of each;
    codes with leading zeros (``00012``) stay text."""
    if not columns:
        return []
    checks = ", ".join(
        f"count(*) FILTER (WHERE {_placeholder(c)}) > 0 AND count(*) FILTER (WHERE NOT {_placeholder(c)} "
        f"AND (TRY_CAST(trim({quote_identifier(c)}) AS DOUBLE) IS NULL "
        f"OR regexp_matches(trim({quote_identifier(c)}), '^[+-]?0[0-9]'))) = 0 AS {quote_identifier(c)}" for c in columns)
    row = con.sql(f"SELECT {checks} FROM (SELECT * FROM read_csv({sql_string(url)}, {', '.join(options)}, "
                  f"all_varchar = true) LIMIT {_SNIFF_ROWS})").fetchall()[0]
    return [c for c, numbers in zip(columns, row) if numbers]


_PLACEHOLDERS = ("?", "-", "--", ".", "n/a", "na", "nan", "none", "missing")


def _placeholder(column) -> str:
    return f"lower(trim({quote_identifier(column)})) IN ({', '.join(map(sql_string, _PLACEHOLDERS))})"


def _numbers(column) -> str:
    """The projection of a column of numbers and placeholders (:func:`_numbers_with_placeholders`): DOUBLE,
    the placeholders missing; a value past the sampled rows that is neither is refused naming the column."""
    name = quote_identifier(column)
    refusal = sql_string(f"column {column} holds numbers and placeholders of missing values in its first rows, "
                         f"then the value '") + f" || {name} || " + sql_string(
        f"'; read it as text with data.types='{{{column}: VARCHAR}}'")
    number = f"TRY_CAST(trim({name}) AS DOUBLE)"
    return (f"CASE WHEN {name} IS NULL OR {_placeholder(column)} THEN NULL WHEN {number} IS NULL "
            f"THEN error({refusal}) ELSE {number} END AS {name}")


def _header_position(con, url, lines, delimiter, encoding) -> tuple[int, str]:
    """How many lines come before the header (a comment or title line), and the delimiter (given, or the
    header line's most frequent of , ; tab |). The first line is the header when the second splits into as
    many fields by its delimiter; else the header is where DuckDB's sniffer finds it (0 when it cannot tell:
    the read that follows then says why)."""
    import duckdb

    first = delimiter or _delimiter_of(lines[0], lines[1] if len(lines) > 1 else "")
    if len(lines) < 2 or _fields(lines[0], first) == _fields(lines[1], first):
        return 0, first
    given = f", delim = {sql_string(delimiter)}" if delimiter else ""
    try:
        skip = int(con.sql(f"SELECT SkipRows FROM sniff_csv({sql_string(url)}, header = true, "
                           f"encoding = {sql_string(encoding)}{given})").fetchall()[0][0])
    except duckdb.Error:
        skip = 0
    return skip, delimiter or _delimiter_of(*(lines[skip:skip + 2] if skip < len(lines) else [""]))


def _fields(line: str, delimiter: str) -> int:
    import csv

    return len(next(csv.reader([line], delimiter=delimiter), []))


# The encodings DuckDB reads without an extension, by the names a user may give them.
_ENCODINGS = {"utf-8": "utf-8", "utf8": "utf-8", "utf-16": "utf-16", "utf16": "utf-16", "latin-1": "latin-1",
              "latin1": "latin-1", "iso-8859-1": "latin-1", "cp1252": "latin-1", "windows-1252": "latin-1"}


def _csv_head(fs, url, path) -> bytes:
    """The file's first MiB, decompressed as DuckDB reads it (by the file's extension: ``.gz``, ...)."""
    try:
        with fs.open(url, "rb", compression="infer") as f:
            return f.read(1 << 20)
    except (OSError, EOFError, ValueError) as e:
        raise MlopsError(f"cannot read CSV {path}: {_one_line(e)}") from None


def _encoding_of(head: bytes) -> str:
    """UTF-16 with its byte order mark, UTF-8 when ``head`` decodes as such (a character cut at its end
    aside), else Latin-1 (the usual export of Windows spreadsheets)."""
    import codecs

    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return "latin-1"
    return "utf-8"


def _delimiter_of(line: str, next_line: str = "") -> str:
    """The most frequent of , ; tab | in ``line``; when none is there, a single space if it splits ``line``
    and ``next_line`` into as many fields, none empty (R's ``write.table``); else a comma."""
    counts = {d: line.count(d) for d in (",", ";", "\t", "|")}
    if any(counts.values()):
        return max(counts, key=counts.get)
    spaced = line.strip() == line and "  " not in line and _fields(line, " ") > 1
    return " " if spaced and _fields(line, " ") == _fields(next_line.strip(), " ") else ","


def _csv_header(line: str, delimiter: str, path) -> list[str]:
    """The header row's names, read with Python's csv module; duplicate names refused."""
    import csv
    import io

    names = next(csv.reader(io.StringIO(line), delimiter=delimiter), [])
    if len(names) > 1 and all(_is_number(n) for n in names):
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        raise MlopsError(f"CSV {path} has a line of numbers where its header should be ({shown}): a CSV's first "
                         "line names its columns")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise MlopsError(f"CSV {path} has duplicate column names: {', '.join(map(repr, twice))}; "
                         "rename them in the header so each column has one name")
    return names


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _refuse_duplicate_header(con, url, options, columns, label):
    """DuckDB renames a repeated header name (``X``, ``X_1``): refuse such a file, naming the columns."""
    import re

    suspects = [c for c in columns if (m := re.fullmatch(r"(.+)_\d+", c)) and m[1] in columns]
    if not suspects:
        return
    opts = [o for o in options if o != "header = true"] + ["header = false", "all_varchar = true"]
    header = con.sql(f"SELECT * FROM read_csv({sql_string(url)}, {', '.join(opts)}) LIMIT 1").fetchall()[0]
    twice = sorted({name for name in header if header.count(name) > 1})
    if twice:
        raise MlopsError(f"CSV {label} has the column(s) {', '.join(map(repr, twice))} more than once; "
                         f"rename them in the header")


class ParquetSource(_FileSource):
    """Parquet: one file, a directory of files (searched recursively; names starting with ``_`` or
    ``.`` are skipped) or a glob such as ``gs://bucket/loans/*.parquet``; local or any fsspec URL."""

    _what = "Parquet"
    _many = True

    def __init__(self, path: str, partition_by: list | str | None = None, where: str | None = None):
        self.path = path
        self.partition_by = partition_columns(partition_by)
        self.where = where

    def _label(self) -> str:
        return f"Parquet {self.path}"

    def _bind(self, con, urls, fs):
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
    elif "Could not convert string" in str(exc) and "is being converted as type" in str(exc):
        column = next(x for x in lines if "is being converted as type" in x)
        name, _, sql_type = column.removeprefix("Column ").partition(" is being converted as type ")
        line_no = lines[0].split("CSV Error on Line:")[-1].strip() if "CSV Error on Line" in lines[0] else "?"
        value = next((x.split("Could not convert string", 1)[1].split(" to ")[0].strip() for x in lines
                      if "Could not convert string" in x), "?")
        line = (f"column {name} (read as {sql_type}) has the value {value} on line {line_no}; "
                f"read it as text with data.types='{{{name}: VARCHAR}}' (or give its type)")
    elif "Expected Number of Columns" in str(exc):
        counts = next(x for x in lines if x.startswith("Expected Number of Columns"))
        expected, _, found = counts.removeprefix("Expected Number of Columns:").partition("Found:")
        line_no = lines[0].split("CSV Error on Line:")[-1].strip()
        line = (f"line {line_no} has {found.strip()} field(s) where the header has {expected.strip()} "
                "(a short, truncated or badly quoted line)")
    elif "CSV Error on Line" in lines[0]:  # the reason is on a later line
        skip = ("Original Line", "Possible Solution", "file =")
        reason = next((x for x in lines[1:] if not x.startswith(skip)), "")
        line = f"{lines[0]}: {reason}" if reason else lines[0]
    else:
        line = lines[0]
    line = line if len(line) <= 300 else line[:297] + "..."
    if "not utf-8 encoded" in str(exc):
        line += " (a Windows or Latin-1 file? set data.encoding=latin-1)"
    return line


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

    def __init__(self, path: str, table: str, partition_by: list | str | None = None, where: str | None = None):
        self.path = path
        self.table = table
        self.partition_by = partition_columns(partition_by)
        self.where = where

    def _label(self) -> str:
        return f"DuckDB table {self.table} in {self.path}"

    def duckdb_table(self) -> tuple[str, str, str | None]:
        return str(self.path), self.table, self.where

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
