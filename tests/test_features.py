"""The feature contract: learned once, enforced identically through pandas and Arrow."""

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from mlops_framework.errors import MlopsError
from mlops_framework.features import FeatureContract

NUMERIC = ["APPLICANT_INCOME_000S", "LOAN_AMOUNT_000S"]
CATEGORICAL = ["LOAN_TYPE_NAME", "LOAN_PURPOSE_NAME", "COUNTY_NAME"]
TARGET = "MORTGAGERESPONSE"
LOAN_TYPES = ["Conventional", "FHA-insured", "VA-guaranteed"]
PURPOSES = ["Home purchase", "Refinancing"]
COUNTIES = ["Adams", "Baker", "Clark", "Dane"]


def make_frame(n=200, seed=0, nulls=False):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "WEEK_START_DATE": pd.Timestamp("2024-01-01").date(),
            "WEEK": rng.integers(1, 4, n),
            "LOAN_ID": np.arange(n),
            "LOAN_TYPE_NAME": rng.choice(LOAN_TYPES, n).astype(object),
            "LOAN_PURPOSE_NAME": rng.choice(PURPOSES, n).astype(object),
            "COUNTY_NAME": rng.choice(COUNTIES, n).astype(object),
            "APPLICANT_INCOME_000S": rng.gamma(2, 50, n),
            "LOAN_AMOUNT_000S": rng.gamma(2, 100, n),
            TARGET: rng.integers(0, 2, n),
        }
    )
    if nulls:
        frame.loc[1, "APPLICANT_INCOME_000S"] = np.nan
        frame.loc[2, "COUNTY_NAME"] = None
        frame.loc[3, "LOAN_TYPE_NAME"] = None
    return frame


def fit(frame, **kwargs):
    return FeatureContract.fit(frame, numeric=NUMERIC, categorical=CATEGORICAL, target=TARGET, **kwargs)


def test_fit_learns_sorted_vocabulary_classes_and_feature_names():
    contract = fit(make_frame(nulls=True))
    assert contract.categorical == {"LOAN_TYPE_NAME": LOAN_TYPES, "LOAN_PURPOSE_NAME": PURPOSES, "COUNTY_NAME": COUNTIES}
    assert contract.classes == [0, 1]
    assert contract.input_columns == NUMERIC + CATEGORICAL
    assert contract.feature_names[:3] == [*NUMERIC, "LOAN_TYPE_NAME_Conventional"]
    assert contract.feature_names[-1] == "COUNTY_NAME_Dane"
    assert len(contract.feature_names) == 2 + 3 + 2 + 4


def test_onehot_dummies_are_float_and_none_is_dropped_by_select_dtypes():
    """The notebook's bug: pandas 2 dummies are bool and select_dtypes('number') drops them."""
    frame = make_frame()
    contract = fit(frame)
    encoded = contract.encode_frame(frame)
    assert list(encoded.columns) == contract.feature_names
    assert set(encoded.dtypes) == {np.dtype("float32")}
    assert list(encoded.select_dtypes("number").columns) == contract.feature_names
    dummies = encoded.drop(columns=NUMERIC)
    assert set(np.unique(dummies.to_numpy())) == {0.0, 1.0}
    for col, vocab in contract.categorical.items():
        block = encoded[[f"{col}_{v}" for v in vocab]].to_numpy()
        assert (block.sum(axis=1) == 1).all()
        expected = np.array([vocab.index(v) for v in frame[col]])
        assert (block.argmax(axis=1) == expected).all()
    np.testing.assert_array_equal(encoded[NUMERIC].to_numpy(), frame[NUMERIC].to_numpy(np.float32))
    assert encoded.index.equals(frame.index)


