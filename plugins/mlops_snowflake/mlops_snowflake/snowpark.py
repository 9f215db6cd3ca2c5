"""``backend=snowpark``: train here on the slice pulled from Snowflake, score inside the warehouse.

Every stage runs in this process as with the local backend, except ``score``: the registered model
version (``scoring.version``, typically an alias such as PRODUCTION, resolved by Snowflake at run time)
scores the scoring source as a Snowpark DataFrame with ``mv.run``. Each input row keeps all its
columns, so the predictions sit beside their ground truth; the result is computed into a temporary
table by ``save_as_table`` and published by the sink's transaction (partitions replaced). No row of the
scoring data leaves Snowflake. ``load`` pulls only the feature columns of the rows matching ``where``.

In-warehouse scoring needs a Snowflake scoring source (``data=snowflake`` or ``scoring.source.kind:
snowflake``), a Snowflake sink (``scoring.sink.kind: snowflake``) and ``registry=snowflake``; with
anything else the score stage runs in this process, and ``plan`` says why.
"""

from __future__ import annotations

import dataclasses
import time

from mlops_framework.contracts import PlannedRegistry, SqlSource, WarehouseRegistry, WarehouseSink, WarehouseSource
from mlops_framework.errors import MlopsError
from mlops_framework.pipeline import Stage, run_stages
from mlops_framework.stages import planned_registration, scoring_version

from mlops_snowflake import connection as connection_module
from mlops_snowflake.registry import FUNCTION_NAME


UNVERIFIED = ("note: the Snowflake statements below are checked offline against snowflake-ml 2.6's own classes "
              "and the documented grammar; none has been run against a live account by this project's tests")


class SnowparkBackend:
    """Stages in this process; batch scoring in the Snowflake warehouse."""

    def __init__(self, connection=None, score_in_warehouse: bool = True):
        self.connection = connection
        self.score_in_warehouse = score_in_warehouse

    # ---- plan --------------------------------------------------------------------------------------

    def plan(self, run) -> list[str]:
        """Every operation, SQL included, that ``execute`` would issue; connects nowhere."""
        lines = [f"connect: one Snowpark session to {connection_module.describe(self.connection)}", UNVERIFIED]
        for stage in run.stages:
            if stage.name == "load" and isinstance(run.source, SqlSource):
                lines.append(f"load: pull the training slice to pandas: {run.source.sql(run.features.columns)}")
            elif stage.name == "register" and isinstance(run.registry, PlannedRegistry):
                lines += [f"register: {op}" for op in planned_registration(run)]
            elif stage.name == "score":
                lines += self._plan_score(run, stage)
            elif stage.name == "monitor" and _monitors_in_snowflake(run):
                lines += self._plan_monitor(run)
            else:
                lines.append(f"{stage.name}: {stage.describe(run)} (in this process)")
        return lines

    def _plan_score(self, run, stage) -> list[str]:
        reason = self._local_scoring_reason(run)
        if reason:
            return [f"score: in this process, not in the warehouse ({reason}): {stage.describe(run)}"]
        source = run.scoring.source or run.source
        model = run.registry.qualified(run.registration.model_name)
        version = _planned_version(run)
        inputs = ", ".join(_input_columns(run))
        return [
            f"score: mv = Model({model}).version({version}) -- an alias is resolved when the run starts",
            f"score: mv.run(<Snowpark DataFrame: {source.sql()}>, function_name={FUNCTION_NAME!r}), lazily; in SQL: "
            f"SELECT *, MODEL({model}, {version})!{FUNCTION_NAME.upper()}({inputs}) FROM ({source.sql()}) "
            f"-- every input column kept, ground truth {run.features.target} included",
            *(f"score: {sql}" for sql in run.scoring.sink.plan(source="<mv.run result: input rows + PREDICTED_SCORE, "
                                                                    "PREDICTED_RESPONSE + " + ", ".join(TRACE_COLUMNS) + ">")),
        ]

    def _plan_monitor(self, run) -> list[str]:
        from mlops_snowflake import monitor as model_monitor

        model = run.registry.qualified(run.registration.model_name)
        settings, _, columns = run.registry._monitored(run.registry.monitor.get("alias", "PRODUCTION"))
        version = run.scoring.version or "<the latest version>"
        marker = "VERSION_MARKER"
        shown = lambda text: text.replace(marker, "<VERSION>")  # noqa: E731
        name = model_monitor.monitor_name(model, marker)
        return [f"monitor: in Snowflake, for the version {version} resolves to; no row leaves the warehouse",
                f"monitor: {shown(model_monitor.source_view_sql(model, marker, settings))}",
                f"monitor: registry.add_monitor({shown(name)}, ...) unless SHOW MODEL MONITORS lists it",
                *(f"monitor: {shown(sql)}" for sql in model_monitor.metrics_sql(name, settings, columns=columns))]

    def _local_scoring_reason(self, run) -> str | None:
        """Why scoring cannot happen in the warehouse, or None when it can."""
        if not self.score_in_warehouse:
            return "backend.score_in_warehouse is false"
        source = run.scoring.source or run.source
        if not isinstance(source, WarehouseSource):
            return f"the scoring source is not a Snowflake table: {source.describe()}"
        if not isinstance(run.scoring.sink, WarehouseSink):
            return f"the sink is not a Snowflake table: {run.scoring.sink.describe()}"
        if not isinstance(run.registry, WarehouseRegistry):
            return f"the registry is not Snowflake's: {run.registry.describe()}"
        return None

    # ---- execute -------------------------------------------------------------------------------------

    def execute(self, run) -> None:
        in_warehouse = not self._local_scoring_reason(run)
        stages = [Stage("score", self._score, stage.describe) if stage.name == "score" and in_warehouse else stage
                  for stage in run.stages]
        if _monitors_in_snowflake(run):
            stages = [Stage("monitor", _monitor_in_warehouse, lambda r: "the native Snowflake model monitor")
                      if stage.name == "monitor" else stage for stage in stages]
        if all(new is old for new, old in zip(stages, run.stages)):
            run_stages(run)
            return
        run_stages(dataclasses.replace(run, stages=stages))  # same results dict, same hooks

    def _score(self, run) -> None:
        started = time.perf_counter()
        model_name = run.registration.model_name
        version = scoring_version(run)
        mv = run.registry.model_version(model_name, version)
        source = run.scoring.source or run.source
        df = source.snowpark_dataframe()
        try:
            scored = mv.run(df, function_name=FUNCTION_NAME)
        except Exception as error:
            raise MlopsError(f"scoring with {model_name} {version} in the warehouse failed: "
                             f"{type(error).__name__}: {error}") from error
        rows = run.scoring.sink.write_dataframe(stamp(scored, run, mv.version_name))
        run.results["scored"] = {"rows": rows, "seconds": time.perf_counter() - started,
                                 "destination": run.scoring.sink.describe(), "version": mv.version_name,
                                 "where": "warehouse"}



