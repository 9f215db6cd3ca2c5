"""The Snowflake plugin: ``registry=snowflake``, ``data=snowflake``, the Snowflake sink and the
``snowpark``, ``ml_job`` and ``spcs`` backends, registered through the same hooks as the built-ins.

Every implementation is named by a lazy ``"module:Class"`` string: importing this module imports no
Snowflake library, so ``mlops --help`` stays fast. The connection (``conf/connection/snowflake.yaml``,
Snowflake's ``connections.toml``) is described in :mod:`mlops_snowflake.connection`.
"""

from pathlib import Path

from mlops_framework.hookspecs import hookimpl

CONFIG_DIR = Path(__file__).resolve().parent / "conf"


@hookimpl
def register_config_dirs(register):
    register(CONFIG_DIR)


@hookimpl
def register_data_sources(register):
    register("snowflake", "mlops_snowflake.data:SnowflakeSource")
    register("snowflake_feature_store", "mlops_snowflake.feature_store:SnowflakeFeatureStoreSource")


@hookimpl
def register_sinks(register):
    register("snowflake", "mlops_snowflake.data:SnowflakeSink")


@hookimpl
def register_registries(register):
    register("snowflake", "mlops_snowflake.registry:SnowflakeRegistry")


@hookimpl
def register_backends(register):
    register("snowpark", "mlops_snowflake.snowpark:SnowparkBackend")
    register("ml_job", "mlops_snowflake.ml_job:MLJobBackend")
    register("spcs", "mlops_snowflake.spcs:SPCSBackend")


@hookimpl
def register_trackers(register):
    register("snowflake", "mlops_snowflake.tracking:SnowflakeTracker")