def test_nulls_are_missing_not_unseen():
    frame = make_frame(nulls=True)
    contract = fit(make_frame(), unseen="error")  # a null must not trip the unseen check
    encoded = contract.encode_frame(frame)
    assert np.isnan(encoded.loc[1, "APPLICANT_INCOME_000S"])
    assert encoded.loc[2, [f"COUNTY_NAME_{c}" for c in COUNTIES]].sum() == 0
    assert encoded.loc[3, [f"LOAN_TYPE_NAME_{t}" for t in LOAN_TYPES]].sum() == 0


def test_unseen_ignore_gives_all_zero_dummies_and_native_nan():
    frame = make_frame(20)
    contract = fit(frame)
    scoring = frame.copy()
    scoring.loc[0, "COUNTY_NAME"] = "Zurich"
    encoded = contract.encode_frame(scoring)
    assert encoded.loc[0, [f"COUNTY_NAME_{c}" for c in COUNTIES]].sum() == 0
    assert encoded.loc[1:].equals(contract.encode_frame(frame).loc[1:])

    native = fit(frame, encoding="native").encode_frame(scoring)
    assert pd.isna(native.loc[0, "COUNTY_NAME"])
    assert list(native["COUNTY_NAME"].cat.categories) == COUNTIES


def test_unseen_error_names_each_column_and_at_most_ten_values():
    frame = make_frame(40)
    contract = fit(frame, unseen="error")
    scoring = frame.copy()
    scoring.loc[:11, "COUNTY_NAME"] = [f"New County {i:02d}" for i in range(12)]
    scoring.loc[0, "LOAN_PURPOSE_NAME"] = "Cash-out"
    with pytest.raises(MlopsError) as info:
        contract.encode_batch(pa.Table.from_pandas(scoring))
    message = str(info.value)
    assert "'COUNTY_NAME'" in message and "'LOAN_PURPOSE_NAME'" in message and "'Cash-out'" in message
    assert "'New County 09'" in message and "'New County 10'" not in message and "2 more" in message
    with pytest.raises(MlopsError, match="COUNTY_NAME"):
        fit(frame, encoding="native", unseen="error").encode_frame(scoring)


def test_missing_columns_are_all_listed():
    contract = fit(make_frame())
    with pytest.raises(MlopsError) as info:
        contract.check_columns(["APPLICANT_INCOME_000S", "COUNTY_NAME", "loan_type_name"], need_target=True)
    message = str(info.value)
    for name in ["LOAN_AMOUNT_000S", "LOAN_TYPE_NAME", "LOAN_PURPOSE_NAME", TARGET]:
        assert name in message
    assert "4 required column(s)" in message and "'loan_type_name' for 'LOAN_TYPE_NAME'" in message
    contract.check_columns([*contract.input_columns, "EXTRA"])  # extra columns are fine
    with pytest.raises(MlopsError, match="LOAN_AMOUNT_000S"):
        contract.encode_frame(make_frame().drop(columns=["LOAN_AMOUNT_000S"]))


def test_one_column_with_delimiters_hints_at_the_delimiter():
    contract = fit(make_frame())
    header = ";".join(make_frame().columns)
    with pytest.raises(MlopsError, match=r"delimited by ';'"):
        contract.check_columns([header])
    with pytest.raises(MlopsError, match=r"delimited by a tab"):
        contract.check_columns(["\t".join(make_frame().columns)])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.assign(MORTGAGERESPONSE=1), r"only one class \(1\)"),
        (lambda f: f.assign(MORTGAGERESPONSE=np.arange(len(f)) % 3), r"3 classes \(0, 1, 2\)"),
        (lambda f: f.drop(columns=[TARGET]), "MORTGAGERESPONSE"),
        (lambda f: f.drop(columns=["COUNTY_NAME", "LOAN_AMOUNT_000S"]), r"missing 2 required column\(s\): LOAN_AMOUNT_000S, COUNTY_NAME"),
        (lambda f: f.assign(LOAN_AMOUNT_000S=f.LOAN_AMOUNT_000S.astype(str)), "'LOAN_AMOUNT_000S' has dtype object"),
        (lambda f: f.assign(APPLICANT_INCOME_000S=np.nan), "'APPLICANT_INCOME_000S' has no values"),
        (lambda f: f.assign(COUNTY_NAME=None), "'COUNTY_NAME' has no values"),
        (lambda f: f.assign(MORTGAGERESPONSE=f.MORTGAGERESPONSE.where(f.index > 0)), "1 missing value"),
    ],
    ids=["one-class", "three-class", "no-target", "missing-features", "non-numeric", "all-nan", "all-null-cat", "null-target"],
)
def test_fit_rejects_bad_training_data(change, message):
    with pytest.raises(MlopsError, match=message):
        fit(change(make_frame()))


