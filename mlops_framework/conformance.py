"""A conformance suite any plugin runs in its own tests (as scikit-learn's ``check_estimator``): each check
exercises one promise of ``mlops_framework.contracts`` on a real instance and raises ``AssertionError``
naming the broken promise.

``check_registry``, ``check_sink``, ``check_source`` and ``check_notifier`` run every check of their kind;
``REGISTRY_CHECKS``, ``SINK_CHECKS``, ``SOURCE_CHECKS`` and ``NOTIFIER_CHECKS`` name them one by one, so a
test can parametrize over them (and mark one it knowingly fails). Every check builds fresh instances
through the factory it is given and uses its own model names, tables or paths::

    @pytest.mark.parametrize("check", conformance.REGISTRY_CHECKS)
    def test_registry_conforms(check, tmp_path, trained_model, frame):
        conformance.REGISTRY_CHECKS[check](lambda: MyRegistry(tmp_path), trained_model, frame.head(10))
"""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor

from mlops_framework.contracts import (
    AuditedRegistry, DataSource, Notifier, ReadableSink, Registry, RollbackRegistry, Sink,
)
from mlops_framework.errors import MlopsError

_names = itertools.count(1)


def _expect(condition, message):
    if not condition:
        raise AssertionError(message)


def _raises_mlops_error(call, what):
    try:
        call()
    except MlopsError:
        return
    except Exception as error:  # noqa: BLE001 - any other exception is the failure being reported
        raise AssertionError(f"{what} raised {type(error).__name__} ({error}), not MlopsError") from error
    raise AssertionError(f"{what} did not raise MlopsError")


def _same(a, b):
    return str(a).upper() == str(b).upper()


# ------------------------------------------------------------------------------------------ registry
def _model_name():
    return f"CONFORMANCE_{next(_names)}"


def _log(registry, model, sample_input, name, **overrides):
    arguments = dict(model_name=name, version_name=None, comment="conformance", metrics={"holdout_f1": 0.5},
                     metadata={"estimator": "conformance"}, tags={}, sample_input=sample_input,
                     signature={"inputs": [{"name": c, "type": "x"} for c in sample_input.columns]},
                     lineage={"config": {}, "data_fingerprint": "sha256:conformance"})
    return registry.log_model(model, **{**arguments, **overrides})


class FailingSave:
    """A model whose ``save`` writes part of its files, then fails: logging it must leave nothing."""

    def __init__(self, model):
        self._model = model
        self.flavor = model.flavor

    def save(self, directory):
        from pathlib import Path

        (Path(directory) / "partial.json").write_text("{")
        raise RuntimeError("disk full (conformance)")


def check_registry_is_a_registry(make_registry, model, sample_input):
    registry = make_registry()
    _expect(isinstance(registry, Registry), f"{type(registry).__name__} lacks methods of contracts.Registry")
    _expect(isinstance(registry.describe(), str), "describe() must return a string")


def check_registry_logs_versions(make_registry, model, sample_input):
    registry, name = make_registry(), _model_name()
    first = _log(registry, model, sample_input, name)
    second = _log(registry, model, sample_input, name, metrics={"holdout_f1": 0.75})
    _expect(_same(first["model_name"], name) and first["version_name"], f"log_model's record lacks its names: {first}")
    _expect(not _same(first["version_name"], second["version_name"]), "two logs got the same version name")
    listed = [record["version_name"] for record in registry.versions(name)]
    _expect([v.upper() for v in listed] == [first["version_name"].upper(), second["version_name"].upper()],
            f"versions() must list both versions oldest first, got {listed}")
    record = registry.get_version(name, second["version_name"])
    _expect(_same(record["version_name"], second["version_name"]), f"get_version returned {record}")
    _expect(registry.load_model(name, first["version_name"]) is not None, "load_model returned None")
    _expect(any(_same(m["name"], name) for m in registry.models()), "models() does not list the logged model")
    _raises_mlops_error(lambda: registry.get_version(name, "NO_SUCH_VERSION"), "get_version of an unknown version")
    _raises_mlops_error(lambda: registry.versions("NO_SUCH_MODEL_CONFORMANCE"), "versions of an unknown model")
    _raises_mlops_error(lambda: _log(registry, model, sample_input, "bad name!"), "log_model with an invalid name")


