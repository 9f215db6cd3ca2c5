"""The tracker group: the built-in local tracker, several trackers at once, a failing one, sweeps."""

import json
import sys
import textwrap

import pytest

from mlops_framework.cli import main
from mlops_framework.tracking import flatten
from run_sizes import SMALL


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """A tracker plugin loaded through MLOPS_PLUGINS: kind ``recording`` appends every call to calls.jsonl;
    kind ``broken`` raises on every call."""
    calls = tmp_path / "calls.jsonl"
    (tmp_path / "tracker_plugin.py").write_text(textwrap.dedent(f"""
        import json
        from mlops_framework.hookspecs import hookimpl

        def _write(*call):
            with open({str(calls)!r}, "a") as f:
                f.write(json.dumps(call, default=str) + "\\n")

        class Recording:
            def __init__(self, label="rec"):
                self.label = label
            def describe(self):
                return "calls.jsonl"
            def start_run(self, *, name, output_dir=None, parent_id=None, sweep=False):
                _write("start_run", name, parent_id, sweep)
                return "parent-" + name if sweep else "child"
            def log_params(self, params):
                _write("log_params", params)
            def set_tags(self, tags):
                _write("set_tags", tags)
            def log_metrics(self, metrics, *, step=None):
                _write("log_metrics", metrics, step)
            def log_artifact(self, path):
                _write("log_artifact", str(path))
            def end_run(self, status):
                _write("end_run", status)

        class Broken(Recording):
            def start_run(self, **kwargs):
                raise ConnectionError("connection refused by the tracking server")

        @hookimpl
        def register_trackers(register):
            register("recording", Recording)
            register("broken", Broken)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("MLOPS_PLUGINS", "tracker_plugin")
    monkeypatch.delitem(sys.modules, "tracker_plugin", raising=False)  # another test's copy writes elsewhere

    def read():
        return [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []

    return read


def test_the_local_tracker_is_the_default_and_records_the_run(home):
    assert main(["run", "pipeline=train", *SMALL]) == 0
    run_dir = next((home / "runs").iterdir())
    record = json.loads((run_dir / "tracking.json").read_text())
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    assert record["status"] == "FINISHED" and record["parent_id"] is None
    assert record["params"]["model.params.n_estimators"] == "20" and record["params"]["data.weeks"] == "4"
    assert record["metrics"]["holdout_f1"] == [{"step": 0, "value": pytest.approx(evaluation["holdout"]["f1"])}]
    assert "seconds_train" in record["metrics"]
    assert record["tags"]["mlops.model_version"] == "v1" and record["tags"]["mlops.backend"] == "local"
    assert record["tags"]["mlops.data_fingerprint"].startswith("sha256:")
    assert {"evaluation.json", "contract.json", "resolved_config.yaml", "summary.json"} <= set(record["artifacts"])
    assert json.loads((run_dir / "contract.json").read_text())["target"] == "MORTGAGERESPONSE"


def test_a_failed_run_is_recorded_failed(home):
    assert main(["run", "pipeline=train", "features.target=LOAN_TYPE_NAME", *SMALL]) == 2
    record = json.loads((next((home / "runs").iterdir()) / "tracking.json").read_text())
    assert record["status"] == "FAILED" and "holdout_f1" not in record["metrics"]


def test_no_tracker_writes_no_record(home):
    assert main(["run", "pipeline=train", "tracker=[]", *SMALL]) == 0
    assert not (next((home / "runs").iterdir()) / "tracking.json").exists()


def test_several_trackers_see_the_same_run_and_a_broken_one_warns_once(home, plugin, capsys):
    argv = ["run", "pipeline=train", "tracker=[local]", "+tracker.rec={kind: recording}",
            "+tracker.bad={kind: broken}", *SMALL]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert err.count("mlops: warning: tracker bad") == 1, err
    assert "connection refused by the tracking server; the run goes on without it" in err
    calls = plugin()
    assert [call[0] for call in calls[:3]] == ["start_run", "set_tags", "log_params"]
    assert calls[-1] == ["end_run", "FINISHED"]
    logged = {key for call in calls if call[0] == "log_metrics" for key in call[1]}
    local = json.loads((next((home / "runs").iterdir()) / "tracking.json").read_text())
    assert logged == set(local["metrics"])


def test_a_sweep_opens_one_parent_and_its_trials_are_children(home, plugin):
    argv = ["run", "-m", "model.params.max_depth=2,3", "pipeline=train", "tracker=[local]",
            "+tracker.rec={kind: recording}", *SMALL]
    assert main(argv) == 0
    starts = [call for call in plugin() if call[0] == "start_run"]
    parent_name = starts[0][1]
    assert starts[0][3] is True and parent_name.startswith("sweep-")
    assert [(name, parent) for _, name, parent, _ in starts[1:]] == [("trial-0", f"parent-{parent_name}"),
                                                                       ("trial-1", f"parent-{parent_name}")]
    ends = [call for call in plugin() if call[0] == "end_run"]
    assert len(ends) == 3
    sweep_dir = next((home / "multiruns").iterdir())
    parent = json.loads((sweep_dir / "tracking.json").read_text())
    recorded = json.loads((sweep_dir / "sweep.json").read_text())["trackers"]
    assert recorded == {"local": parent["run_id"], "rec": f"parent-{parent_name}"}
    assert "best_validation_f1" in parent["metrics"] and "leaderboard.csv" in parent["artifacts"]
    assert json.loads((sweep_dir / "1" / "tracking.json").read_text())["params"]["trial"] == "1"


def test_plan_says_where_each_tracker_would_write(home, capsys):
    assert main(["plan", *SMALL]) == 0
    assert f"tracker local: tracking.json in each run directory under {home.resolve()}/runs" in capsys.readouterr().out


def test_flatten_gives_dotted_keys_and_json_for_lists():
    assert flatten({"model": {"params": {"max_depth": 6}}, "stages": ["load", "train"], "x": None}) == {
        "model.params.max_depth": "6", "stages": '["load", "train"]', "x": "null"}


def test_a_typo_in_a_tracker_option_is_refused_before_anything_is_written(home, capsys):
    assert main(["run", "pipeline=train", "+tracker.local.hme=x", *SMALL]) == 2
    assert "unknown key tracker.local.hme (did you mean 'home'?)" in capsys.readouterr().err
    assert not list(home.glob("runs/*/resolved_config.yaml")) and not list(home.glob("runs/*/tracking.json"))


def test_trials_on_parallel_workers_find_their_parent_run(mlops, home):
    mlops("run", "-m", "hydra/launcher=mlops_local", "hydra.launcher.n_jobs=2", "model.params.max_depth=2,3",
          "pipeline=train", *SMALL, check=True)
    sweep_dir = next((home / "multiruns").iterdir())
    parent = json.loads((sweep_dir / "tracking.json").read_text())
    trials = [json.loads((sweep_dir / str(n) / "tracking.json").read_text()) for n in (0, 1)]
    assert [(t["parent_id"], t["params"]["trial"], t["status"]) for t in trials] == [
        (parent["run_id"], "0", "FINISHED"), (parent["run_id"], "1", "FINISHED")]
