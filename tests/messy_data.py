"""Generators of real-world-shaped files for the bring-your-own-data tests (no data files in the repo).

:func:`write_mortgage_lab_csv` writes a CSV shaped like the mortgage lab's public one: the demo's column
names, but the quirks of a file that went through a spreadsheet and an export tool. :func:`write_sklearn_csv`
writes one of scikit-learn's bundled datasets with quirks added.
"""

import numpy as np

from mlops_local.synthetic import generate_table


def write_mortgage_lab_csv(path, *, weeks=6, rows_per_week=400, seed=3, drift_from_week=None):
    """The demo's loans as a messy CSV: UTF-8 BOM and CRLF line ends; ``TS`` mangled by a spreadsheet into
    minutes:seconds (``20:15.4``), the true time kept in ``APPLIED_AT`` as ISO-8601 with a zone
    (``2024-01-01T06:00:42Z``); ``LOAN_ID`` as ``17-000003``-style text; ``WEEK_START_DATE`` as ISO dates;
    incomes with ``NA`` and empty cells, whole numbers written without a decimal point; county names
    missing as ``NA`` or empty; a ``HAS_COAPPLICANT`` column of ``True``/``False``; an ``APPROVED`` column
    of ``YES``/``NO`` (the target spelled as labels). Returns the pandas frame written (before quoting)."""
    frame = generate_table(weeks=weeks, rows_per_week=rows_per_week, seed=seed,
                           drift_from_week=drift_from_week).to_pandas()
    rng = np.random.default_rng(seed)
    n = len(frame)
    ts = frame.pop("TS")
    frame.insert(3, "TS", [f"{t.minute:02d}:{t.second:02d}.{t.microsecond // 100_000}" for t in ts])
    frame["APPLIED_AT"] = [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in ts]
    frame["LOAN_ID"] = [f"17-{i % 1_000_000:06d}" for i in frame["LOAN_ID"]]
    income = frame["APPLICANT_INCOME_000S"].map(lambda v: "" if v != v else str(int(v))).astype(object)
    income[rng.random(n) < 0.03] = "NA"
    income[rng.random(n) < 0.02] = ""
    frame["APPLICANT_INCOME_000S"] = income
    frame["LOAN_AMOUNT_000S"] = frame["LOAN_AMOUNT_000S"].map(lambda v: str(int(v)))
    county = frame["COUNTY_NAME"].astype(object)
    county[rng.random(n) < 0.02] = "NA"
    county[rng.random(n) < 0.02] = ""
    frame["COUNTY_NAME"] = county
    frame["HAS_COAPPLICANT"] = np.where(rng.random(n) < 0.4, "True", "False")
    frame["APPROVED"] = np.where(frame["MORTGAGERESPONSE"] == 1, "YES", "NO")
    text = frame.to_csv(index=False, lineterminator="\r\n")
    with open(path, "w", encoding="utf-8-sig", newline="") as f:
        f.write(text)
    return frame
