"""Pre-flight: everything a run will read is checked before its first write, and what a failed run left
behind is named.

:func:`check` runs before the first stage (``pipeline.run_stages``). It asks each source the stages will
read for its :meth:`schema` (column names and types; a CSV file's header and DuckDB's sniffer sample, a
Parquet file's footer, nothing generated), so a missing file, an unreadable header, a duplicate column,
a short line or a bad type override is refused before a version is registered or a table is written.
Then, for the stages in the pipeline:

- training (``load``) and new data (``retrain``): the feature columns and the target exist;
- scoring (``score``): the ``scoring.version`` exists unless the run makes it; the feature columns exist and each has the same kind of type as in the training
  data, or, in a run that does not train, the scored version's signature (number, text, boolean, time);
  a mismatch names the column and both types; a difference within a kind (BIGINT trained, DOUBLE scored)
  is noted in the run summary;
- the scored data fits the columns of the table the sink writes into, when it exists;
- the scoring sink's partition columns and the monitor's timestamp exist in the scored data (or in
  ``monitor.source``, with the target and the score column), the timestamp a date or timestamp;
- a CSV file that is scored or retrained on (read in full, after the first write) is parsed once in full,
  so a value past the sniffer's sample that does not fit its column's type, or a ``where`` that matches
  no row, is refused now (a Parquet file or DuckDB table is counted).

Sources without ``schema()`` (a plugin's warehouse tables, the feature store) are checked by their own
stages. :func:`left_behind` says what a run wrote before it failed and how to remove it.
"""

from mlops_framework.contracts import PartitionedSink, TableSink
from mlops_framework.errors import MlopsError

_KINDS = (("number", ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER",
                      "UBIGINT", "FLOAT", "DOUBLE", "DECIMAL", "REAL")),
          ("boolean", ("BOOLEAN",)),
          ("time", ("DATE", "TIMESTAMP", "TIME")),
          ("text", ("VARCHAR", "ENUM")))


_PANDAS_KINDS = (("number", ("int", "uint", "float", "Int", "UInt", "Float")), ("boolean", ("bool",)),
                 ("time", ("datetime", "date")), ("text", ("object", "string", "str", "category")))


def type_kind(type_name: str) -> str:
    """``number``, ``boolean``, ``time``, ``text`` or the type itself, for a DuckDB type or a pandas dtype
    (a registered version's signature): types of one kind are interchangeable for a model (an integer
    column scored where doubles were trained is fine; text is not)."""
    name = str(type_name)
    for kind, prefixes in _KINDS:
        if name.upper().startswith(prefixes):
            return kind
    for kind, prefixes in _PANDAS_KINDS:
        if name.startswith(prefixes):
            return kind
    return name


def check(run) -> None:
    """Raise :class:`MlopsError` for the first problem in what ``run``'s stages will read; touch nothing.
    Cheap checks (schemas) come first, then the full parse of scored or retrained CSV files."""
    names = [stage.name for stage in run.stages]

    def _schema(source):
        return source_schema(run, source)

    spec = run.features
    if not spec.inferred:
        inputs = [*spec.numeric, *spec.categorical]
    elif "load" in names:  # roles come from the training data's types: only the columns named are known
        inputs = []
    else:  # a score-only run: the registered version's input columns
        inputs = list(_registered_types(run) or {})
    to_parse = []
    training = None
    if "load" in names:
        training = _schema(run.source)
        _require(training, [c for c in (*inputs, spec.target, spec.time) if c], "the training data", run.source)
    if "retrain" in names:
        source = run.retrain.source if run.retrain and run.retrain.source else run.source
        schema = _schema(source)
        _require(schema, [*inputs, spec.target], "the retrain source", source)
        _same_types(training, schema, inputs, "the retrain source", source, run)
        to_parse.append(source)
    monitor = run.monitor if "monitor" in names else None
    if "score" in names:
        _scored_version_exists(run, names)
        source = run.scoring.source or run.source
        schema = _schema(source)
        _require(schema, inputs, "the scoring source", source)
        _same_types(training if training is not None else _registered_types(run), schema, inputs,
                    "the scoring source", source, run)
        partitions = list(run.scoring.sink.partition_by or []) if isinstance(run.scoring.sink, PartitionedSink) else []
        _require(schema, partitions, "the scoring source", source,
                 hint="the sink partitions by it: set scoring.sink.partition_by=null to replace the whole table")
        if isinstance(run.scoring.sink, TableSink):
            _fits_table(run.scoring.sink, schema, spec.target, source)
        if monitor and monitor.source is None:
            _require(schema, [monitor.timestamp], "the scoring source", source,
                     hint="the monitor cuts windows on it: set monitor.timestamp (or features.time)")
            _time_column(schema, monitor.timestamp, source)
        to_parse.append(source)
    if monitor and monitor.source is not None and ("score" not in names or names.index("monitor") < names.index("score")):
        schema = _schema(monitor.source)  # a table this run scores into is checked when it exists
        _require(schema, [monitor.timestamp, spec.target, monitor.score_column], "the monitor source", monitor.source)
        _time_column(schema, monitor.timestamp, monitor.source)
    for source in {id(s): s for s in to_parse}.values():
        _validate(source)


