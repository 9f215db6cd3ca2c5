"""The public contracts: what a source, sink, registry, backend, notifier, tracker and stage must offer, and the
optional capabilities a component may add. Plugins, built-in or external, import only the modules named
in ``PUBLIC_MODULES``; ``mlops_framework.conformance`` checks an implementation against these contracts.

A capability is a ``typing.Protocol`` checked with ``isinstance`` (``runtime_checkable``): a component has
it when it defines the named methods, and the core asks for it by name instead of probing attributes.
This module also holds the validators and SQL quoting helpers that several plugins share. It imports
nothing heavy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Iterator, Protocol, runtime_checkable

from mlops_framework.errors import MlopsError

if TYPE_CHECKING:  # annotations only
    import pandas as pd
    import pyarrow as pa

PUBLIC_MODULES = (
    "mlops_framework",
    "mlops_framework.alerts",
    "mlops_framework.config",
    "mlops_framework.conformance",
    "mlops_framework.contracts",
    "mlops_framework.errors",
    "mlops_framework.features",
    "mlops_framework.files",
    "mlops_framework.hookspecs",
    "mlops_framework.lifecycle",
    "mlops_framework.lineage",
    "mlops_framework.model",
    "mlops_framework.monitoring",
    "mlops_framework.pipeline",
    "mlops_framework.plugins",
    "mlops_framework.runner",
    "mlops_framework.scoring",
    "mlops_framework.stages",
)
"""The core modules a plugin may import. The built-in plugin (``mlops_local``) is not among them: a plugin
never imports another plugin, and the core never imports a plugin."""


# ------------------------------------------------------------------------------------------ sources
@runtime_checkable
class DataSource(Protocol):
    """Rows to train on or to score (``register_data_sources``).

    ``read(columns)`` returns a pandas DataFrame of those columns (all when None) and refuses a column
    the data lacks; ``batches(columns, batch_size)`` yields pyarrow RecordBatches of at most
    ``batch_size`` rows, in bounded memory; ``count_rows()`` is the row count, or None when counting
    would cost a scan; ``fingerprint()`` is a string that changes whenever the rows do; ``describe()``
    is one line for ``mlops plan``, touching nothing. A ``where`` option, where the source has one,
    filters rows in SQL. Every error the user can fix (missing file, table or column, bad ``where``)
    raises ``MlopsError``.
    """

    def read(self, columns: list[str] | None = None) -> "pd.DataFrame": ...

    def batches(self, columns: list[str] | None = None, batch_size: int = ...) -> Iterator["pa.RecordBatch"]: ...

    def count_rows(self) -> int | None: ...

    def fingerprint(self) -> str: ...

    def describe(self) -> str: ...


@runtime_checkable
class SqlSource(Protocol):
    """A source that can say the SQL it runs (``mlops plan`` prints it)."""

    def sql(self, columns: list[str] | None = None) -> str: ...


@runtime_checkable
class WarehouseSource(SqlSource, Protocol):
    """A source that can hand over its rows as a warehouse (Snowpark) DataFrame, so scoring never pulls
    them to the client; it can say its SQL too."""

    def snowpark_dataframe(self, columns: list[str] | None = None) -> Any: ...


@runtime_checkable
class DuckDBFileSource(Protocol):
    """A source that is a table in a DuckDB file: a stage that computes in DuckDB (the monitor) attaches
    the file read-only instead of streaming its rows. Returns ``(path, table, where or None)``."""

    def duckdb_table(self) -> tuple[str, str, str | None]: ...


@runtime_checkable
class LineageSource(Protocol):
    """A source that records where its rows came from (feature views and versions) in a registered
    version's lineage."""

    def lineage(self) -> dict: ...


@runtime_checkable
class SchemaSource(Protocol):
    """A source that describes its columns cheaply: ``[(column, DuckDB type name), ...]`` as ``read``
    returns them, reading no rows beyond a type sniffer's sample. The pre-flight check
    (``mlops_framework.preflight``) compares them across the sources a run reads before its first write."""

    def schema(self) -> list[tuple[str, str]]: ...


