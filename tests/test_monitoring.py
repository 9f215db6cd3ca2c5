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
from mlops_local.sinks import DuckDBSink
from mlops_local.sources import DuckDBTableSource


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


def _write(path, frame, table="PREDICTIONS_WITH_GROUND_TRUTH", partition_by=None):
    with DuckDBSink(path, table=table, partition_by=partition_by).open() as writer:
        writer.write(pa.Table.from_pandas(frame, preserve_index=False))


def _monitor_run(tmp_path, monkeypatch, *overrides):
    """The monitor stage's run object, composed from the config as ``mlops run pipeline=monitor``."""
    from mlops_framework import config
    from mlops_framework.pipeline import build_run
    from mlops_framework.plugins import Components, get_plugin_manager

    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    components = Components(get_plugin_manager(load_entrypoints=False))
    cfg = config.compose(["pipeline=monitor", "features.numeric=[INCOME]", "features.categorical=[TYPE]",
                          "features.target=Y", "monitor.score_column=SCORE", "monitor.prediction_column=PRED",
                          "monitor.baseline='WEEK <= 2'", *overrides], components)
    output = tmp_path / "runs" / f"r{len(list((tmp_path / 'runs').glob('*'))) if (tmp_path / 'runs').exists() else 0}"
    output.mkdir(parents=True)
    return build_run(config.resolved(cfg), components, output_dir=output)


def _table(tmp_path, sql):
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        return con.sql(sql).df()


def test_monitor_per_window_and_version_matches_a_pandas_reference(tmp_path, monkeypatch):
    """Performance and drift computed in SQL equal those computed by hand from the rows, per version."""
    from mlops_framework.lifecycle import monitor

    frame = _scored(weeks=4, n=300)
    frame["MODEL_NAME"] = "MORTGAGE_XGB"
    frame["MODEL_VERSION"] = np.where((frame.WEEK == 4) & (np.arange(len(frame)) % 3 == 0), "v2", "v1")
    _write(tmp_path / "warehouse.duckdb", frame)
    run = _monitor_run(tmp_path, monkeypatch, "alerts.rules.f1_low.threshold=0.8")
    monitor(run)
    result = run.results["monitor"]
    assert result["versions"] == ["v1", "v2"] and result["mixed_windows"][0]["versions"] == ["v1", "v2"]
    assert "windows mixing versions: 2024-01-22: v1, v2" in run.results["summary"]["versions"]
    perf = {(p["model_version"], p["window_start"].date().isoformat()): p for p in result["performance"]}
    assert sorted(perf) == [("v1", "2024-01-01"), ("v1", "2024-01-08"), ("v1", "2024-01-15"), ("v1", "2024-01-22"),
                            ("v2", "2024-01-22")]
    for (version, day), p in perf.items():
        rows = frame[(frame.MODEL_VERSION == version) & (frame.WEEK == {"2024-01-01": 1, "2024-01-08": 2,
                                                                        "2024-01-15": 3, "2024-01-22": 4}[day])]
        assert p["rows"] == len(rows) and p["window_end"] - p["window_start"] == dt.timedelta(days=7)
        assert p["f1"] == pytest.approx(skm.f1_score(rows.Y, rows.PRED, average="macro"))
        assert p["accuracy"] == pytest.approx(skm.accuracy_score(rows.Y, rows.PRED))
        assert p["roc_auc"] == pytest.approx(skm.roc_auc_score(rows.Y, rows.SCORE), abs=1e-3)
        assert (p["tn"], p["fp"], p["fn"], p["tp"]) == tuple(skm.confusion_matrix(rows.Y, rows.PRED).ravel())
    # drift of v1's last week against v1's baseline (weeks 1-2), by hand with the same bins
    base = frame[(frame.MODEL_VERSION == "v1") & (frame.WEEK <= 2)]
    week4 = frame[(frame.MODEL_VERSION == "v1") & (frame.WEEK == 4)]
    edges = mon.bin_edges(base.INCOME, 10)
    drift = {(d["model_version"], d["window_start"].day, d["column"]): d for d in result["drift"]}
    income = drift[("v1", 22, "INCOME")]
    assert income["psi"] == pytest.approx(mon.psi(mon.histogram(base.INCOME, edges), mon.histogram(week4.INCOME, edges)))
    assert income["difference_of_means"] == pytest.approx(week4.INCOME.mean() - base.INCOME.mean())
    assert income["wasserstein"] == pytest.approx(wasserstein_distance(base.INCOME, week4.INCOME), rel=0.15)
    kind = drift[("v1", 22, "TYPE")]
    categories = ["C", "B", "A"][::-1] if False else sorted(set(base.TYPE), key=lambda c: (-(base.TYPE == c).sum(), c))
    assert kind["bins"] == categories
    assert kind["psi"] == pytest.approx(mon.psi(mon.frequencies(base.TYPE, categories), mon.frequencies(week4.TYPE, categories)))
    assert {d["role"] for d in result["drift"]} == {"feature", "prediction", "score"}
    assert drift[("v1", 1, "INCOME")]["psi"] < 0.1 < 0.2 < income["psi"]
    assert drift[("v1", 1, "INCOME")]["baseline_hist"] == income["baseline_hist"]  # the baseline's bins, once
    assert set(result["baselines"]) == {"v1", "v2"}