def _scored_version_exists(run, names):
    """In a run that registers a version before it scores, a ``scoring.version`` the run cannot make itself
    (registering it under that name, or a promote stage before the first score moving an alias) must be in
    the registry already. (A run that scores first writes nothing before its score stage says so.)"""
    version = run.scoring.version
    before = names[:names.index("score")]
    if not version or "register" not in before or "promote" in before or version == run.registration.version_name:
        return
    try:
        run.registry.get_version(run.registration.model_name, version)
    except MlopsError as error:
        raise MlopsError(f"scoring.version={version}: {error}") from None


def source_schema(run, source) -> dict | None:
    """``{column: type}`` of ``source``, or None when it cannot describe itself cheaply. Read once a run
    (kept in ``run.schemas``): the check, the ``load`` stage and the training data often being the scored
    data ask for the same source."""
    if id(source) not in run.schemas:
        run.schemas[id(source)] = _describe(source)
    return run.schemas[id(source)]


def _describe(source):
    """``{column: type}``, or None when the source cannot describe itself cheaply."""
    from mlops_framework.contracts import SchemaSource

    return dict(source.schema()) if isinstance(source, SchemaSource) else None


def _validate(source):
    """A source a stage reads in full after a write: a CSV file (types guessed) is parsed all now, one extra
    pass over the file; another source that counts cheaply (Parquet, a DuckDB table) must have a row."""
    from mlops_framework.contracts import PartitionedSource, ValidatedSource

    if isinstance(source, ValidatedSource):
        source.validate()
    elif isinstance(source, PartitionedSource) and source.counts_cheaply:
        if source.count_rows() == 0:
            raise MlopsError(f"no rows for {source.describe()}")


def _require(schema, columns, what, source, hint=None):
    if schema is None:
        return
    missing = [c for c in dict.fromkeys(columns) if c and c not in schema]
    if missing:
        import difflib

        near = {c: a for c in missing for a in schema if a.lower() == c.lower()}
        near.update({c: close[0] for c in missing if c not in near
                     for close in [difflib.get_close_matches(c, list(schema), n=1, cutoff=0.8)] if close})
        close = "".join(f" (did you mean {near[c]!r} for {c!r}?)" for c in missing if c in near)
        raise MlopsError(
            f"{what} ({source.describe()}) lacks column{'s' if len(missing) > 1 else ''} "
            f"{', '.join(missing)}{close}{'; ' + hint if hint else ''}; it has: {', '.join(schema)}")


def _fits_table(sink, schema, target, source):
    """The scored data has the columns of the sink's existing table, but for those scoring adds
    (predictions, traceability, a target the data lacks)."""
    from mlops_framework.features import written_by_scoring

    existing = sink.existing_columns() if schema is not None else None
    if not existing:
        return
    table, scored = {c.upper() for c in existing}, {c.upper() for c in schema}
    new = [c for c in schema if c.upper() not in table]
    gone = [c for c in existing
            if c.upper() not in scored and c.upper() != (target or "").upper() and not written_by_scoring(c)]
    if new or gone:
        parts = [f"{what}: {', '.join(names)}" for what, names in
                 (("columns not in the table", new), ("table columns not in the scored data", gone)) if names]
        raise MlopsError(
            f"the scoring source ({source.describe()}) does not fit {sink.describe()} ({'; '.join(parts)}): "
            f"scoring keeps the table's columns; set scoring.sink.table to another name, or drop the table")


