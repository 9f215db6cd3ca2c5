"""The local feature store: entities and versioned feature views in the DuckDB warehouse, point-in-time
training sets, latest values for scoring, and the ``feature_store`` data source (``data=feature_store``).

The definitions come from the ``feature_store`` config group (``conf/feature_store/mortgage.yaml``)::

    warehouse: .mlops/warehouse.duckdb           # where views are materialised
    entities:
      LOAN_ENTITY: {join_keys: [LOAN_ID], description: ...}
    feature_views:
      LOAN_FEATURES:
        entities: [LOAN_ENTITY]
        version: V1                              # a new version is a new table; an existing one is never replaced silently
        timestamp_col: WEEK_START_DATE           # when each row's values became known
        features: [APPLICANT_INCOME_000S, ...]   # the columns the view holds (besides join keys and timestamp)
        source: {kind: synthetic, ...}           # any data option, or
        query: null                              #   a SELECT run in the warehouse
        transform: null                          # null: raw columns | onehot: the FeatureContract encoding
        categorical: []                          # with transform=onehot: which features are one-hot encoded
        refresh_freq: null                       # recorded; Snowflake turns it into a dynamic-table lag or task
        description: ...

Materialising a view writes ``FEATURE_VIEW__<NAME>__<VERSION>`` (join keys, timestamp, features) and a row
of ``FEATURE_STORE_CATALOG`` (entities, keys, timestamp column, features, description, refresh schedule,
source and its fingerprint, transform, row count, materialised_at). Re-materialising an existing version
refuses unless ``overwrite=True``: a version names one set of values forever.

A training set starts from a *spine*: rows of (join keys, timestamp, labels, pass-through columns). Each
view is joined with ``ASOF LEFT JOIN ... ON keys AND spine.ts >= view.ts``: every spine row gets, per view,
the values of the latest view row at or before its timestamp, never a value that became known later;
a key with no such row gets nulls. ``latest`` retrieval (scoring) takes each key's newest row (at or
before ``as_of`` when given).

Why raw columns: views that hold the raw feature columns (``transform: null``) leave the one-hot
vocabulary to the training run's :class:`~mlops_framework.features.FeatureContract`, which is saved with
the model, so scoring still takes raw columns and the ``unseen`` policy still applies. ``transform:
onehot`` (the demo's ``LOAN_FEATURES_OHE``) materialises the contract's encoding and keeps its
vocabulary in the catalog; a model trained on such a view lists the encoded columns as
``features.numeric`` and ``features.categorical: []`` (see :func:`encoded_columns`).
"""

from __future__ import annotations

import hashlib
import json

from mlops_framework.errors import MlopsError
from mlops_framework.contracts import DataSource, FeatureView, parse_store, quote_identifier as _q, sql_string as _s
from mlops_local.sources import _Source

CATALOG = "FEATURE_STORE_CATALOG"
ENTITIES = "FEATURE_STORE_ENTITIES"
MODES = ("training", "latest")
MATERIALIZE = ("if_missing", "never", "overwrite")


def _sha(doc) -> str:
    return "sha256:" + hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def encoded_columns(catalog_row: dict) -> list[str]:
    """The feature columns of a materialised view (encoded names for ``transform: onehot``)."""
    return list(json.loads(catalog_row["features"]))


