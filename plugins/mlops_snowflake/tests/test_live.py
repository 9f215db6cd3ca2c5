"""The live round trip against a real Snowflake account: ``pytest -m snowflake``.

Runs only when ``MLOPS_SNOWFLAKE_CONNECTION`` names a section of Snowflake's ``connections.toml``
(``$SNOWFLAKE_HOME/connections.toml``, else ``~/.snowflake/connections.toml``); otherwise every test here is
reported as SKIPPED with the reason, never as passed. The role needs CREATE MODEL, CREATE TABLE, CREATE VIEW,
CREATE TAG, CREATE MODEL MONITOR and CREATE ALERT (and EXECUTE ALERT) in the connection's database and
schema, and a warehouse; everything created is named ``MLOPS_LIVE_<random>`` and dropped at the end (the
promotion history and alert log tables are kept, their test rows deleted). The registries here use
``relax_version=True``: exact pins of this environment may be missing from Snowflake's conda channel.

ML Jobs, the scheduled TASK and SPCS also need a compute pool the role may use (``MLOPS_SNOWFLAKE_COMPUTE_POOL``,
default ``SYSTEM_COMPUTE_POOL_CPU``), CREATE STAGE, CREATE TASK and EXECUTE TASK, CREATE SERVICE, and an image
repository for the model's service image. The feature store's live test is in test_snowflake_feature_store.py,
the tracker's in test_snowflake_tracking.py. Nobody has run this suite against an account yet.
"""

import os
import tomllib
import uuid

import numpy as np
import pytest

from mlops_snowflake.connection import connections_file

ENV = "MLOPS_SNOWFLAKE_CONNECTION"
POOL = os.environ.get("MLOPS_SNOWFLAKE_COMPUTE_POOL", "SYSTEM_COMPUTE_POOL_CPU")


def _configured():
    name = os.environ.get(ENV)
    path = connections_file()
    if not name:
        return None, f"no live Snowflake connection configured: {ENV} is not set (it names a section of {path})"
    try:
        sections = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return None, f"no live Snowflake connection configured: {ENV}={name} but {path} does not exist"
    except (OSError, tomllib.TOMLDecodeError) as error:
        return None, f"no live Snowflake connection configured: {path} cannot be read ({type(error).__name__})"
    if name not in sections:
        return None, f"no live Snowflake connection configured: {path} has no [{name}] section ({ENV}={name})"
    return name, None


NAME, REASON = _configured()
pytestmark = [pytest.mark.snowflake, pytest.mark.skipif(NAME is None, reason=REASON or "")]


@pytest.fixture(scope="module")
def live():
    from mlops_snowflake.connection import SnowflakeConnection

    connection = SnowflakeConnection(NAME)
    suffix = uuid.uuid4().hex[:8].upper()
    names = {"model": f"MLOPS_LIVE_{suffix}", "loans": f"MLOPS_LIVE_LOANS_{suffix}",
             "week2": f"MLOPS_LIVE_WEEK2_{suffix}", "preds": f"MLOPS_LIVE_PREDS_{suffix}",
             "tag": f"MLOPS_LIVE_TAG_{suffix}", "owner": f"MLOPS_LIVE_OWNER_{suffix}",
             "monitored": f"MLOPS_LIVE_MON_{suffix}", "scored": f"MLOPS_LIVE_SCORED_{suffix}"}
    session = connection.session()
    yield connection, session, names
    from snowflake.ml.registry import Registry

    from mlops_snowflake import monitor as model_monitor

    monitored = names["monitored"]
    for cleanup in (
        *(lambda r=r: session.sql(f"DROP ALERT IF EXISTS {model_monitor.alert_name(monitored, r)}").collect()
          for r in ("f1_low",)),
        *(lambda v=v: session.sql(f"DROP MODEL MONITOR IF EXISTS {model_monitor.monitor_name(monitored, v)}").collect()
          for v in ("V1", "V2")),
        *(lambda v=v: session.sql(f"DROP VIEW IF EXISTS {model_monitor.source_view_name(monitored, v)}").collect()
          for v in ("V1", "V2")),
        lambda: Registry(session).delete_model(monitored),
        lambda: session.sql("DELETE FROM MLOPS_ALERT_LOG WHERE MONITOR LIKE ?", params=[f"%{monitored}%"]).collect(),
        lambda: session.sql("DELETE FROM MLOPS_PROMOTION_HISTORY WHERE MODEL_NAME = ?", params=[monitored]).collect(),
        lambda: session.sql(f"DROP TABLE IF EXISTS {names['scored']}").collect(),
        lambda: Registry(session).delete_model(names["model"]),
        lambda: session.sql("DELETE FROM MLOPS_PROMOTION_HISTORY WHERE MODEL_NAME = ?", params=[names["model"]]).collect(),
        *(lambda t=t: session.sql(f"DROP TABLE IF EXISTS {names[t]}").collect() for t in ("loans", "week2", "preds")),
        *(lambda t=t: session.sql(f"DROP TAG IF EXISTS {names[t]}").collect() for t in ("tag", "owner")),
    ):
        try:
            cleanup()
        except Exception as error:  # report, keep cleaning
            print(f"live cleanup step failed: {type(error).__name__}: {error}")
    connection.close()


