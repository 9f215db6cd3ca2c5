"""What a registered version records about where it came from."""

import hashlib
import importlib.metadata
import json
import os
import subprocess
from dataclasses import dataclass

PACKAGES = ("mlops-framework", "xgboost", "scikit-learn", "pandas", "numpy", "pyarrow", "duckdb")


def git_commit():
    """The checkout's HEAD, or ``MLOPS_GIT_COMMIT`` where there is no checkout (inside an ML Job)."""
    if os.environ.get("MLOPS_GIT_COMMIT"):
        return os.environ["MLOPS_GIT_COMMIT"]
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:
        return None
    return result.stdout.strip() or None


def package_versions():
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def lineage(config, data_fingerprint):
    """The resolved (secret-free) config, the training data's fingerprint, the git commit, package versions."""
    return {"config": config, "data_fingerprint": data_fingerprint, "git_commit": git_commit(),
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
