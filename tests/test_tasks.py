"""Any table, any task: roles and task inferred from the data, binary / multiclass / regression end to end.

The end-to-end cases use tables bundled with scikit-learn, written as CSV or Parquet here, and run the real
`mlops` command with only the data option, its path and the target given.
"""

import json

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from mlops_framework.errors import MlopsError
from mlops_framework.features import FeatureContract, infer_roles, infer_task
from mlops_framework.lifecycle import gate
from mlops_framework.metrics import default_metric, direction, evaluate, higher_is_better
from mlops_framework.pipeline import FeatureSpec, PromotionSpec

TABLE = "PREDICTIONS_WITH_GROUND_TRUTH"
# The default sink partitions by the demo's WEEK column, which these tables lack.
NO_PARTITION = "scoring.sink.partition_by=null"


def breast_cancer_yes_no():
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame
    frame["diagnosis"] = np.where(frame.pop("target") == 1, "YES", "NO")
    return frame, "diagnosis"


def iris_with_missing_values():
    from sklearn.datasets import load_iris

    data = load_iris(as_frame=True)
    frame = data.frame
    frame["species"] = np.asarray(data.target_names)[frame.pop("target")]
    frame.loc[::7, "petal length (cm)"] = np.nan
    frame.loc[::11, "sepal width (cm)"] = np.nan
    frame.loc[1::25, "species"] = None  # rows without a label: dropped from training, scored all the same
    return frame, "species"


def diabetes():
    from sklearn.datasets import load_diabetes

    return load_diabetes(as_frame=True).frame.rename(columns={"target": "progression"}), "progression"


def wine_bool_target():
    from sklearn.datasets import load_wine

    frame = load_wine(as_frame=True).frame
    frame["is_class_0"] = frame.pop("target") == 0
    return frame, "is_class_0"


CASES = {
    "breast_cancer_parquet": (breast_cancer_yes_no, "parquet", "binary"),
    "iris_csv": (iris_with_missing_values, "csv", "multiclass"),
    "diabetes_csv": (diabetes, "csv", "regression"),
    "wine_bool_parquet": (wine_bool_target, "parquet", "binary"),
}


def write(frame, kind, path):
    if kind == "csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)


def predictions(home):
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        return con.sql(f"SELECT * FROM {TABLE}").df()


@pytest.mark.parametrize("case", CASES)
def test_a_bundled_dataset_runs_end_to_end_with_only_the_target_named(case, mlops, home, tmp_path):
    make, kind, task = CASES[case]
    frame, target = make()
    path = tmp_path / f"data.{kind}"
    write(frame, kind, path)
    data = [f"data={kind}", f"data.path={path}", f"features.target={target}", NO_PARTITION]

    out = mlops("run", *data, check=True).stdout
    assert f"task      {task}" in out
    version_dir = home / "registry" / "MORTGAGE_XGB" / "versions" / "v1"
    version = json.loads((version_dir / "version.json").read_text())
    contract = json.loads((version_dir / "artifact" / "contract.json").read_text())
    assert version["metadata"]["task"] == contract["task"] == task
    assert sorted(contract["numeric"]) == sorted(c for c in frame.columns if c != target)

    scored = predictions(home)
    assert len(scored) == len(frame)
    truth = scored[target]
    if task == "regression":
        assert "PREDICTED_SCORE" not in scored and scored["PREDICTED_RESPONSE"].dtype.kind == "f"
        assert {"holdout_rmse", "holdout_mae", "holdout_r2"} <= set(version["metrics"])
        assert np.sqrt(((truth - scored["PREDICTED_RESPONSE"]) ** 2).mean()) < truth.std()
        assert [o["name"] for o in version["signature"]["outputs"]] == ["PREDICTED_RESPONSE"]
    else:
        labels = set(truth.dropna())
        assert set(scored["PREDICTED_RESPONSE"]) <= labels and len(set(scored["PREDICTED_RESPONSE"])) > 1
        assert contract["classes"] == sorted(labels)
        assert (scored["PREDICTED_RESPONSE"] == truth)[truth.notna()].mean() > 0.8
    if task == "multiclass":
        proba = scored[[f"PROBA_{label}" for label in contract["classes"]]]
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
        np.testing.assert_allclose(scored["PREDICTED_SCORE"], proba.max(axis=1))
        assert {"holdout_log_loss", "holdout_f1_weighted", "holdout_roc_auc"} <= set(version["metrics"])
        assert "petal length (cm) 21" in out  # nulls per feature in the rows used, left missing for the model
        assert "150 rows read, 144 used; dropped 6 (missing target)" in out
    if case == "breast_cancer_parquet":
        assert contract["classes"] == ["NO", "YES"]
        assert (scored["PREDICTED_RESPONSE"] == np.where(scored["PREDICTED_SCORE"] >= 0.5, "YES", "NO")).all()

    rescored = mlops("run", "pipeline=score", *data, "scoring.version=v1", check=True).stdout
    assert f"{len(frame):,} rows with v1" in rescored
    trace = ["RUN_ID", "SCORED_AT"]  # who scored and when differ; the predictions must not
    pd.testing.assert_frame_equal(predictions(home).drop(columns=trace), scored.drop(columns=trace))


