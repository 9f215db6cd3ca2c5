"""``data=snowflake`` and the Snowflake predictions sink.

:class:`SnowflakeSource` is a table or a query, optionally filtered by ``where`` (a SQL condition). It is
a Snowpark DataFrame until a stage needs pandas: ``read(columns)`` pulls only those columns of the rows
matching ``where``; ``batches()`` streams ``to_pandas_batches`` as Arrow record batches;
``snowpark_dataframe()`` hands the lazy DataFrame to the Snowpark backend, which never pulls it.

:class:`SnowflakeSink` writes predictions all-or-nothing: the rows are first loaded into a temporary
staging table, then one transaction deletes the partitions present in the new rows (all rows without
``partition_by``) and inserts them, so re-scoring a week replaces that week only. A failure before the
COMMIT leaves the table as it was; the staging table disappears with the session in any case.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import uuid
from typing import Iterator

from mlops_framework.errors import MlopsError

from mlops_snowflake import connection as connection_module

DEFAULT_BATCH_SIZE = 262_144
_PART = r'(?:[A-Za-z_][A-Za-z0-9_$]*|"(?:[^"]|"")+")'
TABLE_NAME = re.compile(rf"^{_PART}(?:\.{_PART}){{0,2}}$")


def quote(name: str) -> str:
    """A column name as a SQL identifier, double-quoted (Snowflake is then case-sensitive, like pandas)."""
    return '"' + str(name).replace('"', '""') + '"'


def unquote(identifier: str) -> str:
    """Snowpark's column identifier (``NAME`` or ``"Mixed"``) as the plain column name."""
    identifier = str(identifier)
    if len(identifier) > 1 and identifier[0] == identifier[-1] == '"':
        return identifier[1:-1].replace('""', '"')
    return identifier


def _check_table(table, what: str) -> str:
    if not isinstance(table, str) or not TABLE_NAME.match(table):
        raise MlopsError(f"{what} {table!r} is not a Snowflake table name ([DATABASE.][SCHEMA.]TABLE; quote "
                         f"mixed-case parts with double quotes)")
    return table


def _one_line(error) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")


# ---------------------------------------------------------------------------------------------- source
class SnowflakeSource:
    """Rows of a Snowflake table or query (exactly one of ``table``, ``query``), filtered by ``where``."""

    def __init__(self, connection=None, table: str | None = None, query: str | None = None, where: str | None = None):
        self.connection = connection
        self.table = table
        self.query = query
        self.where = where

    def _relation(self) -> str:
        if (self.table is None) == (self.query is None):
            raise MlopsError("data: set exactly one of data.table (a Snowflake table) and data.query (a SELECT)")
        if self.table is not None:
            return _check_table(self.table, "data.table")
        if not isinstance(self.query, str) or not self.query.strip():
            raise MlopsError(f"data.query must be a SELECT statement, got {self.query!r}")
        return f"({self.query.strip().rstrip(';')})"

    def _check_where(self) -> None:
        if self.where is not None and (not isinstance(self.where, str) or not self.where.strip()):
            raise MlopsError(f"where must be a SQL condition such as \"WEEK <= 5\", got {self.where!r}")

    def sql(self, columns: list[str] | None = None) -> str:
        """The SELECT this source stands for (what ``read(columns)`` runs in Snowflake)."""
        self._check_where()
        selected = ", ".join(quote(c) for c in columns) if columns else "*"
        where = f" WHERE {self.where}" if self.where else ""
        return f"SELECT {selected} FROM {self._relation()}{where}"

    def describe(self) -> str:
        self._relation()
        what = f"Snowflake table {self.table}" if self.table is not None else f"Snowflake query {self.query!r}"
        return what + (f" where {self.where}" if self.where else "")

    def __repr__(self) -> str:
        return f"<SnowflakeSource {self.table or self.query!r}>"

    def snowpark_dataframe(self, columns: list[str] | None = None):
        """The rows as a lazy Snowpark DataFrame (nothing is pulled); only ``columns`` when given."""
        relation = self._relation()
        self._check_where()
        session = connection_module.resolve(self.connection).session()
        try:
            df = session.table(self.table) if self.table is not None else session.sql(relation[1:-1])
            available = [unquote(c) for c in df.columns]
        except MlopsError:
            raise
        except Exception as error:
            raise MlopsError(f"cannot read {self.describe()}: {_one_line(error)}") from error
        if columns is not None:
            self._check_columns(columns, available)
        if self.where:
            df = df.filter(self.where)
        if columns is not None:
            df = df.select([quote(c) for c in columns])
        return df

    def _check_columns(self, columns, available) -> None:
        if isinstance(columns, str) or not all(isinstance(c, str) for c in columns) or not columns:
            raise MlopsError(f"columns must be a non-empty list of column names, got {columns!r}")
        for c in columns:
            if c not in available:
                near = [a for a in available if a.lower() == c.lower()]
                hint = f" (column names are case-sensitive: did you mean {near[0]!r}?)" if near else ""
                raise MlopsError(f"unknown column {c!r}{hint} in {self.describe()}; available: {', '.join(available)}")
        twice = sorted({c for c in columns if columns.count(c) > 1})
        if twice:
            raise MlopsError(f"columns lists {', '.join(map(repr, twice))} more than once")

    def read(self, columns: list[str] | None = None):
        """The rows matching ``where``, only ``columns`` (all when None), as pandas: the training slice."""
        df = self.snowpark_dataframe(columns)
        frame = self._run(df.to_pandas)
        if len(frame) == 0:
            raise self._no_rows()
        return frame

    def batches(self, columns: list[str] | None = None, batch_size: int = DEFAULT_BATCH_SIZE) -> Iterator:
        """Arrow record batches of at most ``batch_size`` rows, fetched chunk by chunk (bounded memory)."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise MlopsError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
        df = self.snowpark_dataframe(columns)
        return self._stream(df, batch_size)

    def _stream(self, df, batch_size: int):
        import pyarrow as pa

        rows = 0
        for frame in self._run(df.to_pandas_batches):
            table = pa.Table.from_pandas(frame, preserve_index=False)
            for batch in table.to_batches(max_chunksize=batch_size):
                if batch.num_rows:
                    rows += batch.num_rows
                    yield batch
        if rows == 0:
            raise self._no_rows()

    def count_rows(self) -> int:
        return int(self._run(self.snowpark_dataframe().count))

    def fingerprint(self) -> str:
        """sha256 of the relation, the ``where`` and Snowflake's ``HASH_AGG`` and count of the rows."""
        from snowflake.snowpark import functions as F

        df = self.snowpark_dataframe()
        row = self._run(lambda: df.agg(F.call_function("HASH_AGG", *[F.col(c) for c in df.columns]).alias("H"),
                                       F.count(F.lit(1)).alias("N")).collect()[0])
        doc = {"kind": "snowflake", "relation": self._relation(), "where": self.where,
               "hash_agg": str(row["H"]), "rows": int(row["N"])}
        return "sha256:" + hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()

    def _run(self, fn):
        try:
            return fn()
        except MlopsError:
            raise
        except Exception as error:
            raise MlopsError(f"cannot read {self.describe()}: {_one_line(error)}") from error

    def _no_rows(self) -> MlopsError:
        if self.where:
            return MlopsError(f"no rows match where {self.where!r} in {self.describe()}")
        return MlopsError(f"no rows in {self.describe()}")


