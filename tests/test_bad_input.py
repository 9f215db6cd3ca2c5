"""Bad input through the real CLI: one clear message naming the problem, a non-zero exit, no traceback,
and nothing written (the registry and the warehouse stay exactly as they were)."""

import json
import shutil

import duckdb
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from run_sizes import SMALL
from mlops_framework.cli import main
from mlops_local.synthetic import generate_table

TABLE = "PREDICTIONS_WITH_GROUND_TRUTH"


def invoke(capsys, *args):
    try:
        code = main(list(args))
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def snapshot(home):
    """Every registry file and its bytes, and the warehouse table's contents."""
    files = {}
    if (home / "registry").exists():
        for path in sorted((home / "registry").rglob("*")):
            if path.is_file() and ".staging" not in path.parts and path.name != ".lock":
                files[str(path.relative_to(home))] = path.read_bytes()
    rows = None
    if (home / "warehouse.duckdb").exists():
        with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
            rows = con.sql(f"SELECT * FROM {TABLE} ORDER BY LOAN_ID").df().to_csv(index=False)
    return files, rows


@pytest.fixture(scope="module")
def trained_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("trained") / "home"
    import os
    os.environ["MLOPS_HOME"] = str(home)
    try:
        assert main(["run", *SMALL]) == 0
    finally:
        del os.environ["MLOPS_HOME"]
    return home


@pytest.fixture
def home(trained_home, tmp_path, monkeypatch):
    copy = tmp_path / "home"
    shutil.copytree(trained_home, copy)
    monkeypatch.setenv("MLOPS_HOME", str(copy))
    monkeypatch.chdir(tmp_path)
    return copy


@pytest.fixture
def files(tmp_path):
    """Bad data files, each made from real generated data."""
    base = generate_table(weeks=2, rows_per_week=100, seed=3)
    made = {}

    def csv(name, table, **options):
        path = tmp_path / name
        pa_csv.write_csv(table, path, write_options=pa_csv.WriteOptions(**options))
        made[name.split(".")[0]] = path

    csv("good.csv", base)
    csv("drop_county.csv", base.drop_columns(["COUNTY_NAME"]))
    csv("drop_target.csv", base.drop_columns(["MORTGAGERESPONSE"]))
    csv("semicolon.csv", base, delimiter=";")
    target = base["MORTGAGERESPONSE"].to_pylist()
    csv("one_class.csv", base.set_column(base.schema.get_field_index("MORTGAGERESPONSE"), "MORTGAGERESPONSE",
                                         pa.array([1] * len(target))))
    csv("three_classes.csv", base.set_column(base.schema.get_field_index("MORTGAGERESPONSE"), "MORTGAGERESPONSE",
                                             pa.array([i % 3 for i in range(len(target))])))
    income = base.schema.get_field_index("APPLICANT_INCOME_000S")
    csv("all_nan.csv", base.set_column(income, "APPLICANT_INCOME_000S", pa.array([None] * len(target), pa.float64())))
    csv("text_income.csv", base.set_column(income, "APPLICANT_INCOME_000S", pa.array(["high"] * len(target))))
    county = base.schema.get_field_index("COUNTY_NAME")
    csv("unseen.csv", base.set_column(county, "COUNTY_NAME", pa.array(["Atlantis County"] * len(target))))
    (tmp_path / "empty.csv").write_text("")
    made["empty"] = tmp_path / "empty.csv"
    (tmp_path / "header_only.csv").write_text(",".join(base.column_names) + "\n")
    made["header_only"] = tmp_path / "header_only.csv"
    (tmp_path / "corrupt.parquet").write_bytes(b"PAR1 this is not parquet at all")
    made["corrupt"] = tmp_path / "corrupt.parquet"
    pq.write_table(base.drop_columns(["LOAN_TYPE_NAME"]), tmp_path / "drop_type.parquet")
    made["drop_type"] = tmp_path / "drop_type.parquet"
    return made


