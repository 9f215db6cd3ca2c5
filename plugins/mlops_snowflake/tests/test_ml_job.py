"""backend=ml_job, tested offline at the deepest layer that runs here.

- The payload: built from a real composed config and executed in a clean subprocess by snowflake-ml's
  own ML Job launcher (``mljob_launcher.main``, as inside the job's container), with PYTHONPATH = the
  payload and site-packages only (no .pth files, so the editable installs are invisible); the result is
  read back with snowflake-ml's own result loader, as ``MLJob.result()`` does.
- Submission, following and scheduling: contract tests against ``create_autospec`` of the installed
  ``submit_directory``, ``MLJob``, ``MLJobDefinition`` and Snowpark ``Session``.
- Plan: ``mlops plan`` with a connections.toml holding a canary password, and every way to connect
  patched to fail.
Not verified here: a live account (upload, pool scheduling, the container runtime's packages, the
TASK actually firing). Those belong to the live suite (``-m snowflake``).
"""

import json
import os
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path
from unittest import mock

import pytest

from mlops_framework.errors import MlopsError

CANARY = "CANARY-ml-job-5e1f07"
TINY = ["data.weeks=2", "data.rows_per_week=150", "model.params.n_estimators=8", "model.params.max_depth=3"]


def make_run(overrides, tmp_path, monkeypatch):
    """Compose, check and build a run exactly as ``mlops plan`` does, with all state under ``tmp_path``."""
    from mlops_framework import config
    from mlops_framework.pipeline import build_run
    from mlops_framework.plugins import Components, get_plugin_manager

    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SNOWFLAKE_HOME", str(tmp_path / "snowflake"))
    components = Components(get_plugin_manager())
    cfg = config.compose(["backend=ml_job", *overrides], components)
    config.check(cfg, components)
    return build_run(config.resolved(cfg), components, output_dir=tmp_path / "out")


# ------------------------------------------------------------------------------ the payload, executed

LAUNCH = textwrap.dedent("""
    import json, os, sys
    from snowflake.ml.jobs._utils.scripts import mljob_launcher   # the launcher the job's container runs
    from snowflake.ml.jobs._interop import utils as interop_utils  # what MLJob.result() reads with

    class Session:  # the launcher closes the session it opened; there is none offline
        def close(self):
            pass

    try:
        mljob_launcher.main("job_entrypoint.py", session=Session())
    finally:
        result = interop_utils.load(os.path.join(os.environ["MLRS_STAGE_RESULT_PATH"], "mljob_result"))
        import mlops_framework, mlops_snowflake, pluggy
        print("RESULT " + json.dumps({
            "success": result.success, "value": result.value if result.success else repr(result.value),
            "modules": [m.__file__ for m in (mlops_framework, mlops_snowflake, pluggy)],
        }, default=str))
""")