def test_roles_come_from_the_types(tmp_path):
    n = 60
    frame = pd.DataFrame({
        "ROW": np.arange(n), "CODE": [f"17-{i:06d}" for i in range(n)], "DAY": pd.date_range("2024-01-01", periods=n),
        "INCOME": np.linspace(1, 2, n), "FLAG": [True, False] * (n // 2), "COLOR": ["red", "blue", None] * (n // 3),
        "LEAK": np.arange(n) * 2.0, "EMPTY": [None] * n, "Y": ["a", "b", "c"] * (n // 3),
    })
    roles = infer_roles(frame, target="Y", exclude=["LEAK"])
    assert roles.numeric == ["INCOME", "FLAG"] and roles.categorical == ["COLOR"]
    assert set(roles.skipped) == {"ROW", "CODE", "DAY", "LEAK", "EMPTY"}
    assert "id-like" in roles.skipped["ROW"] and "id-like" in roles.skipped["CODE"] and "date" in roles.skipped["DAY"]
    named = infer_roles(frame, target="Y", id="ROW", time="DAY", numeric=["INCOME"])
    assert named.numeric == ["INCOME"] and named.categorical == ["COLOR"] and named.id == "ROW"
    with pytest.raises(MlopsError, match="features.exclude names 'NOPE'"):
        infer_roles(frame, target="Y", exclude=["NOPE"])
    with pytest.raises(MlopsError, match="no feature columns") as refused:
        infer_roles(frame[["ROW", "Y"]], target="Y")
    assert str(refused.value).endswith("in order). To use one, name it: features.numeric=[COLUMN] or "
                                       "features.categorical=[COLUMN]")  # a sorted count or a year may be a feature


def test_a_string_where_a_list_is_expected_is_one_column_never_letters():
    spec = FeatureSpec(target="Y", numeric="AB", categorical=None, exclude="CD")
    assert spec.numeric == ["AB"] and spec.exclude == ["CD"]
    assert FeatureSpec(target="Y", numeric=[2019, "A"]).numeric == ["2019", "A"]  # years Hydra read as numbers
    with pytest.raises(MlopsError, match="features.numeric must be a list"):
        FeatureSpec(target="Y", numeric=[["A"], None])


@pytest.mark.parametrize("values, task", [
    ([0, 1, 1, 0], "binary"), (["YES", "NO", "NO"], "binary"), ([True, False], "binary"),
    (["a", "b", "c"], "multiclass"), ([1, 2, 3, 4, 2] * 8, "multiclass"),
    (np.linspace(0, 1, 50).tolist(), "regression"), (list(range(100)), "regression"),
    ([26954, 29709, 32552, 33305, 34453, 29709], "regression"), ([0, 1, 2, 3, 5, 9, 2, 0, 1] * 4, "regression"),
])
def test_the_task_follows_the_target(values, task):
    assert infer_task(pd.Series(values), "Y") == task


def test_whole_numbers_are_classes_only_with_ten_rows_a_value_counted_over_all_rows():
    distinct = pd.Series([0, 1, 2])  # what training from batches keeps of a target: its distinct values
    assert infer_task(distinct, "Y", rows=30) == "multiclass"
    assert infer_task(distinct, "Y", rows=29) == "regression"


def test_contracts_per_task_round_trip_and_old_ones_load_as_binary():
    frame = pd.DataFrame({"X": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "Y": ["c", "a", "b", "a", "b", "c"]})
    multi = FeatureContract.fit(frame, numeric=["X"], categorical=[], target="Y", task="auto")
    assert multi.task == "multiclass" and multi.classes == ["a", "b", "c"]
    assert multi.encode_target(frame["Y"]).tolist() == [2, 0, 1, 0, 1, 2]
    assert FeatureContract.from_dict(multi.to_dict()) == multi
    reg = FeatureContract.fit(frame.assign(Y=np.arange(6) * 1.5), numeric=["X"], categorical=[], target="Y",
                              task="regression")
    assert reg.classes == [] and FeatureContract.from_dict(reg.to_dict()).task == "regression"
    old = {k: v for k, v in multi.to_dict().items() if k != "task"} | {"classes": [0, 1]}
    assert FeatureContract.from_dict(old).task == "binary"
    with pytest.raises(MlopsError, match="binary contract has two classes"):
        FeatureContract.from_dict({**multi.to_dict(), "task": "binary"})
    with pytest.raises(MlopsError, match="binary classification needs exactly two"):
        FeatureContract.fit(frame, numeric=["X"], categorical=[], target="Y", task="binary")


def test_metric_direction_and_defaults():
    assert not higher_is_better("rmse") and not higher_is_better("holdout_mae")
    assert not higher_is_better("validation_log_loss") and higher_is_better("validation_f1")
    assert direction("validation_rmse") == "minimize" and default_metric("regression") == "rmse"
    assert default_metric("multiclass") == "f1"
    result = evaluate("regression", [1.0, 2.0, 3.0], [1.0, 2.0, 5.0])
    assert result["rmse"] == pytest.approx(np.sqrt(4 / 3)) and result["residual_quantiles"]["q00"] == -2.0
    multi = evaluate("multiclass", [0, 1, 2, 2], np.eye(3)[[0, 1, 2, 1]], classes=["a", "b", "c"])
    assert multi["accuracy"] == 0.75 and multi["confusion_matrix"][2] == [0, 1, 1]


def test_the_gate_knows_lower_rmse_is_better():
    def comparison(new, old):
        return {"holdout_rows": 10, "task": "regression", "candidate": {"rmse": new},
                "champion": None if old is None else {"rmse": old}}

    spec = PromotionSpec(min_improvement=0.5)
    assert gate(spec, comparison(9.0, 10.0))[0]
    passed, reason = gate(spec, comparison(9.8, 10.0))
    assert not passed and "rmse 9.8000 > champion's 10.0000 - 0.5" in reason
    assert not gate(PromotionSpec(min_value=5.0), comparison(6.0, None))[0]  # a ceiling for rmse
    with pytest.raises(MlopsError, match="not a regression metric"):
        gate(PromotionSpec(metric="f1"), comparison(1.0, 2.0))


def test_unseen_categories_are_counted_per_column():
    from mlops_framework.scoring import score_to_sink

    frame = pd.DataFrame({"X": [1.0, 2.0, 3.0, 4.0], "C": ["a", "b", "a", "b"], "Y": [0, 1, 0, 1]})
    contract = FeatureContract.fit(frame, numeric=["X"], categorical=["C"], target="Y")

    class Model:
        def __init__(self):
            self.contract = contract

        def predict_scores(self, X):
            return np.full(len(X), 0.7)

    class Sink:
        def __init__(self):
            self.batches = []

        def open(self):
            import contextlib

            return contextlib.nullcontext(self)

        def write(self, batch):
            self.batches.append(batch)

        def describe(self):
            return "memory"

    batch = pa.RecordBatch.from_pandas(pd.DataFrame({"X": [1.0, 2.0, 3.0], "C": ["a", "z", "z"]}), preserve_index=False)
    result = score_to_sink(Model(), [batch], Sink(), progress=False)
    assert result.unseen == {"C": 2}


def test_a_time_split_holds_out_the_latest_rows(mlops, home, tmp_path):
    n = 200
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"DAY": pd.date_range("2024-01-01", periods=n)[::-1], "X": rng.normal(size=n)})
    frame["Y"] = (frame["X"] + rng.normal(scale=0.5, size=n) > 0).astype(int)
    path = tmp_path / "days.parquet"
    frame.to_parquet(path, index=False)
    data = [f"data.path={path}", "features.target=Y", "features.time=DAY"]
    out = mlops("plan", "data=parquet", "split=time", *data, check=True).stdout
    assert "by time (DAY)" in out and "roles inferred from the first" in out and "time DAY" in out
    mlops("run", "data=parquet", "pipeline=train", "split=time", *data, check=True)
    evaluation = json.loads(next((home / "runs").glob("*/evaluation.json")).read_text())
    assert evaluation["holdout"]["rows"] == 40 and evaluation["holdout"]["task"] == "binary"
    refused = mlops("run", "data=parquet", "pipeline=train", "split=time", data[0], data[1])
    assert refused.returncode == 2 and "split.order=time needs the time column" in refused.stderr