# ------------------------------------------------------------------------------------------------ sink
class SnowflakeSink:
    """Predictions into a Snowflake table, in one transaction; ``partition_by`` replaces only those partitions."""

    def __init__(self, connection=None, table: str = "PREDICTIONS_WITH_GROUND_TRUTH", partition_by: list[str] | None = None):
        self.connection = connection
        self.table = table
        self.partition_by = partition_by

    def describe(self) -> str:
        _check_table(self.table, "scoring.sink.table")
        if self.partition_by:
            return f"Snowflake table {self.table} (replacing partitions by {', '.join(self.partition_by)})"
        return f"Snowflake table {self.table} (replacing the table)"

    def plan(self, staging: str = "MLOPS_STAGING_<random>", source: str = "<scored rows>") -> list[str]:
        """The statements a write issues, in order (columns are known only when writing)."""
        table = _check_table(self.table, "scoring.sink.table")
        return [
            f"CREATE TEMPORARY TABLE {staging} AS {source}",
            f"CREATE TABLE IF NOT EXISTS {table} AS SELECT * FROM {staging} LIMIT 0",
            "BEGIN",
            self._delete_sql(staging),
            f"INSERT INTO {table} (<columns>) SELECT <columns> FROM {staging}",
            "COMMIT",
            f"DROP TABLE IF EXISTS {staging}",
        ]

    def _delete_sql(self, staging: str) -> str:
        table = self.table
        if not self.partition_by:
            return f"DELETE FROM {table}"
        keys = ", ".join(quote(c) for c in self.partition_by)
        match = " AND ".join(f"t.{quote(c)} IS NOT DISTINCT FROM k.{quote(c)}" for c in self.partition_by)
        return f"DELETE FROM {table} AS t USING (SELECT DISTINCT {keys} FROM {staging}) AS k WHERE {match}"

    # ---- writing from Arrow batches (the local scoring stage) ------------------------------------------

    @contextlib.contextmanager
    def open(self):
        _check_table(self.table, "scoring.sink.table")
        session = connection_module.resolve(self.connection).session()
        writer = _Writer(self, session)
        try:
            yield writer
        except BaseException:
            writer.abort()
            raise
        writer.commit()

    # ---- writing a Snowpark DataFrame (the Snowpark backend: nothing leaves the warehouse) ------------

    def write_dataframe(self, df) -> int:
        """Materialise ``df`` into a staging table, then publish it; return the number of rows written."""
        _check_table(self.table, "scoring.sink.table")
        staging = _staging_name()
        columns = [unquote(c) for c in df.columns]
        self._check_partition_columns(columns)
        try:
            df.write.save_as_table(staging, mode="errorifexists", table_type="temporary")
        except Exception as error:
            raise MlopsError(f"could not compute the predictions into a staging table: {_one_line(error)}") from error
        with self._cursor(df.session) as cursor:
            try:
                return self._publish(cursor, staging, columns)
            finally:
                with contextlib.suppress(Exception):
                    cursor.execute(f"DROP TABLE IF EXISTS {staging}")

    def _cursor(self, session):
        """A cursor on the session's own connection, so it sees the session's temporary tables."""
        return contextlib.closing(session.connection.cursor())

    def _check_partition_columns(self, columns) -> None:
        missing = [c for c in (self.partition_by or []) if c not in columns]
        if missing:
            raise MlopsError(f"partition column(s) {', '.join(missing)} are not in the predictions "
                             f"(columns: {', '.join(columns)})")

    def _publish(self, cursor, staging: str, columns: list[str]) -> int:
        """Replace the partitions present in ``staging`` (or the whole table) in one transaction."""
        table = self.table
        existing = self._target_columns(cursor)
        if existing is None:
            self._execute(cursor, f"CREATE TABLE IF NOT EXISTS {table} AS SELECT * FROM {staging} LIMIT 0")
        else:
            from mlops_framework.contracts import check_same_columns

            check_same_columns(table, existing, columns)
            have = {c.upper(): c for c in existing}
        target = columns if existing is None else [have[c.upper()] for c in columns]  # the table's spelling
        listed = ", ".join(quote(c) for c in target)
        staged = ", ".join(quote(c) for c in columns)
        self._execute(cursor, "BEGIN")
        try:
            self._execute(cursor, self._delete_sql(staging))
            self._execute(cursor, f"INSERT INTO {table} ({listed}) SELECT {staged} FROM {staging}")
            rows = cursor.rowcount
            self._execute(cursor, "COMMIT")
        except BaseException:
            with contextlib.suppress(Exception):
                cursor.execute("ROLLBACK")
            raise
        return int(rows or 0)

    def _target_columns(self, cursor) -> list[str] | None:
        try:
            cursor.execute(f"SELECT * FROM {self.table} LIMIT 0")
        except Exception as error:
            if getattr(error, "errno", None) == 2003 or "does not exist" in str(error).lower():
                return None
            raise MlopsError(f"cannot read table {self.table}: {_one_line(error)}") from error
        return [d[0] for d in cursor.description]

    def _execute(self, cursor, sql: str) -> None:
        try:
            cursor.execute(sql)
        except Exception as error:
            raise MlopsError(f"writing predictions to {self.describe()} failed at `{sql.split(' (')[0][:80]}`: "
                             f"{_one_line(error)}") from error


