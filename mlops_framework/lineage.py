"""What a registered version records about where it came from."""

import importlib.metadata
import os
import subprocess

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
    from mlops_framework.config import redact

    return {"config": redact(config), "data_fingerprint": data_fingerprint, "git_commit": git_commit(),
            "packages": package_versions()}


def signature(frame, columns):
    """Input and output columns with their types, as Snowflake's model signatures record them."""
    return {
        "inputs": [{"name": column, "type": str(frame[column].dtype)} for column in columns],
        "outputs": [{"name": "PREDICTED_SCORE", "type": "float"}, {"name": "PREDICTED_RESPONSE", "type": "class"}],
    }
