"""Monitoring metrics against reference implementations, windows, the monitor stage and its tables."""

import datetime as dt
import math

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import wasserstein_distance
from sklearn import metrics as skm

from mlops_framework import monitoring as mon
from mlops_framework.errors import MlopsError
from mlops_framework.sinks import DuckDBSink
from mlops_framework.sources import DuckDBTableSource


@pytest.fixture(scope="module")
def labels():
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 500)
    scores = np.clip(0.35 * y + rng.random(500) * 0.7, 0, 1).round(2)  # rounded: many ties
    return y, scores, (scores >= 0.5).astype(int)


@pytest.mark.parametrize("average", ["macro", "binary"])
def test_classification_metrics_match_scikit_learn(labels, average):
    y, scores, predicted = labels
    got = mon.classification_summary(y, predicted, scores, average=average)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, predicted), abs=1e-12)
    assert got["precision"] == pytest.approx(skm.precision_score(y, predicted, average=average), abs=1e-12)
    assert got["recall"] == pytest.approx(skm.recall_score(y, predicted, average=average), abs=1e-12)
    assert got["f1"] == pytest.approx(skm.f1_score(y, predicted, average=average), abs=1e-12)
    assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(y, scores), abs=1e-12)
    tn, fp, fn, tp = skm.confusion_matrix(y, predicted, labels=[0, 1]).ravel()
    assert (got["tn"], got["fp"], got["fn"], got["tp"], got["rows"]) == (tn, fp, fn, tp, 500)


def test_degenerate_windows_follow_zero_division_zero():
    got = mon.classification_summary([1, 1, 1], [0, 0, 0], [0.1, 0.2, 0.3], average="binary")
    assert got["precision"] == skm.precision_score([1, 1, 1], [0, 0, 0], zero_division=0) == 0.0
    assert got["roc_auc"] is None  # one class only
    with pytest.raises(MlopsError, match="macro or binary"):
        mon.classification_summary([1], [1], average="weighted")