def test_monitor_tables_are_typed_and_a_run_computes_only_new_windows(tmp_path, monkeypatch):
    """Declared column types (no "NULL" type from an all-null first batch); a second run computes nothing,
    a new week computes one window; alerts are not fired twice for the same window."""
    from mlops_framework.lifecycle import monitor

    frame = _scored(weeks=4, n=300)
    _write(tmp_path / "warehouse.duckdb", frame, partition_by=["WEEK"])
    run = _monitor_run(tmp_path, monkeypatch, "alerts.rules.f1_low.threshold=0.8")
    monitor(run)
    perf = _table(tmp_path, "SELECT * FROM MONITOR_PERFORMANCE ORDER BY WINDOW_START")
    assert len(perf) == 4 and perf.ROWS.eq(300).all() and perf.RMSE.isna().all()
    assert str(perf.WINDOW_START.dtype).startswith("datetime64") and perf.F1.iloc[0] > perf.F1.iloc[3]
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        types = dict(con.sql("SELECT column_name, data_type FROM information_schema.columns "
                             "WHERE table_name = 'MONITOR_PERFORMANCE'").fetchall())
    assert types["RMSE"] == "DOUBLE" and types["MODEL_VERSION"] == "VARCHAR" and '"NULL"' not in types.values()
    drift = _table(tmp_path, "SELECT * FROM MONITOR_DRIFT")
    assert len(drift) == 4 * 4 and {"PSI", "JENSEN_SHANNON", "HELLINGER", "WASSERSTEIN", "DIFFERENCE_OF_MEANS",
                                    "COLUMN_NAME", "BASELINE_ID"} <= set(drift.columns)
    alerts = _table(tmp_path, "SELECT * FROM MONITOR_ALERTS")
    assert {"f1_low", "feature_psi_high"} <= set(alerts.RULE)
    assert alerts[alerts.RULE == "f1_low"].WINDOW_START.nunique() == 2  # every new window, not only the last
    lines = (tmp_path / "alerts.jsonl").read_text().splitlines()
    assert len(lines) == len(alerts) and (run.output_dir / "monitor-1.json").is_file()

    again = _monitor_run(tmp_path, monkeypatch, "alerts.rules.f1_low.threshold=0.8")
    monitor(again)
    assert again.results["monitor"]["windows_unchanged"] == 4 and again.results["monitor"]["performance"] == []
    assert again.results["alerts"] == []

    _write(tmp_path / "warehouse.duckdb", _scored(weeks=5, n=300, seed=3).query("WEEK == 5"), partition_by=["WEEK"])
    later = _monitor_run(tmp_path, monkeypatch, "alerts.rules.f1_low.threshold=0.8")
    monitor(later)
    computed = later.results["monitor"]["performance"]
    assert [p["window_start"].date().isoformat() for p in computed] == ["2024-01-29"]
    assert {a.window_start for a in later.results["alerts"]} <= {computed[0]["window_start"]}
    assert len(_table(tmp_path, "SELECT * FROM MONITOR_PERFORMANCE")) == 5
    baselines = _table(tmp_path, "SELECT DISTINCT BASELINE_ID FROM MONITOR_BASELINES")
    assert len(baselines) == 1  # chosen once for v1 (here: the table's fallback version)