class _Writer:
    """Loads Arrow batches into a temporary staging table; ``commit`` publishes them, ``abort`` drops them."""

    def __init__(self, sink: SnowflakeSink, session):
        self._sink = sink
        self._session = session
        self._staging = _staging_name()
        self._columns: list[str] | None = None
        self.rows = 0

    def write(self, batch) -> None:
        from snowflake.connector.pandas_tools import write_pandas

        frame = batch.to_pandas()
        if self._columns is None:
            self._columns = [str(c) for c in frame.columns]
            self._sink._check_partition_columns(self._columns)
        elif [str(c) for c in frame.columns] != self._columns:
            raise MlopsError("a batch of predictions does not have the first batch's columns")
        try:
            write_pandas(self._session.connection, frame, self._staging, auto_create_table=True,
                         table_type="temporary", quote_identifiers=True, use_logical_type=True)
        except Exception as error:
            raise MlopsError(f"could not stage predictions for {self._sink.describe()}: {_one_line(error)}") from error
        self.rows += len(frame)

    def commit(self) -> None:
        if self._columns is None:  # no batch: the destination is left untouched
            return
        with self._sink._cursor(self._session) as cursor:
            try:
                self._sink._publish(cursor, self._staging, self._columns)
            finally:
                with contextlib.suppress(Exception):
                    cursor.execute(f"DROP TABLE IF EXISTS {self._staging}")

    def abort(self) -> None:
        if self._columns is None:
            return
        with contextlib.suppress(Exception), self._sink._cursor(self._session) as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {self._staging}")


def _staging_name() -> str:
    return f"MLOPS_STAGING_{uuid.uuid4().hex.upper()}"
