"""The model-lifecycle stages: monitor -> retrain -> explain -> promote -> report.

They follow the built-in stages' rules (``stages.py``): each reads objects from the ``Run`` and leaves
its output in ``run.results``; a pipeline may repeat any stage, and later stages see what earlier ones
left. Results: ``monitor`` / ``monitor_runs`` / ``alerts`` (monitor), the training keys of
``stages.py`` for the new data (retrain), ``explanation`` (explain), ``promotions`` (promote),
``report`` (report). Heavy libraries load inside the functions: ``mlops plan`` imports this module.

The promotion gate (``conf/promotion/``): the version registered last in this run (the candidate) and
the alias's current holder (the champion, loaded from the registry) are scored on the *same* holdout,
the candidate's. The candidate takes the alias only when its metric is >= the champion's +
``min_improvement`` (and >= ``min_value``, and, with ``block_on_drift_alert``, no drift alert fired in
this run). Both outcomes are appended to the registry's history (``mlops registry history MODEL``)
with the metrics and the hash of the resolved config; a refusal has ``event: refused``.
"""

from __future__ import annotations

import json

from mlops_framework.alerts import DRIFT
from mlops_framework.contracts import AuditedRegistry, PlannedRegistry
from mlops_framework.errors import MlopsError
from mlops_framework.pipeline import PromotionSpec, Stage
from mlops_framework.stages import _need


# ---------------------------------------------------------------------- monitor
def monitor(run):
    from mlops_framework.monitoring import run_monitor

    run_monitor(run)


def _describe_monitor(run):
    spec = run.monitor
    if spec is None:
        return "needs the monitor config group (monitor=default)"
    where = spec.source.describe() if spec.source else f"{run.scoring.sink.describe()} read back"
    baseline = (spec.baseline_source.describe() if spec.baseline_source
                else "the training holdout" if spec.baseline == "holdout" else f"rows where {spec.baseline}")
    rules = ", ".join(rule.name for rule in run.alerts.rules) if run.alerts and run.alerts.rules else "none"
    notifiers = ", ".join(run.alerts.notifiers) if run.alerts and run.alerts.notifiers else "none"
    labels = f", labels joined from {spec.actuals.describe()}" if spec.actuals is not None else ""
    return (f"performance and drift of {where} per version and {spec.window} of {spec.timestamp}{labels}, in SQL, "
            f"windows changed since the last run only, against {baseline} (recorded once per version) -> "
            f"{spec.performance_table}, {spec.drift_table} via {spec.sinks['performance'].describe() if spec.sinks else spec.warehouse}; "
            f"alert rules: {rules}; notifiers: {notifiers}")


# ---------------------------------------------------------------------- retrain
def retrain(run):
    """load -> validate -> features -> split -> train -> evaluate on the retrain source (new data)."""
    from dataclasses import replace

    from mlops_framework import stages

    source = run.retrain.source if run.retrain and run.retrain.source else run.source
    run.results.pop("version", None)  # what promote promotes is registered after this
    sub = replace(run, source=source, output_dir=None)  # shares run.results
    for step in (stages.load, stages.validate, stages.features, stages.split, stages.train, stages.evaluate):
        step(sub)
    run.results["retrained"] = {"source": source.describe(), "rows": len(run.results["frame"])}
    if run.output_dir:
        (run.output_dir / "retrain_evaluation.json").write_text(json.dumps(run.results["evaluation"], indent=2))


def _describe_retrain(run):
    source = run.retrain.source if run.retrain and run.retrain.source else run.source
    return f"read {source.describe()}, then features, split, fit {run.model.describe()} and evaluate: the challenger"


# ---------------------------------------------------------------------- explain
def _booster(model):
    estimator = model.estimator
    if hasattr(estimator, "get_booster"):
        return estimator.get_booster()
    if type(estimator).__name__ == "Booster":
        return estimator
    return None


def contributions(model, X):
    """XGBoost SHAP values: ``(contribs, feature_names)``, one row per row of ``X``, the last column the
    bias; each row sums to the model's margin (log-odds)."""
    import xgboost

    booster = _booster(model)
    if booster is None:
        raise MlopsError(f"explain needs an XGBoost model, not {type(model.estimator).__name__}")
    native = model.contract.encoding == "native"
    matrix = xgboost.DMatrix(X, enable_categorical=native, feature_names=list(model.contract.feature_names))
    return booster.predict(matrix, pred_contribs=True), list(model.contract.feature_names)