def test_time_columns_as_they_are_and_one_message_when_unreadable(tmp_path, monkeypatch):
    from mlops_framework.lifecycle import monitor

    frame = _scored(weeks=3, n=100)
    text = frame.assign(TS=frame.TS.dt.strftime("%d/%m/%Y %H:%M"))
    _write(tmp_path / "warehouse.duckdb", text)
    run = _monitor_run(tmp_path, monkeypatch, "monitor.time_format='%d/%m/%Y %H:%M'")
    monitor(run)
    assert [p["window_start"].date().isoformat() for p in run.results["monitor"]["performance"]] == [
        "2024-01-01", "2024-01-08", "2024-01-15"]
    dates = frame.assign(TS=frame.TS.dt.date)
    _write(tmp_path / "warehouse.duckdb", dates)
    monitor(_monitor_run(tmp_path, monkeypatch))
    bad = frame.assign(TS=frame.TS.astype(str))
    bad.loc[5, "TS"] = "24:35.0"
    _write(tmp_path / "warehouse.duckdb", bad)
    with pytest.raises(MlopsError, match=r"the time column TS holds '24:35.0', which cannot be read as a timestamp"):
        monitor(_monitor_run(tmp_path, monkeypatch))


def test_baseline_must_be_one_sql_expression_and_match_rows(tmp_path, monkeypatch):
    from mlops_framework.lifecycle import monitor

    _write(tmp_path / "warehouse.duckdb", _scored(weeks=2, n=50))
    for baseline, message in (("WEEK <= 1; DROP TABLE X", "monitor.baseline"),
                              ("1=1) UNION (SELECT 2", "monitor.baseline"),
                              ("WEEK > 99", "baseline has no rows"),
                              ("NO_SUCH_COLUMN > 1", r"monitor.baseline 'NO_SUCH_COLUMN > 1' does not fit the monitored "
                                                     r"rows \(Binder Error.*\(TS, WEEK, .*monitor.baseline=holdout")):
        with pytest.raises(MlopsError, match=message):
            monitor(_monitor_run(tmp_path, monkeypatch, f"monitor.baseline='{baseline}'"))
    assert mon.check_expression("WEEK <= 5 -- training weeks", "x") == "WEEK <= 5"


