"""What a registered version records about where it came from."""

import functools
import hashlib
import importlib.metadata
import json
import os
import subprocess
from dataclasses import dataclass

PACKAGES = ("mlops-framework", "xgboost", "scikit-learn", "pandas", "numpy", "pyarrow", "duckdb")


def git_commit(where=None):
    """The HEAD of the checkout at ``where`` (default: the working directory), or ``MLOPS_GIT_COMMIT``
    where there is no checkout (inside an ML Job)."""
    if os.environ.get("MLOPS_GIT_COMMIT"):
        return os.environ["MLOPS_GIT_COMMIT"]
    return _git(where, "rev-parse", "HEAD") or None


def git_state(where=None):
    """``{"commit", "dirty"}`` of the checkout at ``where`` (default: the working directory), each ``None``
    where unknown; with ``MLOPS_GIT_COMMIT`` set, that commit and dirtiness unknown."""
    commit = git_commit(where)
    if commit is None or os.environ.get("MLOPS_GIT_COMMIT"):
        return {"commit": commit, "dirty": None}
    status = _git(where, "status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def _git(where, *args):
    """``git ARGS`` in ``where``: its stripped output, or None when git is missing or fails."""
    prefix = ["git"] if where is None else ["git", "-C", str(where)]
    try:
        result = subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def package_versions():
    """The installed versions of ``PACKAGES`` (a new dict each call), read once a process: the code a
    process runs does not change under it, and each of a sweep's trials records them (8 ms a time)."""
    return dict(_package_versions())


@functools.cache
def _package_versions():
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def lineage(config, data_fingerprint):
    """The resolved (secret-free) config, the training data's fingerprint, the git commit, package versions."""
    from mlops_framework.config import redact

    return {"config": redact(config), "data_fingerprint": data_fingerprint, "git_commit": git_commit(),
            "packages": package_versions()}


def config_hash(config: dict) -> str:
    """sha256 of the resolved config, as canonical JSON: the same config always hashes the same."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Provenance:
    """Where a run comes from, handed to the stages that record it (``register``, ``promote``) so that no
    stage reads the config: the resolved, secret-free config and its hash."""

    config: dict

    def __post_init__(self):  # the run's config holds its secrets; what is recorded must not
        from mlops_framework.config import redact

        object.__setattr__(self, "config", redact(self.config))

    @property
    def config_hash(self) -> str:
        return config_hash(self.config)

    def lineage(self, data_fingerprint, source_lineage=None) -> dict:
        """The lineage record of a version trained in this run (``source_lineage``: what the source read)."""
        record = lineage(self.config, data_fingerprint)
        if source_lineage:
            record["source"] = source_lineage
        return record


def signature(frame, columns):
    """Input and output columns with their types, as Snowflake's model signatures record them."""
    return {
        "inputs": [{"name": column, "type": str(frame[column].dtype)} for column in columns],
        "outputs": [{"name": "PREDICTED_SCORE", "type": "float"}, {"name": "PREDICTED_RESPONSE", "type": "class"}],
    }
