"""data=snowflake on Snowpark local testing; the sink's transaction (DELETE partitions, INSERT) on fakesnow."""

import contextlib
import uuid
from unittest import mock

import pandas as pd
import pyarrow as pa
import pytest

from mlops_framework.errors import MlopsError
from mlops_snowflake.data import SnowflakeSink, SnowflakeSource


@pytest.fixture
def loans(local_session, frame):
    """A fresh table of the 180 rows in the local-testing session; its name."""
    name = f"LOANS_{uuid.uuid4().hex[:8].upper()}"
    local_session.create_dataframe(frame).write.save_as_table(name)
    return name


@pytest.fixture
def source(kit):
    """SnowflakeSource(connection handing out ``session``, **kwargs)."""
    return lambda session, **kwargs: SnowflakeSource(kit.FakeConnection(session), **kwargs)


# ---- source -------------------------------------------------------------------------------------------

def test_read_pulls_only_the_requested_columns(local_session, loans, frame, kit, source):
    got = source(local_session, table=loans).read([*kit.INPUTS, kit.TARGET])
    assert list(got.columns) == [*kit.INPUTS, kit.TARGET]
    pd.testing.assert_frame_equal(got, frame[[*kit.INPUTS, kit.TARGET]], check_dtype=False)


def test_batches_are_arrow_and_bounded(local_session, loans, frame, source):
    batches = list(source(local_session, table=loans).batches(batch_size=50))
    assert [b.num_rows for b in batches] == [50, 50, 50, 30]
    assert all(isinstance(b, pa.RecordBatch) for b in batches)
    assert pa.Table.from_batches(batches).column("LOAN_ID").to_pylist() == frame["LOAN_ID"].tolist()
    assert source(local_session, table=loans).count_rows() == 180
    with pytest.raises(MlopsError, match="batch_size"):
        source(local_session, table=loans).batches(batch_size=0)


def test_snowpark_dataframe_stays_lazy_and_selects(local_session, loans, kit, source):
    from snowflake.snowpark import DataFrame

    df = source(local_session, table=loans).snowpark_dataframe(["WEEK", kit.TARGET])
    assert isinstance(df, DataFrame) and df.columns == ["WEEK", kit.TARGET]


def test_where_is_applied_by_snowflake(local_session, loans, fakesnow_session, frame, kit, source):
    """Local testing cannot evaluate SQL text, so: the condition reaches DataFrame.filter unchanged, and the
    equivalent SELECT (what plan prints) returns exactly the matching rows on fakesnow."""
    from snowflake.snowpark import DataFrame

    src = source(local_session, table=loans, where="WEEK <= 2")
    with mock.patch.object(DataFrame, "filter", autospec=True, side_effect=lambda self, condition: self) as spy:
        src.snowpark_dataframe(kit.INPUTS)
    assert spy.call_args.args[1] == "WEEK <= 2"
    from snowflake.connector.pandas_tools import write_pandas
    write_pandas(fakesnow_session.connection, frame, loans, auto_create_table=True)
    got = kit.fetch(fakesnow_session, src.sql(["LOAN_ID", "WEEK"]))
    assert sorted(got["LOAN_ID"]) == frame.loc[frame.WEEK <= 2, "LOAN_ID"].tolist()
    assert src.sql(["A"]) == f'SELECT "A" FROM {loans} WHERE WEEK <= 2'
    assert src.describe() == f"Snowflake table {loans} where WEEK <= 2"


def test_query_source_uses_session_sql(kit):
    from snowflake.snowpark import Session

    session = mock.create_autospec(Session, instance=True)
    session.sql.return_value.columns = ["A", "B"]
    src = SnowflakeSource(kit.FakeConnection(session), query="SELECT A, B FROM T;")
    src.snowpark_dataframe(["A"])
    session.sql.assert_called_once_with("SELECT A, B FROM T")
    session.sql.return_value.select.assert_called_once_with(['"A"'])
    assert src.sql() == "SELECT * FROM (SELECT A, B FROM T)"