def raw_feature_of(contract) -> list[str]:
    """For each encoded feature, the raw input column it comes from (dummies -> their column)."""
    if contract.encoding == "native":
        return [*contract.numeric, *contract.categorical]
    return [*contract.numeric, *(column for column, vocab in contract.categorical.items() for _ in vocab)]


def explain(run):
    """Per-row SHAP contributions of the last trained model on (up to ``explain_rows`` of) its holdout."""
    import numpy as np
    import pandas as pd

    model = _need(run, "model", "explain")
    X, _ = _need(run, "splits", "explain")["holdout"]
    rows = run.retrain.explain_rows if run.retrain else 1000
    X = X.iloc[:rows]
    if _booster(model) is None:
        run.summarize("explained", f"skipped: {type(model.estimator).__name__} is not XGBoost")
        return
    contribs, names = contributions(model, X)
    if contribs.ndim == 3:  # multiclass: each row's contributions towards the class it predicts
        predicted = contribs.sum(axis=2).argmax(axis=1)
        contribs = contribs[np.arange(len(predicted)), predicted, :]
    raw_of = raw_feature_of(model.contract)
    raw_columns = list(dict.fromkeys(raw_of))
    per_raw = np.zeros((len(X), len(raw_columns)))
    for j, column in enumerate(raw_of):
        per_raw[:, raw_columns.index(column)] += contribs[:, j]
    margin = contribs.sum(axis=1)
    frame = run.results["frame"].loc[X.index, model.contract.input_columns].reset_index(drop=True)
    version = (run.results.get("version") or {}).get("version_name")
    table = frame.copy()
    table.insert(0, "MODEL_VERSION", version)
    table.insert(0, "MODEL_NAME", run.registration.model_name)
    table.insert(0, "RUN_ID", run.output_dir.name if run.output_dir else None)
    table["SCORE"] = 1.0 / (1.0 + np.exp(-margin)) if model.contract.task == "binary" else margin
    table["BIAS"] = contribs[:, -1]
    for k, column in enumerate(raw_columns):
        table[f"CONTRIB_{column}"] = per_raw[:, k]
    table["TOP_FEATURE"] = [raw_columns[i] for i in np.abs(per_raw).argmax(axis=1)]
    explanation = {
        "version": version, "rows": len(X),
        "global": dict(sorted(zip(raw_columns, np.abs(per_raw).mean(axis=0).tolist()), key=lambda kv: -kv[1])),
        "global_encoded": dict(sorted(zip(names, np.abs(contribs[:, :-1]).mean(axis=0).tolist()),
                                      key=lambda kv: -kv[1])[:20]),
        "bias": float(contribs[0, -1]) if len(X) else None,
    }
    where = []
    if run.output_dir:
        path = run.output_dir / "explanations.parquet"
        table.to_parquet(path, index=False)
        (run.output_dir / "explanation.json").write_text(json.dumps(explanation, indent=2))
        where.append(str(path))
    if run.retrain and run.retrain.sink is not None:
        import pyarrow as pa

        arrow = pa.Table.from_pandas(pd.DataFrame(table), preserve_index=False)
        arrow = arrow.cast(pa.schema([pa.field(f.name, pa.string()) if pa.types.is_null(f.type) else f
                                      for f in arrow.schema]))  # declared types, never DuckDB's "NULL"
        with run.retrain.sink.open() as writer:
            writer.write(arrow)
        where.append(run.retrain.sink.describe())
    explanation["written_to"] = where
    run.results["explanation"] = explanation
    top = ", ".join(f"{k}={v:.3f}" for k, v in list(explanation["global"].items())[:3])
    run.summarize("explained", f"{len(X):,} holdout rows, mean |SHAP|: {top}")


def _describe_explain(run):
    rows = run.retrain.explain_rows if run.retrain else 1000
    table = f" and {run.retrain.sink.describe()}" if run.retrain and run.retrain.sink is not None else ""
    return f"SHAP contributions (pred_contribs) of the model on {rows:,} holdout rows -> explanations.parquet{table}"


