"""The built-in stages: load -> validate -> features -> split -> train -> evaluate -> register -> score.

Each reads the objects it needs from the ``Run`` and leaves its output in ``run.results``:
``frame``, ``data_fingerprint``, ``contract``, ``X``, ``y``, ``splits``, ``model``, ``metrics``,
``version``, ``scored``. An XGBoost model on a large table trains from batches instead
(``mlops_framework.streamed``): ``table`` replaces ``frame``, ``X`` and ``y``; ``row_split`` replaces ``splits``.
"""

import json

from mlops_framework.contracts import LineageSource, PlannedRegistry
from mlops_framework.errors import MlopsError
from mlops_framework.pipeline import Stage


def _need(run, key, stage):
    if key not in run.results:
        raise MlopsError(f"stage {stage!r} needs {key!r}, which no earlier stage of this pipeline produced")
    return run.results[key]


def _need_target(spec):
    if spec.target is None:
        raise MlopsError("name the target column to train on: features.target=COLUMN")
    return spec.target


def load(run):
    from mlops_framework import preflight
    from mlops_framework.contracts import SchemaSource

    settings = _settings(run.source) if run.shared is not None else None  # before the source caches anything
    spec, columns = run.features, run.features.columns
    if columns is not None:  # the id and time columns come along where the data has them
        extra = [c for c in (spec.id, spec.time) if c and c not in columns]
        if extra and isinstance(run.source, SchemaSource):
            available = set(preflight.source_schema(run, run.source))
            extra = [c for c in extra if c in available or (c == spec.time and run.split.order == "time")]
        else:
            extra = [spec.time] if spec.time and run.split.order == "time" and spec.time not in columns else []
        columns = [*columns, *extra]
    from mlops_framework import streamed

    if spec.target is not None and streamed.streams(run):  # the table is read batch by batch, never whole
        run.results.update(table=streamed.Table(run.source, columns, spec.target), **_provenance(run.source))
        return

    def read(fingerprint=None):
        return {"frame": run.source.read(columns=columns), **_provenance(run.source, fingerprint)}

    if settings is None:
        run.results.update(read())
        return
    fingerprint = run.source.fingerprint()
    run.results.update(run.shared.results(run, "load", (settings, fingerprint, columns), lambda: read(fingerprint)))


def _provenance(source, fingerprint=None):
    return {"data_fingerprint": fingerprint or source.fingerprint(),
            "source_lineage": source.lineage() if isinstance(source, LineageSource) else None}


def _settings(source):
    """A source's class and attributes as text (what a sweep's trials compare to share its data), or None
    when it keeps no attributes of its own."""
    try:
        return type(source).__qualname__, repr(sorted(vars(source).items()))
    except TypeError:  # __slots__
        return None


def validate(run):
    spec = run.features
    if "table" in run.results:  # streamed: the rows are checked as the features stage reads them
        _need_target(spec)
        if run.split.order == "time" and not spec.time:
            raise MlopsError("split.order=time needs the time column: set features.time=COLUMN")
        return
    frame = _need(run, "frame", "validate")
    _need_target(spec)
    missing = [column for column in (spec.columns or [spec.target]) if column not in frame.columns]
    if missing:
        raise MlopsError(f"the data lacks required columns: {', '.join(missing)}")
    if len(frame) == 0:
        raise MlopsError("the data has no rows")
    if frame[spec.target].isna().all():
        raise MlopsError(f"target {spec.target} has no values (every row is missing)")
    if run.split.order == "time" and not spec.time:
        raise MlopsError("split.order=time needs the time column: set features.time=COLUMN")


def resolve_task(spec, model_target, target_values, rows=None):
    """The run's task: ``features.task`` unless ``auto``; then regression for a regressor model, else
    what the target's values call for (``features.infer_task``; ``rows``: the rows holding a target when
    ``target_values`` are only its distinct values)."""
    from mlops_framework.features import infer_task
    from mlops_framework.model import is_regressor

    if spec.task != "auto":
        return spec.task
    if is_regressor(model_target):
        return "regression"
    return infer_task(target_values, spec.target, rows)