def test_column_errors_are_clear(local_session, loans, source):
    with pytest.raises(MlopsError, match=r"unknown column 'week' \(column names are case-sensitive: did you mean 'WEEK'"):
        source(local_session, table=loans).read(["week"])
    with pytest.raises(MlopsError, match="does not exist"):
        source(local_session, table="NO_SUCH_TABLE").read()
    with pytest.raises(MlopsError, match="exactly one of data.table"):
        source(local_session, table=loans, query="SELECT 1").read()
    with pytest.raises(MlopsError, match="not a Snowflake table name"):
        source(local_session, table="T; DROP TABLE X").describe()


def test_empty_result_is_an_error(local_session, source):
    name = f"EMPTY_{uuid.uuid4().hex[:8].upper()}"
    local_session.create_dataframe(pd.DataFrame({"A": [1.0]})).limit(0).write.save_as_table(name)
    with pytest.raises(MlopsError, match="no rows in Snowflake table"):
        source(local_session, table=name).read()
    with pytest.raises(MlopsError, match="no rows"):
        list(source(local_session, table=name).batches())


def test_fingerprint_follows_the_rows(local_session, loans, frame, source):
    from snowflake.snowpark.mock import ColumnEmulator, patch

    @patch("hash_agg")
    def hash_agg(*columns: ColumnEmulator) -> ColumnEmulator:  # Snowflake's HASH_AGG, emulated for the test
        digest = hash(tuple(tuple(map(str, column)) for column in columns)) & 0xFFFFFFFF
        return ColumnEmulator(data=[digest], sf_type=columns[0].sf_type)

    first = source(local_session, table=loans).fingerprint()
    assert first.startswith("sha256:") and first == source(local_session, table=loans).fingerprint()
    changed = frame.copy()
    changed.loc[0, "APPLICANT_INCOME_000S"] += 1
    local_session.create_dataframe(changed).write.save_as_table(loans, mode="overwrite")  # same name, new rows
    assert source(local_session, table=loans).fingerprint() != first


# ---- sink (connector SQL on fakesnow) -------------------------------------------------------------------

def predictions(frame, weeks, score=0.5):
    rows = frame[frame.WEEK.isin(weeks)].copy()
    rows["PREDICTED_SCORE"] = score
    rows["PREDICTED_RESPONSE"] = 1
    return pa.Table.from_pandas(rows, preserve_index=False)


def write(sink, *tables, fail=False):
    with sink.open() as writer:
        for table in tables:
            for batch in table.to_batches(max_chunksize=40):
                writer.write(batch)
        if fail:
            raise RuntimeError("scoring died")


def test_first_write_creates_then_rescoring_a_week_replaces_only_it(fakesnow_session, frame, kit, staging_tables):
    sink = SnowflakeSink(kit.FakeConnection(fakesnow_session), table="PREDS", partition_by=["WEEK"])
    write(sink, predictions(frame, [1, 2, 3], score=0.1))
    write(sink, predictions(frame, [2], score=0.9))
    got = kit.fetch(fakesnow_session, 'SELECT "WEEK", "PREDICTED_SCORE", COUNT(*) AS N FROM PREDS GROUP BY 1, 2 ORDER BY 1')
    assert got.values.tolist() == [[1, 0.1, 60], [2, 0.9, 60], [3, 0.1, 60]]
    assert list(kit.fetch(fakesnow_session, "SELECT * FROM PREDS LIMIT 1").columns) == [*kit.TABLE_COLUMNS, "PREDICTED_SCORE",
                                                                                     "PREDICTED_RESPONSE"]
    assert staging_tables(fakesnow_session) == []


def test_without_partitions_the_table_is_replaced(fakesnow_session, frame, kit):
    sink = SnowflakeSink(kit.FakeConnection(fakesnow_session), table="PREDS")
    write(sink, predictions(frame, [1, 2, 3]))
    write(sink, predictions(frame, [3]))
    assert kit.fetch(fakesnow_session, "SELECT DISTINCT WEEK FROM PREDS")["WEEK"].tolist() == [3]


def test_a_failure_leaves_the_previous_rows(fakesnow_session, frame, kit, staging_tables):
    sink = SnowflakeSink(kit.FakeConnection(fakesnow_session), table="PREDS", partition_by=["WEEK"])
    write(sink, predictions(frame, [1, 2], score=0.1))
    with pytest.raises(RuntimeError, match="scoring died"):
        write(sink, predictions(frame, [2], score=0.9), fail=True)
    assert kit.fetch(fakesnow_session, "SELECT COUNT(*) AS N, MAX(PREDICTED_SCORE) AS S FROM PREDS").values.tolist() == [[120, 0.1]]
    assert staging_tables(fakesnow_session) == []


