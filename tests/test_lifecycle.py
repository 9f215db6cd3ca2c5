"""Retrain, explain, the promotion gate, the promotion history and rollback, the report, and the whole
``experiment=mortgage_lifecycle`` story end to end."""

import json
import re
import subprocess
import sys
import uuid

import duckdb
import numpy as np
import pytest

from mlops_framework import config
from mlops_framework.alerts import Alert
from mlops_framework.errors import MlopsError
from mlops_framework.lifecycle import gate
from mlops_framework.lineage import config_hash
from mlops_framework.pipeline import PromotionSpec, build_run
from mlops_framework.plugins import Components, get_plugin_manager
from mlops_local.registry import LocalRegistry

SMALL = ["data.weeks=3", "data.rows_per_week=400", "model.params.n_estimators=30", "model.params.n_jobs=1"]
TRAIN_AND_PROMOTE = "pipeline.stages=[load,validate,features,split,train,evaluate,register,explain,promote]"


class _Saved:
    def save(self, directory):
        (directory / "model.txt").write_text("x")


@pytest.fixture
def registry(tmp_path):
    reg = LocalRegistry(tmp_path / "registry")
    for _ in range(4):
        reg.log_model(_Saved(), model_name="M")
    return reg


def test_rollback_walks_back_through_the_alias_history(registry):
    with pytest.raises(MlopsError, match="no earlier version to roll back to"):
        registry.rollback("M", "PRODUCTION")
    registry.set_alias("M", "v1", "PRODUCTION")
    with pytest.raises(MlopsError, match="holds v1 and has no earlier version"):
        registry.rollback("M", "production")
    registry.set_alias("M", "v2", "PRODUCTION")
    registry.record_refusal("M", "v4", "PRODUCTION", reason="worse", metrics={"candidate_f1": 0.5})
    registry.set_alias("M", "v3", "PRODUCTION", config_hash="sha256:abc")
    entry = registry.rollback("M", "PRODUCTION", actor="oncall")
    assert registry.aliases("M") == {"PRODUCTION": "v2"}
    assert (entry["event"], entry["old_version"], entry["new_version"], entry["actor"]) == ("rollback", "v3", "v2", "oncall")
    registry.rollback("M", "PRODUCTION")
    assert registry.aliases("M") == {"PRODUCTION": "v1"}  # the refused v4 was never a holder
    registry.set_alias("M", "v4", "PRODUCTION")
    registry.rollback("M", "PRODUCTION")
    assert registry.aliases("M") == {"PRODUCTION": "v1"}
    events = [(h["event"], h["old_version"], h["new_version"]) for h in registry.history("M")]
    assert events == [("set", None, "v1"), ("set", "v1", "v2"), ("refused", "v2", "v4"), ("set", "v2", "v3"),
                      ("rollback", "v3", "v2"), ("rollback", "v2", "v1"), ("set", "v1", "v4"), ("rollback", "v4", "v1")]
    refused = registry.history("M")[2]
    assert refused["reason"] == "worse" and refused["metrics"] == {"candidate_f1": 0.5}
    assert registry.history("M")[3]["config_hash"] == "sha256:abc"


def test_rollback_refuses_a_deleted_previous_version(registry):
    registry.set_alias("M", "v1", "STAGING")
    registry.set_alias("M", "v2", "STAGING")
    registry.delete_version("M", "v1")
    with pytest.raises(MlopsError, match="no version 'v1'"):
        registry.rollback("M", "STAGING")
    assert registry.aliases("M") == {"STAGING": "v2"}


def _comparison(candidate_f1, champion_f1):
    champion = None if champion_f1 is None else {"f1": champion_f1}
    return {"holdout_rows": 100, "candidate": {"f1": candidate_f1}, "champion": champion}