SCORE = ["pipeline=score"]
# case -> (arguments, text the message must contain); {name} is a file from the `files` fixture.
CASES = {
    "missing csv": (["run", "data=csv", "data.path=missing.csv"], "missing.csv"),
    "missing parquet": (["run", "data=parquet", "data.path=missing.parquet"], "missing.parquet"),
    "empty csv": (["run", "data=csv", "features=mortgage", "data.path={empty}"], "empty"),
    "header-only csv": (["run", "data=csv", "features=mortgage", "data.path={header_only}"], "no rows"),
    "corrupt parquet": (["run", "data=parquet", "data.path={corrupt}"], "corrupt.parquet"),
    "wrong delimiter": (["run", "data=csv", "features=mortgage", "data.path={semicolon}", "data.delimiter=,"], "delimiter"),
    "missing feature column": (["run", "data=csv", "features=mortgage", "data.path={drop_county}"], "COUNTY_NAME"),
    "missing target column": (["run", "data=csv", "features=mortgage", "data.path={drop_target}"], "MORTGAGERESPONSE"),
    "misspelt target column": (["run", "features.target=MORTGAGERESPONCE"],
                               "lacks column MORTGAGERESPONCE (did you mean 'MORTGAGERESPONSE' for 'MORTGAGERESPONCE'?)"),
    "missing column at scoring": ([*SCORE, "run", "data=parquet", "data.path={drop_type}"], "LOAN_TYPE_NAME"),
    "text in a numeric column": (["run", "data=csv", "features=mortgage", "data.path={text_income}"], "APPLICANT_INCOME_000S"),
    "one-class target": (["run", "data=csv", "features=mortgage", "data.path={one_class}"], "two classes"),
    "three-class target": (["run", "data=csv", "features=mortgage", "data.path={three_classes}"], "two classes"),
    "all-NaN feature": (["run", "data=csv", "features=mortgage", "data.path={all_nan}"], "APPLICANT_INCOME_000S"),
    "unknown data option": (["run", "data=excel"], "Could not find 'data/excel'"),
    "unknown model option": (["run", "model=catboost"], "Could not find 'model/catboost'"),
    "typo key added": (["run", "+data.rows_per_wek=3"], "did you mean 'rows_per_week'"),
    "typo key overridden": (["run", "data.rows_per_wek=3"], "rows_per_wek"),
    "missing required value": (["run", "data=csv"], "missing required config values: data.path"),
    "bad override syntax": (["run", "data.where=WEEK > 3"], "data.where"),
    "unknown stage": (["run", "pipeline.stages=[load,trian]"], "unknown stages trian"),
    "bad encoding": (["run", "features.encoding=ordinal"], "features.encoding must be one of"),
    "bad split fraction": (["run", "split.holdout=0"], "split.holdout must be between 0 and 1"),
    "bad where": (["run", "data.where='NO_SUCH_COLUMN = 1'"], "NO_SUCH_COLUMN"),
    "where matching nothing": (["run", "data.where='WEEK > 99'"], "no rows"),
    "unknown estimator": (["run", "model._target_=sklearn.ensemble.NoSuchForest"], "NoSuchForest"),
    "bad estimator params": (["run", "model=hist_gradient_boosting", "+model.params.depth=3"], "depth"),
    "unknown model at scoring": ([*SCORE, "run", "registry.model_name=NOPE"], "NOPE"),
    "unknown version at scoring": ([*SCORE, "run", "scoring.version=v99"], "v99"),
    "unknown alias at scoring": ([*SCORE, "run", "scoring.version=STAGING"], "STAGING"),
    "unknown version to score after training": (["run", "scoring.version=v9"],
                                                "scoring.version=v9: model 'MORTGAGE_XGB' has no version or alias 'v9'"),
    "lifecycle without a time column": (["run", "experiment=lifecycle", "data=parquet", "data.path={drop_type}",
                                         "features.target=MORTGAGERESPONSE", "features.time=null"],
                                        "features.time is not set, and this configuration needs it"),
    "registry: unknown model": (["registry", "versions", "NOPE"], "NOPE"),
    "registry: unknown version": (["registry", "show", "MORTGAGE_XGB", "v42"], "v42"),
    "registry: alias on unknown version": (["registry", "alias", "set", "MORTGAGE_XGB", "v9", "PRODUCTION"], "v9"),
    "registry: unset unknown alias": (["registry", "alias", "unset", "MORTGAGE_XGB", "CHAMPION"], "CHAMPION"),
    "registry: bad alias name": (["registry", "alias", "set", "MORTGAGE_XGB", "v1", "no spaces allowed"], "no spaces allowed"),
    "registry: tag value too long": (["registry", "tag", "set", "MORTGAGE_XGB", "NOTE", "x" * 300], "256"),
    "unknown command": (["frobnicate"], "unknown command 'frobnicate'"),
    "sweep: bad worker count": (["run", "-m", "hparams_search=mortgage_grid", "hydra.launcher.n_jobs=0"],
                                "hydra.launcher.n_jobs must be -1 or at least 1, not 0"),
    "sweep: bad trial timeout": (["run", "-m", "hparams_search=mortgage_grid", "hydra.launcher.timeout_s=-1"],
                                 "hydra.launcher.timeout_s must be positive"),
}


def _move_to_scoring_args(args):
    """`[pipeline=score, run, ...]` reads better in the table; the CLI wants `run pipeline=score ...`."""
    if args[:1] == SCORE:
        return ["run", *SCORE, *args[2:]]
    return args


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(case, home, files, capsys):
    args, expected = CASES[case]
    args = [a.format(**files) for a in _move_to_scoring_args(args)]
    if args[0] == "run" and not any(a.startswith("model=") for a in args):
        args += SMALL[2:]
    before = snapshot(home)
    code, out, err = invoke(capsys, *args)
    assert code not in (0, None), out
    assert expected in err, err
    assert "Traceback" not in out + err
    assert snapshot(home) == before