# ---------------------------------------------------------------------------------------------- store
class LocalFeatureStore:
    """Feature views of ``store`` (the ``feature_store`` group's mapping) in the DuckDB file ``warehouse``."""

    def __init__(self, store: dict, warehouse: str | None = None):
        self.store = store
        self.warehouse = warehouse or store.get("warehouse")
        self.entities, self.views = parse_store(store)
        if not self.warehouse:
            raise MlopsError("feature_store.warehouse must name the DuckDB file the views are materialised in")

    # -- helpers
    def view(self, name: str) -> FeatureView:
        if name not in self.views:
            raise MlopsError(f"no feature view {name!r} in feature_store.feature_views; defined: {', '.join(self.views) or 'none'}")
        return self.views[name]

    def join_keys(self, view: FeatureView) -> list[str]:
        keys = []
        for entity in view.entities:
            keys.extend(k for k in self.entities[entity].join_keys if k not in keys)
        return keys

    def connect(self):
        """A read-write connection to the warehouse (the same configuration as the DuckDB sink's, so both
        may be open in one process)."""
        import os

        import duckdb

        os.makedirs(os.path.dirname(os.path.abspath(self.warehouse)), exist_ok=True)
        try:
            return duckdb.connect(str(self.warehouse))
        except duckdb.Error as error:
            raise MlopsError(f"cannot open the feature store warehouse {self.warehouse}: {error}") from None

    def source_of(self, view: FeatureView):
        return view.source

    def _columns(self, view):
        columns = [*self.join_keys(view), view.timestamp_col]
        return columns + [c for c in view.features if c not in columns]

    # -- catalog
    def catalog(self, con=None) -> list[dict]:
        """Every materialised view version, oldest first."""
        own = con is None
        con = con or self.connect()
        try:
            if not _has_table(con, CATALOG):
                return []
            rel = con.sql(f"SELECT * FROM {CATALOG} ORDER BY materialized_at, name, version")
            return [dict(zip(rel.columns, row)) for row in rel.fetchall()]
        finally:
            if own:
                con.close()

    def entry(self, name: str, version: str | None = None, con=None) -> dict | None:
        version = version or self.view(name).version
        return next((r for r in self.catalog(con) if r["name"] == name and r["version"] == version), None)

    def fingerprint_of(self, view: FeatureView) -> str:
        """The source's fingerprint (a data option's own, or the query's text and content digest)."""
        if view.source is not None:
            return self.source_of(view).fingerprint()
        con = self.connect()
        try:
            row = con.sql(f"SELECT count(*), bit_xor(hash(COLUMNS(*))) FROM ({view.query}) AS q").fetchall()[0]
        except Exception as error:
            raise MlopsError(f"feature view {view.name}: cannot run its query: {str(error).splitlines()[0]}") from None
        finally:
            con.close()
        return _sha({"query": view.query, "content": list(row)})

    # -- materialisation
    def materialize(self, name: str, *, overwrite: bool = False) -> dict:
        """Write the configured version of view ``name`` and its catalog row; refuse an existing version
        unless ``overwrite``. Returns the catalog row."""
        import datetime

        view = self.view(name)
        existing = self.entry(name, view.version)
        if existing and not overwrite:
            raise MlopsError(f"feature view {name} version {view.version} is already materialised "
                             f"(table {view.table}, {existing['materialized_at']}); bump "
                             f"feature_store.feature_views.{name}.version or materialise with overwrite")
        table, transform = self._compute(view)
        fingerprint = self.fingerprint_of(view)
        keys = self.join_keys(view)
        features = [c for c in table.column_names if c not in (*keys, view.timestamp_col)]
        row = {
            "name": name, "version": view.version, "table_name": view.table,
            "entities": json.dumps(view.entities), "join_keys": json.dumps(keys), "timestamp_col": view.timestamp_col,
            "features": json.dumps(features), "description": view.description or "",
            "refresh_freq": view.refresh_freq, "source": self._describe_source(view),
            "source_fingerprint": fingerprint, "transform": transform, "rows": table.num_rows,
            "materialized_at": datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None),
        }
        con = self.connect()
        try:
            con.execute("BEGIN")
            _create_catalog(con)
            for entity in view.entities:
                e = self.entities[entity]
                con.execute(f"DELETE FROM {ENTITIES} WHERE name = ?", [e.name])
                con.execute(f"INSERT INTO {ENTITIES} VALUES (?, ?, ?)", [e.name, json.dumps(e.join_keys), e.description or ""])
            con.register("__fv_rows", table)
            con.execute(f"CREATE OR REPLACE TABLE {_q(view.table)} AS SELECT * FROM __fv_rows")
            con.unregister("__fv_rows")
            con.execute(f"DELETE FROM {CATALOG} WHERE name = ? AND version = ?", [name, view.version])
            con.execute(f"INSERT INTO {CATALOG} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", list(row.values()))
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        finally:
            con.close()
        return row

    def ensure(self, name: str, policy: str = "if_missing") -> dict:
        """The view's catalog row, materialising it per ``policy``: ``if_missing`` (and refuse a version whose
        source changed since), ``never`` (it must exist) or ``overwrite`` (always rewrite)."""
        if policy not in MATERIALIZE:
            raise MlopsError(f"materialize must be one of {', '.join(MATERIALIZE)}, not {policy!r}")
        view = self.view(name)
        if policy == "overwrite":
            return self.materialize(name, overwrite=True)
        existing = self.entry(name, view.version)
        if existing is None:
            if policy == "never":
                raise MlopsError(f"feature view {name} version {view.version} is not materialised in {self.warehouse} "
                                 f"(materialize=never)")
            return self.materialize(name)
        if policy == "if_missing":
            now = self.fingerprint_of(view)
            if now != existing["source_fingerprint"]:
                raise MlopsError(
                    f"feature view {name} version {view.version} was materialised from other data than its source "
                    f"now gives ({existing['source_fingerprint'][:19]}... vs {now[:19]}...): bump "
                    f"feature_store.feature_views.{name}.version, or set materialize=overwrite")
        return existing

    def _describe_source(self, view):
        return self.source_of(view).describe() if view.source is not None else f"query {view.query}"

    def _compute(self, view):
        """The view's rows as an Arrow table (join keys, timestamp, features; encoded with ``onehot``) and
        the transform's description for the catalog (None for raw columns)."""
        import pyarrow as pa

        columns = self._columns(view)
        if view.source is not None:
            table = self.source_of(view).read(columns=columns)
            table = pa.Table.from_pandas(table, preserve_index=False)
        else:
            con = self.connect()
            try:
                rel = con.sql(f"SELECT {', '.join(map(_q, columns))} FROM ({view.query}) AS q")
                table = rel.to_arrow_table()
            except MlopsError:
                raise
            except Exception as error:
                raise MlopsError(f"feature view {view.name}: cannot run its query: {str(error).splitlines()[0]}") from None
            finally:
                con.close()
        if view.transform == "onehot":
            return self._onehot(view, table)
        return table, None

    def _onehot(self, view, table):
        """The FeatureContract one-hot encoding of the view's features, and the contract for the catalog."""
        import pyarrow as pa

        from mlops_framework.features import FeatureContract, _learn_vocabulary

        numeric = [c for c in view.features if c not in view.categorical]
        vocabulary = {c: _learn_vocabulary(table.column(c).to_pandas(), c) for c in view.categorical}
        contract = FeatureContract(numeric=numeric, categorical=vocabulary, target="__none__", classes=[0, 1])
        matrix = contract.encode_batch(table)
        keys = [*self.join_keys(view), view.timestamp_col]
        arrays = [table.column(c) for c in keys] + [pa.array(matrix[:, j]) for j in range(matrix.shape[1])]
        doc = contract.to_dict()
        doc.pop("target"), doc.pop("classes")
        return pa.table(arrays, names=[*keys, *contract.feature_names]), json.dumps({"onehot": doc})

    # -- retrieval
    def _checked_entries(self, con, names):
        entries = []
        for name in names:
            view = self.view(name)
            entry = self.entry(name, view.version, con)
            if entry is None:
                raise MlopsError(f"feature view {name} version {view.version} is not materialised in {self.warehouse}")
            entries.append((view, entry))
        return entries

    def training_sql(self, con, spine: str, spine_columns: list[str], names: list[str], spine_timestamp: str) -> str:
        """The point-in-time SELECT over relation ``spine``: one ASOF LEFT JOIN per view."""
        select = [f"s.{_q(c)}" for c in spine_columns]
        joins = []
        taken = set(spine_columns)
        for i, (view, entry) in enumerate(self._checked_entries(con, names)):
            keys = json.loads(entry["join_keys"])
            missing = [k for k in keys if k not in spine_columns]
            if missing:
                raise MlopsError(f"the spine lacks the join key(s) {', '.join(missing)} of feature view {view.name}")
            alias = f"v{i}"
            on = " AND ".join([*(f"s.{_q(k)} = {alias}.{_q(k)}" for k in keys),
                               f"s.{_q(spine_timestamp)} >= {alias}.{_q(entry['timestamp_col'])}"])
            joins.append(f"ASOF LEFT JOIN {_q(entry['table_name'])} AS {alias} ON {on}")
            for feature in encoded_columns(entry):
                if feature in taken:
                    raise MlopsError(f"column {feature} of feature view {view.name} is also in the spine or an "
                                     f"earlier view: rename or drop it")
                taken.add(feature)
                select.append(f"{alias}.{_q(feature)}")
        return f"SELECT {', '.join(select)} FROM {spine} AS s {' '.join(joins)}"

    def latest_sql(self, con, names: list[str], spine: str | None = None, spine_columns=None, as_of=None) -> str:
        """Each key's newest values (at or before ``as_of``) of each view, for the spine's keys or every key."""
        latest = []
        for view, entry in self._checked_entries(con, names):
            keys = json.loads(entry["join_keys"])
            ts = _q(entry["timestamp_col"])
            where = f" WHERE {ts} <= {_s(as_of)}" if as_of else ""
            latest.append((keys, entry, f"(SELECT * FROM {_q(entry['table_name'])}{where} "
                                        f"QUALIFY row_number() OVER (PARTITION BY {', '.join(map(_q, keys))} "
                                        f"ORDER BY {ts} DESC) = 1)"))
        if spine is None:
            base_columns = latest[0][0]
            base = f"(SELECT {', '.join(map(_q, base_columns))} FROM {latest[0][2]})"
        else:
            base, base_columns = spine, list(spine_columns)
        select = [f"s.{_q(c)}" for c in base_columns]
        joins = []
        taken = set(base_columns)
        for i, (keys, entry, rel) in enumerate(latest):
            missing = [k for k in keys if k not in base_columns]
            if missing:
                raise MlopsError(f"the spine lacks the join key(s) {', '.join(missing)} of feature view {entry['name']}")
            alias = f"v{i}"
            joins.append(f"LEFT JOIN {rel} AS {alias} ON " + " AND ".join(f"s.{_q(k)} = {alias}.{_q(k)}" for k in keys))
            for feature in encoded_columns(entry):
                if feature not in taken:
                    taken.add(feature)
                    select.append(f"{alias}.{_q(feature)}")
        return f"SELECT {', '.join(select)} FROM {base} AS s {' '.join(joins)}"

    def training_set(self, spine, names, *, spine_timestamp: str):
        """Point-in-time join of views ``names`` onto ``spine`` (an Arrow table or pandas frame) -> Arrow table."""
        con = self.connect()
        try:
            con.register("__spine", spine)
            columns = con.sql("SELECT * FROM __spine LIMIT 0").columns
            return con.sql(self.training_sql(con, "__spine", columns, names, spine_timestamp)).to_arrow_table()
        finally:
            con.close()

    def latest(self, names, keys=None, as_of=None):
        """Latest values of views ``names`` for ``keys`` (an Arrow table or pandas frame of join keys; None:
        every key of the first view) -> Arrow table."""
        con = self.connect()
        try:
            if keys is None:
                return con.sql(self.latest_sql(con, names, as_of=as_of)).to_arrow_table()
            con.register("__keys", keys)
            columns = con.sql("SELECT * FROM __keys LIMIT 0").columns
            return con.sql(self.latest_sql(con, names, "__keys", columns, as_of)).to_arrow_table()
        finally:
            con.close()