def features(run):
    if "table" in run.results:
        from mlops_framework import streamed

        _need_target(run.features)
        learned = streamed.learn(run, run.results["table"], resolve_task)
        run.results.update(learned)
        run.summarize("task", _describe_task(learned["contract"]))
        run.summarize("features", _describe_roles(learned["roles"]))
        run.summarize("data", _describe_data(learned["data_report"], learned["rows"]))
        return
    frame = _need(run, "frame", "features")
    spec = run.features
    _need_target(spec)
    data = run.shared.key_holding("load", "frame", frame) if run.shared else None
    if data is None:
        made = _features(run, frame)
    else:
        made = run.shared.results(run, "features", (data, repr(spec), run.model._target_),
                                  lambda: _features(run, frame))
    run.results.update(made)
    run.summarize("task", _describe_task(made["contract"]))
    run.summarize("features", _describe_roles(made["roles"]))
    run.summarize("data", _describe_data(made["data_report"], len(made["frame"])))


def _features(run, frame):
    """The features stage's results for ``frame``: the rows kept, the contract, the roles, X, y, the data report."""
    from mlops_framework.features import FeatureContract, rare_classes

    spec = run.features
    roles = spec.roles(frame)
    rows = len(frame)
    no_target = frame[spec.target].isna()
    infinite = _infinite(frame[spec.target])
    if no_target.any() or infinite.any():
        frame = frame.loc[~(no_target | infinite)]
    task = resolve_task(spec, run.model._target_, frame[spec.target])
    rare = rare_classes(frame[spec.target], task)
    if rare:
        frame = _without_rare_classes(frame, spec.target, rare)
    contract = FeatureContract.fit(
        frame, numeric=roles.numeric, categorical=roles.categorical, target=spec.target,
        encoding=spec.encoding, unseen=spec.unseen, task=task, positive_class=spec.positive_class,
    )
    nulls = {column: int(count) for column, count in frame[contract.input_columns].isna().sum().items() if count}
    return dict(
        frame=frame, contract=contract, roles=roles, X=contract.encode_frame(frame),
        y=contract.encode_target(frame[spec.target]),
        data_report={"rows_read": rows, "rows_dropped": {
                         "missing target": int(no_target.sum()), "infinite target": int(infinite.sum()),
                         **_rare_rows(rare, rows - int(no_target.sum()) - int(infinite.sum()) - len(frame))},
                     "nulls": nulls, "nulls_handling": "numeric: missing (NaN) for the model; categorical: no category"},
    )


def _infinite(target):
    """Which rows of a numeric target are infinite (R's ``Inf``: a censored time); no model learns from them."""
    import numpy as np
    import pandas as pd

    if not pd.api.types.is_float_dtype(target.dtype):
        return pd.Series(False, index=target.index)
    return pd.Series(np.isinf(target.to_numpy()), index=target.index)


def _without_rare_classes(frame, target, rare):
    """``frame`` without the rows of the ``rare`` classes; refused when fewer than two classes are left."""
    from mlops_framework.features import MIN_CLASS_ROWS

    kept = frame.loc[~frame[target].isin(rare)]
    left = kept[target].unique().tolist()
    if len(left) < 2:
        counts = frame[target].value_counts()
        shown = ", ".join(f"{str(value)[:40]} ({count:,} row{'s' if count > 1 else ''})" for value, count in counts.head(10).items())
        raise MlopsError(f"target column {target!r} has {len(left)} class(es) with {MIN_CLASS_ROWS} rows or more, "
                         f"where a classifier needs two: {shown}{', ...' if len(counts) > 10 else ''}"
                         f"{': a different value on every row (an id or free text?)' if counts.max() == 1 else ''}")
    return kept


def _rare_rows(rare, count):
    """The data report's entry for the rows of classes too rare to learn (none: no entry)."""
    from mlops_framework.features import MIN_CLASS_ROWS

    if not rare:
        return {}
    shown = ", ".join(map(str, rare[:10])) + (f" and {len(rare) - 10} more" if len(rare) > 10 else "")
    return {f"class(es) with fewer than {MIN_CLASS_ROWS} rows: {shown}": count}


