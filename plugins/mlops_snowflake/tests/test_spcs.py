"""backend=spcs: contract tests against ``create_autospec`` of the installed snowflake-ml ``ModelVersion``.

Every call the backend makes to ``create_service``, ``list_services``, ``run(..., service_name=...)``,
``run_batch``, ``delete_service`` and ``MLJob`` goes through a mock built from the real class, so a
call drifting from snowflake-ml 2.6.0's signatures fails. The non-Snowflake scoring path writes real
rows into a real DuckDB sink. The plan runs through ``mlops plan`` with connecting patched to fail.
Not verified here: a live account (image build, service start-up, service function results, the
batch job's output file layout and columns); that is the live suite's (``-m snowflake``).
"""

from unittest import mock

import pandas as pd
import pytest

from mlops_framework.errors import MlopsError

CANARY = "CANARY-spcs-9b2d41"
SERVICE = "MORTGAGE_XGB_V3_SERVICE"
SNOWFLAKE_IO = ["data=snowflake", "data.table=LOANS", "scoring.sink.kind=snowflake", "~scoring.sink.path",
                "+scoring.sink.connection=${connection}"]
SPCS_PLATFORMS = "registry.target_platforms=[WAREHOUSE,SNOWPARK_CONTAINER_SERVICES]"


class Stages:
    """A plugin recording the lifecycle hooks, to show the backend's steps are pipeline stages."""

    def __init__(self):
        self.seen = []

    from mlops_framework.hookspecs import hookimpl

    @hookimpl
    def after_stage_run(self, stage, run, seconds):
        self.seen.append(stage.name)


def make_run(overrides, tmp_path, monkeypatch, plugin=None):
    from mlops_framework import config
    from mlops_framework.pipeline import build_run
    from mlops_framework.plugins import Components, get_plugin_manager

    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SNOWFLAKE_HOME", str(tmp_path / "snowflake"))
    pm = get_plugin_manager()
    if plugin is not None:
        pm.register(plugin)
    components = Components(pm)
    cfg = config.compose(["backend=spcs", "registry=snowflake", *overrides], components)
    config.check(cfg, components)
    (tmp_path / "out").mkdir(exist_ok=True)  # as ``mlops run`` makes it
    return build_run(config.resolved(cfg), components, output_dir=tmp_path / "out")


def backend_for(run, **overrides):
    from mlops_snowflake.spcs import SPCSBackend

    values = {key: value for key, value in run.config["backend"].items() if key != "kind"}
    values.update(poll_s=0, **overrides)
    return SPCSBackend(**values)


@pytest.fixture
def mv(monkeypatch):
    """An autospec'd ModelVersion V3, handed out by the Snowflake registry's ``model_version``."""
    from snowflake.ml.model import ModelVersion

    from mlops_snowflake.registry import SnowflakeRegistry

    version = mock.create_autospec(ModelVersion, instance=True)
    version.version_name = "V3"
    version.list_services.return_value = services()
    lookup = mock.create_autospec(SnowflakeRegistry.model_version, return_value=version)
    monkeypatch.setattr(SnowflakeRegistry, "model_version", lookup)
    version.lookup = lookup
    return version


def services(*names, status="RUNNING"):
    """A ``list_services()`` frame with snowflake-ml 2.6.0's columns."""
    return pd.DataFrame({"name": list(names), "status": [status] * len(names),
                         "inference_endpoint": [None] * len(names), "internal_endpoint": [None] * len(names)})


def exists_error():
    from snowflake.snowpark.exceptions import SnowparkSQLException

    return SnowparkSQLException(f"(1304): 002002 (42710): SQL compilation error:\nObject '{SERVICE}' already exists.",
                                sql_error_code=100132)


