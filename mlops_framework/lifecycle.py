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
from mlops_framework.lineage import config_hash  # noqa: F401  (its public name here since promotion records it)
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
    return (f"performance and drift of {where} per {spec.window} of {spec.timestamp} against {baseline} "
            f"-> {spec.performance_table}, {spec.drift_table}; alert rules: {rules}; notifiers: {notifiers}")


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
    table["SCORE"] = 1.0 / (1.0 + np.exp(-margin))
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
    if run.retrain and run.retrain.warehouse:
        from mlops_framework.monitoring import append_tables

        append_tables(run.retrain.warehouse, {run.retrain.explanations_table: pd.DataFrame(table)})
        where.append(f"{run.retrain.explanations_table} in {run.retrain.warehouse}")
    explanation["written_to"] = where
    run.results["explanation"] = explanation
    top = ", ".join(f"{k}={v:.3f}" for k, v in list(explanation["global"].items())[:3])
    run.summarize("explained", f"{len(X):,} holdout rows, mean |SHAP|: {top}")


def _describe_explain(run):
    rows = run.retrain.explain_rows if run.retrain else 1000
    table = f" and {run.retrain.explanations_table}" if run.retrain and run.retrain.warehouse else ""
    return f"SHAP contributions (pred_contribs) of the model on {rows:,} holdout rows -> explanations.parquet{table}"


# ---------------------------------------------------------------------- promote
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


def compare(run, champion_version):
    """Candidate (this run's model) and champion (a registered version, or None) on the same holdout."""
    X, y = _need(run, "splits", "promote")["holdout"]
    frame = _need(run, "frame", "promote")
    model = _need(run, "model", "promote")
    candidate = holdout_metrics(model, frame, X, y)
    champion = None
    if champion_version is not None:
        champion_model = run.registry.load_model(run.registration.model_name, champion_version)
        if champion_model.contract.task != model.contract.task:
            raise MlopsError(f"the champion {champion_version} is a {champion_model.contract.task} model, the "
                             f"candidate a {model.contract.task} one: they cannot be compared")
        champion = holdout_metrics(champion_model, frame, X, y)
    return {"holdout_rows": len(y), "task": model.contract.task, "candidate": candidate, "champion": champion}


def gate(spec: PromotionSpec, comparison: dict, alerts=()) -> tuple[bool, str]:
    """(passed, reason) for the comparison of ``compare``; ``alerts`` are this run's fired alerts. The
    metric's direction (``metrics.higher_is_better``) says what beating the champion means."""
    from mlops_framework.metrics import better, higher_is_better

    metric = spec.metric_for(comparison.get("task", "binary"))
    up = higher_is_better(metric)
    worse, sign = ("<", "+") if up else (">", "-")
    new = comparison["candidate"][metric]
    old = (comparison["champion"] or {}).get(metric)
    problems = []
    if spec.min_value is not None and (new is None or (new < spec.min_value if up else new > spec.min_value)):
        problems.append(f"{metric} {_num(new)} {worse} {'min_value' if up else 'limit (min_value)'} {spec.min_value}")
    if comparison["champion"] is None:
        if not spec.promote_first:
            problems.append(f"no version holds {spec.alias} and promotion.promote_first is false")
        verdict = f"no champion holds {spec.alias}"
    else:
        if not better(metric, new, old, spec.min_improvement):
            problems.append(f"{metric} {_num(new)} {worse} champion's {_num(old)} {sign} {spec.min_improvement}")
        verdict = f"{metric} {_num(new)} vs champion's {_num(old)} {sign} {spec.min_improvement}"
    if spec.block_on_drift_alert:
        drift = sorted({a.rule for a in alerts if a.metric in DRIFT})
        if drift:
            problems.append(f"drift alert(s) fired in this run: {', '.join(drift)}")
    rows = f" on {comparison['holdout_rows']:,} holdout rows"
    if problems:
        return False, "refused: " + "; ".join(problems) + rows
    return True, "gate passed: " + verdict + rows


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
        comparison = compare(run, champion)
        passed, reason = gate(spec, comparison, run.results.get("alerts") or [])
        metrics = {f"candidate_{k}": v for k, v in comparison["candidate"].items()}
        metrics.update({f"champion_{k}": v for k, v in (comparison["champion"] or {}).items()})
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
