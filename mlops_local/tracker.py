"""``tracker=local`` (the default): the run records, ``tracking.json`` beside each run's outputs."""

import datetime as dt
import uuid
from pathlib import Path

from mlops_framework.files import write_json_atomic


class LocalTracker:
    """``tracker=local``: ``tracking.json`` in the run's own directory (a sweep's in the sweep directory):
    params, tags, every metric with its step history, the artifacts beside it, the parent run, the status."""

    def __init__(self, home=".mlops"):
        self.home = home
        self.record = None
        self.path = None

    def describe(self):
        return f"tracking.json in each run directory under {Path(self.home).resolve()}/runs (sweeps: multiruns/)"

    def start_run(self, *, name, output_dir, parent_id=None, sweep=False):
        if output_dir is None:
            raise ValueError("the local tracker needs a run output directory")
        self.path = Path(output_dir) / "tracking.json"
        run_id = uuid.uuid4().hex
        self.record = {"run_id": run_id, "name": name, "parent_id": parent_id, "status": "RUNNING",
                       "started": dt.datetime.now(dt.timezone.utc).isoformat(), "params": {}, "tags": {},
                       "metrics": {}, "artifacts": []}
        return run_id

    def log_params(self, params):
        self.record["params"].update({str(k): str(v) for k, v in params.items()})

    def set_tags(self, tags):
        self.record["tags"].update({str(k): str(v) for k, v in tags.items()})

    def log_metrics(self, metrics, *, step=None):
        for key, value in metrics.items():
            history = self.record["metrics"].setdefault(key, [])
            history.append({"step": len(history) if step is None else step, "value": float(value)})

    def log_artifact(self, path):
        self.record["artifacts"].append(Path(path).name)

    def end_run(self, status):
        self.record.update(status=status, finished=dt.datetime.now(dt.timezone.utc).isoformat())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path, self.record, indent=1)
