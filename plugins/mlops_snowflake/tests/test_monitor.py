"""The Snowflake model monitor and its ALERTs: offline SQL checks and contract tests against
``create_autospec`` of the installed snowflake-ml ``Registry``, ``Model``, ``ModelVersion`` and
``ModelMonitor`` (a call that drifts from the installed signatures fails)."""

import re
from unittest import mock

import pytest

from mlops_framework.alerts import build_rules
from mlops_framework.errors import MlopsError
from mlops_snowflake import monitor as mon


def _load_grammar():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("sql_grammar", Path(__file__).with_name("sql_grammar.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sql_grammar = _load_grammar()

FEATURES = ["APPLICANT_INCOME_000S", "LOAN_AMOUNT_000S", "LOAN_TYPE_NAME"]


def settings(**overrides):
    values = dict(source="DB.SCH.PREDICTIONS", warehouse="WH", baseline="DB.SCH.BASELINE")
    return mon.MonitorSettings(**{**values, **overrides})


def normalized(sql):
    return re.sub(r"\s+", " ", sql).strip()


def test_create_monitor_sql_is_what_snowflake_ml_itself_sends():
    """Our statement, token for token, against the one snowflake-ml's own SQL client builds."""
    from snowflake.ml._internal.utils.sql_identifier import SqlIdentifier as I
    from snowflake.ml.monitoring._client import model_monitor_sql_client as client_module

    client = client_module.ModelMonitorSQLClient.__new__(client_module.ModelMonitorSQLClient)
    client._database_name, client._schema_name, client._sql_client = I("DB"), I("SCH"), mock.MagicMock()
    with mock.patch.object(client_module.query_result_checker, "SqlResultValidator") as validator:
        client.create_model_monitor(
            monitor_database=None, monitor_schema=None, monitor_name=I("MORTGAGE_XGB_V2_MONITOR"),
            source_database=None, source_schema=None, source=I("PREDICTIONS"), model_database=None,
            model_schema=None, model_name=I("MORTGAGE_XGB"), version_name=I("v2"), function_name="predict",
            warehouse_name=I("WH"), timestamp_column=I("TS"), id_columns=[I("LOAN_ID")],
            prediction_score_columns=[I("PREDICTED_SCORE")], prediction_class_columns=[I("PREDICTED_RESPONSE")],
            actual_score_columns=[], actual_class_columns=[I("MORTGAGERESPONSE")], refresh_interval="1 day",
            aggregation_window="7 days", baseline=I("BASELINE"))
    theirs = validator.call_args[0][1]
    ours = mon.create_monitor_sql("DB.SCH.MORTGAGE_XGB", "v2", settings(), if_not_exists=False)
    assert ours.splitlines()[0] == "CREATE MODEL MONITOR DB.SCH.MORTGAGE_XGB_V2_MONITOR WITH"
    assert normalized(ours) == normalized(theirs)
    assert mon.create_monitor_sql("MORTGAGE_XGB", "v2", settings()).startswith(
        "CREATE MODEL MONITOR IF NOT EXISTS MORTGAGE_XGB_V2_MONITOR WITH")


def test_settings_and_names_are_checked():
    assert mon.monitor_name("MORTGAGE_XGB", "v3") == "MORTGAGE_XGB_V3_MONITOR"
    with pytest.raises(MlopsError, match="not a plain Snowflake identifier"):
        settings(source="PREDICTIONS; DROP TABLE X")
    with pytest.raises(MlopsError, match="whole days"):
        settings(aggregation_window="12 hours")
    with pytest.raises(MlopsError, match="identifier"):
        mon.monitor_name("M", "v1'--")
    sql = mon.create_monitor_sql("M", "v1", settings(segment_columns=["LOAN_TYPE_NAME"], baseline=None))
    assert "SEGMENT_COLUMNS=('LOAN_TYPE_NAME')" in sql and "BASELINE" not in sql


def test_add_monitor_calls_the_installed_registry_api():
    from snowflake.ml.model._client.model.model_version_impl import ModelVersion
    from snowflake.ml.monitoring.entities.model_monitor_config import ModelMonitorConfig, ModelMonitorSourceConfig
    from snowflake.ml.monitoring.model_monitor import ModelMonitor
    from snowflake.ml.registry import Registry

    registry = mock.create_autospec(Registry, instance=True)
    registry.add_monitor.return_value = mock.create_autospec(ModelMonitor, instance=True)
    version = mock.create_autospec(ModelVersion, instance=True)
    version.model_name, version.version_name = "MORTGAGE_XGB", "V2"
    result = mon.add_monitor(registry, version, settings())
    assert result is registry.add_monitor.return_value
    registry.add_monitor.assert_called_once_with(
        "MORTGAGE_XGB_V2_MONITOR",
        ModelMonitorSourceConfig(source="DB.SCH.PREDICTIONS", timestamp_column="TS", id_columns=["LOAN_ID"],
                                 prediction_score_columns=["PREDICTED_SCORE"],
                                 prediction_class_columns=["PREDICTED_RESPONSE"], actual_score_columns=None,
                                 actual_class_columns=["MORTGAGERESPONSE"], baseline="DB.SCH.BASELINE",
                                 segment_columns=None),
        ModelMonitorConfig(model_version=version, model_function_name="predict", background_compute_warehouse_name="WH",
                           refresh_interval="1 day", aggregation_window="7 days"),
    )
    registry.add_monitor.side_effect = ValueError("Monitoring is not enabled in the Registry")
    with pytest.raises(MlopsError, match="cannot create model monitor MORTGAGE_XGB_V2_MONITOR: Monitoring is not enabled"):
        mon.add_monitor(registry, version, settings())


RULES = build_rules({"f1_low": {"metric": "f1", "op": "<", "threshold": 0.7},
                     "feature_psi_high": {"metric": "psi", "op": ">", "threshold": 0.2}})


def test_alert_statements_for_the_default_rules():
    statements = mon.alerts_sql(RULES, "MORTGAGE_XGB", "MORTGAGE_XGB_V2_MONITOR", warehouse="WH", columns=FEATURES)
    assert statements[0] == mon.ALERT_LOG_DDL.format(table="MLOPS_ALERT_LOG")
    f1, resume_f1, psi, resume_psi = statements[1:]
    assert f1 == (
        "CREATE OR REPLACE ALERT MORTGAGE_XGB_F1_LOW_ALERT\n"
        "  WAREHOUSE = WH\n"
        "  SCHEDULE = 'USING CRON 0 7 * * * UTC'\n"
        "  IF (EXISTS (SELECT 1 FROM TABLE(MODEL_MONITOR_PERFORMANCE_METRIC('MORTGAGE_XGB_V2_MONITOR', 'F1_SCORE', "
        "'7 DAY', DATEADD('DAY', -7, CURRENT_TIMESTAMP()), CURRENT_TIMESTAMP())) WHERE METRIC_VALUE < 0.7))\n"
        "  THEN INSERT INTO MLOPS_ALERT_LOG (FIRED_AT, ALERT, MONITOR, MESSAGE) SELECT CURRENT_TIMESTAMP(), "
        "'MORTGAGE_XGB_F1_LOW_ALERT', 'MORTGAGE_XGB_V2_MONITOR', 'f1_low: f1 < 0.7 on MORTGAGE_XGB_V2_MONITOR'"
    )
    assert resume_f1 == "ALTER ALERT MORTGAGE_XGB_F1_LOW_ALERT RESUME"
    assert psi.count("MODEL_MONITOR_DRIFT_METRIC('MORTGAGE_XGB_V2_MONITOR', 'POPULATION_STABILITY_INDEX', ") == 3
    assert all(f"'{column}', '7 DAY'" in psi for column in FEATURES)
    assert psi.count(" UNION ALL ") == 2 and psi.count("WHERE METRIC_VALUE > 0.2") == 1
    assert resume_psi == "ALTER ALERT MORTGAGE_XGB_FEATURE_PSI_HIGH_ALERT RESUME"


@pytest.mark.parametrize("columns", [FEATURES[:1], FEATURES])
def test_every_alert_follows_the_documented_create_alert_grammar(columns):
    """Defect 1: ``IF ((EXISTS (...) OR EXISTS (...)))`` and a '7 DAYS' granularity are not CREATE ALERT."""
    rules = build_rules({"f1_low": {"metric": "f1", "op": "<", "threshold": 0.7},
                         "psi": {"metric": "psi", "op": ">", "threshold": 0.2},
                         "jsd": {"metric": "jensen_shannon", "op": ">", "threshold": 0.1, "absolute": True}})
    statements = mon.alerts_sql(rules, "DB.S.MORTGAGE_XGB", "DB.S.MORTGAGE_XGB_V2_MONITOR", warehouse="WH",
                                columns=columns, window="14 days")
    created = [s for s in statements if s.startswith("CREATE OR REPLACE ALERT")]
    assert len(created) == 3
    for statement in created:
        parsed = sql_grammar.parse_alert(statement)
        assert parsed["name"].startswith("DB.S.MORTGAGE_XGB_")
        assert "'14 DAY'" in statement


def test_the_grammar_check_rejects_what_snowflake_rejects():
    good = ("CREATE ALERT A WAREHOUSE = WH SCHEDULE = '60 MINUTE' IF (EXISTS (SELECT 1 FROM TABLE("
            "MODEL_MONITOR_DRIFT_METRIC('M', 'JENSEN_SHANNON', 'X', '1 WEEK', 'a', 'b')))) THEN CALL P()")
    sql_grammar.parse_alert(good)
    bad = {
        "IF ((EXISTS (SELECT 1) OR EXISTS (SELECT 2))) THEN CALL P()": "expected 'EXISTS'",
        "IF (EXISTS (SELECT 1) OR EXISTS (SELECT 2)) THEN CALL P()": "expected '\\)'",
        "IF (EXISTS (SELECT 1 FROM TABLE(MODEL_MONITOR_PERFORMANCE_METRIC('M', 'F1_SCORE', '7 DAYS', 'a', 'b')))) "
        "THEN CALL P()": "granularity",
        "IF (EXISTS (SELECT 1 FROM TABLE(MODEL_MONITOR_PERFORMANCE_METRIC('M', 'F1_SCORE', 'a', 'b')))) "
        "THEN CALL P()": "takes 5 arguments",
        "IF (EXISTS (DROP TABLE T)) THEN CALL P()": "one SQL statement",
    }
    for tail, message in bad.items():
        with pytest.raises(SyntaxError, match=message):
            sql_grammar.parse_alert("CREATE ALERT A WAREHOUSE = WH SCHEDULE = 'USING CRON 0 7 * * * UTC' " + tail)
    with pytest.raises(SyntaxError, match="SCHEDULE"):
        sql_grammar.parse_alert("CREATE ALERT A SCHEDULE = '7 DAYS' IF (EXISTS (SELECT 1)) THEN CALL P()")


def test_alert_action_and_unsupported_rules():
    email = "CALL SYSTEM$SEND_EMAIL('ml_alerts', 'ops@example.com', 'F1 below 0.7', 'see the monitor')"
    statements = mon.alerts_sql(RULES[:1], "M", "M_V1_MONITOR", warehouse="WH", action=email,
                                schedule="USING CRON 0 * * * * UTC")
    assert len(statements) == 2 and statements[0].endswith(f"THEN {email}")
    assert "SCHEDULE = 'USING CRON 0 * * * * UTC'" in statements[0]
    for definition, message in (({"metric": "hellinger", "op": ">", "threshold": 0.1}, "do not compute hellinger"),
                                ({"metric": "f1", "threshold": 0.7, "window": "any"}, "last window only"),
                                ({"metric": "psi", "op": ">", "threshold": 0.2}, "name the columns")):
        with pytest.raises(MlopsError, match=message):
            mon.alerts_sql(build_rules({"r": definition}), "M", "M_V1_MONITOR", warehouse="WH")


def test_follow_alias_sql_creates_the_new_monitor_suspends_the_old_and_repoints_alerts():
    statements = mon.follow_alias_sql("MORTGAGE_XGB", "v2", ["v1", None, "v2"], settings(), RULES, columns=FEATURES)
    assert statements[0] == ("CREATE OR REPLACE VIEW MORTGAGE_XGB_V2_MONITOR_SOURCE AS SELECT * FROM DB.SCH.PREDICTIONS "
                             "WHERE MODEL_VERSION = 'V2'")
    assert statements[1].startswith("CREATE MODEL MONITOR IF NOT EXISTS MORTGAGE_XGB_V2_MONITOR WITH")
    assert "SOURCE=MORTGAGE_XGB_V2_MONITOR_SOURCE\n" in statements[1]
    assert statements[2] == "ALTER MODEL MONITOR MORTGAGE_XGB_V2_MONITOR RESUME"
    assert statements[3] == "ALTER MODEL MONITOR IF EXISTS MORTGAGE_XGB_V1_MONITOR SUSPEND"
    assert [s.split("\n")[0] for s in statements if s.startswith("CREATE OR REPLACE ALERT")] == [
        "CREATE OR REPLACE ALERT MORTGAGE_XGB_F1_LOW_ALERT",
        "CREATE OR REPLACE ALERT MORTGAGE_XGB_FEATURE_PSI_HIGH_ALERT"]
    assert not any("V1_MONITOR'" in s for s in statements)  # the alerts watch the new version only


def test_moving_the_alias_replaces_the_alerts_instead_of_adding_some():
    """Defect 2: alerts named per version stayed behind, running against a suspended monitor."""
    def alert_names(version):
        return {s.split("\n")[0].split()[-1] for s in mon.follow_alias_sql("DB.S.M", version, [], settings(), RULES,
                                                                          columns=FEATURES) if "OR REPLACE ALERT" in s}
    assert alert_names("v1") == alert_names("v2") == {"DB.S.M_F1_LOW_ALERT", "DB.S.M_FEATURE_PSI_HIGH_ALERT"}


def test_monitor_view_and_alerts_live_beside_a_qualified_model():
    """Defect 5: the monitor, its source view, the alerts and their log share the model's schema."""
    statements = mon.follow_alias_sql("DB.S.M", "v2", ["v1"], settings(), RULES, columns=FEATURES)
    text = "\n".join(statements)
    assert "CREATE OR REPLACE VIEW DB.S.M_V2_MONITOR_SOURCE AS" in text
    assert "CREATE MODEL MONITOR IF NOT EXISTS DB.S.M_V2_MONITOR WITH\n    MODEL=DB.S.M\n" in text
    assert "SOURCE=DB.S.M_V2_MONITOR_SOURCE" in text and "ALTER MODEL MONITOR IF EXISTS DB.S.M_V1_MONITOR SUSPEND" in text
    assert "CREATE TABLE IF NOT EXISTS DB.S.MLOPS_ALERT_LOG" in text and "INSERT INTO DB.S.MLOPS_ALERT_LOG" in text
    assert "CREATE OR REPLACE ALERT DB.S.M_F1_LOW_ALERT" in text and "'DB.S.M_V2_MONITOR'" in text


def _snowml(existing, versions=("V1", "V2")):
    import pandas as pd
    from snowflake.ml.model._client.model.model_impl import Model
    from snowflake.ml.model._client.model.model_version_impl import ModelVersion
    from snowflake.ml.monitoring.model_monitor import ModelMonitor
    from snowflake.ml.registry import Registry
    from snowflake.snowpark import DataFrame, Row, Session

    registry = mock.create_autospec(Registry, instance=True)
    registry.show_model_monitors.return_value = [Row(name=n, model='{"model_name": "M"}') for n in existing]
    monitors = {}

    def get_monitor(*, name=None, model_version=None):
        return monitors.setdefault(name, mock.create_autospec(ModelMonitor, instance=True))

    registry.get_monitor.side_effect = get_monitor
    model = mock.create_autospec(Model, instance=True)
    model.name = "MORTGAGE_XGB"
    model.show_versions.return_value = pd.DataFrame({"name": list(versions)})
    made = {}

    def version(name):
        mv = made.setdefault(name, mock.create_autospec(ModelVersion, instance=True))
        mv.model_name, mv.version_name = "MORTGAGE_XGB", name.upper()
        return mv

    model.version.side_effect = version
    session = mock.create_autospec(Session, instance=True)
    session.sql.return_value = mock.create_autospec(DataFrame, instance=True)
    return registry, model, session, monitors, made


def test_follow_alias_with_the_python_api():
    registry, model, session, monitors, versions = _snowml(["MORTGAGE_XGB_V1_MONITOR", "OTHER_MODEL_V1_MONITOR"])
    done = mon.follow_alias(registry, session, model, "v2", settings(), RULES, columns=FEATURES)
    assert done["created"] and done["suspended"] == ["MORTGAGE_XGB_V1_MONITOR"]
    name, source, config = registry.add_monitor.call_args[0]
    assert name == "MORTGAGE_XGB_V2_MONITOR" and config.model_version is versions["v2"]
    assert source.source == "MORTGAGE_XGB_V2_MONITOR_SOURCE" and source.baseline == "DB.SCH.BASELINE"
    monitors["MORTGAGE_XGB_V1_MONITOR"].suspend.assert_called_once_with()
    assert "OTHER_MODEL_V1_MONITOR" not in monitors  # another model's monitor is left alone
    executed = [call.args[0] for call in session.sql.call_args_list]
    view = mon.source_view_sql("MORTGAGE_XGB", "v2", settings())
    assert executed == done["statements"] == [view] + mon.alerts_sql(
        RULES, "MORTGAGE_XGB", "MORTGAGE_XGB_V2_MONITOR", warehouse="WH", columns=FEATURES)
    assert session.sql.return_value.collect.call_count == len(executed)


def test_promoting_one_model_leaves_a_model_sharing_its_prefix_alone():
    """Defect 3: MORTGAGE_XGB's promotion suspended MORTGAGE_XGB_GPU's monitors (prefix match)."""
    registry, model, session, monitors, _ = _snowml(
        ["MORTGAGE_XGB_V1_MONITOR", "MORTGAGE_XGB_GPU_V3_MONITOR", "MORTGAGE_XGB_V9_MONITOR"])
    done = mon.follow_alias(registry, session, model, "v2", settings(), [])
    assert done["suspended"] == ["MORTGAGE_XGB_V1_MONITOR"]  # V9 is not a version of this model either
    assert "MORTGAGE_XGB_GPU_V3_MONITOR" not in monitors


def test_each_version_monitor_reads_only_that_versions_rows(fakesnow_session, kit):
    """Defect 4: the monitor's source is a view of the scored rows of its version, run here on fakesnow."""
    run = lambda sql: fakesnow_session.sql(sql).collect()
    run("CREATE TABLE PREDICTIONS (LOAN_ID INT, MODEL_VERSION VARCHAR, PREDICTED_SCORE FLOAT)")
    run("INSERT INTO PREDICTIONS VALUES (1, 'V1', 0.1), (2, 'V2', 0.2), (3, 'V2', 0.3)")
    for version in ("v1", "v2"):
        run(mon.source_view_sql("M", version, settings(source="PREDICTIONS")))
    assert kit.fetch(fakesnow_session, "SELECT LOAN_ID FROM M_V2_MONITOR_SOURCE ORDER BY 1")["LOAN_ID"].tolist() == [2, 3]
    assert kit.fetch(fakesnow_session, "SELECT LOAN_ID FROM M_V1_MONITOR_SOURCE")["LOAN_ID"].tolist() == [1]


def test_labels_that_land_later_are_joined_into_the_versions_view(fakesnow_session, kit):
    """registry.monitor.actuals: the view takes the actual column from the labels table (LEFT JOIN on the id
    columns), so the monitor's performance metrics follow the labels as they land; run here on fakesnow."""
    run = lambda sql: fakesnow_session.sql(sql).collect()
    run("CREATE TABLE SCORED (LOAN_ID INT, MODEL_VERSION VARCHAR, PREDICTED_RESPONSE INT, MORTGAGERESPONSE INT)")
    run("INSERT INTO SCORED VALUES (1, 'V1', 1, NULL), (2, 'V1', 0, NULL), (3, 'V2', 1, NULL)")
    run("CREATE TABLE LABELS (LOAN_ID INT, MORTGAGERESPONSE INT)")
    run("INSERT INTO LABELS VALUES (1, 0), (3, 1)")
    run(mon.source_view_sql("M", "v1", settings(source="SCORED", actuals="LABELS")))
    rows = kit.fetch(fakesnow_session, "SELECT * FROM M_V1_MONITOR_SOURCE ORDER BY LOAN_ID")
    assert list(rows.columns) == ["LOAN_ID", "MODEL_VERSION", "PREDICTED_RESPONSE", "MORTGAGERESPONSE"]
    assert rows["LOAN_ID"].tolist() == [1, 2] and rows["MORTGAGERESPONSE"].tolist()[0] == 0
    assert rows["MORTGAGERESPONSE"].isna().tolist() == [False, True]  # not labelled yet: no actual
    with pytest.raises(MlopsError, match="not a"):
        settings(actuals="LABELS; DROP TABLE X")


def test_follow_alias_back_to_a_version_resumes_its_monitor():
    registry, model, session, monitors, _ = _snowml(["MORTGAGE_XGB_V1_MONITOR", "MORTGAGE_XGB_V2_MONITOR"])
    done = mon.follow_alias(registry, session, model, "v1", settings(), [])  # a rollback
    assert done["resumed"] and not done["created"] and done["suspended"] == ["MORTGAGE_XGB_V2_MONITOR"]
    registry.add_monitor.assert_not_called()
    monitors["MORTGAGE_XGB_V1_MONITOR"].resume.assert_called_once_with()
    monitors["MORTGAGE_XGB_V2_MONITOR"].suspend.assert_called_once_with()
    assert [call.args[0] for call in session.sql.call_args_list] == [mon.source_view_sql("MORTGAGE_XGB", "v1", settings())]

    monitors["MORTGAGE_XGB_V2_MONITOR"].suspend.side_effect = RuntimeError("insufficient privileges")
    with pytest.raises(MlopsError, match="suspend model monitor MORTGAGE_XGB_V2_MONITOR: insufficient privileges"):
        mon.follow_alias(registry, session, model, "v1", settings(), [])


def test_each_task_is_monitored_with_its_own_columns_and_metrics():
    binary = settings()
    assert mon.for_task(binary, "binary") == binary and mon.for_task(binary, None) == binary
    multiclass = mon.for_task(binary, "multiclass")
    assert multiclass.prediction_score_columns == [] and multiclass.prediction_class_columns == ["PREDICTED_RESPONSE"]
    assert multiclass.actual_class_columns == ["MORTGAGERESPONSE"]
    regression = mon.for_task(binary, "regression")
    assert (regression.prediction_score_columns, regression.prediction_class_columns) == (["PREDICTED_RESPONSE"], [])
    assert (regression.actual_score_columns, regression.actual_class_columns) == (["MORTGAGERESPONSE"], [])
    sql = mon.create_monitor_sql("M", "v1", regression)
    assert "PREDICTION_SCORE_COLUMNS=('PREDICTED_RESPONSE')" in sql and "ACTUAL_SCORE_COLUMNS=('MORTGAGERESPONSE')" in sql
    assert all("'RMSE'" in s or "'MAE'" in s or "'MSE'" in s or "'MAPE'" in s
               for s in mon.metrics_sql("M_V1_MONITOR", regression, task="regression") if "PERFORMANCE" in s)
    assert not any("'F1_SCORE'" in s for s in mon.metrics_sql("M_V1_MONITOR", regression, task="regression"))
    rmse = build_rules({"rmse_high": {"metric": "rmse", "op": ">", "threshold": 3.0}})
    create = next(s for s in mon.alerts_sql(rmse, "M", "M_V1_MONITOR", warehouse="WH") if "OR REPLACE ALERT" in s)
    assert "MODEL_MONITOR_PERFORMANCE_METRIC('M_V1_MONITOR', 'RMSE', '7 DAY'" in create
    sql_grammar.parse_alert(create)
