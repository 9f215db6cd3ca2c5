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
import math
import re
import uuid

from mlops_framework.errors import MlopsError

PSI_EPSILON = 1e-4


# ---------------------------------------------------------------------- performance
def roc_auc(y_true, scores) -> float | None:
    """Area under the ROC curve (the Mann-Whitney statistic, ties counted half); None with one class."""
    import numpy as np
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
    import numpy as np

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
    import numpy as np

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
    import numpy as np

    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    total = counts.sum()
    return counts / total if total else counts.astype(float)


def frequencies(values, categories) -> np.ndarray:
    """Share of each of ``categories`` among ``values`` (categories missing from the list count nowhere)."""
    import numpy as np

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
    import numpy as np

    p = np.maximum(np.asarray(p, dtype=float), epsilon)
    q = np.maximum(np.asarray(q, dtype=float), epsilon)
    return float(np.sum((q - p) * np.log(q / p)))


def jensen_shannon(p, q) -> float:
    """Jensen-Shannon distance in base 2 between two probability vectors (0 identical, 1 disjoint)."""
    import numpy as np

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
    import numpy as np

    bc = np.sum(np.sqrt(np.asarray(p, dtype=float) * np.asarray(q, dtype=float)))
    return float(np.sqrt(max(1.0 - bc, 0.0)))


def wasserstein(u, v) -> float | None:
    """First Wasserstein (earth mover's) distance between two samples of numbers (NaN left out)."""
    import numpy as np

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
    import numpy as np

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
    ``time_bucket`` with its default origin, a Monday). The monitor cuts windows in SQL the same way."""
    import pandas as pd

    width, start = _window_width(window, origin)
    width, start = pd.Timedelta(width), pd.Timestamp(start)
    ts = pd.to_datetime(pd.Series(timestamps))
    if ts.dt.tz is not None:
        ts = ts.dt.tz_convert(None)  # UTC, without the zone
    return start + ((ts - start) // width) * width, width


_WINDOW_UNITS = {"week": 7 * 86400, "day": 86400, "hour": 3600, "minute": 60, "second": 1}
_PLAIN_WINDOW = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(week|day|hour|minute|second)s?\s*", re.IGNORECASE)


def _window_width(window: str, origin: str) -> tuple[dt.timedelta, dt.datetime]:
    """``monitor.window`` and ``monitor.origin`` as a timedelta and a datetime. "7 days", "12 hours" and ISO
    dates are read here; any other spelling pandas reads (``pd.Timedelta`` / ``pd.Timestamp``), imported
    only then: a monitor run with nothing new to compute never needs pandas."""
    try:
        plain = _PLAIN_WINDOW.fullmatch(str(window))
        if plain:
            width = dt.timedelta(seconds=float(plain[1]) * _WINDOW_UNITS[plain[2].lower()])
        else:
            import pandas as pd

            width = pd.Timedelta(window).to_pytimedelta()
        try:
            start = dt.datetime.fromisoformat(str(origin))
        except ValueError:
            import pandas as pd

            start = pd.Timestamp(origin).to_pydatetime()
    except ValueError as error:
        raise MlopsError(f"monitor.window {window!r} / origin {origin!r}: {error}") from None
    if width <= dt.timedelta(0):
        raise MlopsError(f"monitor.window must be positive, not {window!r}")
    return width, start


# ---------------------------------------------------------------------- SQL checks
def check_expression(text: str, where: str) -> str:
    """``text`` as one SQL expression (``sources.check_sql_expression``, DuckDB's parser); anything else is
    refused. Used for SQL fragments taken from the config (``monitor.baseline``) before they go into a query."""
    import duckdb

    from mlops_framework.contracts import check_sql_expression

    check_sql_expression(text, where=where)
    try:  # normalised: a trailing comment cannot cut off the rest of the query it goes into
        return str(duckdb.SQLExpression(str(text)))
    except duckdb.Error as error:
        raise MlopsError(f"{where} {text!r} is not one SQL expression: {str(error).splitlines()[0]}") from None


def time_expression(con, relation: str, column: str, time_format: str | None) -> str:
    """A SQL expression turning ``column`` of ``relation`` into a TIMESTAMP: timestamp and date columns as
    they are (time zones to UTC), text with ``time_format`` (strptime) or as ISO 8601. One MlopsError when
    a value cannot be read."""
    from mlops_framework.contracts import quote_identifier, sql_string

    types = {name.upper(): (name, kind) for name, kind, *_ in con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()}
    if column.upper() not in types:
        raise MlopsError(f"the monitored rows have no time column {column} (monitor.timestamp); "
                         f"they have: {', '.join(name for name, _ in types.values())}")
    name, kind = types[column.upper()]
    quoted = quote_identifier(name)
    kind = kind.upper()
    if kind.startswith("TIMESTAMP WITH TIME ZONE") or kind == "TIMESTAMPTZ":
        return f"timezone('UTC', {quoted})"
    if kind.startswith("TIMESTAMP") or kind == "DATE":
        return f"CAST({quoted} AS TIMESTAMP)"
    if kind != "VARCHAR":
        raise MlopsError(f"the time column {column} is {kind}, not a timestamp, date or text; "
                         "choose another monitor.timestamp")
    expression = (f"try_strptime({quoted}, {sql_string(time_format)})" if time_format
                  else f"TRY_CAST({quoted} AS TIMESTAMP)")
    bad = con.execute(f"SELECT {quoted} FROM {relation} WHERE {quoted} IS NOT NULL AND {expression} IS NULL "
                      "LIMIT 1").fetchall()
    if bad:
        how = f"with monitor.time_format {time_format!r}" if time_format else (
            "as a timestamp; declare its format, e.g. monitor.time_format='%d/%m/%Y %H:%M'")
        raise MlopsError(f"the time column {column} holds {bad[0][0]!r}, which cannot be read {how}")
    return expression


# ---------------------------------------------------------------------- performance from counts
def metrics_from_confusion(counts: dict, classes=None, positive=None, average: str = "macro") -> dict:
    """Accuracy and precision/recall/F1 from ``{(actual, predicted): rows}``: ``macro`` over ``classes``
    (default: every value seen), or of ``positive`` (``average="binary"``). Undefined ratios are 0, as
    scikit-learn's ``zero_division=0``. Two classes also give the confusion counts tn/fp/fn/tp."""
    if average not in ("macro", "binary"):
        raise MlopsError(f"monitor.average must be macro or binary, not {average!r}")
    n = sum(counts.values())
    if classes is None:
        classes = sorted({c for pair in counts for c in pair}, key=lambda c: (str(type(c)), c))
    classes = list(classes)

    def ratio(a, b):
        return a / b if b else 0.0

    def prf(label):
        tp = counts.get((label, label), 0)
        predicted = sum(v for (a, p), v in counts.items() if p == label)
        actual = sum(v for (a, p), v in counts.items() if a == label)
        precision, recall = ratio(tp, predicted), ratio(tp, actual)
        return precision, recall, ratio(2 * precision * recall, precision + recall)

    if average == "binary":
        precision, recall, f1 = prf(positive if positive is not None else classes[-1])
    else:
        each = [prf(label) for label in classes] or [(0.0, 0.0, 0.0)]
        precision, recall, f1 = (sum(values) / len(each) for values in zip(*each))
    result = {"rows": n, "accuracy": ratio(sum(v for (a, p), v in counts.items() if a == p), n),
              "precision": float(precision), "recall": float(recall), "f1": float(f1)}
    if len(classes) == 2:
        negative, positive_ = classes if positive is None else (
            next(c for c in classes if c != positive), positive)
        result.update(tn=counts.get((negative, negative), 0), fp=counts.get((negative, positive_), 0),
                      fn=counts.get((positive_, negative), 0), tp=counts.get((positive_, positive_), 0))
    return result


def auc_from_buckets(buckets) -> float | None:
    """ROC AUC from ``[(score, positives, negatives)]``: the Mann-Whitney statistic, ties (one bucket)
    counted half. Exact for distinct scores; the monitor rounds scores to 1e-4 to bound the buckets."""
    buckets = sorted(buckets)
    positives = sum(b[1] for b in buckets)
    negatives = sum(b[2] for b in buckets)
    if not positives or not negatives:
        return None
    below = 0
    total = 0.0
    for _, pos, neg in buckets:
        total += pos * (below + neg / 2)
        below += neg
    return float(total / (positives * negatives))


def wasserstein_from_quantiles(p_quantiles, q_quantiles) -> float | None:
    """The first Wasserstein distance approximated on a quantile grid: the mean |Qp(u) - Qq(u)|."""
    import numpy as np

    if p_quantiles is None or q_quantiles is None or not len(p_quantiles) or not len(q_quantiles):
        return None
    return float(np.mean(np.abs(np.asarray(p_quantiles, dtype=float) - np.asarray(q_quantiles, dtype=float))))


QUANTILE_GRID = [round(0.01 + i * 0.98 / 49, 4) for i in range(50)]  # numpy's linspace(0.01, 0.99, 50)
AUC_DECIMALS = 4
RESERVOIR = 2048  # values sampled per window for the quantiles of the Wasserstein approximation
TASKS = ("binary", "multiclass", "regression")
METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "rmse", "mae", "r2", "tn", "fp", "fn", "tp")
LOG_LOSS_EPSILON = 1e-15  # probabilities are clipped here, as the evaluate stage clips them


