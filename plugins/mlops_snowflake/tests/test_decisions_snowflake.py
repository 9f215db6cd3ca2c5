"""Focused tests of the Snowflake plugin's decisions (parity check, monitor SQL), written to kill the mutants
the rest of its tests let survive (docs/mutation.md)."""

import pytest

from mlops_snowflake.registry import _same_value


@pytest.mark.parametrize("a, b, same", [
    (1, 1, True), ("1", 1, True), (1, 1.0, True), ("1.0", 1, True), (0, 1, False), ("0", "1", False),
    ("yes", "yes", True), ("yes", "no", False), (None, None, True), (None, "None", True), (None, 0, False),
    (True, "True", True), (False, "True", False),
])
def test_parity_compares_classes_by_value_across_types(a, b, same):
    assert _same_value(a, b) is same


# ---------------------------------------------------------------- monitor SQL
from types import SimpleNamespace  # noqa: E402

from mlops_framework.errors import MlopsError  # noqa: E402
from mlops_snowflake import monitor as mon  # noqa: E402


def _settings(**overrides):
    return mon.MonitorSettings(**{"source": "DB.SCH.P", "warehouse": "WH", **overrides})


def _rule(metric, op=">", threshold=0.2, window="last", columns=None, absolute=False, against=None, name="r"):
    return SimpleNamespace(name=name, metric=metric, op=op, threshold=threshold, window=window, columns=columns,
                           absolute=absolute, against=against)


@pytest.mark.parametrize("window, days", [("7 DAY", 7), ("1 day", 1), (" 14 Days ", 14), ("30 DAYS", 30)])
def test_alert_windows_are_whole_days(window, days):
    assert mon._days(window) == days


@pytest.mark.parametrize("window", ["1 week", "7", "0.5 day", "7 days later", "day"])
def test_other_alert_windows_are_refused(window):
    with pytest.raises(MlopsError, match=r"^Snowflake alert windows are whole days \('7 DAY'\), not "):
        mon._days(window)


def test_a_performance_rule_reads_its_metric_over_the_window():
    assert mon.rule_condition(_rule("roc_auc", "<=", 0.65), "M_V1_MONITOR", columns=["A"], window="3 days") == (
        "EXISTS (SELECT 1 FROM TABLE(MODEL_MONITOR_PERFORMANCE_METRIC('M_V1_MONITOR', 'ROC_AUC', '3 DAY', "
        "DATEADD('DAY', -3, CURRENT_TIMESTAMP()), CURRENT_TIMESTAMP())) WHERE METRIC_VALUE <= 0.65)")
    assert mon.rule_condition(_rule("mae", window="new", threshold=2), "M", columns=(), window="7 DAY").endswith(
        "WHERE METRIC_VALUE > 2.0)")


def test_a_drift_rule_watches_its_own_columns_first_by_absolute_value_when_asked():
    condition = mon.rule_condition(_rule("difference_of_means", columns=["B"], absolute=True), "MON", columns=["A"],
                                   window="7 DAY")
    assert condition == (
        "EXISTS (SELECT 1 FROM (SELECT METRIC_VALUE FROM TABLE(MODEL_MONITOR_DRIFT_METRIC('MON', "
        "'DIFFERENCE_OF_MEANS', 'B', '7 DAY', DATEADD('DAY', -7, CURRENT_TIMESTAMP()), CURRENT_TIMESTAMP()))) "
        "WHERE ABS(METRIC_VALUE) > 0.2)")
    both = mon.rule_condition(_rule("wasserstein"), "MON", columns=["A", "B"], window="1 day")
    span = "'1 DAY', DATEADD('DAY', -1, CURRENT_TIMESTAMP()), CURRENT_TIMESTAMP()))"
    assert both == (
        f"EXISTS (SELECT 1 FROM (SELECT METRIC_VALUE FROM TABLE(MODEL_MONITOR_DRIFT_METRIC('MON', 'WASSERSTEIN', 'A', {span}"
        f" UNION ALL SELECT METRIC_VALUE FROM TABLE(MODEL_MONITOR_DRIFT_METRIC('MON', 'WASSERSTEIN', 'B', {span})"
        " WHERE METRIC_VALUE > 0.2)")


