"""``metrics.evaluate`` computes with numpy what scikit-learn computes, value for value: binary with tied
scores, a class never predicted or absent, a label outside the classes, multiclass and regression."""

import numpy as np
import pytest
from sklearn import metrics as skm

from mlops_framework.errors import MlopsError
from mlops_framework.metrics import evaluate, roc_auc

rng = np.random.default_rng(3)


def close(got, expected):
    """Equal up to float rounding, recursively (dicts, lists)."""
    if isinstance(expected, dict):
        assert got.keys() == expected.keys()
        for key in expected:
            close(got[key], expected[key])
    elif isinstance(expected, list):
        assert len(got) == len(expected)
        for a, b in zip(got, expected):
            close(a, b)
    elif expected is None:
        assert got is None
    else:
        assert type(got) in (float, int) and got == pytest.approx(expected, rel=1e-12, abs=1e-12)


def sklearn_classification(y, output, task, n_classes, threshold=0.5, names=None):
    """What ``evaluate`` computed with scikit-learn before it used numpy."""
    labels = list(range(n_classes))
    predicted = (output >= threshold).astype(int) if task == "binary" else output.argmax(axis=1)
    present = np.unique(y)
    expected = {
        "accuracy": skm.accuracy_score(y, predicted),
        **{name: getattr(skm, f"{name}_score")(y, predicted, labels=labels, average="macro", zero_division=0)
           for name in ("precision", "recall", "f1")},
        "roc_auc": None,
    }
    if task == "binary":
        if len(present) == 2:
            expected["roc_auc"] = skm.roc_auc_score(y, output)
    else:
        for name in ("precision", "recall", "f1"):
            expected[f"{name}_weighted"] = getattr(skm, f"{name}_score")(y, predicted, labels=labels,
                                                                         average="weighted", zero_division=0)
        expected["log_loss"] = skm.log_loss(y, np.clip(output, 1e-15, 1), labels=labels)
        if len(present) == n_classes:
            expected["roc_auc"] = skm.roc_auc_score(y, output, multi_class="ovr", average="macro", labels=labels)
    expected.update(rows=len(y), confusion_matrix=skm.confusion_matrix(y, predicted, labels=labels).tolist(),
                    classification_report=skm.classification_report(
                        y, predicted, labels=labels, target_names=names or [str(i) for i in labels],
                        output_dict=True, zero_division=0))
    return expected


def tied_scores(y):
    return np.clip(0.3 * y + rng.random(len(y)) * 0.7, 0, 1).round(1)  # rounded: many ties


BINARY = {
    "ties": (lambda y: (y, tied_scores(y)))(rng.integers(0, 2, 400)),
    "a class never predicted": (np.array([0, 1, 1, 0, 1]), np.array([0.1, 0.2, 0.3, 0.3, 0.45])),
    "one class only": (np.array([1, 1, 1]), np.array([0.2, 0.7, 0.9])),
    "float labels, all scores tied": (np.array([0.0, 1.0, 1.0, 0.0]), np.full(4, 0.5)),
    "a label outside the classes": (np.array([0, 1, 2, 1, 0, 2]), np.array([0.1, 0.8, 0.9, 0.4, 0.6, 0.2])),
    "imbalanced": (lambda y: (y, rng.random(300) * 0.5 + 0.4 * y))((rng.random(300) < 0.05).astype(int)),
}


@pytest.mark.parametrize("case", BINARY)
def test_binary_metrics_equal_scikit_learns(case):
    y, scores = BINARY[case]
    got = evaluate("binary", y, scores, threshold=0.5, classes=["no", "yes"])
    close(got, sklearn_classification(y, scores, "binary", 2, names=["no", "yes"]))
    assert got["confusion_matrix"] == skm.confusion_matrix(y, (scores >= 0.5).astype(int), labels=[0, 1]).tolist()


def probabilities(rows, classes):
    raw = rng.random((rows, classes)).round(1) + 0.01
    return raw / raw.sum(axis=1, keepdims=True)


MULTICLASS = {
    "every class": (rng.integers(0, 4, 300), probabilities(300, 4), 4),
    "a class absent from the labels": (rng.integers(0, 3, 200), probabilities(200, 4), 4),
}


@pytest.mark.parametrize("case", MULTICLASS)
def test_multiclass_metrics_equal_scikit_learns(case):
    y, proba, n_classes = MULTICLASS[case]
    close(evaluate("multiclass", y, proba), sklearn_classification(y, proba, "multiclass", n_classes))


@pytest.mark.parametrize("y, predicted", [
    (rng.normal(size=200) * 10, rng.normal(size=200) * 10),
    (np.array([1, 2, 3, 4]), np.array([1.5, 2.0, 2.5, 4.5])),
    (np.array([2.0, 2.0, 2.0]), np.array([2.0, 2.0, 2.0])),  # constant truth, perfect: r2 1
    (np.array([2.0, 2.0, 2.0]), np.array([1.0, 2.0, 3.0])),  # constant truth, errors: r2 0
])
def test_regression_metrics_equal_scikit_learns(y, predicted):
    got = evaluate("regression", y, predicted)
    close({k: got[k] for k in ("rmse", "mae", "r2")},
          {"rmse": np.sqrt(skm.mean_squared_error(y, predicted)), "mae": skm.mean_absolute_error(y, predicted),
           "r2": skm.r2_score(y, predicted)})
    assert evaluate("regression", [1.0], [2.0])["r2"] is None


def test_roc_auc_of_tied_scores_counts_ties_half():
    assert roc_auc([False, True], [0.5, 0.5]) == 0.5
    assert roc_auc([False, False, True, True], [0.1, 0.4, 0.35, 0.8]) == 0.75


def test_predictions_that_are_not_numbers_are_refused_with_one_message():
    with pytest.raises(MlopsError, match="predictions hold NaN"):
        evaluate("binary", [0, 1], [0.2, np.nan])
    with pytest.raises(MlopsError, match="true labels or values hold NaN"):
        evaluate("regression", [1.0, np.nan], [1.0, 2.0])
