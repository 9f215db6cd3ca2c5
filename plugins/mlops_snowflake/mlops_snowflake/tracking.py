"""``tracker=snowflake``: Snowflake Experiment Tracking through snowflake-ml's ``ExperimentTracking``.

An experiment (``CREATE EXPERIMENT IF NOT EXISTS``) holds runs (``ALTER EXPERIMENT ... ADD RUN``) with
params and metrics (``MODIFY RUN ... ADD PARAMETERS / ADD METRICS``, a metric history by step) and
artifacts (``PUT`` to ``snow://experiment/...``); ``COMMIT RUN ... WITH STATUS`` ends one. Snowflake has
no nested runs and no run tags, so:

- a sweep is its own experiment, ``<experiment>_SWEEP_<sweep directory>``: one run per trial (named
  ``TRIAL_<n>``, with the ``trial`` param) and a ``SWEEP`` run holding the best trial and the leaderboard;
- tags (git commit, data fingerprint, backend, registered version) are logged as params of the same name.

The registered version is recorded by name (``mlops.model_version``); Snowflake's lineage link from a run
to a version is made only when the version is logged through ``ExperimentTracking.log_model``, which
``registry=snowflake`` does not use.
"""

from __future__ import annotations

import re
from pathlib import Path

from mlops_snowflake import connection as connection_module

UNSAFE = re.compile(r"[^A-Za-z0-9_]")


def identifier(name: str) -> str:
    """An unquoted Snowflake identifier made of ``name``: upper case, ``_`` for anything else."""
    text = UNSAFE.sub("_", str(name)).upper().strip("_") or "RUN"
    return text if text[0].isalpha() or text[0] == "_" else f"RUN_{text}"


class SnowflakeTracker:
    """Runs in experiment ``experiment`` of ``database.schema`` (default: the connection's)."""

    def __init__(self, connection=None, database: str | None = None, schema: str | None = None,
                 experiment: str = "MLOPS"):
        self.connection = connection
        self.database = database
        self.schema = schema
        self.experiment = experiment
        self._tracking = None

    def describe(self) -> str:
        where = ".".join(part for part in (self.database, self.schema) if part) or "the connection's schema"
        return (f"Snowflake experiment {identifier(self.experiment)} in {where} "
                f"({connection_module.describe(self.connection)})")

    def _open(self):
        from snowflake.ml.experiment import ExperimentTracking

        session = connection_module.resolve(self.connection).session()
        # ExperimentTracking is a process-wide singleton that keeps its first session and schema: start afresh
        ExperimentTracking._instance = None
        return ExperimentTracking(session, database_name=self.database, schema_name=self.schema,
                                  capture_source_info=False)

    # ---- the tracker contract (mlops_framework.hookspecs.register_trackers) -------------------------------
    def start_run(self, *, name, output_dir=None, parent_id=None, sweep=False):
        self._tracking = self._open()
        if sweep:
            experiment = identifier(f"{self.experiment}_SWEEP_{Path(str(output_dir or name)).name}")
            run_name = "SWEEP"
        else:
            experiment = parent_id or identifier(self.experiment)
            run_name = identifier(name)
        self._tracking.set_experiment(experiment)
        self._tracking.start_run(run_name)
        return experiment

    def log_params(self, params):
        self._tracking.log_params({str(k): str(v) for k, v in params.items()})

    def set_tags(self, tags):
        self.log_params(tags)

    def log_metrics(self, metrics, *, step=None):
        if metrics:
            self._tracking.log_metrics({str(k): float(v) for k, v in metrics.items()}, step=step or 0)

    def log_artifact(self, path):
        self._tracking.log_artifact(str(path))

    def end_run(self, status):
        self._tracking.end_run(status=status)
        self._tracking = None
