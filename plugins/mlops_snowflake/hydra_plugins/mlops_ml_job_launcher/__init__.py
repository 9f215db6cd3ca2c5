"""A Hydra launcher running each trial of a multirun as a Snowflake ML Job.

Choose it with ``mlops run -m hydra/launcher=ml_job ...``. Hydra finds it because it lives in the
``hydra_plugins`` namespace package (no ``__init__.py`` in ``hydra_plugins/`` itself); ``config.py``
stores its config schema as the ``hydra/launcher`` option ``ml_job``. snowflake-ml is imported only
when trials are submitted.
"""