def test_gate():
    spec = PromotionSpec(min_improvement=0.01)
    assert gate(spec, _comparison(0.80, 0.78)) == (True, "gate passed: f1 0.8000 vs champion's 0.7800 + 0.01 on 100 holdout rows")
    passed, reason = gate(spec, _comparison(0.785, 0.78))
    assert not passed and reason.startswith("refused: f1 0.7850 < champion's 0.7800 + 0.01")
    assert gate(spec, _comparison(0.3, None))[0]  # nothing holds the alias yet
    assert not gate(PromotionSpec(promote_first=False), _comparison(0.9, None))[0]
    assert not gate(PromotionSpec(min_value=0.7), _comparison(0.65, 0.5))[0]
    drift = Alert(rule="psi_high", metric="psi", op=">", threshold=0.2, value=0.3, window_start=None, window_end=None)
    assert gate(PromotionSpec(), _comparison(0.9, 0.5), [drift])[0]
    passed, reason = gate(PromotionSpec(block_on_drift_alert=True), _comparison(0.9, 0.5), [drift])
    assert not passed and "drift alert(s) on the champion's recent windows or in this run: psi_high" in reason
    with pytest.raises(MlopsError, match="promotion.metric"):
        PromotionSpec(metric="mse")


def test_config_hash_is_stable_and_order_independent():
    assert config_hash({"a": 1, "b": {"c": [1, 2]}}) == config_hash({"b": {"c": [1, 2]}, "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def run_pipeline(home, *overrides, small=SMALL):
    components = Components(get_plugin_manager(load_entrypoints=False))
    cfg = config.compose([*small, *overrides], components)
    config.check(cfg, components)
    output_dir = home / "runs" / uuid.uuid4().hex[:8]
    run = build_run(config.resolved(cfg), components, output_dir=output_dir)
    output_dir.mkdir(parents=True)
    run.backend.execute(run)
    return run


def test_gate_refuses_a_worse_challenger_then_promotes_a_better_one(home):
    first = run_pipeline(home, TRAIN_AND_PROMOTE)
    registry = first.registry
    assert registry.aliases("MORTGAGE_XGB") == {"PRODUCTION": "v1"}

    # SHAP: the contributions of each row add up to the model's margin, i.e. to its score
    explained = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True).sql(
        "SELECT * FROM EXPLANATIONS").df()
    assert len(explained) == first.results["explanation"]["rows"] > 0
    contrib = explained.filter(like="CONTRIB_").sum(axis=1) + explained.BIAS
    model = first.results["model"]
    X = first.results["splits"]["holdout"][0].iloc[: len(explained)]
    assert np.allclose(1 / (1 + np.exp(-contrib)), model.predict_scores(X), atol=1e-5)
    assert np.allclose(explained.SCORE, model.predict_scores(X), atol=1e-5)
    assert set(first.results["explanation"]["global"]) == {
        "APPLICANT_INCOME_000S", "LOAN_AMOUNT_000S", "LOAN_TYPE_NAME", "LOAN_PURPOSE_NAME", "COUNTY_NAME"}
    assert (first.output_dir / "explanations.parquet").is_file()

    worse = run_pipeline(home, TRAIN_AND_PROMOTE, "model.params.max_depth=1", "model.params.n_estimators=1",
                         "model.params.learning_rate=0.01", "data.seed=5")
    assert registry.aliases("MORTGAGE_XGB") == {"PRODUCTION": "v1"}
    decision = worse.results["promotions"][-1]
    assert decision["promoted"] is False and decision["champion"] == "v1" and decision["candidate"] == "v2"
    comparison = decision["comparison"]
    assert comparison["candidate"]["f1"] < comparison["champion"]["f1"]
    refused = registry.history("MORTGAGE_XGB")[-1]
    assert refused["event"] == "refused" and (refused["old_version"], refused["new_version"]) == ("v1", "v2")
    assert refused["metrics"]["candidate_f1"] == comparison["candidate"]["f1"]
    assert refused["metrics"]["champion_f1"] == comparison["champion"]["f1"]
    assert refused["config_hash"] == config_hash(worse.config) and refused["reason"].startswith("refused: f1")

    # the champion was scored on the challenger's own holdout (data.seed=5), not on its training data
    assert comparison["holdout_rows"] == len(worse.results["splits"]["holdout"][1])

    better = run_pipeline(home, TRAIN_AND_PROMOTE, "model.params.n_estimators=60", "promotion.min_improvement=-1")
    assert registry.aliases("MORTGAGE_XGB") == {"PRODUCTION": "v3"}
    assert better.results["promotions"][-1]["promoted"] is True
    registry.rollback("MORTGAGE_XGB", "PRODUCTION")
    assert registry.aliases("MORTGAGE_XGB") == {"PRODUCTION": "v1"}


def test_paired_bootstrap_is_generic_over_the_metric_and_its_direction():
    from mlops_framework.lifecycle import paired_bootstrap

    rng = np.random.default_rng(0)
    truth = rng.normal(size=400)
    champion = (truth + rng.normal(scale=1.0, size=400),)
    close = (champion[0] + rng.normal(scale=0.05, size=400),)
    better = (truth + rng.normal(scale=0.3, size=400),)

    def mae(y, predicted):
        return float(np.abs(y - predicted).mean())

    noise = paired_bootstrap(mae, truth, champion, close, higher_is_better=False, resamples=300)
    assert noise["lower"] < 0 < noise["upper"] and noise["rows"] == 400 and noise["test"] == "paired bootstrap"
    clear = paired_bootstrap(mae, truth, champion, better, higher_is_better=False, resamples=300)
    assert 0 < clear["lower"] < clear["improvement"] < clear["upper"]
    assert clear["improvement"] == pytest.approx(mae(truth, champion[0]) - mae(truth, better[0]))


def test_gate_refuses_a_challenger_within_noise_and_promotes_a_clearly_better_one(home):
    """The same holdout rows for both; a point gain that the bootstrap interval does not separate from
    zero is refused, a clear one promoted; both record the test and interval in the history."""
    weak = run_pipeline(home, TRAIN_AND_PROMOTE, "model.params.max_depth=1", "model.params.n_estimators=2")
    registry = weak.registry
    assert registry.aliases("MORTGAGE_XGB") == {"PRODUCTION": "v1"}
    strong = run_pipeline(home, TRAIN_AND_PROMOTE)
    decision = strong.results["promotions"][-1]
    assert decision["promoted"] is True and registry.aliases("MORTGAGE_XGB") == {"PRODUCTION": "v2"}
    test = decision["comparison"]["test"]
    assert test["test"] == "paired bootstrap" and test["lower"] > 0 and test["rows"] == 240
    assert "95% paired bootstrap interval" in decision["reason"]
    noisy = run_pipeline(home, TRAIN_AND_PROMOTE, "model.params.max_depth=4")
    decision = noisy.results["promotions"][-1]
    comparison = decision["comparison"]
    assert comparison["candidate"]["f1"] > comparison["champion"]["f1"]  # a point gain: the old gate promoted
    assert decision["promoted"] is False and registry.aliases("MORTGAGE_XGB") == {"PRODUCTION": "v2"}
    assert comparison["test"]["lower"] <= 0 < comparison["test"]["upper"]
    assert "lower bound not above min_improvement 0.0" in decision["reason"]
    passed, refused = registry.history("MORTGAGE_XGB")[-2:]
    assert passed["event"] == "set" and passed["metrics"]["test_lower"] == test["lower"]
    assert refused["event"] == "refused" and refused["metrics"]["test_rows"] == 240
    assert refused["metrics"]["test_upper"] == comparison["test"]["upper"]


def test_labels_later_join_by_id_performance_per_window_matches_pandas(home, tmp_path):
    """Score a file without labels into the default table, then monitor with the labels file: performance
    for the weeks whose labels landed (checked against scikit-learn on a pandas join), drift for all."""
    from sklearn import metrics as skm

    from mlops_local.synthetic import generate_table

    run_pipeline(home, "pipeline=train")
    rows = generate_table(weeks=3, rows_per_week=400, seed=9).to_pandas()
    unlabeled = tmp_path / "new_weeks.csv"
    rows.drop(columns="MORTGAGERESPONSE").to_csv(unlabeled, index=False)
    scored = run_pipeline(home, "pipeline=score", "data=csv", f"data.path={unlabeled}", small=[])
    assert scored.results["scored"]["rows"] == 1200
    labels = tmp_path / "labels.csv"
    rows[rows.WEEK <= 2][["LOAN_ID", "MORTGAGERESPONSE"]].to_csv(labels, index=False)
    monitored = run_pipeline(home, "pipeline=monitor", f"monitor.actuals={{kind: csv, path: {labels}}}",
                             "monitor.baseline='WEEK <= 1'", small=[])
    result = monitored.results["monitor"]
    assert result["waiting_for_labels"] == 400 and "400 predictions still wait for labels" in monitored.results["summary"]["labels"]
    predictions = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True).sql(
        "SELECT * FROM PREDICTIONS_WITH_GROUND_TRUTH").df()
    assert predictions.MORTGAGERESPONSE.isna().all() and set(predictions.MODEL_VERSION) == {"v1"}
    assert set(predictions.MODEL_NAME) == {"MORTGAGE_XGB"} and predictions.RUN_ID.notna().all()
    joined = predictions.drop(columns="MORTGAGERESPONSE").merge(rows[["LOAN_ID", "MORTGAGERESPONSE"]], on="LOAN_ID")
    performance = {p["window_start"].date(): p for p in result["performance"]}
    assert len(performance) == 3
    for week, p in zip((1, 2, 3), sorted(performance.values(), key=lambda p: p["window_start"])):
        truth = joined[joined.WEEK == week]
        if week == 3:
            assert p["f1"] is None and p["labeled_rows"] == 0 and p["waiting_rows"] == 400
            continue
        assert p["labeled_rows"] == 400
        assert p["f1"] == pytest.approx(skm.f1_score(truth.MORTGAGERESPONSE, truth.PREDICTED_RESPONSE, average="macro"))
        assert p["roc_auc"] == pytest.approx(skm.roc_auc_score(truth.MORTGAGERESPONSE, truth.PREDICTED_SCORE), abs=1e-3)
    assert {d["window_start"].date() for d in result["drift"]} == set(performance)  # drift for every window