# ---------------------------------------------------------------------- promote
def _predictions(model, frame, X):
    """(0/1 truth, 0/1 predictions, scores) of ``model`` on the rows ``X`` of ``frame``, re-encoded from
    the raw rows with ``model``'s own contract."""
    import numpy as np

    encoded = model.contract.encode_frame(frame.loc[X.index])
    truth = np.asarray(model.contract.encode_target(frame.loc[X.index, model.contract.target]))
    scores = np.asarray(model.predict_scores(encoded), dtype=float)
    return truth, (scores >= model.threshold).astype(int), scores


def metric_function(name: str):
    """``metric(truth, predictions, scores) -> float`` for a classification metric name."""
    from mlops_framework.monitoring import classification_summary, roc_auc

    if name == "roc_auc":
        return lambda truth, predicted, scores: roc_auc(truth, scores)
    return lambda truth, predicted, scores: classification_summary(truth, predicted)[name]


def holdout_metrics(model, frame, X, y) -> dict:
    """The task's metrics (``metrics.evaluate``) of ``model`` on the rows ``X`` (encoded by the candidate)
    of ``frame``: re-encoded from the raw rows with ``model``'s own contract."""
    from mlops_framework.metrics import evaluate, metric_names

    contract = model.contract
    encoded = contract.encode_frame(frame.loc[X.index])
    truth = contract.encode_target(frame.loc[X.index, contract.target])
    result = evaluate(contract.task, truth, model.predict_scores(encoded), threshold=model.threshold,
                      classes=contract.classes or None)
    return {key: result.get(key) for key in metric_names(contract.task)}


