"""backend=snowpark: the plan (no connection, no secret) and the in-warehouse scoring path, run for real on
Snowpark local testing (mv.run autospec'd, scoring with the packaged model) with the publishing SQL on fakesnow."""

import contextlib
import os
import re
import subprocess
import sys
import uuid

import numpy as np
import pytest

from mlops_framework.errors import MlopsError
from mlops_snowflake.data import SnowflakeSink
from mlops_snowflake.registry import SnowflakeRegistry

IN_WAREHOUSE = [
    "backend=snowpark", "registry=snowflake", "data=snowflake", "data.table=ML.RAW.LOANS", "data.where='WEEK <= 5'",
    "scoring.source={kind:snowflake,connection:${connection},table:ML.RAW.LOANS}", "scoring.version=PRODUCTION",
    "~scoring.sink", "+scoring.sink={kind:snowflake,connection:${connection},table:ML.OUT.PREDS,partition_by:[WEEK]}",
]


def build(overrides):
    from mlops_framework import config
    from mlops_framework.pipeline import build_run
    from mlops_framework.plugins import Components, get_plugin_manager

    components = Components(get_plugin_manager())
    cfg = config.compose(overrides, components)
    config.check(cfg, components)
    return build_run(config.resolved(cfg), components), components


@pytest.fixture
def no_session(monkeypatch, snowml):
    """Any attempt to open a Snowpark session (or a Registry) fails the test."""
    from snowflake.snowpark import Session

    def refuse(builder):
        raise AssertionError("plan opened a Snowflake session")

    monkeypatch.setattr(Session.SessionBuilder, "create", refuse)
    yield
    snowml.Registry.assert_not_called()


def test_plan_prints_every_operation_without_connecting(no_session, snowflake_home, kit):
    run, _ = build(IN_WAREHOUSE)
    lines = run.backend.plan(run)
    text = "\n".join(lines)
    assert lines[0].startswith("connect: one Snowpark session to Snowflake account myorg-canaryacct as CANARY_USER")
    assert "none has been run against a live account" in lines[1]  # the plan claims no live verification
    assert ('load: pull the training slice to pandas: SELECT "APPLICANT_INCOME_000S", "LOAN_AMOUNT_000S", '
            '"LOAN_TYPE_NAME", "LOAN_PURPOSE_NAME", "COUNTY_NAME", "MORTGAGERESPONSE" FROM ML.RAW.LOANS WHERE WEEK <= 5'
            in lines)
    assert "train: fit xgboost.XGBClassifier" in text and "(in this process)" in text
    assert "register: Registry(session, database_name=None, schema_name=None, options={'enable_monitoring': True})" in lines
    assert "target_platforms=['WAREHOUSE']" in text and "TABULAR_BINARY_CLASSIFICATION" in text
    assert "register: ALTER MODEL MORTGAGE_XGB SET TAG PROJECT = $$MORTGAGE_LENDING$$" in lines
    assert "score: mv = Model(MORTGAGE_XGB).version(PRODUCTION)" in text
    assert ("SELECT *, MODEL(MORTGAGE_XGB, PRODUCTION)!PREDICT(APPLICANT_INCOME_000S, LOAN_AMOUNT_000S, LOAN_TYPE_NAME, "
            "LOAN_PURPOSE_NAME, COUNTY_NAME) FROM (SELECT * FROM ML.RAW.LOANS)") in text
    score_sql = [line.removeprefix("score: ") for line in lines if line.startswith("score: ")][2:]
    assert [sql.split(" ")[0] for sql in score_sql] == ["CREATE", "CREATE", "BEGIN", "DELETE", "INSERT", "COMMIT", "DROP"]
    assert 'DELETE FROM ML.OUT.PREDS AS t USING' in text
    assert kit.CANARY_PASSWORD not in text and kit.CANARY_PASSPHRASE not in text


def test_plan_says_when_scoring_cannot_run_in_the_warehouse(no_session, snowflake_home):
    run, _ = build(["backend=snowpark", "registry=snowflake"])
    score = [line for line in run.backend.plan(run) if line.startswith("score:")]
    assert len(score) == 1 and "in this process, not in the warehouse (the scoring source is not a Snowflake table" in score[0]
    run, _ = build([*IN_WAREHOUSE, "backend.score_in_warehouse=false"])
    assert "backend.score_in_warehouse is false" in [line for line in run.backend.plan(run) if line.startswith("score:")][0]


@pytest.mark.parametrize("overrides", [["backend=snowpark", "registry=snowflake"], IN_WAREHOUSE],
                         ids=["default", "in-warehouse"])
