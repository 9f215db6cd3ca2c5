"""The generated mortgage-lending data: deterministic, week by week, with the drift it promises."""

import datetime as dt
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from mlops_framework.errors import MlopsError
from mlops_local.synthetic import generate, generate_table

EXPECTED_SCHEMA = pa.schema(
    [
        ("WEEK_START_DATE", pa.date32()),
        ("WEEK", pa.int32()),
        ("LOAN_ID", pa.int64()),
        ("TS", pa.timestamp("us")),
        ("LOAN_TYPE_NAME", pa.string()),
        ("LOAN_PURPOSE_NAME", pa.string()),
        ("APPLICANT_INCOME_000S", pa.float64()),
        ("LOAN_AMOUNT_000S", pa.float64()),
        ("COUNTY_NAME", pa.string()),
        ("MORTGAGERESPONSE", pa.int8()),
    ]
)


@pytest.fixture(scope="module")
def drifted():
    """12 weeks of 4000 rows, drifting from week 7 at full strength."""
    return generate_table(weeks=12, rows_per_week=4000, seed=3, drift_from_week=7).to_pandas()


def test_same_arguments_give_identical_tables_and_another_seed_does_not():
    a = generate_table(weeks=3, rows_per_week=700, seed=5, drift_from_week=2)
    b = generate_table(weeks=3, rows_per_week=700, seed=5, drift_from_week=2)
    assert a.equals(b)
    c = generate_table(weeks=3, rows_per_week=700, seed=6, drift_from_week=2)
    assert not a.equals(c)
    assert a.column("LOAN_ID").equals(c.column("LOAN_ID"))  # ids depend on position only


def test_a_week_is_the_same_however_many_weeks_are_asked_for():
    short = list(generate(weeks=3, rows_per_week=500, seed=1))
    long = list(generate(weeks=9, rows_per_week=500, seed=1))
    assert len(short) == 3 and len(long) == 9
    assert all(t.num_rows == 500 for t in long)
    for week in range(3):
        assert short[week].equals(long[week])
    amounts = [t.column("LOAN_AMOUNT_000S") for t in long]
    assert not any(amounts[i].equals(amounts[j]) for i in range(9) for j in range(i))  # each its own draw


def test_weeks_before_the_drift_equal_the_undrifted_data():
    plain = list(generate(weeks=6, rows_per_week=400, seed=2))
    drifting = list(generate(weeks=6, rows_per_week=400, seed=2, drift_from_week=4, drift_strength=1.0))
    assert [p.equals(d) for p, d in zip(plain, drifting)] == [True, True, True, False, False, False]


def test_schema_and_values():
    t = generate_table(weeks=4, rows_per_week=3000, seed=0, start_date="2024-03-04")
    assert t.schema.equals(EXPECTED_SCHEMA)
    df = t.to_pandas()
    assert df["WEEK"].tolist() == [w for w in (1, 2, 3, 4) for _ in range(3000)]
    assert df["LOAN_ID"].is_unique
    starts = {w: dt.date(2024, 3, 4) + dt.timedelta(days=7 * (w - 1)) for w in (1, 2, 3, 4)}
    assert (df["WEEK_START_DATE"] == df["WEEK"].map(starts)).all()
    start_ts = df["WEEK_START_DATE"].map(lambda d: np.datetime64(d, "us"))
    offset = df["TS"].to_numpy() - start_ts.to_numpy(dtype="datetime64[us]")
    assert (offset >= np.timedelta64(0, "s")).all() and (offset < np.timedelta64(7, "D")).all()
    assert set(df["LOAN_TYPE_NAME"]) == {"Conventional", "FHA-insured", "VA-guaranteed", "FSA/RHS-guaranteed"}
    assert set(df["LOAN_PURPOSE_NAME"]) == {"Home purchase", "Refinancing", "Home improvement"}
    assert set(df["MORTGAGERESPONSE"]) == {0, 1}
    missing = df["APPLICANT_INCOME_000S"].isna().mean()
    assert 0.003 < missing < 0.02
    assert df["LOAN_AMOUNT_000S"].notna().all() and (df["LOAN_AMOUNT_000S"] > 0).all()
    assert (df["APPLICANT_INCOME_000S"].dropna() > 0).all()
    assert 40 < df["APPLICANT_INCOME_000S"].median() < 150  # thousands of dollars
    counts = df["COUNTY_NAME"].value_counts()
    assert 30 <= len(counts) <= 60
    assert counts.iloc[0] > 8 * counts.iloc[-1]  # skewed, not uniform