def test_a_failing_insert_rolls_the_delete_back(fakesnow_session, frame, monkeypatch, kit):
    sink = SnowflakeSink(kit.FakeConnection(fakesnow_session), table="PREDS", partition_by=["WEEK"])
    write(sink, predictions(frame, [1, 2], score=0.1))
    real_cursor = sink._cursor

    @contextlib.contextmanager
    def failing_cursor(session):
        with real_cursor(session) as cursor:
            execute = cursor.execute

            def guarded(sql, *args, **kwargs):
                if sql.startswith("INSERT INTO PREDS"):
                    raise RuntimeError("warehouse suspended")
                return execute(sql, *args, **kwargs)

            cursor.execute = guarded
            yield cursor

    monkeypatch.setattr(sink, "_cursor", failing_cursor)
    with pytest.raises(MlopsError, match="warehouse suspended"):
        write(sink, predictions(frame, [2], score=0.9))
    assert kit.fetch(fakesnow_session, "SELECT COUNT(*) AS N FROM PREDS WHERE WEEK = 2")["N"].tolist() == [60]


def test_null_partitions_are_replaced_too(fakesnow_session, frame, kit):
    sink = SnowflakeSink(kit.FakeConnection(fakesnow_session), table="PREDS", partition_by=["SEGMENT"])
    table = pa.table({"SEGMENT": pa.array([None, "a"], pa.string()), "PREDICTED_SCORE": [0.1, 0.2]})
    write(sink, table)
    write(sink, pa.table({"SEGMENT": pa.array([None], pa.string()), "PREDICTED_SCORE": [0.7]}))
    got = kit.fetch(fakesnow_session, "SELECT SEGMENT, PREDICTED_SCORE FROM PREDS ORDER BY SEGMENT NULLS FIRST")
    assert got.values.tolist() == [[None, 0.7], ["a", 0.2]]


def test_mismatched_columns_and_missing_partition_column(fakesnow_session, frame, kit):
    sink = SnowflakeSink(kit.FakeConnection(fakesnow_session), table="PREDS", partition_by=["WEEK"])
    write(sink, predictions(frame, [1]))
    with pytest.raises(MlopsError, match="new columns not in the table: EXTRA"):
        write(sink, predictions(frame, [1]).append_column("EXTRA", pa.array([1] * 60)))
    with pytest.raises(MlopsError, match="partition column"):
        write(sink, predictions(frame, [1]).drop_columns(["WEEK"]))
    assert kit.fetch(fakesnow_session, "SELECT COUNT(*) AS N FROM PREDS")["N"].tolist() == [60]


def test_no_batch_leaves_the_destination_alone(fakesnow_session, kit):
    sink = SnowflakeSink(kit.FakeConnection(fakesnow_session), table="PREDS")
    with sink.open():
        pass
    with pytest.raises(Exception, match="PREDS"):
        kit.fetch(fakesnow_session, "SELECT * FROM PREDS")


def test_plan_and_describe(fakesnow_session):
    sink = SnowflakeSink(None, table="ML.OUT.PREDS", partition_by=["WEEK"])
    assert sink.describe() == "Snowflake table ML.OUT.PREDS (replacing partitions by WEEK)"
    plan = sink.plan(staging="STG")
    assert plan[2:6] == ["BEGIN", 'DELETE FROM ML.OUT.PREDS AS t USING (SELECT DISTINCT "WEEK" FROM STG) AS k '
                         'WHERE t."WEEK" IS NOT DISTINCT FROM k."WEEK"',
                         'INSERT INTO ML.OUT.PREDS (<columns>) SELECT <columns> FROM STG', "COMMIT"]
    with pytest.raises(MlopsError, match="not a Snowflake table name"):
        SnowflakeSink(None, table="a b").describe()


@pytest.fixture
def staging_tables(kit):
    """The staging tables left in a fakesnow database (there should be none)."""
    def find(session):
        names = kit.fetch(session, "SELECT table_name FROM information_schema.tables")["TABLE_NAME"].tolist()
        return [name for name in names if name.upper().startswith("MLOPS_STAGING_")]
    return find
