"""Decisions that one-line planted bugs changed without any test noticing: split fractions and
stratification, the decision threshold through training, the registry and scoring, the promotion gate's
``>=`` boundaries, validation metrics taken from the validation split, re-scoring a NULL partition key,
the value the Optuna sweeper tells its study, and the Snowflake monitor's ABS() and SUSPEND statements.
Each test was checked to fail with its bug planted by hand."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from mlops_framework.lifecycle import gate
from mlops_framework.pipeline import PromotionSpec, SplitSpec
from mlops_framework.stages import split


def _split(spec, rows=1000, positive_share=0.3):
    y = pd.Series((np.arange(rows) % 10 < positive_share * 10).astype(int))
    X = pd.DataFrame({"A": np.arange(rows, dtype=float)})
    run = SimpleNamespace(results={"X": X, "y": y, "contract": SimpleNamespace(task="binary")}, split=spec,
                          summarize=lambda key, line: None, shared=None)
    split(run)
    return run.results["splits"]


def test_split_fractions_are_the_configured_ones():
    splits = _split(SplitSpec(holdout=0.2, validation=0.25))
    assert {name: len(part[1]) for name, part in splits.items()} == {"train": 600, "validation": 200, "holdout": 200}
    rows = [set(part[0]["A"]) for part in splits.values()]
    assert not (rows[0] & rows[1] or rows[0] & rows[2] or rows[1] & rows[2]), "splits overlap"


def test_splits_are_stratified():
    for name, (_, y) in _split(SplitSpec(stratify=True)).items():
        assert y.mean() == pytest.approx(0.3, abs=0.005), name


def test_threshold_survives_the_registry(tmp_path):
    import xgboost

    from mlops_framework.features import FeatureContract
    from mlops_framework.model import TrainedModel
    from mlops_local.registry import LocalRegistry

    frame = pd.DataFrame({"X1": np.arange(40, dtype=float), "C": ["a", "b"] * 20, "T": [0, 1] * 20})
    contract = FeatureContract.fit(frame, numeric=["X1"], categorical=["C"], target="T")
    estimator = xgboost.XGBClassifier(n_estimators=2, max_depth=2, n_jobs=1)
    estimator.fit(contract.encode_frame(frame), contract.encode_target(frame["T"]))
    registry = LocalRegistry(tmp_path / "registry")
    registry.log_model(TrainedModel(estimator, contract, threshold=0.3), model_name="M")
    assert registry.load_model("M", "v1").threshold == 0.3


def _comparison(candidate, champion):
    return {"holdout_rows": 10, "candidate": {"f1": candidate},
            "champion": None if champion is None else {"f1": champion}}


def test_gate_boundaries_are_inclusive():
    """``>=`` as documented: exactly champion + min_improvement passes, and exactly min_value passes."""
    spec = PromotionSpec(min_improvement=0.25)
    assert gate(spec, _comparison(0.75, 0.5))[0]
    assert not gate(spec, _comparison(0.75 - 2 ** -20, 0.5))[0]
    floor = PromotionSpec(min_value=0.5)
    assert gate(floor, _comparison(0.5, None))[0]
    assert not gate(floor, _comparison(0.5 - 2 ** -20, None))[0]
    assert gate(PromotionSpec(), _comparison(0.5, 0.5))[0]


def test_snowflake_drift_alerts_on_absolute_values_keep_abs():
    from mlops_framework.alerts import build_rules

    rule = build_rules({"mean_shift": {"metric": "difference_of_means", "op": ">", "threshold": 0.2,
                                       "absolute": True}})[0]
    pytest.importorskip("mlops_snowflake", reason="the Snowflake plugin is not installed")
    from mlops_snowflake import monitor as mon

    sql = mon.rule_condition(rule, "M_V1_MONITOR", columns=["INCOME"], window="7 DAY")
    assert "WHERE ABS(METRIC_VALUE) > 0.2" in sql


def test_following_an_alias_never_suspends_the_new_versions_monitor():
    pytest.importorskip("mlops_snowflake", reason="the Snowflake plugin is not installed")
    from mlops_snowflake import monitor as mon

    settings = mon.MonitorSettings(source="DB.SCH.PREDICTIONS", warehouse="WH", baseline="DB.SCH.BASELINE")
    statements = mon.follow_alias_sql("M", "v2", ["v1", "v2", None], settings)
    suspended = [s for s in statements if s.endswith(" SUSPEND")]
    assert suspended == ["ALTER MODEL MONITOR IF EXISTS M_V1_MONITOR SUSPEND"]


def _tiny_model(threshold=0.5):
    import xgboost

    from mlops_framework.features import FeatureContract
    from mlops_framework.model import TrainedModel

    frame = pd.DataFrame({"X1": np.arange(40, dtype=float), "T": (np.arange(40) >= 20).astype(int)})
    contract = FeatureContract.fit(frame, numeric=["X1"], categorical=[], target="T")
    estimator = xgboost.XGBClassifier(n_estimators=5, max_depth=2, n_jobs=1)
    estimator.fit(contract.encode_frame(frame), contract.encode_target(frame["T"]))
    return TrainedModel(estimator, contract, threshold=threshold)


def test_validation_metrics_are_computed_on_the_validation_split():
    """The leaderboard ranks on validation_*: those must not be the holdout's numbers."""
    from mlops_framework.stages import evaluate

    model = _tiny_model()
    X = pd.DataFrame({"X1": np.arange(40, dtype=float)})
    right = pd.Series((X["X1"] >= 20).astype(int))
    splits = {"validation": (X, right), "holdout": (X, 1 - right)}  # the model gets every holdout row wrong
    run = SimpleNamespace(results={"model": model, "splits": splits}, output_dir=None)
    evaluate(run)
    assert run.results["metrics"]["validation_accuracy"] == 1.0
    assert run.results["metrics"]["holdout_accuracy"] == 0.0