def check_registry_logging_is_all_or_nothing(make_registry, model, sample_input):
    registry, name = make_registry(), _model_name()
    first = _log(registry, model, sample_input, name)
    try:
        _log(registry, FailingSave(model), sample_input, name)
    except Exception:  # noqa: BLE001 - the failure itself is expected; what it leaves is checked
        pass
    else:
        raise AssertionError("log_model of a model whose save fails did not fail")
    listed = [record["version_name"] for record in registry.versions(name)]
    _expect([v.upper() for v in listed] == [first["version_name"].upper()],
            f"a failed log_model left a version behind: {listed}")
    again = _log(registry, model, sample_input, name)
    _expect(not _same(again["version_name"], first["version_name"]), "the next log reused a version name")


def check_registry_moves_aliases(make_registry, model, sample_input):
    registry, name = make_registry(), _model_name()
    v1 = _log(registry, model, sample_input, name)["version_name"]
    v2 = _log(registry, model, sample_input, name)["version_name"]
    registry.set_alias(name, v1, "champion")
    _expect(_same(registry.aliases(name).get("CHAMPION"), v1), f"aliases() after set_alias: {registry.aliases(name)}")
    _expect(_same(registry.get_version(name, "CHAMPION")["version_name"], v1), "get_version by alias")
    registry.set_alias(name, v2, "CHAMPION")
    _expect(_same(registry.aliases(name).get("CHAMPION"), v2), "set_alias did not move the alias")
    registry.unset_alias(name, "CHAMPION")
    _expect("CHAMPION" not in registry.aliases(name), "unset_alias left the alias")
    _raises_mlops_error(lambda: registry.unset_alias(name, "CHAMPION"), "unset_alias of an unset alias")
    _raises_mlops_error(lambda: registry.set_alias(name, "NO_SUCH_VERSION", "CHAMPION"), "set_alias to an unknown version")
    _raises_mlops_error(lambda: registry.set_alias(name, v1, "not an alias"), "set_alias with an invalid alias")


def check_registry_sets_tags(make_registry, model, sample_input):
    registry, name = make_registry(), _model_name()
    _log(registry, model, sample_input, name)
    registry.set_tag(name, "OWNER", "conformance")
    tags = next(m for m in registry.models() if _same(m["name"], name))["tags"]
    _expect(any(str(k).upper().endswith("OWNER") and v == "conformance" for k, v in tags.items()),
            f"models() does not show the tag set: {tags}")
    _raises_mlops_error(lambda: registry.set_tag(name, "bad tag", "x"), "set_tag with an invalid tag name")
    _raises_mlops_error(lambda: registry.set_tag(name, "OWNER", "x" * 1000), "set_tag with a value over 256 characters")


def check_registry_keeps_history(make_registry, model, sample_input):
    registry, name = make_registry(), _model_name()
    v1 = _log(registry, model, sample_input, name)["version_name"]
    v2 = _log(registry, model, sample_input, name)["version_name"]
    _expect(registry.history(name) == [], "history() before any alias move must be empty")
    registry.set_alias(name, v1, "PROD", reason="first")
    registry.set_alias(name, v2, "PROD", reason="second", metrics={"holdout_f1": 0.9})
    registry.unset_alias(name, "PROD", reason="retired")
    history = registry.history(name)
    moves = [(e["alias"], e["old_version"], e["new_version"], e["reason"]) for e in history]
    expected = [("PROD", None, v1, "first"), ("PROD", v1, v2, "second"), ("PROD", v2, None, "retired")]
    _expect(len(moves) == 3 and all(_same(a, b) for m, x in zip(moves, expected) for a, b in zip(m, x)),
            f"history() must record every alias move, oldest first: {moves}")
    _expect(history[1]["metrics"] == {"holdout_f1": 0.9}, f"history lost the move's metrics: {history[1]}")


