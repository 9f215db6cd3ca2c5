"""The streaming scorer: one score per row, next to the row, whatever the batching."""

import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlops_framework.errors import MlopsError
from mlops_framework.features import FeatureContract
from mlops_framework.scoring import ScoreResult, score_to_sink
from mlops_local.sinks import DuckDBSink, ParquetSink

NUMERIC = ["APPLICANT_INCOME_000S", "LOAN_AMOUNT_000S"]
CATEGORICAL = ["LOAN_TYPE_NAME", "LOAN_PURPOSE_NAME", "COUNTY_NAME"]
TARGET = "MORTGAGERESPONSE"


def make_frame(n, seed=0):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "WEEK_START_DATE": (pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 3, n) * 7, unit="D")).date,
            "WEEK": rng.integers(1, 4, n),
            "LOAN_ID": np.arange(n),
            "TS": pd.Timestamp("2024-01-01 09:00") + pd.to_timedelta(rng.integers(0, 10**6, n), unit="s"),
            "LOAN_TYPE_NAME": rng.choice(["Conventional", "FHA-insured", "VA-guaranteed"], n),
            "LOAN_PURPOSE_NAME": rng.choice(["Home purchase", "Refinancing"], n),
            "COUNTY_NAME": rng.choice(["Adams", "Baker", "Clark", "Dane", "Erie"], n),
            "APPLICANT_INCOME_000S": rng.gamma(2, 50, n).round(),
            "LOAN_AMOUNT_000S": rng.gamma(2, 100, n).round(),
        }
    )
    logit = 0.02 * frame.APPLICANT_INCOME_000S - 0.008 * frame.LOAN_AMOUNT_000S + (frame.COUNTY_NAME == "Clark") * 1.5
    frame[TARGET] = (logit + rng.normal(0, 1, n) > 0).astype(int)
    frame.loc[frame.index % 17 == 0, "APPLICANT_INCOME_000S"] = np.nan
    frame.loc[frame.index % 19 == 0, "COUNTY_NAME"] = None
    return frame


class TinyModel:
    """The interface of the real TrainedModel: a contract and predict_scores."""

    def __init__(self, frame, encoding="onehot", positive_label=None):
        import xgboost as xgb

        if positive_label is not None:
            frame = frame.assign(**{TARGET: np.where(frame[TARGET] == 1, positive_label, "declined")})
        self.contract = FeatureContract.fit(
            frame, numeric=NUMERIC, categorical=CATEGORICAL, target=TARGET, encoding=encoding
        )
        data = xgb.DMatrix(
            self.contract.encode_frame(frame),
            label=self.contract.encode_target(frame[TARGET]),
            enable_categorical=encoding == "native",
        )
        params = {"objective": "binary:logistic", "max_depth": 3, "nthread": 1}  # one thread: no OpenMP spin-waits on a busy machine
        self.booster = xgb.train(params, data, num_boost_round=15)

    def predict_scores(self, X):
        return self.booster.inplace_predict(X)

    def reference_scores(self, frame):
        import xgboost as xgb

        encoded = self.contract.encode_frame(frame)
        return self.booster.predict(xgb.DMatrix(encoded, enable_categorical=self.contract.encoding == "native"))


@pytest.fixture(scope="module")
def train():
    return make_frame(600, seed=1)


@pytest.fixture(scope="module")
def model(train):
    return TinyModel(train)


@pytest.fixture(scope="module")
def scoring_frame():
    return make_frame(1000, seed=2)


def batches_of(frame, size):
    return pa.Table.from_pandas(frame, preserve_index=False).to_batches(max_chunksize=size)


