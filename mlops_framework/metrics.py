"""Metric names, their direction and their computation, per task (``binary``, ``multiclass``, ``regression``).

One home for what "better" means: :func:`higher_is_better` is read by the promotion gate and the sweeps'
leaderboard, :func:`default_metric` by anything that ranks models without being told which metric.
:func:`evaluate` computes a task's metrics from true labels (class indices, or values for regression)
and the model's output (positive-class probabilities for binary, an (n, classes) probability matrix for
multiclass, predicted values for regression).
"""

from __future__ import annotations

TASKS = ("binary", "multiclass", "regression")
CLASSIFICATION = ("accuracy", "precision", "recall", "f1", "roc_auc")  # macro averages
MULTICLASS = (*CLASSIFICATION, "precision_weighted", "recall_weighted", "f1_weighted", "log_loss")
REGRESSION = ("rmse", "mae", "r2")
LOWER_IS_BETTER = frozenset({"rmse", "mae", "log_loss"})
_DEFAULT = {"binary": "f1", "multiclass": "f1", "regression": "rmse"}


def metric_names(task: str) -> tuple[str, ...]:
    """The scalar metrics :func:`evaluate` reports for ``task``."""
    return {"binary": CLASSIFICATION, "multiclass": MULTICLASS, "regression": REGRESSION}[check_task(task)]


def check_task(task: str) -> str:
    from mlops_framework.errors import MlopsError

    if task not in TASKS:
        raise MlopsError(f"unknown task {task!r}: use one of {', '.join(TASKS)}")
    return task


def default_metric(task: str) -> str:
    """What a model of ``task`` is ranked by unless told otherwise (f1 for classification, rmse for regression)."""
    return _DEFAULT[check_task(task)]


def higher_is_better(name: str) -> bool:
    """Whether a larger value of metric ``name`` is better; a ``validation_``/``holdout_``/... prefix is ignored."""
    return _base(name) not in LOWER_IS_BETTER


def direction(name: str) -> str:
    """``maximize`` or ``minimize``, as Optuna and the sweeps' leaderboard spell it."""
    return "maximize" if higher_is_better(name) else "minimize"


def better(name: str, new, old, margin: float = 0.0) -> bool:
    """``new`` beats ``old`` by at least ``margin`` in the direction of ``name`` (None never beats)."""
    if new is None or old is None:
        return False
    return new >= old + margin if higher_is_better(name) else new <= old - margin


def _base(name: str) -> str:
    for prefix in ("validation_", "holdout_", "candidate_", "champion_", "train_"):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def evaluate(task: str, y_true, output, *, threshold: float = 0.5, classes=None) -> dict:
    """The task's metrics (floats, plus ``rows``) and its tables: binary and multiclass give the confusion
    matrix and per-class report; regression the residual quantiles (true - predicted).

    Computed with numpy from confusion counts and sorted scores; every value equals scikit-learn's
    (``accuracy_score``, ``precision/recall/f1_score`` with ``zero_division=0``, ``roc_auc_score``,
    ``confusion_matrix``, ``classification_report(output_dict=True)``, ``mean_squared_error``,
    ``mean_absolute_error``, ``r2_score``; ``log_loss`` is scikit-learn's), up to float rounding, at a
    fraction of its input checks' cost (a sweep evaluates validation and holdout in every trial).
    """
    import numpy as np

    from mlops_framework.errors import MlopsError

    check_task(task)
    y_true = np.asarray(y_true)
    output = np.asarray(output)
    if not np.isfinite(output).all():
        raise MlopsError("the model's predictions hold NaN or infinite values: metrics cannot be computed")
    if y_true.dtype.kind == "f" and not np.isfinite(y_true).all():
        raise MlopsError("the true labels or values hold NaN or infinite values: metrics cannot be computed")
    if task == "regression":
        return _regression(y_true.astype(float), output.astype(float))
    n_classes = len(classes) if classes is not None else (2 if task == "binary" else output.shape[1])
    predicted = (output >= threshold).astype(int) if task == "binary" else output.argmax(axis=1)
    counts = _ConfusionCounts(y_true, predicted, n_classes)
    result = {"accuracy": float(np.mean(y_true == predicted)), **counts.macro(), "roc_auc": None}
    present = np.unique(y_true)
    if task == "binary":
        if len(present) == 2:
            result["roc_auc"] = roc_auc(y_true == present[1], output)
    else:
        from sklearn.metrics import log_loss

        result.update(counts.weighted())
        result["log_loss"] = float(log_loss(y_true, np.clip(output, 1e-15, 1), labels=list(range(n_classes))))
        if len(present) == n_classes:
            result["roc_auc"] = float(np.mean([roc_auc(y_true == k, output[:, k]) for k in range(n_classes)]))
    names = [str(c) for c in classes] if classes is not None else [str(i) for i in range(n_classes)]
    result.update(rows=int(len(y_true)), confusion_matrix=counts.matrix.tolist(),
                  classification_report=counts.report(names, result["accuracy"]))
    return result


