"""The built-in stages: load -> validate -> features -> split -> train -> evaluate -> register -> score.

Each reads the objects it needs from the ``Run`` and leaves its output in ``run.results``:
``frame``, ``data_fingerprint``, ``contract``, ``X``, ``y``, ``splits``, ``model``, ``metrics``,
``version``, ``scored``.
"""

import json

from mlops_framework.contracts import LineageSource
from mlops_framework.errors import MlopsError
from mlops_framework.pipeline import Stage


def _need(run, key, stage):
    if key not in run.results:
        raise MlopsError(f"stage {stage!r} needs {key!r}, which no earlier stage of this pipeline produced")
    return run.results[key]


def load(run):
    run.results["frame"] = run.source.read(columns=run.features.columns)
    run.results["data_fingerprint"] = run.source.fingerprint()
    run.results["source_lineage"] = run.source.lineage() if isinstance(run.source, LineageSource) else None


def validate(run):
    frame = _need(run, "frame", "validate")
    spec = run.features
    missing = [column for column in spec.columns if column not in frame.columns]
    if missing:
        raise MlopsError(f"the data lacks required columns: {', '.join(missing)}")
    if len(frame) == 0:
        raise MlopsError("the data has no rows")
    classes = frame[spec.target].dropna().unique()
    if len(classes) != 2:
        shown = ", ".join(map(str, sorted(classes)[:10])) or "none"
        raise MlopsError(
            f"target {spec.target} must have exactly two classes for a binary classifier; found {len(classes)}: {shown}"
        )
    if frame[spec.target].isna().any():
        raise MlopsError(f"target {spec.target} has {int(frame[spec.target].isna().sum())} missing values")


def features(run):
    from mlops_framework.features import FeatureContract

    frame = _need(run, "frame", "features")
    spec = run.features
    contract = FeatureContract.fit(
        frame, numeric=spec.numeric, categorical=spec.categorical, target=spec.target,
        encoding=spec.encoding, unseen=spec.unseen,
    )
    run.results.update(contract=contract, X=contract.encode_frame(frame), y=contract.encode_target(frame[spec.target]))


def split(run):
    from sklearn.model_selection import train_test_split

    X, y = _need(run, "X", "split"), run.results["y"]
    spec = run.split
    try:
        X_rest, X_holdout, y_rest, y_holdout = train_test_split(
            X, y, test_size=spec.holdout, random_state=spec.seed, stratify=y if spec.stratify else None
        )
        X_train, X_val, y_train, y_val = train_test_split(
            X_rest, y_rest, test_size=spec.validation, random_state=spec.seed, stratify=y_rest if spec.stratify else None
        )
    except ValueError as error:
        raise MlopsError(f"cannot split {len(y)} rows: {error}") from error
    run.results["splits"] = {
        "train": (X_train, y_train), "validation": (X_val, y_val), "holdout": (X_holdout, y_holdout)
    }


def train(run):
    from mlops_framework.model import TrainedModel

    splits = _need(run, "splits", "train")
    estimator = run.model.build(run.features.encoding)
    X_train, y_train = splits["train"]
    _refuse_infinite(X_train)
    progress = _BoostingProgress.attach(estimator) if _on_a_terminal() else None
    try:
        estimator.fit(X_train, y_train)
    except ValueError as error:  # XGBoostError too; its text carries a native stack: keep the first line
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise MlopsError(f"training {run.model._target_} failed: {first}") from None
    finally:
        if progress:
            progress.detach(estimator)
    run.results["model"] = TrainedModel(estimator, run.results["contract"], threshold=run.model.threshold)


def _on_a_terminal():
    """Progress is drawn for a person at a terminal: stdout a TTY, and not a trial of a sweep (whose workers
    share the terminal)."""
    import sys

    if not sys.stdout.isatty():
        return False
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return not (HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN)


class _BoostingProgress:
    """A rich progress bar of an XGBoost model's boosting rounds, with the time left (an XGBoost callback)."""

    @classmethod
    def attach(cls, estimator):
        """Attach to ``estimator`` when it is an XGBoost model; None for any other."""
        try:
            from xgboost import XGBModel
            from xgboost.callback import TrainingCallback
        except ImportError:
            return None
        if not isinstance(estimator, XGBModel):
            return None
        rounds = estimator.get_params().get("n_estimators") or 100

        class Callback(TrainingCallback):
            def before_training(self, model):
                from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                           TimeRemainingColumn)

                self.bar = Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(),
                                    TextColumn("boosting rounds"), TimeElapsedColumn(), TextColumn("ETA"),
                                    TimeRemainingColumn())
                self.task = self.bar.add_task("training", total=rounds)
                self.bar.start()
                return model

            def after_iteration(self, model, epoch, evals_log):
                self.bar.advance(self.task)
                return False

            def after_training(self, model):
                self.bar.stop()
                return model

        progress = cls()
        progress.previous = estimator.get_params().get("callbacks")
        estimator.set_params(callbacks=[*(progress.previous or []), Callback()])
        return progress

    def detach(self, estimator):
        estimator.set_params(callbacks=self.previous)


def _refuse_infinite(X):
    import numpy as np

    numeric = X.select_dtypes("number") if hasattr(X, "select_dtypes") else None
    if numeric is None or numeric.empty:
        return
    infinite = [str(c) for c in numeric.columns if np.isinf(numeric[c].to_numpy(dtype=float)).any()]
    if infinite:
        raise MlopsError(f"training features hold infinite values (inf) in {', '.join(infinite)}; "
                         f"replace or drop them in the data")


