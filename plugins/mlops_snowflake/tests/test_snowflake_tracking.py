"""``tracker=snowflake``: snowflake-ml's real ``ExperimentTracking`` over a recording session, checked by
the SQL and the file uploads it emits; and the live round trip, skipped without a connection."""

import inspect
import json
import os
import re

import pytest

from mlops_framework.cli import main

SMALL = ["data.rows_per_week=200", "data.weeks=3", "model.params.n_estimators=10", "model.params.n_jobs=1"]
WHERE = ["tracker.snowflake.database=DB", "tracker.snowflake.schema=S"]
CANARY = "CANARY-token-91c4"


class RecordingSession:
    """What ``ExperimentTracking`` uses of a Snowpark Session, each call bound to the installed Session's own
    signature: ``sql(query).collect()`` (one status row; SHOW RUNS finds none) and ``file.put``."""

    def __init__(self, fail=False):
        self.statements, self.puts, self.fail = [], [], fail
        self.file = self

    def sql(self, query, params=None, _emit_ast=True):
        from snowflake.snowpark import Session

        inspect.signature(Session.sql).bind(None, query, params=params)
        if self.fail:
            raise ConnectionError("no route to the account")
        self.statements.append(" ".join(query.split()))
        return self

    def collect(self, statement_params=None, **kwargs):
        from snowflake.snowpark import Row

        return [] if self.statements[-1].startswith("SHOW ") else [Row(status="Statement executed successfully.")]

    def put(self, local_file_name, stage_location, **kwargs):
        from snowflake.snowpark import FileOperation

        inspect.signature(FileOperation.put).bind(None, local_file_name, stage_location, **kwargs)
        self.puts.append((os.path.basename(local_file_name), stage_location, kwargs))
        return [object()]

    def get_current_database(self):
        return "DB"

    def get_current_schema(self):
        return "S"

    def payloads(self, kind, run):
        """The JSON lists of ``ADD PARAMETERS`` or ``ADD METRICS`` statements of ``run``, merged."""
        items = []
        for statement in self.statements:
            match = re.search(rf"MODIFY RUN {run} ADD {kind}=\$\$(.*)\$\$$", statement)
            if match:
                items += json.loads(match.group(1))
        return items


@pytest.fixture
def home(tmp_path, monkeypatch):
    path = tmp_path / "home"
    monkeypatch.setenv("MLOPS_HOME", str(path))
    return path


def test_a_run_emits_the_experiment_run_params_metrics_artifacts_and_commit(home, use_connection):
    session = RecordingSession()
    use_connection(session)
    assert main(["run", "pipeline=train", "tracker=[local,snowflake]", *WHERE, f"+tags.api_token={CANARY}", *SMALL]) == 0
    run_dir = next((home / "runs").iterdir())
    run = "RUN_" + re.sub(r"\W", "_", run_dir.name)
    statements = session.statements
    assert statements[0] == "CREATE EXPERIMENT IF NOT EXISTS DB.S.MORTGAGE_XGB"
    assert f"ALTER EXPERIMENT DB.S.MORTGAGE_XGB ADD RUN {run}" in statements
    assert statements[-1] == f"ALTER EXPERIMENT DB.S.MORTGAGE_XGB COMMIT RUN {run} WITH STATUS='FINISHED'"
    params = {item["name"]: item["value"] for item in session.payloads("PARAMETERS", run)}
    assert params["model.params.n_estimators"] == "10" and params["backend.kind"] == "local"
    assert params["mlops.model_version"] == "v1" and params["mlops.data_fingerprint"].startswith("sha256:")
    assert params["tags.api_token"] == "**redacted**" and CANARY not in " ".join(statements)
    metrics = session.payloads("METRICS", run)
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    holdout_f1 = [item for item in metrics if item["name"] == "holdout_f1"]
    assert len(holdout_f1) == 1 and holdout_f1[0]["value"] == pytest.approx(evaluation["holdout"]["f1"])
    assert holdout_f1[0]["step"] == 0
    uploaded = {name: where for name, where, _ in session.puts}
    assert {"evaluation.json", "contract.json", "resolved_config.yaml"} <= set(uploaded)
    assert uploaded["evaluation.json"] == f"snow://experiment/DB.S.MORTGAGE_XGB/versions/{run}"
    local = json.loads((run_dir / "tracking.json").read_text())
    assert local["status"] == "FINISHED"


