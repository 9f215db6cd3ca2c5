"""The Snowflake Feature Store behind the same ``feature_store`` config group as the local one.

:class:`SnowflakeFeatureStore` turns the group's entities and feature views into snowflake-ml objects:
``FeatureStore(session, database, name, default_warehouse, creation_mode=CREATE_IF_NOT_EXIST)``,
``Entity(name, join_keys, desc=...)`` and ``FeatureView(name, entities, feature_df, timestamp_col=...,
refresh_freq=..., desc=...)`` registered with ``register_feature_view(fv, version, overwrite=...)``.
A view's rows come from ``query`` (a SELECT run in Snowflake) or ``source: {kind: snowflake, table|query}``;
with ``refresh_freq`` Snowflake keeps it as a dynamic table with that target lag (or a task for a cron).
Training sets are ``generate_training_set(spine_df, features, spine_timestamp_col, spine_label_cols)``
(Snowflake's point-in-time ASOF join, a lazy DataFrame) or, as a versioned snapshot with lineage in
Snowflake, ``generate_dataset(name, spine_df, features, version=...)``; scoring reads
``retrieve_feature_values(spine_df, features)`` (each key's latest values).

:class:`SnowflakeFeatureStoreSource` (data kind ``snowflake_feature_store``) is the ``data=`` face of it:
a :class:`~mlops_snowflake.data.SnowflakeSource` whose DataFrame is the training set (or the latest values),
so ``where``, column checks, ``read``/``batches`` and the Snowpark backend's lazy DataFrame work unchanged.
Nothing is imported from snowflake.ml until a store is opened.
"""

from __future__ import annotations

import hashlib
import json

from mlops_framework.errors import MlopsError

from mlops_snowflake import connection as connection_module
from mlops_snowflake.data import SnowflakeSource, _one_line, quote, unquote

CREATION_MODES = {"create_if_not_exist": "CREATE_IF_NOT_EXIST", "fail_if_not_exist": "FAIL_IF_NOT_EXIST"}


