"""`mlops plan` over every config option `mlops --help` lists, alone and with every experiment: each prints a
plan or one clean `mlops: error:` line, never a traceback."""

import contextlib
import io

import pytest

from mlops_framework import cli


def _help_options():
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["--help"]) == 0
    lines = out.getvalue().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("config groups")) + 1
    options = []
    for line in lines[start:]:
        if not line.strip():
            break
        group, listed = line.split(None, 1)
        options += [(group, name.strip()) for name in listed.split(",")]
    return options


OPTIONS = _help_options()
EXPERIMENTS = [name for group, name in OPTIONS if group == "experiment"]
COMBINATIONS = [[f"{g}={o}"] for g, o in OPTIONS] + [
    [f"experiment={e}", f"{g}={o}"] for e in EXPERIMENTS for g, o in OPTIONS if g != "experiment"]


def _plan(overrides):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(["plan", *overrides])  # anything but an MlopsError escapes and fails the test
    return status, out.getvalue(), err.getvalue()


def test_help_lists_the_groups_and_experiments_enumerated_here():
    groups = {g for g, _ in OPTIONS}
    assert {"data", "experiment", "scoring", "pipeline", "features"} <= groups
    assert {"lifecycle", "mortgage_lifecycle", "mortgage_xgb"} <= set(EXPERIMENTS)
    assert {"csv", "parquet", "synthetic", "duckdb"} <= {o for g, o in OPTIONS if g == "data"}


def test_every_option_and_experiment_pair_plans_or_says_one_clean_line(monkeypatch, tmp_path):
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    failures = []
    for overrides in COMBINATIONS:
        status, out, err = _plan(overrides)
        if status == 0 and out.startswith("plan: "):
            continue
        lines = err.strip().splitlines()
        if status != 2 or len(lines) != 1 or not lines[0].startswith("mlops: error: "):
            failures.append(f"{' '.join(overrides)} -> {status}: {err.strip()[:300]}")
    assert not failures, "\n".join(failures)
    assert list(tmp_path.iterdir()) == []  # plan touches nothing


@pytest.mark.parametrize("experiment", EXPERIMENTS)
@pytest.mark.parametrize("data", ["csv", "parquet"])
def test_every_experiment_plans_on_a_users_file(experiment, data, monkeypatch, tmp_path):
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    time = ["features.time=OPENED"] if experiment == "lifecycle" else []  # it orders the user's rows by it
    status, out, err = _plan([f"experiment={experiment}", f"data={data}", "data.path=loans.file", *time])
    assert status == 0, err
    assert f"loans.file" in out


def test_one_name_given_for_a_list_is_never_split_into_letters(monkeypatch, tmp_path):
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    status, out, err = _plan(["features.numeric=APPLICANT_INCOME_000S", "scoring.sink.partition_by=WEEK",
                              "monitor.columns=COUNTY_NAME", "pipeline=lifecycle"])
    assert status == 0, err
    assert "check columns APPLICANT_INCOME_000S, LOAN_TYPE_NAME" in out
    assert "(replacing partitions by WEEK)" in out and "'W'" not in out
