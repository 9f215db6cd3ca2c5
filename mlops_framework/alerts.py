"""Alert rules evaluated after each monitor run, and the delivery of what fired to the notifiers.

A rule (``conf/alerts/*.yaml``, under ``rules:``, keyed by its name) compares one metric with a
threshold, or (``against: baseline``) the change of a performance metric from the baseline's::

    f1_low:           {metric: f1, op: "<", threshold: 0.7}
    f1_drop:          {metric: f1, against: baseline, op: "<", threshold: -0.05}
    feature_psi_high: {metric: psi, op: ">", threshold: 0.2, columns: null}

``metric`` is a performance metric of the task (accuracy, precision, recall, f1, roc_auc for classes;
rmse, mae, r2 for regression; rows) or a drift metric (psi, jensen_shannon, hellinger, wasserstein,
difference_of_means; ``columns`` names the columns it watches, null meaning every feature); a window
without the metric (no labels yet, another task) is skipped. ``window`` is ``new`` (default: every
window computed in this monitor run that the rule has not fired on before, for that version and
column), ``last`` (the latest computed window of each version) or ``any`` (every computed window).
A window with fewer than ``min_rows`` rows (default 100; labelled rows for a performance metric) is
skipped, except by a ``rows`` rule.
Each (window, column) that breaks the rule fires one :class:`Alert`, naming the rule, version, window,
value and threshold.

Notifiers are plugins (hook ``register_notifiers``; the built-ins are in ``mlops_local.notifiers``): a class whose ``__init__`` stores its YAML keys,
with ``describe() -> str`` and ``notify(alerts: list[Alert]) -> None``, called once per monitor run in
which something fired. Built in: ``console``, ``jsonl`` (append JSON lines to a file), ``webhook``
(POST JSON with urllib) and ``email`` (SMTP with smtplib). A notifier that fails is reported on stderr
and in the run summary; the others still run.
"""

from __future__ import annotations

import datetime as dt
import math
import operator
import sys
from dataclasses import asdict, dataclass

from mlops_framework.errors import MlopsError

OPERATORS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
# The metric names, in one place: what a monitor window records and what rules, the promotion gate and
# the report read. QUALITY: a classifier's metrics; PERFORMANCE adds the window's row count.
QUALITY = ("accuracy", "precision", "recall", "f1", "roc_auc")
REGRESSION = ("rmse", "mae", "r2")
PERFORMANCE = (*QUALITY, *REGRESSION, "rows")
DRIFT = ("psi", "jensen_shannon", "hellinger", "wasserstein", "difference_of_means")


@dataclass
class AlertRule:
    """One rule: ``metric op threshold`` (or ``metric - baseline's op threshold``) in the ``new``,
    ``last`` or ``any`` computed windows."""

    name: str
    metric: str
    threshold: float
    op: str = "<"
    window: str = "new"
    columns: list | None = None
    absolute: bool = False  # compare |value| (for difference_of_means)
    against: str | None = None  # baseline: compare the change from the baseline's value
    min_rows: int = 100  # skip windows with fewer rows (labelled rows for a performance metric)

    def __post_init__(self):
        where = f"alerts.rules.{self.name}"
        if self.metric not in PERFORMANCE + DRIFT:
            raise MlopsError(f"{where}.metric {self.metric!r} is unknown; use one of {', '.join(PERFORMANCE + DRIFT)}")
        if self.op not in OPERATORS:
            raise MlopsError(f"{where}.op {self.op!r} is unknown; use one of {', '.join(OPERATORS)}")
        if self.window not in ("new", "last", "any"):
            raise MlopsError(f"{where}.window must be new, last or any, not {self.window!r}")
        if self.columns is not None and self.metric in PERFORMANCE:
            raise MlopsError(f"{where}.columns applies to drift metrics only")
        if self.against not in (None, "baseline"):
            raise MlopsError(f"{where}.against must be baseline or null, not {self.against!r}")
        if self.against and (self.metric in DRIFT or self.metric == "rows"):
            raise MlopsError(f"{where}.against: baseline applies to performance metrics (drift already is one)")
        if self.min_rows < 0:
            raise MlopsError(f"{where}.min_rows must be a whole number >= 0, not {self.min_rows!r}")

    @property
    def is_drift(self) -> bool:
        return self.metric in DRIFT

    def too_few_rows(self, window: dict) -> bool:
        """Whether ``window`` (a performance or drift row) has fewer rows than ``min_rows`` for this
        rule's metric: a drift or quality metric of a handful of rows is noise (between two samples of the
        same data, the PSI of 10 bins exceeds 0.2 in 81% of 30-row windows, 3% of 100-row ones). The
        ``rows`` metric itself is never skipped."""
        if self.metric == "rows":
            return False
        rows = window.get("rows") if self.is_drift else window.get("labeled_rows", window.get("rows"))
        return rows is not None and rows < self.min_rows

    def describe(self) -> str:
        scope = "" if not self.is_drift else f" of {', '.join(self.columns) if self.columns else 'any feature'}"
        value = f"|{self.metric}|" if self.absolute else self.metric
        value = f"{value} - baseline's" if self.against else value
        rows = f" of {self.min_rows}+ rows" if self.min_rows and self.metric != "rows" else ""
        return f"{self.name}: {value}{scope} {self.op} {self.threshold} in {self.window} windows{rows}"


