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
from mlops_framework.stages import scoring_version

from mlops_snowflake import connection as connection_module
from mlops_snowflake.registry import FUNCTION_NAME


class SnowparkBackend:
    """Stages in this process; batch scoring in the Snowflake warehouse."""

    def __init__(self, connection=None, score_in_warehouse: bool = True):
        self.connection = connection
        self.score_in_warehouse = score_in_warehouse

    # ---- plan --------------------------------------------------------------------------------------

    def plan(self, run) -> list[str]:
        """Every operation, SQL included, that ``execute`` would issue; connects nowhere."""
        lines = [f"connect: one Snowpark session to {connection_module.describe(self.connection)}"]
        for stage in run.stages:
            if stage.name == "load" and isinstance(run.source, SqlSource):
                lines.append(f"load: pull the training slice to pandas: {run.source.sql(run.features.columns)}")
            elif stage.name == "register" and isinstance(run.registry, PlannedRegistry):
                reg = run.registration
                lines += [f"register: {op}" for op in run.registry.plan_log_model(
                    model_name=reg.model_name, version_name=reg.version_name, comment=reg.comment, tags=reg.tags,
                    flavor="xgboost" if run.model._target_.startswith("xgboost.") else "sklearn")]
            elif stage.name == "score":
                lines += self._plan_score(run, stage)
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
                                                                    "PREDICTED_RESPONSE>")),
        ]

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
        if self._local_scoring_reason(run):
            run_stages(run)
            return
        stages = [Stage("score", self._score, stage.describe) if stage.name == "score" else stage
                  for stage in run.stages]
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
        rows = run.scoring.sink.write_dataframe(scored)
        run.results["scored"] = {"rows": rows, "seconds": time.perf_counter() - started,
                                 "destination": run.scoring.sink.describe(), "version": mv.version_name,
                                 "where": "warehouse"}



def _planned_version(run) -> str:
    if run.scoring.version:
        return run.scoring.version
    if "register" in [stage.name for stage in run.stages]:
        return "<the version this run registers>"
    return "<the latest version>"


def _input_columns(run) -> list[str]:
    return [*run.features.numeric, *run.features.categorical]
