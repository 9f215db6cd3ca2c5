"""The launcher's config schema, stored as the ``hydra/launcher`` option ``mlops_local``."""

from dataclasses import dataclass, field
from typing import List, Optional

from hydra.core.config_store import ConfigStore

from mlops_framework.workers import DEFAULT_PRELOAD


@dataclass
class LocalLauncherConf:
    _target_: str = "hydra_plugins.mlops_local_launcher.launcher.LocalLauncher"
    # trials at once, one worker process each; -1: one per core. 1 runs the trials in this process,
    # one after the other, as Hydra's basic launcher does (unless timeout_s is set)
    n_jobs: int = -1
    # OpenMP/BLAS threads per trial; null: max(1, cores // workers)
    threads_per_trial: Optional[int] = None
    # seconds a trial may run before its worker is killed and the trial reported failed; null: no limit
    timeout_s: Optional[float] = None
    # modules imported once, before the workers fork, so that no trial pays for them
    preload: List[str] = field(default_factory=lambda: list(DEFAULT_PRELOAD))


ConfigStore.instance().store(group="hydra/launcher", name="mlops_local", node=LocalLauncherConf,
                             provider="mlops_framework")