def test_the_time_split_trains_on_earlier_rows_and_holds_out_the_latest():
    from types import SimpleNamespace

    from mlops_framework.pipeline import SplitSpec
    from mlops_framework.stages import split

    frame = pd.DataFrame({"T": [5, 1, 9, 3, 7, 2, 8, 0, 6, 4], "X": np.arange(10.0)})
    run = SimpleNamespace(split=SplitSpec(holdout=0.2, validation=0.25, order="time"),
                          features=FeatureSpec(target="Y", time="T"),
                          results={"frame": frame, "X": frame[["X"]], "y": np.arange(10)}, shared=None)
    split(run)
    parts = {name: sorted(frame.loc[X.index, "T"]) for name, (X, _) in run.results["splits"].items()}
    assert parts == {"train": [0, 1, 2, 3, 4, 5], "validation": [6, 7], "holdout": [8, 9]}


def test_mlops_features_saves_an_option_the_next_command_finds(mlops, home, tmp_path):
    frame, target = iris_with_missing_values()
    path = tmp_path / "iris.csv"
    frame.to_csv(path, index=False)
    data = ["data=csv", f"data.path={path}"]
    out = mlops("features", *data, f"features.target={target}", "--save", "iris", check=True).stdout
    assert "petal length (cm)" in out and "task         multiclass" in out and "features=iris" in out
    saved = (home / "conf" / "features" / "iris.yaml").read_text()
    assert "task: multiclass" in saved and "- sepal width (cm)" in saved
    plan = mlops("plan", *data, "features=iris", check=True).stdout
    assert "task multiclass; roles as configured: numeric sepal length (cm)" in plan


