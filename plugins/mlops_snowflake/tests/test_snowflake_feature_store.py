"""The Snowflake feature store: snowflake-ml's FeatureStore ``create_autospec``'d from the installed class (a call
that drifts from its signature fails), real ``Entity`` and ``FeatureView`` objects over Snowpark local-testing
DataFrames, and a live round trip (``pytest -m snowflake``) that skips unless MLOPS_SNOWFLAKE_CONNECTION is set."""

import datetime as dt
import os
import uuid
from unittest import mock

import pandas as pd
import pytest

from mlops_framework.errors import MlopsError
from mlops_snowflake.data import SnowflakeSource

T0 = dt.datetime(2024, 1, 10)
STORE = {
    "entities": {"LOAN_ENTITY": {"join_keys": ["LOAN_ID"], "description": "a loan"}},
    "feature_views": {"LOAN_FEATURES": {
        "entities": ["LOAN_ENTITY"], "version": "V1", "timestamp_col": "FS_TS", "features": ["SIGNAL"],
        "source": SnowflakeSource(table="HISTORY"), "refresh_freq": "1 day", "description": "signals"}},
}


def history_and_spine():
    """Per loan: a noise value 5 days before its spine time, and the label itself 2 days after (a leak)."""
    spine = pd.DataFrame({"LOAN_ID": [1, 2, 3, 4], "TS": [T0] * 4, "LABEL": [1, 0, 1, 0], "WEEK": [1, 1, 2, 2],
                          "SIGNAL": [9.0, 9.0, 9.0, 9.0]})  # a stale copy in the spine table: must never be read
    history = pd.DataFrame({
        "LOAN_ID": [1, 2, 3, 4, 1, 2, 3, 4],
        "FS_TS": [T0 - dt.timedelta(days=5)] * 4 + [T0 + dt.timedelta(days=2)] * 4,
        "SIGNAL": [0.1, 0.2, 0.3, 0.4, 1.0, 0.0, 1.0, 0.0]})
    return history, spine


class FakeFeatureStore:
    """``create_autospec(FeatureStore)``, with point-in-time joins (pandas ``merge_asof``) and latest values
    over the registered views' local-testing DataFrames."""

    def __init__(self):
        from snowflake.ml.feature_store import FeatureStore

        self.FeatureStore = mock.create_autospec(FeatureStore)
        fs = self.fs = self.FeatureStore.return_value
        self.entities, self.views = {}, {}
        fs.get_entity.side_effect = lambda name: self._get(self.entities, name)
        fs.register_entity.side_effect = lambda entity: self.entities.setdefault(entity.name, entity)
        fs.get_feature_view.side_effect = lambda name, version: self._get(self.views, (name, version))
        fs.register_feature_view.side_effect = self._register
        fs.generate_training_set.side_effect = self._training_set
        fs.retrieve_feature_values.side_effect = self._latest
        fs.generate_dataset.side_effect = lambda name, spine_df, features, **kw: ("DATASET", name, kw["version"])

    @staticmethod
    def _get(table, key):
        if key not in table:
            raise ValueError(f"{key} not found")
        return table[key]

    def _register(self, fv, version, *, block=True, overwrite=False):
        self.views[(fv.name, version)] = fv
        return fv

    def _features(self, fv):
        return fv.feature_df.to_pandas(), [k for e in fv.entities for k in e.join_keys]

    def _training_set(self, spine_df, features, *, spine_timestamp_col, spine_label_cols=None, **kwargs):
        out = spine_df.to_pandas().sort_values(spine_timestamp_col)
        for fv in features:
            rows, keys = self._features(fv)
            rows = rows.sort_values(fv.timestamp_col)
            out = pd.merge_asof(out, rows, left_on=spine_timestamp_col, right_on=fv.timestamp_col, by=keys,
                                direction="backward", allow_exact_matches=True).drop(columns=[fv.timestamp_col])
        return spine_df.session.create_dataframe(out.sort_values("LOAN_ID").reset_index(drop=True))

    def _latest(self, spine_df, features, **kwargs):
        out = spine_df.to_pandas()
        for fv in features:
            rows, keys = self._features(fv)
            newest = rows.sort_values(fv.timestamp_col).groupby(keys).last().reset_index()
            out = out.merge(newest.drop(columns=[fv.timestamp_col]), on=keys, how="left")
        return spine_df.session.create_dataframe(out)


