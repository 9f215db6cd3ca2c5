"""Snowflake ML Observability for the production version: the model monitor, its ALERTs, and following
the alias when it moves.

A Snowflake model monitor watches exactly one model version (``CREATE MODEL MONITOR ... VERSION='v1'``),
so "monitor PRODUCTION" means: one monitor per version that has held the alias (named
``<MODEL>_<VERSION>_MONITOR``), the current holder's monitor running and the others suspended (their
history stays queryable), and the ALERTs re-pointed at the current monitor. :func:`follow_alias` does
that with the Python API (``Registry.add_monitor`` / ``get_monitor(...).suspend()`` / ``resume()``)
plus ``CREATE OR REPLACE ALERT`` statements; :func:`follow_alias_sql` gives the same as SQL, for plans
and for people who run SQL themselves. Alerts are named after the model and the rule
(``<MODEL>_<RULE>_ALERT``), not the version, so moving the alias replaces them instead of leaving the old
version's alerts running. Each version's monitor reads a view of the scored table holding only that
version's rows (``WHERE MODEL_VERSION = 'V2'``, ``<MODEL>_<VERSION>_MONITOR_SOURCE``): the predictions
table holds every version's rows, and a monitor watches one version.

The ALERT statements come from the framework's own alert rules (``conf/alerts/``): a performance rule
(``f1 < 0.7``) queries ``MODEL_MONITOR_PERFORMANCE_METRIC``, a drift rule (``psi > 0.2`` on features)
``MODEL_MONITOR_DRIFT_METRIC`` for every watched column in one SELECT over a ``UNION ALL`` (the grammar
is ``IF (EXISTS (<one SELECT>))``), over the last aggregation window (granularity ``'<n> DAY'``). Differences
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
CLASSIFICATION_METRICS = {"f1": "F1_SCORE", "accuracy": "CLASSIFICATION_ACCURACY", "precision": "PRECISION",
                          "recall": "RECALL", "roc_auc": "ROC_AUC"}
REGRESSION_METRICS = {"rmse": "RMSE", "mae": "MAE", "mse": "MSE", "mape": "MAPE"}
PERFORMANCE_METRICS = {**CLASSIFICATION_METRICS, **REGRESSION_METRICS}
DRIFT_METRICS = {"psi": "POPULATION_STABILITY_INDEX", "jensen_shannon": "JENSEN_SHANNON",
                 "wasserstein": "WASSERSTEIN", "difference_of_means": "DIFFERENCE_OF_MEANS"}
SUFFIX = "_MONITOR"
VERSION_COLUMN = "MODEL_VERSION"


@dataclass
class MonitorSettings:
    """What a Snowflake model monitor reads: the scored table (features, predictions and ground truth,
    ``TIMESTAMP_NTZ`` timestamp), an optional baseline table (needed for drift), and a warehouse.

    ``actuals``: a table of labels that land after scoring (the id columns and the actual columns); the
    version's view then takes the actual columns from it (LEFT JOIN on the id columns) instead of from the
    scored table, so the monitor's performance metrics follow the labels as they arrive, in the warehouse."""

    source: str
    warehouse: str
    baseline: str | None = None
    actuals: str | None = None
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
    version_column: str = VERSION_COLUMN

    def __post_init__(self):
        for name in (self.source, self.warehouse, *(n for n in (self.baseline, self.actuals) if n)):
            _qualified(name)
        for column in (*self.columns(), self.version_column):
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


def for_task(settings: MonitorSettings, task: str | None) -> MonitorSettings:
    """``settings`` with the prediction and actual columns a monitor of a ``task`` model reads: binary keeps
    score and class; multiclass watches the predicted class only (``PREDICTED_SCORE`` is the probability
    of the predicted class, not of one class); regression compares the predicted value
    (``PREDICTED_RESPONSE``) with the actual value as scores."""
    from dataclasses import replace

    if task == "multiclass":
        return replace(settings, prediction_score_columns=[], actual_score_columns=[])
    if task == "regression":
        return replace(settings, prediction_score_columns=list(settings.prediction_class_columns),
                       prediction_class_columns=[], actual_score_columns=list(settings.actual_class_columns),
                       actual_class_columns=[])
    return settings


