"""A Hydra sweeper running an Optuna study (ask/tell) that keeps every worker busy.

Choose it with ``hydra/sweeper=mlops_optuna`` (``conf/hparams_search/mortgage_optuna.yaml`` does).
Hydra finds it because it lives in the ``hydra_plugins`` namespace package; its config schema is
stored in Hydra's ConfigStore by ``config.py`` when Hydra scans the plugins. Optuna is imported
only when a sweep starts.
"""
