"""The built-in plugin: the embedded local defaults, written and registered exactly as an external plugin
(``plugins/mlops_snowflake``) is.

Read this file to write a plugin: each ``hookimpl`` below answers one spec in ``mlops_framework/hookspecs.py``.
Implementations are named by lazy ``module:Class`` strings so that nothing heavy is imported until a run
uses it; each lives in a module of this package: ``backend`` (the local backend and its warehouse lock),
``sources``, ``sinks``, ``registry`` (the file registry), ``feature_store``, ``synthetic`` (the demo's
generated data), ``notifiers`` and ``tracker``. Like any plugin, it imports only the core's public modules
(``mlops_framework.contracts.PUBLIC_MODULES``).
"""

from mlops_framework.hookspecs import hookimpl


@hookimpl
def register_backends(register):
    register("local", "mlops_local.backend:LocalBackend")


@hookimpl
def register_data_sources(register):
    register("synthetic", "mlops_local.sources:SyntheticSource")
    register("csv", "mlops_local.sources:CsvSource")
    register("parquet", "mlops_local.sources:ParquetSource")
    register("duckdb", "mlops_local.sources:DuckDBTableSource")
    register("feature_store", "mlops_local.feature_store:FeatureStoreSource")


@hookimpl
def register_sinks(register):
    register("duckdb", "mlops_local.sinks:DuckDBSink")
    register("parquet", "mlops_local.sinks:ParquetSink")


@hookimpl
def register_registries(register):
    register("local", "mlops_local.registry:LocalRegistry")


@hookimpl
def register_notifiers(register):
    register("console", "mlops_local.notifiers:ConsoleNotifier")
    register("jsonl", "mlops_local.notifiers:JsonLinesNotifier")
    register("webhook", "mlops_local.notifiers:WebhookNotifier")
    register("email", "mlops_local.notifiers:EmailNotifier")


@hookimpl
def register_trackers(register):
    register("local", "mlops_local.tracker:LocalTracker")


@hookimpl
def register_stages(register):
    from mlops_framework.lifecycle import LIFECYCLE_STAGES
    from mlops_framework.stages import BUILTIN_STAGES

    for stage in (*BUILTIN_STAGES, *LIFECYCLE_STAGES):
        register(stage)