# ---------------------------------------------------------------------- the monitor in SQL
class WarehouseMonitor:
    """Computes a monitor run in DuckDB over the monitored rows, never loading them into Python.

    ``con`` has a relation ``monitored`` (the predictions, optionally joined with actuals, see
    :func:`open_monitored`). Windows are cut with ``time_bucket``; per version and window it counts the
    confusion matrix (classification), bucketed scores (ROC AUC), error sums (regression) and, per
    column, the rows in each of the baseline's bins; every metric is then computed from those counts.
    Only the (version, window) pairs in ``todo`` are computed."""

    def __init__(self, con, *, columns: dict, target_expr: str, prediction: str, score: str | None,
                 time_expr: str, version_expr: str, scored_at: str | None, window: str, origin: str,
                 task: dict, bins: int, binning: str, average: str, probabilities: dict | None = None):
        from mlops_framework.contracts import quote_identifier

        self.con = con
        self.columns = columns
        self.task = task  # version -> {"task", "classes"}
        self.probabilities = probabilities or {}  # multiclass: class label (as text) -> its PROBA_<label> column
        self.bins, self.binning, self.average = bins, binning, average
        width, start = _window_width(window, origin)
        self.width = width
        micros = width // dt.timedelta(microseconds=1)
        self.has_scored_at = bool(scored_at)
        self.time_expr = time_expr
        scored = quote_identifier(scored_at) if scored_at else "NULL"  # cast after max(): one cast per window
        score_expr = f"CAST({quote_identifier(score)} AS DOUBLE)" if score else "CAST(NULL AS DOUBLE)"
        con.execute(f"""CREATE OR REPLACE TEMP VIEW prepared AS SELECT *,
            time_bucket(to_microseconds({micros}), {time_expr}, TIMESTAMP '{start.isoformat(sep=' ')}') AS __window,
            {version_expr} AS __version, {target_expr} AS __actual, {quote_identifier(prediction)} AS __predicted,
            {score_expr} AS __score, {scored} AS __scored_at FROM monitored""")
        self.relation = "prepared"

    # -- what there is
    def fingerprints(self) -> dict:
        """``{(version, window_start): (rows, labeled rows, fingerprint)}`` of every window: one scan. With
        a ``SCORED_AT`` column, re-scoring shows as a later scoring time; without, a hash of the rows."""
        change = ("CAST(max(__scored_at) AS VARCHAR)" if self.has_scored_at
                  else "CAST(bit_xor(hash(__predicted, __actual, __score)) AS VARCHAR)")
        rows = self.con.execute(f"""SELECT __version, __window, count(*), count(__actual), {change}
            FROM prepared WHERE __window IS NOT NULL GROUP BY ALL""").fetchall()
        return {(v, w): (n, labeled, f"{n}:{labeled}:{fp}") for v, w, n, labeled, fp in rows}

    def select_work(self, todo: set, everything: bool) -> None:
        """The relation the per-window queries read: all rows, or only those of the windows to compute."""
        if everything or not todo:
            self.relation = "prepared"
            return
        from mlops_framework.contracts import sql_string

        # a VALUES list: registering an Arrow table costs DuckDB's Arrow scan set-up (0.3-0.8 s measured)
        keys = ", ".join(f"({sql_string(v)}, TIMESTAMP '{w.isoformat(sep=' ')}')" for v, w in sorted(todo))
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE __todo AS SELECT * FROM (VALUES {keys}) t(__version, __window)")
        first, last = min(w for _, w in todo), max(w for _, w in todo) + self.width
        # the time range first: row groups outside it are skipped (zone maps) before windows are cut
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE work AS SELECT p.* FROM prepared p "
                         f"JOIN __todo t ON p.__version = t.__version AND p.__window = t.__window "
                         f"WHERE {self.time_expr} >= TIMESTAMP '{first.isoformat(sep=' ')}' "
                         f"AND {self.time_expr} < TIMESTAMP '{last.isoformat(sep=' ')}'")
        self.relation = "work"

    # -- baseline
    def baseline_stats(self, relation: str) -> dict:
        """Bins, shares, means and quantiles of every column on ``relation``, plus its performance."""
        import numpy as np

        from mlops_framework.contracts import quote_identifier

        con = self.con
        rows = con.execute(f"SELECT count(*) FROM {relation}").fetchone()[0]
        stats = {"rows": rows, "columns": {}}
        for column, kind in self.columns.items():
            q = quote_identifier(column)
            if kind == "numeric":
                x = f"CAST({q} AS DOUBLE)"
                if self.binning == "quantile":
                    grid = [round(i / self.bins, 6) for i in range(self.bins + 1)]
                    edges = con.execute(f"SELECT quantile_cont({x}, {grid}) FROM {relation}").fetchone()[0]
                elif self.binning == "uniform":
                    lo, hi = con.execute(f"SELECT min({x}), max({x}) FROM {relation}").fetchone()
                    edges = None if lo is None else list(np.linspace(lo, hi, self.bins + 1))
                else:
                    raise MlopsError(f"monitor.binning must be quantile or uniform, not {self.binning!r}")
                edges = [] if edges is None else [float(e) for e in np.unique(np.asarray(edges, dtype=float))][1:-1]
                counts = dict(con.execute(f"SELECT {self._bin_expr(x, edges)}, count(*) FROM {relation} "
                                          f"WHERE {x} IS NOT NULL GROUP BY ALL").fetchall())
                mean, quantiles = con.execute(f"SELECT avg({x}), quantile_cont({x}, {QUANTILE_GRID}) "
                                              f"FROM {relation}").fetchone()
                total = sum(counts.values())
                shares = [counts.get(i, 0) / total if total else 0.0 for i in range(len(edges) + 1)]
                stats["columns"][column] = {"kind": kind, "edges": edges, "labels": _bin_labels(edges),
                                            "shares": shares, "mean": mean, "quantiles": quantiles}
            else:
                label = self._label_expr(q)
                counts = con.execute(f"SELECT {label} AS label, count(*) AS n FROM {relation} GROUP BY ALL "
                                     "ORDER BY n DESC, label").fetchall()
                categories = [c for c, _ in counts]
                if len(categories) > self.bins:
                    categories = categories[: max(self.bins - 1, 1)] + [OTHER]
                by = dict(counts)
                kept = set(categories) - {OTHER}
                shares = [by.get(c, 0) for c in categories if c != OTHER]
                if OTHER in categories:
                    shares.append(sum(n for c, n in counts if c not in kept))
                shares = [s / rows if rows else 0.0 for s in shares]
                mean = con.execute(f"SELECT avg(TRY_CAST({q} AS DOUBLE)) FROM {relation}").fetchone()[0] \
                    if self._is_number(q, relation) else None
                stats["columns"][column] = {"kind": kind, "labels": categories, "shares": shares, "mean": mean}
        stats["performance"] = next(iter(self.performance(relation, by_window=False).values()), {})
        return stats

    def _is_number(self, quoted, relation) -> bool:
        kind = self.con.execute(f"SELECT typeof({quoted}) FROM {relation} LIMIT 1").fetchone()
        return bool(kind) and kind[0].upper() in ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "FLOAT",
                                                 "DOUBLE", "BOOLEAN", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT") \
            or bool(kind) and kind[0].upper().startswith("DECIMAL")

    @staticmethod
    def _label_expr(quoted):
        return f"CASE WHEN {quoted} IS NULL THEN '(null)' ELSE CAST({quoted} AS VARCHAR) END"

    @staticmethod
    def _bin_expr(x, edges):
        if not edges:
            return "0"
        return "(" + " + ".join(f"CAST({x} >= {float(e)!r} AS INTEGER)" for e in edges) + ")"

    # -- per window
    def performance(self, relation=None, *, by_window=True) -> dict:
        """``{(version, window) | ("", None): metrics}`` of the labelled rows of ``relation``."""
        import numpy as np

        relation = relation or self.relation
        keys = "__version, __window" if by_window else "'' AS __version, NULL AS __window"
        out = {}
        tasks = {v: t["task"] for v, t in self.task.items()}
        regression = set(v for v, t in tasks.items() if t == "regression")
        con = self.con
        if any(t != "regression" for t in tasks.values()) or not by_window:
            confusion = con.execute(f"SELECT {keys}, __actual, __predicted, count(*) FROM {relation} "
                                    "WHERE __actual IS NOT NULL GROUP BY ALL").fetchall()
            grouped: dict = {}
            for v, w, a, p, n in confusion:
                grouped.setdefault((v, w), {})[(a, p)] = n
            for key, counts in grouped.items():
                info = self.task.get(key[0]) or next(iter(self.task.values()))
                if info["task"] == "regression":
                    continue
                classes = info.get("classes") or None
                positive = classes[-1] if classes and info["task"] == "binary" else None
                if classes:
                    classes = [c for c in classes] + sorted({c for pair in counts for c in pair} - set(classes), key=str)
                out[key] = metrics_from_confusion(counts, classes, positive,
                                                  self.average if info["task"] == "binary" else "macro")
                out[key]["roc_auc"] = None
            multiclass = [k for k in out if (self.task.get(k[0]) or next(iter(self.task.values())))["task"] == "multiclass"]
            for key, loss in (self._log_loss(relation, keys) if multiclass else {}).items():
                if key in multiclass:
                    out[key]["log_loss"] = loss
            binary = [k for k in out if (self.task.get(k[0]) or next(iter(self.task.values())))["task"] == "binary"]
            if binary:
                positive = {v: (self.task.get(v) or {}).get("classes") for v, _ in binary}
                for (v, w), result in self._auc(relation, keys, positive).items():
                    if (v, w) in out:
                        out[(v, w)]["roc_auc"] = result
        if regression or (not by_window and all(t == "regression" for t in tasks.values())):
            sums = con.execute(f"""SELECT {keys}, count(*), sum(power(CAST(__predicted AS DOUBLE) - __actual, 2)),
                sum(abs(CAST(__predicted AS DOUBLE) - __actual)), sum(CAST(__actual AS DOUBLE)),
                sum(power(CAST(__actual AS DOUBLE), 2)) FROM {relation} WHERE __actual IS NOT NULL
                GROUP BY ALL""").fetchall()
            for v, w, n, sse, sae, sy, syy in sums:
                if by_window and v not in regression:
                    continue
                total = syy - sy * sy / n if n else 0
                out[(v, w)] = {"rows": n, "rmse": float(np.sqrt(sse / n)) if n else None,
                               "mae": sae / n if n else None, "r2": 1 - sse / total if total else None}
        return out

    def _log_loss(self, relation, keys) -> dict:
        """Multiclass log loss per window: the mean of -ln(the probability given to the actual class), clipped
        at ``LOG_LOSS_EPSILON``; a class without a probability column counts as probability 0. Empty when
        ``relation`` has no probability columns (a training holdout recorded before they existed)."""
        from mlops_framework.contracts import sql_string

        have = {row[0].upper() for row in self.con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()}
        columns = {label: column for label, column in self.probabilities.items() if column.upper() in have}
        if not columns:
            return {}
        cases = " ".join(f"WHEN {sql_string(label)} THEN CAST({_q(column)} AS DOUBLE)" for label, column in columns.items())
        rows = self.con.execute(
            f"SELECT {keys}, avg(-ln(greatest(coalesce(CASE CAST(__actual AS VARCHAR) {cases} END, 0), "
            f"{LOG_LOSS_EPSILON}))) FROM {relation} WHERE __actual IS NOT NULL GROUP BY ALL").fetchall()
        return {(v, w): float(loss) for v, w, loss in rows}

    def _auc(self, relation, keys, classes_of) -> dict:
        """ROC AUC per window, in SQL: scores rounded to ``AUC_DECIMALS`` into buckets, the Mann-Whitney
        sum over buckets (ties within a bucket count half); positives are the last class."""
        values = {c[-1] for c in classes_of.values() if c}
        if len(values) > 1:
            return {}
        if values:
            condition, params = "__actual = ?", [values.pop()]
        else:
            condition, params = f"__actual = (SELECT max(__actual) FROM {relation})", []
        rows = self.con.execute(f"""
            WITH buckets AS (
                SELECT {keys}, CAST(round(__score * {10 ** AUC_DECIMALS}) AS BIGINT) AS s, count_if({condition}) AS pos,
                       count(*) - count_if({condition}) AS neg
                FROM {relation} WHERE __actual IS NOT NULL AND __score IS NOT NULL GROUP BY ALL),
            ranked AS (
                SELECT __version, __window, pos, neg, coalesce(sum(neg) OVER (PARTITION BY __version, __window
                       ORDER BY s ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS below FROM buckets)
            SELECT __version, __window, sum(pos * (below + neg / 2.0)) / nullif(sum(pos) * sum(neg), 0)
            FROM ranked GROUP BY ALL""", params * 2).fetchall()
        return {(v, w): None if auc is None else float(auc) for v, w, auc in rows}

    def drift(self, baselines: dict) -> list[dict]:
        """One dict per (version, window, column) of the windows being computed, against ``baselines``
        (version -> :meth:`baseline_stats`). One scan counts, per version and window, every column's rows,
        mean and quantile sample, and its rows in each bin of that version's baseline (numeric columns) or
        in each category some baseline knows (``count_if``); only categories no baseline knows, where a
        column has them, are listed by a second scan of those columns."""
        from mlops_framework.contracts import sql_string

        con, relation = self.con, self.relation
        projections, aggregates, known = [], [], {}
        for i, (column, kind) in enumerate(self.columns.items()):
            q = _q(column)
            if kind == "numeric":
                x = f"CAST({q} AS DOUBLE)"
                cases = " ".join(f"WHEN __version = {sql_string(v)} THEN {self._bin_expr(x, b['columns'][column]['edges'])}"
                                 for v, b in baselines.items())
                bins = max(len(b["columns"][column]["shares"]) for b in baselines.values())
                projections += [f"{x} AS x{i}", f"CASE WHEN {x} IS NULL THEN NULL {cases} END AS c{i}"]
                aggregates += [f"count(x{i})", f"avg(x{i})", f"reservoir_quantile(x{i}, {QUANTILE_GRID}, {RESERVOIR})",
                               "[" + ", ".join(f"count_if(c{i} = {k})" for k in range(bins)) + "]", "0"]
                continue
            known[column] = list(dict.fromkeys(label for b in baselines.values()
                                               for label in b["columns"][column]["labels"] if label != OTHER))
            listed = ", ".join(sql_string(label) for label in known[column])
            mean = f"avg(TRY_CAST(x{i} AS DOUBLE))" if self._is_number(q, relation) else "NULL"
            projections += [f"{q} AS x{i}", f"{self._label_expr(q)} AS c{i}"]
            aggregates += [f"count(x{i})", mean, "NULL",
                           "[" + ", ".join(f"count_if(c{i} = {sql_string(label)})" for label in known[column]) + "]",
                           f"count_if(c{i} NOT IN ({listed}))" if listed else "count(*)"]
        windows = con.execute(f"SELECT __version, __window, count(*), {', '.join(aggregates)} FROM "
                              f"(SELECT __version, __window, {', '.join(projections)} FROM {relation}) "
                              "GROUP BY ALL").fetchall()
        unknown: dict = {}
        for i, column in enumerate(self.columns):
            if column in known and any(stats[5 * i + 4] for _, _, _, *stats in windows):
                label = self._label_expr(_q(column))
                listed = ", ".join(sql_string(name) for name in known[column])
                for v, w, value, n in con.execute(
                        f"SELECT __version, __window, {label}, count(*) FROM {relation} "
                        f"WHERE {f'{label} NOT IN ({listed})' if listed else 'true'} GROUP BY ALL").fetchall():
                    unknown.setdefault((v, w, column), {})[value] = n
        results = []
        for v, w, n, *stats in windows:
            for i, (column, kind) in enumerate(self.columns.items()):
                present, mean, quantiles, counts, _ = stats[5 * i: 5 * i + 5]
                base = baselines[v]["columns"][column]
                difference = None if mean is None or base["mean"] is None else mean - base["mean"]
                if kind == "numeric":
                    current = [counts[k] / present if present else 0.0 for k in range(len(base["shares"]))]
                    results.append(self._drift_row(v, w, column, kind, n, base, current, present > 0,
                                                   null_share=(n - present) / n if n else None, difference=difference,
                                                   wasserstein=wasserstein_from_quantiles(base["quantiles"], quantiles),
                                                   baseline_rows=baselines[v]["rows"]))
                    continue
                seen = {label: k for label, k in zip(known[column], counts) if k}
                seen.update(unknown.get((v, w, column), {}))
                labels = list(base["labels"])
                if OTHER in labels:
                    mine = set(labels) - {OTHER}
                    current = [seen.get(c, 0) for c in labels if c != OTHER]
                    current.append(sum(k for c, k in seen.items() if c not in mine))
                    shares = list(base["shares"])
                else:
                    new = sorted(c for c in seen if c not in set(labels))
                    labels += new
                    current = [seen.get(c, 0) for c in labels]
                    shares = list(base["shares"]) + [0.0] * len(new)
                current = [c / n if n else 0.0 for c in current]
                results.append(self._drift_row(v, w, column, kind, n, {**base, "labels": labels, "shares": shares},
                                               current, n > 0, null_share=(n - present) / n if n else None,
                                               difference=difference, wasserstein=None,
                                               baseline_rows=baselines[v]["rows"]))
        return results

    def _drift_row(self, version, window, column, kind, n, base, current, usable, *, null_share, difference,
                   wasserstein, baseline_rows) -> dict:
        p, q = base["shares"], current
        usable = usable and baseline_rows > 0
        return {"model_version": version, "window_start": window, "window_end": window + self.width,
                "column": column, "kind": kind, "rows": n, "baseline_rows": baseline_rows,
                "psi": psi(p, q) if usable else None,
                "jensen_shannon": jensen_shannon(p, q) if usable and sum(p) and sum(q) else None,
                "hellinger": hellinger(p, q) if usable else None,
                "wasserstein": wasserstein, "difference_of_means": difference, "null_share": null_share,
                "bins": list(base["labels"]), "baseline_hist": [float(x) for x in p],
                "current_hist": [float(x) for x in q]}


