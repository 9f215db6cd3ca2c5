"""The mortgage-lending demo's data, generated: weekly loan applications and their approval outcome.

It is the framework's default data, so ``mlops run`` needs no file. One Arrow table per week, with
these columns in this order (:data:`SCHEMA`)::

    WEEK_START_DATE        date32     Monday of the week (start_date + 7 * (WEEK - 1) days)
    WEEK                   int32      1-based week number
    LOAN_ID                int64      unique: 1_000_000 + (WEEK - 1) * rows_per_week + row in week
    TS                     timestamp  application time, within the week (microseconds, no time zone)
    LOAN_TYPE_NAME         string     Conventional | FHA-insured | VA-guaranteed | FSA/RHS-guaranteed
    LOAN_PURPOSE_NAME      string     Home purchase | Refinancing | Home improvement
    APPLICANT_INCOME_000S  float64    income in thousands (whole numbers), about 1% null
    LOAN_AMOUNT_000S       float64    loan amount in thousands (whole numbers)
    COUNTY_NAME            string     45 counties, Zipf-skewed frequencies
    MORTGAGERESPONSE       int8       the target: 1 approved, 0 denied (about 60/40)

The label follows a logistic model of income, loan-to-income ratio, loan type, purpose and county.
From ``drift_from_week`` on (scaled by ``drift_strength``, 0..1 and beyond): incomes fall and loan
amounts rise (house prices went up), and the lenders' rules change with them (the loan-to-income
threshold moves with the market, income counts for less, government-backed loans and refinancing are
favoured, county effects reshuffle), so a model fitted on earlier weeks stops working. Measured with an
XGBoost model trained on weeks 1-5 (seed 0, drift from week 11): F1 0.82 / ROC AUC 0.85 on weeks 6-10,
F1 0.43 / AUC 0.69 on weeks 11-20 at strength 1.0 (0.68 / 0.79 at 0.5, 0.78 / 0.82 at 0.25).

Every week is drawn from its own generator seeded with ``(seed, week)``: the same arguments give
identical tables, week 3 is the same whether 3 or 300 weeks are asked for, and weeks before
``drift_from_week`` are the same as with no drift.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlops_framework.errors import MlopsError

TARGET = "MORTGAGERESPONSE"

SCHEMA = pa.schema(
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
        (TARGET, pa.int8()),
    ]
)

# Bump when the generated values change, so lineage fingerprints of synthetic data change with them.
GENERATOR_VERSION = 1

LOAN_TYPES = ("Conventional", "FHA-insured", "VA-guaranteed", "FSA/RHS-guaranteed")
_LOAN_TYPE_P = np.array([0.62, 0.22, 0.11, 0.05])
_LOAN_TYPE_INCOME = np.log([1.0, 0.78, 0.92, 0.68])  # government-backed borrowers earn less
_LOAN_TYPE_EFFECT = np.array([0.35, -0.35, 0.55, -0.75])
_LOAN_TYPE_EFFECT_DRIFTED = np.array([-0.9, 0.9, 1.0, 0.6])

PURPOSES = ("Home purchase", "Refinancing", "Home improvement")
_PURPOSE_P = np.array([0.52, 0.38, 0.10])
_PURPOSE_LTI = np.log([2.6, 2.1, 0.35])  # median loan-to-income ratio by purpose
_PURPOSE_EFFECT = np.array([0.35, -0.25, -0.9])
_PURPOSE_EFFECT_DRIFTED = np.array([-0.5, 0.6, 0.4])

COUNTIES = (
    "King County", "Los Angeles County", "Cook County", "Maricopa County", "Harris County",
    "San Diego County", "Orange County", "Miami-Dade County", "Dallas County", "Kings County",
    "Riverside County", "Clark County", "Queens County", "Tarrant County", "Bexar County",
    "Wayne County", "Santa Clara County", "Broward County", "Alameda County", "Middlesex County",
    "Suffolk County", "Sacramento County", "Palm Beach County", "Hillsborough County",
    "Franklin County", "Hennepin County", "Travis County", "Fairfax County", "Allegheny County",
    "Cuyahoga County", "Salt Lake County", "Mecklenburg County", "Fulton County", "Pima County",
    "Montgomery County", "Snohomish County", "Pierce County", "Multnomah County",
    "Jefferson County", "Honolulu County", "Marion County", "Shelby County", "Erie County",
    "Essex County", "Monroe County",
)
_COUNTY_P = 1.0 / np.arange(1, len(COUNTIES) + 1) ** 1.1
_COUNTY_P /= _COUNTY_P.sum()
# The "world" is fixed; the seed only picks which applications are drawn from it.
_world = np.random.default_rng(20240101)
_COUNTY_INCOME = _world.normal(0.0, 0.18, len(COUNTIES))
_COUNTY_EFFECT = _world.normal(0.0, 0.6, len(COUNTIES))
_COUNTY_EFFECT_DRIFTED = _world.normal(0.0, 0.9, len(COUNTIES))
del _world

_INCOME_MEDIAN = 85.0
_INTERCEPT = 0.85
_INCOME_COEF = 1.1
_LTI_COEF = 3.0  # per unit of log loan-to-income above the purpose's norm
_LTI_CLIFF = 2.0  # extra penalty above 1.6x the norm
# Drift at strength 1: incomes x0.75, loan-to-income x1.75 (amounts x1.3).
_DRIFT_INCOME = np.log(0.75)
_DRIFT_LTI = np.log(1.75)

_WEEK_SECONDS = 7 * 86_400


def generate(
    *,
    weeks: int = 20,
    rows_per_week: int = 5000,
    seed: int = 0,
    drift_from_week: int | None = None,
    drift_strength: float = 1.0,
    start_date: str = "2024-01-01",
) -> Iterator[pa.Table]:
    """Yield one table per week (1..weeks) with :data:`SCHEMA`; memory is bounded by one week.

    The arguments are checked at the call (MlopsError), the weeks generated as they are iterated.
    """
    start = _check(weeks, rows_per_week, seed, drift_from_week, drift_strength, start_date)

    def tables():
        for week in range(1, weeks + 1):
            drifted = drift_from_week is not None and week >= drift_from_week
            yield _week(week, rows_per_week, seed, float(drift_strength) if drifted else 0.0, start)

    return tables()


def generate_table(**kwargs) -> pa.Table:
    """All weeks of :func:`generate` (same keyword arguments) in one table; for small sizes."""
    return pa.concat_tables(list(generate(**kwargs)))


def _check(weeks, rows_per_week, seed, drift_from_week, drift_strength, start_date) -> _dt.date:
    def is_int(x):
        return isinstance(x, (int, np.integer)) and not isinstance(x, bool)

    if not is_int(weeks) or weeks < 1:
        raise MlopsError(f"synthetic data: weeks must be a whole number >= 1, got {weeks!r}")
    if not is_int(rows_per_week) or rows_per_week < 1:
        raise MlopsError(f"synthetic data: rows_per_week must be a whole number >= 1, got {rows_per_week!r}")
    if not is_int(seed) or seed < 0:
        raise MlopsError(f"synthetic data: seed must be a whole number >= 0, got {seed!r}")
    if drift_from_week is not None and (not is_int(drift_from_week) or drift_from_week < 1):
        raise MlopsError(
            f"synthetic data: drift_from_week must be null or a week number >= 1, got {drift_from_week!r}"
        )
    number = isinstance(drift_strength, (int, float, np.floating)) and not isinstance(drift_strength, bool)
    if not number or not drift_strength >= 0:
        raise MlopsError(f"synthetic data: drift_strength must be a number >= 0, got {drift_strength!r}")
    try:
        return _dt.date.fromisoformat(str(start_date))
    except ValueError:
        raise MlopsError(
            f"synthetic data: start_date must be a date like 2024-01-01, got {start_date!r}"
        ) from None


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _week(week: int, n: int, seed: int, s: float, start: _dt.date) -> pa.Table:
    rng = np.random.default_rng([int(seed), week])
    # Every variate is drawn, in this order, whatever the drift: drift only transforms them.
    seconds = np.sort(rng.integers(0, _WEEK_SECONDS, n))
    loan_type = rng.choice(len(LOAN_TYPES), n, p=_LOAN_TYPE_P)
    purpose = rng.choice(len(PURPOSES), n, p=_PURPOSE_P)
    county = rng.choice(len(COUNTIES), n, p=_COUNTY_P)
    z_income = rng.standard_normal(n)
    z_lti = rng.standard_normal(n)
    u_label = rng.random(n)
    income_missing = rng.random(n) < 0.01

    log_income = (
        np.log(_INCOME_MEDIAN) + _LOAN_TYPE_INCOME[loan_type] + _COUNTY_INCOME[county] + 0.5 * z_income
    )
    log_lti = _PURPOSE_LTI[purpose] + 0.42 * z_lti
    # The label is decided on the pre-drift scale plus a drift term, so the drift reads as a change of
    # rules rather than as a mere relabelling of the same applicants.
    log_income_d = log_income + s * _DRIFT_INCOME
    log_lti_d = log_lti + s * _DRIFT_LTI
    income = np.maximum(np.round(np.exp(log_income_d)), 8.0)
    amount = np.maximum(np.round(np.exp(log_income_d + log_lti_d)), 1.0)

    w = min(s, 1.0)  # how far the rules have moved to the drifted ones
    lti_excess = log_lti - _PURPOSE_LTI[purpose]  # relative to the (moving) norm: market-adjusted
    logit = (
        _INTERCEPT
        + _INCOME_COEF * (log_income - np.log(_INCOME_MEDIAN)) * (1.0 - 0.8 * w)
        - _LTI_COEF * lti_excess
        - _LTI_CLIFF * (lti_excess > np.log(1.6))
        + (1.0 - w) * (_LOAN_TYPE_EFFECT[loan_type] + _PURPOSE_EFFECT[purpose] + _COUNTY_EFFECT[county])
        + w * (
            _LOAN_TYPE_EFFECT_DRIFTED[loan_type]
            + _PURPOSE_EFFECT_DRIFTED[purpose]
            + _COUNTY_EFFECT_DRIFTED[county]
        )
    )
    label = (u_label < _sigmoid(logit)).astype(np.int8)

    week_start = start + _dt.timedelta(days=7 * (week - 1))
    epoch_days = (week_start - _dt.date(1970, 1, 1)).days
    ts = (epoch_days * 86_400 + seconds) * 1_000_000
    ids = 1_000_000 + (week - 1) * n + np.arange(n, dtype=np.int64)
    columns = [
        pa.array(np.full(n, epoch_days, dtype=np.int32), type=pa.date32()),
        pa.array(np.full(n, week, dtype=np.int32)),
        pa.array(ids),
        pa.array(ts, type=pa.timestamp("us")),
        pc.take(pa.array(LOAN_TYPES), pa.array(loan_type)),
        pc.take(pa.array(PURPOSES), pa.array(purpose)),
        pa.array(income, mask=income_missing),
        pa.array(amount),
        pc.take(pa.array(COUNTIES), pa.array(county)),
        pa.array(label),
    ]
    return pa.Table.from_arrays(columns, schema=SCHEMA)