@pytest.fixture
def snowfs(local_session, monkeypatch, kit):
    history, spine = history_and_spine()
    local_session.create_dataframe(history).write.save_as_table("HISTORY", mode="overwrite")
    local_session.create_dataframe(spine).write.save_as_table("SPINE", mode="overwrite")
    fake = FakeFeatureStore()
    monkeypatch.setattr("snowflake.ml.feature_store.FeatureStore", fake.FeatureStore)
    fake.connection = kit.FakeConnection(local_session)
    fake.session = local_session
    return fake


def make_source(fake, **kw):
    from mlops_snowflake.feature_store import SnowflakeFeatureStoreSource

    values = {"store": STORE, "views": ["LOAN_FEATURES"], "connection": fake.connection, "database": "ML",
              "name": "FEATURES", "default_warehouse": "WH_XS",
              "spine": {"source": SnowflakeSource(table="SPINE"), "timestamp": "TS", "label": ["LABEL"],
                        "columns": ["WEEK"]}}
    values.update(kw)
    return SnowflakeFeatureStoreSource(**values)


def test_registers_entity_and_versioned_view_then_builds_the_point_in_time_set(snowfs):
    from snowflake.ml.feature_store import CreationMode

    source = make_source(snowfs)
    frame = source.read()
    snowfs.FeatureStore.assert_called_once_with(snowfs.session, "ML", "FEATURES", "WH_XS",
                                                creation_mode=CreationMode.CREATE_IF_NOT_EXIST)
    (entity,) = snowfs.entities.values()
    assert (entity.name, entity.join_keys) == ("LOAN_ENTITY", ["LOAN_ID"])
    fv, version = snowfs.fs.register_feature_view.call_args.args
    assert version == "V1" and snowfs.fs.register_feature_view.call_args.kwargs == {"overwrite": False}
    assert (fv.name, fv.timestamp_col, fv.refresh_freq, fv.desc) == ("LOAN_FEATURES", "FS_TS", "1 day", "signals")
    call = snowfs.fs.generate_training_set.call_args
    assert call.kwargs == {"spine_timestamp_col": "TS", "spine_label_cols": ["LABEL"]}
    # only keys, timestamp, labels and pass-through columns leave the spine: its stale SIGNAL never does
    assert sorted(call.args[0].to_pandas().columns) == ["LABEL", "LOAN_ID", "TS", "WEEK"]
    by_loan = frame.set_index("LOAN_ID")
    assert list(by_loan.SIGNAL) == [0.1, 0.2, 0.3, 0.4]  # the values known at TS, not the later labels
    # A second read uses the registered version (no second registration); columns are projected. (``where``
    # is SnowflakeSource's DataFrame.filter, SQL text that local testing cannot run: the live test covers it.)
    again = make_source(snowfs).read(columns=["SIGNAL", "LABEL"])
    assert snowfs.fs.register_feature_view.call_count == 1
    assert list(again.columns) == ["SIGNAL", "LABEL"] and len(again) == 4
    with pytest.raises(MlopsError, match="unknown column 'signal'"):
        make_source(snowfs).read(columns=["signal"])


def test_latest_values_dataset_and_refusals(snowfs):
    from mlops_snowflake.feature_store import SnowflakeFeatureStore

    latest = make_source(snowfs, mode="latest").read().set_index("LOAN_ID")
    assert list(latest.SIGNAL) == [1.0, 0.0, 1.0, 0.0]  # each loan's newest values, for scoring
    assert sorted(snowfs.fs.retrieve_feature_values.call_args.args[0].to_pandas().columns) == ["LABEL", "LOAN_ID", "WEEK"]
    store = SnowflakeFeatureStore(STORE, snowfs.connection, "ML", "FEATURES", "WH_XS")
    spine = make_source(snowfs).spine_dataframe()
    assert store.dataset("LOANS_TRAIN", "V1", spine, ["LOAN_FEATURES"], spine_timestamp_col="TS",
                         spine_label_cols=["LABEL"]) == ("DATASET", "LOANS_TRAIN", "V1")
    with pytest.raises(MlopsError, match="already registered.*bump"):
        store.register("LOAN_FEATURES", existing="refuse")
    store.register("LOAN_FEATURES", overwrite=True)
    assert snowfs.fs.register_feature_view.call_args.kwargs == {"overwrite": True}
    lineage = make_source(snowfs).lineage()["feature_store"]
    assert lineage["feature_views"][0] == {"name": "LOAN_FEATURES", "version": "V1", "timestamp_col": "FS_TS",
                                                 "entities": ["LOAN_ENTITY"], "refresh_freq": "1 day"}
    from mlops_local.sources import ParquetSource, SyntheticSource

    local_view = {**STORE["feature_views"]["LOAN_FEATURES"], "source": SyntheticSource()}
    with pytest.raises(MlopsError, match="reads Snowflake data"):
        SnowflakeFeatureStore({**STORE, "feature_views": {"LOAN_FEATURES": local_view}}, snowfs.connection,
                              "ML", "FEATURES", "WH_XS").register("LOAN_FEATURES", overwrite=True)
    with pytest.raises(MlopsError, match="needs database"):
        SnowflakeFeatureStore(STORE, snowfs.connection).feature_store()
    with pytest.raises(MlopsError, match="spine.source must be a Snowflake"):
        make_source(snowfs, spine={"source": ParquetSource("x"), "timestamp": "TS"}).read()