def test_mlops_plan_command_shows_no_secret(snowflake_home, tmp_path, overrides, kit):
    env = {**os.environ, "SNOWFLAKE_HOME": str(snowflake_home.path), "MLOPS_HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, "-m", "mlops_framework.cli", "plan", *overrides], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "myorg-canaryacct" in output and re.search(r"^\s+\d+\. register: log_model\(", output, re.M)
    for secret in (kit.CANARY_PASSWORD, kit.CANARY_PASSPHRASE, *snowflake_home.key_text.splitlines()[1:-1]):
        assert secret not in output
    assert not (tmp_path / "home").exists()  # plan wrote nothing


# ---- execute: scoring inside the "warehouse" ----------------------------------------------------------

class BridgeCursor:
    """A fakesnow cursor that first copies any local-testing staging table a statement names into fakesnow:
    the staging table is computed by Snowpark (local testing), the publishing SQL runs on fakesnow."""

    def __init__(self, local_session, fakesnow_session):
        self._local, self._cursor, self._copied = local_session, fakesnow_session.connection.cursor(), set()
        self._conn = fakesnow_session.connection

    def execute(self, sql, *args, **kwargs):
        from snowflake.connector.pandas_tools import write_pandas

        if sql == "BEGIN":  # fakesnow cannot create the copy inside a transaction: open it on the next statement
            self._begin = True
            return self
        for name in set(re.findall(r"MLOPS_STAGING_[0-9A-F]{32}", sql)) - self._copied:
            write_pandas(self._conn, self._local.table(name).to_pandas(), name, auto_create_table=True,
                         use_logical_type=True)
            self._copied.add(name)
        if getattr(self, "_begin", False):
            self._cursor.execute("BEGIN")
            self._begin = False
        return self._cursor.execute(sql, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._cursor, name)

    def close(self):
        self._cursor.close()


@pytest.fixture
def warehouse(local_session, fakesnow_session, snowml, use_connection, monkeypatch, trained_model, frame, kit):
    """A registered V1 aliased PRODUCTION, the loans table in the local session, the bridge for publishing."""
    setup = SnowflakeRegistry(kit.FakeConnection(fakesnow_session))
    for _ in range(2):
        setup.log_model(trained_model, model_name="MORTGAGE_XGB", sample_input=frame[kit.INPUTS].head(10))
    setup.set_alias("MORTGAGE_XGB", "V1", "PRODUCTION")
    table = f"LOANS_{uuid.uuid4().hex[:8].upper()}"
    local_session.create_dataframe(frame).write.save_as_table(table)
    use_connection(local_session)
    monkeypatch.setattr(SnowflakeSink, "_cursor",
                        lambda self, session: contextlib.closing(BridgeCursor(local_session, fakesnow_session)))
    return table, setup


def scoring_run(table, *extra):
    return build(["backend=snowpark", "registry=snowflake", "pipeline=score", "data=snowflake", f"data.table={table}",
                  "scoring.version=PRODUCTION", "~scoring.sink",
                  "+scoring.sink={kind:snowflake,connection:${connection},table:PREDS,partition_by:[WEEK]}", *extra])


def test_scoring_runs_mv_run_on_the_snowpark_dataframe(warehouse, snowml, fakesnow_session, trained_model, frame, kit):
    from snowflake.snowpark import DataFrame

    table, _ = warehouse
    run, components = scoring_run(table)
    seen = []

    class Recorder:
        from mlops_framework.hookspecs import hookimpl

        @hookimpl
        def after_stage_run(self, stage, run, seconds):
            seen.append(stage.name)

    components.pm.register(Recorder())
    run.backend.execute(run)

    assert seen == ["score"]
    model = snowml.models["MORTGAGE_XGB"]
    model["mock"].version.assert_called_with("PRODUCTION")
    mv = model["versions"]["V1"]["mv"]
    (scored_input,), kwargs = mv.run.call_args_list[-1]
    assert isinstance(scored_input, DataFrame) and kwargs == {"function_name": "predict"}
    assert run.results["scored"]["rows"] == 180 and run.results["scored"]["version"] == "V1"
    assert "Snowflake table PREDS" in run.results["scored"]["destination"]
    out = kit.fetch(fakesnow_session, "SELECT * FROM PREDS ORDER BY LOAN_ID")
    assert list(out.columns) == [*kit.TABLE_COLUMNS, "PREDICTED_SCORE", "PREDICTED_RESPONSE", "MODEL_NAME",
                                 "MODEL_VERSION", "RUN_ID", "SCORED_AT"]
    assert set(out["MODEL_VERSION"]) == {"V1"} and set(out["MODEL_NAME"]) == {"MORTGAGE_XGB"}  # never the alias
    assert out["RUN_ID"].nunique() == 1 and out["RUN_ID"].notna().all() and out["SCORED_AT"].notna().all()
    expected = frame.sort_values("LOAN_ID")
    assert out[kit.TARGET].tolist() == expected[kit.TARGET].tolist()  # ground truth beside the predictions
    scores = trained_model.predict_scores(trained_model.contract.encode_frame(expected))
    np.testing.assert_allclose(out["PREDICTED_SCORE"].to_numpy(), scores, atol=1e-6, rtol=0)
    assert out["PREDICTED_RESPONSE"].tolist() == list(trained_model.predict_classes(scores))


def test_rescoring_a_week_follows_the_alias_and_replaces_only_that_week(warehouse, snowml, fakesnow_session,
                                                                       local_session, frame, kit):
    table, setup = warehouse
    run, _ = scoring_run(table)
    run.backend.execute(run)
    week2 = f"WEEK2_{uuid.uuid4().hex[:8].upper()}"
    local_session.create_dataframe(frame[frame.WEEK == 2]).write.save_as_table(week2)
    setup.set_alias("MORTGAGE_XGB", "V2", "PRODUCTION")
    snowml.perturb = 0.25  # V2 "scores differently" in the warehouse from here on
    run, _ = scoring_run(week2)
    run.backend.execute(run)
    assert run.results["scored"] == {**run.results["scored"], "rows": 60, "version": "V2"}
    out = kit.fetch(fakesnow_session, "SELECT WEEK, COUNT(*) AS N, MAX(PREDICTED_SCORE) AS S FROM PREDS GROUP BY 1 ORDER BY 1")
    assert out["N"].tolist() == [60, 60, 60]
    assert out["S"][1] > 1.0 and out["S"][0] <= 1.0 and out["S"][2] <= 1.0


def test_training_pulls_only_the_feature_columns(warehouse, snowml, local_session, hash_agg_patch, kit):
    table, _ = warehouse
    run, _ = build(["backend=snowpark", "registry=snowflake", "pipeline=train", "data=snowflake",
                    f"data.table={table}", "~tags", "model.params.n_estimators=5", "model.params.n_jobs=1"])
    run.backend.execute(run)
    assert list(run.results["frame"].columns) == [*kit.INPUTS, kit.TARGET]
    assert run.results["version"]["version_name"] == "V3"
    assert run.results["data_fingerprint"].startswith("sha256:")


def test_other_sources_score_in_this_process(monkeypatch, snowml):
    from mlops_snowflake import snowpark

    calls = []
    monkeypatch.setattr(snowpark, "run_stages", calls.append)
    run, _ = build(["backend=snowpark", "registry=snowflake"])
    run.backend.execute(run)
    assert calls == [run]  # the untouched run: the core's own score stage


def test_scoring_failure_is_reported(warehouse, snowml):
    table, _ = warehouse
    snowml.models["MORTGAGE_XGB"]["versions"]["V1"]["mv"].run.side_effect = RuntimeError("warehouse suspended")
    run, _ = scoring_run(table)
    with pytest.raises(MlopsError, match="scoring with MORTGAGE_XGB PRODUCTION in the warehouse failed: .*suspended"):
        run.backend.execute(run)




def test_monitor_pipeline_with_the_snowflake_registry_stays_in_snowflake(monkeypatch, snowml, no_session):
    """The monitor stage drives the native model monitor; the local monitor (which pulls the table) never runs."""
    from mlops_framework import monitoring

    monkeypatch.setattr(monitoring, "run_monitor", lambda *a, **k: pytest.fail("the local monitor ran (it reads the table here)"))
    calls = []
    monkeypatch.setattr(SnowflakeRegistry, "monitor_in_warehouse", lambda self, name, version, **kw: calls.append(
        (name, version)) or {"monitor": "M_V2_MONITOR", "created": False, "model_version": "V2", "metrics": []})
    run, _ = build(["backend=snowpark", "registry=snowflake", "pipeline=monitor", "pipeline.stages=[monitor]",
                    "scoring.version=PRODUCTION",
                    "registry.monitor={source:DB.S.PREDICTIONS,warehouse:WH,feature_columns:[LOAN_AMOUNT_000S]}"])
    plan = "\n".join(run.backend.plan(run))
    assert "monitor: in Snowflake" in plan and "MODEL_MONITOR_PERFORMANCE_METRIC(" in plan
    run.backend.execute(run)
    assert calls == [("MORTGAGE_XGB", "PRODUCTION")]
    assert run.results["snowflake_monitor"]["model_version"] == "V2"
