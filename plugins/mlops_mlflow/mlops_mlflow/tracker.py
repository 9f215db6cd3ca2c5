"""``tracker=mlflow``: each run an MLflow run, a sweep a parent run whose trials are its children.

Driven through ``MlflowClient`` (never MLflow's global active run, so several runs and trackers can be
open in one process). With ``uri: null`` the store is a SQLite file and an artifact directory under
``store`` (``$MLOPS_HOME/mlflow``); with ``uri: http://host:port`` a tracking server, asked first for
``/health`` so that an unreachable one fails within ``timeout_s`` instead of after MLflow's retries.
"""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

BATCH = 100  # MLflow's limit of params (and tags) per log_batch call
INVALID_KEY = re.compile(r"[^\w\-. /]")


class MlflowTracker:
    """One MLflow run at a time in experiment ``experiment`` of the store at ``uri`` (or ``store``)."""

    def __init__(self, uri: str | None = None, store: str = ".mlops/mlflow", experiment: str = "mlops",
                 timeout_s: float = 5.0):
        self.uri = uri
        self.store = store
        self.experiment = experiment
        self.timeout_s = timeout_s
        self._client = None
        self._run_id = None

    # ---- where ------------------------------------------------------------------------------------------
    @property
    def remote(self) -> bool:
        return bool(self.uri) and urllib.parse.urlsplit(self.uri).scheme in ("http", "https")

    def tracking_uri(self) -> str:
        return self.uri or f"sqlite:///{Path(self.store).resolve() / 'mlflow.db'}"

    def describe(self) -> str:
        if self.uri:
            parts = urllib.parse.urlsplit(self.uri)
            shown = parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")).geturl() \
                if parts.hostname else self.uri
            return f"MLflow experiment {self.experiment} at {shown}"
        store = Path(self.store).resolve()
        return f"MLflow experiment {self.experiment} in {store / 'mlflow.db'} (artifacts in {store / 'artifacts'})"

    # ---- the tracker contract (mlops_framework.hookspecs.register_trackers) -------------------------------
    def start_run(self, *, name, output_dir=None, parent_id=None, sweep=False):
        from mlflow.tracking import MlflowClient

        if self.remote:
            self._check_reachable()
        elif not self.uri:
            Path(self.store).mkdir(parents=True, exist_ok=True)
        self._client = MlflowClient(tracking_uri=self.tracking_uri())
        tags = {"mlflow.parentRunId": parent_id} if parent_id else {}
        run = self._client.create_run(self._experiment_id(), run_name=name, tags=tags)
        self._run_id = run.info.run_id
        return self._run_id

    def log_params(self, params):
        from mlflow.entities import Param

        items = [Param(_key(k), str(v)) for k, v in params.items()]
        for start in range(0, len(items), BATCH):
            self._client.log_batch(self._run_id, params=items[start:start + BATCH])

    def set_tags(self, tags):
        from mlflow.entities import RunTag

        items = [RunTag(_key(k), str(v)) for k, v in tags.items()]
        for start in range(0, len(items), BATCH):
            self._client.log_batch(self._run_id, tags=items[start:start + BATCH])

    def log_metrics(self, metrics, *, step=None):
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(_key(k), float(v), now, step or 0) for k, v in metrics.items()]
        if items:
            self._client.log_batch(self._run_id, metrics=items)

    def log_artifact(self, path):
        self._client.log_artifact(self._run_id, str(path))

    def end_run(self, status):
        self._client.set_terminated(self._run_id, status)
        self._run_id = None

    # ---- helpers ------------------------------------------------------------------------------------------
    def _check_reachable(self):
        url = self.uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout_s) as response:
                response.read(64)
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise ConnectionError(f"no MLflow tracking server answers at {self.describe().rsplit(' at ', 1)[-1]} "
                                  f"({reason})") from None

    def _experiment_id(self):
        from mlflow.exceptions import MlflowException

        found = self._client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        location = None if self.uri else (Path(self.store).resolve() / "artifacts").as_uri()
        try:
            return self._client.create_experiment(self.experiment, artifact_location=location)
        except MlflowException:  # created meanwhile by a parallel trial
            found = self._client.get_experiment_by_name(self.experiment)
            if found is None:
                raise
            return found.experiment_id


def _key(name) -> str:
    """MLflow accepts letters, digits, ``_ - . /`` and spaces in names; anything else becomes ``_``."""
    return INVALID_KEY.sub("_", str(name))[:250]
