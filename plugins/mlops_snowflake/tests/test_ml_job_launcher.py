"""``hydra/launcher=ml_job``: every trial of a multirun submitted as one Snowflake ML Job, tested offline.

The launcher is found as Hydra finds it (``Plugins.instantiate_launcher`` on a config composed with
``hydra/launcher=ml_job``) and driven with the trials a sweep would hand it. ``submit_directory`` and
``MLJob`` are ``create_autospec`` of the installed snowflake-ml, so a call drifting from their signatures
fails; the Snowpark session is an autospec too. Not verified here: a live account (upload, pool
scheduling, the job container running the payload: see test_ml_job.py for the payload run offline).
"""

import csv
import json
import re
from pathlib import Path
from unittest import mock

import pytest
import yaml

PLUGIN_ROOT = Path(__file__).resolve().parents[1]  # plugins/mlops_snowflake: holds hydra_plugins/
BASE = ["data.weeks=2", "data.rows_per_week=150", "model.params.n_estimators=8"]
DEPTHS = (3, 5, 7)


@pytest.fixture
def launcher_for(tmp_path, monkeypatch):
    """``launcher_for(*extra)``: the launcher Hydra instantiates for ``hydra/launcher=ml_job`` plus ``extra``."""
    monkeypatch.syspath_prepend(str(PLUGIN_ROOT))
    import hydra_plugins

    if str(PLUGIN_ROOT / "hydra_plugins") not in list(hydra_plugins.__path__):
        hydra_plugins.__path__.append(str(PLUGIN_ROOT / "hydra_plugins"))
    import hydra_plugins.mlops_ml_job_launcher.config  # noqa: F401  (stores hydra/launcher=ml_job)
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.plugins import Plugins
    from hydra.types import HydraContext

    from mlops_framework import cli, config

    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SNOWFLAKE_HOME", str(tmp_path / "snowflake"))
    components = cli._components()
    contexts = []

    def make(*extra):
        context = initialize_config_dir(config_dir=str(config.conf_dir()), version_base="1.3", job_name="mlops")
        context.__enter__()
        contexts.append(context)
        cfg = compose("config", return_hydra_config=True, overrides=[
            "hydra/launcher=ml_job", "hydra.mode=MULTIRUN", f"hydra.sweep.dir={tmp_path / 'sweep'}",
            "hydra.launcher.poll_s=0", *extra, *config.search_path_overrides(components)])
        HydraConfig.instance().set_config(cfg)
        from hydra._internal.callbacks import Callbacks

        context_ = HydraContext(config_loader=GlobalHydra.instance().config_loader(), callbacks=Callbacks(cfg))
        return Plugins.instance().instantiate_launcher(config=cfg, hydra_context=context_,
                                                       task_function=lambda cfg: None)

    yield make
    for context in reversed(contexts):
        context.__exit__(None, None, None)


@pytest.fixture
def snowflake(monkeypatch):
    """Autospec'd submit_directory handing out autospec'd MLJobs; the payload each saw; no real connection."""
    import snowflake.ml.jobs as jobs
    from snowflake.snowpark import Session

    from mlops_snowflake import connection as connection_module

    session = mock.create_autospec(Session, instance=True)
    connection = mock.create_autospec(connection_module.SnowflakeConnection, instance=True)
    connection.session.return_value = session
    monkeypatch.setattr(connection_module, "resolve", mock.Mock(return_value=connection))
    state = {"jobs": [], "payloads": [], "outcome": {}, "in_flight": 0, "most_in_flight": 0}

    def submit(dir_path, compute_pool, **kwargs):
        config = yaml.safe_load((Path(dir_path) / "resolved_config.yaml").read_text())
        depth = config["model"]["params"]["max_depth"]
        state["payloads"].append({"config": config, "pool": compute_pool, "kwargs": kwargs,
                                  "files": {p.name for p in Path(dir_path).iterdir()}})
        job = mock.create_autospec(jobs.MLJob, instance=True)
        job.id = f"MLJOB_{len(state['jobs'])}"
        final = state["outcome"].get(depth, "DONE")
        state["in_flight"] += 1
        state["most_in_flight"] = max(state["most_in_flight"], state["in_flight"])

        def status_sequence():
            yield "PENDING"
            yield "RUNNING"
            state["in_flight"] -= 1
            while True:
                yield final

        sequence = status_sequence()
        type(job).status = mock.PropertyMock(side_effect=lambda: next(sequence))
        job.get_logs.return_value = [f"trial max_depth={depth}", "Traceback: boom"]
        job.result.return_value = {"model": "MORTGAGE_XGB", "version": f"v{depth}",
                                   "metrics": {"holdout_f1": depth / 10}}
        state["jobs"].append(job)
        return job

    state["submit_directory"] = mock.create_autospec(jobs.submit_directory, side_effect=submit)
    monkeypatch.setattr(jobs, "submit_directory", state["submit_directory"])
    state["session"] = session
    return state