def paired_bootstrap(metric, truth, champion, challenger, *, higher_is_better: bool = True,
                     resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> dict:
    """The improvement of ``challenger`` over ``champion`` on the same rows, with a paired bootstrap
    interval: rows are drawn with replacement ``resamples`` times, both are measured on each draw, and
    the interval is the central ``confidence`` share of the differences.

    ``metric(truth, *predictions) -> float``; ``champion`` / ``challenger`` are tuples of arrays with one
    entry per row of ``truth`` (e.g. ``(labels, scores)``). ``improvement`` is challenger - champion,
    or champion - challenger when lower is better (an error): positive always means better."""
    import numpy as np

    truth = np.asarray(truth)
    n = len(truth)
    if n == 0:
        raise MlopsError("the promotion gate has no holdout rows to compare on")
    sign = 1.0 if higher_is_better else -1.0

    def difference(index):
        new = metric(truth[index], *(np.asarray(a)[index] for a in challenger))
        old = metric(truth[index], *(np.asarray(a)[index] for a in champion))
        if new is None or old is None:
            return np.nan
        return sign * (new - old)

    observed = difference(np.arange(n))
    rng = np.random.default_rng(seed)
    draws = np.array([difference(rng.integers(0, n, n)) for _ in range(resamples)])
    draws = draws[~np.isnan(draws)]
    tail = (1 - confidence) / 2
    lower, upper = (np.quantile(draws, [tail, 1 - tail]) if draws.size else (np.nan, np.nan))
    return {"test": "paired bootstrap", "improvement": float(observed), "lower": float(lower), "upper": float(upper),
            "confidence": confidence, "resamples": resamples, "rows": n}


def mcnemar(truth, champion_predictions, challenger_predictions) -> dict:
    """McNemar's exact test on the rows where exactly one of the two is right: ``p_value`` of the
    challenger being right more often by chance (one-sided binomial)."""
    import numpy as np
    from scipy.stats import binomtest

    truth = np.asarray(truth)
    old_right = np.asarray(champion_predictions) == truth
    new_right = np.asarray(challenger_predictions) == truth
    only_new, only_old = int((new_right & ~old_right).sum()), int((old_right & ~new_right).sum())
    p = binomtest(only_new, only_new + only_old, 0.5, alternative="greater").pvalue if only_new + only_old else 1.0
    return {"test": "mcnemar", "only_challenger_right": only_new, "only_champion_right": only_old,
            "p_value": float(p), "rows": len(truth)}


def compare(run, champion_version, spec: PromotionSpec | None = None):
    """Candidate (this run's model) and champion (a registered version, or None) on the same holdout,
    with the test ``spec.test`` of the candidate's improvement."""
    spec = spec or PromotionSpec()
    X, y = _need(run, "splits", "promote")["holdout"]
    frame = _need(run, "frame", "promote")
    from mlops_framework.metrics import higher_is_better

    candidate_model = _need(run, "model", "promote")
    task = candidate_model.contract.task
    metric = spec.metric_for(task)
    candidate = holdout_metrics(candidate_model, frame, X, y)
    champion = test = None
    if champion_version is not None:
        model = run.registry.load_model(run.registration.model_name, champion_version)
        if model.contract.task != task:
            raise MlopsError(f"the champion {champion_version} is a {model.contract.task} model, the "
                             f"candidate a {task} one: they cannot be compared")
        champion = holdout_metrics(model, frame, X, y)
        if task == "binary":  # the tests below are built for two classes; other tasks compare point values
            new, old = _predictions(candidate_model, frame, X), _predictions(model, frame, X)
            if spec.test == "bootstrap":
                test = paired_bootstrap(metric_function(metric), new[0], old[1:], new[1:],
                                        higher_is_better=higher_is_better(metric), resamples=spec.resamples,
                                        confidence=spec.confidence, seed=spec.seed)
            elif spec.test == "mcnemar":
                test = mcnemar(new[0], old[1], new[1])
                test["improvement"] = (candidate[metric] or 0) - (champion[metric] or 0)
    return {"holdout_rows": len(y), "task": task, "candidate": candidate, "champion": champion, "test": test}


def gate(spec: PromotionSpec, comparison: dict, alerts=()) -> tuple[bool, str]:
    """(passed, reason) for the comparison of ``compare``; ``alerts`` are the drift alerts that count
    (this run's and those recorded for the champion's recent windows). The metric's direction
    (``metrics.higher_is_better``) says what beating the champion means."""
    from mlops_framework.metrics import better, higher_is_better

    metric = spec.metric_for(comparison.get("task", "binary"))
    up = higher_is_better(metric)
    worse, sign = ("<", "+") if up else (">", "-")
    new = comparison["candidate"][metric]
    old = (comparison["champion"] or {}).get(metric)
    test = comparison.get("test")
    problems = []
    if spec.min_value is not None and (new is None or (new < spec.min_value if up else new > spec.min_value)):
        problems.append(f"{metric} {_num(new)} {worse} {'min_value' if up else 'limit (min_value)'} {spec.min_value}")
    if comparison["champion"] is None:
        if not spec.promote_first:
            problems.append(f"no version holds {spec.alias} and promotion.promote_first is false")
        verdict = f"no champion holds {spec.alias}"
    elif test and test["test"] == "paired bootstrap":
        interval = (f"{metric} improvement {test['improvement']:+.4f}, {test['confidence']:.0%} paired bootstrap "
                    f"interval [{test['lower']:+.4f}, {test['upper']:+.4f}] ({test['resamples']} resamples)")
        if not test["lower"] > spec.min_improvement:
            problems.append(f"{interval}: lower bound not above min_improvement {spec.min_improvement}")
        verdict = f"{interval} above {spec.min_improvement}"
    else:
        if not better(metric, new, old, spec.min_improvement):
            problems.append(f"{metric} {_num(new)} {worse} champion's {_num(old)} {sign} {spec.min_improvement}")
        verdict = f"{metric} {_num(new)} vs champion's {_num(old)} {sign} {spec.min_improvement}"
        if test and test["test"] == "mcnemar":
            mc = f"McNemar p = {test['p_value']:.4f} ({test['only_challenger_right']} vs {test['only_champion_right']} rows)"
            if test["p_value"] >= 1 - spec.confidence:
                problems.append(f"{mc} not below {1 - spec.confidence:.3g}")
            verdict += f", {mc}"
    if spec.block_on_drift_alert:
        drift = sorted({f"{a.rule} ({a.model_version})" if a.model_version else a.rule for a in alerts
                        if a.metric in DRIFT})
        if drift:
            problems.append(f"drift alert(s) on the champion's recent windows or in this run: {', '.join(drift)}")
    rows = f" on {comparison['holdout_rows']:,} holdout rows"
    if problems:
        return False, "refused: " + "; ".join(problems) + rows
    return True, "gate passed: " + verdict + rows


def drift_alerts(run, spec, champion):
    """This run's alerts and those recorded for the champion's ``drift_windows`` latest windows."""
    from mlops_framework.alerts import Alert

    alerts = list(run.results.get("alerts") or [])
    if champion is None or run.monitor is None or not spec.block_on_drift_alert:
        return alerts
    from mlops_framework.monitoring import recorded_alerts

    for row in recorded_alerts(run.monitor, run.registration.model_name, champion, spec.drift_windows):
        alerts.append(Alert(rule=row["RULE"], metric=row["METRIC"], op=row["OP"], threshold=row["THRESHOLD"],
                            value=row["VALUE"], window_start=row["WINDOW_START"], window_end=row["WINDOW_END"],
                            column=row["COLUMN_NAME"], model_name=row["MODEL_NAME"],
                            model_version=row["MODEL_VERSION"], run_id=row["RUN_ID"]))
    return alerts


def _num(value):
    return "n/a" if value is None else f"{value:.4f}"


def promote(run):
    spec = run.promotion or PromotionSpec()
    version = _need(run, "version", "promote")["version_name"]
    name = run.registration.model_name
    alias = spec.alias.upper()
    champion = run.registry.aliases(name).get(alias)
    record = {"alias": alias, "candidate": version, "champion": champion}
    if champion == version:
        record.update(promoted=False, reason=f"{version} already holds {alias}", comparison=None)
    else:
        comparison = compare(run, champion, spec)
        passed, reason = gate(spec, comparison, drift_alerts(run, spec, champion))
        metrics = {f"candidate_{k}": v for k, v in comparison["candidate"].items()}
        metrics.update({f"champion_{k}": v for k, v in (comparison["champion"] or {}).items()})
        for key, value in (comparison["test"] or {}).items():
            if isinstance(value, (int, float)):
                metrics[f"test_{key}"] = value
        audited = isinstance(run.registry, AuditedRegistry)
        extra = {"config_hash": run.provenance.config_hash} if audited else {}
        if passed:
            run.registry.set_alias(name, version, alias, reason=reason, metrics=metrics, **extra)
        elif audited:
            run.registry.record_refusal(name, version, alias, reason=reason, metrics=metrics, **extra)
        record.update(promoted=passed, reason=reason, comparison=comparison, config_hash=run.provenance.config_hash)
    run.results.setdefault("promotions", []).append(record)
    holder = run.registry.aliases(name).get(alias)
    run.summarize(f"promote {len(run.results['promotions'])}",
                  f"{version} -> {alias}: {record['reason']} ({alias} is on {holder})")


def _describe_promote(run):
    spec = run.promotion or PromotionSpec()
    extra = f" and >= {spec.min_value}" if spec.min_value is not None else ""
    drift = "; refused if a drift alert fired" if spec.block_on_drift_alert else ""
    metric = spec.metric or "the task's default metric (f1; rmse for regression, lower is better)"
    line = (f"move {spec.alias.upper()} to the version registered last if its holdout {metric} beats "
            f"the holder's by {spec.min_improvement}{extra}{drift}; record it in the history either way")
    if isinstance(run.registry, PlannedRegistry):
        version = run.registration.version_name or "VNEXT"
        line += f"; in the registry ({version}: the version this run registers):"
        line += "".join(f"\n       {statement}" for statement in
                        run.registry.plan_alias(run.registration.model_name, version, spec.alias))
    return line


# ---------------------------------------------------------------------- report
def report(run):
    from mlops_framework.report import write_report

    if run.output_dir is None:
        raise MlopsError("the report stage needs a run output directory")
    path = write_report(run.results, run.output_dir / "report.html", model_name=run.registration.model_name,
                        aliases=_aliases(run))
    run.results["report"] = str(path)
    run.summarize("report", str(path))


def _aliases(run):
    try:
        return run.registry.aliases(run.registration.model_name)
    except MlopsError:
        return {}


LIFECYCLE_STAGES = (
    Stage("monitor", monitor, _describe_monitor),
    Stage("retrain", retrain, _describe_retrain),
    Stage("explain", explain, _describe_explain),
    Stage("promote", promote, _describe_promote),
    Stage("report", report, lambda run: "write report.html (metrics over time, drift, histograms, confusion "
                                        "matrices, alerts, promotions, SHAP) into the run's output directory"),
)