def test_bad_settings_are_rejected():
    frame = make_frame()
    with pytest.raises(MlopsError, match="encoding"):
        fit(frame, encoding="ordinal")
    with pytest.raises(MlopsError, match="unseen"):
        fit(frame, unseen="drop")
    with pytest.raises(MlopsError, match="both numeric and categorical"):
        FeatureContract.fit(frame, numeric=["COUNTY_NAME"], categorical=["COUNTY_NAME"], target=TARGET)
    with pytest.raises(MlopsError, match="target"):
        FeatureContract.fit(frame, numeric=[TARGET], categorical=[], target=TARGET)


def test_to_dict_from_dict_round_trips_through_json_with_int_and_str_vocabulary():
    frame = make_frame()
    frame[TARGET] = np.where(frame[TARGET] == 1, "yes", "no")
    contract = FeatureContract.fit(
        frame, numeric=NUMERIC, categorical=["WEEK", "COUNTY_NAME"], target=TARGET, encoding="native", unseen="error"
    )
    assert contract.categorical["WEEK"] == [1, 2, 3] and type(contract.categorical["WEEK"][0]) is int
    assert contract.classes == ["no", "yes"]
    restored = FeatureContract.from_dict(json.loads(json.dumps(contract.to_dict())))
    assert restored == contract
    assert restored.feature_names == contract.feature_names
    pd.testing.assert_frame_equal(restored.encode_frame(frame), contract.encode_frame(frame))
    with pytest.raises(MlopsError, match="lacks classes"):
        FeatureContract.from_dict({k: v for k, v in contract.to_dict().items() if k != "classes"})


def test_encode_target_maps_classes_to_zero_one():
    frame = make_frame()
    frame[TARGET] = np.where(frame[TARGET] == 1, "yes", "no")
    contract = fit(frame)
    y = contract.encode_target(frame[TARGET])
    assert y.dtype.kind == "i" and set(y) == {0, 1}
    assert (y == (frame[TARGET] == "yes")).all()
    with pytest.raises(MlopsError, match="'maybe'"):
        contract.encode_target(pd.Series(["yes", "maybe"]))


@pytest.mark.parametrize("encoding", ["onehot", "native"])
def test_encode_frame_equals_encode_batch_whatever_the_arrow_layout(encoding):
    train = make_frame(300)
    contract = fit(train, encoding=encoding)
    frame = make_frame(120, seed=5, nulls=True)
    frame.loc[4, "COUNTY_NAME"] = "Unseen"
    expected = contract.encode_frame(frame)

    table = pa.Table.from_pandas(frame, preserve_index=False)
    shuffled = table.select(list(reversed(table.column_names))).append_column("EXTRA", pa.array(range(120)))
    dictionary = pa.Table.from_arrays(
        [c.dictionary_encode() if pa.types.is_string(c.type) else c for c in table.columns], names=table.column_names
    )
    chunked = pa.concat_tables([table.slice(0, 50), table.slice(50)])
    views = {
        "record batch": table.to_batches()[0],
        "shuffled with extra column": shuffled,
        "dictionary strings": dictionary,
        "two chunks": chunked,
        "large strings": table.cast(
            pa.schema([pa.field(f.name, pa.large_string()) if pa.types.is_string(f.type) else f for f in table.schema])
        ),
    }
    for label, data in views.items():
        encoded = contract.encode_batch(data)
        if encoding == "onehot":
            assert isinstance(encoded, np.ndarray), label
            assert encoded.dtype == np.float32 and encoded.flags.c_contiguous, label
            assert encoded.shape == (120, len(contract.feature_names)), label
            np.testing.assert_array_equal(encoded, expected.to_numpy(), err_msg=label)
        else:
            expected.index = pd.RangeIndex(120)
            pd.testing.assert_frame_equal(encoded, expected, obj=label)

    reordered = frame[list(reversed(frame.columns))].assign(EXTRA=1)
    pd.testing.assert_frame_equal(contract.encode_frame(reordered), contract.encode_frame(frame))


