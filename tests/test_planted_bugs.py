"""Decisions that one-line planted bugs changed without any test noticing: split fractions and
stratification, the decision threshold through the registry, the promotion gate's ``>=`` boundaries."""

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

    sql = mon.rule_condition(rule, "M_V1_MONITOR", columns=["INCOME"])
    assert "WHERE ABS(METRIC_VALUE) > 0.2" in sql


def test_following_an_alias_never_suspends_the_new_versions_monitor():
    pytest.importorskip("mlops_snowflake", reason="the Snowflake plugin is not installed")
    from mlops_snowflake import monitor as mon

    settings = mon.MonitorSettings(source="DB.SCH.PREDICTIONS", warehouse="WH", baseline="DB.SCH.BASELINE")
    statements = mon.follow_alias_sql("M", "v2", ["v1", "v2", None], settings)
    suspended = [s for s in statements if s.endswith(" SUSPEND")]
    assert suspended == ["ALTER MODEL MONITOR IF EXISTS M_V1_MONITOR SUSPEND"]