def source_view_name(model_name: str, version_name: str) -> str:
    """``<MODEL>_<VERSION>_MONITOR_SOURCE``: the view of the scored table holding one version's rows,
    beside the model (and its monitor)."""
    return monitor_name(model_name, version_name) + "_SOURCE"


def source_view_sql(model_name: str, version_name: str, settings: MonitorSettings) -> str:
    """``CREATE OR REPLACE VIEW`` of the rows ``version_name`` scored (its monitor's source), with the
    actual columns from ``settings.actuals`` when labels land in a table of their own."""
    view = source_view_name(model_name, version_name)
    version = f"{_identifier(settings.version_column)} = {_string(_identifier(version_name).upper())}"
    if not settings.actuals:
        return f"CREATE OR REPLACE VIEW {view} AS SELECT * FROM {settings.source} WHERE {version}"
    actual = [_identifier(c) for c in (*settings.actual_class_columns, *settings.actual_score_columns)]
    if not actual or not settings.id_columns:
        raise MlopsError("registry.monitor.actuals needs id_columns to join on and the actual column(s) it holds")
    kept = f"P.* EXCLUDE ({', '.join(actual)})"
    joined = " AND ".join(f"A.{_identifier(c)} = P.{_identifier(c)}" for c in settings.id_columns)
    labels = ", ".join(f"A.{c}" for c in actual)
    return (f"CREATE OR REPLACE VIEW {view} AS SELECT {kept}, {labels} FROM {settings.source} P "
            f"LEFT JOIN {settings.actuals} A ON {joined} WHERE P.{version}")


def for_version(model_name: str, version_name: str, settings: MonitorSettings) -> MonitorSettings:
    """``settings`` with the source replaced by the version's view (:func:`source_view_sql`)."""
    from dataclasses import replace

    return replace(settings, source=source_view_name(model_name, version_name))


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


def _days(window: str) -> int:
    match = re.fullmatch(r"(\d+) days?", str(window).strip(), flags=re.IGNORECASE)
    if not match:
        raise MlopsError(f"Snowflake alert windows are whole days ('7 DAY'), not {window!r}")
    return int(match.group(1))


def rule_condition(rule, monitor: str, *, columns, window: str) -> str:
    """The ``EXISTS (<one SELECT>)`` that is true when ``rule`` (an ``mlops_framework.alerts.AlertRule``)
    fires on ``monitor``'s last ``window``; ``columns`` are the features a drift rule without ``columns``
    watches (one SELECT over a ``UNION ALL`` of their metrics)."""
    days = _days(window)
    window_sql = _string(f"{days} DAY")
    span = f"DATEADD('DAY', -{days}, CURRENT_TIMESTAMP()), CURRENT_TIMESTAMP()"
    op = rule.op
    if rule.window not in ("last", "new"):  # a scheduled alert checks each window as it becomes the last
        raise MlopsError(f"alert rule {rule.name}: Snowflake alerts check the last window only (window: last or new)")
    if rule.against:
        raise MlopsError(f"alert rule {rule.name}: Snowflake alerts compare with thresholds, not the baseline")
    if rule.metric in PERFORMANCE_METRICS:
        call = f"MODEL_MONITOR_PERFORMANCE_METRIC({_string(monitor)}, {_string(PERFORMANCE_METRICS[rule.metric])}, {window_sql}, {span})"
        return _window_condition(call, op, rule.threshold)
    if rule.metric in DRIFT_METRICS:
        watched = rule.columns or columns
        if not watched:
            raise MlopsError(f"alert rule {rule.name}: name the columns a drift alert watches "
                             f"(registry.monitor.feature_columns, or the rule's columns)")
        value = "ABS(METRIC_VALUE)" if rule.absolute else "METRIC_VALUE"
        selects = [f"SELECT METRIC_VALUE FROM TABLE(MODEL_MONITOR_DRIFT_METRIC({_string(monitor)}, "
                   f"{_string(DRIFT_METRICS[rule.metric])}, {_string(_identifier(column))}, {window_sql}, {span}))"
                   for column in watched]
        return f"EXISTS (SELECT 1 FROM ({' UNION ALL '.join(selects)}) WHERE {value} {op} {float(rule.threshold)!r})"
    raise MlopsError(f"alert rule {rule.name}: Snowflake monitors do not compute {rule.metric}")