def test_task_metrics_multiclass_and_regression():
    """Accuracy and macro F1 for several classes, RMSE / MAE / R2 for numbers, from SQL counts."""
    con = duckdb.connect()
    rng = np.random.default_rng(1)
    n = 600
    classes = np.array(["a", "b", "c"])
    frame = pd.DataFrame({"TS": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 14 * 86400, n), "s"),
                          "Y": classes[rng.integers(0, 3, n)], "P": classes[rng.integers(0, 3, n)],
                          "YR": rng.normal(size=n), "PR": rng.normal(size=n)})
    con.register("monitored", frame)
    window = (frame.TS - pd.Timestamp("2024-01-01")) // pd.Timedelta("7 days")
    for task, target, prediction in (("multiclass", "Y", "P"), ("regression", "YR", "PR")):
        engine = mon.WarehouseMonitor(con, columns={}, target_expr=target, prediction=prediction, score=None,
                                      time_expr="TS", version_expr="'v1'", scored_at=None, window="7 days",
                                      origin="2000-01-03", task={"v1": {"task": task, "classes": None}}, bins=10,
                                      binning="quantile", average="macro")
        got = engine.performance()
        for k in (0, 1):
            rows = frame[window == k]
            metrics = got[("v1", dt.datetime(2024, 1, 1) + dt.timedelta(days=7 * k))]
            if task == "multiclass":
                assert metrics["f1"] == pytest.approx(skm.f1_score(rows.Y, rows.P, average="macro"))
                assert metrics["accuracy"] == pytest.approx(skm.accuracy_score(rows.Y, rows.P))
            else:
                assert metrics["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(rows.YR, rows.PR)))
                assert metrics["mae"] == pytest.approx(skm.mean_absolute_error(rows.YR, rows.PR))
                assert metrics["r2"] == pytest.approx(skm.r2_score(rows.YR, rows.PR))


def test_rescoring_a_partition_reports_what_it_replaced(tmp_path):
    sink = DuckDBSink(tmp_path / "w.duckdb", table="P", partition_by=["WEEK"])
    with sink.open() as writer:
        writer.write(pa.table({"WEEK": [w for w in range(18, 26) for _ in range(125)]}))
    assert writer.describe_replaced() is None  # known once the write is committed
    with sink.open() as writer:
        writer.write(pa.table({"WEEK": [w for w in range(20, 26) for _ in range(216)] + [26] * 4}))
    assert writer.describe_replaced() == "WEEK 20-25: 750 rows -> 1,296"


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


def test_monitor_and_explain_tables_go_beside_the_predictions(tmp_path, monkeypatch):
    """Monitor tables are written through a sink of the scoring sink's kind and place (a Snowflake run
    writes them in Snowflake), not always into the local warehouse file."""
    from mlops_framework.lifecycle import monitor

    elsewhere = tmp_path / "elsewhere.duckdb"
    _write(elsewhere, _scored(weeks=2, n=50), table="P")
    run = _monitor_run(tmp_path, monkeypatch, f"scoring.sink.path={elsewhere}", "scoring.sink.table=P",
                       "monitor.baseline='WEEK <= 1'")
    assert run.retrain.sink.describe().startswith(f"DuckDB table EXPLANATIONS in {elsewhere}")
    monitor(run)
    with duckdb.connect(str(elsewhere), read_only=True) as con:
        tables = {row[0] for row in con.sql("SHOW TABLES").fetchall()}
    assert {"MONITOR_PERFORMANCE", "MONITOR_DRIFT", "MONITOR_BASELINES", "P"} <= tables
    assert not (tmp_path / "warehouse.duckdb").exists()


def test_an_incremental_run_computes_the_new_and_the_rescored_windows_only(tmp_path, monkeypatch):
    """With a SCORED_AT column, a run recomputes exactly the windows whose rows were re-scored or are new;
    asserted on the windows each run recorded."""
    from mlops_framework.lifecycle import monitor

    first = _scored(weeks=4, n=200).assign(SCORED_AT=pd.Timestamp("2024-02-01 10:00"))
    _write(tmp_path / "warehouse.duckdb", first, partition_by=["WEEK"])
    monitor(_monitor_run(tmp_path, monkeypatch))
    again = _scored(weeks=5, n=200, seed=5).assign(SCORED_AT=pd.Timestamp("2024-02-08 10:00"))
    _write(tmp_path / "warehouse.duckdb", again[again.WEEK.isin([2, 5])], partition_by=["WEEK"])  # same row counts
    run = _monitor_run(tmp_path, monkeypatch)
    monitor(run)
    recorded = _table(tmp_path, "SELECT MONITOR_ID, WINDOW_START FROM MONITOR_PERFORMANCE ORDER BY MONITORED_AT")
    per_run = [sorted(d.date().isoformat() for d in group.WINDOW_START)
               for _, group in recorded.groupby("MONITOR_ID", sort=False)]
    assert per_run == [["2024-01-01", "2024-01-08", "2024-01-15", "2024-01-22"], ["2024-01-08", "2024-01-29"]]
    assert run.results["monitor"]["windows_unchanged"] == 3


def test_the_task_and_classes_come_from_the_version_record_without_loading_the_model(tmp_path):
    """The registration records the classes beside the task; the monitor reads them there (loading a
    model imports its library: seconds for a run with one new window)."""
    from types import SimpleNamespace

    from mlops_local.registry import LocalRegistry

    class Files:  # a version whose files are no loadable model: loading it would fail
        def save(self, directory):
            (directory / "weights.bin").write_bytes(b"0")

    registry = LocalRegistry(tmp_path / "registry")
    registry.log_model(Files(), model_name="M", metadata={"task": "multiclass", "classes": ["a", "b", "c"]})
    run = SimpleNamespace(registration=SimpleNamespace(model_name="M"), registry=registry)
    assert mon._task_of(run, "v1") == {"task": "multiclass", "classes": ["a", "b", "c"]}


def test_a_monitor_command_with_nothing_or_one_week_new_imports_no_pandas(tmp_path, monkeypatch):
    """`mlops run pipeline=monitor` over windows all recorded reads back what it needs with DuckDB and draws
    no charts: it imports neither pyarrow nor numpy (0.1-0.2 s) and its report carries no plotly.js (4.8 MB);
    with one new week it computes, writes and charts that window. Neither loads pandas (0.5-1 s of imports:
    pyarrow loads it to convert Python values, to make numpy arrays and for ``group_by``)."""
    import subprocess
    import sys

    from mlops_framework.lifecycle import monitor

    scored = _scored(weeks=4, n=100)
    _write(tmp_path / "warehouse.duckdb", scored[scored.WEEK <= 3], partition_by=["WEEK"])
    overrides = ["features.numeric=[INCOME]", "features.categorical=[TYPE]", "features.target=Y",
                 "monitor.score_column=SCORE", "monitor.prediction_column=PRED", "monitor.baseline='WEEK <= 2'"]
    monitor(_monitor_run(tmp_path, monkeypatch))
    probe = ("import sys\nfrom mlops_framework.cli import main\ntry:\n    main(sys.argv[1:])\nfinally:\n"
             "    print('LOADED=' + ','.join(m for m in ('pandas', 'xgboost', 'sklearn') if m in sys.modules))\n"
             "    print('ARROW=' + ','.join(m for m in ('pyarrow', 'numpy', 'plotly') if m in sys.modules))")

    def monitor_command():
        return subprocess.run([sys.executable, "-c", probe, "run", "pipeline=monitor", *overrides],
                              capture_output=True, text=True, timeout=120,
                              env={**__import__("os").environ, "MLOPS_HOME": str(tmp_path)})

    done = monitor_command()
    assert "(0 computed, 3 unchanged" in done.stdout, done.stdout + done.stderr
    assert "LOADED=\n" in done.stdout and "ARROW=\n" in done.stdout
    report = max((tmp_path / "runs").glob("*/report.html"), key=lambda page: page.stat().st_mtime)
    assert "No new windows" in report.read_text() and "Plotly" not in report.read_text()
    _write(tmp_path / "warehouse.duckdb", scored[scored.WEEK == 4], partition_by=["WEEK"])
    done = monitor_command()
    assert "(1 computed, 3 unchanged" in done.stdout, done.stdout + done.stderr
    assert "LOADED=\n" in done.stdout
    report = max((tmp_path / "runs").glob("*/report.html"), key=lambda page: page.stat().st_mtime)
    assert 'class="plotly-graph-div"' in report.read_text() and "Plotly.newPlot" in report.read_text()
    assert len(report.read_text()) > 1_000_000  # plotly.js itself, inlined: the page needs no network


def test_recorded_rows_read_with_duckdb_equal_the_arrow_batches_of_the_same_table(tmp_path):
    """A monitor table in a DuckDB file is read back with DuckDB's rows (no pyarrow): the same values and
    types as the sink's Arrow batches give; a table or file not there yet is nothing recorded."""
    from mlops_local.sinks import DuckDBSink

    sink = DuckDBSink(path=str(tmp_path / "warehouse.duckdb"), table="MONITOR_PERFORMANCE")
    columns = [name for name, _ in mon.TABLE_COLUMNS["performance"]]
    assert mon._recorded_rows(sink, "MODEL_NAME = 'M'", columns) == []
    rows = [{"MONITOR_ID": "r-1", "MONITORED_AT": dt.datetime(2024, 1, 2, 3, 4, 5, 678901), "MODEL_NAME": "M",
             "MODEL_VERSION": "v1", "WINDOW_START": dt.datetime(2024, 1, 1), "ROWS": 7, "F1": 0.5, "ROC_AUC": None,
             "FINGERPRINT": "7:7:x"}, {"MONITOR_ID": "r-2", "MODEL_NAME": "other", "F1": float("nan")}]
    mon.write_table(sink, "performance", rows)
    read = mon._recorded_rows(sink, "MODEL_NAME = 'M'", columns)
    arrow = pa.Table.from_batches(list(sink.as_source(where="MODEL_NAME = 'M'").batches(columns=columns))).to_pylist()
    assert read == arrow and len(read) == 1
    assert read[0]["MONITORED_AT"] == rows[0]["MONITORED_AT"] and read[0]["ROWS"] == 7 and read[0]["ROC_AUC"] is None
    assert mon._recorded_rows(DuckDBSink(path=str(tmp_path / "warehouse.duckdb"), table="MONITOR_DRIFT"), None,
                              ["MONITOR_ID"]) == []


def test_categories_no_baseline_has_are_counted_in_their_own_bins(tmp_path, monkeypatch):
    """A category first seen after the baseline gets a bin of its own (baseline share 0), by hand."""
    from mlops_framework.lifecycle import monitor

    frame = _scored(weeks=3, n=200)
    frame.loc[(frame.WEEK == 3) & (frame.index % 4 == 0), "TYPE"] = "NEW"
    _write(tmp_path / "warehouse.duckdb", frame)
    run = _monitor_run(tmp_path, monkeypatch)
    monitor(run)
    kind = next(d for d in run.results["monitor"]["drift"] if d["column"] == "TYPE" and d["window_start"].day == 15)
    base, week3 = frame[frame.WEEK <= 2].TYPE, frame[frame.WEEK == 3].TYPE
    categories = sorted(set(base), key=lambda c: (-(base == c).sum(), c)) + ["NEW"]
    assert kind["bins"] == categories and kind["baseline_hist"][-1] == 0
    assert kind["psi"] == pytest.approx(mon.psi(mon.frequencies(base, categories), mon.frequencies(week3, categories)))


def _multiclass_frame(n=400, seed=2):
    rng = np.random.default_rng(seed)
    classes = ["a", "b", "c"]
    proba = rng.dirichlet([1, 1, 1], n)
    proba[0] = [1.0, 0.0, 0.0]  # the actual class given probability 0: clipped, as the evaluate stage clips
    y = np.array(classes)[rng.integers(0, 3, n)]
    y[0] = "b"
    ts = pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 14 * 86400, n), "s")
    return classes, pd.DataFrame({
        "TS": ts, "WEEK": (ts - pd.Timestamp("2024-01-01")) // pd.Timedelta("7 days") + 1, "Y": y, "P": np.array(classes)[proba.argmax(axis=1)], "S": proba.max(axis=1),
        **{f"PROBA_{c}": proba[:, i] for i, c in enumerate(classes)}})