@runtime_checkable
class ValidatedSource(Protocol):
    """A source whose types are guessed (a CSV file): ``validate()`` parses every matching row once and
    refuses a value that does not fit its column, or no matching row; pre-flight calls it for a source
    read in full after the first write."""

    def validate(self) -> None: ...


@runtime_checkable
class PartitionedSource(Protocol):
    """A source that declares its partition columns (``None``: none); a sink with ``partition_by: auto``
    replaces one value of them at a time. ``counts_cheaply``: ``count_rows()`` never generates or parses
    every row (pre-flight counts such a source)."""

    partition_by: list[str] | None
    counts_cheaply: bool


# -------------------------------------------------------------------------------------------- sinks
class SinkWriter(Protocol):
    def write(self, batch: "pa.RecordBatch | pa.Table") -> None: ...


@runtime_checkable
class Sink(Protocol):
    """Where predictions land (``register_sinks``).

    ``open()`` is a context manager yielding a ``SinkWriter``. Leaving it normally commits every batch
    at once; leaving it by an exception (or a crash) keeps the previous contents intact; a sink that
    received no batch leaves its destination untouched. With ``partition_by``, only the partitions
    present in the written batches are replaced, and rows whose columns differ from the kept rows' are
    refused with ``MlopsError`` (``check_same_columns``).
    """

    def open(self) -> ContextManager[SinkWriter]: ...

    def describe(self) -> str: ...


@runtime_checkable
class TableSink(Protocol):
    """A sink writing into a table that keeps its columns from one write to the next: ``existing_columns()``
    names them, touching nothing (None: no table yet, or it cannot be read now; the write checks again).
    Pre-flight refuses scored data that would not fit the table before the run's first write."""

    def existing_columns(self) -> list[str] | None: ...


@runtime_checkable
class ReportingWriter(Protocol):
    """A sink writer that says, once written, what it replaced (``"WEEK 20-25: 1,000 rows -> 1,300"``;
    None when it replaced nothing): re-scoring a partition is reported in the run summary."""

    def describe_replaced(self) -> str | None: ...


@runtime_checkable
class ReadableSink(Protocol):
    """A sink whose contents can be read back as a data source (the monitor reads predictions so)."""

    def as_source(self, where: str | None = None) -> DataSource: ...


@runtime_checkable
class WarehouseSink(Protocol):
    """A sink that takes a warehouse (Snowpark) DataFrame directly (``write_dataframe`` returns the rows
    written) and can list, touching nothing, the statements that write it (``plan``)."""

    def write_dataframe(self, df: Any) -> int: ...

    def plan(self, staging: str = ..., source: str = ...) -> list[str]: ...


# ---------------------------------------------------------------------------------------- registries
@runtime_checkable
class Registry(Protocol):
    """Model versions, aliases and tags (``register_registries``).

    ``log_model(model, *, model_name, version_name, comment, metrics, metadata, tags, sample_input,
    signature, lineage)`` is all-or-nothing (a failure leaves no version) and returns the version's
    record (a dict with at least ``model_name`` and ``version_name``; ``version_name=None`` takes the
    next ``vN``). ``get_version(name, version_or_alias)`` and ``versions(name)`` (oldest first) return
    such records; ``load_model`` returns the ``TrainedModel``. ``set_alias``/``unset_alias`` move an
    alias and return its history entry; ``aliases(name)`` maps alias -> version; ``history(name)``
    lists the moves oldest first. Unknown models, versions and aliases and invalid names raise
    ``MlopsError``. Concurrent writers never lose or duplicate a version.
    """

    def log_model(self, model: Any, *, model_name: str, **details: Any) -> dict: ...

    def load_model(self, model_name: str, version_or_alias: str) -> Any: ...

    def get_version(self, model_name: str, version_or_alias: str) -> dict: ...

    def versions(self, model_name: str) -> list[dict]: ...

    def models(self) -> list[dict]: ...

    def aliases(self, model_name: str) -> dict[str, str]: ...

    def set_alias(self, model_name: str, version_name: str, alias: str, **details: Any) -> dict: ...

    def unset_alias(self, model_name: str, alias: str, **details: Any) -> dict: ...

    def set_tag(self, model_name: str, tag: str, value: str) -> None: ...

    def history(self, model_name: str) -> list[dict]: ...

    def describe(self) -> str: ...