def test_label_is_balanced_and_follows_income_and_loan_to_income():
    df = generate_table(weeks=4, rows_per_week=5000, seed=0).to_pandas()
    assert 0.55 <= df["MORTGAGERESPONSE"].mean() <= 0.67
    lti = df["LOAN_AMOUNT_000S"] / df["APPLICANT_INCOME_000S"]
    purchase = df["LOAN_PURPOSE_NAME"] == "Home purchase"
    low, high = lti[purchase].quantile([0.25, 0.75])
    approved_low = df.loc[purchase & (lti <= low), "MORTGAGERESPONSE"].mean()
    approved_high = df.loc[purchase & (lti >= high), "MORTGAGERESPONSE"].mean()
    assert approved_low - approved_high > 0.3


def test_drift_shifts_distributions_and_the_label_from_the_chosen_week(drifted):
    before, after = drifted[drifted.WEEK < 7], drifted[drifted.WEEK >= 7]
    # weekly medians: flat before, a step at week 7
    income = drifted.groupby("WEEK")["APPLICANT_INCOME_000S"].median()
    amount = drifted.groupby("WEEK")["LOAN_AMOUNT_000S"].median()
    assert income.loc[1:6].max() / income.loc[1:6].min() < 1.06
    assert income.loc[7:].max() < 0.85 * income.loc[1:6].min()
    assert amount.loc[7:].min() > 1.15 * amount.loc[1:6].max()
    # the label relationship changes: government-backed loans go from worse to better than conventional
    rate = lambda d, kind: d.loc[d.LOAN_TYPE_NAME == kind, "MORTGAGERESPONSE"].mean()  # noqa: E731
    assert rate(before, "Conventional") - rate(before, "FHA-insured") > 0.1
    assert rate(after, "FHA-insured") - rate(after, "Conventional") > 0.1
    for d in (before, after):
        assert 0.45 <= d["MORTGAGERESPONSE"].mean() <= 0.7


def test_drift_strength_scales_the_shift():
    def median_income(strength):
        t = generate_table(weeks=2, rows_per_week=4000, seed=0, drift_from_week=2, drift_strength=strength)
        week2 = t.filter(pc.equal(t["WEEK"], 2))
        return pc.approximate_median(week2["APPLICANT_INCOME_000S"]).as_py()

    none, half, full = median_income(0.0), median_income(0.5), median_income(1.0)
    assert full < half < none
    assert abs((none - half) - (half - full)) < 0.35 * (none - full)  # roughly log-linear


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"weeks": 0}, "weeks"),
        ({"rows_per_week": -1}, "rows_per_week"),
        ({"weeks": 2.5}, "weeks"),
        ({"seed": -3}, "seed"),
        ({"drift_from_week": 0}, "drift_from_week"),
        ({"drift_strength": -0.5}, "drift_strength"),
        ({"start_date": "2024-13-01"}, "start_date"),
    ],
)
def test_bad_arguments_raise_at_the_call(kwargs, words):
    with pytest.raises(MlopsError, match=words):
        generate(**kwargs)  # no iteration needed


def test_a_million_rows_is_fast():
    """Vectorised: about 0.2 CPU s (a per-row loop takes tens). CPU time of this process, which other
    processes on a loaded machine do not inflate as they do wall-clock time."""
    t0 = time.process_time()
    rows = sum(t.num_rows for t in generate(weeks=20, rows_per_week=50_000, drift_from_week=10))
    cpu = time.process_time() - t0
    assert rows == 1_000_000
    assert cpu < 2.0, f"1M rows took {cpu:.2f} CPU s"