def _describe_task(contract):
    if contract.task == "regression":
        return f"regression of {contract.target}"
    shown = ", ".join(map(str, contract.classes[:10])) + (", ..." if len(contract.classes) > 10 else "")
    positive = f"; scores the probability of {contract.classes[1]}" if contract.task == "binary" else ""
    return f"{contract.task} {contract.target}: {len(contract.classes)} classes ({shown}){positive}"


def _describe_roles(roles):
    parts = [f"numeric {', '.join(roles.numeric) or '-'}", f"categorical {', '.join(roles.categorical) or '-'}"]
    parts += [f"{key} {getattr(roles, key)}" for key in ("id", "time") if getattr(roles, key)]
    left_out = [column for column in (roles.skipped or {}) if column not in (roles.id, roles.time)]
    if left_out:
        parts.append("not features " + ", ".join(f"{c} ({roles.skipped[c]})" for c in left_out))
    return "; ".join(parts)


def _describe_data(report, kept):
    dropped = sum(report["rows_dropped"].values())
    line = f"{report['rows_read']:,} rows read, {kept:,} used"
    if dropped:
        line += "; dropped " + ", ".join(f"{n:,} ({why})" for why, n in report["rows_dropped"].items() if n)
    if report["nulls"]:
        line += "; nulls left missing for the model: " + ", ".join(f"{c} {n:,}" for c, n in report["nulls"].items())
    else:
        line += "; no nulls in the features"
    return line


def split(run):
    if "table" in run.results:
        from mlops_framework import streamed

        run.results["row_split"] = streamed.row_split(run, _need(run, "contract", "split"), run.results["table"])
        return
    X = _need(run, "X", "split")
    features = run.shared.key_holding("features", "X", X) if run.shared else None
    if features is None:
        made = _split(run, X, run.results["y"])
    else:
        made = run.shared.results(run, "split", (features, repr(run.split), run.features.time),
                                  lambda: _split(run, X, run.results["y"]))
    run.results["splits"] = made["splits"]
    if made["note"]:
        run.summarize("split", made["note"])


