"""The local feature store: point-in-time training sets on data built to leak, versioning, the catalog,
latest values, the one-hot view, and ``data=feature_store`` through ``mlops run``."""

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops_framework.errors import MlopsError
from mlops_framework.contracts import table_name
from mlops_local.feature_store import CATALOG, FeatureStoreSource, LocalFeatureStore
from mlops_local.sources import ParquetSource

REPO = Path(__file__).resolve().parents[1]
T0 = dt.date(2024, 1, 1)


# ------------------------------------------------------------------------------------ leaky data
def leaky_tables(n=400, seed=0):
    """Feature history and a spine made to leak if the join looked past the spine's date.

    Each entity is labelled at its spine date. Its SIGNAL rows: 10 days before (pure noise), and 3 days
    after, when the outcome is known, SIGNAL = the label exactly. Every 5th entity also has a row dated
    exactly on the spine date (value 0.5: must be used, the join includes equal times); every 7th has only
    the future row (must get null). A correct join yields SIGNAL independent of the label; any look into
    the future makes SIGNAL a perfect predictor of it."""
    rng = np.random.default_rng(seed)
    spine, history = [], []
    for k in range(n):
        day = T0 + dt.timedelta(days=int(k % 30) + 20)
        label = int(rng.integers(0, 2))
        spine.append({"ENTITY_ID": k, "EVENT_DATE": day, "LABEL": label, "WEEK": 1 + k % 4})
        if k % 7:
            history.append({"ENTITY_ID": k, "FS_TS": day - dt.timedelta(days=10), "SIGNAL": float(rng.normal()),
                            "NOISE": float(rng.normal())})
        if k % 5 == 0 and k % 7:
            history.append({"ENTITY_ID": k, "FS_TS": day, "SIGNAL": 0.5, "NOISE": 0.0})
        history.append({"ENTITY_ID": k, "FS_TS": day + dt.timedelta(days=3), "SIGNAL": float(label),
                        "NOISE": float(rng.normal())})
    return pd.DataFrame(spine), pd.DataFrame(history)


@pytest.fixture
def leaky(tmp_path):
    spine, history = leaky_tables()
    spine.to_parquet(tmp_path / "spine.parquet")
    history.to_parquet(tmp_path / "history.parquet")
    return spine, history, tmp_path


def store_config(tmp_path, **view):
    values = {"entities": ["CUSTOMER"], "version": "V1", "timestamp_col": "FS_TS", "features": ["SIGNAL", "NOISE"],
              "source": ParquetSource(str(tmp_path / "history.parquet")),
              "refresh_freq": "1 day", "description": "signal history"}
    values.update(view)
    return {"warehouse": str(tmp_path / "home" / "warehouse.duckdb"),
            "entities": {"CUSTOMER": {"join_keys": ["ENTITY_ID"], "description": "a customer"}},
            "feature_views": {"SIGNALS": values}}


def expected_point_in_time(spine, history):
    rows = []
    for _, s in spine.iterrows():
        past = history[(history.ENTITY_ID == s.ENTITY_ID) & (history.FS_TS <= s.EVENT_DATE)]
        rows.append(past.sort_values("FS_TS").SIGNAL.iloc[-1] if len(past) else np.nan)
    return np.array(rows)


def test_point_in_time_join_never_uses_a_later_value(leaky):
    spine, history, tmp_path = leaky
    store = LocalFeatureStore(store_config(tmp_path))
    store.materialize("SIGNALS")
    result = store.training_set(spine, ["SIGNALS"], spine_timestamp="EVENT_DATE").to_pandas()
    result = result.set_index("ENTITY_ID").loc[spine.ENTITY_ID]
    np.testing.assert_array_equal(result.SIGNAL.to_numpy(), expected_point_in_time(spine, history))
    assert list(result.LABEL) == list(spine.LABEL)  # spine rows kept, in full, labels untouched
    assert result.SIGNAL.isna().sum() == sum(1 for k in range(len(spine)) if k % 7 == 0)  # only-future keys: null
    assert (result.SIGNAL == 0.5).sum() == sum(1 for k in range(len(spine)) if k % 5 == 0 and k % 7)  # ts equal: used
    known = result.dropna(subset=["SIGNAL"])
    assert abs(np.corrcoef(known.SIGNAL, known.LABEL)[0, 1]) < 0.2  # nothing of the outcome leaked
    # The same data joined on the latest value instead (the mistake) does leak: the test data can tell.
    naive = spine.merge(history.sort_values("FS_TS").groupby("ENTITY_ID").last().reset_index(), on="ENTITY_ID")
    assert np.corrcoef(naive.SIGNAL, naive.LABEL)[0, 1] > 0.99