# ---------------------------------------------------------------------- monitor tables
_STAMP = [("MONITOR_ID", "VARCHAR"), ("RUN_ID", "VARCHAR"), ("MONITORED_AT", "TIMESTAMP"), ("MODEL_NAME", "VARCHAR"),
          ("MODEL_VERSION", "VARCHAR")]
TABLE_COLUMNS = {
    "performance": _STAMP + [
        ("TASK", "VARCHAR"), ("WINDOW", "VARCHAR"), ("WINDOW_START", "TIMESTAMP"), ("WINDOW_END", "TIMESTAMP"),
        ("ROWS", "BIGINT"), ("LABELED_ROWS", "BIGINT"), ("WAITING_ROWS", "BIGINT"), ("ACCURACY", "DOUBLE"),
        ("PRECISION", "DOUBLE"), ("RECALL", "DOUBLE"), ("F1", "DOUBLE"), ("ROC_AUC", "DOUBLE"), ("LOG_LOSS", "DOUBLE"),
        ("RMSE", "DOUBLE"), ("MAE", "DOUBLE"), ("R2", "DOUBLE"), ("TN", "BIGINT"), ("FP", "BIGINT"), ("FN", "BIGINT"),
        ("TP", "BIGINT"), ("BASELINE_ID", "VARCHAR"), ("FINGERPRINT", "VARCHAR")],
    "drift": _STAMP + [
        ("WINDOW_START", "TIMESTAMP"), ("WINDOW_END", "TIMESTAMP"), ("COLUMN_NAME", "VARCHAR"), ("ROLE", "VARCHAR"),
        ("KIND", "VARCHAR"), ("ROWS", "BIGINT"), ("BASELINE_ROWS", "BIGINT"), ("PSI", "DOUBLE"),
        ("JENSEN_SHANNON", "DOUBLE"), ("HELLINGER", "DOUBLE"), ("WASSERSTEIN", "DOUBLE"),
        ("DIFFERENCE_OF_MEANS", "DOUBLE"), ("NULL_SHARE", "DOUBLE"), ("BASELINE_ID", "VARCHAR")],
    "alerts": _STAMP + [
        ("RULE", "VARCHAR"), ("METRIC", "VARCHAR"), ("OP", "VARCHAR"), ("THRESHOLD", "DOUBLE"), ("VALUE", "DOUBLE"),
        ("WINDOW_START", "TIMESTAMP"), ("WINDOW_END", "TIMESTAMP"), ("COLUMN_NAME", "VARCHAR"), ("FIRED_AT", "VARCHAR"),
        ("MESSAGE", "VARCHAR")],
    "baselines": _STAMP + [
        ("BASELINE_ID", "VARCHAR"), ("BASELINE", "VARCHAR"), ("BASELINE_ROWS", "BIGINT"), ("COLUMN_NAME", "VARCHAR"),
        ("KIND", "VARCHAR"), ("ITEM", "VARCHAR"), ("POSITION", "BIGINT"), ("VALUE", "DOUBLE"), ("LABEL", "VARCHAR")],
}
"""The declared columns of the monitor tables, as DuckDB types (the same types whatever a run's values are)."""


