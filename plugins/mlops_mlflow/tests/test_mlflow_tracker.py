"""``tracker=mlflow`` against a real ``mlflow server`` on 127.0.0.1, read back through MLflow's own client."""

import json
import subprocess
import sys

import pytest

from mlops_framework.cli import main

SMALL = ["data.rows_per_week=200", "data.weeks=3", "model.params.n_estimators=10", "model.params.n_jobs=1"]
CANARY = "CANARY-token-5e1f"


@pytest.fixture
def home(tmp_path, monkeypatch):
    path = tmp_path / "home"
    monkeypatch.setenv("MLOPS_HOME", str(path))
    return path


def client(url):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=url)


def runs_of(url, experiment):
    found = client(url).get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment} at {url}"
    return client(url).search_runs([found.experiment_id], order_by=["attributes.start_time ASC"])


def artifacts(url, run):
    return sorted(item.path for item in client(url).list_artifacts(run.info.run_id))


def test_a_run_logs_params_metrics_artifacts_tags_and_the_version(mlflow_server, home, capsys):
    argv = ["run", "pipeline=train", "tracker=mlflow", f"tracker.mlflow.uri={mlflow_server}",
            "registry.model_name=MLFLOW_ONE", f"+tags.api_token={CANARY}", *SMALL]
    assert main(argv) == 0
    (run,) = runs_of(mlflow_server, "MLFLOW_ONE")
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["model.params.n_estimators"] == "10" and params["data.kind"] == "synthetic"
    assert params["tags.api_token"] == "**redacted**"
    assert not any(CANARY in value for value in params.values())
    evaluation = json.loads((next((home / "runs").iterdir()) / "evaluation.json").read_text())
    assert run.data.metrics["holdout_f1"] == pytest.approx(evaluation["holdout"]["f1"])
    assert "validation_roc_auc" in run.data.metrics and "seconds_train" in run.data.metrics
    tags = run.data.tags
    assert tags["mlops.model_name"] == "MLFLOW_ONE" and tags["mlops.model_version"] == "v1"
    assert tags["mlops.backend"] == "local" and tags["mlops.data_fingerprint"].startswith("sha256:")
    assert "mlops.git_commit" in tags
    assert {"contract.json", "evaluation.json", "resolved_config.yaml", "summary.json"} <= set(artifacts(mlflow_server, run))
    assert "tracker mlflow" not in capsys.readouterr().err


def test_monitor_windows_are_a_metric_history(mlflow_server, home):
    stages = "[load,validate,features,split,train,evaluate,register,score,monitor]"
    argv = ["run", f"pipeline.stages={stages}", "monitor.baseline=holdout", "tracker=mlflow",
            f"tracker.mlflow.uri={mlflow_server}", "registry.model_name=MLFLOW_MONITOR", *SMALL]
    assert main(argv) == 0
    (run,) = runs_of(mlflow_server, "MLFLOW_MONITOR")
    history = client(mlflow_server).get_metric_history(run.info.run_id, "monitor_f1")
    monitored = json.loads((next((home / "runs").iterdir()) / "monitor-1.json").read_text())
    assert [point.step for point in history] == list(range(len(monitored["performance"])))
    assert [point.value for point in history] == pytest.approx([w["f1"] for w in monitored["performance"]])
    assert len(history) >= 2
    assert "monitor-1.json" in artifacts(mlflow_server, run)


def test_a_multirun_is_a_parent_with_one_child_per_trial_in_mlflow_and_locally(mlflow_server, home, capsys):
    argv = ["run", "-m", "model.params.max_depth=2,3", "pipeline=train", "tracker=[local,mlflow]",
            f"tracker.mlflow.uri={mlflow_server}", "registry.model_name=MLFLOW_SWEEP", *SMALL]
    assert main(argv) == 0
    runs = runs_of(mlflow_server, "MLFLOW_SWEEP")
    parents = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    children = [run for run in runs if "mlflow.parentRunId" in run.data.tags]
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    assert {child.data.tags["mlflow.parentRunId"] for child in children} == {parent.info.run_id}
    assert sorted(child.data.params["model.params.max_depth"] for child in children) == ["2", "3"]
    assert sorted(child.data.params["trial"] for child in children) == ["0", "1"]
    assert all(child.info.status == "FINISHED" for child in children)
    assert parent.info.status == "FINISHED" and "best_validation_f1" in parent.data.metrics
    assert "leaderboard.csv" in artifacts(mlflow_server, parent)
    sweep_dir = next((home / "multiruns").iterdir())
    local_parent = json.loads((sweep_dir / "tracking.json").read_text())
    local_children = [json.loads((sweep_dir / str(n) / "tracking.json").read_text()) for n in (0, 1)]
    assert {child["parent_id"] for child in local_children} == {local_parent["run_id"]}
    assert all("validation_f1" in child["metrics"] for child in local_children)


def test_an_unreachable_server_warns_once_and_the_run_goes_on(home, closed_port_url, capsys):
    argv = ["run", "pipeline=train", "tracker=[local,mlflow]", f"tracker.mlflow.uri={closed_port_url}",
            "tracker.mlflow.timeout_s=2", *SMALL]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert err.count("mlops: warning: tracker mlflow") == 1, err
    record = json.loads((next((home / "runs").iterdir()) / "tracking.json").read_text())
    assert record["status"] == "FINISHED" and "holdout_f1" in record["metrics"]


def test_the_default_store_lives_under_the_home(home):
    assert main(["run", "pipeline=train", "tracker=mlflow", *SMALL]) == 0
    uri = f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
    (run,) = runs_of(uri, "MORTGAGE_XGB")
    assert run.data.metrics["holdout_f1"] > 0
    assert (home / "mlflow" / "artifacts").is_dir()
    assert "evaluation.json" in artifacts(uri, run)


def test_plan_says_where_each_tracker_writes_without_secrets(home, capsys):
    argv = ["plan", "tracker=[local,mlflow]", "tracker.mlflow.uri=http://user:hunter2@127.0.0.1:5999", *SMALL]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"tracker local: tracking.json in each run directory under {home.resolve()}/runs" in out
    assert "tracker mlflow: MLflow experiment MORTGAGE_XGB at http://127.0.0.1:5999" in out
    assert "hunter2" not in out


def test_mlops_help_does_not_import_mlflow():
    code = ("import sys; from mlops_framework.cli import main; main(['--help']); "
            "print('LOADED' if any(m == 'mlflow' or m.startswith('mlflow.') for m in sys.modules) else 'CLEAN')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip().endswith("CLEAN"), result.stdout + result.stderr
    assert "tracker" in result.stdout and "mlflow" in result.stdout