def test_integers_beyond_float32s_exact_range_encode_as_numpy_rounds_them():
    values = [22_227_415, 2**24 + 1, -(2**31), None]
    train = pd.DataFrame({"POP": pd.array(values, dtype="Int64"), "Y": [0, 1, 0, 1]})
    contract = FeatureContract.fit(train, target="Y", numeric=["POP"], categorical=[])
    encoded = contract.encode_batch(pa.RecordBatch.from_pandas(train))
    expected = np.array([22_227_415, 2**24 + 1, -(2**31), np.nan]).astype(np.float32)
    np.testing.assert_array_equal(encoded[:, 0], expected)
    assert encoded[0, 0] == 22_227_416  # rounded, not refused


def test_decimal_columns_become_int64_when_whole_and_in_range_else_float64():
    from decimal import Decimal

    from mlops_framework.features import numbers_from_decimals, to_frame

    table = pa.table({
        "ID": pa.array([Decimal(1), Decimal(2), None], pa.decimal128(38, 0)),
        "HUGE": pa.array([Decimal(2**63), Decimal(1), None], pa.decimal128(38, 0)),
        "PRICE": pa.array([Decimal("1.25"), None, Decimal("-3.10")], pa.decimal128(12, 2)),
        "NAME": pa.array(["a", "b", None]),
    })
    converted = numbers_from_decimals(table)
    assert [str(t) for t in converted.schema.types] == ["int64", "double", "double", "string"]
    assert converted.column("ID").to_pylist() == [1, 2, None]
    assert converted.column("HUGE").to_pylist() == [float(2**63), 1.0, None]
    assert converted.column("PRICE").to_pylist() == [1.25, None, -3.1]
    assert converted.column("NAME").equals(table.column("NAME"))
    assert numbers_from_decimals(table.to_batches()[0]).schema == converted.schema
    frame = to_frame(table)
    assert str(frame["PRICE"].dtype) == "float64" and frame["ID"].tolist()[:2] == [1, 2]
    plain = pa.table({"X": [1.0]})
    assert numbers_from_decimals(plain) is plain


def test_a_decimal_target_and_features_learn_as_numbers_and_score_from_decimals():
    from decimal import Decimal

    from mlops_framework.features import to_frame

    table = pa.table({"AMOUNT": pa.array([Decimal(f"{v}.50") for v in range(8)], pa.decimal128(38, 2)),
                      "LABEL": pa.array([Decimal(v % 2) for v in range(8)], pa.decimal128(38, 0))})
    contract = FeatureContract.fit(to_frame(table), target="LABEL", numeric=["AMOUNT"], categorical=[])
    assert contract.classes == [0, 1] and json.loads(json.dumps(contract.to_dict()))["classes"] == [0, 1]
    np.testing.assert_array_equal(contract.encode_target(table.column("LABEL")), [v % 2 for v in range(8)])
    np.testing.assert_array_equal(contract.encode_batch(table)[:, 0], np.arange(8) + 0.5)