def _build(overrides):
    from mlops_framework import config
    from mlops_framework.pipeline import build_run
    from mlops_framework.plugins import Components, get_plugin_manager

    components = Components(get_plugin_manager())
    cfg = config.compose(overrides, components)
    config.check(cfg, components)
    return build_run(config.resolved(cfg), components)


def test_round_trip(live, trained_model, frame, kit):
    from mlops_snowflake.registry import SnowflakeRegistry

    connection, session, names = live
    model_name = names["model"]
    registry = SnowflakeRegistry({"connection_name": NAME}, relax_version=True)

    # log_model: CustomModel with the contract, pins, sample input, verified through mv.run
    record = registry.log_model(
        trained_model, model_name=model_name, version_name=None, comment="mlops-framework live test",
        metrics={"holdout_roc_auc": 0.5}, metadata={"live": True}, tags={names["tag"]: "yes"},
        sample_input=frame[kit.INPUTS].head(10), signature=None, lineage={"test": "live"})
    assert record["version_name"] == "V1"
    assert registry.get_version(model_name, "V1")["metrics"] == {"holdout_roc_auc": 0.5}

    # aliases, our promotion record
    registry.set_alias(model_name, "V1", "PRODUCTION", actor="live-test", reason="round trip")
    assert registry.aliases(model_name) == {"PRODUCTION": "V1"}
    assert [h["new_version"] for h in registry.history(model_name)] == ["V1"]

    # score in the warehouse through the alias, with the Snowpark backend, into a partitioned table
    session.create_dataframe(frame).write.save_as_table(names["loans"], mode="overwrite")
    session.create_dataframe(frame[frame.WEEK == 2]).write.save_as_table(names["week2"], mode="overwrite")
    for table in (names["loans"], names["week2"]):
        run = _build([
            "backend=snowpark", "registry=snowflake", "pipeline=score", "data=snowflake", f"data.table={table}",
            f"connection.connection_name={NAME}", f"registry.model_name={model_name}", "scoring.version=PRODUCTION",
            "~scoring.sink",
            f"+scoring.sink={{kind:snowflake,connection:${{connection}},table:{names['preds']},partition_by:[WEEK]}}"])
        run.backend.execute(run)
        assert run.results["scored"]["version"] == "V1"
    out = session.table(names["preds"]).sort("LOAN_ID").to_pandas()
    assert out.groupby("WEEK").size().to_dict() == {1: 60, 2: 60, 3: 60}  # week 2 replaced, not doubled
    expected = frame.sort_values("LOAN_ID")
    scores, classes = kit.local_predictions(trained_model, expected)
    np.testing.assert_allclose(out["PREDICTED_SCORE"].to_numpy(dtype=float), scores, atol=1e-6, rtol=0)
    assert out["PREDICTED_RESPONSE"].tolist() == list(classes)
    assert out[kit.TARGET].tolist() == expected[kit.TARGET].tolist()

    # tags, models, and the model back from the registry
    registry.set_tag(model_name, names["owner"], "tests")
    listed = {m["name"]: m for m in registry.models()}[model_name]
    assert set(listed["tags"].values()) >= {"yes", "tests"}
    loaded = registry.load_model(model_name, "PRODUCTION")
    np.testing.assert_array_equal(kit.local_predictions(loaded, frame)[0], kit.local_predictions(trained_model, frame)[0])



