"""Sweeps end to end, in subprocesses as a user runs them: a grid and an Optuna search in parallel, their
leaderboards, the best version aliased, a resumed study, a failed trial, and a rerun giving the same metrics."""

import csv
import json
import os
import time
from pathlib import Path

import pytest
from joblib import cpu_count

from run_sizes import SMALL
from hydra_plugins.mlops_optuna_sweeper.sweeper import search_space
from mlops_framework import config
from mlops_framework.hookspecs import hookimpl
from mlops_framework.pipeline import build_run
from mlops_framework.plugins import Components, get_plugin_manager
from mlops_local.registry import LocalRegistry

REPO = Path(__file__).resolve().parents[1]

# Tiny trials, without SMALL's model.params.n_jobs=1: a sweep sets the threads per trial itself.
TINY = [override for override in SMALL if not override.startswith("model.params.n_jobs=")]
OPTIONS = sorted(p.stem for p in (REPO / "conf" / "hparams_search").glob("*.yaml"))
THREADS_FOR_TWO = str(max(1, cpu_count() // 2))


# A plugin for these tests, loaded in the trials with MLOPS_PLUGINS=test_sweeps. After training, trial #0
# waits until the file TRIAL_ZERO_WAITS_FOR names (relative to the sweep directory; "FILE:KEY": until that
# JSON file holds KEY) appears, at most EVENT_DEADLINE_S, then, with SLOW_TRIAL_ZERO set, writes "slow" in
# its directory and sleeps that many seconds; trial #1 kills its process when CRASH_TRIAL_ONE is set. The
# tests wait on such events, not on fixed sleeps, so that they hold on a loaded machine.
EVENT_DEADLINE_S = 120


@hookimpl
def after_stage_run(stage, run, seconds):
    if stage.name != "train":
        return
    from hydra.core.hydra_config import HydraConfig

    number = HydraConfig.get().job.num
    trial_dir = Path(HydraConfig.get().runtime.output_dir)
    if number == 0 and os.environ.get("TRIAL_ZERO_WAITS_FOR"):
        name, _, key = os.environ["TRIAL_ZERO_WAITS_FOR"].partition(":")
        wait_for(lambda: _holds(trial_dir.parent / name, key))
    if number == 0 and os.environ.get("SLOW_TRIAL_ZERO"):
        (trial_dir / "slow").touch()
        time.sleep(float(os.environ["SLOW_TRIAL_ZERO"]))
    if number == 1 and os.environ.get("CRASH_TRIAL_ONE"):
        os._exit(9)


def _holds(path, key):
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return not key or key in data


def wait_for(condition, deadline_s=EVENT_DEADLINE_S):
    """Poll ``condition`` until it holds (True) or ``deadline_s`` passes (False)."""
    deadline = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


TEST_PLUGIN = {"MLOPS_PLUGINS": "test_sweeps",
               "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}


def compose_with_hydra(overrides):
    from hydra import compose, initialize_config_dir

    components = Components(get_plugin_manager())
    with initialize_config_dir(config_dir=str(config.conf_dir()), version_base="1.3", job_name="mlops"):
        return compose("config", overrides=[*overrides, *config.search_path_overrides(components)],
                       return_hydra_config=True), components


def sweep_dir(home):
    dirs = sorted((home / "multiruns").iterdir())
    assert len(dirs) == 1, dirs
    return dirs[0]


def trials(directory):
    return sorted((p for p in directory.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def read(path):
    return json.loads(Path(path).read_text())


def leaderboard_rows(directory):
    with open(directory / "leaderboard.csv") as handle:
        return list(csv.DictReader(handle))


def versions(home, model="MORTGAGE_XGB"):
    return LocalRegistry(home / "registry").versions(model)


def assert_best_is_aliased(home, directory):
    rows = leaderboard_rows(directory)
    ok = [r for r in rows if r["status"] == "ok"]
    values = [float(r["validation_f1"]) for r in ok]
    assert values == sorted(values, reverse=True) and ok[0]["rank"] == "1"
    best = read(directory / "sweep.json")["best"]
    assert (best["trial"], best["version"], best["alias"]) == (ok[0]["trial"], ok[0]["version"], "SWEEP_BEST")
    registry = LocalRegistry(home / "registry")
    assert registry.get_version("MORTGAGE_XGB", "SWEEP_BEST")["version_name"] == ok[0]["version"]
    history = registry.history("MORTGAGE_XGB")
    assert history[-1]["new_version"] == ok[0]["version"] and str(directory) in history[-1]["reason"]
    assert (directory / "leaderboard.html").is_file()
    return rows


@pytest.mark.parametrize("option", OPTIONS)
def test_every_search_option_composes(option, home):
    cfg, components = compose_with_hydra([f"hparams_search={option}"])
    sweeper = cfg.hydra.sweeper
    assert sweeper.params, "a search option names its search space"
    if "mlops_optuna" in sweeper._target_:
        space, _, _ = search_space(sweeper.params, [])
        assert set(space) == {k.lstrip("+") for k in sweeper.params}
        assert sweeper.metric and sweeper.direction in ("maximize", "minimize")
    else:
        assert "mlops_local_launcher" in cfg.hydra.launcher._target_
    assert "score" not in cfg.pipeline.stages, "trials of a parallel sweep must not all score into one table"
    job = config.compose([f"hparams_search={option}"], components)
    config.check(job, components)
    assert build_run(config.resolved(job), components).stages
    assert any(c._target_ == "mlops_framework.sweeps.SweepCallback" for c in cfg.hydra.callbacks.values())


def test_search_space_grammar():
    space, keys, fixed = search_space(
        {"a": "range(3, 10)", "b": "tag(log, interval(0.01, 0.3))", "++c": "x,y", "d": "tag(int, interval(1, 5))"},
        ["a=range(2, 4)", "e=7"])
    assert (space["a"].low, space["a"].high, space["a"].step) == (2, 3, 1)  # the command line wins; 4 excluded
    assert space["b"].log and (space["b"].low, space["b"].high) == (0.01, 0.3)
    assert space["c"].choices == ("x", "y") and keys["c"] == "++c"
    assert type(space["d"]).__name__ == "IntDistribution" and fixed == ["e=7"]


def test_grid_runs_trials_in_parallel_and_aliases_the_best(mlops, home):
    mlops("run", "-m", "hparams_search=mortgage_grid", "hydra.launcher.n_jobs=2", "model.params.max_depth=3,6",
          *TINY, check=True)
    directory = sweep_dir(home)
    runs = trials(directory)
    assert len(runs) == 4  # max_depth 3,6 x learning_rate 0.05,0.3 from the option
    records = [read(t / "trial.json") for t in runs]
    assert all(r["status"] == "ok" and r["threads"] == THREADS_FOR_TWO for r in records)
    assert len({r["pid"] for r in records}) == 2, "two worker processes ran the trials"
    assert all((t / "resolved_config.yaml").is_file() and (t / "summary.json").is_file() for t in runs)

    rows = assert_best_is_aliased(home, directory)
    # each trial kept its model in its own directory; only the best one was registered
    assert all(LocalRegistry(t / "model").versions("MORTGAGE_XGB") for t in runs)
    (registered,) = versions(home)
    assert registered["version_name"] == rows[0]["version"] == "v1"
    assert registered["lineage"]["sweep"] == {"dir": str(directory), "trial": rows[0]["trial"],
                                              "metric": "validation_f1", "value": float(rows[0]["validation_f1"])}
    assert [r["version"] for r in rows[1:]] == [""] * 3
    assert {(r["model.params.max_depth"], r["model.params.learning_rate"]) for r in rows} == {
        ("3", "0.05"), ("3", "0.3"), ("6", "0.05"), ("6", "0.3")}

    record = read(directory / "sweep.json")
    assert record["argv"][:2] == ["-m", "hparams_search=mortgage_grid"] and record["env"]["MLOPS_HOME"] == str(home)
    assert record["git"]["commit"] and record["seeds"]["seed"] == 42 and record["seeds"]["split.seed"] == 42
    out = mlops("sweep", "show", "--top", "1", check=True).stdout
    assert str(directory) in out and f"trial {rows[0]['trial']}" in out


def test_optuna_search_keeps_workers_busy_marks_the_best_and_resumes(mlops, home):
    search = ["hparams_search=mortgage_optuna", "hydra.sweeper.n_jobs=2", *TINY]
    # trial #0 holds its worker until trial #3 has started
    mlops("run", "-m", *search, "hydra.sweeper.n_trials=5", env={**TEST_PLUGIN, "TRIAL_ZERO_WAITS_FOR": "3/trial.json"},
          check=True)
    directory = sweep_dir(home)
    records = [read(t / "trial.json") for t in trials(directory)]
    assert [r["optuna"]["state"] for r in records] == ["COMPLETE"] * 5
    assert len({r["pid"] for r in records}) == 2 and {r["threads"] for r in records} == {THREADS_FOR_TWO}
    # No worker waits for a batch to end: while trial #0 waits, the other worker goes on with #2 and #3.
    zero_ended = records[0]["start_time"] + records[0]["seconds"]
    assert records[2]["start_time"] < zero_ended and records[3]["start_time"] < zero_ended
    assert records[2]["pid"] == records[3]["pid"] != records[0]["pid"]
    assert_best_is_aliased(home, directory)
    assert (directory / "optuna.journal").is_file()
    first_best = read(directory / "sweep.json")["best"]["trial"]
    assert [v["version_name"] for v in versions(home)] == ["v1"]

    mlops("run", "-m", *search, "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={directory}", check=True)
    study = read(directory / "sweep.json")["study"]
    assert (study["trials_before"], study["trials_after"]) == (5, 7)
    assert [t.name for t in trials(directory)] == [str(n) for n in range(7)]
    assert_best_is_aliased(home, directory)
    # the best of both sessions is registered once: an earlier best is not registered again
    best = read(directory / "sweep.json")["best"]["trial"]
    assert len(leaderboard_rows(directory)) == 7 and len(versions(home)) == len({first_best, best})


def test_a_failed_trial_is_recorded_and_the_others_finish(mlops, home):
    result = mlops("run", "-m", "hparams_search=mortgage_grid", "hydra.launcher.n_jobs=2", "model.params.max_depth=3",
                   "model.params.learning_rate=0.3", "split.holdout=0.2,1.5", *TINY)
    assert result.returncode == 1 and "1 of 2 trials failed" in result.stderr
    assert "Traceback" not in result.stderr
    rows = {r["split.holdout"]: r for r in leaderboard_rows(sweep_dir(home))}
    assert rows["0.2"]["status"] == "ok" and rows["0.2"]["version"] == "v1"
    assert rows["1.5"]["status"] == "failed" and "split.holdout must be between 0 and 1" in rows["1.5"]["error"]


def test_a_dead_worker_fails_its_trials_and_the_search_goes_on(mlops, home):
    mlops("run", "-m", "hparams_search=mortgage_optuna", "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=2", *TINY,
          env={**TEST_PLUGIN, "CRASH_TRIAL_ONE": "1", "TRIAL_ZERO_WAITS_FOR": "1/trial.json:optuna"}, check=True)
    directory = sweep_dir(home)
    records = [read(t / "trial.json") for t in trials(directory)]
    assert records[1]["optuna"]["state"] == "FAIL" and "worker process died" in records[1]["error"]
    assert records[2]["optuna"]["state"] == "COMPLETE"
    assert records[2]["pid"] not in (records[0]["pid"], records[1]["pid"]), "trial #2 ran on a new pool"
    rows = {r["trial"]: r for r in leaderboard_rows(directory)}
    assert rows["1"]["status"] == "failed" and rows["2"]["status"] == "ok"


def test_rerunning_the_recorded_command_reproduces_the_metrics(mlops, home):
    mlops("run", "-m", "hparams_search=mortgage_optuna", "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=2", *TINY,
          check=True)
    first = sweep_dir(home)
    registry = LocalRegistry(home / "registry")
    before = (versions(home), registry.aliases("MORTGAGE_XGB"), registry.history("MORTGAGE_XGB"))
    out = mlops("sweep", "rerun", str(first), check=True).stdout
    assert "same     params and metrics in all 3 trials" in out
    # a rerun registers nothing and moves no alias unless asked (--register)
    assert (versions(home), registry.aliases("MORTGAGE_XGB"), registry.history("MORTGAGE_XGB")) == before
    second = next(p for p in (home / "multiruns").iterdir() if p != first)
    out = mlops("sweep", "rerun", str(first), "--register", "best", check=True).stdout  # asked: it registers
    assert "same     params and metrics in all 3 trials" in out
    (third,) = [p for p in (home / "multiruns").iterdir() if p not in (first, second)]
    assert [v["version_name"] for v in versions(home)] == ["v1", "v2"]
    assert registry.get_version("MORTGAGE_XGB", "SWEEP_BEST")["lineage"]["sweep"]["dir"] == str(third)
    assert read(second / "sweep.json")["seeds"] == read(first / "sweep.json")["seeds"]
    for a, b in zip(trials(first), trials(second), strict=True):
        assert read(a / "evaluation.json") == read(b / "evaluation.json")
        assert read(a / "trial.json")["optuna"]["params"] == read(b / "trial.json")["optuna"]["params"]


def test_show_without_sweeps_says_so(mlops, home):
    result = mlops("sweep", "show")
    assert result.returncode == 2 and "no sweeps under" in result.stderr


def test_the_leaderboard_reads_the_version_of_a_local_and_of_an_ml_job_trial(tmp_path):
    from mlops_framework import leaderboard

    # a local trial's summary.json and an ML Job trial's (the job's result plus where it ran, as the launcher
    # writes it): one shape, mlops_framework.runner.RunResult
    summaries = {"0": {"model": "MORTGAGE_XGB", "version": "v2", "metrics": {"holdout_f1": 0.61}},
                 "1": {"model": "MORTGAGE_XGB", "version": "v3", "metrics": {"holdout_f1": 0.7},
                       "job_id": "MLJOB_1", "compute_pool": "SYSTEM_COMPUTE_POOL_CPU"}}
    for trial, summary in summaries.items():
        (tmp_path / trial).mkdir()
        (tmp_path / trial / "summary.json").write_text(json.dumps(summary))
    board = leaderboard.leaderboard(tmp_path, metric="holdout_f1")
    assert [(row["trial"], row["model"], row["version"]) for row in board["rows"]] == [
        ("1", "MORTGAGE_XGB", "v3"), ("0", "MORTGAGE_XGB", "v2")]
    table = leaderboard.format_board(board).splitlines()
    assert "MORTGAGE_XGB v3" in table[1] and "MORTGAGE_XGB v2" in table[2] and "{" not in "\n".join(table)
    leaderboard.write_csv(board, tmp_path / "leaderboard.csv")
    with open(tmp_path / "leaderboard.csv") as handle:
        assert [row["version"] for row in csv.DictReader(handle)] == ["v3", "v2"]


def test_a_grid_trial_past_its_timeout_is_stopped_and_the_others_finish(mlops, home):
    # 20 s: far more than a tiny trial takes on a loaded machine, far less than the slow one's 280 s
    started = time.monotonic()
    result = mlops("run", "-m", "hparams_search=mortgage_grid", "hydra.launcher.n_jobs=2", "hydra.launcher.timeout_s=20",
                   "model.params.max_depth=3", "model.params.learning_rate=0.1,0.3", *TINY,
                   env={**TEST_PLUGIN, "SLOW_TRIAL_ZERO": "280"})
    assert time.monotonic() - started < 240, "the slow trial was not stopped"
    assert result.returncode == 1 and "1 of 2 trials failed" in result.stderr and "Traceback" not in result.stderr
    rows = {r["trial"]: r for r in leaderboard_rows(sweep_dir(home))}
    assert rows["0"]["status"] == "failed" and "timed out after 20 s" in rows["0"]["error"]
    assert rows["1"]["status"] == "ok" and rows["1"]["version"] == "v1"
    assert [v["version_name"] for v in versions(home)] == ["v1"], "the stopped trial registered nothing"


def test_a_dead_grid_worker_fails_its_trial_only(mlops, home):
    result = mlops("run", "-m", "hparams_search=mortgage_grid", "hydra.launcher.n_jobs=2", "model.params.max_depth=3",
                   "model.params.learning_rate=0.05,0.1,0.3", *TINY, env={**TEST_PLUGIN, "CRASH_TRIAL_ONE": "1"})
    assert result.returncode == 1 and "1 of 3 trials failed" in result.stderr
    rows = {r["trial"]: r for r in leaderboard_rows(sweep_dir(home))}
    assert rows["1"]["status"] == "failed" and "worker process died (exit code 9)" in rows["1"]["error"]
    assert rows["0"]["status"] == rows["2"]["status"] == "ok"


def test_one_job_runs_the_trials_in_this_process_one_after_the_other(mlops, home):
    mlops("run", "-m", "hparams_search=mortgage_grid", "hydra.launcher.n_jobs=1", "model.params.max_depth=3,6",
          "model.params.learning_rate=0.3", *TINY, check=True)
    records = [read(t / "trial.json") for t in trials(sweep_dir(home))]
    assert len(records) == 2 and len({r["pid"] for r in records}) == 1
    assert records[0]["start_time"] + records[0]["seconds"] <= records[1]["start_time"]


def test_an_optuna_trial_past_its_timeout_is_told_fail_and_the_study_goes_on(mlops, home):
    mlops("run", "-m", "hparams_search=mortgage_optuna", "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=2",
          "hydra.sweeper.timeout_s=20", *TINY, env={**TEST_PLUGIN, "SLOW_TRIAL_ZERO": "280"}, check=True)
    records = [read(t / "trial.json") for t in trials(sweep_dir(home))]
    assert records[0]["optuna"]["state"] == "FAIL" and "timed out after 20 s" in records[0]["error"]
    assert [r["optuna"]["state"] for r in records[1:]] == ["COMPLETE", "COMPLETE"]


def test_ctrl_c_stops_a_parallel_grid_and_its_workers_at_once(home):
    import signal
    import subprocess
    import sys

    env = {**os.environ, **TEST_PLUGIN, "MLOPS_HOME": str(home), "SLOW_TRIAL_ZERO": "120"}
    process = subprocess.Popen([sys.executable, "-m", "mlops_framework.cli", "run", "-m", "hparams_search=mortgage_grid",
                                "model.params.max_depth=3", "model.params.learning_rate=0.1,0.3", *TINY],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    assert wait_for(lambda: list(home.glob("multiruns/*/0/slow"))), "trial 0 never reached its slow part"
    os.killpg(process.pid, signal.SIGINT)  # as Ctrl-C in a terminal does: the whole foreground group
    stderr = process.communicate(timeout=EVENT_DEADLINE_S)[1]
    assert process.returncode == 130 and "mlops: interrupted" in stderr and "Traceback" not in stderr
    worker = read(next(home.glob("multiruns/*/0/trial.json")))["pid"]

    def gone():
        try:
            return "zombie" in Path(f"/proc/{worker}/status").read_text()
        except FileNotFoundError:
            return True

    assert wait_for(gone, 30), "the worker of the interrupted trial is gone"
    # trials keep their models until the sweep ends; an interrupted sweep registers none, not even trial 1's
    registry = LocalRegistry(home / "registry")
    assert "MORTGAGE_XGB" not in [m["name"] for m in registry.models()]


def test_trials_sharing_their_data_get_the_metrics_of_separate_runs(mlops, home):
    # one process runs the trials one after the other: the second and fourth reuse the data read, encoded and
    # split before them; the third reads its changed data (data.weeks) again
    sizes = [o for o in TINY if not o.startswith("data.weeks=")]
    mlops("run", "-m", "hydra/launcher=mlops_local", "hydra.launcher.n_jobs=1", "pipeline=train", "data.weeks=4,5",
          "model.params.max_depth=3,6", *sizes, check=True)
    runs = trials(sweep_dir(home))
    summaries = [read(t / "summary.json") for t in runs]
    settings = [{o.split("=")[0]: o.split("=")[1] for o in read(t / "trial.json")["overrides"]} for t in runs]
    assert [(s["data.weeks"], s["model.params.max_depth"]) for s in settings] == [("4", "3"), ("4", "6"), ("5", "3"),
                                                                                 ("5", "6")]
    assert ["reused" in s for s in summaries] == [False, True, False, True]
    assert summaries[1]["reused"].endswith("load, features, split")
    for trial, summary in list(zip(runs, summaries))[1:3]:  # reused; read again after a change
        overrides = read(trial / "trial.json")["overrides"]
        mlops("run", *overrides, *sizes, check=True)
        (alone,) = [p for p in (home / "runs").iterdir() if not (p / "checked").exists()]
        (alone / "checked").touch()
        assert read(alone / "evaluation.json") == read(trial / "evaluation.json"), overrides
        assert read(alone / "summary.json")["data"] == summary["data"]