def _schemas():
    """``TABLE_COLUMNS`` as Arrow schemas, the tables the sinks write."""
    import pyarrow as pa

    types = {"VARCHAR": pa.string(), "DOUBLE": pa.float64(), "BIGINT": pa.int64(), "TIMESTAMP": pa.timestamp("us")}
    return {role: pa.schema([(name, types[kind]) for name, kind in columns]) for role, columns in TABLE_COLUMNS.items()}


def _recorded_rows(sink, where: str, columns: list[str]) -> list[dict]:
    """``columns`` of the rows of a monitor table matching ``where``; empty when the table does not exist yet.
    A table in a DuckDB file is read with DuckDB's own rows, other sinks' as Arrow batches (no pandas either
    way): a monitor run with nothing new then imports neither pyarrow nor numpy (0.1-0.2 s, measured)."""
    from mlops_framework.contracts import DuckDBFileSource, ReadableSink

    if not isinstance(sink, ReadableSink):
        return []
    source = sink.as_source(where=where)
    if isinstance(source, DuckDBFileSource):
        return _duckdb_rows(*source.duckdb_table(), columns)
    import pyarrow as pa

    try:
        batches = list(source.batches(columns=columns))
    except MlopsError:
        return []
    return pa.Table.from_batches(batches).to_pylist() if batches else []


