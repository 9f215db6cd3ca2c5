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
    matrix and per-class report; regression the residual quantiles (true - predicted)."""
    import numpy as np
    from sklearn import metrics

    check_task(task)
    y_true = np.asarray(y_true)
    output = np.asarray(output)
    if task == "regression":
        residual = y_true.astype(float) - output.astype(float)
        quantiles = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)
        return {
            "rmse": float(np.sqrt(metrics.mean_squared_error(y_true, output))),
            "mae": float(metrics.mean_absolute_error(y_true, output)),
            "r2": float(metrics.r2_score(y_true, output)) if len(y_true) > 1 else None,
            "rows": int(len(y_true)),
            "residual_quantiles": {f"q{int(q * 100):02d}": float(np.quantile(residual, q)) for q in quantiles},
            "residual_mean": float(residual.mean()),
        }
    n_classes = len(classes) if classes is not None else (2 if task == "binary" else output.shape[1])
    labels = list(range(n_classes))
    if task == "binary":
        predicted = (output >= threshold).astype(int)
        proba = output
    else:
        predicted = output.argmax(axis=1)
        proba = output
    present = np.unique(y_true)
    result = {
        "accuracy": float(metrics.accuracy_score(y_true, predicted)),
        "precision": float(metrics.precision_score(y_true, predicted, labels=labels, average="macro", zero_division=0)),
        "recall": float(metrics.recall_score(y_true, predicted, labels=labels, average="macro", zero_division=0)),
        "f1": float(metrics.f1_score(y_true, predicted, labels=labels, average="macro", zero_division=0)),
        "roc_auc": None,
    }
    if task == "binary":
        if len(present) == 2:
            result["roc_auc"] = float(metrics.roc_auc_score(y_true, proba))
    else:
        for name in ("precision", "recall", "f1"):
            fn = getattr(metrics, f"{name}_score")
            result[f"{name}_weighted"] = float(fn(y_true, predicted, labels=labels, average="weighted", zero_division=0))
        result["log_loss"] = float(metrics.log_loss(y_true, np.clip(proba, 1e-15, 1), labels=labels))
        if len(present) == n_classes:
            result["roc_auc"] = float(metrics.roc_auc_score(y_true, proba, multi_class="ovr", average="macro",
                                                            labels=labels))
    names = [str(c) for c in classes] if classes is not None else [str(i) for i in labels]
    result.update(
        rows=int(len(y_true)),
        confusion_matrix=metrics.confusion_matrix(y_true, predicted, labels=labels).tolist(),
        classification_report=metrics.classification_report(
            y_true, predicted, labels=labels, target_names=names, output_dict=True, zero_division=0
        ),
    )
    return result