def test_versions_are_immutable_and_catalogued(leaky):
    spine, history, tmp_path = leaky
    config = store_config(tmp_path)
    store = LocalFeatureStore(config)
    assert store.catalog() == []
    row = store.materialize("SIGNALS")
    assert row["table_name"] == table_name("SIGNALS", "V1") == "FEATURE_VIEW__SIGNALS__V1"
    with pytest.raises(MlopsError, match="SIGNALS version V1 is already materialised.*bump"):
        store.materialize("SIGNALS")
    (entry,) = store.catalog()
    assert {k: entry[k] for k in ("name", "version", "timestamp_col", "description", "refresh_freq", "rows")} == {
        "name": "SIGNALS", "version": "V1", "timestamp_col": "FS_TS", "description": "signal history",
        "refresh_freq": "1 day", "rows": len(history)}
    assert json.loads(entry["entities"]) == ["CUSTOMER"] and json.loads(entry["join_keys"]) == ["ENTITY_ID"]
    assert entry["source_fingerprint"].startswith("sha256:") and isinstance(entry["materialized_at"], dt.datetime)

    # The source changes: V1 is stale (refused by if_missing), V2 is a new table and V1 stays as it was.
    history.assign(SIGNAL=history.SIGNAL + 100).to_parquet(tmp_path / "history.parquet")
    with pytest.raises(MlopsError, match="materialised from other data"):
        store.ensure("SIGNALS", "if_missing")
    assert store.ensure("SIGNALS", "never")["version"] == "V1"
    config["feature_views"]["SIGNALS"]["version"] = "V2"
    v2 = LocalFeatureStore(config)
    v2.materialize("SIGNALS")
    assert [(r["version"], r["table_name"]) for r in v2.catalog()] == [
        ("V1", "FEATURE_VIEW__SIGNALS__V1"), ("V2", "FEATURE_VIEW__SIGNALS__V2")]
    con = v2.connect()
    try:
        v1_max = con.sql('SELECT max(SIGNAL) FROM "FEATURE_VIEW__SIGNALS__V1"').fetchall()[0][0]
        v2_max = con.sql('SELECT max(SIGNAL) FROM "FEATURE_VIEW__SIGNALS__V2"').fetchall()[0][0]
    finally:
        con.close()
    assert v1_max < 50 < v2_max
    # overwrite replaces a version in place, one catalog row per version
    store.materialize("SIGNALS", overwrite=True)
    assert sorted(r["version"] for r in store.catalog()) == ["V1", "V2"]


def test_latest_values_for_scoring(leaky):
    spine, history, tmp_path = leaky
    store = LocalFeatureStore(store_config(tmp_path))
    store.materialize("SIGNALS")
    newest = history.sort_values("FS_TS").groupby("ENTITY_ID").last()
    latest = store.latest(["SIGNALS"]).to_pandas().set_index("ENTITY_ID").sort_index()
    assert len(latest) == len(newest)
    np.testing.assert_array_equal(latest.SIGNAL, newest.SIGNAL)
    keys = pd.DataFrame({"ENTITY_ID": [3, 10, 9999]})
    some = store.latest(["SIGNALS"], keys).to_pandas().set_index("ENTITY_ID")
    assert some.loc[3, "SIGNAL"] == newest.loc[3, "SIGNAL"] and np.isnan(some.loc[9999, "SIGNAL"])
    as_of = T0 + dt.timedelta(days=30)
    before = history[history.FS_TS <= as_of].sort_values("FS_TS").groupby("ENTITY_ID").last()
    dated = store.latest(["SIGNALS"], as_of=str(as_of)).to_pandas().set_index("ENTITY_ID").sort_index()
    np.testing.assert_array_equal(dated.SIGNAL, before.SIGNAL)


def test_onehot_view_is_the_feature_contract_encoding(tmp_path):
    from mlops_framework.features import FeatureContract
    from mlops_local.synthetic import generate_table

    loans = generate_table(weeks=2, rows_per_week=50, seed=3).to_pandas()
    loans.to_parquet(tmp_path / "loans.parquet")
    features = ["APPLICANT_INCOME_000S", "LOAN_AMOUNT_000S", "LOAN_TYPE_NAME", "COUNTY_NAME"]
    config = {"warehouse": str(tmp_path / "w.duckdb"),
              "entities": {"LOAN_ENTITY": {"join_keys": ["LOAN_ID"]}},
              "feature_views": {"LOAN_FEATURES_OHE": {
                  "entities": ["LOAN_ENTITY"], "timestamp_col": "WEEK_START_DATE", "features": features,
                  "source": ParquetSource(str(tmp_path / "loans.parquet")), "transform": "onehot",
                  "categorical": ["LOAN_TYPE_NAME", "COUNTY_NAME"]}}}
    store = LocalFeatureStore(config)
    row = store.materialize("LOAN_FEATURES_OHE")
    contract = FeatureContract.fit(loans, numeric=features[:2], categorical=features[2:], target="MORTGAGERESPONSE")
    assert json.loads(row["features"]) == contract.feature_names
    assert json.loads(row["transform"])["onehot"]["categorical"] == contract.categorical
    table = store.latest(["LOAN_FEATURES_OHE"]).to_pandas().set_index("LOAN_ID").loc[loans.LOAN_ID]
    np.testing.assert_array_equal(table[contract.feature_names].to_numpy(np.float32),
                                  contract.encode_frame(loans).to_numpy())