def _time_column(schema, column, source):
    if schema is not None and column in schema and type_kind(schema[column]) != "time":
        raise MlopsError(
            f"monitor.timestamp {column} is {schema[column]} in {source.describe()}, not a date or timestamp; "
            f"name another column, or parse it with the data option's types: "
            f"{{{column}: {{type: timestamp, format: \"%Y-%m-%d %H:%M:%S\"}}}}")


_PANDAS_TO_DUCKDB = {"int8": "TINYINT", "int16": "SMALLINT", "int32": "INTEGER", "int64": "BIGINT",
                     "float32": "FLOAT", "float64": "DOUBLE", "bool": "BOOLEAN", "boolean": "BOOLEAN", "object": "VARCHAR",
                     "string": "VARCHAR", "str": "VARCHAR", "category": "VARCHAR"}


def _duckdb_name(type_name) -> str:
    """A pandas dtype name as the DuckDB type it reads back as; DuckDB types as they are."""
    name = str(type_name)
    if name.startswith("datetime64"):
        return "TIMESTAMP"
    return _PANDAS_TO_DUCKDB.get(name, name)


def _registered_types(run):
    """``{column: dtype}`` of the version a score-only run will use, from its signature; None if unknown."""
    name = run.registration.model_name
    try:  # the score stage's choice (stages.scoring_version), without importing the stages here
        version = run.scoring.version or (run.registry.versions(name) or [{}])[-1].get("version_name")
        info = run.registry.get_version(name, version) if version else None
    except Exception:  # noqa: BLE001 - a missing model or an unreachable registry: the score stage says which
        return None
    inputs = ((info or {}).get("signature") or {}).get("inputs") or []
    return {item["name"]: _duckdb_name(item["type"]) for item in inputs} or None


def _same_types(training, other, columns, what, source, run):
    """Refuse a column whose kind of type differs from training's; note one whose type differs within its
    kind (BIGINT trained, DOUBLE scored) in the run summary."""
    if training is None or other is None:
        return
    notes = [f"{c} {training[c]} in training, {other[c]} in {what}" for c in columns
             if c in training and c in other and _duckdb_name(training[c]) != _duckdb_name(other[c])
             and type_kind(training[c]) == type_kind(other[c])]
    if notes:
        run.summarize("types", "; ".join(notes) + " (same kind: used as they are)")
    clashes = [f"{c} is {training[c]} in the training data but {other[c]} in {what}" for c in columns
               if c in training and c in other and type_kind(training[c]) != type_kind(other[c])]
    if clashes:
        column = next(c for c in columns if c in training and c in other
                      and type_kind(training[c]) != type_kind(other[c]))
        raise MlopsError(f"column types differ between the training data and {what} ({source.describe()}): "
                         f"{'; '.join(clashes)}; fix the data, or read it as the training type with the data "
                         f"option's types: {{{column}: {training[column]}}}")


def left_behind(run) -> str:
    """What the stages that ran wrote (registered versions, moved aliases, scored tables, monitoring rows,
    explanations) and how to undo each, in one sentence; empty when nothing was written."""
    parts = []
    name = run.registration.model_name
    for version in run.results.get("registered", []):
        parts.append(f"registered {name} {version} (remove it: mlops registry delete {name} {version})")
    for record in run.results.get("promotions", []):
        if record.get("promoted"):
            parts.append(f"moved {record['alias']} to {record['candidate']} "
                         f"(undo: mlops registry rollback {name} {record['alias']})")
    for scored in run.results.get("scored_log", []):
        parts.append(f"wrote {scored['rows']:,} rows into {scored['destination']}")
    for result in run.results.get("monitor_runs", []):
        spec = run.monitor
        parts.append(f"appended monitoring rows of run {result.get('run_id')} to {spec.performance_table}, "
                     f"{spec.drift_table} and {spec.alerts_table} in {spec.warehouse} (delete them WHERE RUN_ID = "
                     f"'{result.get('run_id')}')")
    if "explanation" in run.results:
        parts.append(f"wrote explanations to {', '.join(map(str, run.results['explanation'].get('written_to', [])))}")
    return "; ".join(parts)