def fake_predictions(X, *, service_name=None, function_name=None, **kwargs):
    """What the service's predict returns for a pandas input: only the output columns, row for row."""
    score = (X["LOAN_AMOUNT_000S"] / 1000.0).clip(0, 1)
    return pd.DataFrame({"PREDICTED_SCORE": score.to_numpy(), "PREDICTED_RESPONSE": (score >= 0.5).astype(int)})


# ------------------------------------------------------------------------------ service scoring


def test_creates_the_service_and_scores_any_source_through_it(tmp_path, monkeypatch, mv):
    import duckdb

    recorder = Stages()
    run = make_run(["pipeline=score", "scoring.version=V3", "data.weeks=2", "data.rows_per_week=40"],
                   tmp_path, monkeypatch, plugin=recorder)
    mv.run.side_effect = fake_predictions
    backend_for(run).execute(run)

    assert mv.lookup.call_args.args[1:] == ("MORTGAGE_XGB", "V3")
    mv.create_service.assert_called_once_with(
        service_name=SERVICE, service_compute_pool="SYSTEM_COMPUTE_POOL_CPU", ingress_enabled=False,
        min_instances=0, max_instances=1, block=True)
    call = mv.run.call_args
    assert call.kwargs == {"function_name": "predict", "service_name": SERVICE}
    assert list(call.args[0].columns) == ["APPLICANT_INCOME_000S", "LOAN_AMOUNT_000S", "LOAN_TYPE_NAME",
                                          "LOAN_PURPOSE_NAME", "COUNTY_NAME"]
    with duckdb.connect(str(tmp_path / "home" / "warehouse.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT WEEK, MORTGAGERESPONSE, LOAN_AMOUNT_000S, PREDICTED_SCORE, PREDICTED_RESPONSE "
                           "FROM PREDICTIONS_WITH_GROUND_TRUTH").fetch_df()
    assert len(rows) == 80 and sorted(rows.WEEK.unique()) == [1, 2]
    expected = (rows.LOAN_AMOUNT_000S / 1000.0).clip(0, 1)
    assert (rows.PREDICTED_SCORE - expected).abs().max() < 1e-12  # each prediction beside its own row
    assert run.results["scored"]["rows"] == 80 and run.results["scored"]["version"] == "V3"
    assert run.results["scored"]["where"] == f"SPCS service {SERVICE}"
    assert recorder.seen == ["score"]


def test_snowflake_rows_stay_in_snowflake(tmp_path, monkeypatch, mv):
    from snowflake.snowpark import DataFrame

    from mlops_snowflake.data import SnowflakeSink, SnowflakeSource

    run = make_run(["pipeline=score", "scoring.version=PRODUCTION", *SNOWFLAKE_IO], tmp_path, monkeypatch)
    df = mock.create_autospec(DataFrame, instance=True)
    monkeypatch.setattr(SnowflakeSource, "snowpark_dataframe",
                        mock.create_autospec(SnowflakeSource.snowpark_dataframe, return_value=df))
    write = mock.create_autospec(SnowflakeSink.write_dataframe, return_value=1234)
    monkeypatch.setattr(SnowflakeSink, "write_dataframe", write)
    mv.list_services.return_value = services(f"DB.ML.{SERVICE}")
    backend_for(run).execute(run)

    assert mv.lookup.call_args.args[1:] == ("MORTGAGE_XGB", "PRODUCTION")  # the alias, resolved by Snowflake
    mv.create_service.assert_not_called()  # it exists for this version: reused
    mv.run.assert_called_once_with(df, function_name="predict", service_name=SERVICE)
    assert write.call_args.args[1] is mv.run.return_value.with_columns.return_value  # + MODEL_NAME, MODEL_VERSION, ...
    assert mv.run.return_value.with_columns.call_args.args[0] == ["MODEL_NAME", "MODEL_VERSION", "RUN_ID", "SCORED_AT"]
    assert run.results["scored"]["rows"] == 1234


def test_service_options_reach_create_service(tmp_path, monkeypatch, mv):
    run = make_run(["pipeline=score", "scoring.version=V3", "data.weeks=1", "data.rows_per_week=10",
                    "backend.service_name=LOANS_SVC", "backend.image_build_compute_pool=BUILD_POOL",
                    "backend.service_compute_pool=GPU_POOL", "backend.image_repo=DB.ML.REPO",
                    "backend.ingress_enabled=true", "backend.cpu_requests=2", "backend.memory_requests=8Gi",
                    "backend.gpu_requests=1", "backend.min_instances=1", "backend.max_instances=3",
                    "backend.num_workers=4", "backend.max_batch_rows=1024", "backend.force_rebuild=true",
                    "backend.build_external_access_integrations=[PYPI_EAI]"], tmp_path, monkeypatch)
    mv.run.side_effect = fake_predictions
    backend_for(run).execute(run)
    mv.create_service.assert_called_once_with(
        service_name="LOANS_SVC", service_compute_pool="GPU_POOL", image_build_compute_pool="BUILD_POOL",
        image_repo="DB.ML.REPO", ingress_enabled=True, cpu_requests="2", memory_requests="8Gi", gpu_requests=1,
        min_instances=1, max_instances=3, num_workers=4, max_batch_rows=1024, force_rebuild=True,
        build_external_access_integrations=["PYPI_EAI"], block=True)
    assert mv.run.call_args.kwargs["service_name"] == "LOANS_SVC"


def test_already_exists_on_create_reuses_a_service_created_meanwhile(tmp_path, monkeypatch, mv):
    run = make_run(["pipeline=score", "scoring.version=V3", "data.weeks=1", "data.rows_per_week=10"],
                   tmp_path, monkeypatch)
    mv.list_services.side_effect = [services(), services(SERVICE)]
    mv.create_service.side_effect = exists_error()
    mv.run.side_effect = fake_predictions
    backend_for(run).execute(run)
    assert mv.run.call_args.kwargs["service_name"] == SERVICE


def test_already_exists_for_another_version_is_an_error(tmp_path, monkeypatch, mv):
    run = make_run(["pipeline=score", "scoring.version=V3"], tmp_path, monkeypatch)
    mv.create_service.side_effect = exists_error()
    with pytest.raises(MlopsError, match=f"{SERVICE} already exists but does not serve MORTGAGE_XGB V3"):
        backend_for(run).execute(run)
    mv.run.assert_not_called()


def test_other_create_failures_are_reported(tmp_path, monkeypatch, mv):
    run = make_run(["pipeline=score", "scoring.version=V3"], tmp_path, monkeypatch)
    mv.create_service.side_effect = ValueError("GPU resources are requested but the model does not support GPU")
    with pytest.raises(MlopsError, match="create_service MORTGAGE_XGB_V3_SERVICE failed: ValueError: GPU"):
        backend_for(run).execute(run)


def test_a_service_answer_of_the_wrong_length_is_refused(tmp_path, monkeypatch, mv):
    run = make_run(["pipeline=score", "scoring.version=V3", "data.weeks=1", "data.rows_per_week=10"],
                   tmp_path, monkeypatch)
    mv.run.side_effect = lambda X, **kwargs: fake_predictions(X).head(3)
    with pytest.raises(MlopsError, match="returned 3 rows .* for 10 input rows"):
        backend_for(run).execute(run)
    database = tmp_path / "home" / "warehouse.duckdb"
    if database.exists():  # the sink was left as it was: no predictions table
        import duckdb

        with duckdb.connect(str(database), read_only=True) as con:
            assert ("PREDICTIONS_WITH_GROUND_TRUTH",) not in con.execute("SHOW TABLES").fetchall()


def test_deploy_runs_the_other_stages_here_then_serves_the_new_version(tmp_path, monkeypatch, mv):
    from mlops_snowflake.registry import SnowflakeRegistry

    recorder = Stages()
    log_model = mock.create_autospec(SnowflakeRegistry.log_model, return_value={"version_name": "V7"})
    monkeypatch.setattr(SnowflakeRegistry, "log_model", log_model)
    mv.version_name = "V7"
    run = make_run(["backend.action=deploy", SPCS_PLATFORMS, "data.weeks=1", "data.rows_per_week=200",
                    "model.params.n_estimators=5"], tmp_path, monkeypatch, plugin=recorder)
    backend_for(run).execute(run)
    assert recorder.seen == ["load", "validate", "features", "split", "train", "evaluate", "register", "deploy"]
    log_model.assert_called_once()
    assert mv.lookup.call_args.args[1:] == ("MORTGAGE_XGB", "V7")
    assert mv.create_service.call_args.kwargs["service_name"] == "MORTGAGE_XGB_V7_SERVICE"
    mv.run.assert_not_called()
    assert run.results["summary"]["service"] == "MORTGAGE_XGB_V7_SERVICE"


def test_refuses_to_serve_a_version_logged_for_the_warehouse_only(tmp_path, monkeypatch, mv):
    run = make_run([], tmp_path, monkeypatch)  # registry.target_platforms defaults to [WAREHOUSE]
    with pytest.raises(MlopsError, match="must include SNOWPARK_CONTAINER_SERVICES"):
        backend_for(run).execute(run)
    assert "frame" not in run.results  # refused before any stage ran
    mv.create_service.assert_not_called()


def test_gpu_requests_need_a_model_packaged_with_cuda(tmp_path, monkeypatch, mv):
    """Defect 7: log_model never passed cuda_version, so any gpu_requests was refused by snowflake-ml."""
    run = make_run([SPCS_PLATFORMS, "backend.gpu_requests=1"], tmp_path, monkeypatch)
    with pytest.raises(MlopsError, match="gpu_requests needs registry.cuda_version"):
        backend_for(run).plan(run)
    run = make_run([SPCS_PLATFORMS, "backend.gpu_requests=1", "registry.cuda_version='12.4'"], tmp_path, monkeypatch)
    assert run.registry.log_options()["cuda_version"] == "12.4"
    assert "'cuda_version': '12.4'" in "\n".join(backend_for(run).plan(run))


def test_needs_the_snowflake_registry(tmp_path, monkeypatch):
    run = make_run(["registry=local"], tmp_path, monkeypatch)
    with pytest.raises(MlopsError, match="use registry=snowflake"):
        backend_for(run).plan(run)


# ------------------------------------------------------------------------------ batch inference


@pytest.fixture
def snowflake_batch(monkeypatch):
    """A Snowflake source whose DataFrame's session reads the batch output; a Snowflake sink."""
    from snowflake.snowpark import DataFrame, Session
    from snowflake.snowpark.dataframe_reader import DataFrameReader

    from mlops_snowflake.data import SnowflakeSink, SnowflakeSource

    df = mock.create_autospec(DataFrame, instance=True)
    df.session = mock.create_autospec(Session, instance=True)
    df.session.read = mock.create_autospec(DataFrameReader, instance=True)
    output = mock.create_autospec(DataFrame, instance=True)
    output.columns = ['"LOAN_ID"', '"WEEK"', '"MORTGAGERESPONSE"', '"PREDICTED_SCORE"', '"PREDICTED_RESPONSE"']
    df.session.read.parquet.return_value = output
    monkeypatch.setattr(SnowflakeSource, "snowpark_dataframe",
                        mock.create_autospec(SnowflakeSource.snowpark_dataframe, return_value=df))
    write = mock.create_autospec(SnowflakeSink.write_dataframe, return_value=5000)
    monkeypatch.setattr(SnowflakeSink, "write_dataframe", write)
    return mock.Mock(df=df, output=output, write=write)


def batch_job(mv, *sequence, logs=()):
    from snowflake.ml.jobs import MLJob

    job = mock.create_autospec(MLJob, instance=True)
    job.id = "DB.ML.MLOPS_BATCH_JOB"
    type(job).status = mock.PropertyMock(side_effect=list(sequence))
    job.get_logs.return_value = list(logs)
    mv.run_batch.return_value = job
    return job


def test_batch_inference_runs_a_job_and_loads_its_output(tmp_path, monkeypatch, mv, snowflake_batch):
    from snowflake.ml.model.batch_inference import InferenceSpec, OutputSpec, ResourcesSpec, SaveMode

    run = make_run(["pipeline=score", "scoring.version=V3", "backend.batch=true", "backend.cpu_requests=4",
                    "backend.num_workers=2", "backend.batch_replicas=3", "backend.batch_compute_pool=BATCH_POOL",
                    *SNOWFLAKE_IO], tmp_path, monkeypatch)
    batch_job(mv, "PENDING", "RUNNING", "DONE", logs=["scored 5000 rows"])
    backend_for(run).execute(run)

    mv.create_service.assert_not_called()
    args, kwargs = mv.run_batch.call_args
    assert args == (snowflake_batch.df,)
    job_name = kwargs.pop("job_name")
    assert job_name.startswith("MLOPS_MORTGAGE_XGB_V3_BATCH_")
    assert kwargs == {"compute_pool": "BATCH_POOL", "function_name": "predict", "replicas": 3,
                      "output_spec": OutputSpec(stage_location="@MLOPS_BATCH_INFERENCE/MORTGAGE_XGB/",
                                                mode=SaveMode.OVERWRITE),
                      "resources_spec": ResourcesSpec(cpu_requests="4"), "inference_spec": InferenceSpec(num_workers=2)}
    location = f"@MLOPS_BATCH_INFERENCE/MORTGAGE_XGB/{job_name}/"
    snowflake_batch.df.session.read.parquet.assert_called_once_with(location)
    assert snowflake_batch.write.call_args.args[1] is snowflake_batch.output.with_columns.return_value
    names, values = snowflake_batch.output.with_columns.call_args.args
    assert names == ["MODEL_NAME", "MODEL_VERSION", "RUN_ID", "SCORED_AT"] and len(values) == 4
    snowflake_batch.df.session.sql.assert_called_once_with("CREATE STAGE IF NOT EXISTS MLOPS_BATCH_INFERENCE")
    assert snowflake_batch.df.session.sql.call_args_list[0] == mock.call(
        "CREATE STAGE IF NOT EXISTS MLOPS_BATCH_INFERENCE")  # defect 8: before run_batch needs it
    assert run.results["scored"]["rows"] == 5000 and run.results["scored"]["where"] == "SPCS batch inference"
    assert run.results["summary"] == {"batch_job": "DB.ML.MLOPS_BATCH_JOB", "batch_output": location}


@pytest.mark.parametrize("final", ["FAILED", "INTERNAL_ERROR", "CANCELLED"])
def test_a_failed_batch_job_loads_nothing(final, tmp_path, monkeypatch, mv, snowflake_batch):
    run = make_run(["pipeline=score", "scoring.version=V3", "backend.batch=true", *SNOWFLAKE_IO], tmp_path, monkeypatch)
    batch_job(mv, "RUNNING", final, logs=[f"line {i}" for i in range(35)])
    with pytest.raises(MlopsError, match=f"(?s)ended {final}.*line 34") as caught:
        backend_for(run).execute(run)
    assert "line 4\n" not in str(caught.value)
    snowflake_batch.write.assert_not_called()


def test_batch_output_without_ground_truth_is_refused(tmp_path, monkeypatch, mv, snowflake_batch):
    run = make_run(["pipeline=score", "scoring.version=V3", "backend.batch=true", *SNOWFLAKE_IO], tmp_path, monkeypatch)
    batch_job(mv, "DONE")
    snowflake_batch.output.columns = ['"PREDICTED_SCORE"', '"PREDICTED_RESPONSE"']
    with pytest.raises(MlopsError, match="lacks MORTGAGERESPONSE"):
        backend_for(run).execute(run)
    snowflake_batch.write.assert_not_called()


def test_batch_needs_a_snowflake_source(tmp_path, monkeypatch, mv):
    run = make_run(["pipeline=score", "scoring.version=V3", "backend.batch=true"], tmp_path, monkeypatch)
    with pytest.raises(MlopsError, match="needs a Snowflake scoring source"):
        backend_for(run).execute(run)
    mv.run_batch.assert_not_called()


# ------------------------------------------------------------------------------ list / delete


def test_list_shows_the_versions_services_and_runs_no_stage(tmp_path, monkeypatch, mv, capsys):
    run = make_run(["backend.action=list", "scoring.version=V3"], tmp_path, monkeypatch)
    mv.list_services.return_value = services(f"DB.ML.{SERVICE}", status="SUSPENDED")
    backend_for(run).execute(run)
    assert SERVICE in capsys.readouterr().err
    assert run.results["summary"]["services"][0]["status"] == "SUSPENDED"
    assert "frame" not in run.results  # the default pipeline's stages did not run
    mv.create_service.assert_not_called()


@pytest.mark.parametrize("overrides, name", [([], SERVICE), (["backend.service_name=LOANS_SVC"], "LOANS_SVC")])
def test_delete_drops_the_service(overrides, name, tmp_path, monkeypatch, mv):
    run = make_run(["backend.action=delete", "scoring.version=V3", *overrides], tmp_path, monkeypatch)
    backend_for(run).execute(run)
    mv.delete_service.assert_called_once_with(name)
    assert run.results["summary"] == {"deleted_service": name}


def test_delete_failure_is_reported(tmp_path, monkeypatch, mv):
    run = make_run(["backend.action=delete", "scoring.version=V3"], tmp_path, monkeypatch)
    mv.delete_service.side_effect = ValueError("service does not exist")
    with pytest.raises(MlopsError, match="delete_service MORTGAGE_XGB_V3_SERVICE of MORTGAGE_XGB V3 failed"):
        backend_for(run).execute(run)


def test_an_unknown_action_is_refused(tmp_path, monkeypatch):
    run = make_run(["backend.action=restart"], tmp_path, monkeypatch)
    with pytest.raises(MlopsError, match="backend.action must be one of score, deploy, list, delete"):
        backend_for(run).plan(run)


# ------------------------------------------------------------------------------ plan, no connection


def mlops_plan(overrides, tmp_path, monkeypatch, capsys):
    from snowflake.ml.model import ModelVersion
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
    for method in ("create_service", "run", "run_batch", "list_services", "delete_service"):
        monkeypatch.setattr(ModelVersion, method, refuse)
    assert cli.main(["plan", "backend=spcs", "registry=snowflake", *overrides]) == 0
    out = capsys.readouterr().out
    assert CANARY not in out
    refuse.assert_not_called()
    return out


def test_plan_prints_the_service_spec_and_calls(tmp_path, monkeypatch, capsys):
    out = mlops_plan([SPCS_PLATFORMS, "backend.cpu_requests=2", "backend.memory_requests=4Gi",
                      "backend.image_repo=DB.ML.REPO", "backend.max_instances=2"], tmp_path, monkeypatch, capsys)
    assert "train: fit xgboost.XGBClassifier" in out and "register: log_model(" in out
    assert ("service spec: MORTGAGE_XGB_<version>_SERVICE on compute pool SYSTEM_COMPUTE_POOL_CPU (image built on "
            "SYSTEM_COMPUTE_POOL_CPU, image repo DB.ML.REPO), instances 0..2") in out
    assert "requests cpu 2 memory 4Gi gpu none" in out
    assert ("mv.create_service(service_name='MORTGAGE_XGB_<version>_SERVICE', service_compute_pool="
            "'SYSTEM_COMPUTE_POOL_CPU', ingress_enabled=False, min_instances=0, max_instances=2, "
            "image_repo='DB.ML.REPO', cpu_requests='2', memory_requests='4Gi', block=True)") in out
    assert "function_name='predict', service_name='MORTGAGE_XGB_<version>_SERVICE'" in out
    assert "WARNING" not in out


def test_plan_warns_when_the_version_cannot_be_served(tmp_path, monkeypatch, capsys):
    out = mlops_plan([], tmp_path, monkeypatch, capsys)
    assert "WARNING: registry.target_platforms is ['WAREHOUSE']" in out


def test_plan_of_batch_inference_in_snowflake(tmp_path, monkeypatch, capsys):
    out = mlops_plan(["pipeline=score", "scoring.version=PRODUCTION", "backend.batch=true", *SNOWFLAKE_IO],
                     tmp_path, monkeypatch, capsys)
    assert "mv = Model(MORTGAGE_XGB).version(PRODUCTION)" in out
    assert ("mv.run_batch(<Snowpark DataFrame: SELECT * FROM LOANS>, compute_pool='SYSTEM_COMPUTE_POOL_CPU', "
            "output_spec=OutputSpec(stage_location='@MLOPS_BATCH_INFERENCE/MORTGAGE_XGB/', mode=SaveMode.OVERWRITE), "
            "function_name='predict', job_name='MLOPS_MORTGAGE_XGB_<VERSION>_BATCH_<UTC TIME>')") in out
    assert "session.read.parquet('@MLOPS_BATCH_INFERENCE/MORTGAGE_XGB/MLOPS_MORTGAGE_XGB_<VERSION>_BATCH_<UTC TIME>/')" in out
    assert "INSERT INTO PREDICTIONS_WITH_GROUND_TRUTH" in out and "create_service" not in out


def test_plan_of_list_and_delete(tmp_path, monkeypatch, capsys):
    out = mlops_plan(["backend.action=delete", "scoring.version=V3"], tmp_path, monkeypatch, capsys)
    assert "delete: mv.delete_service('MORTGAGE_XGB_<version>_SERVICE') -- no pipeline stage runs" in out
    assert "train" not in out
    out = mlops_plan(["backend.action=list"], tmp_path, monkeypatch, capsys)
    assert "mv = Model(MORTGAGE_XGB).version(<the latest version>)" in out and "mv.list_services()" in out


# ------------------------------------------- snowflake-ml's real service operator, over a recording session


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """The recording-session module and a packaged model's spec (packaging takes seconds: once)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("recording_session", Path(__file__).with_name("recording_session.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, module.packaged_spec(tmp_path_factory.mktemp("packaged"))


@pytest.fixture
def recorded_version(recording):
    """A real ``ModelVersion`` (Registry -> Model -> version V3) over the recording session."""
    from snowflake.ml._internal.platform_capabilities import PlatformCapabilities
    from snowflake.ml.registry import Registry

    recording, model_spec = recording
    session = recording.RecordingSession(model_spec)
    session.models["MORTGAGE_XGB"] = {"V3": set()}
    with PlatformCapabilities.mock_features({}), recording.uploads_recorded():
        mv = Registry(session, database_name="DB", schema_name="S").get_model("MORTGAGE_XGB").version("V3")
        session.statements.clear()
        yield session, mv


def test_the_service_our_options_create_through_the_real_operator(tmp_path, monkeypatch, recorded_version):
    """ensure_service -> ModelVersion.create_service: the deployment spec snowflake-ml uploads and the
    SYSTEM$DEPLOY_MODEL call it sends carry our pool, instance counts and ingress."""
    import yaml
    from rich.console import Console

    from snowflake.ml.model._client.ops import service_ops

    monkeypatch.setattr(service_ops, "time", mock.Mock(wraps=service_ops.time, sleep=lambda seconds: None))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))  # where snowflake-ml writes the deploy log
    session, mv = recorded_version
    run = make_run(["backend.min_instances=1", "backend.max_instances=3", "backend.ingress_enabled=true"],
                   tmp_path, monkeypatch)
    assert backend_for(run).ensure_service(mv, "MORTGAGE_XGB", Console(quiet=True)) == SERVICE
    sent = [" ".join(s.split()) for s in session.statements]
    assert any(s.startswith("SHOW SERVICES IN SCHEMA DB.S STARTS WITH") for s in sent)
    (deploy,) = [s for s in sent if s.startswith("CALL SYSTEM$DEPLOY_MODEL(")]
    stage = deploy.split("('@", 1)[1].rsplit("/deploy.yml", 1)[0]
    spec = yaml.safe_load(session.uploads[f"{stage}/deploy.yml"])
    assert spec["models"] == [{"name": "DB.S.MORTGAGE_XGB", "version": "V3"}]
    assert spec["service"] == {"name": f"DB.S.{SERVICE}", "compute_pool": "SYSTEM_COMPUTE_POOL_CPU",
                               "ingress_enabled": True, "min_instances": 1, "max_instances": 3}


def test_the_batch_job_our_options_start_through_the_real_operator(tmp_path, monkeypatch, recorded_version):
    """batch_arguments -> ModelVersion.run_batch (2.6's OutputSpec/ResourcesSpec/InferenceSpec): the
    EXECUTE INFERENCE JOB SERVICE statement snowflake-ml sends, with our stage, mode, function, name, pool,
    resources and replicas in it."""
    import yaml

    session, mv = recorded_version
    run = make_run(["backend.batch=true", "backend.batch_output_stage=DB.S.OUT", "backend.cpu_requests=2",
                    "backend.max_batch_rows=500", "backend.batch_replicas=2"], tmp_path, monkeypatch)
    arguments = backend_for(run).batch_arguments("MORTGAGE_XGB", "V3")
    job = mv.run_batch(input_stage_location="@DB.S.IN/loans/", **arguments)
    import re

    (statement,) = [s for s in session.statements if s.startswith("EXECUTE INFERENCE JOB SERVICE")]
    head, specification, tail = re.match(r"(?s)(.*?) '(.*?)(?<!\\)'\n(FROM .*)$", statement).groups()
    assert head.split() == ["EXECUTE", "INFERENCE", "JOB", "SERVICE", "IN", "COMPUTE", "POOL",
                            "SYSTEM_COMPUTE_POOL_CPU", "WITH", "SPECIFICATION"]
    assert tail.split("\n") == ["FROM @DB.S.IN/loans/", "MODEL = DB.S.MORTGAGE_XGB", "VERSION = V3",
                                "FUNCTION = 'predict'", f"NAME = DB.S.{arguments['job_name']}", "ASYNC = TRUE",
                                "REPLICAS = 2"]
    spec = yaml.safe_load(specification.replace("\\'", "'"))
    assert spec["output"] == {"stage_location": "@DB.S.OUT/MORTGAGE_XGB/", "mode": "overwrite"}
    assert spec["resources"]["cpu_requests"] == "2" and spec["inference"]["max_batch_rows"] == 500
    assert job.id == f"DB.S.{arguments['job_name']}"


def test_snowflake_ml_itself_refuses_a_gpu_service_for_a_cpu_only_model(recorded_version):
    """Why backend.gpu_requests needs registry.cuda_version (defect 7): the real create_service reads the
    packaged runtimes and refuses, before sending anything that creates."""
    session, mv = recorded_version
    with pytest.raises(ValueError, match="does not have GPU runtime support"):
        mv.create_service(service_name="GPU_SERVICE", service_compute_pool="GPU_POOL", gpu_requests="1", block=False)
    assert not [s for s in session.statements if s.startswith(("CREATE", "CALL"))]