def test_alias_moves_unset_rollback_and_the_monitor_follows(live, trained_model, frame, kit):
    """Two versions, PRODUCTION moved V1 -> V2, rolled back, unset; each move creates or resumes the
    version's native monitor (on a view of that version's rows) and replaces the model's alerts."""
    import pandas as pd

    from mlops_snowflake.registry import SnowflakeRegistry

    connection, session, names = live
    database, schema, warehouse = (session.get_current_database().strip('"'), session.get_current_schema().strip('"'),
                                   session.get_current_warehouse().strip('"'))
    model_name = names["monitored"]
    scored = frame.copy()
    scores, classes = kit.local_predictions(trained_model, scored)
    scored["PREDICTED_SCORE"], scored["PREDICTED_RESPONSE"] = scores, classes
    scored["TS"] = pd.Timestamp.now(tz="UTC").tz_localize(None).floor("s") - pd.to_timedelta(scored["WEEK"], unit="D")
    scored["MODEL_VERSION"] = ["V1" if i % 2 else "V2" for i in range(len(scored))]
    session.create_dataframe(scored).write.save_as_table(names["scored"], mode="overwrite")
    registry = SnowflakeRegistry(
        {"connection_name": NAME}, database=database, schema=schema, relax_version=True,
        monitor={"alias": "PRODUCTION", "source": f"{database}.{schema}.{names['scored']}", "warehouse": warehouse,
                 "feature_columns": ["LOAN_AMOUNT_000S"]},
        alert_rules={"f1_low": {"metric": "f1", "op": "<", "threshold": 0.0}})
    for _ in range(2):
        registry.log_model(trained_model, model_name=model_name, sample_input=frame[kit.INPUTS].head(10),
                           metadata={"task": "binary"})
    first = registry.set_alias(model_name, "V1", "PRODUCTION", actor="live-test")
    assert first["monitor"]["created"]
    second = registry.set_alias(model_name, "V2", "PRODUCTION", actor="live-test")
    assert second["monitor"]["created"] and second["monitor"]["suspended"][-1].endswith(f"{model_name}_V1_MONITOR")
    alerts = session.sql(f"SHOW ALERTS LIKE '{model_name}%' IN SCHEMA {database}.{schema}").collect()
    assert len(alerts) == 1  # replaced on the move, not one per version
    back = registry.rollback(model_name, "PRODUCTION", actor="live-test")
    assert back["new_version"] == "V1" and back["monitor"]["resumed"]
    registry.unset_alias(model_name, "PRODUCTION", actor="live-test")
    assert registry.aliases(model_name) == {}
    assert [h["event"] for h in registry.history(model_name)] == ["set", "set", "rollback", "unset"]
    view = session.sql(f"SELECT DISTINCT MODEL_VERSION FROM {model_name}_V2_MONITOR_SOURCE").collect()
    assert [row[0] for row in view] == ["V2"]


@pytest.fixture
def cleanup():
    """Steps run after the test, last first, each one reported and skipped over when it fails."""
    steps = []
    yield steps
    for step in reversed(steps):
        try:
            step()
        except Exception as error:  # report, keep cleaning
            print(f"live cleanup step failed: {type(error).__name__}: {error}")


def _loans_table(live, frame):
    connection, session, names = live
    session.create_dataframe(frame).write.save_as_table(names["loans"], mode="overwrite")
    return names["loans"]


def _job_overrides(live, frame, model_name):
    return ["backend=ml_job", "registry=snowflake", "pipeline=train", "data=snowflake",
            f"data.table={_loans_table(live, frame)}", f"connection.connection_name={NAME}",
            f"registry.model_name={model_name}", "registry.relax_version=true", f"backend.compute_pool={POOL}",
            f"backend.job_name={model_name}", "model.params.n_estimators=8", "model.params.max_depth=3"]


def test_ml_job_submit_and_result(live, frame, cleanup):
    """The pipeline submitted as an ML Job trains and registers V1 in the job; its result comes back here."""
    from snowflake.ml import jobs
    from snowflake.ml.registry import Registry

    connection, session, names = live
    model_name = names["model"] + "_JOB"
    cleanup.append(lambda: Registry(session).delete_model(model_name))
    cleanup.append(lambda: session.sql(f"REMOVE @MLOPS_JOBS/{model_name}/").collect())
    run = _build(_job_overrides(live, frame, model_name))
    try:
        run.backend.execute(run)
    finally:
        job_id = run.results.get("summary", {}).get("job_id")
        if job_id:
            cleanup.append(lambda: jobs.delete_job(job_id, session=session))
    assert run.results["summary"]["job_status"] == "DONE"
    assert run.results["version"] == {"model_name": model_name, "version_name": "V1"}
    job = jobs.get_job(run.results["summary"]["job_id"], session=session)
    assert job.status == "DONE" and isinstance(job.result(), dict)


