"""Model monitoring: performance per time window, and drift of every column against a baseline.

The metric functions are plain numpy, each checked in ``tests/test_monitoring.py`` against a reference
(scikit-learn, ``scipy.spatial.distance.jensenshannon``, ``scipy.stats.wasserstein_distance``, hand
computed PSI and Hellinger). Distribution metrics compare *probability-normalised* histograms (each
sums to one; the demo notebook's ``density=True`` histograms did not):

- numeric columns: bins from the baseline (``quantile``: edges at its quantiles, ``uniform``: equal
  widths over its range); the outer bins are open, so current values beyond the baseline's range are
  counted in them. Missing values are left out (their share is the ``NULL_SHARE`` column).
- categorical columns (and the predicted class): the frequency of each category; categories seen only
  in the current window get a baseline frequency of zero. With more than ``bins`` categories, the
  ``bins - 1`` most frequent in the baseline are kept and the rest (unseen ones included) pooled as
  ``(other)``: a rare category absent from a small baseline would otherwise dominate PSI.

``psi`` = sum((q - p) * ln(q / p)) with both proportions floored at ``PSI_EPSILON`` (no renormalising);
``jensen_shannon`` = the Jensen-Shannon *distance* in base 2 (0..1, scipy's ``jensenshannon(p, q, 2)``);
``hellinger`` = sqrt(1 - sum(sqrt(p * q))) (0..1); ``wasserstein`` = the earth mover's distance between
the raw values (numeric columns only); ``difference_of_means`` = mean(current) - mean(baseline).
"""

from __future__ import annotations

import datetime as dt
import uuid

import numpy as np

from mlops_framework.errors import MlopsError

PSI_EPSILON = 1e-4


# ---------------------------------------------------------------------- performance
def roc_auc(y_true, scores) -> float | None:
    """Area under the ROC curve (the Mann-Whitney statistic, ties counted half); None with one class."""
    from scipy.stats import rankdata

    y_true = np.asarray(y_true).astype(bool)
    positives, negatives = int(y_true.sum()), int((~y_true).sum())
    if positives == 0 or negatives == 0:
        return None
    ranks = rankdata(np.asarray(scores, dtype=float))
    return float((ranks[y_true].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def classification_summary(y_true, y_pred, scores=None, *, average: str = "macro") -> dict:
    """Accuracy, precision, recall, F1 (``macro`` over both classes or ``binary``: the positive class 1),
    ROC AUC, rows and the confusion counts of 0/1 labels. Undefined ratios are 0, as scikit-learn's
    ``zero_division=0``."""
    if average not in ("macro", "binary"):
        raise MlopsError(f"monitor.average must be macro or binary, not {average!r}")
    y_true = np.asarray(y_true).astype(int)
    y_pred = np.asarray(y_pred).astype(int)
    tp = int(((y_true == 1) & (y_pred == 1)).sum())
    tn = int(((y_true == 0) & (y_pred == 0)).sum())
    fp = int(((y_true == 0) & (y_pred == 1)).sum())
    fn = int(((y_true == 1) & (y_pred == 0)).sum())

    def ratio(a, b):
        return a / b if b else 0.0

    def prf(tp_, fp_, fn_):
        p, r = ratio(tp_, tp_ + fp_), ratio(tp_, tp_ + fn_)
        return p, r, ratio(2 * p * r, p + r)

    positive = prf(tp, fp, fn)
    if average == "binary":
        precision, recall, f1 = positive
    else:
        negative = prf(tn, fn, fp)
        precision, recall, f1 = ((a + b) / 2 for a, b in zip(positive, negative))
    n = len(y_true)
    return {
        "rows": n,
        "accuracy": ratio(tp + tn, n),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "roc_auc": roc_auc(y_true, scores) if scores is not None else None,
        "tn": tn, "fp": fp, "fn": fn, "tp": tp,
    }


# ---------------------------------------------------------------------- distributions
def bin_edges(baseline, bins: int = 10, binning: str = "quantile") -> np.ndarray:
    """Interior bin edges learned from the baseline values (NaN ignored); ``len(edges) + 1`` bins."""
    values = np.asarray(baseline, dtype=float)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return np.array([])
    if binning == "quantile":
        edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)))
    elif binning == "uniform":
        edges = np.unique(np.linspace(values.min(), values.max(), bins + 1))
    else:
        raise MlopsError(f"monitor.binning must be quantile or uniform, not {binning!r}")
    return edges[1:-1]