def test_rescoring_a_partition_whose_key_is_null_replaces_it(tmp_path):
    """Rows scored with a NULL partition key, scored again: one copy, the new one (NULL = NULL is not true
    in SQL; the sink must match keys with IS NOT DISTINCT FROM)."""
    import duckdb
    import pyarrow as pa

    from mlops_local.sinks import DuckDBSink

    sink = DuckDBSink(tmp_path / "w.duckdb", table="P", partition_by=["WEEK"])
    for score in (0.1, 0.2):
        with sink.open() as writer:
            writer.write(pa.table({"WEEK": pa.array([1, None, None], pa.int64()), "PREDICTED_SCORE": [score] * 3}))
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        rows = con.execute("SELECT WEEK, PREDICTED_SCORE FROM P ORDER BY WEEK NULLS LAST").fetchall()
    assert rows == [(1, 0.2), (None, 0.2), (None, 0.2)]


def test_the_optuna_sweeper_tells_the_study_the_metric_itself(mlops, home):
    """Each trial's value in the Optuna study is the trial's own validation_f1 (not its negation, which
    would search for the worst parameters), and the study's best trial is the leaderboard's best."""
    import optuna

    from mlops_framework.sweep_record import trial_metrics

    result = mlops("run", "-m", "hparams_search=mortgage_optuna", "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=1",
                   "data.weeks=2", "data.rows_per_week=200", "model.params.n_estimators=5")
    assert result.returncode == 0, result.stderr[-3000:]
    (journal,) = home.glob("multiruns/*/optuna.journal")
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    study = optuna.load_study(study_name="mortgage_xgb", storage=storage)
    told = {t.number: t.value for t in study.trials}
    recorded = {number: trial_metrics(journal.parent / str(number))["validation_f1"] for number in told}
    assert told == pytest.approx(recorded) and len(told) == 2
    assert study.best_trial.value == max(recorded.values())


def test_a_non_default_threshold_reaches_the_registry_and_the_scores(mlops, home):
    """`model.threshold=0.8` trains, registers and (the score stage loads the model from the registry)
    labels by 0.8."""
    import duckdb

    from mlops_local.registry import LocalRegistry

    from run_sizes import SMALL

    mlops("run", *SMALL, "model.threshold=0.8", check=True)
    assert LocalRegistry(home / "registry").load_model("MORTGAGE_XGB", "v1").threshold == 0.8
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        labels = con.execute("SELECT count(*), count_if(PREDICTED_RESPONSE = (PREDICTED_SCORE >= 0.8)::INT), "
                             "count_if(PREDICTED_SCORE BETWEEN 0.5 AND 0.8) FROM PREDICTIONS_WITH_GROUND_TRUTH").fetchone()
    rows, labelled_by_threshold, in_between = labels
    assert rows == labelled_by_threshold and in_between > 0  # rows 0.5 <= score < 0.8 are told 0