def _monitors_in_snowflake(run) -> bool:
    from mlops_snowflake.registry import SnowflakeRegistry

    return isinstance(run.registry, SnowflakeRegistry) and bool(run.registry.monitor)


def _monitor_in_warehouse(run) -> None:
    """The ``monitor`` stage with registry=snowflake: the native model monitor of the scored version."""
    version = (run.results.get("scored") or {}).get("version") or run.scoring.version or "LAST"
    result = run.registry.monitor_in_warehouse(run.registration.model_name, version)
    run.results["snowflake_monitor"] = result
    run.summarize("monitor", (
        f"Snowflake model monitor {result['monitor']} of {result['model_version']}"
        f"{' (created)' if result['created'] else ''}: {len(result['metrics'])} metric rows read in the warehouse"))


TRACE_COLUMNS = ("MODEL_NAME", "MODEL_VERSION", "RUN_ID", "SCORED_AT")


def traceability(run, version: str) -> dict:
    """The columns every scored row carries: model, resolved version (never an alias), run, time (UTC)."""
    import datetime as dt
    import uuid

    run_id = run.output_dir.name if getattr(run, "output_dir", None) else uuid.uuid4().hex[:12]
    scored_at = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)
    return dict(zip(TRACE_COLUMNS, (run.registration.model_name, str(version), run_id, scored_at)))


def stamp(df, run, version: str):
    """A Snowpark DataFrame with :func:`traceability`'s columns added (lazily, in the warehouse): the
    model monitor of each version reads only that version's rows (``MODEL_VERSION``)."""
    from snowflake.snowpark.functions import lit

    values = traceability(run, version)
    return df.with_columns(list(values), [lit(value) for value in values.values()])


def _planned_version(run) -> str:
    if run.scoring.version:
        return run.scoring.version
    if "register" in [stage.name for stage in run.stages]:
        return "<the version this run registers>"
    return "<the latest version>"


def _input_columns(run) -> list[str]:
    return [*run.features.numeric, *run.features.categorical]