def _duckdb_rows(path: str, table: str, where: str | None, columns: list[str]) -> list[dict]:
    import os

    import duckdb

    from mlops_framework.contracts import check_sql_expression, quote_identifier

    if not os.path.isfile(path):
        return []
    condition = f" WHERE {check_sql_expression(where, where='where')}" if where else ""
    try:
        with duckdb.connect(path, read_only=True) as con:
            rows = con.execute(f"SELECT {', '.join(quote_identifier(c) for c in columns)} "
                               f"FROM {quote_identifier(table)}{condition}").fetchall()
    except duckdb.Error:  # no such table (or column) yet, as the Arrow path: nothing recorded
        return []
    return [dict(zip(columns, row)) for row in rows]


def read_recorded(sink, where: str):
    """The rows of a monitor table read back through its sink (empty when it does not exist yet)."""
    import pandas as pd

    from mlops_framework.contracts import ReadableSink

    if not isinstance(sink, ReadableSink):
        return pd.DataFrame()
    try:
        return sink.as_source(where=where).read()
    except MlopsError:
        return pd.DataFrame()


def write_table(sink, role: str, rows: list[dict]) -> None:
    """``rows`` (dicts keyed by upper-case column) into ``sink`` with the declared schema of ``role``. A table
    created before a column was declared (LOG_LOSS) keeps its columns: the new one is left out of it. The
    declared columns are written first (sinks refuse other columns before writing anything); only a table
    that refuses them is asked for its own, which saves opening every table twice."""
    if not rows:
        return
    import pyarrow as pa

    schema = _schemas()[role]
    try:
        _write_rows(sink, schema, rows)
    except MlopsError:
        existing = _existing_columns(sink)
        if not existing or existing == {field.name.upper() for field in schema}:
            raise
        _write_rows(sink, pa.schema([field for field in schema if field.name.upper() in existing]), rows)


def _write_rows(sink, schema, rows: list[dict]) -> None:
    table = arrow_table([tuple(row.get(name) for name in schema.names) for row in rows], schema)
    with sink.open() as writer:
        writer.write(table)


_DUCKDB_TYPES = {"string": "VARCHAR", "double": "DOUBLE", "int64": "BIGINT", "timestamp[us]": "TIMESTAMP"}


def arrow_table(rows: list[tuple], schema):
    """``rows`` (tuples in ``schema``'s order) as an Arrow table of ``schema``, built by DuckDB: pyarrow imports
    pandas (about a second) to convert any Python value, and an incremental monitor run has no other use for it."""
    import duckdb

    from mlops_framework.contracts import quote_identifier

    columns = ", ".join(f"unnest(${i + 1}::{_DUCKDB_TYPES[str(f.type)]}[]) AS {quote_identifier(f.name)}"
                        for i, f in enumerate(schema))
    with duckdb.connect() as con:
        return con.sql(f"SELECT {columns}", params=[list(column) for column in zip(*rows)]).to_arrow_table().cast(schema)


def _existing_columns(sink) -> set[str] | None:
    """The upper-case columns of the table ``sink`` writes into; None when it does not exist yet (or cannot say)."""
    from mlops_framework.contracts import ReadableSink, SchemaSource

    if not isinstance(sink, ReadableSink):
        return None
    try:
        source = sink.as_source()
        return {name.upper() for name, _ in source.schema()} if isinstance(source, SchemaSource) else None
    except MlopsError:
        return None


def recorded_alerts(spec, model_name: str, version: str, windows: int) -> list[dict]:
    """Alerts recorded for ``version`` in its ``windows`` most recent monitored windows (any run)."""
    from mlops_framework.contracts import sql_string

    where = f"MODEL_NAME = {sql_string(model_name)} AND MODEL_VERSION = {sql_string(version)}"
    alerts = read_recorded(spec.sinks["alerts"], where)
    performance = read_recorded(spec.sinks["performance"], where)
    if alerts.empty or performance.empty:
        return []
    recent = sorted(set(performance.WINDOW_START), reverse=True)[:windows]
    return alerts[alerts.WINDOW_START.isin(recent)].to_dict("records")


