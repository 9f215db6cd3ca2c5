"""The `mlops` command end to end, in subprocesses, as a user runs it."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import duckdb
import pyarrow.csv as pa_csv
import pytest

from run_sizes import SMALL
from mlops_local.synthetic import generate_table

HEAVY = ("xgboost", "sklearn", "pandas", "snowflake", "numpy", "scipy", "pyarrow", "duckdb", "plotly")  # the first 4 the rule names
TABLE = "PREDICTIONS_WITH_GROUND_TRUTH"


def imported_modules(*args):
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "mlops_framework.cli", *args],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return {line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines() if "|" in line}


@pytest.mark.parametrize("args", [["--help"], ["plan"]])
def test_help_and_plan_import_nothing_heavy(args, home):
    modules = imported_modules(*args)
    assert "mlops_framework" in modules
    assert not modules & set(HEAVY), modules & set(HEAVY)


def test_help_lists_groups_and_options(mlops):
    out = mlops("--help", check=True).stdout
    for expected in ("data ", "synthetic", "csv", "parquet", "backend", "registry", "scoring", "pipeline", "experiment"):
        assert expected in out


def test_plan_touches_nothing(mlops, home):
    out = mlops("plan", check=True).stdout
    assert "1. load: read synthetic" in out and "8. score:" in out
    assert not home.exists()


def test_output_cut_short_by_a_closed_pipe_is_not_an_error_trace(home):
    """`mlops plan ... | head -1`: the reader is gone before mlops writes; it stops without a traceback."""
    process = subprocess.Popen([sys.executable, "-m", "mlops_framework.cli", "plan", "-m", "model.params.max_depth=1,2"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    process.stdout.close()  # long before the plan is composed (about a second)
    stderr = process.stderr.read()
    assert process.wait(timeout=300) == 1
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr


def table(home):
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        return con.sql(f"SELECT * FROM {TABLE} ORDER BY LOAN_ID").df()


def test_run_registers_v1_then_v2_and_scores_every_row(mlops, home):
    first = mlops("run", *SMALL, check=True)
    assert "MORTGAGE_XGB v1" in first.stdout and "1,200 rows" in first.stdout
    scored = table(home)
    assert len(scored) == 1200 and scored.LOAN_ID.is_unique
    assert {"PREDICTED_RESPONSE", "PREDICTED_SCORE", "MORTGAGERESPONSE"} <= set(scored.columns)
    assert ((scored.PREDICTED_SCORE >= 0.5).astype(int) == scored.PREDICTED_RESPONSE).all()
    assert (scored.PREDICTED_RESPONSE == scored.MORTGAGERESPONSE).mean() > 0.6

    assert "MORTGAGE_XGB v2" in mlops("run", *SMALL, check=True).stdout
    versions = json.loads(mlops("registry", "versions", "MORTGAGE_XGB", "--json", check=True).stdout)
    assert [v["version_name"] for v in versions] == ["v1", "v2"]
    v1 = versions[0]
    assert v1["metrics"]["holdout_f1"] > 0.6 and "holdout_roc_auc" in v1["metrics"]
    assert v1["lineage"]["config"]["data"]["rows_per_week"] == 300 and v1["lineage"]["data_fingerprint"]
    models = json.loads(mlops("registry", "models", "--json", check=True).stdout)
    assert models[0]["tags"]["PROJECT"] == "MORTGAGE_LENDING"
    assert len(table(home)) == 1200  # re-scoring the same weeks replaced them

    runs = sorted((home / "runs").iterdir())
    assert len(runs) == 2 and (runs[0] / "resolved_config.yaml").is_file() and (runs[0] / "summary.json").is_file()


def test_model_name_override_and_csv_and_alias_scoring(mlops, home, tmp_path):
    csv_path = tmp_path / "loans.csv"
    pa_csv.write_csv(generate_table(weeks=3, rows_per_week=300, seed=5), csv_path)
    mlops("run", "data=csv", "features=mortgage", f"data.path={csv_path}", "registry.model_name=CSV_MODEL", *SMALL[2:], check=True)
    mlops("run", "data=csv", "features=mortgage", f"data.path={csv_path}", "registry.model_name=CSV_MODEL", *SMALL[2:], check=True)
    mlops("registry", "alias", "set", "CSV_MODEL", "v1", "PRODUCTION", check=True)
    shown = json.loads(mlops("registry", "show", "CSV_MODEL", "production", "--json", check=True).stdout)
    assert shown["version_name"] == "v1"

    new_weeks = tmp_path / "new.csv"
    pa_csv.write_csv(generate_table(weeks=5, rows_per_week=200, seed=9).slice(600), new_weeks)  # weeks 4-5
    out = mlops("run", "pipeline=score", "data=csv", f"data.path={new_weeks}", "registry.model_name=CSV_MODEL",
                "scoring.version=PRODUCTION", "data.partition_by=WEEK", check=True).stdout  # a file has no
    assert "400 rows with v1" in out                                        # partitions unless it says so
    scored = table(home)
    assert sorted(scored.WEEK.unique()) == [1, 2, 3, 4, 5] and len(scored) == 900 + 400


def test_tag_set_and_history(mlops, home):
    mlops("run", "pipeline=train", *SMALL, check=True)
    mlops("registry", "tag", "set", "MORTGAGE_XGB", "STAGE", "REVIEW", check=True)
    mlops("registry", "alias", "set", "MORTGAGE_XGB", "v1", "PRODUCTION", check=True)
    mlops("registry", "alias", "unset", "MORTGAGE_XGB", "PRODUCTION", check=True)
    models = json.loads(mlops("registry", "models", "--json", check=True).stdout)
    assert models[0]["tags"]["STAGE"] == "REVIEW"
    history = json.loads(mlops("registry", "history", "MORTGAGE_XGB", "--json", check=True).stdout)
    assert [(h["old_version"], h["new_version"]) for h in history] == [(None, "v1"), ("v1", None)]


def test_registry_reads_as_short_summaries_and_deletes_an_unaliased_version(mlops, home):
    for _ in range(2):
        mlops("run", "pipeline=train", *SMALL, check=True)
    mlops("registry", "alias", "set", "MORTGAGE_XGB", "v1", "PRODUCTION", check=True)

    shown = mlops("registry", "show", "MORTGAGE_XGB", "production", check=True).stdout
    lines = shown.splitlines()
    assert lines[0] == "MORTGAGE_XGB v1" and len(lines) < 15 and "{" not in shown
    assert "aliases   PRODUCTION" in lines and lines[3].startswith("comment   XGBoost classifier")
    assert re.search(r"^metrics   holdout    accuracy=0\.\d{4}  precision=.* f1=0\.\d{4}  roc_auc=", shown, re.M)
    assert "tags      CONTAINS_PII=FALSE, DOMAIN=LENDING, PROJECT=MORTGAGE_LENDING" in lines
    assert "model     xgboost.XGBClassifier on 1,200 rows" in lines
    assert re.search(r"^from      data synthetic, fingerprint [0-9a-f]{12}, git ", shown, re.M)
    whole = json.loads(mlops("registry", "show", "MORTGAGE_XGB", "v1", "--json", check=True).stdout)
    assert whole["version_name"] == "v1" and whole["lineage"]["config"] and whole["files"]

    versions = mlops("registry", "versions", "MORTGAGE_XGB", check=True).stdout.splitlines()
    assert versions[0].split() == ["VERSION", "CREATED", "ALIASES", "HOLDOUT_F1", "HOLDOUT_ROC_AUC",
                                   "HOLDOUT_ACCURACY", "COMMENT"]
    assert re.match(r"v1 +\d{4}-\d\d-\d\d \d\d:\d\d +PRODUCTION +0\.\d{4} +0\.\d{4} +0\.\d{4} +XGBoost", versions[1])
    assert re.match(r"v2 +\d{4}-\d\d-\d\d \d\d:\d\d +0\.\d{4}", versions[2])
    models = mlops("registry", "models", check=True).stdout.splitlines()
    assert models[0].split() == ["MODEL", "VERSIONS", "LATEST", "ALIASES", "TAGS", "COMMENT"]
    assert models[1].split()[:4] == ["MORTGAGE_XGB", "2", "v2", "PRODUCTION=v1"] and "PROJECT=MORTGAGE_LENDING" in models[1]

    refused = mlops("registry", "delete", "MORTGAGE_XGB", "v1")
    assert refused.returncode == 2 and "still the target of alias PRODUCTION" in refused.stderr
    assert "Traceback" not in refused.stderr
    mlops("registry", "delete", "MORTGAGE_XGB", "v2", "--reason", "worse than v1", check=True)
    remaining = json.loads(mlops("registry", "versions", "MORTGAGE_XGB", "--json", check=True).stdout)
    assert [v["version_name"] for v in remaining] == ["v1"]
    history = json.loads(mlops("registry", "history", "MORTGAGE_XGB", "--json", check=True).stdout)
    assert [(h["event"], h["old_version"], h["reason"]) for h in history[1:]] == [("deleted", "v2", "worse than v1")]
    assert "None" not in mlops("registry", "history", "MORTGAGE_XGB", check=True).stdout


def test_training_shows_boosting_rounds_on_a_terminal_and_nothing_in_a_log(home, tmp_path):
    import pty

    command = [sys.executable, "-m", "mlops_framework.cli", "run", "pipeline=train", *SMALL]
    env = {**os.environ, "MLOPS_HOME": str(home), "COLUMNS": "120"}
    terminal, child = pty.openpty()
    process = subprocess.Popen(command, stdout=child, stderr=subprocess.PIPE, cwd=tmp_path, env=env)
    os.close(child)
    shown = b""
    while True:
        try:
            chunk = os.read(terminal, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    assert process.wait(timeout=300) == 0, process.stderr.read()
    os.close(terminal)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown.decode())
    assert re.search(r"training .*20/20 boosting rounds \d:\d\d:\d\d ETA \d:\d\d:\d\d", text), text[-500:]
    assert "model     MORTGAGE_XGB v1" in text

    logged = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert logged.returncode == 0 and logged.stdout.startswith("model     MORTGAGE_XGB v2")
    assert "boosting rounds" not in logged.stdout + logged.stderr and "\x1b" not in logged.stdout


def state(home):
    """Everything a failed command must leave as it was."""
    registry = sorted(p.relative_to(home) for p in (home / "registry").rglob("*") if ".staging" not in p.parts) \
        if (home / "registry").exists() else []
    rows = table(home).to_csv(index=False) if (home / "warehouse.duckdb").exists() else None
    return registry, rows


@pytest.fixture(scope="module")
def trained_once(tmp_path_factory):
    """A home with one trained and scored model, made once for the module by the real command."""
    home = tmp_path_factory.mktemp("trained") / "home"
    subprocess.run([sys.executable, "-m", "mlops_framework.cli", "run", *SMALL], check=True, capture_output=True,
                   env={**os.environ, "MLOPS_HOME": str(home)}, timeout=300)
    return home


@pytest.fixture
def trained(trained_once, home):
    """A copy of that home for one test; its state before the test."""
    import shutil

    shutil.copytree(trained_once, home)
    return state(home)


def write_csv(path, table_):
    pa_csv.write_csv(table_, path)
    return path


BAD_INPUTS = {
    "missing file": (["data=csv", "data.path=nope.csv"], "nope.csv"),
    "missing column": (["data=csv", "features=mortgage", "data.path={drop_column}"], "COUNTY_NAME"),
    "unknown option": (["data=excel"], "Could not find 'data/excel'"),
    "typo key": (["+data.rows_per_wek=3"], "did you mean 'rows_per_week'"),
    "missing required value": (["data=csv"], "missing required config values: data.path"),
    "one-class target": (["data=csv", "features=mortgage", "data.path={one_class}"], "exactly two classes"),
    "empty data": (["data.where='WEEK > 99'"], "no rows"),
    "unknown alias": (["pipeline=score", "scoring.version=STAGING"], "STAGING"),
    "unknown model": (["pipeline=score", "registry.model_name=NOPE"], "NOPE"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gets_one_message_and_writes_nothing(case, trained, mlops, home, tmp_path):
    base = generate_table(weeks=2, rows_per_week=100, seed=1)
    files = {
        "drop_column": write_csv(tmp_path / "drop.csv", base.drop_columns(["COUNTY_NAME"])),
        "one_class": write_csv(tmp_path / "one.csv", base.filter(base["MORTGAGERESPONSE"].to_pylist() and
                                                             [v == 1 for v in base["MORTGAGERESPONSE"].to_pylist()])),
    }
    overrides, expected = BAD_INPUTS[case]
    overrides = [o.format(**files) for o in overrides]
    result = mlops("run", *overrides, *SMALL[2:])
    assert result.returncode != 0
    assert expected in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert state(home) == trained


def test_killed_scoring_run_leaves_the_previous_table_intact(mlops, home, tmp_path):
    mlops("run", *SMALL, check=True)
    before = table(home)
    args = [sys.executable, "-m", "mlops_framework.cli", "run", "pipeline=score", "data.weeks=40",
            "data.rows_per_week=200000", "scoring.batch_size=50000"]
    proc = subprocess.Popen(args, cwd=tmp_path, env={**os.environ, "MLOPS_HOME": str(home)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs_before = len(list((home / "runs").iterdir()))
    deadline = time.time() + 120
    while time.time() < deadline and len(list((home / "runs").iterdir())) == runs_before and proc.poll() is None:
        time.sleep(0.05)
    warehouse = home / "warehouse.duckdb"
    size_before = warehouse.stat().st_size
    while time.time() < deadline and proc.poll() is None and warehouse.stat().st_size <= size_before \
            and not warehouse.with_name(warehouse.name + ".wal").exists():
        time.sleep(0.05)  # writing began: DuckDB spills the open transaction's row groups into the file (or WAL)
    assert proc.poll() is None, "the scoring run finished before it could be killed; make it bigger"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    after = table(home)
    assert after.equals(before)
    assert "1,200 rows" in mlops("run", "pipeline=score", *SMALL[:2], check=True).stdout


@pytest.mark.parametrize("overrides, compositions, mode", [
    ([], 1, "RUN"),  # Hydra would compose twice: once only to read hydra.mode
    (["hydra.mode=MULTIRUN"], 2, "MULTIRUN"),  # an override setting it is still read, by Hydra itself
])
def test_a_run_composes_its_config_once_unless_an_override_sets_the_mode(overrides, compositions, mode, home, monkeypatch):
    from hydra._internal.hydra import Hydra
    from hydra.core.hydra_config import HydraConfig

    from mlops_framework import cli

    composed, modes = [], []
    compose = Hydra.compose_config

    def counted(self, *args, **kwargs):
        composed.append(kwargs.get("run_mode"))
        return compose(self, *args, **kwargs)

    def execute(cfg, components, output_dir, **_):
        modes.append(HydraConfig.get().mode.name)
        return {}

    monkeypatch.setattr(Hydra, "compose_config", counted)
    monkeypatch.setattr(cli, "execute", execute)
    cli.main(["run", "pipeline=train", *overrides])
    assert len(composed) == compositions and modes == [mode]
    assert Hydra.get_mode.__qualname__ == "Hydra.get_mode"  # restored
