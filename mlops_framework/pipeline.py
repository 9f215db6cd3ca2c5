"""A run: the objects built from a resolved config, the stages to apply to them, and their results."""

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypedDict

from mlops_framework.config import redact
from mlops_framework.errors import MlopsError
from mlops_framework.lineage import Provenance
from mlops_framework.plugins import check_arguments


@dataclass
class Stage:
    """One step of a pipeline. ``run(run)`` reads objects from the run and stores outputs in ``run.results``;
    ``describe(run)`` says in one line what it would do, touching nothing."""

    name: str
    run: Callable[["Run"], None]
    describe: Callable[["Run"], str]


@dataclass
class FeatureSpec:
    """Which columns are what (``conf/features/``). ``numeric``/``categorical`` None: inferred from the
    data's types (``features.infer_roles``); ``task`` ``auto``: inferred from the target."""

    target: str | None = None  # required by the features stage; scoring needs none
    numeric: list | None = None
    categorical: list | None = None
    id: str | None = None
    time: str | None = None
    exclude: list = field(default_factory=list)
    task: str = "auto"
    encoding: str = "onehot"
    unseen: str = "ignore"
    positive_class: str | int | float | bool | None = None  # binary: the class PREDICTED_SCORE is the probability of

    def __post_init__(self):
        for key, allowed in (("encoding", ("onehot", "native")), ("unseen", ("ignore", "error")),
                             ("task", ("auto", "binary", "multiclass", "regression"))):
            if getattr(self, key) not in allowed:
                raise MlopsError(f"features.{key} must be one of {', '.join(allowed)}, not {getattr(self, key)!r}")
        for key in ("numeric", "categorical", "exclude"):
            value = getattr(self, key)
            if isinstance(value, str):  # one column named where a list is expected: a list of one, not letters
                setattr(self, key, value := [value])
            elif isinstance(value, list):  # [2019, 2020]: columns named by years, read as numbers by Hydra
                setattr(self, key, value := [str(v) if _is_number(v) else v for v in value])
            if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                raise MlopsError(f"features.{key} must be a list of column names, got {value!r}")
        for key in ("target", "id", "time"):
            value = getattr(self, key)
            if value is not None and not (isinstance(value, str) and value):
                raise MlopsError(f"features.{key} must be one column name, got {value!r}")
        self.exclude = list(self.exclude or [])
        if isinstance(self.positive_class, (list, dict)):
            raise MlopsError(f"features.positive_class must be one value of the target, got {self.positive_class!r}")

    @property
    def inferred(self):
        """True when the feature lists come from the data rather than the config."""
        return self.numeric is None or self.categorical is None

    @property
    def columns(self):
        """The columns to read: None (all of them) while roles are inferred."""
        if self.inferred:
            return None
        return list(dict.fromkeys(c for c in (*self.numeric, *self.categorical, self.target) if c))

    def roles(self, frame):
        from mlops_framework.features import infer_roles

        return infer_roles(frame, target=self.target, id=self.id, time=self.time, exclude=self.exclude,
                           numeric=self.numeric, categorical=self.categorical)


@dataclass
class ModelSpec:
    _target_: str
    params: dict = field(default_factory=dict)
    threshold: float = 0.5

    def __post_init__(self):
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)) \
                or not 0 < self.threshold < 1:
            raise MlopsError(f"model.threshold must be a number between 0 and 1 (exclusive), not {self.threshold!r}")
        from mlops_framework.model import check_counts

        check_counts(self.params)

    def build(self, encoding, task="binary"):
        from mlops_framework.model import build_estimator

        return build_estimator(self._target_, self.params, encoding=encoding, task=task)

    def describe(self):
        params = ", ".join(f"{k}={v}" for k, v in self.params.items() if v is not None)
        return f"{self._target_}({params})"