def test_query_views_and_config_errors(tmp_path):
    warehouse = tmp_path / "w.duckdb"
    config = {"warehouse": str(warehouse), "entities": {"E": {"join_keys": ["K"]}},
              "feature_views": {"Q": {"entities": ["E"], "timestamp_col": "TS", "features": ["F"],
                                      "query": "SELECT 1 AS K, DATE '2024-01-01' AS TS, 2.5 AS F, 'x' AS IGNORED"}}}
    store = LocalFeatureStore(config)
    assert store.materialize("Q")["source"].startswith("query SELECT 1")
    assert store.latest(["Q"]).to_pandas().to_dict("records") == [{"K": 1, "F": 2.5}]

    def refused(match, **change):
        bad = json.loads(json.dumps(config))
        bad["feature_views"]["Q"].update(change)
        with pytest.raises(MlopsError, match=match):
            LocalFeatureStore(bad)

    refused("exactly one of source", source={"kind": "csv", "path": "x.csv"})
    refused("entities must name", entities=["NOPE"])
    refused("unknown key feature_store.feature_views.Q.timestamp ", timestamp="TS")
    refused("transform must be", transform="pca")
    refused("not a valid name", version="v 1")
    with pytest.raises(MlopsError, match="no feature view 'NOPE'"):
        store.materialize("NOPE")


def source(tmp_path, **kw):
    spine = {"source": ParquetSource(str(tmp_path / "spine.parquet")), "timestamp": "EVENT_DATE",
             "label": ["LABEL"], "columns": ["WEEK"]}
    return FeatureStoreSource(store=store_config(tmp_path), views=["SIGNALS"], **{"spine": spine, **kw})


def test_the_data_source_contract(leaky):
    spine, history, tmp_path = leaky
    src = source(tmp_path, where="WEEK <= 2")
    text = src.describe()
    assert "SIGNALS V1 joined point-in-time onto Parquet" in text and "where WEEK <= 2" in text
    assert not (tmp_path / "home").exists()  # describe touched nothing
    frame = src.read(columns=["SIGNAL", "LABEL"])
    assert list(frame.columns) == ["SIGNAL", "LABEL"] and len(frame) == (spine.WEEK <= 2).sum()
    assert src.count_rows() is None and source(tmp_path).count_rows() == len(spine)
    batches = list(source(tmp_path).batches(batch_size=150))
    assert len(batches) > 1 and max(b.num_rows for b in batches) <= 150
    assert sum(b.num_rows for b in batches) == len(spine)
    assert set(batches[0].schema.names) == {"ENTITY_ID", "EVENT_DATE", "LABEL", "WEEK", "SIGNAL", "NOISE"}
    assert src.fingerprint() == source(tmp_path, where="WEEK <= 2").fingerprint() != source(tmp_path).fingerprint()
    (view,) = src.lineage()["feature_store"]["feature_views"]
    assert (view["name"], view["version"], view["table_name"]) == ("SIGNALS", "V1", "FEATURE_VIEW__SIGNALS__V1")
    with pytest.raises(MlopsError, match="unknown column 'signal'.*did you mean 'SIGNAL'"):
        src.read(columns=["signal"])
    with pytest.raises(MlopsError, match="spine is required"):
        FeatureStoreSource(store=store_config(tmp_path), views=["SIGNALS"]).read()
    latest = FeatureStoreSource(store=store_config(tmp_path), views=["SIGNALS"], mode="latest").read()
    assert len(latest) == len(spine)
    with pytest.raises(MlopsError, match="not materialised.*materialize=never"):
        FeatureStoreSource(store={**store_config(tmp_path), "warehouse": str(tmp_path / "other.duckdb")},
                           views=["SIGNALS"], mode="latest", materialize="never").read()