def test_a_sweep_is_one_experiment_with_the_trial_number_as_a_param(home, use_connection):
    session = RecordingSession()
    use_connection(session)
    assert main(["run", "-m", "model.params.max_depth=2,3", "pipeline=train", "tracker=snowflake", *WHERE, *SMALL]) == 0
    sweep_dir = next((home / "multiruns").iterdir())
    experiment = "DB.S.MORTGAGE_XGB_SWEEP_" + re.sub(r"\W", "_", sweep_dir.name)
    created = [s for s in session.statements if s.startswith("CREATE EXPERIMENT")]
    assert set(created) == {f"CREATE EXPERIMENT IF NOT EXISTS {experiment}"}
    added = [s.rsplit(" ", 1)[-1] for s in session.statements if " ADD RUN " in s]
    assert added == ["SWEEP", "TRIAL_0", "TRIAL_1"]
    for number, depth in ((0, "2"), (1, "3")):
        params = {item["name"]: item["value"] for item in session.payloads("PARAMETERS", f"TRIAL_{number}")}
        assert params["trial"] == str(number) and params["model.params.max_depth"] == depth
    assert any(item["name"] == "best_validation_f1" for item in session.payloads("METRICS", "SWEEP"))
    assert ("leaderboard.csv", f"snow://experiment/{experiment}/versions/SWEEP", {"overwrite": True,
                                                                                  "auto_compress": False}) in session.puts
    assert session.statements[-1] == f"ALTER EXPERIMENT {experiment} COMMIT RUN SWEEP WITH STATUS='FINISHED'"


def test_an_unreachable_account_warns_once_and_the_run_goes_on(home, use_connection, capsys):
    use_connection(RecordingSession(fail=True))
    assert main(["run", "pipeline=train", "tracker=[local,snowflake]", *WHERE, *SMALL]) == 0
    err = capsys.readouterr().err
    assert err.count("mlops: warning: tracker snowflake") == 1, err
    assert "no route to the account" in err


def test_plan_names_the_experiment_and_connection(home, use_connection, capsys):
    use_connection(RecordingSession(fail=True))
    assert main(["plan", "tracker=snowflake", *WHERE, *SMALL]) == 0
    assert "tracker snowflake: Snowflake experiment MORTGAGE_XGB in DB.S (a test connection)" in capsys.readouterr().out


LIVE = os.environ.get("MLOPS_SNOWFLAKE_CONNECTION")


@pytest.mark.snowflake
@pytest.mark.skipif(not LIVE, reason="no live Snowflake connection configured: MLOPS_SNOWFLAKE_CONNECTION is not set")
def test_live_a_run_is_read_back_from_snowflake_experiment_tracking(home):
    import uuid

    from snowflake.ml.experiment import ExperimentTracking

    from mlops_snowflake.connection import SnowflakeConnection

    experiment = f"MLOPS_LIVE_TRACKING_{uuid.uuid4().hex[:8].upper()}"
    argv = ["run", "pipeline=train", "tracker=snowflake", f"connection.connection_name={LIVE}",
            f"tracker.snowflake.experiment={experiment}", *SMALL]
    session = SnowflakeConnection(LIVE).session()
    try:
        assert main(argv) == 0
        ExperimentTracking._instance = None
        tracking = ExperimentTracking(session)
        tracking.set_experiment(experiment)
        params = tracking.list_params().to_pandas()
        metrics = tracking.list_metrics().to_pandas()
        assert params["model.params.n_estimators"].tolist() == ["10"]
        assert metrics["holdout_f1"].iloc[0] > 0
    finally:
        ExperimentTracking._instance = None
        ExperimentTracking(session).delete_experiment(experiment)