def _has_table(con, name: str) -> bool:
    return bool(con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]).fetchall()[0][0])


def _create_catalog(con):
    con.execute(f"""CREATE TABLE IF NOT EXISTS {CATALOG} (
        name VARCHAR, version VARCHAR, table_name VARCHAR, entities VARCHAR, join_keys VARCHAR,
        timestamp_col VARCHAR, features VARCHAR, description VARCHAR, refresh_freq VARCHAR, source VARCHAR,
        source_fingerprint VARCHAR, transform VARCHAR, rows BIGINT, materialized_at TIMESTAMP)""")
    con.execute(f"CREATE TABLE IF NOT EXISTS {ENTITIES} (name VARCHAR, join_keys VARCHAR, description VARCHAR)")


# ---------------------------------------------------------------------------------------- data source
class FeatureStoreSource:
    """``data=feature_store``: a training set (or latest values) from the local feature store.

    - ``store``: the ``feature_store`` group (``${feature_store}``).
    - ``views``: the feature views to join, by name (their configured versions).
    - ``spine``: ``{source: <data option>, timestamp: COL, label: [COLS], columns: [PASS-THROUGH COLS]}``;
      only the views' join keys, ``timestamp``, ``label`` and ``columns`` are read from the spine source,
      so its own copies of feature columns can never leak in. Optional in ``latest`` mode (every key).
    - ``mode``: ``training`` (point-in-time: ``spine.timestamp >= view timestamp``) or ``latest``
      (each key's newest values, at or before ``as_of`` when set): scoring.
    - ``where``: a SQL condition on the output rows (``"WEEK <= 5"``).
    - ``materialize``: ``if_missing`` (materialise a missing version; refuse one whose source changed),
      ``never`` or ``overwrite``.

    ``read``/``batches``/``count_rows``/``fingerprint``/``describe`` follow the data-source contract
    (``mlops_local.sources``); ``lineage()`` names the views, versions, tables and source fingerprints.
    """

    def __init__(self, store: dict, views: list, spine: dict | None = None, mode: str = "training",
                 as_of: str | None = None, where: str | None = None, materialize: str = "if_missing"):
        self.store = store
        self.views = views
        self.spine = spine
        self.mode = mode
        self.as_of = as_of
        self.where = where
        self.materialize = materialize

    # -- contract
    def read(self, columns=None):
        return self._joined().read(columns)

    def batches(self, columns=None, batch_size: int = 262_144):
        return self._joined().batches(columns, batch_size)

    def count_rows(self):
        if self.where is None and self.mode == "training":
            return self._spine_source().count_rows()
        return None

    def fingerprint(self) -> str:
        """sha256 of the mode, ``where``, each view's version and source fingerprint and the spine's fingerprint."""
        views = [{"view": name, "version": entry["version"], "source": entry["source_fingerprint"]}
                 for name, entry in self._entries().items()]
        spine = self._spine_source().fingerprint() if self.spine else None
        return _sha({"kind": "feature_store", "mode": self.mode, "as_of": self.as_of, "where": self.where,
                     "views": views, "spine": spine,
                     "spine_spec": {**self._spine_spec(), "source": None} if self.spine else None})

    def describe(self) -> str:
        self._check()
        store = self._store()
        views = ", ".join(f"{n} {store.view(n).version}" for n in self._names())
        if self.mode == "training":
            spine = self._spine_source()
            what = (f"feature store views {views} joined point-in-time onto {spine.describe()} "
                    f"at {self._spine_spec()['timestamp']}")
        else:
            at = f" as of {self.as_of}" if self.as_of else ""
            keys = f" for the keys of {self._spine_source().describe()}" if self.spine else ""
            what = f"latest values{at} of feature store views {views}{keys}"
        return what + f" in {store.warehouse}" + (f" where {self.where}" if self.where else "")

    def __repr__(self):
        return f"<FeatureStoreSource {self.views!r} {self.mode}>"

    def lineage(self) -> dict:
        """What a registered version records: the store, and per view its version, table, timestamp column,
        entities, source fingerprint and when it was materialised."""
        store = self._store()
        views = []
        for entry in self._entries().values():
            views.append({key: entry[key] for key in ("name", "version", "table_name", "timestamp_col", "source",
                                                      "source_fingerprint", "rows")}
                         | {"entities": json.loads(entry["entities"]), "materialized_at": str(entry["materialized_at"])})
        return {"feature_store": {"kind": "local", "warehouse": str(store.warehouse), "mode": self.mode,
                                  "feature_views": views,
                                  "spine": self._spine_source().describe() if self.spine else None}}

    # -- internals
    def _names(self) -> list[str]:
        if isinstance(self.views, str) or not self.views:
            raise MlopsError(f"data.views must list feature view names, got {self.views!r}")
        return list(self.views)

    def _check(self):
        if self.mode not in MODES:
            raise MlopsError(f"data.mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.mode == "training" and not self.spine:
            raise MlopsError("data.spine is required in training mode: {source: ..., timestamp: ..., label: [...]}")
        if self.materialize not in MATERIALIZE:
            raise MlopsError(f"data.materialize must be one of {', '.join(MATERIALIZE)}, not {self.materialize!r}")

    def _store(self) -> LocalFeatureStore:
        if getattr(self, "_store_obj", None) is None:
            self._store_obj = LocalFeatureStore(self.store)
        return self._store_obj

    def _spine_spec(self) -> dict:
        spec = dict(self.spine or {})
        unknown = sorted(set(spec) - {"source", "timestamp", "label", "columns"})
        if unknown:
            raise MlopsError(f"unknown key data.spine.{unknown[0]}; spine accepts: source, timestamp, label, columns")
        if not isinstance(spec.get("source"), DataSource):
            raise MlopsError("data.spine.source must be a data option ({kind: ..., ...}) of the spine rows")
        if self.mode == "training" and not spec.get("timestamp"):
            raise MlopsError("data.spine.timestamp must name the spine's timestamp column")
        for key in ("label", "columns"):
            value = spec.get(key) or []
            spec[key] = [value] if isinstance(value, str) else list(value)
        return spec

    def _spine_source(self):
        return self._spine_spec()["source"]

    def _spine_columns(self) -> list[str]:
        store, spec = self._store(), self._spine_spec()
        columns = []
        for name in self._names():
            columns.extend(k for k in store.join_keys(store.view(name)) if k not in columns)
        for c in [spec.get("timestamp"), *spec["label"], *spec["columns"]]:
            if c and c not in columns:
                columns.append(c)
        return columns

    def _entries(self) -> dict:
        """Each view's catalog entry, materialised as ``materialize`` says; once per source, as ``ensure``
        fingerprints the view's source (a file hash or a table scan) and load asks for it three times."""
        if getattr(self, "_entries_cache", None) is None:
            self._check()
            self._entries_cache = {name: self._store().ensure(name, self.materialize) for name in self._names()}
        return self._entries_cache

    def _joined(self):
        store = self._store()
        self._entries()
        spine_table = None
        if self.spine:
            import pyarrow as pa

            frame = self._spine_source().read(columns=self._spine_columns())
            spine_table = pa.Table.from_pandas(frame, preserve_index=False)
        return _JoinedFeatures(self, store, spine_table)


class _JoinedFeatures(_Source):
    """A ``mlops_local.sources._Source`` over the join's SQL, so ``where``, column checks, streaming
    and errors behave exactly as for every other source."""

    def __init__(self, outer, store, spine_table):
        self.outer, self.store, self.spine_table, self.where = outer, store, spine_table, outer.where

    def _label(self):
        return "feature store " + ", ".join(self.outer._names())

    def _open(self):
        con = self.store.connect()
        try:
            outer = self.outer
            if self.spine_table is not None:
                con.register("__spine", self.spine_table)
            if outer.mode == "training":
                sql = self.store.training_sql(con, "__spine", self.spine_table.column_names, outer._names(),
                                              outer._spine_spec()["timestamp"])
            elif self.spine_table is not None:
                sql = self.store.latest_sql(con, outer._names(), "__spine", self.spine_table.column_names,
                                            outer.as_of)
            else:
                sql = self.store.latest_sql(con, outer._names(), as_of=outer.as_of)
            return con, con.sql(sql)
        except BaseException:
            con.close()
            raise