@dataclass
class SplitSpec:
    """train / validation / holdout (``conf/split/``). ``order``: ``random`` (stratified for classification
    when ``stratify``) or ``time`` (sorted by ``features.time``: the latest rows are the holdout, the ones
    before them the validation)."""

    holdout: float = 0.2
    validation: float = 0.25
    stratify: bool = True
    seed: int = 0
    order: str = "random"
    stream_from_rows: int | None = 1_000_000  # XGBoost trains from batches at this many rows (mlops_framework.streamed)
    external_memory_from_gib: float | None = 1.0  # streamed training pages XGBoost's quantized matrix to disk from this size

    def __post_init__(self):
        if self.stream_from_rows is not None and (isinstance(self.stream_from_rows, bool)
                                                  or not isinstance(self.stream_from_rows, int)
                                                  or self.stream_from_rows < 0):
            raise MlopsError(f"split.stream_from_rows must be a whole number >= 0 or null, not {self.stream_from_rows!r}")
        if self.external_memory_from_gib is not None and (isinstance(self.external_memory_from_gib, bool)
                                                          or not isinstance(self.external_memory_from_gib, (int, float))
                                                          or not self.external_memory_from_gib >= 0):
            raise MlopsError("split.external_memory_from_gib must be a number of GiB >= 0 or null, "
                             f"not {self.external_memory_from_gib!r}")
        for key in ("holdout", "validation"):
            if not 0 < getattr(self, key) < 1:
                raise MlopsError(f"split.{key} must be between 0 and 1, not {getattr(self, key)}")
        if self.order not in ("random", "time"):
            raise MlopsError(f"split.order must be random or time, not {self.order!r}")


@dataclass
class Registration:
    model_name: str
    version_name: str | None = None
    comment: str | None = None
    tags: dict = field(default_factory=dict)


@dataclass
class Scoring:
    sink: Any
    source: Any = None
    version: str | None = None
    batch_size: int = 262_144


@dataclass
class MonitorSpec:
    """What the ``monitor`` stage watches (``conf/monitor/``): see ``mlops_framework.monitoring``."""

    warehouse: str
    baseline: str | None = None
    baseline_source: Any = None
    source: Any = None
    actuals: Any = None
    id: str | None = None
    timestamp: str | None = "TS"
    time_format: str | None = None
    window: str = "7 days"
    origin: str = "2000-01-03"
    bins: int = 10
    binning: str = "quantile"
    columns: list | None = None
    average: str = "macro"
    score_column: str = "PREDICTED_SCORE"
    prediction_column: str = "PREDICTED_RESPONSE"
    performance_table: str = "MONITOR_PERFORMANCE"
    drift_table: str = "MONITOR_DRIFT"
    alerts_table: str = "MONITOR_ALERTS"
    baselines_table: str = "MONITOR_BASELINES"
    sink: Any = None
    sinks: dict = field(default_factory=dict)  # table role -> sink, built from ``sink`` (see monitoring)


@dataclass
class Alerting:
    """The alert rules evaluated after each monitor run and the notifiers, by name (``conf/alerts/``)."""

    rules: list = field(default_factory=list)
    notifiers: dict = field(default_factory=dict)


@dataclass
class RetrainSpec:
    """Where the ``retrain`` stage's new data comes from (None: the data group) and what ``explain``
    writes (``conf/retrain/``)."""

    source: Any = None
    explain_rows: int = 1000
    warehouse: str | None = None
    explanations_table: str = "EXPLANATIONS"
    sink: Any = None  # built: where the explanations go (beside the predictions, else ``warehouse``)


