"""A Hydra launcher running a multirun's trials on warm local worker processes.

Choose it with ``mlops run -m hydra/launcher=mlops_local ...`` (``conf/hparams_search/mortgage_grid.yaml``
does). Hydra finds it because it lives in the ``hydra_plugins`` namespace package; ``config.py`` stores its
config schema as the ``hydra/launcher`` option ``mlops_local``.
"""