def test_a_sweep_of_regressions_ranks_by_validation_rmse_lowest_first(tmp_path):
    from mlops_framework import sweeps

    for trial, rmse in (("0", 12.0), ("1", 9.5), ("2", 30.0)):
        (tmp_path / trial).mkdir()
        (tmp_path / trial / "evaluation.json").write_text(json.dumps({"validation": {"rmse": rmse, "task": "regression"}}))
        (tmp_path / trial / "summary.json").write_text(json.dumps({"model": "M", "version": f"v{trial}"}))
    board = sweeps.leaderboard(tmp_path)
    assert (board["metric"], board["direction"]) == ("validation_rmse", "minimize")
    assert [row["trial"] for row in board["rows"]] == ["1", "0", "2"]


def test_training_without_a_target_is_one_message_and_scoring_needs_none(tmp_path, capsys, home):
    from mlops_framework.cli import main

    frame, _ = iris_with_missing_values()
    path = tmp_path / "iris.parquet"
    frame.to_parquet(path, index=False)
    assert main(["run", "data=parquet", f"data.path={path}", NO_PARTITION]) == 2
    assert "name the target column to train on: features.target=COLUMN" in capsys.readouterr().err
    assert not (home / "registry").exists()
    assert main(["plan", "data=parquet", f"data.path={path}", "pipeline=score"]) == 0