class SnowflakeFeatureStore:
    """The ``feature_store`` group's definitions (``store``) in Snowflake schema ``database.name``."""

    def __init__(self, store: dict, connection=None, database: str | None = None, name: str | None = None,
                 default_warehouse: str | None = None, creation_mode: str = "create_if_not_exist"):
        self.store = store
        self.connection = connection
        self.database = database
        self.name = name
        self.default_warehouse = default_warehouse
        self.creation_mode = creation_mode
        self._fs = None

    # -- definitions (the same parser as the local store: one config shape)
    def definitions(self):
        from mlops_framework.contracts import parse_store

        return parse_store(self.store)

    def describe(self) -> str:
        return f"Snowflake feature store {self.database or '<connection database>'}.{self.name or '<schema>'}"

    def session(self):
        return connection_module.resolve(self.connection).session()

    def feature_store(self):
        """``snowflake.ml.feature_store.FeatureStore`` for this schema, opened once."""
        if self._fs is None:
            from snowflake.ml.feature_store import CreationMode, FeatureStore

            if self.creation_mode not in CREATION_MODES:
                raise MlopsError(f"creation_mode must be one of {', '.join(CREATION_MODES)}, not {self.creation_mode!r}")
            missing = [k for k in ("database", "name", "default_warehouse") if not getattr(self, k)]
            if missing:
                raise MlopsError(f"the Snowflake feature store needs {', '.join(missing)} (the database, the schema "
                                 f"that holds the store, and the warehouse its refreshes run on)")
            try:
                self._fs = FeatureStore(self.session(), self.database, self.name, self.default_warehouse,
                                        creation_mode=getattr(CreationMode, CREATION_MODES[self.creation_mode]))
            except MlopsError:
                raise
            except Exception as error:
                raise MlopsError(f"cannot open {self.describe()}: {_one_line(error)}") from error
        return self._fs

    # -- registration
    def entity(self, name: str):
        """The registered entity ``name``, registering it from the config when Snowflake has none."""
        from snowflake.ml.feature_store import Entity

        entities, _ = self.definitions()
        if name not in entities:
            raise MlopsError(f"no entity {name!r} in feature_store.entities")
        fs = self.feature_store()
        try:
            return fs.get_entity(name)
        except Exception:
            definition = entities[name]
            return self._call(f"registering entity {name}", fs.register_entity,
                              Entity(name, list(definition.join_keys), desc=definition.description or ""))

    def feature_df(self, view):
        """The Snowpark DataFrame of a view's rows: join keys, timestamp, features."""
        if view.transform is not None:
            raise MlopsError(f"feature view {view.name}: transform {view.transform!r} is local only; in Snowflake "
                             f"give the encoded columns as a query (or a table) with transform: null")
        columns = self._columns(view)
        if view.query is not None:
            df = self._call(f"reading the query of feature view {view.name}", self.session().sql, view.query)
            return df.select([quote(c) for c in columns])
        source = _on_connection(view.source, self.connection, f"feature view {view.name}: a Snowflake feature view "
                                f"reads Snowflake data: give its source as {{kind: snowflake, table: ...}} or a query")
        return source.snowpark_dataframe(columns)

    def join_keys(self, view) -> list[str]:
        entities, _ = self.definitions()
        keys = []
        for entity in view.entities:
            keys.extend(k for k in entities[entity].join_keys if k not in keys)
        return keys

    def _columns(self, view):
        columns = [*self.join_keys(view), view.timestamp_col]
        return columns + [c for c in view.features if c not in columns]

    def register(self, view_name: str, *, overwrite: bool = False, existing: str = "use"):
        """Register view ``view_name`` at its configured version and return the registered FeatureView.

        A version already in Snowflake is used as is (``existing="use"``), refused (``"refuse"``), or
        replaced with ``overwrite=True``."""
        from snowflake.ml.feature_store import FeatureView

        _, views = self.definitions()
        if view_name not in views:
            raise MlopsError(f"no feature view {view_name!r} in feature_store.feature_views; defined: {', '.join(views)}")
        view = views[view_name]
        fs = self.feature_store()
        if not overwrite:
            try:
                found = fs.get_feature_view(view.name, view.version)
            except Exception:
                found = None
            if found is not None:
                if existing == "refuse":
                    raise MlopsError(f"feature view {view.name} version {view.version} is already registered in "
                                     f"{self.describe()}; bump its version or register with overwrite")
                return found
        fv = FeatureView(view.name, [self.entity(e) for e in view.entities], self.feature_df(view),
                         timestamp_col=view.timestamp_col, refresh_freq=view.refresh_freq,
                         desc=view.description or "")
        return self._call(f"registering feature view {view.name} {view.version}", fs.register_feature_view,
                          fv, view.version, overwrite=overwrite)

    def feature_views(self, names, *, policy: str = "if_missing"):
        """The registered FeatureViews ``names``: registered when missing (``if_missing``), required to exist
        (``never``) or re-registered (``overwrite``)."""
        if policy not in ("if_missing", "never", "overwrite"):
            raise MlopsError(f"materialize must be one of if_missing, never, overwrite, not {policy!r}")
        _, views = self.definitions()
        out = []
        for name in names:
            if name not in views:
                raise MlopsError(f"no feature view {name!r} in feature_store.feature_views; defined: {', '.join(views)}")
            if policy == "never":
                out.append(self._call(f"reading feature view {name} {views[name].version}",
                                      self.feature_store().get_feature_view, name, views[name].version))
            else:
                out.append(self.register(name, overwrite=policy == "overwrite"))
        return out

    # -- retrieval
    def training_set(self, spine_df, names, *, spine_timestamp_col: str, spine_label_cols=(), policy="if_missing"):
        """The point-in-time training set (lazy DataFrame): spine columns + each view's features."""
        fs = self.feature_store()
        return self._call("generating the training set", fs.generate_training_set, spine_df,
                          self.feature_views(names, policy=policy), spine_timestamp_col=spine_timestamp_col,
                          spine_label_cols=list(spine_label_cols) or None)

    def dataset(self, name: str, version: str, spine_df, names, *, spine_timestamp_col: str, spine_label_cols=(),
                description: str = "", policy="if_missing"):
        """A versioned snowflake-ml Dataset of the training set (Snowflake records which views built it)."""
        fs = self.feature_store()
        return self._call(f"generating dataset {name} {version}", fs.generate_dataset, name, spine_df,
                          self.feature_views(names, policy=policy), version=version,
                          spine_timestamp_col=spine_timestamp_col, spine_label_cols=list(spine_label_cols) or None,
                          desc=description)

    def latest(self, spine_df, names, *, policy="if_missing"):
        """Each spine key's latest feature values (scoring): ``retrieve_feature_values``."""
        fs = self.feature_store()
        return self._call("retrieving feature values", fs.retrieve_feature_values, spine_df,
                          self.feature_views(names, policy=policy))

    def _call(self, what, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MlopsError:
            raise
        except Exception as error:
            raise MlopsError(f"{what} in {self.describe()} failed: {_one_line(error)}") from error


class SnowflakeFeatureStoreSource(SnowflakeSource):
    """``kind: snowflake_feature_store``: the training set (``mode: training``) or latest values
    (``mode: latest``) of ``views`` for the rows of ``spine`` (``{source: {kind: snowflake, table|query},
    timestamp, label, columns}``), as a lazy Snowpark DataFrame; ``where`` filters the output rows."""

    def __init__(self, store: dict, views: list, spine: dict, connection=None, database: str | None = None,
                 name: str | None = None, default_warehouse: str | None = None, mode: str = "training",
                 where: str | None = None, materialize: str = "if_missing",
                 creation_mode: str = "create_if_not_exist"):
        self.store = store
        self.views = views
        self.spine = spine
        self.connection = connection
        self.database = database
        self.name = name
        self.default_warehouse = default_warehouse
        self.mode = mode
        self.where = where
        self.materialize = materialize
        self.creation_mode = creation_mode
        self.table = None
        self.query = None

    def feature_store(self) -> SnowflakeFeatureStore:
        if getattr(self, "_store", None) is None:
            self._store = SnowflakeFeatureStore(self.store, self.connection, self.database, self.name,
                                                self.default_warehouse, self.creation_mode)
        return self._store

    def _names(self):
        if isinstance(self.views, str) or not self.views:
            raise MlopsError(f"data.views must list feature view names, got {self.views!r}")
        return list(self.views)

    def _spine(self):
        spec = dict(self.spine or {})
        unknown = sorted(set(spec) - {"source", "timestamp", "label", "columns"})
        if unknown:
            raise MlopsError(f"unknown key data.spine.{unknown[0]}; spine accepts: source, timestamp, label, columns")
        source = _on_connection(spec.get("source"), self.connection,
                                "data.spine.source must be a Snowflake table or query: {kind: snowflake, table: ...}")
        label = spec.get("label") or []
        columns = spec.get("columns") or []
        return (source, spec.get("timestamp"), [label] if isinstance(label, str) else list(label),
                [columns] if isinstance(columns, str) else list(columns))

    def _relation(self) -> str:
        if self.mode not in ("training", "latest"):
            raise MlopsError(f"data.mode must be training or latest, not {self.mode!r}")
        spine, timestamp, _, _ = self._spine()
        if self.mode == "training" and not timestamp:
            raise MlopsError("data.spine.timestamp must name the spine's timestamp column in training mode")
        return f"{self.mode} set of {', '.join(self._names())} over {spine.sql()}"

    def describe(self) -> str:
        spine, timestamp, _, _ = self._spine()
        views = ", ".join(self._names())
        store = self.feature_store().describe()
        if self.mode == "training":
            what = f"{store} views {views} joined point-in-time onto {spine.describe()} at {timestamp}"
        else:
            what = f"latest values of {store} views {views} for the keys of {spine.describe()}"
        return what + (f" where {self.where}" if self.where else "")

    def spine_dataframe(self):
        spine, timestamp, label, columns = self._spine()
        store = self.feature_store()
        _, views = store.definitions()
        wanted = []
        for name in self._names():
            if name not in views:
                raise MlopsError(f"no feature view {name!r} in feature_store.feature_views")
            wanted.extend(k for k in store.join_keys(views[name]) if k not in wanted)
        for c in [timestamp if self.mode == "training" else None, *label, *columns]:
            if c and c not in wanted:
                wanted.append(c)
        return spine.snowpark_dataframe(wanted)

    def snowpark_dataframe(self, columns=None):
        """The training set (or latest values) as a lazy DataFrame; only ``columns`` when given."""
        self._relation()
        store = self.feature_store()
        spine_df = self.spine_dataframe()
        _, timestamp, label, _ = self._spine()
        if self.mode == "training":
            df = store.training_set(spine_df, self._names(), spine_timestamp_col=timestamp, spine_label_cols=label,
                                    policy=self.materialize)
        else:
            df = store.latest(spine_df, self._names(), policy=self.materialize)
        available = [unquote(c) for c in df.columns]
        if columns is not None:
            self._check_columns(columns, available)
        if self.where:
            df = df.filter(self.where)
        if columns is not None:
            df = df.select([quote(c) for c in columns])
        return df

    def fingerprint(self) -> str:
        """sha256 of the views' names and versions, the spine's query, the mode and ``where``: Snowflake
        versions the views' contents (a version names one definition)."""
        _, views = self.feature_store().definitions()
        doc = {"kind": "snowflake_feature_store", "relation": self._relation(), "where": self.where,
               "views": [(n, views[n].version) for n in self._names() if n in views]}
        return "sha256:" + hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()

    def lineage(self) -> dict:
        _, views = self.feature_store().definitions()
        return {"feature_store": {"kind": "snowflake", "store": self.feature_store().describe(), "mode": self.mode,
                                  "feature_views": [{"name": n, "version": views[n].version,
                                                     "timestamp_col": views[n].timestamp_col,
                                                     "entities": list(views[n].entities),
                                                     "refresh_freq": views[n].refresh_freq}
                                                    for n in self._names() if n in views],
                                  "spine": self._spine()[0].describe()}}


def _on_connection(source, connection, refusal):
    """``source`` (built from its ``kind: snowflake`` option) on the feature store's connection unless it names
    its own; anything but a ``SnowflakeSource`` is refused with ``refusal``."""
    import copy

    if not isinstance(source, SnowflakeSource):
        raise MlopsError(refusal)
    if source.connection is None:
        source = copy.copy(source)
        source.connection = connection
    return source
