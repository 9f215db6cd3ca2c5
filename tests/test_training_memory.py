"""Training in bounded memory: an XGBoost model on a large table learns from the source's batches.

The runs here lower ``split.stream_from_rows`` to 0 so that small tables (scikit-learn's bundled ones,
written as Parquet) take the streamed path; the memory and time it saves are measured by
``python -m benchmarks --only training``, never timed here.
"""

from pathlib import Path

import numpy as np
import pytest

from benchmarks.common import build_run
from mlops_framework import streamed
from mlops_framework.errors import MlopsError
from mlops_framework.pipeline import SplitSpec
from mlops_local.sources import ParquetSource
from tests.test_tasks import breast_cancer_yes_no, diabetes, iris_with_missing_values

TASKS = {"binary": breast_cancer_yes_no, "multiclass": iris_with_missing_values, "regression": diabetes}


def run_on(path, target, home, *overrides):
    run = build_run([f"paths.home={home}", "pipeline=train", "data=parquet", f"data.path={path}",
                     f"features.target={target}", *overrides])
    run.backend.execute(run)
    return run


def test_the_row_split_holds_each_class_fractions_and_repeats_batch_by_batch():
    rng = np.random.default_rng(0)
    labels = (rng.random(23_456) < 0.1).astype(np.int32)  # a 10% class
    split = streamed.RowSplit(holdout=0.2, validation=0.25, seed=7, stratified=True)
    whole = split.new_pass().parts(labels)
    one_pass = split.new_pass()
    cuts = np.sort(rng.choice(len(labels), 40, replace=False))
    in_batches = np.concatenate([one_pass.parts(chunk) for chunk in np.split(labels, cuts)])
    np.testing.assert_array_equal(whole, in_batches)  # the same rows whatever the batch sizes
    for label in (0, 1):
        parts = whole[labels == label]
        shares = [np.mean(parts == code) for code in (streamed.TRAIN, streamed.VALIDATION, streamed.HOLDOUT)]
        np.testing.assert_allclose(shares, [0.6, 0.2, 0.2], atol=2 / streamed.BLOCK + 1 / len(parts) ** 0.5 / 10)
    other_seed = streamed.RowSplit(holdout=0.2, validation=0.25, seed=8, stratified=True).new_pass().parts(labels)
    assert (other_seed != whole).mean() > 0.3  # a different seed draws different rows
    unstratified = streamed.RowSplit(holdout=0.3, validation=0.5, seed=7, stratified=False).new_pass().parts(labels)
    np.testing.assert_allclose(np.bincount(unstratified) / len(labels), [0.35, 0.35, 0.3], atol=2 / streamed.BLOCK)


@pytest.mark.parametrize("task", TASKS)
def test_each_task_trains_from_batches_as_a_bare_fit_on_the_same_rows(task, tmp_path, monkeypatch):
    import xgboost

    frame, target = TASKS[task]()
    path = tmp_path / "data.parquet"
    frame.to_parquet(path, index=False)

    def whole_table(*args, **kwargs):
        raise AssertionError("the streamed path read the whole table into memory")

    with monkeypatch.context() as patch:
        patch.setattr(ParquetSource, "read", whole_table)
        run = run_on(path, target, tmp_path / "streamed", "split.stream_from_rows=0", "model.params.n_estimators=30")
    assert "frame" not in run.results and "X" not in run.results
    contract = run.results["contract"]
    assert contract.task == task and run.results["version"]["version_name"] == "v1"

    # The training rows the split chose, fitted the ordinary way, give the same model.
    kept = frame[frame[target].notna()].reset_index(drop=True)
    y = contract.encode_target(kept[target])
    parts = run.results["row_split"].new_pass().parts(y)
    estimator = run.model.build("onehot", task=task)
    train = parts == streamed.TRAIN
    estimator.fit(contract.encode_frame(kept[train]), y[train])
    X = contract.encode_frame(kept)
    registered = run.registry.load_model(run.registration.model_name, "v1")
    np.testing.assert_allclose(registered.predict_scores(X.to_numpy(np.float32)),
                               estimator.get_booster().inplace_predict(X.to_numpy(np.float32)), rtol=1e-5, atol=1e-6)
    assert isinstance(registered.estimator, xgboost.Booster)
    info = tmp_path / "streamed" / "registry" / run.registration.model_name / "versions" / "v1" / "artifact" / "model_info.json"
    assert f'"estimator": "xgboost.sklearn.{type(estimator).__name__}"' in info.read_text()

    # Validation and holdout: the rows the split chose, scored and measured as the in-memory path would.
    evaluation = run.results["evaluation"]
    for name, code in (("validation", streamed.VALIDATION), ("holdout", streamed.HOLDOUT)):
        assert evaluation[name]["rows"] == int(np.sum(parts == code))
        assert abs(evaluation[name]["rows"] / len(kept) - 0.2) < 0.02
    in_memory = run_on(path, target, tmp_path / "in_memory", "split.stream_from_rows=null",
                       "model.params.n_estimators=30")
    assert "frame" in in_memory.results
    metric = {"binary": "holdout_roc_auc", "multiclass": "holdout_accuracy", "regression": "holdout_r2"}[task]
    assert abs(run.results["metrics"][metric] - in_memory.results["metrics"][metric]) < 0.1
    assert run.results["data_report"] == in_memory.results["data_report"]
    assert run.results["rows"] == len(kept)