def classification_metrics(y_true, scores, threshold):
    """Accuracy, macro precision/recall/F1, ROC AUC, confusion matrix and report for 0/1 labels."""
    import numpy as np
    from sklearn import metrics

    predicted = (np.asarray(scores) >= threshold).astype(int)
    both_classes = len(np.unique(y_true)) == 2
    return {
        "accuracy": float(metrics.accuracy_score(y_true, predicted)),
        "precision": float(metrics.precision_score(y_true, predicted, average="macro", zero_division=0)),
        "recall": float(metrics.recall_score(y_true, predicted, average="macro", zero_division=0)),
        "f1": float(metrics.f1_score(y_true, predicted, average="macro", zero_division=0)),
        "roc_auc": float(metrics.roc_auc_score(y_true, scores)) if both_classes else None,
        "rows": int(len(y_true)),
        "confusion_matrix": metrics.confusion_matrix(y_true, predicted, labels=[0, 1]).tolist(),
        "classification_report": metrics.classification_report(
            y_true, predicted, labels=[0, 1], output_dict=True, zero_division=0
        ),
    }


def evaluate(run):
    model = _need(run, "model", "evaluate")
    report = {}
    for part in ("validation", "holdout"):
        X, y = run.results["splits"][part]
        report[part] = classification_metrics(y, model.predict_scores(X), model.threshold)
    run.results["evaluation"] = report
    run.results["metrics"] = {
        f"{part}_{name}": value
        for part, values in report.items()
        for name, value in values.items()
        if isinstance(value, float)
    }
    if run.output_dir:
        (run.output_dir / "evaluation.json").write_text(json.dumps(report, indent=2))


def register(run):
    from mlops_framework.lineage import signature

    model = _need(run, "model", "register")
    reg = run.registration
    frame = run.results["frame"]
    input_columns = model.contract.input_columns
    record = run.provenance.lineage(run.results.get("data_fingerprint"), run.results.get("source_lineage"))
    run.results["version"] = run.registry.log_model(
        model,
        model_name=reg.model_name,
        version_name=reg.version_name,
        comment=reg.comment,
        metrics=run.results.get("metrics"),
        metadata={"estimator": run.model._target_, "params": run.model.params, "training_rows": len(frame)},
        tags={key: str(value) for key, value in reg.tags.items()},
        sample_input=frame[input_columns].head(10),
        signature=signature(frame, input_columns),
        lineage=record,
    )


def scoring_version(run):
    """The version (or alias) a score stage uses: ``scoring.version``, else this run's, else the latest."""
    if run.scoring.version:
        return run.scoring.version
    if "version" in run.results:
        return run.results["version"]["version_name"]
    versions = run.registry.versions(run.registration.model_name)
    if not versions:
        raise MlopsError(f"model {run.registration.model_name} has no versions to score with")
    return versions[-1]["version_name"]


def score(run):
    from mlops_framework.scoring import score_to_sink, trace_columns

    name = run.registration.model_name
    version = scoring_version(run)
    if version != run.results.get("version", {}).get("version_name"):  # an alias may move while we score
        version = run.registry.get_version(name, version)["version_name"]
    model = run.registry.load_model(name, version)
    source = run.scoring.source or run.source
    result = score_to_sink(
        model, source.batches(batch_size=run.scoring.batch_size), run.scoring.sink,
        threshold=model.threshold, total_rows=source.count_rows(),
        stamp=trace_columns(name, version, run.output_dir.name if run.output_dir else None),
    )
    run.results["scored"] = {"rows": result.rows, "seconds": result.seconds, "destination": result.destination,
                             "version": version, "replaced": result.replaced}
    if result.replaced:
        run.summarize("replaced", result.replaced)


def _describe_score(run):
    version = run.scoring.version or ("the version this run registers" if "register" in [s.name for s in run.stages] else "the latest version")
    source = run.scoring.source or run.source
    return (f"score {source.describe()} with {run.registration.model_name} {version} "
            f"into {run.scoring.sink.describe()}")


BUILTIN_STAGES = (
    Stage("load", load, lambda run: f"read {run.source.describe()}"),
    Stage("validate", validate, lambda run: f"check columns {', '.join(run.features.columns)}, rows and two target classes"),
    Stage("features", features, lambda run: f"learn the {run.features.encoding} feature contract (unseen categories: {run.features.unseen})"),
    Stage("split", split, lambda run: f"stratified train/validation/holdout {_fractions(run.split)}, seed {run.split.seed}"),
    Stage("train", train, lambda run: f"fit {run.model.describe()}"),
    Stage("evaluate", evaluate, lambda run: "accuracy, macro precision/recall/F1, ROC AUC, confusion matrix on validation and holdout"),
    Stage("register", register, lambda run: f"log {run.registration.model_name} {run.registration.version_name or 'next vN'} in {run.registry.describe()} with metrics, tags {sorted(run.registration.tags)}"),
    Stage("score", score, _describe_score),
)


def _fractions(spec):
    holdout = spec.holdout
    validation = (1 - holdout) * spec.validation
    return f"{1 - holdout - validation:.0%}/{validation:.0%}/{holdout:.0%}"