def trials():
    return [[*BASE, f"model.params.max_depth={depth}"] for depth in DEPTHS]


def test_config_is_a_hydra_launcher_option(launcher_for):
    launcher = launcher_for("hydra.launcher.compute_pool=MY_POOL", "hydra.launcher.max_parallel=2")
    # Hydra's plugin scan loads the module again, so compare by name, not class identity
    assert (type(launcher).__module__, type(launcher).__name__) == (
        "hydra_plugins.mlops_ml_job_launcher.launcher", "MLJobLauncher")
    assert launcher.settings["compute_pool"] == "MY_POOL" and launcher.max_parallel == 2
    # the run's own connection group, resolved, is what submits (connection=snowflake from the plugin)
    assert set(launcher.connection) >= {"connection_name", "role", "warehouse", "database", "schema"}


def test_three_trials_three_jobs_each_with_its_own_override(launcher_for, snowflake, tmp_path):
    from hydra.core.utils import JobStatus

    launcher = launcher_for("hydra.launcher.compute_pool=TRIAL_POOL", "hydra.launcher.stage_name=DB.S.TRIALS",
                            "hydra.launcher.max_parallel=2")
    returns = launcher.launch(trials(), initial_job_idx=0)

    assert snowflake["submit_directory"].call_count == 3
    assert [p["pool"] for p in snowflake["payloads"]] == ["TRIAL_POOL"] * 3
    assert [p["kwargs"]["stage_name"] for p in snowflake["payloads"]] == ["DB.S.TRIALS"] * 3
    assert [p["kwargs"]["name"] for p in snowflake["payloads"]] == [f"MLOPS_MORTGAGE_XGB_T{i}" for i in range(3)]
    assert all(p["kwargs"]["session"] is snowflake["session"] for p in snowflake["payloads"])
    assert [p["config"]["model"]["params"]["max_depth"] for p in snowflake["payloads"]] == list(DEPTHS)
    assert all(p["config"]["backend"] == {"kind": "local"} for p in snowflake["payloads"])
    assert all("hydra" not in p["config"] for p in snowflake["payloads"])
    assert all({"job_entrypoint.py", "payload.json", "mlops_framework"} <= p["files"] for p in snowflake["payloads"])
    assert snowflake["most_in_flight"] == 2  # max_parallel

    assert [r.status for r in returns] == [JobStatus.COMPLETED] * 3
    assert [r.overrides for r in returns] == trials()  # in order
    assert [r.return_value["version"] for r in returns] == [f"v{d}" for d in DEPTHS]
    for number, depth in enumerate(DEPTHS):  # the trial dirs the sweep's leaderboard reads
        trial_dir = tmp_path / "sweep" / str(number)
        assert f"model.params.max_depth={depth}" in yaml.safe_load((trial_dir / ".hydra" / "overrides.yaml").read_text())
        assert json.loads((trial_dir / "summary.json").read_text())["metrics"] == {"holdout_f1": depth / 10}
        assert json.loads((trial_dir / "trial.json").read_text())["status"] == "ok"