@dataclass
class PromotionSpec:
    """The gate of the ``promote`` stage (``conf/promotion/``): the candidate takes ``alias`` only if its
    improvement of ``metric`` over the champion on the same holdout rows holds beyond chance (``test``:
    a paired bootstrap's interval lower bound above ``min_improvement``; ``mcnemar``; ``none``: the point
    difference >= ``min_improvement``), and its metric reaches ``min_value``. Every comparison follows the metric's direction
    (``metrics.higher_is_better``: lower rmse is better); ``metric`` None: the task's default
    (``metrics.default_metric``)."""

    alias: str = "PRODUCTION"
    metric: str | None = None
    min_improvement: float = 0.0
    min_value: float | None = None
    block_on_drift_alert: bool = False
    drift_windows: int = 4
    promote_first: bool = True
    test: str = "bootstrap"
    resamples: int = 1000
    confidence: float = 0.95
    seed: int = 0

    def __post_init__(self):
        from mlops_framework.metrics import MULTICLASS, REGRESSION

        known = (*MULTICLASS, *REGRESSION)
        if self.metric is not None and self.metric not in known:
            raise MlopsError(f"promotion.metric must be one of {', '.join(known)} or null, not {self.metric!r}")
        if self.test not in ("bootstrap", "mcnemar", "none"):
            raise MlopsError(f"promotion.test must be bootstrap, mcnemar or none, not {self.test!r}")
        if not 0 < self.confidence < 1:
            raise MlopsError(f"promotion.confidence must be between 0 and 1, not {self.confidence}")

    def metric_for(self, task):
        from mlops_framework.metrics import default_metric, metric_names

        if self.metric is None:
            return default_metric(task)
        if self.metric not in metric_names(task):
            raise MlopsError(f"promotion.metric {self.metric!r} is not a {task} metric; use one of "
                             f"{', '.join(metric_names(task))}")
        return self.metric


class Results(TypedDict, total=False):
    """What stages leave in ``run.results``, by the stage that writes it (a plugin stage may add keys).

    ``summary`` holds extra lines of the run's summary (``RunResult.extra``); write it only through
    ``Run.summarize``.
    """

    frame: Any                 # load: the rows read (pandas)
    data_fingerprint: str      # load
    source_lineage: dict | None  # load: what a LineageSource read
    contract: Any              # features: the FeatureContract
    X: Any                     # features
    y: Any                     # features
    splits: dict               # split: {"train"|"validation"|"holdout": (X, y)}
    model: Any                 # train: the TrainedModel
    evaluation: dict           # evaluate: per part, the metrics report
    metrics: dict              # evaluate: "<part>_<metric>" -> float
    version: dict              # register: the registry's record of the version
    registered: list           # run_stages: every version name this run registered (preflight.left_behind)
    scored: dict               # score: rows, seconds, destination, version
    scored_log: list           # run_stages: every score stage's ``scored`` (preflight.left_behind)
    retrained: dict            # retrain: source, rows
    monitor: dict              # monitor: the last monitor run
    monitor_runs: list         # monitor: every monitor run
    alerts: list               # monitor: the fired alerts
    explanation: dict          # explain
    promotions: list           # promote: one record per promote stage
    report: str                # report: the report's path
    summary: dict              # Run.summarize: extra summary lines


@dataclass
class Run:
    """Everything a stage may use. Built once from the config; stages never see the config itself: what a
    stage records about the run's origin comes from ``provenance``. ``config`` is for backends, which
    ship or describe the whole run."""

    stages: list
    source: Any
    features: FeatureSpec
    model: ModelSpec
    split: SplitSpec
    registry: Any
    registration: Registration
    scoring: Scoring
    backend: Any
    hook: Any
    config: dict
    output_dir: Path | None = None
    results: Results = field(default_factory=dict)
    monitor: MonitorSpec | None = None
    alerts: Alerting | None = None
    retrain: RetrainSpec | None = None
    promotion: PromotionSpec | None = None
    provenance: Provenance | None = None
    shared: Any = None  # a sweep's trial: the data its process's earlier trials made (shared_data.SharedData)
    schemas: dict = field(default_factory=dict)  # each source's columns, read once a run (preflight.source_schema)

    def __post_init__(self):
        if self.provenance is None:
            self.provenance = Provenance(self.config)

    def summarize(self, key: str, line) -> None:
        """Add (or replace) one line of the run's summary: the only writer of ``results["summary"]``."""
        self.results.setdefault("summary", {})[key] = line