@dataclass
class Alert:
    """A rule that fired: which, where (window, column), the value and the threshold."""

    rule: str
    metric: str
    op: str
    threshold: float
    value: float
    window_start: object
    window_end: object
    column: str | None = None
    model_name: str | None = None
    model_version: str | None = None
    run_id: str | None = None
    fired_at: str | None = None
    baseline: float | None = None  # the baseline's value, for a rule ``against: baseline``

    @property
    def message(self) -> str:
        column = f" of {self.column}" if self.column else ""
        version = f" ({self.model_name} {self.model_version})" if self.model_version else ""
        metric = f"{self.metric} - baseline's {self.baseline:.4g}" if self.baseline is not None else self.metric
        return (f"{self.rule}: {metric}{column} = {self.value:.4g} {self.op} {self.threshold} "
                f"in window {_day(self.window_start)}..{_day(self.window_end)}{version}")

    def to_dict(self) -> dict:
        data = asdict(self)
        data["message"] = self.message
        return data


def _day(value) -> str:
    return value.date().isoformat() if isinstance(value, dt.datetime) else str(value)


def build_rules(values: dict | None) -> list[AlertRule]:
    """Rules from the ``rules:`` mapping (name -> keys); a null entry is a rule switched off."""
    from mlops_framework.plugins import check_arguments

    rules = []
    for name, keys in (values or {}).items():
        if keys is None:
            continue
        keys = dict(keys)
        check_arguments(AlertRule, {"name": name, **keys}, where=f"alerts.rules.{name}")
        rules.append(AlertRule(name=name, **keys))
    return rules


def evaluate(rules: list[AlertRule], result: dict, already=frozenset()) -> list[Alert]:
    """The alerts that ``rules`` fire on one monitor ``result`` (see ``monitoring.run_monitor``): its
    ``performance`` and ``drift`` rows are the windows computed in that run, each naming its
    ``model_version``. ``already``: ``(rule, version, window_start, column)`` fired by earlier runs,
    which ``window: new`` does not fire again."""
    fired = []
    now = dt.datetime.now(dt.timezone.utc).isoformat()
    stamp = {key: result.get(key) for key in ("model_name", "run_id")}
    performance = result.get("performance") or []
    last = {}
    for row in performance:
        version = row.get("model_version", result.get("model_version"))
        last[version] = max(last.get(version, row["window_start"]), row["window_start"])
    for rule in rules:
        compare = OPERATORS[rule.op]
        if rule.is_drift:
            rows = [row for row in result.get("drift") or []
                    if (row["column"] in rule.columns if rule.columns else row["role"] == "feature")]
        else:
            rows = performance
        for row in rows:
            version = row.get("model_version", result.get("model_version"))
            column = row.get("column") if rule.is_drift else None
            if rule.window == "last" and row["window_start"] != last.get(version):
                continue
            if rule.window == "new" and (rule.name, version, row["window_start"], column) in already:
                continue
            if rule.too_few_rows(row):
                continue
            value = row.get(rule.metric)
            baseline = None
            if rule.against and value is not None:
                baseline = (row.get("baseline") or {}).get(rule.metric)
                value = None if baseline is None else value - baseline
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue
            if compare(abs(value) if rule.absolute else value, rule.threshold):
                fired.append(Alert(rule=rule.name, metric=rule.metric, op=rule.op, threshold=rule.threshold,
                                   value=float(value), window_start=row["window_start"], window_end=row["window_end"],
                                   column=column, fired_at=now, model_version=version, baseline=baseline, **stamp))
    return fired


def notify(notifiers: dict, alerts: list[Alert]) -> dict:
    """Hand ``alerts`` to every notifier (none is called when nothing fired); ``{name: "ok" | error}``."""
    delivery = {}
    if not alerts:
        return delivery
    for name, notifier in notifiers.items():
        try:
            notifier.notify(alerts)
            delivery[name] = "ok"
        except Exception as error:  # one broken channel must not hide the alert from the others
            from mlops_framework.config import scrub

            delivery[name] = scrub(f"{type(error).__name__}: {error}")
            print(f"mlops: warning: notifier {name} ({scrub(notifier.describe())}) failed: {delivery[name]}",
                  file=sys.stderr)
    return delivery


def within_deadline(action, seconds: float, what: str):
    """Run ``action()`` and return its result, or raise ``TimeoutError`` once ``seconds`` have passed in
    all (a socket timeout bounds each operation only: a server sending one byte a second never trips it).
    The late action is abandoned on a daemon thread, so the run goes on."""
    import threading

    outcome = {}

    def target():
        try:
            outcome["value"] = action()
        except BaseException as error:  # handed to the caller's thread
            outcome["error"] = error

    worker = threading.Thread(target=target, name=f"mlops-{what}", daemon=True)
    worker.start()
    worker.join(float(seconds))
    if worker.is_alive():
        raise TimeoutError(f"{what} took longer than {seconds:g}s in total; abandoned")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")