@pytest.mark.parametrize("command", ["run", "plan"])
@pytest.mark.parametrize("text", ["target: [A\nexclude: 1\n", "target: A\ntarget: B\n"], ids=["syntax", "duplicate key"])
def test_a_config_file_that_is_not_yaml_is_one_message(command, text, home, capsys):
    """Both commands say which file and where, as PyYAML does, in one line: no traceback, nothing written."""
    (home / "conf" / "features").mkdir(parents=True, exist_ok=True)
    (home / "conf" / "features" / "broken.yaml").write_text(text)
    before = snapshot(home)
    code, out, err = invoke(capsys, command, "features=broken")
    assert code == 2 and "mlops: error: a config file is not valid YAML: " in err and "broken.yaml" in err, err
    assert "Traceback" not in out + err and len(err.strip().splitlines()) == 1
    assert snapshot(home) == before


def test_unseen_categories_at_scoring_are_listed_with_unseen_error(home, files, capsys):
    assert invoke(capsys, "run", "pipeline=train", "features.unseen=error", *SMALL)[0] == 0
    before = snapshot(home)
    code, out, err = invoke(capsys, "run", "pipeline=score", "data=csv", f"data.path={files['unseen']}")
    assert code == 2 and "Atlantis County" in err and "COUNTY_NAME" in err
    assert snapshot(home) == before


def test_unseen_categories_are_ignored_by_default(home, files, capsys):
    code, out, err = invoke(capsys, "run", "pipeline=score", "data=csv", f"data.path={files['unseen']}")
    assert code == 0, err
    assert "200 rows" in out


def test_shuffled_and_extra_columns_score_the_same(home, files, tmp_path, capsys):
    base = pa_csv.read_csv(files["good"])
    shuffled = base.select(list(reversed(base.column_names))).append_column("EXTRA", pa.array(["x"] * base.num_rows))
    pa_csv.write_csv(shuffled, tmp_path / "shuffled.csv")
    scores = {}
    for name in ("good", "shuffled"):
        code, out, err = invoke(capsys, "run", "pipeline=score", "data=csv", f"data.path={tmp_path / name}.csv",
                                f"scoring.sink.table=SCORED_{name.upper()}")
        assert code == 0, err
        with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
            scores[name] = con.sql(f"SELECT LOAN_ID, PREDICTED_SCORE FROM SCORED_{name.upper()} ORDER BY LOAN_ID").fetchall()
    assert scores["good"] == scores["shuffled"]


def test_alias_left_pointing_at_a_deleted_version(home, capsys):
    assert invoke(capsys, "registry", "alias", "set", "MORTGAGE_XGB", "v1", "PRODUCTION")[0] == 0
    shutil.rmtree(home / "registry" / "MORTGAGE_XGB" / "versions" / "v1")
    before = snapshot(home)
    code, out, err = invoke(capsys, "run", "pipeline=score", "scoring.version=PRODUCTION", *SMALL[:2])
    assert code == 2 and "PRODUCTION" in err and "v1" in err
    assert snapshot(home) == before


def test_tampered_artifact_is_refused_at_scoring(home, capsys):
    artifact = next((home / "registry" / "MORTGAGE_XGB" / "versions" / "v1").rglob("model.ubj"))
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    artifact.write_bytes(bytes(data))
    before = snapshot(home)
    code, out, err = invoke(capsys, "run", "pipeline=score", "scoring.version=v1", *SMALL[:2])
    assert code == 2 and "model.ubj" in err and "sha256" in err
    assert snapshot(home) == before


def test_the_registry_never_unpickles(home, monkeypatch, capsys):
    import pickle

    def refuse(*args, **kwargs):
        raise AssertionError("the registry unpickled something")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    code, out, err = invoke(capsys, "run", "pipeline=score", "scoring.version=v1", *SMALL[:2])
    assert code == 0, err
    code, out, err = invoke(capsys, "run", "model=hist_gradient_boosting", "registry.model_name=HGB", *SMALL[:2])
    assert code == 0, err
    code, out, err = invoke(capsys, "registry", "versions", "HGB", "--json")
    assert json.loads(out)[0]["version_name"] == "v1"


def test_a_plugin_that_raises_on_import(home, tmp_path, monkeypatch, capsys):
    (tmp_path / "exploding_plugin.py").write_text("raise ImportError('needs a library that is not installed')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("MLOPS_PLUGINS", "exploding_plugin")
    before = snapshot(home)
    code, out, err = invoke(capsys, "run", *SMALL)
    assert code == 2 and "exploding_plugin" in err and "not installed" in err
    assert snapshot(home) == before


def test_a_warehouse_locked_by_another_process(home, capsys):
    import subprocess
    import sys

    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('held', flush=True); "
         "time.sleep(600)", str(home / "warehouse.duckdb")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code, out, err = invoke(capsys, "run", "pipeline=score", *SMALL[:2])
        assert code == 2 and "warehouse.duckdb" in err and "lock" in err
    finally:
        holder.kill()
        holder.wait()
    assert "1,200 rows" in invoke(capsys, "run", "pipeline=score", *SMALL[:2])[1]