def alert_name(model_name: str, rule_name: str) -> str:
    """``<MODEL>_<RULE>_ALERT`` beside the model: one per model and rule, whichever version is monitored."""
    *schema, model = _qualified(model_name).split(".")
    return ".".join([*schema, f"{model.upper()}_{_identifier(rule_name).upper()}_ALERT"])


def alert_log_table(model_name: str) -> str:
    """``MLOPS_ALERT_LOG`` in the model's schema."""
    *schema, _ = _qualified(model_name).split(".")
    return ".".join([*schema, "MLOPS_ALERT_LOG"])


def alert_sql(rule, model_name: str, monitor: str, *, warehouse: str, columns=(),
              schedule: str = "USING CRON 0 7 * * * UTC", action: str | None = None, window: str = "7 DAY") -> list[str]:
    """``CREATE OR REPLACE ALERT`` (and its ``RESUME``) checking ``rule`` on ``monitor`` on ``schedule``.

    ``action`` is the SQL run when it fires (default: a row in ``MLOPS_ALERT_LOG`` beside the model, which
    is created if needed; e.g. ``CALL SYSTEM$SEND_EMAIL('integration', 'to@x.com', 'subject', 'body')``)."""
    name = alert_name(model_name, rule.name)
    condition = rule_condition(rule, monitor, columns=columns, window=window)
    message = f"{rule.name}: {rule.metric} {rule.op} {rule.threshold} on {monitor}"
    action = action or (f"INSERT INTO {alert_log_table(model_name)} (FIRED_AT, ALERT, MONITOR, MESSAGE) "
                        f"SELECT CURRENT_TIMESTAMP(), {_string(name)}, {_string(monitor)}, {_string(message)}")
    return [
        f"CREATE OR REPLACE ALERT {name}\n  WAREHOUSE = {_qualified(warehouse)}\n  SCHEDULE = {_string(schedule)}\n"
        f"  IF ({condition})\n  THEN {action}",
        f"ALTER ALERT {name} RESUME",
    ]


ALERT_LOG_DDL = ("CREATE TABLE IF NOT EXISTS {table} (FIRED_AT TIMESTAMP_LTZ, ALERT VARCHAR, "
                 "MONITOR VARCHAR, MESSAGE VARCHAR)")


def alerts_sql(rules, model_name: str, monitor: str, *, warehouse: str, columns=(), **options) -> list[str]:
    """Every statement for ``rules``: the alert log table, then each alert and its RESUME."""
    rules = list(rules)
    statements = [ALERT_LOG_DDL.format(table=alert_log_table(model_name))] if rules and "action" not in options else []
    for rule in rules:
        statements += alert_sql(rule, model_name, monitor, warehouse=warehouse, columns=columns, **options)
    return statements


# ---------------------------------------------------------------------- following the alias
def follow_alias_sql(model_name: str, new_version: str, old_versions, settings: MonitorSettings, rules=(), *,
                     columns=(), if_not_exists: bool = True, **alert_options) -> list[str]:
    """The SQL that makes the monitoring follow an alias onto ``new_version``: create its monitor if
    missing (and resume it) on a view of that version's rows, suspend the monitors of ``old_versions``,
    replace the alerts (named per model, so the old version's are replaced, not left running)."""
    name = monitor_name(model_name, new_version)
    statements = [source_view_sql(model_name, new_version, settings),
                  create_monitor_sql(model_name, new_version, for_version(model_name, new_version, settings),
                                     if_not_exists=if_not_exists),
                  f"ALTER MODEL MONITOR {name} RESUME"]
    for old in old_versions:
        if old and old != new_version:
            statements.append(f"ALTER MODEL MONITOR IF EXISTS {monitor_name(model_name, old)} SUSPEND")
    statements += alerts_sql(rules, model_name, name, warehouse=settings.warehouse, columns=columns, **alert_options)
    return statements