def histogram(values, edges) -> np.ndarray:
    """Probability-normalised counts of ``values`` (NaN left out) in the bins cut at ``edges``."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    total = counts.sum()
    return counts / total if total else counts.astype(float)


def frequencies(values, categories) -> np.ndarray:
    """Share of each of ``categories`` among ``values`` (categories missing from the list count nowhere)."""
    import pandas as pd

    counts = pd.Series(values).value_counts(dropna=False)
    shares = np.array([counts.get(c, 0) for c in categories], dtype=float)
    total = len(values)
    return shares / total if total else shares


OTHER = "(other)"


def learn_categories(baseline, bins: int = 10) -> list:
    """The categories of the baseline, most frequent first (null as None); more than ``bins`` of them are
    cut to the ``bins - 1`` most frequent plus :data:`OTHER`."""
    import pandas as pd

    values = pd.Series(baseline).astype(object)
    categories = list(values.where(pd.notna(values), None).value_counts(dropna=False).index)
    if len(categories) > bins:
        categories = categories[: max(bins - 1, 1)] + [OTHER]
    return categories


def psi(p, q, epsilon: float = PSI_EPSILON) -> float:
    """Population stability index of current shares ``q`` against baseline shares ``p``."""
    p = np.maximum(np.asarray(p, dtype=float), epsilon)
    q = np.maximum(np.asarray(q, dtype=float), epsilon)
    return float(np.sum((q - p) * np.log(q / p)))


def jensen_shannon(p, q) -> float:
    """Jensen-Shannon distance in base 2 between two probability vectors (0 identical, 1 disjoint)."""
    p = np.asarray(p, dtype=float)
    q = np.asarray(q, dtype=float)
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(a, b):
        mask = a > 0
        return np.sum(a[mask] * np.log2(a[mask] / b[mask]))

    return float(np.sqrt(max((kl(p, m) + kl(q, m)) / 2, 0.0)))


def hellinger(p, q) -> float:
    """Hellinger distance sqrt(1 - sum(sqrt(p q))) between two probability vectors (0..1)."""
    bc = np.sum(np.sqrt(np.asarray(p, dtype=float) * np.asarray(q, dtype=float)))
    return float(np.sqrt(max(1.0 - bc, 0.0)))


def wasserstein(u, v) -> float | None:
    """First Wasserstein (earth mover's) distance between two samples of numbers (NaN left out)."""
    u = np.sort(np.asarray(u, dtype=float)[~np.isnan(np.asarray(u, dtype=float))])
    v = np.sort(np.asarray(v, dtype=float)[~np.isnan(np.asarray(v, dtype=float))])
    if not u.size or not v.size:
        return None
    values = np.sort(np.concatenate([u, v]))
    deltas = np.diff(values)
    u_cdf = np.searchsorted(u, values[:-1], side="right") / u.size
    v_cdf = np.searchsorted(v, values[:-1], side="right") / v.size
    return float(np.sum(np.abs(u_cdf - v_cdf) * deltas))


def drift(baseline, current, *, kind: str, bins: int = 10, binning: str = "quantile", edges=None,
          categories=None) -> dict:
    """Every drift metric of ``current`` against ``baseline`` for one column, with the two histograms.

    ``kind`` is ``numeric`` or ``categorical``. Pass ``edges`` / ``categories`` learned once from the
    baseline to compare many windows against the same bins."""
    import pandas as pd

    if kind == "numeric":
        base = np.asarray(baseline, dtype=float)
        cur = np.asarray(current, dtype=float)
        if edges is None:
            edges = bin_edges(base, bins, binning)
        p, q = histogram(base, edges), histogram(cur, edges)
        base_ok, cur_ok = base[~np.isnan(base)], cur[~np.isnan(cur)]
        null_share = float(np.isnan(cur).mean()) if cur.size else None
        labels = _bin_labels(edges)
        wd = wasserstein(base_ok, cur_ok)
        dm = float(cur_ok.mean() - base_ok.mean()) if base_ok.size and cur_ok.size else None
        usable = base_ok.size and cur_ok.size
    else:
        base = pd.Series(baseline).astype(object)
        base = base.where(pd.notna(base), None)
        cur = pd.Series(current).astype(object)
        cur = cur.where(pd.notna(cur), None)
        if categories is None:
            categories = learn_categories(base, bins)
        categories = list(categories)
        if OTHER in categories:
            known = set(categories) - {OTHER}
            base = base.where(base.isin(known) | base.isna() & (None in known), OTHER)
            cur = cur.where(cur.isin(known) | cur.isna() & (None in known), OTHER)
        else:
            categories += [c for c in pd.unique(cur) if c not in set(categories)]
        p, q = frequencies(base, categories), frequencies(cur, categories)
        null_share = float(cur.isna().mean()) if len(cur) else None
        labels = ["(null)" if c is None else str(c) for c in categories]
        numeric_codes = all(isinstance(c, (int, float, np.integer, np.floating, bool)) for c in categories
                            if c is not None)
        if numeric_codes and len(base) and len(cur):  # a 0/1 prediction: the difference of rates
            dm = float(pd.to_numeric(cur).mean() - pd.to_numeric(base).mean())
        else:
            dm = None
        wd = None
        usable = len(base) and len(cur)
    return {
        "psi": psi(p, q) if usable else None,
        "jensen_shannon": jensen_shannon(p, q) if usable else None,
        "hellinger": hellinger(p, q) if usable else None,
        "wasserstein": wd,
        "difference_of_means": dm,
        "null_share": null_share,
        "bins": labels,
        "baseline_hist": [float(x) for x in p],
        "current_hist": [float(x) for x in q],
    }


def _bin_labels(edges) -> list[str]:
    if len(edges) == 0:
        return ["all"]
    fmt = "{:.4g}".format
    return ([f"< {fmt(edges[0])}"] + [f"{fmt(a)} - {fmt(b)}" for a, b in zip(edges[:-1], edges[1:])]
            + [f">= {fmt(edges[-1])}"])


# ---------------------------------------------------------------------- windows
def window_starts(timestamps, window: str = "7 days", origin: str = "2000-01-03"):
    """The start of the window each timestamp falls in: ``origin + k * window`` (DuckDB's
    ``time_bucket`` with its default origin, a Monday)."""
    import pandas as pd

    try:
        width = pd.Timedelta(window)
        start = pd.Timestamp(origin)
    except ValueError as error:
        raise MlopsError(f"monitor.window {window!r} / origin {origin!r}: {error}") from None
    if width <= pd.Timedelta(0):
        raise MlopsError(f"monitor.window must be positive, not {window!r}")
    ts = pd.to_datetime(pd.Series(timestamps))
    if getattr(ts.dt, "tz", None) is not None:
        ts = ts.dt.tz_convert("UTC").dt.tz_localize(None)
    return start + ((ts - start) // width) * width, width


def compute(frame, baseline, *, features, target, score_column, prediction_column, timestamp,
            window="7 days", origin="2000-01-03", bins=10, binning="quantile", average="macro") -> dict:
    """Monitor ``frame`` (predictions with ground truth) against ``baseline`` (the same columns).

    ``features`` is ``{column: "numeric" | "categorical"}``. Returns ``performance`` (one dict per
    window, oldest first) and ``drift`` (one dict per window and column: the features, the prediction
    and the score), each with its window's start and end."""
    import pandas as pd

    needed = [target, score_column, prediction_column, *features]
    for name, data in (("monitored", frame), ("baseline", baseline)):
        missing = [c for c in ([timestamp] if name == "monitored" else []) + needed if c not in data.columns]
        if missing:
            raise MlopsError(f"the {name} rows lack column(s) {', '.join(missing)}; "
                             f"they have: {', '.join(map(str, data.columns))}")
    if len(baseline) == 0:
        raise MlopsError("the monitoring baseline has no rows: check monitor.baseline")
    if frame[timestamp].isna().all():
        raise MlopsError(f"no monitored row has a {timestamp} value: the rows cannot be put into windows")
    starts, width = window_starts(frame[timestamp], window, origin)
    columns = {**features, prediction_column: "categorical", score_column: "numeric"}
    roles = {**{c: "feature" for c in features}, prediction_column: "prediction", score_column: "score"}
    learned = {}
    for column, kind in columns.items():
        if kind == "numeric":
            learned[column] = {"edges": bin_edges(baseline[column].to_numpy(dtype=float, na_value=np.nan), bins, binning)}
        else:
            learned[column] = {"categories": learn_categories(baseline[column], bins)}
    performance, drift_rows = [], []
    for start, rows in frame.groupby(starts.to_numpy(), sort=True):
        start = pd.Timestamp(start).to_pydatetime()
        end = start + width.to_pytimedelta()
        truth = rows[target].to_numpy()
        perf = classification_summary(truth, rows[prediction_column].to_numpy(), rows[score_column].to_numpy(dtype=float),
                                      average=average)
        performance.append({"window_start": start, "window_end": end, **perf})
        for column, kind in columns.items():
            values = rows[column]
            base = baseline[column]
            if kind == "numeric":
                values = values.to_numpy(dtype=float, na_value=np.nan)
                base = base.to_numpy(dtype=float, na_value=np.nan)
            result = drift(base, values, kind=kind, **learned[column])
            drift_rows.append({"window_start": start, "window_end": end, "column": column, "role": roles[column],
                               "kind": kind, "rows": len(rows), "baseline_rows": len(baseline), **result})
    return {"performance": performance, "drift": drift_rows, "window": window}


# ---------------------------------------------------------------------- the stage
def read_monitored(spec, run):
    """The monitored rows and the baseline rows, as pandas frames."""
    source = spec.source
    if source is None:
        sink = run.scoring.sink
        from mlops_framework.contracts import ReadableSink

        if not isinstance(sink, ReadableSink):
            raise MlopsError(f"monitor.source is null and the scoring sink ({sink.describe()}) cannot be read "
                             "back; set monitor.source to a data option")
        source = sink.as_source()
    frame = source.read()
    if spec.baseline_source is not None:
        baseline = spec.baseline_source.read()
    elif spec.baseline == "holdout":
        baseline = holdout_baseline(run, spec)
    elif spec.baseline:
        baseline = frame[_where_mask(frame, spec.baseline)].reset_index(drop=True)
    else:
        raise MlopsError("monitor.baseline (a SQL condition such as \"WEEK <= 5\") or monitor.baseline_source is required")
    return frame, baseline, source


def holdout_baseline(run, spec):
    """The training holdout of this run's model, scored by it: the baseline ``monitor.baseline=holdout``."""
    if "splits" not in run.results or "model" not in run.results:
        raise MlopsError("monitor.baseline=holdout needs a model trained earlier in this pipeline "
                         "(stages load ... train before monitor)")
    model = run.results["model"]
    X, _ = run.results["splits"]["holdout"]
    rows = run.results["frame"].loc[X.index].reset_index(drop=True)
    scores = np.asarray(model.predict_scores(X), dtype=float)
    return rows.assign(**{spec.score_column: scores, spec.prediction_column: model.predict_classes(scores)})


def _where_mask(frame, where):
    import duckdb

    con = duckdb.connect()
    try:
        numbered = frame.assign(__mlops_row=np.arange(len(frame)))
        con.register("monitored", numbered)
        rows = con.sql(f"SELECT __mlops_row FROM monitored WHERE {where}").fetchnumpy()["__mlops_row"]
    except duckdb.Error as error:
        raise MlopsError(f"bad monitor.baseline {where!r}: {str(error).splitlines()[0]}") from None
    finally:
        con.close()
    mask = np.zeros(len(frame), dtype=bool)
    mask[rows] = True
    return mask


def run_monitor(run):
    """The ``monitor`` stage: compute, append to the warehouse, evaluate the alert rules, notify."""
    import pandas as pd

    spec = run.monitor
    if spec is None:
        raise MlopsError("the monitor stage needs the monitor config group (monitor=default)")
    contract = run.results.get("contract")  # trained in this run: its (possibly inferred) roles
    numeric = contract.numeric if contract else run.features.numeric or []
    categorical = list(contract.categorical) if contract else run.features.categorical or []
    features = {c: "numeric" for c in numeric} | {c: "categorical" for c in categorical}
    if spec.columns:
        features = {c: features.get(c, "numeric") for c in spec.columns}
    frame, baseline, source = read_monitored(spec, run)
    result = compute(
        frame, baseline, features=features, target=run.features.target,
        score_column=spec.score_column, prediction_column=spec.prediction_column, timestamp=spec.timestamp,
        window=spec.window, origin=spec.origin, bins=spec.bins, binning=spec.binning, average=spec.average,
    )
    run_id = run.output_dir.name if run.output_dir else uuid.uuid4().hex[:12]
    monitored_at = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    scored = run.results.get("scored") or {}
    version = scored.get("version")
    if version is None:
        try:
            version = run.registry.get_version(run.registration.model_name, run.scoring.version)["version_name"] \
                if run.scoring.version else None
        except MlopsError:
            version = None
    stamp = {"run_id": run_id, "monitored_at": monitored_at, "model_name": run.registration.model_name,
             "model_version": version}
    result.update(stamp, source=source.describe(), baseline=spec.baseline, baseline_rows=len(baseline))

    from mlops_framework import alerts as alerting

    fired = alerting.evaluate(run.alerts.rules if run.alerts else [], result)
    result["alerts"] = fired
    performance = pd.DataFrame([{**_upper(stamp), **_upper(row)} for row in result["performance"]])
    drift_table = pd.DataFrame([
        {**_upper(stamp), **_upper({k: v for k, v in row.items() if k not in ("bins", "baseline_hist", "current_hist")})}
        for row in result["drift"]
    ])
    alert_table = pd.DataFrame([{**_upper(stamp), **_upper(a.to_dict())} for a in fired])
    append_tables(spec.warehouse, {spec.performance_table: _microseconds(performance),
                                   spec.drift_table: _microseconds(drift_table),
                                   spec.alerts_table: _microseconds(alert_table)})
    result["delivery"] = alerting.notify(run.alerts.notifiers if run.alerts else {}, fired)
    run.results["monitor"] = result
    run.results.setdefault("monitor_runs", []).append(result)
    run.results.setdefault("alerts", []).extend(fired)
    number = len(run.results["monitor_runs"])
    suffix = f" {number}" if number > 1 else ""
    run.summarize(f"monitor{suffix}", f"{len(frame):,} rows in {len(result['performance'])} windows of {spec.window} "
                            f"(last F1 {result['performance'][-1]['f1']:.3f}) -> {spec.performance_table}, {spec.drift_table} in {spec.warehouse}")
    run.summarize(f"alerts{suffix}", f"{len(fired)} fired" + (": " + "; ".join(a.message for a in fired[:3]) if fired else ""))
    if run.output_dir:
        import json

        (run.output_dir / f"monitor-{number}.json").write_text(
            json.dumps({k: v for k, v in result.items() if k != "alerts"} | {"alerts": [a.to_dict() for a in fired]},
                       indent=1, default=str))


def _upper(row: dict) -> dict:
    """Warehouse column names: upper case; ``column`` (a reserved word) becomes ``COLUMN_NAME``."""
    return {("COLUMN_NAME" if key == "column" else key.upper()): value for key, value in row.items()}


def _microseconds(frame):
    """Timestamps as microseconds (TIMESTAMP in DuckDB, TIMESTAMP_NTZ in Snowflake), not nanoseconds."""
    for column in frame.columns:
        if str(frame[column].dtype).startswith("datetime64"):
            frame[column] = frame[column].astype("datetime64[us]")
    return frame


def append_tables(path, tables: dict) -> None:
    """Append each non-empty frame to its table of the DuckDB file at ``path`` (created as needed), in
    one transaction; new columns are added to an existing table."""
    import duckdb
    from pathlib import Path

    from mlops_framework.sinks import quote_identifier

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        con = duckdb.connect(str(path))
    except duckdb.Error as error:
        raise MlopsError(f"cannot open the DuckDB file {path}: {error}") from error
    try:
        con.begin()
        for table, frame in tables.items():
            if frame is None or len(frame) == 0:
                continue
            quoted = quote_identifier(table)
            con.register("__mlops_append", frame)
            con.execute(f"CREATE TABLE IF NOT EXISTS {quoted} AS SELECT * FROM __mlops_append LIMIT 0")
            existing = {row[0].upper() for row in con.execute(
                "SELECT column_name FROM information_schema.columns WHERE lower(table_name) = lower(?) "
                "AND table_schema = current_schema()", [table]).fetchall()}
            for column in frame.columns:
                if column.upper() not in existing:
                    kind = con.execute(f"SELECT typeof({quote_identifier(column)}) FROM __mlops_append LIMIT 1").fetchone()[0]
                    con.execute(f"ALTER TABLE {quoted} ADD COLUMN {quote_identifier(column)} {kind}")
            con.execute(f"INSERT INTO {quoted} BY NAME SELECT * FROM __mlops_append")
            con.unregister("__mlops_append")
        con.commit()
    except BaseException:
        con.rollback()
        raise
    finally:
        con.close()

