"""One runner: config -> components -> run -> backend -> one typed result, with one summary shape.

``mlops run`` (``cli.execute``), the ML Job entrypoint (inside the job) and the ML Job launcher (which
prepares each trial with ``prepare`` and reads the job's returned summary with ``RunResult.from_dict``)
all go through here, so a run's ``summary.json`` has the same keys wherever the stages ran, and the sweep
reads the model and version of a trial from it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

SUMMARY_FILE = "summary.json"
RESOLVED_CONFIG_FILE = "resolved_config.yaml"
_FIELDS = ("model", "version", "registry", "metrics", "scored", "outputs")


@dataclass
class RunResult:
    """What a run produced. ``to_dict()`` is ``summary.json``: the fields below, plus each ``extra`` line
    (what stages and backends added with ``Run.summarize``) as a top-level key."""

    model: str
    version: str | None = None          # the version this run registered (a name, never a record)
    registry: str | None = None         # the registry's description, when a version was registered
    metrics: dict = field(default_factory=dict)  # "validation_<metric>" and "holdout_<metric>", 4 decimals
    scored: dict | None = None          # rows, seconds, destination, version of the score stage
    outputs: str | None = None          # the run's output directory
    extra: dict = field(default_factory=dict)

    @classmethod
    def of(cls, run) -> "RunResult":
        """The result of a run whose backend has executed."""
        results = run.results
        version = results.get("version") or {}
        metrics = results.get("metrics") or {}
        return cls(
            model=run.registration.model_name,
            version=version.get("version_name"),
            registry=run.registry.describe() if version else None,
            metrics={key: round(float(value), 4) for key, value in metrics.items()
                     if key.startswith(("validation_", "holdout_")) and value is not None},
            scored=json.loads(json.dumps(results["scored"], default=str)) if results.get("scored") else None,
            outputs=str(run.output_dir) if run.output_dir else None,
            extra=dict(results.get("summary") or {}),
        )

    @classmethod
    def from_dict(cls, data: dict) -> "RunResult":
        """Read back ``to_dict()`` (a ``summary.json``, an ML Job's returned result)."""
        data = dict(data or {})
        known = {key: data.pop(key) for key in _FIELDS if key in data}
        return cls(model=known.pop("model", None), **known, extra=data)

    def to_dict(self) -> dict:
        summary = {key: getattr(self, key) for key in _FIELDS}
        summary.update(self.extra)
        return summary

    def lines(self) -> list[str]:
        """The summary as ``mlops run`` prints it."""
        lines = [f"model     {self.model} {self.version or ''}".rstrip()]
        holdout = {k: v for k, v in self.metrics.items() if k.startswith("holdout_")}
        if holdout:
            lines.append("holdout   " + "  ".join(f"{k.removeprefix('holdout_')}={v}" for k, v in holdout.items()))
        if self.scored:
            scored = self.scored
            lines.append(f"scored    {scored['rows']:,} rows with {scored['version']} in {scored['seconds']:.1f}s "
                         f"-> {scored['destination']}")
        if self.registry:
            lines.append(f"registry  {self.registry}")
        lines += [f"{key:<9} {value}" for key, value in self.extra.items()]
        if self.outputs:
            lines.append(f"outputs   {self.outputs}")
        return lines


def prepare(cfg, components, output_dir=None, *, backend=None):
    """Check and resolve a composed config and build its ``Run``; ``backend`` (a mapping) replaces the
    config's (a job's trial runs its stages locally). Returns ``(resolved, run)``; writes nothing."""
    from mlops_framework import config
    from mlops_framework.pipeline import build_run

    config.check(cfg, components)
    resolved = config.resolved(cfg)
    if backend is not None:
        resolved["backend"] = dict(backend)
    return resolved, build_run(resolved, components, output_dir=output_dir)


def execute(resolved: dict, components, output_dir, *, announce=None, registry=None, shared=None) -> RunResult:
    """Build the run of a resolved config, save the config, execute it on its backend, save and return the
    result. ``announce(run)`` is called once the run is built, before anything runs. ``registry`` replaces
    the configured one (a sweep's trial keeps its model in its own directory: ``mlops_framework.sweeps``);
    ``shared`` is the data earlier trials in this process made (a sweep's trial: ``mlops_framework.shared_data``)."""
    from mlops_framework.config import dump_yaml, redact
    from mlops_framework.pipeline import build_run

    output_dir = Path(output_dir)
    run = build_run(resolved, components, output_dir=output_dir)
    if registry is not None:
        run.registry = registry
    run.shared = shared
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / RESOLVED_CONFIG_FILE).write_text(dump_yaml(redact(resolved)))
    if announce:
        announce(run)
    run.backend.execute(run)
    result = RunResult.of(run)
    (output_dir / SUMMARY_FILE).write_text(json.dumps(result.to_dict(), indent=2, default=str))
    return result


def read_result(run_dir) -> RunResult | None:
    """The result a run (or a sweep's trial) left in ``run_dir``, or None when it left none."""
    path = Path(run_dir) / SUMMARY_FILE
    try:
        return RunResult.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None