def test_scores_equal_booster_predict_and_classes_follow_threshold(tmp_path, model, scoring_frame):
    out = tmp_path / "predictions.parquet"
    result = score_to_sink(model, batches_of(scoring_frame, 1000), ParquetSink(out), threshold=0.4)
    assert isinstance(result, ScoreResult) and result.rows == 1000 and str(out) in result.destination
    table = pq.read_table(out)
    scores = table.column("PREDICTED_SCORE").to_numpy()
    np.testing.assert_allclose(scores, model.reference_scores(scoring_frame), rtol=1e-6)
    assert 0.05 < (scores >= 0.4).mean() < 0.95  # the threshold really splits this data
    np.testing.assert_array_equal(table.column("PREDICTED_RESPONSE").to_numpy(), (scores >= 0.4).astype(int))
    assert table.schema.field("PREDICTED_RESPONSE").type == pa.int64()


def test_every_input_column_is_kept_unchanged_one_row_out_per_row_in(tmp_path, model, scoring_frame):
    source = pa.Table.from_pandas(scoring_frame, preserve_index=False)
    out = tmp_path / "predictions.parquet"
    score_to_sink(model, source.to_batches(max_chunksize=300), ParquetSink(out))
    table = pq.read_table(out)
    assert table.column_names == [*source.column_names, "PREDICTED_SCORE", "PREDICTED_RESPONSE"]
    assert table.select(source.column_names).equals(source)
    assert table.column(TARGET).equals(source.column(TARGET))  # predictions sit next to the truth


def test_many_small_batches_score_like_one_batch(tmp_path, model, scoring_frame):
    one, many = tmp_path / "one.parquet", tmp_path / "many.parquet"
    score_to_sink(model, batches_of(scoring_frame, 1000), ParquetSink(one))
    result = score_to_sink(model, iter(batches_of(scoring_frame, 7)), ParquetSink(many), total_rows=1000)
    assert result.rows == 1000
    assert pq.read_table(many).equals(pq.read_table(one))


def test_every_row_of_batches_of_any_size_carries_the_stamp_and_a_null_target(tmp_path, model, scoring_frame):
    import datetime as dt

    unlabelled = pa.Table.from_pandas(scoring_frame.drop(columns=[TARGET]), preserve_index=False)
    sizes = [5, 300, 2, 450, 243]  # a batch longer than every one before it, then shorter ones
    batches, start = [], 0
    for size in sizes:
        batches.append(unlabelled.slice(start, size).to_batches()[0])
        start += size
    scored_at = dt.datetime(2026, 1, 2, 3, 4, 5)
    stamp = {"MODEL_NAME": "M", "MODEL_VERSION": "v7", "RUN_ID": None, "SCORED_AT": scored_at}
    out = tmp_path / "p.parquet"
    assert score_to_sink(model, iter(batches), ParquetSink(out), stamp=stamp).rows == 1000
    table = pq.read_table(out)
    assert table.select(unlabelled.column_names).equals(unlabelled)
    assert table.column(TARGET).null_count == 1000
    assert table.column("MODEL_NAME").to_pylist() == ["M"] * 1000
    assert table.column("MODEL_VERSION").to_pylist() == ["v7"] * 1000
    assert table.column("RUN_ID").null_count == 1000
    assert table.column("SCORED_AT").to_pylist() == [scored_at] * 1000


def test_threshold_and_custom_column_names(tmp_path, model, scoring_frame):
    out = tmp_path / "p.parquet"
    score_to_sink(model, batches_of(scoring_frame, 250), ParquetSink(out), threshold=0.9, score_column="P", class_column="C")
    table = pq.read_table(out)
    np.testing.assert_array_equal(table.column("C").to_numpy(), (table.column("P").to_numpy() >= 0.9).astype(int))
    with pytest.raises(MlopsError, match="between 0 and 1"):
        score_to_sink(model, batches_of(scoring_frame, 250), ParquetSink(out), threshold=1.5)


def test_string_classes_give_a_string_class_column(tmp_path, train, scoring_frame):
    model = TinyModel(train, positive_label="approved")
    assert model.contract.classes == ["approved", "declined"]  # sorted: "declined" is the positive class
    out = tmp_path / "p.parquet"
    score_to_sink(model, batches_of(scoring_frame, 400), ParquetSink(out))
    table = pq.read_table(out)
    assert table.schema.field("PREDICTED_RESPONSE").type == pa.string()
    expected = np.where(table.column("PREDICTED_SCORE").to_numpy() >= 0.5, "declined", "approved")
    assert table.column("PREDICTED_RESPONSE").to_pylist() == expected.tolist()