def test_a_failed_job_fails_its_trial_only(launcher_for, snowflake, tmp_path):
    from hydra.core.utils import JobStatus

    snowflake["outcome"][5] = "FAILED"
    launcher = launcher_for("hydra.launcher.max_parallel=1", "hydra.launcher.timeout_s=5")  # no hang if broken
    returns = launcher.launch(trials(), initial_job_idx=10)

    assert snowflake["submit_directory"].call_count == 3
    # reported as a local trial reports a failure, so that Hydra's sweeper does not stop the sweep
    assert [r.status for r in returns] == [JobStatus.COMPLETED] * 3
    error = returns[1].return_value["error"]
    assert "FAILED" in error and "Traceback: boom" in error
    assert returns[2].return_value["version"] == "v7"
    snowflake["jobs"][1].result.assert_not_called()
    trial = json.loads((tmp_path / "sweep" / "11" / "trial.json").read_text())
    assert trial["status"] == "failed" and "FAILED" in trial["error"]
    assert snowflake["payloads"][0]["pool"] == "SYSTEM_COMPUTE_POOL_CPU"  # compute_pool null: by device


def test_a_job_past_its_timeout_fails_without_waiting_forever(launcher_for, snowflake):
    from hydra.core.utils import JobStatus

    snowflake["outcome"][3] = "RUNNING"
    launcher = launcher_for("hydra.launcher.timeout_s=0")
    returns = launcher.launch(trials()[:1], initial_job_idx=0)
    assert returns[0].status == JobStatus.COMPLETED
    assert "still PENDING after 0s; it keeps running" in returns[0].return_value["error"]
    snowflake["jobs"][0].result.assert_not_called()


def test_plan_lists_every_trial_without_connecting(launcher_for, monkeypatch):
    import snowflake.ml.jobs as jobs

    from hydra_plugins.mlops_ml_job_launcher.launcher import plan_submissions
    from mlops_snowflake import connection as connection_module

    def refuse(*args, **kwargs):
        raise AssertionError("the plan must not connect or submit")

    monkeypatch.setattr(connection_module, "resolve", refuse)
    monkeypatch.setattr(jobs, "submit_directory", refuse)
    launcher = launcher_for("hydra.launcher.stage_name=PLAN_STAGE")
    lines = plan_submissions(launcher, trials())
    assert len(lines) == 3
    for number, (line, depth) in enumerate(zip(lines, DEPTHS)):
        assert line.startswith(f"trial {number}: ML Job MLOPS_MORTGAGE_XGB_T{number} on compute pool SYSTEM_COMPUTE_POOL_CPU")
        assert "@PLAN_STAGE" in line and f"model.params.max_depth={depth}" in line


def test_mlops_run_multirun_with_the_ml_job_launcher(launcher_for, snowflake, tmp_path, capfd):
    """The whole command: ``mlops run -m hydra/launcher=ml_job ...``, its sweep callback and leaderboard included."""
    from mlops_framework import cli

    code = cli.main(["run", "-m", "hydra/launcher=ml_job", "hydra.launcher.poll_s=0",
                     f"hydra.sweep.dir={tmp_path / 'cli_sweep'}",
                     # the job's summary carries holdout_* metrics only (no evaluation.json comes back)
                     "hydra.callbacks.sweep.metric=holdout_f1",
                     # the versions live in the job's registry, not this local one: no alias here
                     "hydra.callbacks.sweep.promote=null", "pipeline=train", *BASE, "model.params.max_depth=3,5,7"])
    assert snowflake["submit_directory"].call_count == 3
    assert sorted(p["config"]["model"]["params"]["max_depth"] for p in snowflake["payloads"]) == list(DEPTHS)
    assert all(p["config"]["backend"] == {"kind": "local"} for p in snowflake["payloads"])
    captured = capfd.readouterr()
    out = captured.out + captured.err
    assert code == 0, out
    assert "could not" not in out and "error" not in out, out
    board = (tmp_path / "cli_sweep" / "leaderboard.csv").read_text().splitlines()
    assert len(board) == 4 and board[1].startswith("1,2,ok"), board  # max_depth=7 (trial 2) ranks first
    # the job's summary has the one shape of a run's result (mlops_framework.runner): the leaderboard reads it
    rows = list(csv.DictReader(board))
    assert [(row["model"], row["version"]) for row in rows] == [("MORTGAGE_XGB", f"v{d}") for d in (7, 5, 3)]
    assert re.search(r"^1\s+2\s+ok\s.*\sMORTGAGE_XGB v7\s", out, re.M), out