def test_any_sklearn_estimator_via_target_follows_the_task(tmp_path, capsys, home):
    """model=hist_gradient_boosting on a regression table trains its regressor, saved with skops, and scores."""
    from mlops_framework.cli import main

    frame, target = diabetes()
    path = tmp_path / "diabetes.parquet"
    frame.to_parquet(path, index=False)
    data = ["data=parquet", f"data.path={path}", f"features.target={target}", NO_PARTITION]
    assert main(["run", *data, "model=hist_gradient_boosting", "model.params.max_iter=20"]) == 0
    version_dir = home / "registry" / "MORTGAGE_XGB" / "versions" / "v1"
    version = json.loads((version_dir / "version.json").read_text())
    assert version["metadata"]["estimator"] == "sklearn.ensemble.HistGradientBoostingRegressor"
    assert (version_dir / "artifact" / "model.skops").is_file()
    assert main(["run", "pipeline=score", *data, "scoring.version=v1"]) == 0
    scored = predictions(home)
    assert scored["PREDICTED_RESPONSE"].between(frame[target].min() - 100, frame[target].max() + 100).all()
    assert main(["run", *data, "model._target_=xgboost.XGBRegressor", "features.task=multiclass"]) == 2
    assert "is a regressor, but the task is multiclass" in capsys.readouterr().err


def test_the_score_summary_counts_unseen_categories(tmp_path, capsys, home):
    from mlops_framework.cli import main

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"X": rng.normal(size=300), "C": rng.choice(["a", "b", "c"], 300)})
    frame["Y"] = np.where(frame["X"] > 0, "up", "down")
    frame.to_parquet(tmp_path / "train.parquet", index=False)
    frame.assign(C=["zzz"] * 10 + frame["C"].tolist()[10:]).to_parquet(tmp_path / "new.parquet", index=False)
    assert main(["run", "pipeline=train", "data=parquet", f"data.path={tmp_path / 'train.parquet'}",
                 "features.target=Y", "model.params.n_estimators=10"]) == 0
    assert main(["run", "pipeline=score", "data=parquet", f"data.path={tmp_path / 'new.parquet'}", NO_PARTITION]) == 0
    assert "categories not seen in training, scored as missing: C 10 rows" in capsys.readouterr().out


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_the_lifecycle_experiment_runs_on_a_time_stamped_table_of_each_task(task, mlops, home, tmp_path):
    from sklearn import datasets

    if task == "multiclass":
        frame = datasets.load_wine(as_frame=True).frame.sample(frac=1.0, random_state=0)
        frame["target"] = np.array(["barolo", "grignolino", "barbera"])[frame["target"]]
    else:
        frame = datasets.load_diabetes(as_frame=True, scaled=False).frame
    frame = pd.concat([frame, frame], ignore_index=True)
    frame["WHEN"] = pd.date_range("2024-01-01", periods=len(frame), freq="6h").strftime("%Y-%m-%dT%H:%M:%SZ")
    path = tmp_path / "timed.csv"
    frame.to_csv(path, index=False)
    out = mlops("run", "experiment=lifecycle", "data=csv", f"data.path={path}", "features.target=target",
                "features.time=WHEN", "model.params.n_estimators=20", check=True).stdout
    assert f"task      {task}" in out and "promote 2" in out and "report" in out
    metric = "RMSE" if task == "regression" else "F1"
    assert f"last {metric}" in out


