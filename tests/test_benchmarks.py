"""The benchmark command runs and writes well-formed JSON. A smoke test at tiny sizes: no timing is checked."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STATUSES = {"PASS", "FAIL", "N/A", "ERROR"}


def bench(tmp_path, *args, timeout=300):
    env = {**os.environ, "MLOPS_BENCH_DIR": str(tmp_path / "bench"), "MLOPS_HOME": str(tmp_path / "home")}
    return subprocess.run([sys.executable, "-m", "benchmarks", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow
def test_quick_run_prints_a_table_and_writes_json(tmp_path):
    out = tmp_path / "results.json"
    result = bench(tmp_path, "--quick", "--only", "scoring,training", "--only", "warehouse", "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(out.read_text())
    assert data["quick"] is True and data["machine"]["cores"] >= 1 and data["date"]
    rows = data["rows"]
    assert {r["target"] for r in rows} == {"scoring", "training", "warehouse"}
    for row in rows:
        assert row["status"] in STATUSES and row["op"] in (">=", "<=", "<")
        assert row["status"] != "ERROR", row
        assert isinstance(row["value"], (int, float)) and isinstance(row["goal"], (int, float))
    same = next(r for r in rows if r["measure"].startswith("rows differing"))
    assert same["value"] == 0  # the framework's output equals the notebook way's, even at tiny sizes
    for row in rows:
        assert row["measure"] in result.stdout
    assert not list((REPO / "benchmarks").glob("*.parquet"))  # data stays in MLOPS_BENCH_DIR


def test_python_benchmarks_run_py_works_and_unknown_targets_are_refused(tmp_path):
    help_text = subprocess.run([sys.executable, "benchmarks/run.py", "--help"], cwd=REPO, capture_output=True,
                               text=True, timeout=300)
    assert help_text.returncode == 0 and "--only" in help_text.stdout and "--quick" in help_text.stdout
    result = bench(tmp_path, "--only", "nonsense", timeout=300)
    assert result.returncode == 2 and "nonsense" in result.stderr


def test_user_commands_run_with_the_bytecode_cache_kept_outside_the_repo(tmp_path, monkeypatch):
    """A user's install has compiled bytecode; a session's PYTHONDONTWRITEBYTECODE must not make every
    measured command compile the framework again, and the cache must not land in the repository."""
    from benchmarks.common import command, user_env

    monkeypatch.setenv("MLOPS_BENCH_DIR", str(tmp_path / "bench"))
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    env = user_env()
    assert "PYTHONDONTWRITEBYTECODE" not in env and env["PYTHONPYCACHEPREFIX"] == str(tmp_path / "bench" / "pycache")
    probe = "import sys; print(sys.dont_write_bytecode, sys.pycache_prefix)"
    assert command([sys.executable, "-c", probe])["stdout"].split() == ["False", str(tmp_path / "bench" / "pycache")]