@runtime_checkable
class PartitionedSink(Protocol):
    """A sink that replaces only the partitions present in what it writes: ``partition_by`` (None: the
    whole destination). Pre-flight checks those columns exist in the scored data."""

    partition_by: list[str] | None


@runtime_checkable
class AuditedRegistry(Protocol):
    """A registry whose history is an audit trail: refused promotions are recorded too, and alias moves
    carry the hash of the config that made them.

    ``set_alias`` and ``record_refusal`` take ``reason``, ``metrics`` and ``config_hash`` keywords;
    ``record_refusal(model, version, alias, ...)`` appends an entry with ``event: refused`` and leaves
    the alias where it is.
    """

    def record_refusal(self, model_name: str, version_name: str, alias: str, *, reason: str | None = None,
                       metrics: dict | None = None, config_hash: str | None = None) -> dict: ...


@runtime_checkable
class RollbackRegistry(Protocol):
    """A registry that can move an alias back to the version it held before (``mlops registry rollback``);
    repeated rollbacks walk further back and skip refusals; the move is a history entry with
    ``event: rollback``."""

    def rollback(self, model_name: str, alias: str, *, reason: str | None = None) -> dict: ...


@runtime_checkable
class DeletingRegistry(Protocol):
    """A registry that can delete a version (``mlops registry delete``): refused while an alias points at it,
    and recorded in the history as an entry with ``event: deleted`` and ``old_version`` the version."""

    def delete_version(self, model_name: str, version_name: str, *, reason: str | None = None) -> dict: ...


@runtime_checkable
class PlannedRegistry(Protocol):
    """A registry that can describe, touching nothing, the statements it would run to log a version and to
    move an alias (``mlops plan`` prints them)."""

    def plan_log_model(self, *, model_name: str, version_name: str | None, comment: str | None, tags: dict,
                       flavor: str, task: str | None) -> list[str]: ...

    def plan_alias(self, model_name: str, version: str, alias: str) -> list[str]: ...


@runtime_checkable
class WarehouseRegistry(Protocol):
    """A registry whose versions live in the warehouse: ``model_version`` hands over the warehouse's own
    version object (to serve or batch-score it there), ``qualified`` the model's full name."""

    def model_version(self, model_name: str, version_or_alias: str) -> Any: ...

    def qualified(self, name: str) -> str: ...


# ------------------------------------------------------------------------ backends, notifiers, stages
@runtime_checkable
class Backend(Protocol):
    """Where a run's stages execute (``register_backends``). ``plan(run)`` lists what it would do,
    touching nothing and connecting nowhere; ``execute(run)`` does it, filling ``run.results``."""

    def plan(self, run: Any) -> list[str]: ...

    def execute(self, run: Any) -> None: ...


@runtime_checkable
class Notifier(Protocol):
    """Delivers fired alerts (``register_notifiers``). ``notify(alerts)`` is called once per monitor run
    in which a rule fired, with ``mlops_framework.alerts.Alert`` objects (``to_dict()``, ``message``);
    it raises on failure (reported; the other notifiers still run)."""

    def notify(self, alerts: list) -> None: ...

    def describe(self) -> str: ...


@runtime_checkable
class Tracker(Protocol):
    """An experiment tracker (``register_trackers``), one run open at a time. ``start_run`` returns the
    run's id; with ``sweep=True`` it opens a multirun's parent, whose id each trial receives as
    ``parent_id``. ``log_params`` and ``set_tags`` take dicts of strings (params flattened and redacted),
    ``log_metrics`` numbers at ``step`` (a key logged again at a new step is a history), ``end_run`` the
    status ``"FINISHED"`` or ``"FAILED"``. ``describe()`` says where it writes, touching nothing. Any
    exception is reported once as a warning and the tracker is left out for the rest of the run."""

    def start_run(self, *, name: str, output_dir: Any = None, parent_id: str | None = None,
                  sweep: bool = False) -> str: ...

    def log_params(self, params: dict) -> None: ...

    def log_metrics(self, metrics: dict, *, step: int | None = None) -> None: ...

    def log_artifact(self, path: Any) -> None: ...

    def set_tags(self, tags: dict) -> None: ...

    def end_run(self, status: str) -> None: ...

    def describe(self) -> str: ...