def test_classes_too_rare_to_split_are_left_out_of_training_and_every_row_is_scored(tmp_path, capsys, home):
    """A class of one or two rows cannot reach training through the stratified split: its rows are dropped
    (said in the summary), and two classes left make a binary model, not a multiclass one."""
    from mlops_framework.cli import main

    frame, target = iris_with_missing_values()
    frame = frame[frame[target].isin(["versicolor", "virginica"])].reset_index(drop=True)
    frame.loc[0, target], frame.loc[1:2, target] = "setosa", "hybrid"
    path = tmp_path / "iris.csv"
    frame.to_csv(path, index=False)
    data = ["data=csv", f"data.path={path}", f"features.target={target}"]
    assert main(["run", *data]) == 0
    out = capsys.readouterr().out
    assert "task      binary species: 2 classes (versicolor, virginica)" in out
    assert "96 rows read, 93 used; dropped 3 (class(es) with fewer than 3 rows: hybrid, setosa)" in out
    assert len(predictions(home)) == len(frame)


def test_a_target_with_one_class_of_three_rows_or_more_is_one_message(tmp_path, capsys, home):
    from mlops_framework.cli import main

    path = tmp_path / "events.csv"
    pd.DataFrame({"X": range(7), "E": [1, 1, 1, 1, 1, 1, 0]}).to_csv(path, index=False)
    assert main(["run", "data=csv", f"data.path={path}", "features.target=E"]) == 2
    assert ("target column 'E' has 1 class(es) with 3 rows or more, where a classifier needs two: 1 (6 rows), "
            "0 (1 row)") in capsys.readouterr().err
    assert not (home / "registry").exists()


def test_multiclass_asked_of_two_classes_is_binary():
    frame = pd.DataFrame({"X": [0.0, 1.0, 2.0, 3.0], "Y": ["a", "b", "a", "b"]})
    contract = FeatureContract.fit(frame, numeric=["X"], categorical=[], target="Y", task="multiclass")
    assert (contract.task, contract.classes) == ("binary", ["a", "b"])


def test_a_binary_training_split_without_one_class_is_one_message(tmp_path, capsys, home):
    from mlops_framework.cli import main

    path = tmp_path / "late_events.csv"
    pd.DataFrame({"T": range(50), "X": np.arange(50) % 7, "E": [0] * 40 + [1] * 10}).to_csv(path, index=False)
    assert main(["run", "data=csv", f"data.path={path}", "features.target=E", "features.time=T", "split=time"]) == 2
    assert "the training split has no rows of class(es) [1]: too few rows of them to learn" in capsys.readouterr().err


def test_columns_named_by_numbers_are_named_on_the_command_line_as_hydra_reads_them(tmp_path, capsys, home):
    """``features.target=2020`` reaches the config as the number 2020: it names the column "2020"."""
    from mlops_framework.cli import main

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"country": rng.choice(["A", "B"], 40), "2019": rng.normal(size=40) + 5})
    frame["2020"] = frame["2019"] * 1.1
    frame.to_csv(tmp_path / "wide.csv", index=False)
    assert main(["run", "pipeline=train", "data=csv", f"data.path={tmp_path / 'wide.csv'}", "features.target=2020",
                 "features.numeric=[2019]"]) == 0
    out = capsys.readouterr().out
    assert "task      regression of 2020" in out and "features  numeric 2019; categorical country" in out


