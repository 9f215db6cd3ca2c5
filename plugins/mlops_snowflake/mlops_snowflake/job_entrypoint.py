"""What runs inside the ML Job: the stages of ``resolved_config.yaml``, in this process, on the pool's node.

``mlops_snowflake.ml_job.build_payload`` copies this file to the top of the payload, beside::

    resolved_config.yaml   the run's resolved, secret-free config with backend: {kind: local}
    payload.json           the plugins to register (the job has no installed entry points), git commit
    mlops_framework/       the core, mlops_snowflake/ the plugin, conf/, pluggy/

ML Jobs run it with ``runpy.run_path(..., run_name="__main__")``; ``python job_entrypoint.py`` does the
same. The module-level ``__return__`` (the run's summary, ``mlops_framework.runner.RunResult.to_dict()``,
also written to ``summary.json``) becomes ``MLJob.result()``. Outputs go to ``$MLOPS_OUTPUT_DIR``, else the job's result stage mount
(``$MLRS_STAGE_RESULT_PATH``), else ``outputs/`` beside this file.
"""

import importlib
import json
import os
import sys
from pathlib import Path

PAYLOAD_DIR = Path(__file__).resolve().parent
if str(PAYLOAD_DIR) not in sys.path:  # the payload's packages win over anything installed in the image
    sys.path.insert(0, str(PAYLOAD_DIR))


def main(payload_dir=PAYLOAD_DIR):
    """Build the run from the payload's config exactly as ``mlops run`` does, run it, return its summary."""
    import yaml

    from mlops_framework import runner
    from mlops_framework.errors import MlopsError
    from mlops_framework.plugins import Components

    payload_dir = Path(payload_dir)
    config = yaml.safe_load((payload_dir / "resolved_config.yaml").read_text())
    manifest = json.loads((payload_dir / "payload.json").read_text())
    if config["backend"].get("kind") != "local":
        raise MlopsError(f"the job's config must run its stages locally, not on backend {config['backend']}")
    if manifest.get("git_commit"):  # no checkout in the job: the version's lineage names the submitter's commit
        os.environ.setdefault("MLOPS_GIT_COMMIT", manifest["git_commit"])
    components = Components(plugin_manager(manifest["plugins"]))
    adopted = adopt_job_session(config)
    if adopted:
        print(f"mlops job: using the job's Snowflake session for {adopted} connection config(s)")
    output_dir = _output_dir(payload_dir)

    def announce(run):
        print(f"mlops job: {len(run.stages)} stages ({', '.join(s.name for s in run.stages)}), "
              f"registry {run.registry.describe()}, outputs {output_dir}")
        run.summarize("git_commit", manifest.get("git_commit"))
        run.summarize("submitted_at", manifest.get("submitted_at"))

    summary = runner.execute(config, components, output_dir, announce=announce).to_dict()
    print("mlops job summary: " + json.dumps(summary, default=str))
    return summary


def plugin_manager(plugins):
    """The core's plugin manager with built-ins plus ``plugins`` (``[[name, "module[:attr]"], ...]``)."""
    from mlops_framework.errors import MlopsError
    from mlops_framework.plugins import get_plugin_manager

    extra = []
    for name, value in plugins:
        module_name, _, attribute = value.partition(":")
        try:
            plugin = importlib.import_module(module_name)
        except ImportError as error:
            raise MlopsError(f"plugin {name!r} ({value}) is not importable in the job: {error}. "
                             f"Add it to backend.pip_requirements") from error
        extra.append((name, getattr(plugin, attribute) if attribute else plugin))
    return get_plugin_manager(load_entrypoints=False, extra=extra)


def adopt_job_session(config):
    """Inside an ML Job, hand the launcher's Snowpark session to every connection the config names.

    The job's container has no ``connections.toml``: the ML Job launcher opened a session with the
    container's OAuth token before running this file, and it is the active session. Locally (no
    Snowpark imported, or no active session) nothing happens. Returns how many connections adopted it.
    """
    snowpark = sys.modules.get("snowflake.snowpark")
    if snowpark is None:
        return 0
    try:
        from snowflake.snowpark import context

        session = context.get_active_session()
    except Exception:  # no active session: not inside a job
        return 0
    from mlops_snowflake import connection as connection_module

    configs = []
    for value in _connection_configs(config):
        if value not in configs:
            configs.append(value)
    for value in configs:
        for key, use in (("warehouse", session.use_warehouse), ("database", session.use_database),
                         ("schema", session.use_schema)):
            if value.get(key):
                use(value[key])
        connection = connection_module.resolve(value)
        connection.use_session(session)
    return len(configs)


def _connection_configs(value):
    """Every mapping under a ``connection`` key of the config, at any depth."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "connection" and isinstance(item, dict):
                yield item
            else:
                yield from _connection_configs(item)
    elif isinstance(value, list):
        for item in value:
            yield from _connection_configs(item)


def _output_dir(payload_dir):
    if os.environ.get("MLOPS_OUTPUT_DIR"):
        return Path(os.environ["MLOPS_OUTPUT_DIR"])
    result_path = os.environ.get("MLRS_STAGE_RESULT_PATH")
    if result_path:
        mount = os.environ.get("MLRS_STAGE_MOUNT_PATH", "/mnt/job_stage")
        return Path(result_path if os.path.isabs(result_path) else os.path.join(mount, result_path)) / "mlops"
    return payload_dir / "outputs"


if __name__ == "__main__":
    __return__ = main()
