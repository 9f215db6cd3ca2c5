"""Snowflake ML Observability for the production version: the model monitor, its ALERTs, and following
the alias when it moves.

A Snowflake model monitor watches exactly one model version (``CREATE MODEL MONITOR ... VERSION='v1'``),
so "monitor PRODUCTION" means: one monitor per version that has held the alias (named
``<MODEL>_<VERSION>_MONITOR``), the current holder's monitor running and the others suspended (their
history stays queryable), and the ALERTs re-pointed at the current monitor. :func:`follow_alias` does
that with the Python API (``Registry.add_monitor`` / ``get_monitor(...).suspend()`` / ``resume()``)
plus ``CREATE OR REPLACE ALERT`` statements; :func:`follow_alias_sql` gives the same as SQL, for plans
and for people who run SQL themselves.

The ALERT statements come from the framework's own alert rules (``conf/alerts/``): a performance rule
(``f1 < 0.7``) queries ``MODEL_MONITOR_PERFORMANCE_METRIC``, a drift rule (``psi > 0.2`` on features)
``MODEL_MONITOR_DRIFT_METRIC`` once per watched column, over the last aggregation window. Differences
from the local monitor: Snowflake's F1/precision/recall are those of the positive class (the local
default is ``average: macro``), and Snowflake computes no Hellinger distance. Snowflake creates an alert
suspended: every ``CREATE ALERT`` here is followed by ``ALTER ALERT ... RESUME``.

Nothing here imports Snowflake at module level; the Snowflake classes are imported in the functions that
build them. [verify] against a live account: the ALERT body and the metric function arguments.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mlops_framework.errors import MlopsError

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")
PERFORMANCE_METRICS = {"f1": "F1_SCORE", "accuracy": "CLASSIFICATION_ACCURACY", "precision": "PRECISION",
                       "recall": "RECALL", "roc_auc": "ROC_AUC"}
DRIFT_METRICS = {"psi": "POPULATION_STABILITY_INDEX", "jensen_shannon": "JENSEN_SHANNON",
                 "wasserstein": "WASSERSTEIN", "difference_of_means": "DIFFERENCE_OF_MEANS"}
SUFFIX = "_MONITOR"


@dataclass
class MonitorSettings:
    """What a Snowflake model monitor reads: the scored table (features, predictions and ground truth,
    ``TIMESTAMP_NTZ`` timestamp), an optional baseline table (needed for drift), and a warehouse."""

    source: str
    warehouse: str
    baseline: str | None = None
    timestamp_column: str = "TS"
    id_columns: list = field(default_factory=lambda: ["LOAN_ID"])
    prediction_score_columns: list = field(default_factory=lambda: ["PREDICTED_SCORE"])
    prediction_class_columns: list = field(default_factory=lambda: ["PREDICTED_RESPONSE"])
    actual_class_columns: list = field(default_factory=lambda: ["MORTGAGERESPONSE"])
    actual_score_columns: list = field(default_factory=list)
    segment_columns: list = field(default_factory=list)
    function_name: str = "predict"
    refresh_interval: str = "1 day"
    aggregation_window: str = "7 days"

    def __post_init__(self):
        for name in (self.source, self.warehouse, *([self.baseline] if self.baseline else [])):
            _qualified(name)
        for column in self.columns():
            _identifier(column)
        if not re.fullmatch(r"\d+ days?", self.aggregation_window.strip(), flags=re.IGNORECASE):
            raise MlopsError(f"Snowflake monitors aggregate over whole days ('7 days'), not {self.aggregation_window!r}")

    def columns(self):
        return [self.timestamp_column, *self.id_columns, *self.prediction_score_columns,
                *self.prediction_class_columns, *self.actual_class_columns, *self.actual_score_columns,
                *self.segment_columns]


def monitor_name(model_name: str, version_name: str) -> str:
    """``<MODEL>_<VERSION>_MONITOR``: one monitor per version, found again by name (in the model's
    schema: a monitor must live beside its model)."""
    *schema, model = _qualified(model_name).split(".")
    return ".".join([*schema, f"{model.upper()}_{_identifier(version_name).upper()}{SUFFIX}"])


def _identifier(name) -> str:
    if not isinstance(name, str) or not IDENTIFIER.match(name):
        raise MlopsError(f"{name!r} is not a plain Snowflake identifier (letters, digits, _ and $)")
    return name


def _qualified(name) -> str:
    parts = str(name).split(".")
    if not 1 <= len(parts) <= 3:
        raise MlopsError(f"{name!r} is not a [database.][schema.]name")
    for part in parts:
        _identifier(part)
    return name


def _string(value) -> str:
    return "'" + str(value).replace("\\", "\\\\").replace("'", "''") + "'"


def _columns(columns) -> str:
    return "(" + ", ".join(_string(_identifier(c)) for c in columns) + ")"


# ---------------------------------------------------------------------- the monitor
def create_monitor_sql(model_name: str, version_name: str, settings: MonitorSettings, *,
                       name: str | None = None, if_not_exists: bool = True) -> str:
    """The ``CREATE MODEL MONITOR`` statement for one version (as snowflake-ml's own client writes it)."""
    name = _qualified(name or monitor_name(model_name, version_name))
    lines = [
        f"CREATE MODEL MONITOR {'IF NOT EXISTS ' if if_not_exists else ''}{name} WITH",
        f"    MODEL={_qualified(model_name)}",
        f"    VERSION={_string(_identifier(version_name).upper())}",
        f"    FUNCTION={_string(_identifier(settings.function_name))}",
        f"    WAREHOUSE={_string(settings.warehouse)}",
        f"    SOURCE={settings.source}",
        f"    ID_COLUMNS={_columns(settings.id_columns)}",
        f"    PREDICTION_SCORE_COLUMNS={_columns(settings.prediction_score_columns)}",
        f"    PREDICTION_CLASS_COLUMNS={_columns(settings.prediction_class_columns)}",
        f"    ACTUAL_SCORE_COLUMNS={_columns(settings.actual_score_columns)}",
        f"    ACTUAL_CLASS_COLUMNS={_columns(settings.actual_class_columns)}",
        f"    TIMESTAMP_COLUMN={_string(_identifier(settings.timestamp_column))}",
        f"    REFRESH_INTERVAL={_string(settings.refresh_interval)}",
        f"    AGGREGATION_WINDOW={_string(settings.aggregation_window)}",
    ]
    if settings.segment_columns:
        lines.append(f"    SEGMENT_COLUMNS={_columns(settings.segment_columns)}")
    if settings.baseline:
        lines.append(f"    BASELINE={settings.baseline}")
    return "\n".join(lines)


def source_config(settings: MonitorSettings):
    """The ``ModelMonitorSourceConfig`` for :func:`add_monitor`."""
    from snowflake.ml.monitoring.entities.model_monitor_config import ModelMonitorSourceConfig

    return ModelMonitorSourceConfig(
        source=settings.source, timestamp_column=settings.timestamp_column, id_columns=list(settings.id_columns),
        prediction_score_columns=list(settings.prediction_score_columns) or None,
        prediction_class_columns=list(settings.prediction_class_columns) or None,
        actual_score_columns=list(settings.actual_score_columns) or None,
        actual_class_columns=list(settings.actual_class_columns) or None,
        baseline=settings.baseline, segment_columns=list(settings.segment_columns) or None,
    )


def monitor_config(model_version, settings: MonitorSettings):
    """The ``ModelMonitorConfig`` for :func:`add_monitor`, for a ``ModelVersion``."""
    from snowflake.ml.monitoring.entities.model_monitor_config import ModelMonitorConfig

    return ModelMonitorConfig(
        model_version=model_version, model_function_name=settings.function_name,
        background_compute_warehouse_name=settings.warehouse, refresh_interval=settings.refresh_interval,
        aggregation_window=settings.aggregation_window,
    )


def add_monitor(registry, model_version, settings: MonitorSettings, *, name: str | None = None):
    """``registry.add_monitor`` for ``model_version`` (a snowflake.ml ``ModelVersion``); returns the
    ``ModelMonitor``. ``registry`` is a ``snowflake.ml.registry.Registry`` built with monitoring enabled."""
    name = name or monitor_name(model_version.model_name, model_version.version_name)
    try:
        return registry.add_monitor(name, source_config(settings), monitor_config(model_version, settings))
    except Exception as error:
        raise MlopsError(f"cannot create model monitor {name}: {_one_line(error)}") from error


# ---------------------------------------------------------------------- alerts
def _window_condition(metric_call: str, op: str, threshold: float) -> str:
    return f"EXISTS (SELECT 1 FROM TABLE({metric_call}) WHERE METRIC_VALUE {op} {float(threshold)!r})"


def rule_condition(rule, monitor: str, *, columns, window: str = "7 DAYS") -> str:
    """The SQL condition that is true when ``rule`` (an ``mlops_framework.alerts.AlertRule``) fires on
    ``monitor``'s last ``window``; ``columns`` are the features a drift rule without ``columns`` watches."""
    window_sql = _string(window.upper())
    days = int(window.split()[0])
    span = f"DATEADD('DAY', -{days}, CURRENT_TIMESTAMP()), CURRENT_TIMESTAMP()"
    op = rule.op
    if rule.window not in ("last", "new"):  # a scheduled alert checks each window as it becomes the last
        raise MlopsError(f"alert rule {rule.name}: Snowflake alerts check the last window only (window: last or new)")
    if getattr(rule, "against", None):
        raise MlopsError(f"alert rule {rule.name}: Snowflake alerts compare with thresholds, not the baseline")
    if rule.metric in PERFORMANCE_METRICS:
        call = f"MODEL_MONITOR_PERFORMANCE_METRIC({_string(monitor)}, {_string(PERFORMANCE_METRICS[rule.metric])}, {window_sql}, {span})"
        return _window_condition(call, op, rule.threshold)
    if rule.metric in DRIFT_METRICS:
        watched = rule.columns or columns
        if not watched:
            raise MlopsError(f"alert rule {rule.name}: name the columns a drift alert watches "
                             f"(registry.monitor.feature_columns, or the rule's columns)")
        value = "ABS(METRIC_VALUE)" if getattr(rule, "absolute", False) else "METRIC_VALUE"
        parts = []
        for column in watched:
            call = (f"MODEL_MONITOR_DRIFT_METRIC({_string(monitor)}, {_string(DRIFT_METRICS[rule.metric])}, "
                    f"{_string(_identifier(column))}, {window_sql}, {span})")
            parts.append(f"EXISTS (SELECT 1 FROM TABLE({call}) WHERE {value} {op} {float(rule.threshold)!r})")
        return "(" + " OR ".join(parts) + ")"
    raise MlopsError(f"alert rule {rule.name}: Snowflake monitors do not compute {rule.metric}")


def alert_name(monitor: str, rule_name: str) -> str:
    return f"{monitor}_{_identifier(rule_name).upper()}_ALERT"


def alert_sql(rule, monitor: str, *, warehouse: str, columns=(), schedule: str = "USING CRON 0 7 * * * UTC",
              action: str | None = None, name: str | None = None, window: str = "7 DAYS") -> list[str]:
    """``CREATE OR REPLACE ALERT`` (and its ``RESUME``) checking ``rule`` on ``monitor`` on ``schedule``.

    ``action`` is the SQL run when it fires (default: a row in ``MLOPS_ALERT_LOG``, which is created if
    needed; e.g. ``CALL SYSTEM$SEND_EMAIL('integration', 'to@x.com', 'subject', 'body')``)."""
    name = _qualified(name or alert_name(monitor, rule.name))
    condition = rule_condition(rule, monitor, columns=columns, window=window)
    message = f"{rule.name}: {rule.metric} {rule.op} {rule.threshold} on {monitor}"
    action = action or (f"INSERT INTO MLOPS_ALERT_LOG (FIRED_AT, ALERT, MONITOR, MESSAGE) "
                        f"SELECT CURRENT_TIMESTAMP(), {_string(name)}, {_string(monitor)}, {_string(message)}")
    return [
        f"CREATE OR REPLACE ALERT {name}\n  WAREHOUSE = {_qualified(warehouse)}\n  SCHEDULE = {_string(schedule)}\n"
        f"  IF ({condition})\n  THEN {action}",
        f"ALTER ALERT {name} RESUME",
    ]


ALERT_LOG_DDL = ("CREATE TABLE IF NOT EXISTS MLOPS_ALERT_LOG (FIRED_AT TIMESTAMP_LTZ, ALERT VARCHAR, "
                 "MONITOR VARCHAR, MESSAGE VARCHAR)")


def alerts_sql(rules, monitor: str, *, warehouse: str, columns=(), **options) -> list[str]:
    """Every statement for ``rules``: the alert log table, then each alert and its RESUME."""
    rules = list(rules)
    statements = [ALERT_LOG_DDL] if rules and "action" not in options else []
    for rule in rules:
        statements += alert_sql(rule, monitor, warehouse=warehouse, columns=columns, **options)
    return statements


# ---------------------------------------------------------------------- following the alias
def follow_alias_sql(model_name: str, new_version: str, old_versions, settings: MonitorSettings, rules=(), *,
                     columns=(), **alert_options) -> list[str]:
    """The SQL that makes the monitoring follow an alias onto ``new_version``: create its monitor if
    missing (and resume it), suspend the monitors of ``old_versions``, re-point the alerts."""
    name = monitor_name(model_name, new_version)
    statements = [create_monitor_sql(model_name, new_version, settings, name=name),
                  f"ALTER MODEL MONITOR {name} RESUME"]
    for old in old_versions:
        if old and old != new_version:
            statements.append(f"ALTER MODEL MONITOR IF EXISTS {monitor_name(model_name, old)} SUSPEND")
    statements += alerts_sql(rules, name, warehouse=settings.warehouse, columns=columns, **alert_options)
    return statements


def _monitor_names(registry) -> set[str]:
    names = set()
    for row in registry.show_model_monitors():
        data = row.as_dict() if hasattr(row, "as_dict") else dict(row)
        value = data.get("name") or data.get("NAME")
        if value:
            names.add(str(value).strip('"').upper())
    return names


def follow_alias(registry, session, model, version_name: str, settings: MonitorSettings, rules=(), *,
                 columns=(), **alert_options) -> dict:
    """Make the monitoring follow the alias now on ``version_name`` (call right after ``set_alias``).

    ``registry``: a ``snowflake.ml.registry.Registry``; ``model``: its ``Model``; ``session``: the
    Snowpark session that runs the ALERT statements. Creates the version's monitor with
    ``registry.add_monitor`` unless it exists (then resumes it), suspends every other monitor of this
    model named by :func:`monitor_name`, and replaces the alerts. Returns what it did."""
    name = monitor_name(model.name, version_name)
    prefix = f"{_qualified(model.name).split('.')[-1].upper()}_"
    existing = _monitor_names(registry)
    done = {"monitor": name, "created": False, "resumed": False, "suspended": [], "statements": []}
    if name in existing:
        try:
            registry.get_monitor(name=name).resume()
            done["resumed"] = True
        except Exception as error:
            if "already" not in str(error).lower():  # resuming a running monitor is not a failure
                raise MlopsError(f"resume model monitor {name}: {_one_line(error)}") from error
    else:
        add_monitor(registry, model.version(version_name), settings, name=name)
        done["created"] = True
    for other in sorted(existing - {name}):
        if other.startswith(prefix) and other.endswith(SUFFIX):
            _call(lambda other=other: registry.get_monitor(name=other).suspend(), f"suspend model monitor {other}")
            done["suspended"].append(other)
    for statement in alerts_sql(rules, name, warehouse=settings.warehouse, columns=columns, **alert_options):
        _call(lambda s=statement: session.sql(s).collect(), statement.splitlines()[0])
        done["statements"].append(statement)
    return done


def _call(fn, what: str):
    try:
        return fn()
    except MlopsError:
        raise
    except Exception as error:
        raise MlopsError(f"{what}: {_one_line(error)}") from error


def _one_line(error) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
