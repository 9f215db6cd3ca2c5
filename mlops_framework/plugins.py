"""The plugin manager factory, and the tables of what plugins registered."""

import importlib
import importlib.metadata
import inspect
import os
from pathlib import Path

import pluggy

from mlops_framework import hookspecs
from mlops_framework.errors import MlopsError

DEFAULT_PLUGINS = {"local": "mlops_local"}
"""The built-in plugin, by entry-point name: registered first even where no entry points are installed."""
DISABLE_ENV = "MLOPS_DISABLE_PLUGINS"
EXTRA_ENV = "MLOPS_PLUGINS"


def get_plugin_manager(*, load_entrypoints=True, extra=()):
    """Built-ins first, then the ``mlops_framework`` entry points, then a check that every hook has a spec.

    ``MLOPS_PLUGINS=module1,module2`` also loads plugin modules that are importable but not installed as
    packages; ``MLOPS_DISABLE_PLUGINS=name1,name2`` skips external plugins by entry-point name.
    ``extra`` is ``(name, plugin)`` pairs registered last (an ML Job's payload has no entry points).
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for name, module_name in DEFAULT_PLUGINS.items():
        pm.register(importlib.import_module(module_name), name)
    if load_entrypoints:
        disabled = set(_names(DISABLE_ENV))
        for entry_point in importlib.metadata.entry_points(group=hookspecs.PROJECT):
            if entry_point.name in disabled or pm.has_plugin(entry_point.name):
                continue
            plugin = _import_plugin(entry_point.name, entry_point.value, entry_point.load)
            pm.register(plugin, entry_point.name)
        for module_name in _names(EXTRA_ENV):
            if not pm.has_plugin(module_name):
                pm.register(_import_plugin(module_name, module_name), module_name)
    for name, plugin in extra:
        pm.register(plugin, name)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as error:
        raise MlopsError(f"plugin {error.plugin!r} implements a hook with no spec: {error}") from error
    return pm


def _names(variable):
    return [name.strip() for name in os.environ.get(variable, "").split(",") if name.strip()]


def _import_plugin(name, where, load=None):
    try:
        return load() if load else importlib.import_module(where)
    except Exception as error:
        raise MlopsError(
            f"plugin {name!r} ({where}) failed to import: {type(error).__name__}: {error}. "
            f"Fix or uninstall it, or set {DISABLE_ENV}={name} to skip it."
        ) from error


class Components:
    """What the registered plugins offer: config directories, stages, and one table of kinds per hook."""

    TABLES = {
        "data": "register_data_sources",
        "sink": "register_sinks",
        "registry": "register_registries",
        "backend": "register_backends",
        "notifier": "register_notifiers",
        "tracker": "register_trackers",
    }

    def __init__(self, pm):
        self.pm = pm
        self.config_dirs = []
        pm.hook.register_config_dirs(register=lambda path: self.config_dirs.append(Path(path)))
        self.stages = {}
        pm.hook.register_stages(register=self._add_stage)
        self.kinds = {}
        for table, hook_name in self.TABLES.items():
            self.kinds[table] = entries = {}

            def register(kind, implementation, _entries=entries, _table=table):
                if kind in _entries:
                    raise MlopsError(f"two plugins register the {_table} kind {kind!r}")
                _entries[kind] = implementation

            getattr(pm.hook, hook_name)(register=register)

    def _add_stage(self, stage):
        if stage.name in self.stages:
            raise MlopsError(f"two plugins register the stage {stage.name!r}")
        self.stages[stage.name] = stage

    def implementation(self, table, kind):
        """The class registered for ``kind``, importing a lazy ``module:Class`` string on first use."""
        entries = self.kinds[table]
        if kind not in entries:
            known = ", ".join(sorted(entries)) or "none"
            raise MlopsError(f"unknown {table} kind {kind!r}; registered kinds: {known}")
        implementation = entries[kind]
        if isinstance(implementation, str):
            module_name, _, attribute = implementation.partition(":")
            implementation = getattr(importlib.import_module(module_name), attribute)
            entries[kind] = implementation
        return implementation

    NESTED = {"source": "data", "baseline_source": "data", "sink": "sink"}
    """Keys whose ``kind:`` mapping, at any depth inside an option, is built from that table."""

    def build(self, table, values, *, where):
        """Instantiate the ``kind`` named in ``values`` with the remaining keys, refusing unknown ones.

        Nested options are built first, recursively (``build_nested``): a class receives a feature
        store's view sources and its spine's source as objects, never as mappings to build itself."""
        values = dict(values)
        kind = values.pop("kind", None)
        if kind is None:
            raise MlopsError(f"{where} has no 'kind' key; registered kinds: {', '.join(sorted(self.kinds[table]))}")
        cls = self.implementation(table, kind)
        check_arguments(cls, values, where=where)
        return cls(**self.build_nested(values, where=where))

    def build_nested(self, values, *, where):
        """A copy of the mapping ``values`` in which every mapping with a ``kind`` key under a key of
        ``NESTED`` (at any depth: ``spine.source``, ``store.feature_views.V.source``) is built."""
        built = {}
        for key, value in values.items():
            if isinstance(value, dict) and "kind" in value and key in self.NESTED:
                built[key] = self.build(self.NESTED[key], value, where=f"{where}.{key}")
            elif isinstance(value, dict):
                built[key] = self.build_nested(value, where=f"{where}.{key}")
            else:
                built[key] = value
        return built


def check_arguments(cls, values, *, where):
    """Refuse keys that ``cls`` does not take (suggesting the closest) and report missing required ones."""
    import difflib

    parameters = inspect.signature(cls).parameters
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return
    accepted = [name for name, p in parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    problems = []
    for key in values:
        if key not in accepted:
            close = difflib.get_close_matches(key, accepted, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"unknown key {where}.{key}{hint}")
    for name in accepted:
        if parameters[name].default is inspect.Parameter.empty and name not in values:
            problems.append(f"missing required value {where}.{name}")
    hints = _type_hints(cls)
    for key, value in values.items():
        expected = _expected_types(hints.get(key))
        if expected and not _is_instance(value, expected):
            names = " or ".join(t.__name__ for t in expected if t is not type(None))
            problems.append(f"{where}.{key} must be {names}, not {value!r} ({type(value).__name__})")
    if problems:
        raise MlopsError("; ".join(problems) + f". {where} accepts: {', '.join(accepted)}")


def _type_hints(cls):
    import typing

    try:
        return typing.get_type_hints(cls.__init__ if not hasattr(cls, "__dataclass_fields__") else cls)
    except Exception:  # unresolvable annotations: no type check, as before
        return {}


def _expected_types(annotation):
    """The plain types an annotation allows (``float | None`` -> float, NoneType), or () for anything."""
    import types
    import typing

    if annotation is None or annotation is typing.Any:
        return ()
    options = typing.get_args(annotation) if isinstance(annotation, types.UnionType) or \
        typing.get_origin(annotation) is typing.Union else (annotation,)
    plain = tuple(typing.get_origin(o) or o for o in options)
    if not all(o in (str, int, float, bool, dict, list, type(None)) for o in plain):
        return ()
    return plain


def _is_instance(value, expected):
    if isinstance(value, bool):
        return bool in expected
    if isinstance(value, int) and float in expected:
        return True
    return isinstance(value, expected)