def _spec(cls, values, where):
    """``cls(**values)`` after refusing unknown keys; one name given for a list field is a list of one
    (``features.numeric=INCOME`` is ``[INCOME]``, never its letters), and a number given for a text field
    is its text (``features.target=2010``, a column named by a year, which Hydra reads as a number)."""
    import dataclasses

    values = dict(values or {})
    for field_ in dataclasses.fields(cls):
        value = values.get(field_.name)
        if isinstance(value, str) and str(field_.type).startswith(("list", "<class 'list'>")):
            values[field_.name] = [value]
        elif _is_number(value) and str(field_.type) in ("str", "str | None", "<class 'str'>"):
            values[field_.name] = str(value)
    check_arguments(cls, values, where=where)
    return cls(**values)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


REGISTRATION_KEYS = ("model_name", "version_name", "comment")  # what to register, not where


def build_registry(config, components):
    """The registry a resolved config's ``registry`` group names (its ``REGISTRATION_KEYS`` left out)."""
    values = {key: value for key, value in config["registry"].items() if key not in REGISTRATION_KEYS}
    return components.build("registry", values, where="registry")


def build_run(config, components, *, output_dir=None):
    """Turn a resolved config (plain dict, see ``config.resolved``) into a ``Run`` of objects."""
    registration = {key: config["registry"][key] for key in REGISTRATION_KEYS if key in config["registry"]}
    source = components.build("data", config["data"], where="data")
    scoring_values = dict(config["scoring"])
    scoring_source = _stage_source(components, config, scoring_values, "scoring")
    sink_values = dict(scoring_values.pop("sink"))
    sink_values["partition_by"] = _partitions(sink_values.get("partition_by"), scoring_source or source)
    sink = components.build("sink", sink_values, where="scoring.sink")
    stage_names = list(config["pipeline"].get("stages") or [])
    unknown = [name for name in stage_names if name not in components.stages]
    if unknown:
        raise MlopsError(f"unknown stages {', '.join(unknown)}; registered stages: {', '.join(components.stages)}")
    return Run(
        stages=[components.stages[name] for name in stage_names],
        source=source,
        features=_spec(FeatureSpec, config["features"], "features"),
        model=_spec(ModelSpec, config["model"], "model"),
        split=_spec(SplitSpec, config["split"], "split"),
        registry=build_registry(config, components),
        registration=_spec(Registration, {**registration, "tags": redact(config.get("tags") or {})}, "registry"),
        scoring=_spec(Scoring, {**scoring_values, "sink": sink, "source": scoring_source}, "scoring"),
        backend=components.build("backend", config["backend"], where="backend"),
        hook=components.pm.hook,
        config=config,
        output_dir=Path(output_dir) if output_dir else None,
        **_lifecycle_specs(config, components),
    )


def _data_or_none(components, values, where):
    return components.build("data", values, where=where) if values else None


def _stage_source(components, config, values, group):
    """``GROUP.source`` built (``source`` and ``where`` popped from ``values``). When it is null and the group
    has a ``where`` key: the data option's table with that condition in place of ``data.where`` (null: every
    row), or None when the condition is ``data.where`` itself (the run's own source is used)."""
    source = _data_or_none(components, values.pop("source", None), f"{group}.source")
    if "where" not in values:
        return source
    where = values.pop("where")
    if source is not None:  # the source's own where applies
        return source
    if where == config["data"].get("where"):
        return None  # the data group's own rows: the run's source object is shared
    return components.build("data", {**config["data"], "where": where}, where=f"{group}.where")


def _partitions(value, source):
    """A sink's ``partition_by``: ``auto`` = the columns the scored source declares (synthetic data: WEEK;
    a file: its data option's partition_by, none by default); one column name = a list of one."""
    from mlops_framework.contracts import PartitionedSource

    if value == "auto":
        return source.partition_by if isinstance(source, PartitionedSource) else None
    return [value] if isinstance(value, str) else value


