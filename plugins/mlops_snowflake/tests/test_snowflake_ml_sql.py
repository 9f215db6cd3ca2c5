"""snowflake-ml's real client classes (Registry, Model, ModelVersion, the model monitor manager) driven over
a recording session that answers SHOW queries as Snowflake does: the assertions are on the SQL
snowflake-ml itself sends, and ``plan`` is compared with it."""

import importlib.util
from pathlib import Path

import pytest

from mlops_snowflake.registry import SnowflakeRegistry


def _load(name):
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


recording = _load("recording_session")


@pytest.fixture(scope="module")
def model_spec(tmp_path_factory):
    return recording.packaged_spec(tmp_path_factory.mktemp("packaged"))


@pytest.fixture
def session(model_spec):
    from snowflake.ml._internal.platform_capabilities import PlatformCapabilities

    with PlatformCapabilities.mock_features({}):  # no account to ask which features it has
        yield recording.RecordingSession(model_spec, tables={"PREDICTIONS": [
            ("TS", "TIMESTAMP_NTZ(9)"), ("LOAN_ID", "NUMBER(38,0)"), ("PREDICTED_SCORE", "FLOAT"),
            ("PREDICTED_RESPONSE", "NUMBER(38,0)"), ("MORTGAGERESPONSE", "NUMBER(38,0)"),
            ("MODEL_VERSION", "VARCHAR")]})


def _alters(statements):
    return [" ".join(s.split()) for s in statements if s.startswith("ALTER MODEL ")]


def test_an_alias_move_sends_exactly_what_the_plan_prints(session, kit):
    session.models["MORTGAGE_XGB"] = {"V1": {"PRODUCTION"}, "V2": set()}
    registry = SnowflakeRegistry(kit.FakeConnection(session), database="DB", schema="S")
    planned = [line.split(" -- ")[0] for line in registry.plan_alias("MORTGAGE_XGB", "V2", "production")
               if line.startswith("ALTER MODEL ")]
    record = registry.set_alias("MORTGAGE_XGB", "V2", "production")
    sent = _alters(session.statements)
    assert sent == planned == ["ALTER MODEL DB.S.MORTGAGE_XGB VERSION PRODUCTION UNSET ALIAS",
                               "ALTER MODEL DB.S.MORTGAGE_XGB VERSION V2 SET ALIAS = PRODUCTION"]
    assert session.models["MORTGAGE_XGB"] == {"V1": set(), "V2": {"PRODUCTION"}}
    assert record["old_version"] == "V1" and registry.aliases("MORTGAGE_XGB") == {"PRODUCTION": "V2"}


def test_unset_and_rollback_through_the_real_classes(session, kit):
    session.models["MORTGAGE_XGB"] = {"V1": set(), "V2": set()}
    registry = SnowflakeRegistry(kit.FakeConnection(session), database="DB", schema="S")
    registry.set_alias("MORTGAGE_XGB", "V1", "PRODUCTION")
    registry.unset_alias("MORTGAGE_XGB", "PRODUCTION")
    assert _alters(session.statements) == ["ALTER MODEL DB.S.MORTGAGE_XGB VERSION V1 SET ALIAS = PRODUCTION",
                                           "ALTER MODEL DB.S.MORTGAGE_XGB VERSION PRODUCTION UNSET ALIAS"]
    assert session.models["MORTGAGE_XGB"] == {"V1": set(), "V2": set()}


def test_the_monitor_and_alerts_sent_on_promotion_are_what_the_plan_prints(session, kit):
    """registry.add_monitor through snowflake-ml's real monitor manager (which validates the source's
    columns and types), the view and the alerts through the session: compared statement by statement."""
    session.models["MORTGAGE_XGB"] = {"V1": set(), "V2": set()}
    session.tables["MORTGAGE_XGB_V2_MONITOR_SOURCE"] = session.tables["PREDICTIONS"]
    registry = SnowflakeRegistry(
        kit.FakeConnection(session), database="DB", schema="S",
        monitor={"alias": "PRODUCTION", "source": "DB.S.PREDICTIONS", "warehouse": "WH",
                 "feature_columns": ["LOAN_ID"]},
        alert_rules={"f1_low": {"metric": "f1", "op": "<", "threshold": 0.7},
                     "psi": {"metric": "psi", "op": ">", "threshold": 0.2}})
    planned = [" ".join(line.split(" -- ")[0].split()) for line in registry.plan_alias("MORTGAGE_XGB", "V2", "PRODUCTION")
               if line.startswith(("CREATE ", "ALTER ALERT", "ALTER MODEL DB"))]
    registry.set_alias("MORTGAGE_XGB", "V2", "PRODUCTION")
    sent = [s for s in (" ".join(s.split()) for s in session.statements)
            if s.startswith(("CREATE ", "ALTER ALERT", "ALTER MODEL DB")) and "MLOPS_PROMOTION_HISTORY" not in s]
    assert any(s.startswith("CREATE MODEL MONITOR DB.S.MORTGAGE_XGB_V2_MONITOR WITH MODEL=DB.S.MORTGAGE_XGB "
                            "VERSION='V2' FUNCTION='predict' WAREHOUSE='WH' SOURCE=DB.S.MORTGAGE_XGB_V2_MONITOR_SOURCE")
               for s in sent)
    # the plan says UNSET only "if a version holds it": nothing held PRODUCTION here
    assert sent == [p for p in planned if "UNSET ALIAS" not in p]


def test_monitoring_in_snowflake_reads_metrics_not_rows(session, kit):
    """pipeline=monitor with registry=snowflake: the version's native monitor is ensured through the real
    monitor manager and its metrics are SELECTed in the warehouse; the scored table is never read here."""
    session.models["MORTGAGE_XGB"] = {"V1": set(), "V2": {"PRODUCTION"}}
    session.tables["MORTGAGE_XGB_V2_MONITOR_SOURCE"] = session.tables["PREDICTIONS"]
    registry = SnowflakeRegistry(kit.FakeConnection(session), database="DB", schema="S",
                                 monitor={"source": "DB.S.PREDICTIONS", "warehouse": "WH", "baseline": "DB.S.BASELINE",
                                          "feature_columns": ["LOAN_ID"]})
    result = registry.monitor_in_warehouse("MORTGAGE_XGB", "PRODUCTION")
    assert result["model_version"] == "V2" and result["created"] and result["where"] == "warehouse"
    sent = [" ".join(s.split()) for s in session.statements]
    assert any(s.startswith("CREATE MODEL MONITOR DB.S.MORTGAGE_XGB_V2_MONITOR WITH") for s in sent)
    selects = [s for s in sent if s.startswith("SELECT ")]
    assert len(selects) == 6 and all("FROM TABLE(MODEL_MONITOR_" in s for s in selects)
    assert not any("FROM DB.S.PREDICTIONS" in s for s in sent if not s.startswith("CREATE OR REPLACE VIEW"))