def test_lifecycle_second_monitor_keeps_the_first_baseline(home):
    """baseline=holdout is fixed per version: after a refused challenger the second monitor of v1 uses
    v1's recorded baseline (not the challenger's holdout) and fires no alert from a switch."""
    run = run_pipeline(home, "experiment=mortgage_lifecycle", "data.weeks=12", "data.rows_per_week=150",
                       "monitor.baseline=holdout", "promotion.min_improvement=1")
    assert run.registry.aliases("MORTGAGE_LIFECYCLE") == {"PRODUCTION": "v1"}
    first, second = run.results["monitor_runs"]
    assert first["baselines"] == second["baselines"] and set(first["baselines"]) == {"v1"}
    assert first["baselines"]["v1"]["rows"] == 150  # v1's own holdout (20% of weeks 1-5), not v2's (120 rows)
    assert second["alerts"] == [] and len(second["performance"]) == 12  # re-scored: recomputed, same values
    drift = {(d["window_start"], d["column"]): d["psi"] for d in first["drift"]}
    assert all(drift[(d["window_start"], d["column"])] == pytest.approx(d["psi"]) for d in second["drift"])


def test_readme_commands_in_sequence_twice_on_one_home(home):
    """The README's commands, in order, twice on the same home (small data): none fails on its own or
    another's earlier output."""
    small = ["data.weeks=12", "data.rows_per_week=120"]
    commands = [[], ["pipeline=monitor"], ["experiment=mortgage_lifecycle"], ["experiment=mortgage_xgb"],
                ["pipeline=retrain"], ["pipeline=score", "scoring.version=PRODUCTION"], ["pipeline=monitor"]]
    for round_ in (1, 2):
        for command in commands:
            run = run_pipeline(home, *command, *small)
            assert run.results, (round_, command)
    again = run_pipeline(home, "pipeline=monitor", *small)
    assert again.results["monitor"]["windows_unchanged"] == 12 and again.results["alerts"] == []
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        versions = con.sql("SELECT DISTINCT MODEL_VERSION FROM PREDICTIONS_WITH_GROUND_TRUTH").fetchall()
        assert len(versions) == 1 and versions[0][0].startswith("v")


