"""The sweeper's config schema, stored as the ``hydra/sweeper`` option ``mlops_optuna``."""

from dataclasses import dataclass, field
from typing import Dict, List, Optional

from hydra.core.config_store import ConfigStore

from mlops_framework.workers import DEFAULT_PRELOAD


@dataclass
class MlopsOptunaSweeperConf:
    _target_: str = "hydra_plugins.mlops_optuna_sweeper.sweeper.MlopsOptunaSweeper"
    # what to optimise: a key of the trial's metrics (summary.json's holdout_* and evaluation.json's
    # validation_*/holdout_*), and whether bigger is better
    metric: str = "validation_f1"
    direction: str = "maximize"
    # trials this session runs (a resumed study gets this many more), and how many run at once
    n_trials: int = 20
    n_jobs: int = -1  # -1: one worker per core
    # OpenMP/BLAS threads per trial; null: max(1, cores // n_jobs)
    threads_per_trial: Optional[int] = None
    sampler: str = "tpe"  # tpe | random
    seed: Optional[int] = None  # the sampler's seed (a resumed session uses seed + trials so far)
    study_name: str = "mlops"
    # null: <sweep dir>/optuna.journal (resume with hydra.sweep.dir=<that dir>); a path ending in
    # .journal, or an RDB URL such as sqlite:///studies.db, to keep a study elsewhere
    storage: Optional[str] = None
    # the search space, in Hydra's override grammar: range(3, 10) (ints, 10 excluded, as in a grid),
    # interval(0.5, 1.0), tag(log, interval(0.01, 0.3)), tag(int, interval(1, 100)), a,b,c or choice(a, b);
    # a plain value fixes the key for every trial
    params: Dict[str, str] = field(default_factory=dict)
    # seconds a trial may run before its worker is killed and the trial told FAIL; null: no limit
    timeout_s: Optional[float] = None
    # modules imported once, before the workers fork, so that no trial pays for them
    preload: List[str] = field(default_factory=lambda: list(DEFAULT_PRELOAD))


ConfigStore.instance().store(group="hydra/sweeper", name="mlops_optuna", node=MlopsOptunaSweeperConf,
                             provider="mlops_framework")