def test_a_load_fingerprints_each_view_once(leaky, monkeypatch):
    """read, fingerprint and lineage (what the load stage asks) share one ensure per view: ensure hashes
    the view's source, which for a big file or a query view is a full read."""
    _, _, tmp_path = leaky
    calls = []
    ensure = LocalFeatureStore.ensure
    monkeypatch.setattr(LocalFeatureStore, "ensure", lambda store, name, *a, **k: calls.append(name) or
                        ensure(store, name, *a, **k))
    src = source(tmp_path)
    src.read(columns=["SIGNAL", "LABEL"])
    src.fingerprint()
    src.lineage()
    assert calls == ["SIGNALS"]


# ------------------------------------------------------------------------------------ mlops run
def registered(home, model, version="v1"):
    from mlops_local.registry import LocalRegistry

    return LocalRegistry(home / "registry").get_version(model, version)


def test_mlops_run_trains_from_the_point_in_time_training_set(leaky, mlops, home):
    """data=feature_store end to end on the leaky data: a model trained on a leaking join would score ~1.0."""
    spine, history, tmp_path = leaky
    view = "feature_store.feature_views.LOAN_FEATURES"
    result = mlops("run", "pipeline=train", "data=feature_store", "~feature_store.feature_views.LOAN_FEATURES_OHE",
                   "feature_store.entities.LOAN_ENTITY.join_keys=[ENTITY_ID]",
                   f"{view}.timestamp_col=FS_TS", f"{view}.features=[SIGNAL,NOISE]",
                   f"{view}.source=null", f"{view}.query=\"SELECT * FROM read_parquet('{tmp_path / 'history.parquet'}')\"",
                   f"data.spine.source={{kind:parquet,path:'{tmp_path / 'spine.parquet'}'}}",
                   "data.spine.timestamp=EVENT_DATE", "data.spine.label=[LABEL]", "data.spine.columns=[WEEK]",
                   "features.target=LABEL", "features.numeric=[SIGNAL,NOISE]", "features.categorical=[]", "features.id=null", "features.time=null",
                   "model.params.n_estimators=20", "model.params.n_jobs=1", "registry.model_name=LEAK",
                   check=True)
    version = registered(home, "LEAK")
    assert version["metrics"]["holdout_accuracy"] < 0.7, result.stdout  # noise only: nothing leaked
    (fv,) = version["lineage"]["source"]["feature_store"]["feature_views"]
    assert (fv["name"], fv["version"], fv["table_name"]) == ("LOAN_FEATURES", "V1", "FEATURE_VIEW__LOAN_FEATURES__V1")


def test_mortgage_feature_store_experiment_trains_and_scores_from_the_store(mlops, home, tmp_path):
    import duckdb

    small = ["feature_store.feature_views.LOAN_FEATURES.source.weeks=6",
             "feature_store.feature_views.LOAN_FEATURES.source.rows_per_week=200",
             "model.params.n_estimators=10", "model.params.n_jobs=1"]
    plan = mlops("plan", "experiment=mortgage_feature_store", *small, check=True)
    assert "LOAN_FEATURES V1 joined point-in-time" in plan.stdout and "latest values" in plan.stdout
    assert not (home / "warehouse.duckdb").exists()  # plan touched nothing
    mlops("run", "experiment=mortgage_feature_store", *small, check=True)
    version = registered(home, "MORTGAGE_XGB")
    assert version["metadata"]["training_rows"] == 5 * 200  # weeks 1-5 of the spine
    assert version["lineage"]["source"]["feature_store"]["feature_views"][0]["name"] == "LOAN_FEATURES"
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    try:
        assert con.sql("SELECT count(*) FROM PREDICTIONS_WITH_GROUND_TRUTH").fetchall()[0][0] == 6 * 200
        assert con.sql(f"SELECT name, version FROM {CATALOG}").fetchall() == [("LOAN_FEATURES", "V1")]
    finally:
        con.close()
    # A changed source under the same version is refused (exit 2): a version names one set of values.
    changed = mlops("run", "experiment=mortgage_feature_store", *small,
                    "feature_store.feature_views.LOAN_FEATURES.source.seed=99")
    assert changed.returncode == 2 and "materialised from other data" in changed.stderr


def test_lifecycle_retrains_from_the_feature_store(mlops, home, tmp_path):
    mlops("run", "experiment=mortgage_lifecycle_feature_store",
          "feature_store.feature_views.LOAN_FEATURES.source.rows_per_week=150", "model.params.n_estimators=10",
          "model.params.n_jobs=1", "retrain.explain_rows=50", check=True)
    v2 = registered(home, "MORTGAGE_LIFECYCLE_FS", "v2")
    assert v2["metadata"]["training_rows"] == 4 * 150  # the retrain spine: weeks 9-12
    assert v2["lineage"]["source"]["feature_store"]["feature_views"][0]["version"] == "V1"