@runtime_checkable
class Stage(Protocol):
    """One step of a pipeline (``register_stages``): ``name``; ``run(run)`` reads the objects it needs
    from the ``Run`` (never the config) and stores its outputs in ``run.results``; ``describe(run)``
    says in one line what it would do, touching nothing."""

    name: str
    run: Callable[[Any], None]
    describe: Callable[[Any], str]


# ------------------------------------------------------------------------- shared validators, SQL
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")
MAX_TAG_VALUE = 256


def check_name(name, what: str) -> None:
    """Model, version, alias and tag names are identifiers, as in Snowflake."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise MlopsError(f"invalid {what} {name!r}: use letters, digits, _ and $, "
                         "starting with a letter or _")


def check_tag(tag, value) -> None:
    """Tag values are strings of at most 256 characters, as in Snowflake."""
    check_name(tag, "tag name")
    if not isinstance(value, str):
        raise MlopsError(f"tag {tag!r}: value must be a string, got {type(value).__name__}")
    if len(value) > MAX_TAG_VALUE:
        raise MlopsError(f"tag {tag!r}: value is {len(value)} characters; at most {MAX_TAG_VALUE}")


def check_same_columns(table, existing, columns) -> None:
    """Refuse predictions whose columns differ (ignoring case) from those of the existing ``table``."""
    have = {c.upper(): c for c in existing}
    new = {c.upper(): c for c in columns}
    only_table = [have[k] for k in have if k not in new]
    only_new = [new[k] for k in new if k not in have]
    if only_table or only_new:
        parts = []
        if only_new:
            parts.append(f"new columns not in the table: {', '.join(only_new)}")
        if only_table:
            parts.append(f"table columns missing from the predictions: {', '.join(only_table)}")
        raise MlopsError(f"the predictions do not match the columns of existing table {table} "
                         f"({'; '.join(parts)}); drop the table or write to another one")


def partition_columns(value) -> list[str] | None:
    """A ``partition_by`` value as a list of column names: one name stays one name (never its letters)."""
    if value is None or value == []:
        return None
    if isinstance(value, str):
        return [value]
    if not all(isinstance(v, str) for v in value):
        raise MlopsError(f"partition_by must be a column name or a list of them, got {value!r}")
    return list(value)


def quote_identifier(name: str) -> str:
    """A SQL identifier, double-quoted (embedded quotes doubled)."""
    return '"' + str(name).replace('"', '""') + '"'


def sql_string(value) -> str:
    """A SQL string literal, single-quoted (embedded quotes doubled)."""
    return "'" + str(value).replace("'", "''") + "'"


def check_sql_expression(text, *, where: str) -> str:
    """Refuse a SQL fragment taken from config unless it is ONE boolean expression (``WEEK <= 5``).

    DuckDB's own parser splits ``SELECT * FROM t WHERE (<text>)`` into statements: a second statement
    (``; ATTACH ...; DROP TABLE ...``), an unbalanced parenthesis or a comment cutting the query short
    is refused before anything runs. Return ``text`` unchanged."""
    import duckdb

    if not isinstance(text, str) or not text.strip():
        raise MlopsError(f"{where} must be a SQL condition such as \"WEEK <= 5\", got {text!r}")
    try:
        statements = duckdb.extract_statements(f"SELECT * FROM t WHERE ({text}\n)")
    except duckdb.Error as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise MlopsError(f"bad {where} {text!r}: {first_line}") from None
    if len(statements) != 1:
        raise MlopsError(f"{where} must be one SQL expression, not several statements: {text!r}")
    return text


# ------------------------------------------------------------------ feature store definitions
_FEATURE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def table_name(view: str, version: str) -> str:
    """The warehouse table of one version of a view: ``FEATURE_VIEW__LOAN_FEATURES_OHE__V1``."""
    return f"FEATURE_VIEW__{view}__{version}"


@dataclass
class Entity:
    name: str
    join_keys: list
    description: str = ""


@dataclass
class FeatureView:
    """One feature view of the ``feature_store`` group. ``source`` is a data source object (built from its
    ``kind:`` mapping by ``Components.build``) or None when ``query`` is set."""

    name: str
    entities: list
    timestamp_col: str
    features: list
    version: str = "V1"
    source: Any = None
    query: str | None = None
    transform: str | None = None
    categorical: list = field(default_factory=list)
    refresh_freq: str | None = None
    description: str = ""

    @property
    def table(self) -> str:
        return table_name(self.name, self.version)


def check_feature_name(name, where):
    if not isinstance(name, str) or not _FEATURE_NAME.match(name):
        raise MlopsError(f"{where}: {name!r} is not a valid name (letters, digits and _, not starting with a digit)")


def parse_store(store) -> tuple[dict, dict]:
    """``(entities, feature_views)`` by name from the ``feature_store`` group's mapping (see
    ``mlops_local.feature_store``); every problem is one MlopsError naming the key."""
    from mlops_framework.plugins import check_arguments

    if not isinstance(store, dict):
        raise MlopsError(f"feature_store must be a mapping (the feature_store config group), got {type(store).__name__}")
    entities, views = {}, {}
    for name, values in (store.get("entities") or {}).items():
        where = f"feature_store.entities.{name}"
        check_feature_name(name, where)
        check_arguments(Entity, {"name": name, **(values or {})}, where=where)
        entity = Entity(name=name, **(values or {}))
        if not entity.join_keys or isinstance(entity.join_keys, str):
            raise MlopsError(f"{where}.join_keys must be a non-empty list of columns, got {entity.join_keys!r}")
        entities[name] = entity
    for name, values in (store.get("feature_views") or {}).items():
        where = f"feature_store.feature_views.{name}"
        check_feature_name(name, where)
        check_arguments(FeatureView, {"name": name, **(values or {})}, where=where)
        view = FeatureView(name=name, **values)
        check_feature_name(str(view.version), f"{where}.version")
        view.version = str(view.version)
        if not view.entities or any(e not in entities for e in view.entities):
            raise MlopsError(f"{where}.entities must name entities of feature_store.entities "
                             f"({', '.join(entities) or 'none defined'}), got {view.entities!r}")
        if (view.source is None) == (view.query is None):
            raise MlopsError(f"{where}: set exactly one of source (a data option) and query (a SELECT in the warehouse)")
        if view.source is not None and not isinstance(view.source, DataSource):
            raise MlopsError(f"{where}.source must be a data option with a kind: key ({{kind: parquet, path: ...}}), "
                             f"got {view.source!r}")
        if not view.features or isinstance(view.features, str):
            raise MlopsError(f"{where}.features must list the feature columns the view holds")
        if view.transform not in (None, "onehot"):
            raise MlopsError(f"{where}.transform must be null (raw columns) or onehot, not {view.transform!r}")
        unknown = [c for c in view.categorical if c not in view.features]
        if unknown:
            raise MlopsError(f"{where}.categorical names columns not in its features: {', '.join(unknown)}")
        views[name] = view
    return entities, views


def previous_holders(history: list[dict], alias: str) -> list:
    """The stack of versions ``alias`` held before its current one, replaying a registry's history: a
    rollback pops, a set or unset pushes the old holder, a refusal changes nothing. Every registry that
    rolls back (``RollbackRegistry``) follows this rule."""
    stack = []
    for entry in history:
        if entry.get("alias") != alias:
            continue
        event = entry.get("event") or ("set" if entry.get("new_version") else "unset")
        if event == "rollback":
            if stack:
                stack.pop()
        elif event in ("set", "unset") and entry.get("old_version") != entry.get("new_version"):
            stack.append(entry.get("old_version"))
    return stack
