import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh MLOPS_HOME for the test."""
    path = tmp_path / "home"
    monkeypatch.setenv("MLOPS_HOME", str(path))
    return path


@pytest.fixture
def mlops(home, tmp_path):
    """Run the real `mlops` command in a subprocess; returns CompletedProcess with text output."""

    def run(*args, env=None, check=None):
        full_env = {**os.environ, "MLOPS_HOME": str(home), **(env or {})}
        result = subprocess.run(
            [sys.executable, "-m", "mlops_framework.cli", *args],
            capture_output=True, text=True, cwd=tmp_path, env=full_env, timeout=300,
        )
        if check is not None and (result.returncode == 0) != check:
            raise AssertionError(f"mlops {' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
        return result

    return run