def test_multiclass_log_loss_per_window_matches_scikit_learn(tmp_path, monkeypatch):
    """From the predictions' PROBA_<class> columns, per window, through the monitor stage (the classes from
    the version record), equal to scikit-learn's log loss of the same rows."""
    from mlops_framework.lifecycle import monitor
    from mlops_local.registry import LocalRegistry

    class Files:
        def save(self, directory):
            (directory / "weights.bin").write_bytes(b"0")

    classes, frame = _multiclass_frame()
    frame["MODEL_VERSION"] = "v1"
    LocalRegistry(tmp_path / "registry").log_model(Files(), model_name="MORTGAGE_XGB",
                                                   metadata={"task": "multiclass", "classes": classes})
    _write(tmp_path / "warehouse.duckdb", frame)
    run = _monitor_run(tmp_path, monkeypatch, "monitor.prediction_column=P", "monitor.score_column=S",
                       "monitor.baseline='WEEK <= 1'", "features.categorical=[]",
                       "features.numeric=[S]")
    monitor(run)
    window = (frame.TS - pd.Timestamp("2024-01-01")) // pd.Timedelta("7 days")
    computed = {p["window_start"]: p for p in run.results["monitor"]["performance"]}
    assert len(computed) == 2
    for k in (0, 1):
        rows = frame[window == k]
        expected = skm.log_loss(rows.Y, np.clip(rows[[f"PROBA_{c}" for c in classes]].to_numpy(), 1e-15, 1),
                                labels=classes)
        assert computed[dt.datetime(2024, 1, 1) + dt.timedelta(days=7 * k)]["log_loss"] == pytest.approx(expected, rel=1e-6)
    recorded = _table(tmp_path, "SELECT LOG_LOSS FROM MONITOR_PERFORMANCE")
    assert recorded.LOG_LOSS.notna().all()