def check_registry_records_refusals(make_registry, model, sample_input):
    registry, name = make_registry(), _model_name()
    _expect(isinstance(registry, AuditedRegistry),
            f"{type(registry).__name__} cannot record a refused promotion (contracts.AuditedRegistry: record_refusal)")
    v1 = _log(registry, model, sample_input, name)["version_name"]
    v2 = _log(registry, model, sample_input, name)["version_name"]
    registry.set_alias(name, v1, "PROD", reason="gate passed", config_hash="sha256:one")
    registry.record_refusal(name, v2, "PROD", reason="refused: worse", metrics={"candidate_f1": 0.1},
                            config_hash="sha256:two")
    _expect(_same(registry.aliases(name).get("PROD"), v1), "a refusal moved the alias")
    last = registry.history(name)[-1]
    _expect(last.get("event") == "refused" and _same(last["new_version"], v2) and last["reason"] == "refused: worse",
            f"the refusal is not the history's last entry: {last}")
    _expect(last.get("config_hash") == "sha256:two", f"the refusal lost its config hash: {last}")


def check_registry_rolls_back(make_registry, model, sample_input):
    registry, name = make_registry(), _model_name()
    _expect(isinstance(registry, RollbackRegistry),
            f"{type(registry).__name__} cannot roll an alias back (contracts.RollbackRegistry: rollback)")
    v1 = _log(registry, model, sample_input, name)["version_name"]
    v2 = _log(registry, model, sample_input, name)["version_name"]
    _raises_mlops_error(lambda: registry.rollback(name, "PROD"), "rollback of an alias never set")
    registry.set_alias(name, v1, "PROD")
    registry.set_alias(name, v2, "PROD")
    if isinstance(registry, AuditedRegistry):
        registry.record_refusal(name, v1, "PROD", reason="refused")
    registry.rollback(name, "PROD", reason="bad release")
    _expect(_same(registry.aliases(name).get("PROD"), v1), f"rollback did not restore {v1}: {registry.aliases(name)}")
    last = registry.history(name)[-1]
    _expect(last.get("event") == "rollback" and _same(last["new_version"], v1), f"rollback not in history: {last}")
    _raises_mlops_error(lambda: registry.rollback(name, "PROD"), "rollback past the first holder")


def check_registry_concurrent_writers(make_registry, model, sample_input, writers=4):
    """Writers racing for version numbers each get a distinct version, all listed; one that loses a race
    may be refused with ``MlopsError`` (nothing of it left)."""
    name = _model_name()
    _log(make_registry(), model, sample_input, name)  # the model exists; the writers race for version numbers

    def write(_):
        try:
            return _log(make_registry(), model, sample_input, name)["version_name"]
        except MlopsError:  # a writer that lost a race may be refused, clearly; it must not lose or duplicate
            return None

    with ThreadPoolExecutor(writers) as pool:
        names = [n.upper() for n in pool.map(write, range(writers)) if n is not None]
    _expect(names, "every concurrent writer failed")
    _expect(len(set(names)) == len(names), f"concurrent writers got duplicate versions: {names}")
    listed = [r["version_name"].upper() for r in make_registry().versions(name)]
    _expect(set(names) <= set(listed) and len(listed) == len(names) + 1,
            f"versions() after concurrent writers: {sorted(listed)}, written: {names}")


REGISTRY_CHECKS = {
    "is_a_registry": check_registry_is_a_registry,
    "logs_versions": check_registry_logs_versions,
    "logging_is_all_or_nothing": check_registry_logging_is_all_or_nothing,
    "moves_aliases": check_registry_moves_aliases,
    "sets_tags": check_registry_sets_tags,
    "keeps_history": check_registry_keeps_history,
    "records_refusals": check_registry_records_refusals,
    "rolls_back": check_registry_rolls_back,
    "concurrent_writers": check_registry_concurrent_writers,
}