def _split(run, X, y):
    """``{"splits": {"train"|"validation"|"holdout": (X, y)}, "note": why the split is not stratified, or None}``."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    spec = run.split
    if spec.order == "time":
        time = run.features.time
        if not time:
            raise MlopsError("split.order=time needs the time column: set features.time=COLUMN")
        order = np.argsort(run.results["frame"].loc[X.index, time].to_numpy(), kind="stable")
        n = len(order)
        n_holdout = int(np.ceil(n * spec.holdout))
        n_validation = int(np.ceil((n - n_holdout) * spec.validation))
        if n - n_holdout - n_validation < 1:
            raise MlopsError(f"cannot split {n} rows by time into train/validation/holdout")
        parts = np.split(order, [n - n_holdout - n_validation, n - n_holdout])
        return {"splits": {name: (X.iloc[rows], y[rows]) for name, rows in zip(("train", "validation", "holdout"), parts)},
                "note": None}
    classify = run.results["contract"].task != "regression"
    notes = []

    def two_way(X_, y_, size):
        strata = y_ if spec.stratify and classify else None
        try:
            return train_test_split(X_, y_, test_size=size, random_state=spec.seed, stratify=strata)
        except ValueError as error:
            if strata is not None:  # a class too rare to stratify: split at random
                try:
                    notes.append(f"not stratified: {error}")
                    return train_test_split(X_, y_, test_size=size, random_state=spec.seed)
                except ValueError:
                    pass
            raise MlopsError(f"cannot split {len(y):,} rows into train/validation/holdout ({_fractions(spec)}): "
                             f"{error}") from error

    X_rest, X_holdout, y_rest, y_holdout = two_way(X, y, spec.holdout)
    X_train, X_val, y_train, y_val = two_way(X_rest, y_rest, spec.validation)
    return {"splits": {"train": (X_train, y_train), "validation": (X_val, y_val), "holdout": (X_holdout, y_holdout)},
            "note": notes[-1] if notes else None}


def train(run):
    from mlops_framework.model import TrainedModel

    contract = _need(run, "contract", "train")
    estimator = run.model.build(run.features.encoding, task=contract.task)
    if "table" in run.results:
        from mlops_framework import streamed

        split = _need(run, "row_split", "train")
        paged, estimate = streamed.pages_to_disk(run.split, contract, run.results["rows"],
                                                 run.results["data_report"]["nulls"])
        limit = run.split.external_memory_from_gib
        run.summarize("quantized matrix", f"about {estimate / streamed.GIB:.2f} GiB, "
                      f"{'paged to disk' if paged else 'in memory'} (split.external_memory_from_gib="
                      f"{'null' if limit is None else f'{limit:g}'})")
        fit = lambda: streamed.fit(run, estimator, contract, run.results["table"], split, paged)  # noqa: E731
    else:
        X_train, y_train = _need(run, "splits", "train")["train"]
        _refuse_infinite(X_train)
        if contract.task != "regression" and len(set(y_train.tolist())) < len(contract.classes):
            missing = [contract.classes[i] for i in range(len(contract.classes)) if i not in set(y_train.tolist())]
            raise MlopsError(f"the training split has no rows of class(es) {missing!r}: too few rows of them to learn")
        fit = lambda: estimator.fit(X_train, y_train)  # noqa: E731
    progress = _BoostingProgress.attach(estimator) if _on_a_terminal() else None
    try:
        fitted = fit()
    except ValueError as error:  # XGBoostError too; its text carries a native stack: keep the first line
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise MlopsError(f"training {run.model._target_} failed: {first}") from None
    finally:
        if progress:
            progress.detach(estimator)
    run.results["model"] = TrainedModel(fitted, contract, threshold=run.model.threshold,
                                        trained_as=f"{type(estimator).__module__}.{type(estimator).__qualname__}")


def _paging(spec):
    limit = spec.external_memory_from_gib
    return "never paged to disk (split.external_memory_from_gib=null)" if limit is None else \
        f"paged to disk from {limit:g} GiB (split.external_memory_from_gib)"


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
    from mlops_framework.metrics import evaluate as task_metrics

    model = _need(run, "model", "evaluate")
    contract = model.contract
    if "table" in run.results:
        from mlops_framework import streamed

        scored = streamed.holdout_scores(model, run.results["table"], _need(run, "row_split", "evaluate"))
    else:
        scored = {}
        for part in ("validation", "holdout"):
            X, y = run.results["splits"][part]
            scored[part] = (y, model.predict_scores(X))
    report = {}
    for part in ("validation", "holdout"):
        y, scores = scored[part]
        report[part] = task_metrics(contract.task, y, scores, threshold=model.threshold,
                                    classes=contract.classes or None)
        report[part]["task"] = contract.task
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
    from mlops_framework.model import estimator_for_task
    from mlops_framework.scoring import prediction_columns

    model = _need(run, "model", "register")
    reg = run.registration
    frame = run.results["frame"] if "frame" in run.results else _need(run, "sample", "register")
    input_columns = model.contract.input_columns
    record = run.provenance.lineage(run.results.get("data_fingerprint"), run.results.get("source_lineage"))
    inputs_and_outputs = signature(frame, input_columns)
    inputs_and_outputs["outputs"] = [{"name": name, "type": kind} for name, kind in prediction_columns(model.contract)]
    run.results["version"] = run.registry.log_model(
        model,
        model_name=reg.model_name,
        version_name=reg.version_name,
        comment=reg.comment,
        metrics=run.results.get("metrics"),
        metadata={"estimator": estimator_for_task(run.model._target_, model.contract.task), "params": run.model.params,
                  "training_rows": run.results.get("rows", len(frame)), "task": model.contract.task,
                  "classes": model.contract.to_dict()["classes"]},
        tags={key: str(value) for key, value in reg.tags.items()},
        sample_input=frame[input_columns].head(10),
        signature=inputs_and_outputs,
        lineage=record,
    )


def planned_registration(run) -> list[str]:
    """The registry's own operations for this run's register stage, when it can plan them (else none)."""
    if not isinstance(run.registry, PlannedRegistry):
        return []
    reg = run.registration
    return run.registry.plan_log_model(
        model_name=reg.model_name, version_name=reg.version_name, comment=reg.comment, tags=reg.tags,
        flavor="xgboost" if run.model._target_.startswith("xgboost.") else "sklearn", task=run.features.task)


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
    if result.unseen:
        run.summarize("unseen", "categories not seen in training, scored as missing: "
                      + ", ".join(f"{column} {count:,} rows" for column, count in sorted(result.unseen.items())))


def _describe_score(run):
    version = run.scoring.version or ("the version this run registers" if "register" in [s.name for s in run.stages] else "the latest version")
    source = run.scoring.source or run.source
    return (f"score {source.describe()} with {run.registration.model_name} {version} "
            f"into {run.scoring.sink.describe()}")


def _describe_validate(run):
    spec = run.features
    columns = f"columns {', '.join(spec.columns)}" if spec.columns else f"the target column {spec.target or '(features.target unset)'}"
    return f"check {columns} and rows"


def _describe_features(run):
    """The roles and task, inferred from a sample of the data when the config leaves them open."""
    spec = run.features
    contract = f"learn the {spec.encoding} feature contract (unseen categories: {spec.unseen})"
    if not spec.inferred and spec.task != "auto":
        return f"{contract}; task {spec.task}; roles as configured: numeric {', '.join(spec.numeric) or '-'}; " \
               f"categorical {', '.join(spec.categorical) or '-'}"
    if (run.config.get("data") or {}).get("kind") not in PLAN_SAMPLED:  # a warehouse query is not planning
        return f"{contract}; roles and task inferred from the data at run time"
    try:
        _need_target(spec)
        from mlops_framework.features import to_frame

        sample = to_frame(next(iter(run.source.batches(batch_size=PLAN_SAMPLE_ROWS))))
        roles = spec.roles(sample)
        if spec.target not in sample.columns:
            raise MlopsError(f"no column {spec.target!r}")
        task = resolve_task(spec, run.model._target_, sample[spec.target])
    except MlopsError as error:
        return f"{contract}; roles and task inferred from the data at run time (now: {error})"
    how = f"inferred from the first {PLAN_SAMPLE_ROWS:,} rows" if spec.inferred or spec.task == "auto" else "as configured"
    return f"{contract}; task {task}; roles {how}: {_describe_roles(roles)}"


PLAN_SAMPLE_ROWS = 10_000
PLAN_SAMPLED = ("csv", "parquet", "duckdb", "synthetic")  # local sources mlops plan samples to show the roles


def _describe_split(run):
    spec = run.split
    if spec.order == "time":
        line = (f"by time ({run.features.time or 'features.time unset'}): train/validation/holdout "
                f"{_fractions(spec)}, the latest rows held out")
        how = "the time column read once to find where validation and holdout start"
    else:
        stratified = "stratified (classification) " if spec.stratify else ""
        line = f"{stratified}train/validation/holdout {_fractions(spec)}, seed {spec.seed}"
        how = "split row by row within each class"
    if spec.stream_from_rows is not None:
        line += (f"; an XGBoost model on {spec.stream_from_rows:,} rows or more trains from batches, {how}, its "
                 f"quantized matrix {_paging(spec)}")
    return line


BUILTIN_STAGES = (
    Stage("load", load, lambda run: f"read {run.source.describe()}"),
    Stage("validate", validate, _describe_validate),
    Stage("features", features, _describe_features),
    Stage("split", split, _describe_split),
    Stage("train", train, lambda run: f"fit {run.model.describe()} (its regressor for a regression task)"),
    Stage("evaluate", evaluate, lambda run: "per task on validation and holdout: accuracy, macro precision/recall/F1, "
          "ROC AUC, confusion matrix (multiclass adds weighted scores, log loss); RMSE, MAE, R2, residuals (regression)"),
    Stage("register", register, lambda run: f"log {run.registration.model_name} {run.registration.version_name or 'next vN'} in {run.registry.describe()} with metrics, task, tags {sorted(run.registration.tags)}" + "".join(f"\n       {line}" for line in planned_registration(run))),
    Stage("score", score, _describe_score),
)


def _fractions(spec):
    holdout = spec.holdout
    validation = (1 - holdout) * spec.validation
    return f"{1 - holdout - validation:.0%}/{validation:.0%}/{holdout:.0%}"