def test_block_on_drift_alert_reads_the_champions_recorded_alerts(home):
    """Drift alerts recorded by earlier monitor runs for the champion's latest windows block the gate;
    older windows and other versions do not."""
    import datetime as dt

    from mlops_framework.lifecycle import drift_alerts
    from mlops_framework.monitoring import write_table

    components = Components(get_plugin_manager(load_entrypoints=False))
    cfg = config.compose(["promotion.block_on_drift_alert=true", "promotion.drift_windows=2"], components)
    run = build_run(config.resolved(cfg), components)
    weeks = [dt.datetime(2024, 1, 1) + dt.timedelta(days=7 * k) for k in range(4)]
    stamp = {"MONITOR_ID": "m-1", "RUN_ID": "m", "MONITORED_AT": dt.datetime(2024, 2, 1), "MODEL_NAME": "MORTGAGE_XGB"}
    write_table(run.monitor.sinks["performance"], "performance",
                [{**stamp, "MODEL_VERSION": "v1", "WINDOW": "7 days", "WINDOW_START": w, "ROWS": 10} for w in weeks])
    alert = {**stamp, "RULE": "feature_psi_high", "METRIC": "psi", "OP": ">", "THRESHOLD": 0.2, "VALUE": 0.5,
             "COLUMN_NAME": "COUNTY_NAME"}
    write_table(run.monitor.sinks["alerts"], "alerts",
                [{**alert, "MODEL_VERSION": "v1", "WINDOW_START": weeks[0]},   # too old to count
                 {**alert, "MODEL_VERSION": "v2", "WINDOW_START": weeks[3]}])  # another version
    assert drift_alerts(run, run.promotion, "v1") == []
    write_table(run.monitor.sinks["alerts"], "alerts", [{**alert, "MONITOR_ID": "m-2", "MODEL_VERSION": "v1",
                                                         "WINDOW_START": weeks[2]}])
    recorded = drift_alerts(run, run.promotion, "v1")
    assert [(a.rule, a.model_version, a.window_start) for a in recorded] == [("feature_psi_high", "v1", weeks[2])]
    passed, reason = gate(run.promotion, _comparison(0.9, 0.5), recorded)
    assert not passed and "feature_psi_high (v1)" in reason