# ---------------------------------------------------------------------- the stage
def open_monitored(con, spec, run, features) -> dict:
    """Make ``monitored`` in ``con``: the predictions (a DuckDB table attached read-only, or any source
    streamed in), left-joined with ``monitor.actuals`` on the id column. Returns what was found."""
    from mlops_framework.contracts import DuckDBFileSource, quote_identifier, sql_string

    source = spec.source
    if source is None:
        sink = run.scoring.sink
        from mlops_framework.contracts import ReadableSink

        if not isinstance(sink, ReadableSink):
            raise MlopsError(f"monitor.source is null and the scoring sink ({sink.describe()}) cannot be read "
                             "back; set monitor.source to a data option")
        source = sink.as_source()
    if isinstance(source, DuckDBFileSource):
        import os

        path, table, source_where = source.duckdb_table()
        if not os.path.isfile(path):
            raise MlopsError(f"DuckDB file not found: {path} (has anything been scored into it yet?)")
        con.execute(f"ATTACH {sql_string(path)} AS __monitored_db (READ_ONLY)")
        tables = {row[0].upper(): row[0] for row in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = '__monitored_db'").fetchall()}
        if table.upper() not in tables:
            raise MlopsError(f"no table {table} in {path}; tables: {', '.join(sorted(tables.values())) or 'none'}")
        where = f" WHERE {check_expression(source_where, 'the source where')}" if source_where else ""
        con.execute(f"CREATE TEMP VIEW __predictions AS SELECT * FROM __monitored_db.{quote_identifier(tables[table.upper()])}{where}")
    else:
        _load(con, "__predictions", source)
    columns = [row[0] for row in con.execute("DESCRIBE SELECT * FROM __predictions").fetchall()]
    upper = {c.upper(): c for c in columns}
    target = features.target
    found = {"source": source.describe(), "columns": columns, "actuals": None}
    model_filter = ""
    if "MODEL_NAME" in upper:
        model_filter = (f" WHERE p.{quote_identifier(upper['MODEL_NAME'])} = {sql_string(run.registration.model_name)}"
                        f" OR p.{quote_identifier(upper['MODEL_NAME'])} IS NULL")
    if spec.actuals is not None:
        id_column = spec.id or features.id
        if not id_column:
            raise MlopsError("monitor.actuals needs the id column that joins labels to predictions: "
                             "set features.id (or monitor.id)")
        _load(con, "__actuals_raw", spec.actuals)
        have = {row[0].upper(): row[0] for row in con.execute("DESCRIBE SELECT * FROM __actuals_raw").fetchall()}
        missing = [c for c in (id_column, target) if c.upper() not in have]
        if missing or id_column.upper() not in upper:
            raise MlopsError(f"monitor.actuals ({spec.actuals.describe()}) must have columns {id_column} and {target}"
                             f" and the predictions {id_column}; missing: {', '.join(missing or [id_column])}")
        qid, qt = quote_identifier(have[id_column.upper()]), quote_identifier(have[target.upper()])
        con.execute(f"CREATE TEMP TABLE __actuals AS SELECT {qid} AS __id, any_value({qt}) AS __label "
                    f"FROM __actuals_raw WHERE {qt} IS NOT NULL GROUP BY 1")
        label = (f"coalesce(a.__label, p.{quote_identifier(upper[target.upper()])})" if target.upper() in upper
                 else "a.__label")
        con.execute(f"CREATE TEMP VIEW monitored AS SELECT p.* EXCLUDE ({_exclude(upper, target)}), {label} AS "
                    f"{quote_identifier(target)} FROM __predictions p LEFT JOIN __actuals a "
                    f"ON p.{quote_identifier(upper[id_column.upper()])} = a.__id{model_filter}")
        found["actuals"] = spec.actuals.describe()
    elif target.upper() in upper:
        con.execute(f"CREATE TEMP VIEW monitored AS SELECT * FROM __predictions p{model_filter}")
    else:
        con.execute(f"CREATE TEMP VIEW monitored AS SELECT *, NULL AS {quote_identifier(target)} "
                    f"FROM __predictions p{model_filter}")
    return found


def _exclude(upper, target):
    from mlops_framework.contracts import quote_identifier

    return quote_identifier(upper[target.upper()]) if target.upper() in upper else "__no_such_column__"


def _load(con, name, source):
    """Stream a source's Arrow batches into a DuckDB table (spilled to disk past the memory limit)."""
    first = True
    for batch in source.batches(batch_size=262_144):
        con.register("__batch", batch)
        con.execute(f"CREATE TEMP TABLE {name} AS SELECT * FROM __batch" if first
                    else f"INSERT INTO {name} SELECT * FROM __batch")
        con.unregister("__batch")
        first = False
    if first:
        raise MlopsError(f"{source.describe()} has no rows")


def _task_of(run, version) -> dict:
    """The task and classes of a registered version: its metadata (recorded at registration, read without
    loading the model), else its feature contract; binary without."""
    name = run.registration.model_name
    info = {"task": "binary", "classes": None}
    try:
        record = run.registry.get_version(name, version)
    except MlopsError:
        return info
    metadata = (record or {}).get("metadata") or {}
    if metadata.get("task") in TASKS:
        info["task"] = metadata["task"]
        if isinstance(metadata.get("classes"), list):
            info["classes"] = metadata["classes"] or None
            return info
    try:
        contract = run.registry.load_model(name, version).contract
    except MlopsError:
        return info
    info["classes"] = list(contract.classes or []) or None
    info["task"] = contract.task
    return info


def _baseline_key(spec) -> str:
    if spec.baseline_source is not None:
        return f"source: {spec.baseline_source.describe()}"
    if spec.baseline == "holdout":
        return "holdout"
    if not spec.baseline:
        raise MlopsError("monitor.baseline (a SQL condition such as \"WEEK <= 5\", \"holdout\") or "
                         "monitor.baseline_source is required")
    return check_expression(spec.baseline, "monitor.baseline")


def _recorded_baselines(rows: list[dict]) -> dict:
    """``{version: stats}`` from MONITOR_BASELINES rows (the first recorded baseline of each version)."""
    out: dict = {}
    for r in sorted(rows, key=lambda r: (r["MONITORED_AT"], r["POSITION"])):
        stats = out.setdefault(r["MODEL_VERSION"], {
            "id": r["BASELINE_ID"], "spec": r["BASELINE"], "rows": int(r["BASELINE_ROWS"]), "columns": {},
            "performance": {}})
        if r["BASELINE_ID"] != stats["id"]:
            continue
        value = None if r["VALUE"] is None or math.isnan(r["VALUE"]) else float(r["VALUE"])
        if not r["COLUMN_NAME"]:
            if r["ITEM"] == "performance":
                stats["performance"][r["LABEL"]] = value
            continue
        column = stats["columns"].setdefault(r["COLUMN_NAME"], {"kind": r["KIND"], "edges": [], "labels": [],
                                                                "shares": [], "mean": None, "quantiles": []})
        if r["ITEM"] == "edge":
            column["edges"].append(value)
        elif r["ITEM"] == "bin":
            column["labels"].append(r["LABEL"])
            column["shares"].append(value)
        elif r["ITEM"] == "mean":
            column["mean"] = value
        elif r["ITEM"] == "quantile":
            column["quantiles"].append(value)
    for stats in out.values():
        for column in stats["columns"].values():
            column["quantiles"] = column["quantiles"] or None
    return out


def _baseline_rows(stats, stamp) -> list[dict]:
    base = {**stamp, "BASELINE_ID": stats["id"], "BASELINE": stats["spec"], "BASELINE_ROWS": stats["rows"]}
    rows = [{**base, "COLUMN_NAME": "", "ITEM": "performance", "POSITION": i, "LABEL": k,
             "VALUE": None if v is None else float(v)}
            for i, (k, v) in enumerate((stats.get("performance") or {}).items()) if not isinstance(v, (list, dict))]
    position = len(rows)
    for column, info in stats["columns"].items():
        items = ([("edge", e, None) for e in info.get("edges") or []]
                 + [("bin", s, label) for label, s in zip(info["labels"], info["shares"])]
                 + [("mean", info.get("mean"), None)]
                 + [("quantile", q, None) for q in info.get("quantiles") or []])
        for item, value, label in items:
            rows.append({**base, "COLUMN_NAME": column, "KIND": info["kind"], "ITEM": item, "POSITION": position,
                         "VALUE": None if value is None else float(value), "LABEL": label})
            position += 1
    return rows


def _holdout_relation(con, run, spec, version, columns) -> str:
    """The training holdout of ``version``, scored by it, as a DuckDB table: only while the run that
    trained it is going (afterwards the recorded baseline is used)."""
    import numpy as np

    trained = (run.results.get("version") or {}).get("version_name")
    if trained != version or "splits" not in run.results or "model" not in run.results:
        raise MlopsError(f"monitor.baseline=holdout for {run.registration.model_name} {version}: its training "
                         "holdout is only known in the run that trained it (monitor there once, and its baseline "
                         "is recorded), or choose a SQL condition")
    model = run.results["model"]
    X, _ = run.results["splits"]["holdout"]
    rows = run.results["frame"].loc[X.index].reset_index(drop=True)
    scores = np.asarray(model.predict_scores(X), dtype=float)
    predicted = model.predict_classes(scores)
    probabilities = {}
    if scores.ndim == 2:  # multiclass: the predicted class's probability, as PREDICTED_SCORE holds
        probabilities = {f"PROBA_{label}": scores[:, i] for i, label in enumerate(model.contract.classes)}
        scores = scores.max(axis=1)
    rows = rows.assign(__actual=rows[run.features.target], __predicted=predicted, __score=scores, **probabilities,
                       **{spec.prediction_column: predicted, spec.score_column: scores})
    con.register("__holdout_frame", rows[[*[c for c in columns if c in rows.columns], *probabilities, "__actual",
                                          "__predicted", "__score"]])
    con.execute("CREATE OR REPLACE TEMP TABLE __baseline AS SELECT * FROM __holdout_frame")
    con.unregister("__holdout_frame")
    return "__baseline"


def run_monitor(run):
    """The ``monitor`` stage: compute the new windows in the warehouse, write the monitor tables
    through their sinks, evaluate the alert rules on the new windows, notify."""
    import time

    import duckdb

    from mlops_framework import alerts as alerting
    from mlops_framework.contracts import sql_string

    clock = time.perf_counter()
    seconds: dict = {}

    def lap(phase):
        nonlocal clock
        now = time.perf_counter()
        seconds[phase] = seconds.get(phase, 0.0) + now - clock
        clock = now

    spec = run.monitor
    if spec is None:
        raise MlopsError("the monitor stage needs the monitor config group (monitor=default)")
    contract = run.results.get("contract")  # trained in this run: its (possibly inferred) roles
    numeric = contract.numeric if contract else run.features.numeric or []
    categorical = list(contract.categorical) if contract else run.features.categorical or []
    features = {c: "numeric" for c in numeric} | {c: "categorical" for c in categorical}
    if spec.columns:
        features = {c: features.get(c, "numeric") for c in spec.columns}
    baseline_key = _baseline_key(spec)
    name = run.registration.model_name
    number = len(run.results.get("monitor_runs", [])) + 1
    run_id = run.output_dir.name if run.output_dir else uuid.uuid4().hex[:12]
    monitor_id = f"{run_id}-{number}"
    monitored_at = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    stamp = {"MONITOR_ID": monitor_id, "RUN_ID": run_id, "MONITORED_AT": monitored_at, "MODEL_NAME": name}
    mine = f"MODEL_NAME = {sql_string(name)}"
    recorded = _recorded_rows(spec.sinks["performance"], mine, [
        "MONITORED_AT", "MODEL_VERSION", "WINDOW", "WINDOW_START", "BASELINE_ID", "FINGERPRINT"])
    done = {(r["MODEL_VERSION"], r["WINDOW_START"], r["BASELINE_ID"]): r["FINGERPRINT"]
            for r in sorted(recorded, key=lambda r: r["MONITORED_AT"]) if r["WINDOW"] == spec.window}
    baselines = _recorded_baselines(_recorded_rows(spec.sinks["baselines"], mine,
                                                   [name for name, _ in TABLE_COLUMNS["baselines"]]))
    already = {(r["RULE"], r["MODEL_VERSION"], r["WINDOW_START"], r["COLUMN_NAME"] or None)
               for r in _recorded_rows(spec.sinks["alerts"], mine, ["RULE", "MODEL_VERSION", "WINDOW_START", "COLUMN_NAME"])}
    lap("recorded")

    con = duckdb.connect()
    try:
        found = open_monitored(con, spec, run, run.features)
        upper = {c.upper(): c for c in found["columns"]}
        for needed in (spec.prediction_column, *features):
            if needed.upper() not in upper:
                raise MlopsError(f"the monitored rows lack column {needed}; they have: {', '.join(found['columns'])}")
        fallback = (run.results.get("scored") or {}).get("version") or "(unknown)"
        version_expr = (f"coalesce(CAST({_q(upper['MODEL_VERSION'])} AS VARCHAR), {sql_string(fallback)})"
                        if "MODEL_VERSION" in upper else sql_string(fallback))
        time_expr = time_expression(con, "monitored", spec.timestamp, spec.time_format)
        probe = WarehouseMonitor(
            con, columns={}, target_expr=_q(run.features.target), prediction=upper[spec.prediction_column.upper()],
            score=None, time_expr=time_expr, version_expr=version_expr, scored_at=upper.get("SCORED_AT"),
            window=spec.window, origin=spec.origin, task={}, bins=spec.bins, binning=spec.binning, average=spec.average)
        lap("open")
        current = probe.fingerprints()
        lap("fingerprints")
        versions = sorted({v for v, _ in current})
        if not versions:
            raise MlopsError(f"{found['source']} has no rows of model {name} with a {spec.timestamp} to monitor")
        tasks = {v: _task_of(run, v) for v in versions}
        lap("tasks")
        has_score = spec.score_column.upper() in upper and any(t["task"] != "regression" for t in tasks.values())
        columns = dict(features)
        prediction_kind = "numeric" if all(t["task"] == "regression" for t in tasks.values()) else "categorical"
        columns[upper[spec.prediction_column.upper()]] = prediction_kind
        if has_score:
            columns[upper[spec.score_column.upper()]] = "numeric"
        probabilities = {str(label): upper[f"PROBA_{label}".upper()] for t in tasks.values() if t["task"] == "multiclass"
                         for label in t["classes"] or [] if f"PROBA_{label}".upper() in upper}
        roles = {**{c: "feature" for c in features}, upper[spec.prediction_column.upper()]: "prediction"}
        if has_score:
            roles[upper[spec.score_column.upper()]] = "score"
        engine = WarehouseMonitor(
            con, columns=columns, target_expr=_q(run.features.target), prediction=upper[spec.prediction_column.upper()],
            score=upper[spec.score_column.upper()] if has_score else None, time_expr=time_expr,
            version_expr=version_expr, scored_at=upper.get("SCORED_AT"), window=spec.window, origin=spec.origin,
            task=tasks, bins=spec.bins, binning=spec.binning, average=spec.average, probabilities=probabilities)

        new_baselines = {}
        for version in versions:
            if version in baselines:
                continue
            if spec.baseline_source is not None:
                _load(con, "__baseline_raw", spec.baseline_source)
                relation = _baseline_view(con, run, spec, "__baseline_raw")
            elif baseline_key == "holdout":
                relation = _holdout_relation(con, run, spec, version, columns)
            else:
                relation = "__baseline"
                try:
                    con.execute(f"CREATE OR REPLACE TEMP TABLE __baseline AS SELECT * FROM prepared "
                                f"WHERE __version = {sql_string(version)} AND ({baseline_key})")
                except duckdb.Error as error:
                    names = [row[0] for row in con.execute("DESCRIBE prepared").fetchall() if not row[0].startswith("__")]
                    raise MlopsError(f"monitor.baseline {baseline_key!r} does not fit the monitored rows "
                                     f"({str(error).splitlines()[0]}); write a condition on their columns "
                                     f"({', '.join(names)}) or set monitor.baseline=holdout") from None
                if con.execute("SELECT count(*) FROM __baseline").fetchone()[0] == 0:  # scored by another version
                    con.execute(f"CREATE OR REPLACE TEMP TABLE __baseline AS SELECT * FROM prepared WHERE {baseline_key}")
            stats = engine.baseline_stats(relation)
            if stats["rows"] == 0:
                raise MlopsError(f"the monitoring baseline has no rows: check monitor.baseline ({baseline_key})")
            stats["spec"] = baseline_key
            stats["id"] = _digest({"version": version, "spec": baseline_key, "stats": stats})
            baselines[version] = new_baselines[version] = stats
        lap("baselines")

        todo = {key for key, (_, _, fp) in current.items()
                if done.get((key[0], key[1], baselines[key[0]]["id"])) != fp}
        engine.select_work(todo, everything=len(todo) == len(current))
        lap("select")
        performance = engine.performance() if todo else {}
        lap("performance")
        drift_rows = engine.drift({v: baselines[v] for v in versions}) if todo else []
        lap("drift")
        waiting = sum(n - labeled for n, labeled, _ in current.values())
        total_rows = sum(n for n, _, _ in current.values())
        by_window: dict = {}
        for v, w in current:
            by_window.setdefault(w, []).append(v)
        mixes = [(w, sorted(vs)) for w, vs in sorted(by_window.items()) if len(vs) > 1]
    except duckdb.Error as error:
        raise MlopsError(f"monitor: {str(error).splitlines()[0]}") from None
    finally:
        con.close()

    windows = []
    for key in sorted(todo, key=lambda k: (k[1], k[0])):
        version, start = key
        n, labeled, fingerprint = current[key]
        metrics = performance.get(key, {})
        windows.append({"model_version": version, "task": tasks[version]["task"], "window_start": start,
                        "window_end": start + engine.width, "rows": n, "labeled_rows": labeled,
                        "waiting_rows": n - labeled, "fingerprint": fingerprint, "baseline_id": baselines[version]["id"],
                        "baseline": baselines[version].get("performance") or {},
                        **{m: None for m in METRICS}, **{k: v for k, v in metrics.items() if k != "rows"}})
    for row in drift_rows:
        row["role"] = roles[row["column"]]
        row["baseline_id"] = baselines[row["model_version"]]["id"]
    result = {"performance": windows, "drift": drift_rows, "window": spec.window, "model_name": name,
              "model_version": ", ".join(sorted(versions)), "versions": sorted(versions), "run_id": run_id,
              "monitor_id": monitor_id, "monitored_at": monitored_at, "source": found["source"],
              "actuals": found["actuals"], "baseline": baseline_key,
              "baselines": {v: {"id": b["id"], "spec": b["spec"], "rows": b["rows"]} for v, b in baselines.items()
                            if v in versions},
              "baseline_rows": sum(baselines[v]["rows"] for v in versions), "rows": total_rows,
              "windows_total": len(current), "windows_unchanged": len(current) - len(todo), "waiting_for_labels": waiting,
              "mixed_windows": [{"window_start": w, "versions": list(vs)} for w, vs in mixes]}

    fired = alerting.evaluate(run.alerts.rules if run.alerts else [], result, already=already)
    lap("alerts")
    result["alerts"] = fired
    table_stamp = {**stamp}
    write_table(spec.sinks["baselines"], "baselines",
                [row for v, stats in new_baselines.items() for row in _baseline_rows(stats, {**table_stamp, "MODEL_VERSION": v})])
    write_table(spec.sinks["drift"], "drift", [{**table_stamp, **_upper(row)} for row in drift_rows])
    write_table(spec.sinks["alerts"], "alerts", [{**table_stamp, **_upper(a.to_dict()), "MODEL_NAME": name} for a in fired])
    write_table(spec.sinks["performance"], "performance",
                [{**table_stamp, **_upper(row), "WINDOW": spec.window} for row in windows])
    lap("write")
    result["delivery"] = alerting.notify(run.alerts.notifiers if run.alerts else {}, fired)
    lap("notify")
    result["seconds"] = {phase: round(value, 3) for phase, value in seconds.items()}
    run.results["monitor"] = result
    run.results.setdefault("monitor_runs", []).append(result)
    run.results.setdefault("alerts", []).extend(fired)
    _summarise(run, spec, result, fired, number)


def _summarise(run, spec, result, fired, number):
    suffix = f" {number}" if number > 1 else ""
    last = next((w for w in reversed(result["performance"]) if w.get("f1") is not None or w.get("rmse") is not None),
                None)
    quality = ""
    if last:
        metric = "f1" if last.get("f1") is not None else "rmse"
        quality = f", last {metric.upper()} {last[metric]:.3f}"
    baselines = "; ".join(f"{v}: {b['spec']} ({b['rows']:,} rows, {b['id']})" for v, b in result["baselines"].items())
    run.summarize(f"monitor{suffix}", (
        f"{result['rows']:,} rows of {result['model_name']} {result['model_version']} in {result['windows_total']} "
        f"windows of {spec.window} ({len({(w['model_version'], w['window_start']) for w in result['performance']})} "
        f"computed, {result['windows_unchanged']} unchanged{quality}) -> {spec.sinks['performance'].describe()}; "
        f"baseline {baselines}"))
    if result["waiting_for_labels"]:
        run.summarize(f"labels{suffix}", f"{result['waiting_for_labels']:,} predictions still wait for labels")
    if result["mixed_windows"]:
        run.summarize(f"versions{suffix}", "windows mixing versions: " + "; ".join(
            f"{_day(m['window_start'])}: {', '.join(m['versions'])}" for m in result["mixed_windows"][:5]))
    run.summarize(f"alerts{suffix}", f"{len(fired)} fired" + (": " + "; ".join(a.message for a in fired[:3]) if fired else ""))
    if run.output_dir:
        import json

        (run.output_dir / f"monitor-{number}.json").write_text(
            json.dumps({k: v for k, v in result.items() if k != "alerts"} | {"alerts": [a.to_dict() for a in fired]},
                       indent=1, default=str))


def _day(value) -> str:
    return value.date().isoformat() if isinstance(value, dt.datetime) else str(value)


def _baseline_view(con, run, spec, raw) -> str:
    """Baseline rows from ``monitor.baseline_source`` with the columns the engine reads."""
    from mlops_framework.contracts import quote_identifier

    con.execute(f"CREATE OR REPLACE TEMP TABLE __baseline AS SELECT *, {quote_identifier(run.features.target)} AS __actual, "
                f"{quote_identifier(spec.prediction_column)} AS __predicted, "
                f"CAST({quote_identifier(spec.score_column)} AS DOUBLE) AS __score FROM {raw}")
    return "__baseline"


def _digest(value) -> str:
    import hashlib
    import json

    return "b-" + hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _q(name):
    from mlops_framework.contracts import quote_identifier

    return quote_identifier(name)


def _upper(row: dict) -> dict:
    """Warehouse column names: upper case; ``column`` (a reserved word) becomes ``COLUMN_NAME``."""
    return {("COLUMN_NAME" if key == "column" else key.upper()): value for key, value in row.items()
            if not isinstance(value, (dict, list))}
