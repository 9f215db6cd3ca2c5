"""The extension points of mlops-framework: read this file to know what a plugin can add.

A plugin is a module (or object) with functions decorated by ``hookimpl`` and named like the specs
below. Built-ins are plugins too: ``mlops_local/__init__.py`` registers the embedded defaults through
exactly these hooks, and ``plugins/`` holds the external ones. Third-party plugins are found through the
``mlops_framework`` entry-point group (see the README).

Two kinds of hook:

* ``register_*`` hooks are called once when the plugin manager is built. Each receives a ``register``
  callback; call it once per thing you add. A *kind* is the name a config option selects with its
  ``kind:`` key (``backend/local.yaml`` says ``kind: local``). The implementation may be the class
  itself or a lazy ``"package.module:Class"`` string, so that ``mlops --help`` imports nothing heavy.
  Classes follow the scikit-learn rule: ``__init__`` only stores its keyword arguments; the option's
  YAML keys are exactly those arguments (an unknown key is refused, naming it). What each kind must
  offer, and its optional capabilities, are the Protocols of ``mlops_framework/contracts.py``;
  ``mlops_framework.conformance`` checks an implementation against them.
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
    """Add data sources: ``register(kind, cls)``; a source follows ``contracts.DataSource``
    (optional: ``SqlSource``, ``WarehouseSource``, ``LineageSource``, ``SchemaSource``, ``ValidatedSource``,
    ``PartitionedSource``).
    """


@hookspec
def register_sinks(register):
    """Add prediction sinks: ``register(kind, cls)``; a sink follows ``contracts.Sink``
    (all-or-nothing, partition replace; optional: ``ReadableSink``, ``WarehouseSink``).
    """


@hookspec
def register_registries(register):
    """Add model registries: ``register(kind, cls)``; a registry follows ``contracts.Registry``
    (optional: ``AuditedRegistry``, ``RollbackRegistry``, ``PlannedRegistry``, ``WarehouseRegistry``).
    """


@hookspec
def register_backends(register):
    """Add execution backends: ``register(kind, cls)``; a backend follows ``contracts.Backend``.
    ``mlops_local.backend.LocalBackend`` is the reference implementation.
    """


@hookspec
def register_stages(register):
    """Add pipeline stages: ``register(stage)`` with a ``mlops_framework.pipeline.Stage``, which
    follows ``contracts.Stage``; what stages leave in ``run.results`` is ``pipeline.Results``.
    """


@hookspec
def register_notifiers(register):
    """Add alert notifiers: ``register(kind, cls)``; a notifier follows ``contracts.Notifier``.

    Options live under ``alerts.notifiers.NAME`` with a ``kind:`` key.
    """


@hookspec
def register_trackers(register):
    """Add experiment trackers: ``register(kind, cls)``; a tracker follows ``contracts.Tracker``
    (``start_run``, ``log_params``, ``log_metrics(step=...)``, ``log_artifact``, ``set_tags``,
    ``end_run(status)``, ``describe()``).

    Options live under ``tracker.NAME`` with a ``kind:`` key; ``tracker=[local,mlflow]`` chooses several.
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