def _lifecycle_specs(config, components):
    """The monitor, alerts, retrain and promotion groups, each optional."""
    specs = {}
    if config.get("monitor"):
        values = dict(config["monitor"])
        for key in ("source", "baseline_source", "actuals"):
            values[key] = _data_or_none(components, values.get(key), f"monitor.{key}")
        values["sinks"] = monitor_table_sinks(
            values, config["scoring"].get("sink") or {},
            lambda keys, where: components.build("sink", keys, where=where))
        specs["monitor"] = _spec(MonitorSpec, values, "monitor")
    if config.get("alerts"):
        from mlops_framework.alerts import build_rules

        values = dict(config["alerts"])
        unknown = sorted(set(values) - {"rules", "notifiers"})
        if unknown:
            raise MlopsError(f"unknown key alerts.{unknown[0]}; alerts accepts: rules, notifiers")
        notifiers = {name: components.build("notifier", keys, where=f"alerts.notifiers.{name}")
                     for name, keys in (values.get("notifiers") or {}).items() if keys}
        specs["alerts"] = Alerting(rules=build_rules(values.get("rules")), notifiers=notifiers)
    if config.get("retrain"):
        values = dict(config["retrain"])
        values["source"] = _stage_source(components, config, values, "retrain")
        if values.get("warehouse"):
            values["sink"] = components.build("sink", _beside_predictions(
                values.get("sink"), config["scoring"].get("sink") or {}, values["warehouse"],
                values.get("explanations_table") or "EXPLANATIONS", ["RUN_ID", "MODEL_VERSION"]), where="retrain.sink")
        specs["retrain"] = _spec(RetrainSpec, values, "retrain")
    if config.get("promotion"):
        specs["promotion"] = _spec(PromotionSpec, config["promotion"], "promotion")
    return specs


MONITOR_TABLES = ("performance", "drift", "alerts", "baselines")


def monitor_table_sinks(config_monitor: dict, scoring_sink: dict, build) -> dict:
    """The sinks the monitor writes its tables through: ``monitor.sink`` if set, else one like the
    scoring sink (same kind and place, e.g. Snowflake when predictions go to Snowflake), else a DuckDB
    file at ``monitor.warehouse``. Each replaces the partition of one monitor run (``MONITOR_ID``), so
    runs append. ``build(values, where)`` builds a sink from a ``kind:`` mapping."""
    tables = {role: config_monitor.get(f"{role}_table") or f"MONITOR_{role.upper()}" for role in MONITOR_TABLES}
    return {role: build(_beside_predictions(config_monitor.get("sink"), scoring_sink, config_monitor.get("warehouse"),
                                            table, ["MONITOR_ID"]), "monitor.sink")
            for role, table in tables.items()}


def _beside_predictions(chosen, scoring_sink, warehouse, table, partition_by) -> dict:
    """The ``kind:`` mapping of a sink for ``table``: ``chosen`` if set, else the scoring sink's kind and
    place when it writes tables (DuckDB, Snowflake), else a DuckDB file at ``warehouse``."""
    base = chosen or ({k: v for k, v in scoring_sink.items() if k not in ("table", "partition_by")}
                      if scoring_sink and "table" in scoring_sink else {"kind": "duckdb", "path": warehouse})
    return {**dict(base), "table": table, "partition_by": partition_by}


def run_stages(run):
    """Check what the stages will read (``preflight.check``), then run each in this process, in order,
    calling the lifecycle hooks around it. A stage failing after an earlier one wrote something says what
    was left and how to remove it (``preflight.left_behind``)."""
    import sys

    from mlops_framework import preflight

    preflight.check(run)
    for stage in run.stages:
        run.hook.before_stage_run(stage=stage, run=run)
        started = time.perf_counter()
        try:
            stage.run(run)
        except BaseException as error:
            run.hook.on_stage_error(stage=stage, run=run, error=error)
            left = preflight.left_behind(run)
            if left and isinstance(error, MlopsError):
                raise MlopsError(f"{error}. Before it failed, this run {left}") from error
            if left:
                print(f"mlops: before it failed, this run {left}", file=sys.stderr)
            raise
        if stage.name == "register" and "version" in run.results:
            run.results.setdefault("registered", []).append(run.results["version"]["version_name"])
        if stage.name == "score" and "scored" in run.results:
            run.results.setdefault("scored_log", []).append(run.results["scored"])
        run.hook.after_stage_run(stage=stage, run=run, seconds=time.perf_counter() - started)
