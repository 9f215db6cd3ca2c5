"""The extension points of mlops-framework: read this file to know what a plugin can add.

A plugin is a module (or object) with functions decorated by ``hookimpl`` and named like the specs
below. Built-ins are plugins too: ``mlops_framework/local.py`` registers the embedded defaults through
exactly these hooks, and ``plugins/`` holds the external ones. Third-party plugins are found through the
``mlops_framework`` entry-point group (see the README).

Two kinds of hook:

* ``register_*`` hooks are called once when the plugin manager is built. Each receives a ``register``
  callback; call it once per thing you add. A *kind* is the name a config option selects with its
  ``kind:`` key (``backend/local.yaml`` says ``kind: local``). The implementation may be the class
  itself or a lazy ``"package.module:Class"`` string, so that ``mlops --help`` imports nothing heavy.
  Classes follow the scikit-learn rule: ``__init__`` only stores its keyword arguments; the option's
  YAML keys are exactly those arguments (an unknown key is refused, naming it).
* Lifecycle hooks observe a run, in this order, for each stage: ``before_stage_run``, then
  ``after_stage_run`` or ``on_stage_error``. They must not change the run.
"""

import pluggy

PROJECT = "mlops_framework"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_config_dirs(register):
    """Add a directory of config-group options: ``register(path)``.

    Each subdirectory is a group (``backend/``, ``registry/``, ...) and each YAML file in it an option,
    selected on the command line as ``GROUP=OPTION``.
    """


@hookspec
def register_data_sources(register):
    """Add data sources: ``register(kind, cls)``.

    A source has ``read(columns) -> pandas.DataFrame``, ``batches(columns, batch_size) -> iterator of
    pyarrow.RecordBatch`` (bounded memory), ``count_rows() -> int | None``, ``fingerprint() -> str`` and
    ``describe() -> str``. Errors the user can fix raise ``MlopsError``. Optional: ``schema() ->
    [(column, DuckDB type), ...]`` read cheaply (the pre-flight check uses it before any write),
    ``validate()`` (a full parse, for sources whose types are guessed) and ``partition_by`` (the columns
    a sink with ``partition_by: auto`` replaces one value at a time).
    """


@hookspec
def register_sinks(register):
    """Add prediction sinks: ``register(kind, cls)``.

    A sink has ``describe() -> str`` and ``open()``, a context manager yielding a writer with
    ``write(batch)``. Leaving it normally commits every batch at once; leaving it by an exception (or a
    crash) keeps the previous contents intact. With ``partition_by``, only the partitions present in the
    written batches are replaced.
    """


@hookspec
def register_registries(register):
    """Add model registries: ``register(kind, cls)``.

    A registry has ``log_model(model, *, model_name, version_name, comment, metrics, metadata, tags,
    sample_input, signature, lineage) -> dict``, ``load_model(name, version_or_alias)``,
    ``get_version``, ``versions``, ``models``, ``aliases``, ``set_alias``, ``unset_alias``,
    ``set_tag``, ``history`` and ``describe() -> str``. Logging a version is all-or-nothing.
    """


@hookspec
def register_backends(register):
    """Add execution backends: ``register(kind, cls)``.

    A backend decides where a run's stages execute. It has ``plan(run) -> list[str]`` (what it would do,
    touching nothing and connecting nowhere) and ``execute(run) -> None`` (do it, filling
    ``run.results``). ``mlops_framework.local.LocalBackend`` is the reference implementation.
    """


@hookspec
def register_stages(register):
    """Add pipeline stages: ``register(stage)`` with a ``mlops_framework.pipeline.Stage``.

    A stage has a ``name``, ``run(run)`` that reads the objects it needs from the run and stores its
    output in ``run.results``, and ``describe(run) -> str`` for ``mlops plan``.
    """


@hookspec
def register_notifiers(register):
    """Add alert notifiers: ``register(kind, cls)``.

    A notifier has ``describe() -> str`` and ``notify(alerts)``, called once after a monitor run in
    which at least one alert rule fired, with the list of ``mlops_framework.alerts.Alert`` (each names
    its rule, window, column, value and threshold; ``to_dict()`` and ``message`` serialise it). It
    delivers them somewhere (console, file, webhook, email...) and raises on failure; a failing
    notifier is reported and does not stop the others. Options live under ``alerts.notifiers.NAME``
    with a ``kind:`` key.
    """


@hookspec
def before_stage_run(stage, run):
    """Called before a stage runs."""


@hookspec
def after_stage_run(stage, run, seconds):
    """Called after a stage succeeded, with its wall time."""


@hookspec
def on_stage_error(stage, run, error):
    """Called when a stage raised; the error propagates after this hook."""