def test_a_performance_table_created_before_log_loss_keeps_its_columns(tmp_path, monkeypatch):
    """A home monitored by an earlier version (MONITOR_PERFORMANCE without LOG_LOSS) is monitored again."""
    from mlops_framework.lifecycle import monitor

    _write(tmp_path / "warehouse.duckdb", _scored(weeks=2, n=100))
    monitor(_monitor_run(tmp_path, monkeypatch))
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:
        con.execute("ALTER TABLE MONITOR_PERFORMANCE DROP COLUMN LOG_LOSS")
    _write(tmp_path / "warehouse.duckdb", _scored(weeks=3, n=100).query("WEEK == 3"), partition_by=["WEEK"])
    monitor(_monitor_run(tmp_path, monkeypatch))
    recorded = _table(tmp_path, "SELECT * FROM MONITOR_PERFORMANCE")
    assert len(recorded) == 3 and "LOG_LOSS" not in recorded.columns


def test_a_monitor_table_is_asked_for_its_columns_only_when_it_refuses_the_declared_ones(tmp_path, monkeypatch):
    """Each write opens the table once; a table from before a column was declared refuses the declared
    columns before anything is written, and is then written with its own (the new column left out)."""
    from mlops_local.sinks import DuckDBSink

    path = tmp_path / "warehouse.duckdb"
    sink = DuckDBSink(path=str(path), table="MONITOR_DRIFT", partition_by=["MONITOR_ID"])
    asked = []
    existing_columns = mon._existing_columns
    monkeypatch.setattr(mon, "_existing_columns", lambda s: asked.append(s) or existing_columns(s))

    def write(monitor_id):
        mon.write_table(sink, "drift", [{"MONITOR_ID": monitor_id, "MODEL_NAME": "M", "COLUMN_NAME": "X", "PSI": 0.5,
                                         "NULL_SHARE": 0.0}])

    write("r-1")
    write("r-2")
    assert asked == []
    with duckdb.connect(str(path)) as con:
        con.execute("ALTER TABLE MONITOR_DRIFT DROP COLUMN NULL_SHARE")
    write("r-3")
    assert len(asked) == 1
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute("SELECT MONITOR_ID, PSI FROM MONITOR_DRIFT ORDER BY 1").fetchall() == [
            ("r-1", 0.5), ("r-2", 0.5), ("r-3", 0.5)]
        assert "NULL_SHARE" not in [row[0] for row in con.execute("DESCRIBE MONITOR_DRIFT").fetchall()]