def test_the_passes_after_the_first_read_only_the_model_inputs_and_the_target(tmp_path, monkeypatch):
    frame, target = breast_cancer_yes_no()
    frame["NOTES"] = "a long free-text note that no model reads " * 4
    path = tmp_path / "data.parquet"
    frame.to_parquet(path, index=False)
    asked = []
    batches = ParquetSource.batches

    def recorded(self, columns=None, batch_size=262_144):
        asked.append(columns)
        return batches(self, columns=columns, batch_size=batch_size)

    monkeypatch.setattr(ParquetSource, "batches", recorded)
    run = run_on(path, target, tmp_path, "split.stream_from_rows=0", "features.id=NOTES", "model.params.n_estimators=5")
    inputs = sorted([*run.results["contract"].input_columns, target])
    assert "NOTES" not in inputs and len(asked) >= 3  # the features pass, training's passes, evaluation's
    assert [sorted(columns) for columns in asked[1:]] == [inputs] * (len(asked) - 1)


def test_what_needs_the_whole_table_keeps_the_in_memory_path(tmp_path):
    frame, target = breast_cancer_yes_no()
    frame["WHEN"] = "2024-01-01"
    path = tmp_path / "data.parquet"
    frame.to_parquet(path, index=False)
    sklearn_model = run_on(path, target, tmp_path / "a", "split.stream_from_rows=0", "model=hist_gradient_boosting",
                           "model.params.max_iter=10")
    assert "frame" in sklearn_model.results
    base = [f"paths.home={tmp_path / 'b'}", "data=parquet", f"data.path={path}", f"features.target={target}",
            "split.stream_from_rows=0"]
    assert streamed.streams(build_run([*base, "pipeline=train"]))
    assert not streamed.streams(build_run([*base, "pipeline=lifecycle"]))  # monitor and explain read the frame
    assert not streamed.streams(build_run([*base, "pipeline=train", "split=time", "features.time=WHEN",
                                           "split.stream_from_rows=0"]))  # text: ordered in memory
    assert not streamed.streams(build_run([*base, "pipeline=train", f"split.stream_from_rows={len(frame) + 1}"]))


def test_a_time_split_streams_and_takes_the_rows_the_in_memory_split_takes(tmp_path, monkeypatch):
    import pandas as pd

    frame, target = breast_cancer_yes_no()
    rng = np.random.default_rng(3)
    days = pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 40, len(frame)), unit="D")  # ties
    frame["TS"] = pd.Series(days).where(rng.random(len(frame)) > 0.02)  # a few missing times: sorted last
    path = tmp_path / "data.parquet"
    frame.to_parquet(path, index=False)

    def whole_table(*args, **kwargs):
        raise AssertionError("the streamed path read the whole table into memory")

    overrides = ["split=time", "features.time=TS", "model.params.n_estimators=10"]
    with monkeypatch.context() as patch:
        patch.setattr(ParquetSource, "read", whole_table)
        streamed_run = run_on(path, target, tmp_path / "streamed", *overrides, "split.stream_from_rows=0")
    in_memory = run_on(path, target, tmp_path / "in_memory", *overrides, "split.stream_from_rows=null")
    assert "frame" not in streamed_run.results and "frame" in in_memory.results

    contract = streamed_run.results["contract"]
    batches = [frame.iloc[:100], frame.iloc[100:101], frame.iloc[101:]]  # any batch sizes, the same parts
    assignment = streamed_run.results["row_split"].new_pass()
    parts = np.concatenate([assignment.parts(contract.encode_target(part[target]), pa_batch(part)) for part in batches])
    for name, code in streamed.PARTS.items():
        expected = in_memory.results["splits"][name][0].index
        np.testing.assert_array_equal(np.flatnonzero(parts == code), np.sort(expected))
    assert streamed_run.results["metrics"] == pytest.approx(in_memory.results["metrics"], rel=1e-6, abs=1e-9)


