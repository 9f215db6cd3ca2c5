"""The launcher's config schema, stored as the ``hydra/launcher`` option ``ml_job``."""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore


@dataclass
class MLJobLauncherConf:
    _target_: str = "hydra_plugins.mlops_ml_job_launcher.launcher.MLJobLauncher"
    # which Snowflake account submits: the run's own `connection` group when it is there (the Snowflake
    # plugin's connection=snowflake: a connections.toml section, role, warehouse...), else the defaults
    connection: Any = "${oc.select:connection,null}"
    # null: SYSTEM_COMPUTE_POOL_GPU when the trial's model.params.device is cuda*, else SYSTEM_COMPUTE_POOL_CPU
    compute_pool: Optional[str] = None
    cpu_compute_pool: str = "SYSTEM_COMPUTE_POOL_CPU"
    gpu_compute_pool: str = "SYSTEM_COMPUTE_POOL_GPU"
    stage_name: str = "MLOPS_JOBS"  # where each trial's payload is uploaded
    pip_requirements: List[str] = field(default_factory=list)  # needs an external access integration
    external_access_integrations: List[str] = field(default_factory=list)
    env_vars: Dict[str, str] = field(default_factory=dict)
    runtime_environment: Optional[str] = None
    query_warehouse: Optional[str] = None
    target_instances: int = 1
    timeout_s: int = 7200  # per trial, from its submission; the job keeps running after it
    poll_s: float = 10
    max_parallel: int = 4  # jobs in flight at once


ConfigStore.instance().store(group="hydra/launcher", name="ml_job", node=MLJobLauncherConf,
                             provider="mlops_snowflake")