def test_rules_snowflake_cannot_check_are_refused_by_name():
    for rule, message in [
        (_rule("f1", window="any", name="f1_low"), "alert rule f1_low: Snowflake alerts check the last window only"),
        (_rule("f1", against="baseline", name="drop"), "alert rule drop: Snowflake alerts compare with thresholds"),
        (_rule("psi", name="p"), "alert rule p: name the columns a drift alert watches"),
        (_rule("hellinger", name="h"), "alert rule h: Snowflake monitors do not compute hellinger"),
    ]:
        with pytest.raises(MlopsError, match="^" + message):
            mon.rule_condition(rule, "MON", columns=[], window="7 DAY")


def test_the_warehouse_metrics_are_the_tasks_and_psi_only_with_a_baseline():
    classification = mon.metrics_sql("MON", _settings(), columns=["A"], window="14 days")
    assert len(classification) == len(mon.CLASSIFICATION_METRICS) and classification[0] == (
        "SELECT 'f1' AS METRIC, NULL AS COLUMN_NAME, EVENT_TIMESTAMP, METRIC_VALUE FROM TABLE("
        "MODEL_MONITOR_PERFORMANCE_METRIC('MON', 'F1_SCORE', '14 DAY', DATEADD('DAY', -14, CURRENT_TIMESTAMP()), "
        "CURRENT_TIMESTAMP()))")
    regression = mon.metrics_sql("MON", _settings(baseline="DB.SCH.B"), columns=["A", "B"], task="regression")
    assert [s.split("'")[1] for s in regression] == [*mon.REGRESSION_METRICS, "psi", "psi"]
    assert regression[-1] == (
        "SELECT 'psi' AS METRIC, 'B' AS COLUMN_NAME, EVENT_TIMESTAMP, METRIC_VALUE FROM TABLE("
        "MODEL_MONITOR_DRIFT_METRIC('MON', 'POPULATION_STABILITY_INDEX', 'B', '7 DAY', "
        "DATEADD('DAY', -7, CURRENT_TIMESTAMP()), CURRENT_TIMESTAMP()))")


def test_a_monitor_names_segments_and_baseline_only_when_set():
    plain = mon.create_monitor_sql("M", "v1", _settings())
    assert "SEGMENT_COLUMNS" not in plain and "BASELINE" not in plain
    assert plain.splitlines()[-1] == "    AGGREGATION_WINDOW='7 days'"
    full = mon.create_monitor_sql("M", "v1", _settings(baseline="DB.SCH.B", segment_columns=["REGION"]),
                                  name="DB.SCH.OTHER", if_not_exists=False)
    assert full.splitlines()[0] == "CREATE MODEL MONITOR DB.SCH.OTHER WITH"
    assert full.splitlines()[-2:] == ["    SEGMENT_COLUMNS=('REGION')", "    BASELINE=DB.SCH.B"]


def test_following_an_alias_creates_the_monitor_as_asked_and_alerts_on_the_monitors_warehouse():
    rule = _rule("f1", op="<", threshold=0.5, name="low")
    statements = mon.follow_alias_sql("DB.SCH.M", "v2", ["v1", "v2", None], _settings(warehouse="ALERT_WH"), [rule],
                                      if_not_exists=False, schedule="USING CRON 0 8 * * * UTC")
    assert statements[1].startswith("CREATE MODEL MONITOR DB.SCH.M_V2_MONITOR WITH\n")
    assert statements[2:4] == ["ALTER MODEL MONITOR DB.SCH.M_V2_MONITOR RESUME",
                               "ALTER MODEL MONITOR IF EXISTS DB.SCH.M_V1_MONITOR SUSPEND"]
    alert = statements[5]
    assert alert.startswith("CREATE OR REPLACE ALERT DB.SCH.M_LOW_ALERT\n  WAREHOUSE = ALERT_WH\n"
                            "  SCHEDULE = 'USING CRON 0 8 * * * UTC'\n  IF (EXISTS (")
    assert statements[6:] == ["ALTER ALERT DB.SCH.M_LOW_ALERT RESUME"]


def test_a_multiclass_monitor_reads_predicted_and_actual_classes_only():
    settings = _settings(actual_score_columns=["ACTUAL_SCORE"])
    multiclass = mon.for_task(settings, "multiclass")
    assert (multiclass.prediction_score_columns, multiclass.actual_score_columns) == ([], [])
    assert (multiclass.prediction_class_columns, multiclass.actual_class_columns) == (
        settings.prediction_class_columns, settings.actual_class_columns)