def test_time_keys_sort_numbers_as_numpy_sorts_them_missing_last():
    import pyarrow as pa

    values = np.array([3.0, -1.0, -2.5, 0.0, -0.0, np.inf, -np.inf, np.nan, 1e-300, -1e-300, 2.0, 3.0])
    keys = streamed.order_keys(pa.array(values))
    np.testing.assert_array_equal(np.argsort(keys, kind="stable"), np.argsort(values, kind="stable"))
    with_null = streamed.order_keys(pa.array([5, None, -7, 5], pa.int16()))
    assert np.argsort(with_null, kind="stable").tolist() == [2, 0, 3, 1]


def pa_batch(frame):
    import pyarrow as pa

    return pa.RecordBatch.from_pandas(frame, preserve_index=False)


@pytest.mark.parametrize("value", [-1, 1.5, True, "many"])
def test_stream_from_rows_must_be_a_row_count_or_null(value):
    with pytest.raises(MlopsError, match="split.stream_from_rows"):
        SplitSpec(stream_from_rows=value)


@pytest.mark.parametrize("task", TASKS)
def test_the_quantized_matrix_pages_to_disk_from_its_threshold_and_trains_the_same_model(task, tmp_path, monkeypatch):
    import xgboost

    frame, target = TASKS[task]()
    path = tmp_path / "data.parquet"
    frame.to_parquet(path, index=False)
    paged_matrices = []

    class Recorded(xgboost.ExtMemQuantileDMatrix):  # the real class, its uses counted
        def __init__(self, data, **kwargs):
            paged_matrices.append(data.cache_prefix)
            super().__init__(data, **kwargs)

    monkeypatch.setattr(xgboost, "ExtMemQuantileDMatrix", Recorded)
    runs = {paged: run_on(path, target, tmp_path / str(paged), "split.stream_from_rows=0",
                          f"split.external_memory_from_gib={0 if paged else 'null'}", "model.params.n_estimators=20")
            for paged in (False, True)}
    X = runs[False].results["contract"].encode_frame(frame).to_numpy(np.float32)
    scores = {paged: run.results["model"].predict_scores(X) for paged, run in runs.items()}
    assert len(paged_matrices) == 1 and not Path(paged_matrices[0]).parent.exists()  # paged, then removed
    np.testing.assert_allclose(scores[True], scores[False], rtol=1e-5, atol=1e-6)
    assert runs[True].results["metrics"] == pytest.approx(runs[False].results["metrics"])
    summaries = {paged: run.results["summary"]["quantized matrix"] for paged, run in runs.items()}
    assert "paged to disk (split.external_memory_from_gib=0)" in summaries[True]
    assert "in memory (split.external_memory_from_gib=null)" in summaries[False]


def test_the_matrix_is_paged_when_its_estimate_reaches_the_threshold():
    contract = small_contract("onehot")
    rows = 10_000  # 6,000 training rows at the default 60/20/20
    estimate = streamed.quantized_matrix_bytes(contract, 6_000, {})
    for limit, paged in ((estimate, True), (estimate * 1.001, False), (0, True), (None, False)):
        spec = SplitSpec(external_memory_from_gib=None if limit is None else limit / streamed.GIB)
        assert streamed.pages_to_disk(spec, contract, rows, {}) == (paged, estimate)


def small_contract(encoding):
    import pandas as pd

    from mlops_framework.features import FeatureContract

    frame = pd.DataFrame({"x": [1.0, 2.0, np.nan], "c": ["a", "b", None], "y": [0, 1, 0]})
    return FeatureContract.fit(frame, numeric=["x"], categorical=["c"], target="y", encoding=encoding,
                               unseen="ignore", task="binary")


def test_the_matrix_estimate_takes_four_bytes_a_value_when_a_model_input_can_be_missing():
    onehot, native = small_contract("onehot"), small_contract("native")
    assert onehot.feature_names == ["x", "c_a", "c_b"] and native.feature_names == ["x", "c"]
    # per row and feature: 1 byte of column copy + 1 (nothing missing) or 4 bytes of row index; 8 bytes a row
    assert streamed.quantized_matrix_bytes(onehot, 1000, {}) == 1000 * (3 * 2 + 8)
    assert streamed.quantized_matrix_bytes(onehot, 1000, {"x": 1}) == 1000 * (3 * 5 + 8)
    assert streamed.quantized_matrix_bytes(onehot, 1000, {"c": 1}) == 1000 * (3 * 2 + 8)  # no category: zeros
    assert streamed.quantized_matrix_bytes(native, 1000, {"c": 1}) == 1000 * (2 * 5 + 8)  # a missing category


@pytest.mark.parametrize("value", [-1, True, "many"])
def test_external_memory_from_gib_must_be_a_size_or_null(value):
    with pytest.raises(MlopsError, match="split.external_memory_from_gib"):
        SplitSpec(external_memory_from_gib=value)