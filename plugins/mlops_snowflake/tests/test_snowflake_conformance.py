"""The Snowflake plugin's registry, sink and source pass mlops_framework.conformance, against the offline fakes
of conftest.py (snowflake-ml autospec'd over an in-memory registry, fakesnow, Snowpark local testing)."""

import itertools
import uuid

import pytest

from mlops_framework import conformance
from mlops_snowflake.data import SnowflakeSink, SnowflakeSource
from mlops_snowflake.registry import SnowflakeRegistry

MISSING = {
    "records_refusals": "SnowflakeRegistry has no record_refusal (contracts.AuditedRegistry): a refused promotion "
                        "is not in its history (helper 'snowflake' adds it)",
    "rolls_back": "SnowflakeRegistry has no rollback (contracts.RollbackRegistry)",
}
_tables = itertools.count()


@pytest.mark.parametrize("check", conformance.REGISTRY_CHECKS)
def test_the_snowflake_registry_conforms(check, snowml, fakesnow_session, trained_model, frame, kit, request):
    if check in MISSING:
        request.applymarker(pytest.mark.xfail(strict=True, raises=AssertionError, reason=MISSING[check]))
    conformance.REGISTRY_CHECKS[check](
        lambda: SnowflakeRegistry(kit.FakeConnection(fakesnow_session), database="DB", schema="S"),
        trained_model, frame[kit.INPUTS].head(10))


@pytest.mark.parametrize("check", conformance.SINK_CHECKS)
def test_the_snowflake_sink_conforms(check, fakesnow_session, kit):
    def make_sink(partition_by):
        return SnowflakeSink(kit.FakeConnection(fakesnow_session), table=f"PREDS_{next(_tables)}",
                             partition_by=partition_by)

    conformance.SINK_CHECKS[check](make_sink, lambda sink: kit.fetch(fakesnow_session, f"SELECT * FROM {sink.table}"))


NO_SQL_OFFLINE = {"filters_with_where": "Snowpark local testing cannot evaluate SQL text; test_data.py checks "
                                        "where on fakesnow"}


@pytest.mark.parametrize("check", conformance.SOURCE_CHECKS)
def test_the_snowflake_source_conforms(check, local_session, frame, kit):
    from snowflake.snowpark.mock import ColumnEmulator, patch

    if check in NO_SQL_OFFLINE:
        pytest.skip(NO_SQL_OFFLINE[check])

    @patch("hash_agg")
    def hash_agg(*columns: ColumnEmulator) -> ColumnEmulator:  # Snowflake's HASH_AGG, emulated for the test
        digest = hash(tuple(tuple(map(str, column)) for column in columns)) & 0xFFFFFFFF
        return ColumnEmulator(data=[digest], sf_type=columns[0].sf_type)

    table = f"LOANS_{uuid.uuid4().hex[:8].upper()}"
    local_session.create_dataframe(frame).write.save_as_table(table)
    conformance.SOURCE_CHECKS[check](
        lambda where: SnowflakeSource(kit.FakeConnection(local_session), table=table, where=where),
        frame[["APPLICANT_INCOME_000S", *[c for c in frame.columns if c != "APPLICANT_INCOME_000S"]]])
