"""A fitted model together with its feature contract: what is trained, registered and scored."""

import json
from pathlib import Path

from mlops_framework.errors import MlopsError

XGBOOST_FILE = "model.ubj"
SKOPS_FILE = "model.skops"
TRUSTED_MODULES = ("sklearn.", "numpy.", "scipy.")
POSITIVE_COUNTS = ("n_estimators", "max_iter", "num_parallel_tree")  # a model of zero trees must not register  # skops artifacts may only hold these libraries' types


def _import(target):
    import importlib

    module_name, _, class_name = target.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError) as error:
        raise MlopsError(f"model._target_ {target!r} cannot be imported: {error}") from error


def is_regressor(target):
    """Whether the estimator class named by ``target`` is a regressor (scikit-learn's estimator type)."""
    from sklearn.base import is_regressor as sklearn_is_regressor

    cls = _import(target)
    try:
        return bool(sklearn_is_regressor(cls()))
    except Exception:  # noqa: BLE001 - a class that needs arguments: judge by its name
        return cls.__name__.endswith("Regressor")


def estimator_for_task(target, task):
    """The estimator class to use for ``task``: a ``...Classifier`` asked to do regression becomes its
    module's ``...Regressor`` (xgboost.XGBClassifier -> XGBRegressor, HistGradientBoostingClassifier ->
    HistGradientBoostingRegressor); anything else is used as named, and a regressor asked to classify
    is refused."""
    module_name, _, class_name = target.rpartition(".")
    if task == "regression" and class_name.endswith("Classifier"):
        sibling = f"{module_name}.{class_name.removesuffix('Classifier')}Regressor"
        try:
            _import(sibling)
            return sibling
        except MlopsError:
            raise MlopsError(f"model._target_ {target} is a classifier and the task is regression: "
                             f"name a regressor in model._target_") from None
    if task in ("binary", "multiclass") and is_regressor(target):
        raise MlopsError(f"model._target_ {target} is a regressor, but the task is {task}: name a classifier, "
                         f"or set features.task=regression")
    return target


def build_estimator(target, params, *, encoding="onehot", task="binary"):
    """Instantiate the scikit-learn-API estimator named by ``target`` (``module.Class``) with ``params``,
    the regressor of its family for ``task="regression"`` (see :func:`estimator_for_task`)."""
    target = estimator_for_task(target, task)
    cls = _import(target)
    params = {key: value for key, value in params.items() if value is not None}
    if encoding == "native":
        if not cls.__module__.startswith("xgboost"):
            raise MlopsError(f"features.encoding=native needs an XGBoost model, not {target}")
        params.setdefault("enable_categorical", True)
    check_counts(params)
    try:
        estimator = cls(**params)
    except TypeError as error:
        raise MlopsError(f"model.params do not fit {target}: {error}") from error
    if hasattr(estimator, "_parameter_constraints"):  # scikit-learn's own parameter constraints, before fitting
        try:
            estimator._validate_params()
        except (ValueError, TypeError) as error:
            raise MlopsError(f"model.params do not fit {target}: {error}") from None
    return estimator


def check_counts(params):
    """Refuse a count parameter (``POSITIVE_COUNTS``) below 1: it would train and register an empty model."""
    for key in POSITIVE_COUNTS:
        value = (params or {}).get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise MlopsError(f"model.params.{key} must be a whole number of at least 1, not {value!r}")


class TrainedModel:
    """A fitted estimator, the ``FeatureContract`` it was trained under, and its decision threshold.

    ``predict_scores(X)``, for what ``contract.encode_batch`` or ``contract.encode_frame`` produced,
    returns per ``contract.task``: binary, the positive-class probability (n,); multiclass, every class's
    probability (n, classes), in ``contract.classes`` order; regression, the predicted values (n,).
    ``predict_labels(scores)`` turns them into predictions in the original label values. ``save(directory)`` writes XGBoost's own format (or skops for
    other scikit-learn estimators) plus ``contract.json``; nothing is pickled.
    """

    def __init__(self, estimator, contract, *, threshold=0.5, trained_as=None):
        self.estimator = estimator
        self.contract = contract
        self.threshold = threshold
        self.trained_as = trained_as or _qualified_name(estimator)  # a booster trained from batches: its estimator class
        self._booster = estimator.get_booster() if hasattr(estimator, "get_booster") else None
        if self._booster is None and type(estimator).__name__ == "Booster":
            self._booster = estimator

    @property
    def flavor(self):
        return "xgboost" if self._booster is not None else "sklearn"

    @property
    def task(self):
        return self.contract.task

    def predict_scores(self, X):
        if self._booster is not None:
            return self._booster.inplace_predict(X)
        if self.task == "regression":
            return self.estimator.predict(X)
        proba = self.estimator.predict_proba(X)
        return proba[:, 1] if self.task == "binary" else proba

    def predict_labels(self, scores):
        """Predictions in the original label values (regression: the values themselves)."""
        import numpy as np

        scores = np.asarray(scores)
        if self.task == "regression":
            return scores
        classes = np.asarray(self.contract.classes)
        if self.task == "multiclass":
            return classes[scores.argmax(axis=1)]
        return classes[(scores >= self.threshold).astype(np.int8)]

    predict_classes = predict_labels  # the name the monitor stage uses

    def save(self, directory):
        directory = Path(directory)
        if self._booster is not None:
            self._booster.save_model(directory / XGBOOST_FILE)
        else:
            import skops.io

            skops.io.dump(self.estimator, directory / SKOPS_FILE)
        info = {"flavor": self.flavor, "threshold": self.threshold, "estimator": self.trained_as}
        (directory / "model_info.json").write_text(json.dumps(info, indent=2))
        (directory / "contract.json").write_text(json.dumps(self.contract.to_dict(), indent=2))

    @classmethod
    def load(cls, directory):
        from mlops_framework.features import FeatureContract

        directory = Path(directory)
        info = json.loads((directory / "model_info.json").read_text())
        contract = FeatureContract.from_dict(json.loads((directory / "contract.json").read_text()))
        if info["flavor"] == "xgboost":
            import xgboost

            estimator = xgboost.Booster()
            estimator.load_model(directory / XGBOOST_FILE)
        else:
            import skops.io

            path = directory / SKOPS_FILE
            types = skops.io.get_untrusted_types(file=path)
            foreign = [name for name in types if not name.startswith(TRUSTED_MODULES)]
            if foreign:
                raise MlopsError(f"{path} holds types outside {', '.join(TRUSTED_MODULES)}; refusing to load: {foreign}")
            estimator = skops.io.load(path, trusted=types)
        return cls(estimator, contract, threshold=info["threshold"], trained_as=info.get("estimator"))


def _qualified_name(obj):
    return f"{type(obj).__module__}.{type(obj).__qualname__}"