def check_registry(make_registry, model, sample_input):
    """Every registry check. ``make_registry()`` returns a registry over the same store each time (fresh
    objects, as separate processes would have); ``model`` is a ``TrainedModel`` and ``sample_input`` a few
    of its input rows (pandas)."""
    for check in REGISTRY_CHECKS.values():
        check(make_registry, model, sample_input)


# ---------------------------------------------------------------------------------------------- sink
def _table(weeks, value):
    import pyarrow as pa

    ids = list(range(len(weeks)))
    return pa.table({"ID": ids, "WEEK": list(weeks), "PREDICTED_SCORE": [float(value)] * len(weeks)})


def _write(sink, *tables):
    with sink.open() as writer:
        for table in tables:
            writer.write(table)


def _rows(read_back, sink):
    frame = read_back(sink)
    frame.columns = [str(c).upper() for c in frame.columns]
    return sorted(zip(frame["WEEK"].astype(int), frame["PREDICTED_SCORE"].astype(float)))


def read_back_as_source(sink):
    """The default ``read_back``: a ``contracts.ReadableSink``'s contents, read through ``as_source()``."""
    _expect(isinstance(sink, ReadableSink), f"{type(sink).__name__} cannot be read back (contracts.ReadableSink); "
                                            "pass read_back to check its writes")
    return sink.as_source().read()


def check_sink_is_a_sink(make_sink, read_back):
    sink = make_sink(None)
    _expect(isinstance(sink, Sink), f"{type(sink).__name__} lacks methods of contracts.Sink")
    _expect(isinstance(sink.describe(), str), "describe() must return a string")


def check_sink_commits_all_batches(make_sink, read_back):
    sink = make_sink(None)
    _write(sink, _table([1, 1], 0.1), _table([2], 0.2))
    _expect(_rows(read_back, sink) == [(1, 0.1), (1, 0.1), (2, 0.2)], f"read back: {_rows(read_back, sink)}")
    _write(sink, _table([3], 0.3))
    _expect(_rows(read_back, sink) == [(3, 0.3)], "without partition_by a write must replace the contents")


def check_sink_is_all_or_nothing(make_sink, read_back):
    sink = make_sink(None)
    _write(sink, _table([1], 0.1))
    try:
        with sink.open() as writer:
            writer.write(_table([2, 2], 0.2))
            raise RuntimeError("scoring failed (conformance)")
    except RuntimeError:
        pass
    _expect(_rows(read_back, sink) == [(1, 0.1)], f"a failed write changed the contents: {_rows(read_back, sink)}")
    with sink.open():
        pass
    _expect(_rows(read_back, sink) == [(1, 0.1)], "a write of no batch changed the contents")


def check_sink_replaces_partitions(make_sink, read_back):
    sink = make_sink(["WEEK"])
    _write(sink, _table([1, 2], 0.1))
    _write(sink, _table([2, 2, 3], 0.5))
    _expect(_rows(read_back, sink) == [(1, 0.1), (2, 0.5), (2, 0.5), (3, 0.5)],
            f"partition_by must replace only the written partitions: {_rows(read_back, sink)}")


def check_sink_refuses_other_columns(make_sink, read_back):
    import pyarrow as pa

    sink = make_sink(["WEEK"])  # the rows of other partitions stay: new rows must have their columns
    _write(sink, _table([1], 0.1))
    other = pa.table({"ID": [0], "WEEK": [2], "SOMETHING_ELSE": [1.0]})
    _raises_mlops_error(lambda: _write(sink, other), "writing other columns beside the rows kept by partition_by")
    _expect(_rows(read_back, sink) == [(1, 0.1)], "a refused write changed the contents")


SINK_CHECKS = {
    "is_a_sink": check_sink_is_a_sink,
    "commits_all_batches": check_sink_commits_all_batches,
    "is_all_or_nothing": check_sink_is_all_or_nothing,
    "replaces_partitions": check_sink_replaces_partitions,
    "refuses_other_columns": check_sink_refuses_other_columns,
}