def metrics_sql(monitor: str, settings: MonitorSettings, *, columns=(), window: str = "7 DAY",
                task: str | None = None) -> list[str]:
    """The SELECTs reading ``monitor``'s last ``window`` in the warehouse: every performance metric, and
    population stability per watched column when the monitor has a baseline. Only the metric rows come back."""
    days = _days(window)
    granularity = _string(f"{days} DAY")
    span = f"DATEADD('DAY', -{days}, CURRENT_TIMESTAMP()), CURRENT_TIMESTAMP()"
    statements = [f"SELECT {_string(name)} AS METRIC, NULL AS COLUMN_NAME, EVENT_TIMESTAMP, METRIC_VALUE FROM TABLE("
                  f"MODEL_MONITOR_PERFORMANCE_METRIC({_string(monitor)}, {_string(metric)}, {granularity}, {span}))"
                  for name, metric in (REGRESSION_METRICS if task == "regression" else CLASSIFICATION_METRICS).items()]
    if settings.baseline:
        statements += [f"SELECT 'psi' AS METRIC, {_string(_identifier(column))} AS COLUMN_NAME, EVENT_TIMESTAMP, "
                       f"METRIC_VALUE FROM TABLE(MODEL_MONITOR_DRIFT_METRIC({_string(monitor)}, "
                       f"'POPULATION_STABILITY_INDEX', {_string(column)}, {granularity}, {span}))" for column in columns]
    return statements


def ensure_monitor(registry, session, model, version_name: str, settings: MonitorSettings, *,
                   model_name: str | None = None) -> dict:
    """The version's source view and monitor (created with ``registry.add_monitor`` unless SHOW MODEL
    MONITORS lists it); nothing else is suspended or resumed. Returns what it did."""
    model_name = model_name or model.name
    name = monitor_name(model_name, version_name)
    view = source_view_sql(model_name, version_name, settings)
    _call(lambda: session.sql(view).collect(), view)
    created = _bare(name) not in _monitor_names(registry)
    if created:
        add_monitor(registry, model.version(version_name), for_version(model_name, version_name, settings), name=name)
    return {"monitor": name, "created": created, "statements": [view]}


def _monitor_names(registry) -> set[str]:
    names = set()
    for row in registry.show_model_monitors():
        data = row.as_dict() if hasattr(row, "as_dict") else dict(row)
        value = data.get("name") or data.get("NAME")
        if value:
            names.add(str(value).strip('"').upper())
    return names


def follow_alias(registry, session, model, version_name: str, settings: MonitorSettings, rules=(), *,
                 columns=(), model_name: str | None = None, **alert_options) -> dict:
    """Make the monitoring follow the alias now on ``version_name`` (call right after ``set_alias``).

    ``registry``: a ``snowflake.ml.registry.Registry``; ``model``: its ``Model``; ``model_name``: the
    model's name as qualified as the registry's location (default ``model.name``): the monitor, its source
    view and the alerts go beside it; ``session``: the Snowpark session that runs the SQL. Creates the
    version's source view, then its monitor with ``registry.add_monitor`` unless it exists (then resumes
    it), suspends the monitors of this model's other versions (exact names from :func:`monitor_name`,
    never another model's that merely share a prefix), and replaces the alerts. Returns what it did."""
    model_name = model_name or model.name
    name = monitor_name(model_name, version_name)
    ours = {_bare(monitor_name(model_name, row["name"])) for row in _version_rows(model)} - {_bare(name)}
    existing = _monitor_names(registry)
    done = {"monitor": name, "created": False, "resumed": False, "suspended": [], "statements": []}
    view = source_view_sql(model_name, version_name, settings)
    _call(lambda: session.sql(view).collect(), view)
    done["statements"].append(view)
    if _bare(name) in existing:
        try:
            registry.get_monitor(name=name).resume()
            done["resumed"] = True
        except Exception as error:
            if "already" not in str(error).lower():  # resuming a running monitor is not a failure
                raise MlopsError(f"resume model monitor {name}: {_one_line(error)}") from error
    else:
        add_monitor(registry, model.version(version_name), for_version(model_name, version_name, settings), name=name)
        done["created"] = True
    prefix = name[: len(name) - len(_bare(name))]
    for other in sorted(existing & ours):
        _call(lambda other=other: registry.get_monitor(name=prefix + other).suspend(), f"suspend model monitor {other}")
        done["suspended"].append(prefix + other)
    for statement in alerts_sql(rules, model_name, name, warehouse=settings.warehouse, columns=columns, **alert_options):
        _call(lambda s=statement: session.sql(s).collect(), statement.splitlines()[0])
        done["statements"].append(statement)
    return done


def _bare(name: str) -> str:
    return name.split(".")[-1].upper()


def _version_rows(model):
    frame = model.show_versions()
    return [] if frame is None or len(frame) == 0 else frame.to_dict("records")


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