def test_native_categorical_model_scores_like_its_booster(tmp_path, train, scoring_frame):
    model = TinyModel(train, encoding="native")
    out = tmp_path / "p.parquet"
    score_to_sink(model, batches_of(scoring_frame, 333), ParquetSink(out))
    scores = pq.read_table(out).column("PREDICTED_SCORE").to_numpy()
    np.testing.assert_allclose(scores, model.reference_scores(scoring_frame), rtol=1e-6)


def test_missing_input_column_fails_before_anything_is_written(tmp_path, model, scoring_frame):
    out = tmp_path / "p.parquet"
    score_to_sink(model, batches_of(scoring_frame, 500), ParquetSink(out))
    before = out.read_bytes()
    broken = scoring_frame.drop(columns=["COUNTY_NAME", "LOAN_AMOUNT_000S"])
    with pytest.raises(MlopsError, match="LOAN_AMOUNT_000S, COUNTY_NAME"):
        score_to_sink(model, batches_of(broken, 500), DuckDBSink(tmp_path / "w.duckdb"))
    assert not (tmp_path / "w.duckdb").exists()  # the sink was never opened
    with pytest.raises(MlopsError, match="LOAN_AMOUNT_000S"):
        score_to_sink(model, batches_of(broken, 500), ParquetSink(out))
    assert out.read_bytes() == before
    with pytest.raises(MlopsError, match="PREDICTED_SCORE"):
        score_to_sink(model, pq.read_table(out).to_batches(), ParquetSink(tmp_path / "again.parquet"))


def test_error_in_the_source_aborts_the_sink_and_propagates(tmp_path, model, scoring_frame):
    out = tmp_path / "p.parquet"
    score_to_sink(model, batches_of(scoring_frame, 500), ParquetSink(out))
    before = out.read_bytes()

    def failing():
        yield from batches_of(scoring_frame, 100)[:6]
        raise OSError("source went away")

    with pytest.raises(OSError, match="source went away"):
        score_to_sink(model, failing(), ParquetSink(out))
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.parquet"]  # no temp file left


def test_error_in_the_model_aborts_the_sink(tmp_path, model, scoring_frame):
    class Broken:
        contract = model.contract
        calls = 0

        def predict_scores(self, X):
            Broken.calls += 1
            if Broken.calls == 3:
                raise RuntimeError("model crashed")
            return model.predict_scores(X)

    path = tmp_path / "w.duckdb"
    score_to_sink(model, batches_of(scoring_frame, 1000), DuckDBSink(path))
    with pytest.raises(RuntimeError, match="model crashed"):
        score_to_sink(Broken(), batches_of(scoring_frame, 100), DuckDBSink(path))
    import duckdb

    with duckdb.connect(str(path)) as con:
        assert con.execute('SELECT count(*) FROM "PREDICTIONS_WITH_GROUND_TRUTH"').fetchone() == (1000,)


def test_no_batches_leaves_the_sink_untouched(tmp_path, model):
    out = tmp_path / "p.parquet"
    result = score_to_sink(model, iter([]), ParquetSink(out))
    assert result.rows == 0 and not out.exists()


def test_progress_bar_reports_rows_on_stderr(tmp_path, model, scoring_frame, capsys):
    score_to_sink(model, batches_of(scoring_frame, 250), ParquetSink(tmp_path / "p.parquet"), progress=True, total_rows=1000)
    assert "1000/1000" in capsys.readouterr().err
    score_to_sink(model, batches_of(scoring_frame, 250), ParquetSink(tmp_path / "q.parquet"), progress=None)
    assert sys.stderr.isatty() or capsys.readouterr().err == ""