def test_rows_of_an_infinite_target_are_left_out_of_training_in_memory_and_from_batches(tmp_path, capsys, home):
    """R writes a censored time as ``Inf``: XGBoost refuses such a label ('Label contains NaN, infinity')."""
    from mlops_framework.cli import main
    from mlops_framework.streamed import with_target

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"X": rng.normal(size=60)})
    frame["U"] = (frame["X"] * 10 + 100).astype(str)
    frame.loc[[3, 7], "U"] = ["Inf", "-Inf"]
    frame.to_csv(tmp_path / "censored.csv", index=False)
    assert main(["run", "pipeline=train", "data=csv", f"data.path={tmp_path / 'censored.csv'}", "features.target=U"]) == 0
    assert "60 rows read, 58 used; dropped 2 (infinite target)" in capsys.readouterr().out
    batch = pa.record_batch({"U": pa.array([1.0, np.inf, np.nan, None, -np.inf, 2.0])})
    assert with_target(batch, "U").column(0).to_pylist() == [1.0, 2.0]


def test_a_target_of_a_different_text_on_every_row_is_called_so(tmp_path, capsys, home):
    from mlops_framework.cli import main

    path = tmp_path / "notes.csv"
    pd.DataFrame({"X": [0.5, 1.5] * 6, "NOTE": [f"seen on day {i}" for i in range(12)]}).to_csv(path, index=False)
    assert main(["run", "data=csv", f"data.path={path}", "features.target=NOTE"]) == 2
    assert "seen on day 0 (1 row), " in (err := capsys.readouterr().err)
    assert err.rstrip().endswith("a different value on every row (an id or free text?)")
    path.write_text("X,Y\n1,yes\n2,yes\n3,no\n4,\n")
    assert main(["run", "data=csv", f"data.path={path}", "features.target=Y"]) == 2
    assert capsys.readouterr().err.rstrip().endswith("needs two: yes (2 rows), no (1 row)")


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_booleans_with_missing_values_and_decimals_are_numeric_features_a_later_score_takes(kind, tmp_path, capsys, home):
    """R's logical column with NA (TRUE/FALSE/NA), and Snowflake's NUMBER(10, 2) as Parquet DECIMAL: read as
    Python objects, they were a categorical feature and no feature, and the flag's VARCHAR signature refused
    a later `pipeline=score` of the very file trained on."""
    from decimal import Decimal

    from mlops_framework.cli import main

    rng = np.random.default_rng(0)
    x = rng.normal(size=80)
    flag = pa.array([None if i % 7 == 0 else bool(v > 0) for i, v in enumerate(x)])
    amount = pa.array([Decimal(f"{v:.2f}") for v in x * 100], pa.decimal128(10, 2))
    table = pa.table({"FLAG": flag, "AMOUNT": amount, "Y": np.where(x + rng.normal(size=80) > 0, "up", "down")})
    path = tmp_path / f"data.{kind}"
    if kind == "csv":
        table.to_pandas().to_csv(path, index=False, na_rep="NA")
    else:
        import pyarrow.parquet as pq

        pq.write_table(table, path)
    data = [f"data={kind}", f"data.path={path}", "features.target=Y"]
    assert main(["run", "pipeline=train", *data]) == 0
    assert "features  numeric FLAG, AMOUNT; categorical -" in capsys.readouterr().out
    assert main(["run", "pipeline=score", *data]) == 0
    assert len(predictions(home)) == 80


def test_a_row_index_written_with_the_data_is_not_a_feature_in_any_order(tmp_path):
    """pandas' to_csv and R's write.csv write the row index under an empty name; after a shuffle or a sort
    it is no longer in order, and was a numeric feature."""
    from mlops_local.sources import CsvSource

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"X": rng.normal(size=30), "Y": rng.choice(["a", "b"], 30)}).sample(frac=1, random_state=1)
    frame.to_csv(tmp_path / "shuffled.csv")  # header ",X,Y"
    read = CsvSource(str(tmp_path / "shuffled.csv")).read()
    for table in (read, read.rename(columns={"column0": "Unnamed: 0"}), read.rename(columns={"column0": "rownames"})):
        roles = infer_roles(table, target="Y")
        assert roles.numeric == ["X"] and list(roles.skipped.values()) == ["a row index (a different value on every row)"]
    assert infer_roles(read.rename(columns={"column0": "column"}), target="Y").numeric == ["column", "X"]