def roc_auc(positive, scores) -> float:
    """Area under the ROC curve of ``scores`` for the rows where ``positive`` is true (both kinds present):
    the Mann-Whitney statistic from the scores' ranks, tied scores sharing their average rank."""
    import numpy as np

    positive = np.asarray(positive, dtype=bool)
    scores = np.asarray(scores, dtype=float)
    order = np.argsort(scores, kind="stable")
    ordered = scores[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(ordered)]
    ranks = np.repeat((starts + ends + 1) / 2.0, ends - starts)  # 1-based, ties averaged
    n_positive = int(positive.sum())
    n_negative = len(positive) - n_positive
    rank_sum = float(ranks[positive[order]].sum())
    return (rank_sum - n_positive * (n_positive + 1) / 2) / (n_positive * n_negative)


class _ConfusionCounts:
    """Per-class counts of class-index labels against predictions, with scikit-learn's averages over the
    classes ``0 .. n_classes - 1`` (labels outside them count only in ``accuracy`` and the predicted totals,
    as scikit-learn's ``labels=`` does)."""

    def __init__(self, y_true, predicted, n_classes: int):
        import numpy as np

        inside = np.isin(y_true, np.arange(n_classes))
        truth = y_true[inside].astype(np.int64)
        self.matrix = np.bincount(truth * n_classes + predicted[inside], minlength=n_classes * n_classes
                                  ).reshape(n_classes, n_classes)
        self.true = self.matrix.sum(axis=1).astype(float)
        self.predicted = np.bincount(predicted, minlength=n_classes)[:n_classes].astype(float)
        self.hits = np.diag(self.matrix).astype(float)
        self.all_labelled = bool(inside.all())
        self.precision = _ratio(self.hits, self.predicted)
        self.recall = _ratio(self.hits, self.true)
        self.f1 = _ratio(2 * self.hits, self.true + self.predicted)

    def macro(self) -> dict:
        import numpy as np

        return {name: float(np.mean(values)) for name, values in self._scores()}

    def weighted(self) -> dict:
        import numpy as np

        if not self.true.sum():
            return {f"{name}_weighted": 0.0 for name, _ in self._scores()}
        return {f"{name}_weighted": float(np.average(values, weights=self.true)) for name, values in self._scores()}

    def report(self, names, accuracy: float) -> dict:
        """``classification_report(..., output_dict=True, zero_division=0)``."""
        import numpy as np

        def row(precision, recall, f1, support):
            return {"precision": float(precision), "recall": float(recall), "f1-score": float(f1),
                    "support": float(support)}

        report = {name: row(*values) for name, *values in zip(names, self.precision, self.recall, self.f1, self.true)}
        total = self.true.sum()
        if self.all_labelled:
            report["accuracy"] = accuracy
        else:  # scikit-learn's micro average over the listed classes
            hits = self.hits.sum()
            report["micro avg"] = row(*_ratio(np.array([hits, hits, 2 * hits]),
                                              np.array([self.predicted.sum(), total, self.predicted.sum() + total])),
                                      total)
        report["macro avg"] = row(*(np.mean(values) for _, values in self._scores()), total)
        weighted = self.weighted()
        report["weighted avg"] = row(*(weighted[f"{name}_weighted"] for name, _ in self._scores()), total)
        return report

    def _scores(self):
        return (("precision", self.precision), ("recall", self.recall), ("f1", self.f1))


def _ratio(numerator, denominator):
    """``numerator / denominator`` elementwise, 0 where the denominator is 0 (``zero_division=0``)."""
    import numpy as np

    return np.divide(numerator, denominator, out=np.zeros(len(numerator), dtype=float), where=denominator != 0)


def _regression(y_true, predicted) -> dict:
    import numpy as np

    residual = y_true - predicted
    squares = residual ** 2
    r2 = None
    if len(y_true) > 1:
        total = float(np.sum((y_true - np.mean(y_true)) ** 2))
        unexplained = float(np.sum(squares))
        r2 = 1.0 - unexplained / total if total else (1.0 if unexplained == 0 else 0.0)
    quantiles = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)
    return {
        "rmse": float(np.sqrt(np.mean(squares))),
        "mae": float(np.mean(np.abs(residual))),
        "r2": r2,
        "rows": int(len(y_true)),
        "residual_quantiles": {f"q{int(q * 100):02d}": float(np.quantile(residual, q)) for q in quantiles},
        "residual_mean": float(residual.mean()),
    }