def test_retrain_pipeline_trains_on_the_retrain_source(home):
    run_pipeline(home, TRAIN_AND_PROMOTE, "data.where='WEEK <= 2'")
    run = run_pipeline(home, "pipeline=retrain", "+retrain.source={kind: synthetic, weeks: 3, rows_per_week: 400, "
                       "drift_from_week: 3, where: 'WEEK = 3'}", "retrain.explain_rows=50")
    assert run.results["retrained"]["rows"] == 400 and "drift from week 3" in run.results["retrained"]["source"]
    assert run.results["version"]["version_name"] == "v2"
    assert run.results["version"]["lineage"]["data_fingerprint"] == run.results["data_fingerprint"]
    assert run.results["explanation"]["rows"] == 50
    decision = run.results["promotions"][-1]
    assert decision["champion"] == "v1" and decision["comparison"]["holdout_rows"] == 80
    assert (run.output_dir / "report.html").is_file() and (run.output_dir / "retrain_evaluation.json").is_file()


def test_monitor_against_the_training_holdout(home):
    run = run_pipeline(home, "pipeline.stages=[load,validate,features,split,train,evaluate,register,score,monitor]",
                       "monitor.baseline=holdout", "alerts.rules.f1_low=null")
    result = run.results["monitor"]
    assert result["baseline_rows"] == len(run.results["splits"]["holdout"][1]) == 240
    assert len(result["performance"]) == 3 and result["model_version"] == "v1"
    features = [d for d in result["drift"] if d["role"] == "feature"]
    assert len(features) == 3 * 5 and max(d["psi"] for d in features) < 0.2  # no drift in these weeks
    assert run.results["alerts"] == []