def test_positive_class_comes_second_and_must_be_one_of_a_binary_targets_classes():
    frame = pd.DataFrame({"X": range(8), "LABEL": ["fraud", "ok", "ok", "ok"] * 2, "N": [0, 1] * 4})
    default = FeatureContract.fit(frame, target="LABEL", numeric=["X"], categorical=[])
    chosen = FeatureContract.fit(frame, target="LABEL", numeric=["X"], categorical=[], positive_class="fraud")
    assert default.classes == ["fraud", "ok"] and chosen.classes == ["ok", "fraud"]
    np.testing.assert_array_equal(chosen.encode_target(frame["LABEL"]), [1, 0, 0, 0] * 2)
    assert FeatureContract.fit(frame, target="N", numeric=["X"], categorical=[], positive_class="0").classes == [1, 0]
    assert FeatureContract.from_dict(json.loads(json.dumps(chosen.to_dict()))).classes == ["ok", "fraud"]
    with pytest.raises(MlopsError, match=r"features.positive_class 'frod' is not a class of target column 'LABEL': 'fraud', 'ok'"):
        FeatureContract.fit(frame, target="LABEL", numeric=["X"], categorical=[], positive_class="frod")
    with pytest.raises(MlopsError, match="features.positive_class is for a binary target; 'X' is a regression target"):
        FeatureContract.fit(frame, target="X", numeric=["N"], categorical=[], task="regression", positive_class=1)


def test_native_encoding_keeps_numeric_float32_and_fixed_categories():
    frame = make_frame(50)
    contract = fit(frame, encoding="native")
    assert contract.feature_names == NUMERIC + CATEGORICAL
    encoded = contract.encode_frame(frame.iloc[:5])  # fewer values than the vocabulary
    assert [str(t) for t in encoded.dtypes[NUMERIC]] == ["float32", "float32"]
    for col in CATEGORICAL:
        assert list(encoded[col].cat.categories) == contract.categorical[col]
        assert list(encoded[col].astype(object)) == list(frame[col].iloc[:5])


def test_numeric_column_of_text_is_a_clear_error_at_scoring():
    contract = fit(make_frame())
    bad = pa.Table.from_pandas(make_frame(5).assign(LOAN_AMOUNT_000S="lots"))
    with pytest.raises(MlopsError, match="LOAN_AMOUNT_000S"):
        contract.encode_batch(bad)


@pytest.mark.parametrize("encoding", ["onehot", "native"])
def test_values_and_columns_with_marks_xgboost_refuses_train_and_score(encoding):
    """A lab's ``<0.006`` or a column ``dose[mg]``: XGBoost refuses [, ] and < in feature names."""
    import xgboost

    frame = pd.DataFrame({"dose[mg]": [1.0, 2.0, 3.0, 4.0] * 5, "NH4": ["<0.006", "0.01", "[0.02]", "0.5"] * 5,
                          "Y": [0, 1, 0, 1] * 5})
    contract = FeatureContract.fit(frame, numeric=["dose[mg]"], categorical=["NH4"], target="Y", encoding=encoding)
    assert not any(mark in name for name in contract.feature_names for mark in "[]<")
    model = xgboost.XGBClassifier(n_estimators=2, enable_categorical=encoding == "native")
    model.fit(contract.encode_frame(frame), contract.encode_target(frame["Y"]))
    scored = model.get_booster().inplace_predict(contract.encode_batch(pa.Table.from_pandas(frame)))
    assert len(scored) == len(frame)
    if encoding == "native":
        assert list(contract.encode_frame(frame)["dose(mg)"]) == frame["dose[mg]"].tolist()


def test_to_frame_reads_booleans_with_nulls_as_nullable_booleans():
    from decimal import Decimal

    from mlops_framework.features import to_frame

    table = pa.table({"PRICE": pa.array([Decimal("1.25"), None], pa.decimal128(10, 2)),
                      "FLAG": pa.array([True, None]), "SEEN": pa.array([True, False])})
    frame = to_frame(table)
    assert [str(t) for t in frame.dtypes] == ["float64", "boolean", "bool"]
    assert frame["PRICE"].iloc[0] == 1.25 and frame["FLAG"].isna().tolist() == [False, True]
    assert to_frame(table.to_batches()[0]).equals(frame)