def test_payload_runs_in_a_clean_process_as_the_job_would(tmp_path, monkeypatch):
    from mlops_snowflake.ml_job import build_payload

    run = make_run(TINY, tmp_path, monkeypatch)
    payload = tmp_path / "payload"
    files = build_payload(run, payload)
    assert "job_entrypoint.py" in files and "resolved_config.yaml" in files and "pluggy/__init__.py" in files
    assert not [f for f in files if "__pycache__" in f or "/tests/" in f or f.endswith(".pyc")]

    site_packages = sysconfig.get_paths()["purelib"]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path),
           "PYTHONPATH": os.pathsep.join([str(payload), site_packages]),
           "MLRS_PAYLOAD_DIR": str(payload), "MLRS_STAGE_RESULT_PATH": str(tmp_path / "stage_result")}
    done = subprocess.run([sys.executable, "-S", "-c", LAUNCH], cwd=payload, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(done.stdout.split("RESULT ", 1)[1])

    assert result["success"], result
    assert all(path.startswith(str(payload)) for path in result["modules"]), result["modules"]
    summary = result["value"]  # the job's __return__, through snowflake-ml's own serialisation
    assert summary["model"] == "MORTGAGE_XGB" and summary["version"] == "v1"
    assert summary["scored"]["rows"] == 300 and summary["scored"]["version"] == "v1"
    assert 0.0 <= summary["metrics"]["holdout_roc_auc"] <= 1.0
    assert "mlops job summary:" in done.stdout  # the job's log shows it too

    # what the job did is real: a registered version and predictions beside their ground truth
    from mlops_local.registry import LocalRegistry

    registry = LocalRegistry(tmp_path / "home" / "registry")
    assert [v["version_name"] for v in registry.versions("MORTGAGE_XGB")] == ["v1"]
    # no checkout inside the job: the version's lineage names the commit the payload was built from
    manifest = json.loads((payload / "payload.json").read_text())
    assert manifest["git_commit"] and registry.get_version("MORTGAGE_XGB", "v1")["lineage"]["git_commit"] == \
        manifest["git_commit"]
    import duckdb

    with duckdb.connect(str(tmp_path / "home" / "warehouse.duckdb"), read_only=True) as con:
        rows, truth, scores = con.execute("SELECT count(*), count(MORTGAGERESPONSE), count(PREDICTED_SCORE) "
                                          "FROM PREDICTIONS_WITH_GROUND_TRUTH").fetchone()
    assert rows == truth == scores == 300
    out = tmp_path / "stage_result" / "mlops"
    assert json.loads((out / "summary.json").read_text())["version"] == "v1"
    assert (out / "evaluation.json").is_file()


def test_payload_config_runs_locally_and_carries_no_secret(tmp_path, monkeypatch):
    import yaml

    from mlops_snowflake.ml_job import payload_files

    (tmp_path / "snowflake").mkdir()
    (tmp_path / "snowflake" / "connections.toml").write_text(
        f'[default]\naccount = "acme-x1"\nuser = "u"\npassword = "{CANARY}"\n')
    run = make_run(["registry=snowflake"], tmp_path, monkeypatch)
    files = payload_files(run)
    job_config = yaml.safe_load(files["resolved_config.yaml"])
    assert job_config["backend"] == {"kind": "local"}
    assert job_config["registry"]["kind"] == "snowflake" and job_config["model"] == run.config["model"]
    assert json.loads(files["payload.json"])["plugins"] == [["snowflake", "mlops_snowflake"]]
    for name, source in files.items():
        text = source.read_text(errors="replace") if isinstance(source, Path) else source
        assert CANARY not in text, name


def test_entrypoint_refuses_a_config_that_would_submit_again(tmp_path):
    from mlops_snowflake import job_entrypoint

    (tmp_path / "resolved_config.yaml").write_text("backend: {kind: ml_job}\n")
    (tmp_path / "payload.json").write_text('{"plugins": []}')
    with pytest.raises(MlopsError, match="locally"):
        job_entrypoint.main(tmp_path)


def test_inside_a_job_the_launchers_session_serves_every_connection(monkeypatch):
    """The job's container has no connections.toml: the launcher's active session must be the one used."""
    from snowflake.snowpark import Session, context

    from mlops_snowflake import connection as connection_module
    from mlops_snowflake.job_entrypoint import adopt_job_session

    monkeypatch.setattr(connection_module, "_SHARED", {})
    monkeypatch.setenv("SNOWFLAKE_HOME", "/nonexistent")  # reading connections.toml would fail
    session = mock.create_autospec(Session, instance=True)
    monkeypatch.setattr(context, "get_active_session", lambda: session)
    job_connection = {"connection_name": "default", "role": None, "warehouse": "ML_WH", "database": None,
                      "schema": "ML"}
    config = {"connection": job_connection, "data": {"kind": "snowflake", "connection": dict(job_connection)},
              "registry": {"kind": "snowflake", "connection": dict(job_connection)}}
    assert adopt_job_session(config) == 1
    assert connection_module.resolve(config["registry"]["connection"]).session() is session
    session.use_warehouse.assert_called_once_with("ML_WH")
    session.use_schema.assert_called_once_with("ML")
    session.use_database.assert_not_called()


def test_outside_a_job_no_session_is_adopted(monkeypatch):
    from snowflake.snowpark import context

    from mlops_snowflake.job_entrypoint import adopt_job_session

    def no_session():
        raise RuntimeError("no default Session is found")

    monkeypatch.setattr(context, "get_active_session", no_session)
    assert adopt_job_session({"connection": {"connection_name": "default"}}) == 0


def test_entrypoint_names_a_plugin_missing_from_the_job(tmp_path):
    from mlops_snowflake.job_entrypoint import plugin_manager

    with pytest.raises(MlopsError, match="not importable in the job.*pip_requirements"):
        plugin_manager([["other", "mlops_not_shipped_anywhere"]])


# ------------------------------------------------------------------------------ submission, with autospec


@pytest.fixture
def snowflake_mocks(monkeypatch):
    """A Snowpark session (autospec) behind the connection; submit_directory and MLJob autospec'd."""
    import snowflake.ml.jobs as jobs
    from snowflake.snowpark import Session

    from mlops_snowflake import connection as connection_module

    session = mock.create_autospec(Session, instance=True)
    connection = mock.create_autospec(connection_module.SnowflakeConnection, instance=True)
    connection.session.return_value = session
    monkeypatch.setattr(connection_module, "resolve", mock.Mock(return_value=connection))
    job = mock.create_autospec(jobs.MLJob, instance=True)
    job.id = "MLJOB_ABC123"
    seen = {}

    def submit(dir_path, compute_pool, **kwargs):
        seen["files"] = sorted(str(p.relative_to(dir_path)) for p in Path(dir_path).rglob("*") if p.is_file())
        seen["config"] = (Path(dir_path) / "resolved_config.yaml").read_text()
        return job

    submit_directory = mock.create_autospec(jobs.submit_directory, side_effect=submit)
    monkeypatch.setattr(jobs, "submit_directory", submit_directory)
    return mock.Mock(session=session, job=job, submit_directory=submit_directory, seen=seen)


def statuses(job, *sequence, logs=()):
    """Drive ``job.status`` through ``sequence`` and ``get_logs`` through growing prefixes of ``logs``."""
    type(job).status = mock.PropertyMock(side_effect=list(sequence))
    calls = {"n": 0}

    def get_logs(*args, **kwargs):  # called once per status after PENDING; the whole log by the last
        calls["n"] += 1
        return list(logs[: len(logs) * calls["n"] // max(1, len(sequence) - 1)])

    job.get_logs.side_effect = get_logs


def backend_for(run, **overrides):
    values = {key: value for key, value in run.config["backend"].items() if key != "kind"}
    values.update(poll_s=0, **overrides)
    from mlops_snowflake.ml_job import MLJobBackend

    return MLJobBackend(**values)


def test_submit_wait_stream_and_result(tmp_path, monkeypatch, snowflake_mocks, capsys):
    run = make_run(["registry=snowflake", "backend.pip_requirements=[lightgbm]", "backend.min_instances=1",
                    "backend.external_access_integrations=[PYPI_EAI]", "+backend.env_vars.MODE=nightly"],
                   tmp_path, monkeypatch)
    job = snowflake_mocks.job
    logs = [f"log line {i}" for i in range(6)]
    statuses(job, "PENDING", "RUNNING", "RUNNING", "DONE", logs=logs)
    job.result.return_value = {"model": "MORTGAGE_XGB", "version": "V4",
                               "metrics": {"holdout_f1": 0.71}, "scored": {"rows": 10, "version": "V4",
                                                                           "seconds": 1.0, "destination": "T"}}
    backend_for(run).execute(run)

    args, kwargs = snowflake_mocks.submit_directory.call_args
    assert args[1] == "SYSTEM_COMPUTE_POOL_CPU"
    assert kwargs == {"entrypoint": "job_entrypoint.py", "stage_name": "MLOPS_JOBS", "target_instances": 1,
                      "name": "MLOPS_MORTGAGE_XGB", "env_vars": {"PYTHONUNBUFFERED": "1", "MODE": "nightly"},
                      "min_instances": 1, "pip_requirements": ["lightgbm"],
                      "external_access_integrations": ["PYPI_EAI"], "session": snowflake_mocks.session,
                      "comment": f"mlops-framework: MORTGAGE_XGB pipeline, run out, config {run.provenance.config_hash}"}
    assert not Path(args[0]).exists()  # the temporary payload is gone once uploaded
    assert {"job_entrypoint.py", "resolved_config.yaml", "payload.json",
            "mlops_framework/pipeline.py", "mlops_snowflake/registry.py"} <= set(snowflake_mocks.seen["files"])
    assert "kind: local" in snowflake_mocks.seen["config"]
    err = capsys.readouterr().err
    assert [err.count(line) for line in logs] == [1] * len(logs)  # each line printed once, as it came
    assert "DONE" in err and '"version": "V4"' in err
    assert run.results["version"] == {"model_name": "MORTGAGE_XGB", "version_name": "V4"} and run.results["scored"]["rows"] == 10
    assert run.results["summary"]["job_id"] == "MLJOB_ABC123"
    assert run.results["summary"]["job_status"] == "DONE"


@pytest.mark.parametrize("final", ["FAILED", "INTERNAL_ERROR", "CANCELLED"])
def test_a_failed_job_raises_with_the_log_tail(final, tmp_path, monkeypatch, snowflake_mocks):
    run = make_run([], tmp_path, monkeypatch)
    job = snowflake_mocks.job
    logs = [f"step {i}" for i in range(40)] + ["Traceback: ValueError: bad input"]
    statuses(job, "PENDING", "RUNNING", final, logs=logs)
    with pytest.raises(MlopsError) as caught:
        backend_for(run).execute(run)
    message = str(caught.value)
    assert f"MLJOB_ABC123 ended {final}" in message and "ValueError: bad input" in message
    assert "step 11" in message and "step 10\n" not in message  # exactly the last 30 lines
    job.result.assert_not_called()


def test_still_running_at_timeout_says_how_to_follow(tmp_path, monkeypatch, snowflake_mocks):
    run = make_run([], tmp_path, monkeypatch)
    type(snowflake_mocks.job).status = mock.PropertyMock(return_value="RUNNING")
    snowflake_mocks.job.get_logs.return_value = []
    with pytest.raises(MlopsError, match=r"still RUNNING after 0s.*get_job\('MLJOB_ABC123'\)"):
        backend_for(run, timeout_s=0).execute(run)


def test_unreadable_result_of_a_done_job_is_an_error(tmp_path, monkeypatch, snowflake_mocks):
    run = make_run([], tmp_path, monkeypatch)
    statuses(snowflake_mocks.job, "DONE")
    snowflake_mocks.job.result.side_effect = RuntimeError("no result file")
    with pytest.raises(MlopsError, match="DONE but its result could not be read"):
        backend_for(run).execute(run)


@pytest.mark.parametrize("overrides, pool", [
    ([], "SYSTEM_COMPUTE_POOL_CPU"),
    (["model.params.device=cuda"], "SYSTEM_COMPUTE_POOL_GPU"),
    (["model.params.device=cuda:0", "backend.gpu_compute_pool=MY_GPU"], "MY_GPU"),
    (["model.params.device=cuda", "backend.compute_pool=FIXED"], "FIXED"),
])
def test_compute_pool_choice(overrides, pool, tmp_path, monkeypatch, snowflake_mocks):
    run = make_run(overrides, tmp_path, monkeypatch)
    statuses(snowflake_mocks.job, "DONE")
    snowflake_mocks.job.result.return_value = None
    backend_for(run).execute(run)
    assert snowflake_mocks.submit_directory.call_args.args[1] == pool
    assert f"compute pool {pool}" in "\n".join(backend_for(run).plan(run))


def test_instance_counts_are_checked_before_anything(tmp_path, monkeypatch, snowflake_mocks):
    run = make_run(["backend.min_instances=3"], tmp_path, monkeypatch)
    with pytest.raises(MlopsError, match="min_instances must be 1"):
        backend_for(run).execute(run)
    snowflake_mocks.submit_directory.assert_not_called()


def test_more_instances_than_the_payload_uses_are_refused(tmp_path, monkeypatch, snowflake_mocks):
    """Defect 9: target_instances=2 ran a plain fit on the head node while the other node was billed, idle."""
    run = make_run(["backend.target_instances=2"], tmp_path, monkeypatch)
    for action in (backend_for(run).execute, backend_for(run).plan):
        with pytest.raises(MlopsError, match="target_instances=2: the job's stages train with a plain fit"):
            action(run)
    snowflake_mocks.submit_directory.assert_not_called()


# ------------------------------------------------------------------------------ schedule -> TASK


def _grammar():
    import importlib.util

    spec = importlib.util.spec_from_file_location("sql_grammar", Path(__file__).with_name("sql_grammar.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("overrides", [["connection.warehouse=ML_WH"], []])
def test_the_task_follows_the_documented_create_task_grammar(overrides, tmp_path, monkeypatch):
    grammar = _grammar()
    run = make_run(["backend.schedule='0 6 * * 1 UTC'", *overrides], tmp_path, monkeypatch)
    create, resume = backend_for(run).task_sql(run, "CALL SYSTEM$EXECUTE_ML_JOB('DB.S.MLOPS_MORTGAGE_XGB_', 'P', '{}', '{}')")
    parsed = grammar.parse_task(create)
    assert parsed["name"] == "MLOPS_MORTGAGE_XGB_TASK" and parsed["properties"]["SCHEDULE"] == "'USING CRON 0 6 * * 1 UTC'"
    assert [t for _, t in parsed["body"][:2]] == ["CALL", "SYSTEM$EXECUTE_ML_JOB"]
    assert resume == "ALTER TASK MLOPS_MORTGAGE_XGB_TASK RESUME"
    for bad in ("CREATE TASK T SCHEDULE = '0 6 * * 1' AS CALL P()",  # a bare cron is not a schedule
                "CREATE TASK T WAREHOUSE = W USER_TASK_MANAGED_INITIAL_WAREHOUSE_SIZE = 'XSMALL' AS CALL P()",
                "CREATE TASK T SCHEDULE = 'USING CRON 0 6 * * 1 UTC' CALL P()"):
        with pytest.raises(SyntaxError):
            grammar.parse_task(bad)


def test_schedule_deploys_a_task_instead_of_running(tmp_path, monkeypatch, snowflake_mocks):
    from snowflake.ml.jobs import MLJobDefinition

    run = make_run(["backend.schedule='0 6 * * 1 UTC'", "connection.warehouse=ML_WH"], tmp_path, monkeypatch)
    definition = mock.create_autospec(MLJobDefinition, instance=True)
    definition.to_sql.return_value = "CALL SYSTEM$EXECUTE_ML_JOB('DB.S.MLOPS_MORTGAGE_XGB_', 'P', '{}', '{}')"
    uploaded = {}

    def register(source, compute_pool, stage_name, session=None, **kwargs):
        uploaded["files"] = sorted(p.name for p in Path(source).iterdir())
        return definition

    with mock.patch.object(MLJobDefinition, "register", autospec=True, side_effect=register) as registered:
        backend_for(run).execute(run)

    args, kwargs = registered.call_args
    assert args[1:] == ("SYSTEM_COMPUTE_POOL_CPU", "MLOPS_JOBS", snowflake_mocks.session)
    assert kwargs["overwrite"] is True and kwargs["entrypoint"] == "job_entrypoint.py"
    assert kwargs["name"] == "MLOPS_MORTGAGE_XGB" and "stage_name" not in kwargs
    assert "job_entrypoint.py" in uploaded["files"]
    definition.to_sql.assert_called_once_with(use_async=True)
    statements = [c.args[0] for c in snowflake_mocks.session.sql.call_args_list]
    assert statements == [
        "CREATE OR REPLACE TASK MLOPS_MORTGAGE_XGB_TASK\n  WAREHOUSE = ML_WH\n"
        "  SCHEDULE = 'USING CRON 0 6 * * 1 UTC'\n"
        "  COMMENT = 'mlops-framework: MORTGAGE_XGB pipeline as ML Job MLOPS_MORTGAGE_XGB'\n"
        "AS CALL SYSTEM$EXECUTE_ML_JOB('DB.S.MLOPS_MORTGAGE_XGB_', 'P', '{}', '{}')",
        "ALTER TASK MLOPS_MORTGAGE_XGB_TASK RESUME",
    ]
    assert snowflake_mocks.session.sql.return_value.collect.call_count == 2
    snowflake_mocks.submit_directory.assert_not_called()
    assert run.results["summary"]["task"] == "MLOPS_MORTGAGE_XGB_TASK"


@pytest.mark.parametrize("schedule, message", [
    ("'0 6 * * 1'", "cron with a time zone"),
    ("\"0 6 * * 1 UTC'; DROP TABLE X; --\"", "cron with a time zone|must not contain quotes"),
])
def test_a_bad_schedule_is_refused_before_connecting(schedule, message, tmp_path, monkeypatch, snowflake_mocks):
    run = make_run([f"backend.schedule={schedule}"], tmp_path, monkeypatch)
    with pytest.raises(MlopsError, match=message):
        backend_for(run).execute(run)
    snowflake_mocks.session.sql.assert_not_called()


def test_serverless_task_when_no_warehouse_is_known(tmp_path, monkeypatch):
    run = make_run(["backend.schedule='30 2 * * * Europe/Paris'", "backend.task_name=NIGHTLY"], tmp_path, monkeypatch)
    create, resume = backend_for(run).task_sql(run, "CALL X()")
    assert create.startswith("CREATE OR REPLACE TASK NIGHTLY\n  USER_TASK_MANAGED_INITIAL_WAREHOUSE_SIZE")
    assert "SCHEDULE = 'USING CRON 30 2 * * * Europe/Paris'" in create and resume == "ALTER TASK NIGHTLY RESUME"


# ------------------------------------------------------------------------------ plan, no connection


def mlops_plan(overrides, tmp_path, monkeypatch, capsys):
    """``mlops plan`` with a connections.toml holding a canary secret and every way to connect failing."""
    from snowflake.snowpark import Session

    from mlops_framework import cli
    from mlops_snowflake.connection import SnowflakeConnection

    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "home"))
    (tmp_path / "snowflake").mkdir(exist_ok=True)
    (tmp_path / "snowflake" / "connections.toml").write_text(
        f'[default]\naccount = "acme-x1"\nuser = "ml"\npassword = "{CANARY}"\n')
    monkeypatch.setenv("SNOWFLAKE_HOME", str(tmp_path / "snowflake"))
    refuse = mock.Mock(side_effect=AssertionError("plan must not connect"))
    monkeypatch.setattr(SnowflakeConnection, "session", refuse)
    monkeypatch.setattr(Session.SessionBuilder, "create", refuse)
    monkeypatch.setattr("snowflake.ml.jobs.submit_directory", refuse)
    assert cli.main(["plan", *overrides]) == 0
    out = capsys.readouterr().out
    assert CANARY not in out
    refuse.assert_not_called()
    return out


def test_plan_prints_the_whole_submission_without_connecting(tmp_path, monkeypatch, capsys):
    out = mlops_plan(["backend=ml_job", "registry=snowflake", "backend.pip_requirements=[lightgbm]"],
                     tmp_path, monkeypatch, capsys)
    assert "ML Job on compute pool SYSTEM_COMPUTE_POOL_CPU (model.params.device=cpu" in out
    assert "payload: job_entrypoint.py, payload.json, resolved_config.yaml, conf/" in out
    assert "mlops_framework/ (" in out and "mlops_snowflake/ (" in out and "entrypoint job_entrypoint.py" in out
    assert "in the job, train: fit xgboost.XGBClassifier" in out
    assert "in the job, register: log_model(ContractModel" in out  # the registry's own operations
    assert ("submit_directory(<payload dir>, 'SYSTEM_COMPUTE_POOL_CPU', entrypoint='job_entrypoint.py', "
            "stage_name='MLOPS_JOBS', target_instances=1, name='MLOPS_MORTGAGE_XGB'") in out
    assert "pip_requirements=['lightgbm']" in out and "FAILED, INTERNAL_ERROR, CANCELLED" in out
    assert "acme-x1" in out  # the connection is described (account, user), without its secret
    assert "WARNING: scoring.sink is a local duckdb file" in out


def test_plan_of_a_schedule_shows_the_task_sql(tmp_path, monkeypatch, capsys):
    out = mlops_plan(["backend=ml_job", "registry=snowflake", "model.params.device=cuda",
                      "backend.schedule='0 6 * * 1 UTC'", "backend.query_warehouse=ML_WH"],
                     tmp_path, monkeypatch, capsys)
    assert "compute pool SYSTEM_COMPUTE_POOL_GPU (model.params.device=cuda asks for CUDA" in out
    assert "MLJobDefinition.register(<payload dir>, 'SYSTEM_COMPUTE_POOL_GPU', 'MLOPS_JOBS', session, overwrite=True" in out
    assert "CREATE OR REPLACE TASK MLOPS_MORTGAGE_XGB_TASK\n  WAREHOUSE = ML_WH\n  SCHEDULE = 'USING CRON 0 6 * * 1 UTC'" in out
    assert "AS CALL SYSTEM$EXECUTE_ML_JOB(" in out and "ALTER TASK MLOPS_MORTGAGE_XGB_TASK RESUME" in out
    assert "submit_directory" not in out


# ------------------------------------------------------ snowflake-ml's real job manager, over a recording session


def _recording():
    import importlib.util

    spec = importlib.util.spec_from_file_location("recording_session", Path(__file__).with_name("recording_session.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def recorded(monkeypatch, kit):
    """A recording session behind the connection: snowflake.ml.jobs' own submit_directory, MLJob and
    MLJobDefinition run over it, and the assertions are on the SQL they send."""
    from snowflake.ml._internal.platform_capabilities import PlatformCapabilities

    from mlops_snowflake import connection as connection_module

    recording = _recording()
    session = recording.RecordingSession("signatures: {}\n")
    monkeypatch.setattr(connection_module, "resolve", lambda connection: kit.FakeConnection(session))
    with PlatformCapabilities.mock_features({}), recording.uploads_recorded():
        yield session


def _options(call):
    """The four arguments of a ``CALL SYSTEM$EXECUTE_ML_JOB('name', 'pool', '<spec json>', '<job json>')``."""
    import re

    name, pool, spec, options = re.match(r"CALL SYSTEM\$EXECUTE_ML_JOB\('(.*?)', '(.*?)', '(.*)', '(.*)'\)$", call,
                                         re.S).groups()
    return name, pool, json.loads(spec.replace("\\\\", "\\")), json.loads(options.replace("\\\\", "\\"))


def test_a_submitted_job_through_the_real_job_manager(tmp_path, monkeypatch, recorded):
    """submit_directory uploads the payload to the job's stage directory and sends one EXECUTE_ML_JOB with our
    env vars, instance count and a comment naming the framework, the model and the run's config; a FAILED
    job (DESCRIBE SERVICE) ends in one message with the log tail (SYSTEM$GET_SERVICE_LOGS)."""
    run = make_run(["+backend.env_vars.MODE=nightly"], tmp_path, monkeypatch)
    recorded.job_statuses[:] = ["PENDING", "RUNNING", "FAILED"]
    from snowflake.ml.jobs._utils import constants

    recorded.job_logs = f"setup\n{constants.LOG_START_MSG}\nloading\nTraceback: boom\n{constants.LOG_END_MSG}\n"
    with pytest.raises(MlopsError, match=r"(?s)ML Job DB.S.MLOPS_JOB_1 ended FAILED.*Traceback: boom"):
        backend_for(run).execute(run)
    sent = [" ".join(s.split()) for s in recorded.statements]
    assert "PUT file://job_entrypoint.py @MLOPS_JOBS/MLOPS_MORTGAGE_XGB/app" in sent or any(
        s.startswith("PUT ") and s.endswith("@MLOPS_JOBS/MLOPS_MORTGAGE_XGB/app") for s in sent)
    (call,) = [s for s in recorded.statements if s.startswith("CALL SYSTEM$EXECUTE_ML_JOB")]
    name, pool, spec, options = _options(call)
    assert (name, pool) == ("DB.S.MLOPS_MORTGAGE_XGB_", "SYSTEM_COMPUTE_POOL_CPU")
    assert spec["STAGE_PATH"] == "@MLOPS_JOBS/MLOPS_MORTGAGE_XGB" and spec["ARGS"][-1].endswith("/app/job_entrypoint.py")
    assert {"PYTHONUNBUFFERED": "1", "MODE": "nightly"}.items() <= spec["ENV_VARS"].items()
    assert options["TARGET_INSTANCES"] == 1 and options["ASYNC"] is True
    assert options["COMMENT"] == f"mlops-framework: MORTGAGE_XGB pipeline, run out, config {run.provenance.config_hash}"
    assert {s for s in sent if s.startswith("DESCRIBE SERVICE")} == {"DESCRIBE SERVICE IDENTIFIER('DB.S.MLOPS_JOB_1')"}


def test_a_schedule_sends_exactly_what_the_plan_prints(tmp_path, monkeypatch, recorded):
    """MLJobDefinition.register and to_sql (the real ones) over the recording session; the TASK we create runs
    the CALL they produce. The plan prints the TASK as sent, the CALL's option JSON as a placeholder (it holds the
    runtime image the server picks): compared with those normalised."""
    import re

    run = make_run(["backend.schedule='0 6 * * 1 UTC'", "connection.warehouse=ML_WH", "connection.database=DB",
                    "connection.schema=S"], tmp_path, monkeypatch)
    backend = backend_for(run)
    backend.execute(run)
    writes = [s for s in recorded.statements if s.startswith(("CREATE", "ALTER", "CALL SYSTEM$EXECUTE"))]
    create, resume = writes
    planned = [line[len("SQL: "):] for line in backend.plan(run) if line.startswith("SQL: ")]
    generic = re.sub(r"SYSTEM\$EXECUTE_ML_JOB\((.*)\)$", "SYSTEM$EXECUTE_ML_JOB(<options>)", create, flags=re.S)
    assert [generic, resume] == [re.sub(r"SYSTEM\$EXECUTE_ML_JOB\((.*)\)(  --.*)?$", "SYSTEM$EXECUTE_ML_JOB(<options>)",
                                        planned[0], flags=re.S), planned[1]]
    name, pool, spec, options = _options(create.split("AS ", 1)[1])
    assert (name, pool) == ("DB.S.MLOPS_MORTGAGE_XGB_", "SYSTEM_COMPUTE_POOL_CPU")
    assert f"CALL SYSTEM$EXECUTE_ML_JOB('{name}', '{pool}', " in planned[0]
    assert options["ASYNC"] is True and options["COMMENT"].startswith("mlops-framework: MORTGAGE_XGB pipeline")
    assert _grammar().parse_task(create)["properties"]["SCHEDULE"] == "'USING CRON 0 6 * * 1 UTC'"