def test_plan_of_the_lifecycle_touches_nothing_and_imports_no_monitoring(home):
    code = ("import contextlib, io, json, sys\n"
            "from mlops_framework import cli\n"
            "out = io.StringIO()\n"
            "with contextlib.redirect_stdout(out):\n"
            "    code = cli.main(['plan', 'experiment=mortgage_lifecycle'])\n"
            "print(json.dumps({'code': code, 'out': out.getvalue(), 'modules': sorted(sys.modules)}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    done = json.loads(result.stdout.splitlines()[-1])
    assert done["code"] == 0
    assert "10. monitor: performance and drift of DuckDB table LIFECYCLE_PREDICTIONS" in done["out"]
    assert "14. promote: move PRODUCTION" in done["out"] and "17. report:" in done["out"]
    imported = set(done["modules"])
    for module in ("mlops_framework.monitoring", "mlops_framework.report", "xgboost", "sklearn", "scipy"):
        assert module not in imported
    assert "mlops_local.notifiers" in imported  # the notifiers were built (lazily, cheaply)
    assert not home.exists()


def test_mortgage_lifecycle_experiment_end_to_end(mlops, home):
    """train v1 -> PRODUCTION -> score -> monitor (alerts) -> retrain v2 -> promote -> score -> report."""
    result = mlops("run", "experiment=mortgage_lifecycle", check=True)  # as documented, 24,000 rows
    assert "ALERT f1_low: f1 = " in result.stdout
    shown = json.loads(mlops("registry", "show", "MORTGAGE_LIFECYCLE", "PRODUCTION", "--json", check=True).stdout)
    assert shown["version_name"] == "v2"
    history = json.loads(mlops("registry", "history", "MORTGAGE_LIFECYCLE", "--json", check=True).stdout)
    assert [(h["event"], h["old_version"], h["new_version"]) for h in history] == [("set", None, "v1"), ("set", "v1", "v2")]
    assert history[1]["metrics"]["candidate_f1"] > history[1]["metrics"]["champion_f1"] + 0.01
    assert history[0]["config_hash"].startswith("sha256:") and history[0]["config_hash"] == history[1]["config_hash"]

    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        perf = con.sql("SELECT MODEL_VERSION, WEEK(WINDOW_START) AS w, F1 FROM MONITOR_PERFORMANCE "
                       "ORDER BY MONITORED_AT, WINDOW_START").fetchall()
        alerts = con.sql("SELECT RULE, MODEL_VERSION, WINDOW_START FROM MONITOR_ALERTS").fetchall()
        scored = con.sql("SELECT count(*) FROM LIFECYCLE_PREDICTIONS").fetchall()[0][0]
    v1 = {w: f1 for version, w, f1 in perf if version == "v1"}
    v2 = {w: f1 for version, w, f1 in perf if version == "v2"}
    assert len(v1) == len(v2) == 16 and scored == 16 * 1500
    assert min(v1[w] for w in range(1, 9)) > 0.7 > max(v1[w] for w in range(9, 17))  # drift from week 9
    assert v2[16] > 0.7 > v1[16]
    assert ("f1_low", "v1") in {(rule, version) for rule, version, _ in alerts}
    # every new window is checked: v2 (trained on the drifted weeks 9-12) is only poor on the old weeks
    assert {start.isocalendar().week for rule, version, start in alerts if (rule, version) == ("f1_low", "v2")} <= set(range(1, 9))
    assert any(rule == "feature_psi_high" for rule, _, _ in alerts)
    assert len((home / "alerts.jsonl").read_text().splitlines()) == len(alerts)

    run_dir = next((home / "runs").iterdir())
    report = (run_dir / "report.html").read_text()
    assert "f1_low" in report and "feature_psi_high" in report and "APPLICANT_INCOME_000S" in report
    assert "PRODUCTION &rarr; v2" in report and "Confusion matrices" in report and "mean |SHAP" in report
    markup = re.sub(r"<script\b.*?</script>", "", report, flags=re.S)
    assert markup.count('class="plotly-graph-div"') > 20 and "<svg" not in markup  # charts from the library
    # self-contained: plotly.js inlined once; no script, stylesheet, image or frame fetched from anywhere
    tags = re.findall(r"<(?:script|link|img|iframe)\b[^>]*>", report)
    assert not [tag for tag in tags if re.search(r"\b(?:src|href)=", tag)], tags
    assert report.count("* plotly.js v") == 1  # the library's bundle, inline, once for all charts
