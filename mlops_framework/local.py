"""The embedded default backend, written and registered exactly as an external plugin would be.

Read this file to write a plugin: each ``hookimpl`` below answers one spec in ``hookspecs.py``.
Implementations are named by lazy ``module:Class`` strings so that nothing heavy is imported until a
run uses it.
"""

from mlops_framework.hookspecs import hookimpl
from mlops_framework.pipeline import run_stages


class LocalBackend:
    """Runs every stage in this process, on this machine's cores, with DuckDB as the warehouse."""

    def plan(self, run):
        return [f"{stage.name}: {stage.describe(run)}" for stage in run.stages]

    def execute(self, run):
        run_stages(run)


@hookimpl
def register_backends(register):
    register("local", LocalBackend)


@hookimpl
def register_data_sources(register):
    register("synthetic", "mlops_framework.sources:SyntheticSource")
    register("csv", "mlops_framework.sources:CsvSource")
    register("parquet", "mlops_framework.sources:ParquetSource")
    register("duckdb", "mlops_framework.sources:DuckDBTableSource")
    register("feature_store", "mlops_framework.feature_store:FeatureStoreSource")


@hookimpl
def register_sinks(register):
    register("duckdb", "mlops_framework.sinks:DuckDBSink")
    register("parquet", "mlops_framework.sinks:ParquetSink")


@hookimpl
def register_registries(register):
    register("local", "mlops_framework.registry:LocalRegistry")


@hookimpl
def register_notifiers(register):
    register("console", "mlops_framework.alerts:ConsoleNotifier")
    register("jsonl", "mlops_framework.alerts:JsonLinesNotifier")
    register("webhook", "mlops_framework.alerts:WebhookNotifier")
    register("email", "mlops_framework.alerts:EmailNotifier")


@hookimpl
def register_trackers(register):
    register("local", "mlops_framework.run_records:LocalTracker")


@hookimpl
def register_stages(register):
    from mlops_framework.lifecycle import LIFECYCLE_STAGES
    from mlops_framework.stages import BUILTIN_STAGES

    for stage in (*BUILTIN_STAGES, *LIFECYCLE_STAGES):
        register(stage)