def test_schedule_creates_a_running_task_and_drops_it(live, frame, cleanup):
    """backend.schedule deploys the job definition and a resumed TASK on the cron; it is suspended and
    dropped again here (it never fires during the test: the cron is weekly)."""
    connection, session, names = live
    model_name = names["model"] + "_SCHED"
    task = f"{model_name}_TASK"
    cleanup.append(lambda: session.sql(f"DROP TASK IF EXISTS {task}").collect())
    cleanup.append(lambda: session.sql(f"REMOVE @MLOPS_JOBS/{model_name}/").collect())
    run = _build([*_job_overrides(live, frame, model_name), "backend.schedule='0 6 * * 1 UTC'",
                  f"backend.task_name={task}"])
    run.backend.execute(run)
    (row,) = session.sql(f"SHOW TASKS LIKE '{task}'").collect()
    assert row["state"].lower() == "started" and row["schedule"] == "USING CRON 0 6 * * 1 UTC"
    assert "SYSTEM$EXECUTE_ML_JOB" in row["definition"] and row["comment"].startswith("mlops-framework:")
    session.sql(f"ALTER TASK {task} SUSPEND").collect()
    session.sql(f"DROP TASK {task}").collect()
    assert session.sql(f"SHOW TASKS LIKE '{task}'").collect() == []


def test_spcs_service_and_batch_inference(live, trained_model, frame, kit, cleanup):
    """A version logged for both platforms, served by an SPCS service (scores equal the local ones), scored
    by an SPCS batch job into a table, and the service deleted by backend.action=delete."""
    from snowflake.ml.registry import Registry

    from mlops_snowflake.registry import SnowflakeRegistry

    connection, session, names = live
    model_name = names["model"] + "_SPCS"
    platforms = ["WAREHOUSE", "SNOWPARK_CONTAINER_SERVICES"]
    service, stage = f"{model_name}_V1_SERVICE", f"{model_name}_BATCH"
    cleanup.append(lambda: Registry(session).delete_model(model_name))
    cleanup.append(lambda: session.sql(f"DROP SERVICE IF EXISTS {service}").collect())
    cleanup.append(lambda: session.sql(f"DROP STAGE IF EXISTS {stage}").collect())
    for table in ("SVC", "BATCH"):
        cleanup.append(lambda t=table: session.sql(f"DROP TABLE IF EXISTS {names['preds']}_{t}").collect())
    SnowflakeRegistry({"connection_name": NAME}, relax_version=True, target_platforms=platforms).log_model(
        trained_model, model_name=model_name, sample_input=frame[kit.INPUTS].head(10), metadata={"task": "binary"})
    table = _loans_table(live, frame)
    common = ["backend=spcs", "registry=snowflake", "pipeline=score", "data=snowflake", f"data.table={table}",
              f"connection.connection_name={NAME}", f"registry.model_name={model_name}", "registry.relax_version=true",
              f"registry.target_platforms=[{','.join(platforms)}]", "scoring.version=V1",
              f"backend.service_compute_pool={POOL}", f"backend.batch_output_stage={stage}"]
    expected = frame.sort_values("LOAN_ID")
    scores, _ = kit.local_predictions(trained_model, expected)
    for kind, extra in (("SVC", []), ("BATCH", ["backend.batch=true"])):
        run = _build([*common, *extra, "~scoring.sink",
                      f"+scoring.sink={{kind:snowflake,connection:${{connection}},table:{names['preds']}_{kind}}}"])
        run.backend.execute(run)
        assert run.results["scored"]["rows"] == len(frame)
        out = session.table(f"{names['preds']}_{kind}").sort("LOAN_ID").to_pandas()
        np.testing.assert_allclose(out["PREDICTED_SCORE"].to_numpy(dtype=float), scores, atol=1e-6, rtol=0)
    run = _build([*common, "backend.action=delete"])
    run.backend.execute(run)
    assert service not in {str(name).split(".")[-1].strip('"') for name in
                           Registry(session).get_model(model_name).version("V1").list_services()["name"]}