def test_describe_touches_nothing(snowfs):
    source = make_source(snowfs, where="WEEK = 2")
    assert "views LOAN_FEATURES joined point-in-time onto Snowflake table SPINE at TS where WEEK = 2" in source.describe()
    snowfs.FeatureStore.assert_not_called()


def test_the_fingerprint_changes_with_the_data_under_the_views(snowfs, hash_agg_patch):
    """Defect 10: the same view names, versions and SQL over changed rows gave the same fingerprint."""
    before = make_source(snowfs).fingerprint()
    assert make_source(snowfs).fingerprint() == before
    history, _ = history_and_spine()
    history.loc[history.index[0], history.columns[-1]] = history[history.columns[-1]].iloc[1]
    snowfs.session.create_dataframe(history).write.save_as_table("HISTORY", mode="overwrite")
    assert make_source(snowfs).fingerprint() != before


# ------------------------------------------------------------------------------------------ live
ENV = "MLOPS_SNOWFLAKE_CONNECTION"


def _live_reason():
    from mlops_snowflake.connection import connections_file

    name = os.environ.get(ENV)
    if not name:
        return f"no live Snowflake connection configured: {ENV} is not set (it names a section of {connections_file()})"
    import tomllib

    try:
        if name not in tomllib.loads(connections_file().read_text()):
            return f"no live Snowflake connection configured: {connections_file()} has no [{name}] section"
    except (OSError, tomllib.TOMLDecodeError) as error:
        return f"no live Snowflake connection configured: {connections_file()} cannot be read ({type(error).__name__})"
    return None


@pytest.mark.snowflake
def test_live_feature_store_round_trip():
    """Register an entity and a view over a real table in a fresh schema, then read a point-in-time training
    set and the latest values; the schema is dropped at the end. Needs CREATE SCHEMA in the database."""
    reason = _live_reason()
    if reason:
        pytest.skip(reason)
    from mlops_snowflake.connection import SnowflakeConnection
    from mlops_snowflake.feature_store import SnowflakeFeatureStoreSource

    connection = SnowflakeConnection(os.environ[ENV])
    session = connection.session()
    schema = f"MLOPS_LIVE_FS_{uuid.uuid4().hex[:8].upper()}"
    database = session.get_current_database().strip('"')
    warehouse = session.get_current_warehouse().strip('"')
    history, spine = history_and_spine()
    try:
        session.sql(f"CREATE SCHEMA {database}.{schema}").collect()
        session.create_dataframe(history).write.save_as_table(f"{database}.{schema}.HISTORY")
        session.create_dataframe(spine).write.save_as_table(f"{database}.{schema}.SPINE")
        store = {**STORE, "feature_views": {"LOAN_FEATURES": {**STORE["feature_views"]["LOAN_FEATURES"],
                                                              "refresh_freq": None,
                                                              "source": SnowflakeSource(
                                                                  table=f"{database}.{schema}.HISTORY")}}}
        common = {"store": store, "views": ["LOAN_FEATURES"], "connection": connection, "database": database,
                  "name": schema, "default_warehouse": warehouse,
                  "spine": {"source": SnowflakeSource(table=f"{database}.{schema}.SPINE"), "timestamp": "TS",
                            "label": ["LABEL"], "columns": ["WEEK"]}}
        frame = SnowflakeFeatureStoreSource(**common).read().set_index("LOAN_ID").sort_index()
        assert list(frame.SIGNAL) == [0.1, 0.2, 0.3, 0.4]
        assert len(SnowflakeFeatureStoreSource(**common, where='"WEEK" = 2').read()) == 2
        latest = SnowflakeFeatureStoreSource(**common, mode="latest").read().set_index("LOAN_ID").sort_index()
        assert list(latest.SIGNAL) == [1.0, 0.0, 1.0, 0.0]
    finally:
        session.sql(f"DROP SCHEMA IF EXISTS {database}.{schema}").collect()
