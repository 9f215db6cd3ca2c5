"""Bring your own data: files as they are, through the real `mlops` command, and nothing left behind by a
run refused for bad input (the registry and the warehouse byte-identical)."""

import hashlib
import json

import duckdb
import numpy as np
import pandas as pd
import pytest

from messy_data import write_mortgage_lab_csv

FEATURES = ["features.numeric=[APPLICANT_INCOME_000S,LOAN_AMOUNT_000S]",
            "features.categorical=[LOAN_TYPE_NAME,LOAN_PURPOSE_NAME,COUNTY_NAME,HAS_COAPPLICANT]"]


def snapshot(home):
    """Every file under the home except run directories (logs of the refused runs), by content."""
    return {str(p.relative_to(home)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(home.rglob("*")) if p.is_file() and "runs" not in p.relative_to(home).parts}


def one_error_line(result, *needles):
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("mlops: error: "), result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def lab(tmp_path):
    path = tmp_path / "lab.csv"
    write_mortgage_lab_csv(path, weeks=4, rows_per_week=300)
    return path


def test_mortgage_lab_csv_trains_registers_aliases_and_scores_through_production(mlops, home, lab):
    data = ["data=csv", f"data.path={lab}", "registry.model_name=LAB", "features.target=APPROVED", *FEATURES]
    mlops("run", *data, check=True)
    mlops("registry", "alias", "set", "LAB", "v1", "PRODUCTION", check=True)
    scored = mlops("run", *data, "pipeline=score", "scoring.version=PRODUCTION", check=True)
    assert "1,200 rows with v1" in scored.stdout and "(replacing the table)" in scored.stdout
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    table = con.sql("SELECT * FROM PREDICTIONS_WITH_GROUND_TRUTH").df()
    con.close()
    assert len(table) == 1200 and table["LOAN_ID"].str.match(r"^17-\d{6}$").all()
    assert set(table["TS"]) <= set(pd.read_csv(lab, dtype=str)["TS"])  # the mangled values, as written
    assert set(table["APPROVED"]) == {"YES", "NO"} and table["HAS_COAPPLICANT"].dtype == bool


def test_lifecycle_experiment_runs_on_a_users_file_in_one_command(mlops, home, lab):
    result = mlops("run", "experiment=lifecycle", "data=csv", f"data.path={lab}",
                   "features.target=MORTGAGERESPONSE", "features.time=APPLIED_AT", check=True)  # ISO, zoned
    assert "promote 2" in result.stdout and "report" in result.stdout
    versions = json.loads(mlops("registry", "versions", "LIFECYCLE", "--json", check=True).stdout)
    assert [v["version_name"] for v in versions] == ["v1", "v2"]
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    weeks = con.sql("SELECT count(DISTINCT window_start) FROM MONITOR_PERFORMANCE").fetchall()[0][0]
    rows = con.sql("SELECT count(*) FROM LIFECYCLE_PREDICTIONS").fetchall()[0][0]
    con.close()
    assert weeks == 4 and rows == 1200


def test_a_users_parquet_without_week_is_scored_without_partitions(mlops, home, tmp_path):
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame.rename(columns=lambda c: c.upper().replace(" ", "_"))
    frame["DIAGNOSIS"] = frame.pop("TARGET").map({0: "malignant", 1: "benign"})
    frame.loc[::17, "MEAN_RADIUS"] = None
    path = tmp_path / "cancer.parquet"
    frame.to_parquet(path)
    result = mlops("run", "data=parquet", f"data.path={path}", "features.target=DIAGNOSIS",
                   "features.numeric=[MEAN_RADIUS,MEAN_TEXTURE,WORST_AREA]", "features.categorical=[]", check=True)
    assert "569 rows" in result.stdout and "replacing the table" in result.stdout
    partitioned = mlops("run", "data=parquet", f"data.path={path}", "features.target=DIAGNOSIS",
                        "features.numeric=[MEAN_RADIUS]", "features.categorical=[]", "scoring.sink.partition_by=WEEK")
    one_error_line(partitioned, "lacks column WEEK", "partition_by=null")  # the name, never its letters
    before = snapshot(home)
    nothing = mlops("run", "data=parquet", f"data.path={path}", "features.target=DIAGNOSIS",
                    "features.numeric=[MEAN_RADIUS]", "features.categorical=[]", "scoring.where='MEAN_RADIUS > 1000'")
    one_error_line(nothing, "no rows for Parquet", "where MEAN_RADIUS > 1000")
    assert snapshot(home) == before


def test_a_parquet_unloaded_from_snowflake_every_number_a_decimal(mlops, home, tmp_path):
    """Snowflake's COPY INTO a Parquet file writes every NUMBER column as a DECIMAL: whole numbers (an id, a
    0/1 label) as DECIMAL(38,0). They are numbers: the label's classes are 0 and 1, the measures are features,
    the predictions keep the file's types, and a monitor whose default baseline names a column the data does
    not have says which option to set."""
    from decimal import Decimal

    import pyarrow as pa
    import pyarrow.parquet as pq
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame.rename(columns=lambda c: c.upper().replace(" ", "_"))
    columns = {"ID": pa.array([Decimal(i) for i in range(len(frame))], pa.decimal128(38, 0)),
               "MALIGNANT": pa.array([Decimal(int(1 - v)) for v in frame.pop("TARGET")], pa.decimal128(38, 0))}
    columns.update({c: pa.array([Decimal(f"{v:.4f}") for v in frame[c]], pa.decimal128(38, 4)) for c in frame.columns})
    path = tmp_path / "unloaded.parquet"
    pq.write_table(pa.table(columns), path)

    result = mlops("run", "data=parquet", f"data.path={path}", "features.target=MALIGNANT", check=True)
    assert "binary MALIGNANT: 2 classes (0, 1)" in result.stdout
    assert "numeric MEAN_RADIUS, MEAN_TEXTURE" in result.stdout and "not features ID (id-like" in result.stdout
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        types = dict(con.execute("SELECT column_name, data_type FROM information_schema.columns "
                                 "WHERE table_name = 'PREDICTIONS_WITH_GROUND_TRUTH'").fetchall())
        right = con.execute("SELECT count(*) FILTER (WHERE MALIGNANT = PREDICTED_RESPONSE), count(*) "
                            "FROM PREDICTIONS_WITH_GROUND_TRUTH").fetchone()
    assert types["MEAN_RADIUS"] == "DECIMAL(38,4)" and types["PREDICTED_RESPONSE"] == "BIGINT"
    assert right[1] == 569 and right[0] > 0.9 * 569

    streamed = mlops("run", "pipeline=train", "data=parquet", f"data.path={path}", "features.target=MEAN_RADIUS",
                     "split.stream_from_rows=100", "registry.model_name=RADIUS", check=True)
    assert "regression of MEAN_RADIUS" in streamed.stdout and "quantized matrix" in streamed.stdout

    monitor = mlops("run", "pipeline=monitor", "data=parquet", f"data.path={path}", "features.target=MALIGNANT",
                    "monitor.timestamp=SCORED_AT")
    one_error_line(monitor, "monitor.baseline 'WEEK <= 5' does not fit the monitored rows", "MEAN_RADIUS",
                   "monitor.baseline=holdout")
    assert mlops("run", "pipeline=monitor", "data=parquet", f"data.path={path}", "features.target=MALIGNANT",
                 "monitor.timestamp=SCORED_AT", "monitor.baseline='ID < 200'", check=True).returncode == 0


def test_the_positive_class_is_the_one_whose_probability_is_scored(mlops, home, tmp_path):
    """scikit-learn's breast cancer labels as words: sorted, the positive class would be "malignant";
    features.positive_class=benign makes PREDICTED_SCORE the probability of benign."""
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame.rename(columns=lambda c: c.upper().replace(" ", "_"))
    frame["DIAGNOSIS"] = frame.pop("TARGET").map({0: "malignant", 1: "benign"})
    path = tmp_path / "cancer.csv"
    frame.to_csv(path, index=False)
    result = mlops("run", "data=csv", f"data.path={path}", "features.target=DIAGNOSIS", "features.positive_class=benign",
                   check=True)
    assert "binary DIAGNOSIS: 2 classes (malignant, benign); scores the probability of benign" in result.stdout
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        benign, malignant, consistent = con.execute(
            "SELECT avg(PREDICTED_SCORE) FILTER (WHERE DIAGNOSIS = 'benign'), "
            "avg(PREDICTED_SCORE) FILTER (WHERE DIAGNOSIS = 'malignant'), "
            "bool_and((PREDICTED_SCORE >= 0.5) = (PREDICTED_RESPONSE = 'benign')) "
            "FROM PREDICTIONS_WITH_GROUND_TRUTH").fetchone()
    assert benign > 0.8 and malignant < 0.2 and consistent
    frame.to_parquet(tmp_path / "cancer.parquet")  # a Parquet file counts its rows cheaply: trained from batches
    streamed = mlops("run", "pipeline=train", "data=parquet", f"data.path={tmp_path / 'cancer.parquet'}",
                     "features.target=DIAGNOSIS", "features.positive_class=benign", "split.stream_from_rows=100",
                     check=True)
    assert "quantized matrix" in streamed.stdout and "scores the probability of benign" in streamed.stdout


def test_plotlys_gzipped_gapminder_csv_trains_and_scores_as_it_is(mlops, home):
    """A public file as it ships (plotly's package data): gzip-compressed, and populations beyond 2**24,
    which float32 holds only rounded (as XGBoost trains on them)."""
    from pathlib import Path

    import plotly

    path = Path(plotly.__file__).parent / "package_data" / "datasets" / "gapminder.csv.gz"
    result = mlops("run", "data=csv", f"data.path={path}", "features.target=continent", check=True)
    assert "multiclass continent: 5 classes (Africa, Americas, Asia, Europe, Oceania)" in result.stdout
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        rows, most = con.execute("SELECT count(*), max(pop) FROM PREDICTIONS_WITH_GROUND_TRUTH").fetchone()
    assert rows == 1704 and most > 2**24


def test_a_csv_with_a_title_line_before_its_header_and_gzipped(mlops, home, tmp_path):
    import gzip

    from sklearn.datasets import load_iris

    frame = load_iris(as_frame=True).frame.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
    text = "# Iris, exported 2024-05-01 by the lab's tool\n" + frame.to_csv(index=False)
    (tmp_path / "iris.csv").write_text(text)
    (tmp_path / "iris.csv.gz").write_bytes(gzip.compress(text.encode()))
    for name in ("iris.csv", "iris.csv.gz"):
        result = mlops("run", "data=csv", f"data.path={tmp_path / name}", "features.target=target",
                       f"scoring.sink.table={name.replace('.', '_')}", check=True)
        assert "150 rows read" in result.stdout and "numeric sepal_length, sepal_width" in result.stdout


def test_a_european_csv_with_semicolons_and_decimal_commas_reads_its_numbers(mlops, home, tmp_path):
    from sklearn.datasets import load_diabetes

    frame = load_diabetes(as_frame=True, scaled=False).frame
    frame["sex"] = frame["sex"].map({1.0: "F", 2.0: "M"})
    frame.loc[::9, "bmi"] = None
    frame.to_csv(tmp_path / "diabetes.csv", sep=";", decimal=",", index=False, na_rep="NA")
    assert "32,1" in (tmp_path / "diabetes.csv").read_text()
    result = mlops("run", "data=csv", f"data.path={tmp_path / 'diabetes.csv'}", "features.target=target", check=True)
    assert "numeric age, bmi, bp, s1, s2, s3, s4, s5, s6; categorical sex" in result.stdout
    assert "regression of target" in result.stdout
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        read = con.execute("SELECT bmi, s5, target FROM PREDICTIONS_WITH_GROUND_TRUTH").df()
    pd.testing.assert_frame_equal(read, frame[["bmi", "s5", "target"]], check_dtype=False)


def test_a_windows_latin1_export_keeps_its_accented_categories(mlops, home, tmp_path):
    rng = np.random.default_rng(4)
    cities = np.array(["Zürich", "São Paulo", "Malmö", "Besançon"])
    frame = pd.DataFrame({"CITY": cities[rng.integers(0, 4, 400)], "SCORE": rng.normal(50, 10, 400).round(1)})
    frame["LABEL"] = np.where((frame.CITY == "Malmö") | (frame.SCORE > 55), "oui", "non")
    (tmp_path / "export.csv").write_bytes(frame.to_csv(index=False, sep=";", decimal=",", lineterminator="\r\n")
                                          .encode("cp1252"))
    result = mlops("run", "data=csv", f"data.path={tmp_path / 'export.csv'}", "features.target=LABEL", check=True)
    assert "numeric SCORE; categorical CITY" in result.stdout
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        read = con.execute("SELECT CITY, SCORE FROM PREDICTIONS_WITH_GROUND_TRUTH").df()
    pd.testing.assert_frame_equal(read, frame[["CITY", "SCORE"]])


def test_bad_input_is_refused_before_anything_is_written(mlops, home, lab, tmp_path):
    data = ["data=csv", f"data.path={lab}", "registry.model_name=LAB", "features.target=APPROVED", *FEATURES]
    mlops("run", *data, check=True)
    before = snapshot(home)
    text = lab.read_bytes().decode("utf-8-sig")
    header, rows = text.split("\r\n", 1)
    files = {
        "short.csv": text + "2024-01-22,4\r\n",
        "twice.csv": header.replace("TS", "WEEK", 1) + "\r\n" + rows,
        "no_income.csv": header.replace("APPLICANT_INCOME_000S", "INCOME") + "\r\n" + rows,
        "text_income.csv": text.replace(",NA,", ",unknown,"),
    }
    for name, content in files.items():
        (tmp_path / name).write_bytes(content.encode())
    cases = [
        (["data=csv", f"data.path={tmp_path / 'short.csv'}"], "line 1202 has 2 field(s) where the header has 13"),
        (["data=csv", f"data.path={tmp_path / 'twice.csv'}"], "duplicate column names: 'WEEK'"),
        (["features.target=NOPE"], "lacks column NOPE"),
        ([f"scoring.source={{kind: csv, path: {tmp_path / 'no_income.csv'}}}"],
         "the scoring source", "lacks column APPLICANT_INCOME_000S"),
        ([f"scoring.source={{kind: csv, path: {tmp_path / 'text_income.csv'}}}"],
         "APPLICANT_INCOME_000S is BIGINT in the training data but VARCHAR in the scoring source",
         "types: {APPLICANT_INCOME_000S: BIGINT}"),
        (["pipeline=score", f"data.path={tmp_path / 'text_income.csv'}"],  # against v1's signature
         "APPLICANT_INCOME_000S is DOUBLE in the training data but VARCHAR in the scoring source"),
        (["pipeline=retrain", f"retrain.source={{kind: csv, path: {tmp_path / 'no_income.csv'}}}"],
         "the retrain source"),
        (["pipeline=monitor", f"monitor.source={{kind: csv, path: {lab}}}"],
         "the monitor source", "lacks column PREDICTED_SCORE"),
        (["data.types={TS: {type: timestamp, format: '%Y'}}"], "column TS"),
        (["experiment=mortgage_lifecycle", "monitor.timestamp=WEEK_START_DATE"],  # the lab has weeks 1-4 only
         "no rows match where 'WEEK BETWEEN 9 AND 12'"),  # scoring reads TS: parsed first
        (["experiment=mortgage_lifecycle", "features.target=MORTGAGERESPONSE"],
         "monitor.timestamp TS is VARCHAR"),  # the lab's mangled TS: refused before v1 is registered
    ]
    for overrides, *needles in cases:
        result = mlops("run", *data, *overrides)
        one_error_line(result, *needles)
        assert snapshot(home) == before, overrides


def test_another_dataset_in_the_same_home_is_refused_before_training_unless_it_scores_elsewhere(mlops, home, tmp_path):
    from sklearn.datasets import load_iris, load_wine

    for name, load in (("iris", load_iris), ("wine", load_wine)):
        frame = load(as_frame=True).frame
        frame.columns = [c.replace(" (cm)", "").replace(" ", "_").replace("/", "_") for c in frame.columns]
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
    iris, wine = (["data=csv", f"data.path={tmp_path / name}.csv", "features.target=target",
                   f"registry.model_name={name.upper()}"] for name in ("iris", "wine"))
    mlops("run", *iris, check=True)
    before = snapshot(home)
    one_error_line(mlops("run", *wine), "does not fit DuckDB table PREDICTIONS_WITH_GROUND_TRUTH",
                   "columns not in the table: alcohol", "table columns not in the scored data: sepal_length",
                   "scoring.sink.table")
    assert snapshot(home) == before  # nothing trained, registered or written
    mlops("run", *wine, "scoring.sink.table=WINE_PREDICTIONS", check=True)
    mlops("run", *iris, check=True)  # the same data again fits its table
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM WINE_PREDICTIONS").fetchone()[0] == 178
        assert con.execute("SELECT DISTINCT MODEL_VERSION FROM PREDICTIONS_WITH_GROUND_TRUTH").fetchall() == [("v2",)]


def test_a_run_failing_after_a_write_says_what_it_left_and_how_to_remove_it(mlops, home, tmp_path):
    blocker = tmp_path / "predictions.parquet"
    blocker.write_bytes(b"not a directory")
    result = mlops("run", "data.rows_per_week=300", "data.weeks=3", "scoring=parquet", f"scoring.sink.path={blocker}")
    line = one_error_line(result, "is a file", "Before it failed, this run registered MORTGAGE_XGB v1",
                          "mlops registry delete MORTGAGE_XGB v1")
    assert line
    mlops("registry", "delete", "MORTGAGE_XGB", "v1", check=True)
    assert json.loads(mlops("registry", "versions", "MORTGAGE_XGB", "--json", check=True).stdout) == []


def test_a_type_difference_within_a_kind_is_scored_and_reported(mlops, home, lab):
    mlops("run", "data=csv", "features=mortgage", f"data.path={lab}", "pipeline=train", check=True)
    result = mlops("run", "pipeline=score", "data.weeks=1", "data.rows_per_week=200", check=True)
    assert "LOAN_AMOUNT_000S BIGINT in training, DOUBLE in the scoring source" in result.stdout
    assert "200 rows with v1" in result.stdout


def test_lifecycle_experiment_runs_on_the_synthetic_data_too(mlops, home):
    # where subqueries on a generated stream; both monitors run and report their alerts
    result = mlops("run", "experiment=lifecycle", "data.weeks=4", "data.rows_per_week=300",
                   "model.params.n_estimators=20", check=True)
    assert "monitor 2" in result.stdout and "alerts 2" in result.stdout
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    weeks = con.sql("SELECT DISTINCT WEEK FROM LIFECYCLE_PREDICTIONS ORDER BY 1").fetchall()
    con.close()
    assert weeks == [(1,), (2,), (3,), (4,)]


def test_left_behind_names_every_kind_of_write_with_its_undo():
    from types import SimpleNamespace

    from mlops_framework.preflight import left_behind

    run = SimpleNamespace(
        registration=SimpleNamespace(model_name="M"),
        monitor=SimpleNamespace(performance_table="P", drift_table="D", alerts_table="A", warehouse="w.duckdb"),
        results={"registered": ["v3"], "promotions": [{"promoted": True, "alias": "PRODUCTION", "candidate": "v3"},
                                                      {"promoted": False, "alias": "PRODUCTION", "candidate": "v4"}],
                 "scored_log": [{"rows": 1300, "destination": "DuckDB table T in w.duckdb"}],
                 "monitor_runs": [{"run_id": "r1"}], "explanation": {"written_to": ["x.parquet", "EXPLANATIONS"]}})
    assert left_behind(run) == (
        "registered M v3 (remove it: mlops registry delete M v3); moved PRODUCTION to v3 (undo: mlops registry "
        "rollback M PRODUCTION); wrote 1,300 rows into DuckDB table T in w.duckdb; appended monitoring rows of "
        "run r1 to P, D and A in w.duckdb (delete them WHERE RUN_ID = 'r1'); wrote explanations to x.parquet, "
        "EXPLANATIONS")
    assert left_behind(SimpleNamespace(registration=run.registration, monitor=None, results={})) == ""