def test_mlops_plan_multirun_shows_one_ml_job_per_trial_without_connecting(launcher_for, tmp_path, monkeypatch,
                                                                           capsys):
    """``mlops plan -m ... hydra/launcher=ml_job``: the launcher's own plan, one submission per trial; no session."""
    import snowflake.ml.jobs as jobs
    from snowflake.snowpark import Session

    from mlops_framework import cli
    from mlops_snowflake.connection import SnowflakeConnection

    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SNOWFLAKE_HOME", str(tmp_path / "snowflake"))
    canary = "CANARY-plan-m-3c8d1a"
    (tmp_path / "snowflake").mkdir(exist_ok=True)
    (tmp_path / "snowflake" / "connections.toml").write_text(
        f'[default]\naccount = "acme-x1"\nuser = "ml"\npassword = "{canary}"\n')
    refuse = mock.Mock(side_effect=AssertionError("plan must not connect"))
    monkeypatch.setattr(SnowflakeConnection, "session", refuse)
    monkeypatch.setattr(Session.SessionBuilder, "create", refuse)
    monkeypatch.setattr(jobs, "submit_directory", refuse)

    def plan(*overrides):
        assert cli.main(["plan", "-m", "hydra/launcher=ml_job", "registry=snowflake", *BASE, *overrides]) == 0
        out = capsys.readouterr().out
        assert canary not in out
        return out, re.findall(r"^  trial (\d+): ML Job (\S+) on compute pool (\S+) .*, payload to @(\S+), "
                               r"overrides: (.*)$", out, re.M)

    out, lines = plan("model.params.max_depth=3,6", "hydra.launcher.compute_pool=TRIAL_POOL",
                      "hydra.launcher.stage_name=DB.S.TRIALS")
    assert out.splitlines()[0].startswith(
        "sweep: 2 trials, sweeper BasicSweeper (hydra/sweeper=basic), launcher MLJobLauncher "
        "(hydra/launcher=ml_job, max_parallel=4)")
    assert [(number, name, pool, stage) for number, name, pool, stage, _ in lines] == [
        ("0", "MLOPS_MORTGAGE_XGB_T0", "TRIAL_POOL", "DB.S.TRIALS"),
        ("1", "MLOPS_MORTGAGE_XGB_T1", "TRIAL_POOL", "DB.S.TRIALS")]  # one job per trial, each its own name
    assert "model.params.max_depth=3" in lines[0][4] and "model.params.max_depth=6" in lines[1][4]
    # then the stages of trial 0, as they run inside its job (backend local there), registering in Snowflake
    assert re.search(r"^plan of trial 0 \(.*model\.params\.max_depth=3\): backend local, registry Snowflake", out, re.M)
    assert re.search(r"^\s+7\. register: log MORTGAGE_XGB next vN in Snowflake Model Registry", out, re.M)

    # no pool given: each trial's pool follows its own model.params.device
    _, lines = plan("model.params.device=cpu,cuda")
    assert [(name, pool) for _, name, pool, _, _ in lines] == [
        ("MLOPS_MORTGAGE_XGB_T0", "SYSTEM_COMPUTE_POOL_CPU"), ("MLOPS_MORTGAGE_XGB_T1", "SYSTEM_COMPUTE_POOL_GPU")]
    refuse.assert_not_called()
    assert not (tmp_path / "home").exists()  # no sweep directory, nothing uploaded or written