def check_sink(make_sink, read_back=None):
    """Every sink check. ``make_sink(partition_by)`` returns a sink over a new, empty destination (each
    check calls it once); ``read_back(sink)`` returns its contents as pandas, by default
    ``sink.as_source().read()`` (``contracts.ReadableSink``)."""
    for check in SINK_CHECKS.values():
        check(make_sink, read_back or read_back_as_source)


# -------------------------------------------------------------------------------------------- source
def check_source_is_a_source(make_source, expected):
    source = make_source(None)
    _expect(isinstance(source, DataSource), f"{type(source).__name__} lacks methods of contracts.DataSource")
    _expect(isinstance(source.describe(), str), "describe() must return a string")


def check_source_projects_columns(make_source, expected):
    source = make_source(None)
    columns = list(expected.columns[:2])
    frame = source.read(columns=columns)
    _expect([str(c).upper() for c in frame.columns] == [c.upper() for c in columns],
            f"read({columns}) returned columns {list(frame.columns)}")
    _expect(len(frame) == len(expected), f"read returned {len(frame)} rows, not {len(expected)}")
    _expect(len(source.read().columns) >= len(expected.columns), "read() without columns must return them all")
    _raises_mlops_error(lambda: source.read(columns=["NO_SUCH_COLUMN_CONFORMANCE"]), "read of a missing column")


def check_source_filters_with_where(make_source, expected):
    column = expected.columns[0]
    threshold = sorted(expected[column])[len(expected) // 2]
    frame = make_source(f"{column} < {threshold!r}").read()
    _expect(len(frame) == int((expected[column] < threshold).sum()),
            f"where '{column} < {threshold!r}' returned {len(frame)} rows")
    _raises_mlops_error(lambda: make_source("NO_SUCH_COLUMN_CONFORMANCE > 1").read(), "a where on a missing column")


def check_source_streams_batches(make_source, expected):
    source = make_source(None)
    size = max(1, len(expected) // 3)
    batches = list(source.batches(columns=list(expected.columns), batch_size=size))
    _expect(all(b.num_rows <= size for b in batches), f"a batch is larger than batch_size={size}")
    _expect(sum(b.num_rows for b in batches) == len(expected), "the batches do not add up to the rows")
    count = source.count_rows()
    _expect(count is None or count == len(expected), f"count_rows() is {count}, not {len(expected)} or None")


def check_source_fingerprints(make_source, expected):
    first, again = make_source(None).fingerprint(), make_source(None).fingerprint()
    _expect(isinstance(first, str) and first and first == again, f"fingerprint() is not stable: {first} vs {again}")


SOURCE_CHECKS = {
    "is_a_source": check_source_is_a_source,
    "projects_columns": check_source_projects_columns,
    "filters_with_where": check_source_filters_with_where,
    "streams_batches": check_source_streams_batches,
    "fingerprints": check_source_fingerprints,
}


def check_source(make_source, expected):
    """Every source check. ``make_source(where)`` returns a source over the rows of ``expected`` (pandas,
    whose first column is numeric and used for the ``where`` check), filtered by ``where`` when given."""
    for check in SOURCE_CHECKS.values():
        check(make_source, expected)


# ------------------------------------------------------------------------------------------ notifier
def _alert():
    from mlops_framework.alerts import Alert

    return Alert(rule="conformance_rule", metric="f1", op="<", threshold=0.5, value=0.25,
                 window_start="2024-01-01", window_end="2024-01-08", column=None)


def check_notifier_delivers(make_notifier, delivered):
    notifier = make_notifier()
    _expect(isinstance(notifier, Notifier), f"{type(notifier).__name__} lacks methods of contracts.Notifier")
    _expect(isinstance(notifier.describe(), str), "describe() must return a string")
    notifier.notify([_alert()])
    text = delivered()
    _expect("conformance_rule" in text, f"the alert's rule is not in what was delivered: {text[:300]!r}")


NOTIFIER_CHECKS = {"delivers": check_notifier_delivers}


def check_notifier(make_notifier, delivered):
    """Every notifier check. ``delivered()`` returns, as text, what the notifier delivered so far."""
    for check in NOTIFIER_CHECKS.values():
        check(make_notifier, delivered)