def test_psi_matches_hand_computed_values():
    # (0.5-0.25) ln(0.5/0.25) + 0 + (0.25-0.5) ln(0.25/0.5) = 0.5 ln 2
    assert mon.psi([0.25, 0.25, 0.5], [0.5, 0.25, 0.25]) == pytest.approx(0.5 * math.log(2), abs=1e-12)
    assert mon.psi([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == 0.0
    # an empty baseline bin is floored at 1e-4, not renormalised
    expected = (0.25 - 0.5) * math.log(0.25 / 0.5) + (0.25 - 1e-4) * math.log(0.25 / 1e-4)
    assert mon.psi([0.5, 0.5, 0.0], [0.5, 0.25, 0.25]) == pytest.approx(expected, abs=1e-12)


def test_hellinger_matches_hand_computed_values():
    expected = math.sqrt(1 - (math.sqrt(0.5 * 0.25) + math.sqrt(0.5 * 0.75)))
    assert mon.hellinger([0.5, 0.5], [0.25, 0.75]) == pytest.approx(expected, abs=1e-12)
    assert mon.hellinger([1, 0], [0, 1]) == 1.0
    assert mon.hellinger([0.3, 0.7], [0.3, 0.7]) == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("p,q", [([0.1, 0.4, 0.5], [0.3, 0.3, 0.4]), ([0.5, 0.5, 0.0], [0.0, 0.2, 0.8]),
                                 ([1.0, 0.0], [0.0, 1.0])])
def test_jensen_shannon_matches_scipy(p, q):
    assert mon.jensen_shannon(p, q) == pytest.approx(jensenshannon(p, q, base=2), abs=1e-12)


def test_wasserstein_matches_scipy():
    rng = np.random.default_rng(3)
    u, v = rng.lognormal(4, 0.5, 700), rng.lognormal(4.2, 0.6, 450).round()
    assert mon.wasserstein(u, v) == pytest.approx(wasserstein_distance(u, v), rel=1e-12)
    u_nan = np.append(u, [np.nan, np.nan])
    assert mon.wasserstein(u_nan, v) == pytest.approx(wasserstein_distance(u, v), rel=1e-12)
    assert mon.wasserstein([np.nan], v) is None


def test_histograms_are_probabilities_with_baseline_bins_and_open_ends():
    baseline = np.arange(100.0)
    edges = mon.bin_edges(baseline, bins=4)
    assert len(edges) == 3  # 4 bins: quartiles of the baseline
    base = mon.histogram(baseline, edges)
    assert base.sum() == pytest.approx(1.0) and base == pytest.approx([0.25] * 4)
    current = mon.histogram([-50.0, 500.0, 1e9, np.nan], edges)  # out of range -> outer bins, NaN left out
    assert current == pytest.approx([1 / 3, 0, 0, 2 / 3])
    # numpy's density=True is not a probability vector (what the demo notebook compared)
    density, _ = np.histogram(baseline, bins=np.linspace(0, 99, 5), density=True)
    assert density.sum() != pytest.approx(1.0)
    assert mon.bin_edges(baseline, bins=4, binning="uniform") == pytest.approx([24.75, 49.5, 74.25])


def test_drift_of_a_numeric_and_a_categorical_column():
    rng = np.random.default_rng(11)
    base, cur = rng.normal(0, 1, 2000), rng.normal(0.5, 1, 1000)
    d = mon.drift(base, cur, kind="numeric", bins=10)
    p, q = np.array(d["baseline_hist"]), np.array(d["current_hist"])
    assert p.sum() == pytest.approx(1) and q.sum() == pytest.approx(1) and len(p) == 10
    assert d["psi"] == pytest.approx(np.sum((q - p) * np.log(q / p)))
    assert d["jensen_shannon"] == pytest.approx(jensenshannon(p, q, base=2))
    assert d["wasserstein"] == pytest.approx(wasserstein_distance(base, cur))
    assert d["difference_of_means"] == pytest.approx(cur.mean() - base.mean())
    assert 0.1 < d["psi"] < 0.6
    same = mon.drift(base, base, kind="numeric")
    assert same["psi"] == pytest.approx(0) and same["wasserstein"] == 0

    c = mon.drift(["a", "a", "b", "b"], ["a", "c", "c", None], kind="categorical")
    assert c["bins"] == ["a", "b", "c", "(null)"]
    assert c["baseline_hist"] == [0.5, 0.5, 0.0, 0.0] and c["current_hist"] == [0.25, 0.0, 0.5, 0.25]
    assert c["hellinger"] == pytest.approx(math.sqrt(1 - math.sqrt(0.5 * 0.25)))
    assert c["wasserstein"] is None and c["difference_of_means"] is None and c["null_share"] == 0.25
    rate = mon.drift(np.array([0, 1, 1, 1]), np.array([0, 0, 0, 1]), kind="categorical")
    assert rate["difference_of_means"] == pytest.approx(-0.5)  # the 0/1 prediction: change of rate


def test_many_categories_keep_the_frequent_ones_and_pool_the_rest():
    baseline = ["a"] * 50 + ["b"] * 30 + ["c", "d", "e"]  # c, d, e: rare
    assert mon.learn_categories(baseline, bins=3) == ["a", "b", mon.OTHER]
    d = mon.drift(baseline, ["a", "b", "z", "c"], kind="categorical", bins=3)  # z: unseen -> (other)
    assert d["bins"] == ["a", "b", "(other)"]
    assert d["baseline_hist"] == pytest.approx([50 / 83, 30 / 83, 3 / 83]) and d["current_hist"] == [0.25, 0.25, 0.5]
    few = mon.drift(["a", "b"], ["a", "c"], kind="categorical", bins=3)
    assert few["bins"] == ["a", "b", "c"]  # no pooling when the categories fit


def test_windows_are_aligned_on_mondays():
    ts = pd.Series(pd.to_datetime(["2024-01-01 00:00", "2024-01-07 23:59", "2024-01-08 00:00", "2024-01-17 12:00"]))
    starts, width = mon.window_starts(ts, "7 days")
    assert [s.date().isoformat() for s in starts] == ["2024-01-01", "2024-01-01", "2024-01-08", "2024-01-15"]
    daily, _ = mon.window_starts(ts, "1 day")
    assert daily.iloc[3] == pd.Timestamp("2024-01-17")
    with pytest.raises(MlopsError, match="monitor.window"):
        mon.window_starts(ts, "a fortnight")


def _scored(weeks=4, n=300, shift_from=3, seed=0):
    rng = np.random.default_rng(seed)
    frames = []
    for week in range(1, weeks + 1):
        shifted = week >= shift_from
        y = rng.integers(0, 2, n)
        score = np.clip(0.5 * y + rng.random(n) * 0.5 + (0.3 if shifted else 0) * (1 - 2 * y), 0, 1)
        frames.append(pd.DataFrame({
            "TS": pd.Timestamp("2024-01-01") + pd.to_timedelta(week - 1, "W") + pd.to_timedelta(rng.integers(0, 6 * 86400, n), "s"),
            "WEEK": week,
            "INCOME": rng.lognormal(4.4 - (0.3 if shifted else 0), 0.4, n),
            "TYPE": rng.choice(["A", "B", "C"], n, p=[0.2, 0.3, 0.5] if shifted else [0.5, 0.3, 0.2]),
            "Y": y, "SCORE": score, "PRED": (score >= 0.5).astype(int),
        }))
    return pd.concat(frames, ignore_index=True)


def test_rows_without_any_timestamp_are_refused_with_one_message():
    frame = _scored().assign(TS=pd.NaT)
    with pytest.raises(MlopsError, match="no monitored row has a TS value"):
        mon.compute(frame, frame, features={"INCOME": "numeric"}, target="Y", score_column="SCORE",
                    prediction_column="PRED", timestamp="TS")


def test_compute_per_window_performance_and_drift():
    frame = _scored()
    baseline = frame[frame.WEEK <= 2]
    result = mon.compute(frame, baseline, features={"INCOME": "numeric", "TYPE": "categorical"}, target="Y",
                         score_column="SCORE", prediction_column="PRED", timestamp="TS")
    perf = result["performance"]
    assert [p["window_start"].date().isoformat() for p in perf] == ["2024-01-01", "2024-01-08", "2024-01-15", "2024-01-22"]
    assert all(p["window_end"] - p["window_start"] == dt.timedelta(days=7) for p in perf)
    week3 = frame[frame.WEEK == 3]
    assert perf[2]["f1"] == pytest.approx(skm.f1_score(week3.Y, week3.PRED, average="macro"))
    assert perf[2]["roc_auc"] == pytest.approx(skm.roc_auc_score(week3.Y, week3.SCORE))
    assert perf[0]["f1"] > 0.9 > perf[3]["f1"]
    drift = {(d["window_start"].day, d["column"]): d for d in result["drift"]}
    assert {c for _, c in drift} == {"INCOME", "TYPE", "PRED", "SCORE"}
    assert {d["role"] for d in result["drift"]} == {"feature", "prediction", "score"}
    assert drift[(1, "INCOME")]["psi"] < 0.1 < 0.2 < drift[(22, "INCOME")]["psi"]
    assert drift[(22, "TYPE")]["psi"] > 0.2
    # the bins are the baseline's: the same baseline histogram in every window
    assert drift[(1, "INCOME")]["baseline_hist"] == drift[(22, "INCOME")]["baseline_hist"]
    with pytest.raises(MlopsError, match="lack column"):
        mon.compute(frame.drop(columns="SCORE"), baseline, features={"INCOME": "numeric"}, target="Y",
                    score_column="SCORE", prediction_column="PRED", timestamp="TS")


def test_duckdb_sink_reads_back_as_a_source(tmp_path):
    sink = DuckDBSink(tmp_path / "w.duckdb", table="P", partition_by=["WEEK"])
    table = pa.table({"WEEK": [1, 1, 2], "X": [1.0, 2.0, 3.0]})
    with sink.open() as writer:
        writer.write(table)
    source = sink.as_source()
    assert isinstance(source, DuckDBTableSource)
    assert source.read().X.tolist() == [1.0, 2.0, 3.0] and source.count_rows() == 3
    filtered = DuckDBTableSource(path=str(tmp_path / "w.duckdb"), table="P", where="WEEK = 2")
    assert filtered.read(columns=["X"]).X.tolist() == [3.0]
    assert filtered.fingerprint() != source.fingerprint() == sink.as_source().fingerprint()
    assert sum(b.num_rows for b in source.batches(batch_size=2)) == 3
    with pytest.raises(MlopsError, match="no table NOPE"):
        DuckDBTableSource(path=str(tmp_path / "w.duckdb"), table="NOPE").read()
    with pytest.raises(MlopsError, match="not found"):
        DuckDBTableSource(path=str(tmp_path / "missing.duckdb"), table="P").read()


def test_append_tables_appends_and_adds_new_columns(tmp_path):
    path = tmp_path / "w.duckdb"
    mon.append_tables(path, {"T": pd.DataFrame({"A": [1]}), "EMPTY": pd.DataFrame()})
    mon.append_tables(path, {"T": pd.DataFrame({"A": [2], "B": ["x"]})})
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.sql("SELECT A, B FROM T ORDER BY A").fetchall() == [(1, None), (2, "x")]
        assert [r[0] for r in con.sql("SHOW TABLES").fetchall()] == ["T"]


def test_monitor_stage_writes_tables_and_fires_alerts(tmp_path, monkeypatch):
    """The stage end to end through the config: scored table -> monitor tables -> alert file."""
    from mlops_framework import config
    from mlops_framework.lifecycle import monitor
    from mlops_framework.pipeline import build_run
    from mlops_framework.plugins import Components, get_plugin_manager

    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    frame = _scored(weeks=4, n=300)
    with DuckDBSink(tmp_path / "warehouse.duckdb", table="PREDICTIONS_WITH_GROUND_TRUTH").open() as writer:
        writer.write(pa.Table.from_pandas(frame, preserve_index=False))
    components = Components(get_plugin_manager(load_entrypoints=False))
    cfg = config.compose(["pipeline=monitor", "features.numeric=[INCOME]", "features.categorical=[TYPE]",
                          "features.target=Y", "monitor.score_column=SCORE", "monitor.prediction_column=PRED",
                          "monitor.baseline='WEEK <= 2'", "alerts.rules.f1_low.threshold=0.8"], components)
    run = build_run(config.resolved(cfg), components, output_dir=tmp_path / "run")
    (tmp_path / "run").mkdir()
    monitor(run)
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        perf = con.sql("SELECT * FROM MONITOR_PERFORMANCE ORDER BY WINDOW_START").df()
        drift = con.sql("SELECT * FROM MONITOR_DRIFT").df()
        alerts = con.sql("SELECT * FROM MONITOR_ALERTS").df()
    assert len(perf) == 4 and perf.RUN_ID.eq("run").all() and perf.ROWS.eq(300).all()
    assert str(perf.WINDOW_START.dtype).startswith("datetime64") and perf.F1.iloc[0] > perf.F1.iloc[3]
    assert len(drift) == 4 * 4 and {"PSI", "JENSEN_SHANNON", "HELLINGER", "WASSERSTEIN", "DIFFERENCE_OF_MEANS",
                                    "COLUMN_NAME"} <= set(drift.columns)
    assert set(alerts.RULE) == {"f1_low", "feature_psi_high"}
    assert (alerts.WINDOW_START == perf.WINDOW_START.max()).all()
    lines = (tmp_path / "alerts.jsonl").read_text().splitlines()
    assert len(lines) == len(alerts) and '"rule": "f1_low"' in lines[0]
    assert (tmp_path / "run" / "monitor-1.json").is_file()
    assert "2 fired" in run.results["summary"]["alerts"] or "3 fired" in run.results["summary"]["alerts"]

    monitor(run)  # a second run appends
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        assert con.sql("SELECT count(*) FROM MONITOR_PERFORMANCE").fetchall()[0][0] == 8
    assert len(run.results["monitor_runs"]) == 2


def test_monitor_refuses_a_baseline_matching_nothing(tmp_path):
    from types import SimpleNamespace

    frame = _scored(weeks=2, n=50)
    spec = SimpleNamespace(source=SimpleNamespace(read=lambda: frame, describe=lambda: "x"), baseline_source=None,
                           baseline="WEEK > 99")
    got, baseline, _ = mon.read_monitored(spec, None)
    assert len(got) == 100 and len(baseline) == 0
    with pytest.raises(MlopsError, match="baseline has no rows"):
        mon.compute(frame, baseline, features={"INCOME": "numeric"}, target="Y", score_column="SCORE",
                    prediction_column="PRED", timestamp="TS")
    spec.baseline = "NO_SUCH_COLUMN > 1"
    with pytest.raises(MlopsError, match="bad monitor.baseline"):
        mon.read_monitored(spec, None)
