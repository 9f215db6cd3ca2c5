"""``registry=snowflake``: the Snowflake Model Registry behind the same interface as the local registry.

What ``log_model`` registers is a snowflake-ml ``CustomModel`` (:mod:`mlops_snowflake.custom_model`)
holding the booster and the feature contract, so ``mv.run`` in the warehouse takes the raw input columns
and returns ``PREDICTED_SCORE`` and ``PREDICTED_RESPONSE``. After logging, the sample input is scored
through the registry and compared with the local predictions; on any difference, or any later failure
(model comment, tags), the version is deleted again: logging is all-or-nothing.

Snowflake facts this relies on (snowflake-ml-python 2.6.0): ``Registry(...)`` runs SHOW queries, so one
is built per instance, lazily; tags are model-level and the tag object must exist first; an alias is
moved as unset-then-set; our own promotion record goes to a history table (``MLOPS_PROMOTION_HISTORY``
beside the models); explainability and monitoring defaults changed between releases, so both are set.
Unquoted identifiers are upper-cased by Snowflake: versions are named ``V1``, ``V2``, ...
"""

from __future__ import annotations

import datetime as dt
import getpass
import importlib.metadata
import json
import re
import tempfile
import uuid
from pathlib import Path

from mlops_framework.errors import MlopsError
from mlops_framework.contracts import check_name, check_tag, previous_holders

from mlops_snowflake import connection as connection_module
from mlops_snowflake.data import _one_line

FUNCTION_NAME = "predict"
SYSTEM_ALIASES = frozenset({"FIRST", "LAST", "DEFAULT"})
HISTORY_TABLE = "MLOPS_PROMOTION_HISTORY"
RECORD_METRIC = "mlops"  # the metric holding our metadata, signature and lineage
AUTO_VERSION = re.compile(r"^[vV](\d+)$")
IDENTIFIER = re.compile(r'^(?:[A-Za-z_][A-Za-z0-9_$]*|"[^"]+")$')
PLATFORMS = ("WAREHOUSE", "SNOWPARK_CONTAINER_SERVICES")
COMMON_PINS = ("pandas", "numpy", "pyarrow")
FLAVOR_PINS = {"xgboost": ("xgboost",), "sklearn": ("scikit-learn", "skops")}
MISMATCH_ROWS_SHOWN = 10
VERSION_NAME_ATTEMPTS = 5  # parallel trials registering at once each retry with the next V<n>
SNOWFLAKE_TASKS = {"binary": "TABULAR_BINARY_CLASSIFICATION", "multiclass": "TABULAR_MULTI_CLASSIFICATION",
                   "regression": "TABULAR_REGRESSION"}


class SnowflakeRegistry:
    """The Snowflake Model Registry in ``database.schema`` (default: the connection's)."""

    def __init__(self, connection=None, database: str | None = None, schema: str | None = None,
                 enable_explainability: bool = False, enable_monitoring: bool = True,
                 target_platforms=("WAREHOUSE",), relax_version: bool = False, tolerance: float = 1e-6,
                 history_table: str = HISTORY_TABLE, monitor: dict | None = None, alert_rules: dict | None = None,
                 cuda_version: str | None = None):
        self.connection = connection
        self.database = database
        self.schema = schema
        self.enable_explainability = enable_explainability
        self.enable_monitoring = enable_monitoring
        self.target_platforms = target_platforms
        self.relax_version = relax_version
        self.tolerance = tolerance
        self.history_table = history_table
        self.monitor = monitor
        self.alert_rules = alert_rules
        self.cuda_version = None if cuda_version is None else str(cuda_version)
        self._registry = None

    # ---- description and plans (no connection) -----------------------------------------------------

    def location(self) -> str:
        """Where models live, as SQL: ``DB.SCHEMA``, ``SCHEMA`` or empty (the session's current schema)."""
        for value in (self.database, self.schema, self.history_table):
            if value is not None and not IDENTIFIER.match(str(value)):
                raise MlopsError(f"registry: {value!r} is not a Snowflake identifier (letters, digits, _ and $)")
        if self.database:
            return f"{self.database}.{self.schema or 'PUBLIC'}"
        return self.schema or ""

    def qualified(self, name: str) -> str:
        location = self.location()
        return f"{location}.{name}" if location else name

    def describe(self) -> str:
        where = self.location() or "the connection's current schema"
        options = (f"platforms {', '.join(map(str, self.target_platforms))}, monitoring "
                   f"{'on' if self.enable_monitoring else 'off'}, explainability {'on' if self.enable_explainability else 'off'}")
        return (f"Snowflake Model Registry in {where} ({options}) via "
                f"{connection_module.describe(self.connection)}")

    def dependencies(self, flavor: str = "xgboost") -> list[str]:
        """The explicit ``name==version`` pins the registered model runs with, from this environment."""
        pins = []
        for name in (*COMMON_PINS, *FLAVOR_PINS.get(flavor, ())):
            try:
                pins.append(f"{name}=={importlib.metadata.version(name)}")
            except importlib.metadata.PackageNotFoundError:
                raise MlopsError(f"cannot pin {name} for the registered model: it is not installed here") from None
        return pins

    def log_options(self) -> dict:
        """``log_model``'s ``options``: explainability and version relaxing set explicitly, and
        ``cuda_version`` when set (without it the model gets a CPU runtime only and SPCS refuses GPUs)."""
        options = {"enable_explainability": bool(self.enable_explainability), "relax_version": bool(self.relax_version)}
        if self.cuda_version:
            options["cuda_version"] = self.cuda_version
        return options

    def plan_log_model(self, *, model_name: str, version_name: str | None, comment: str | None, tags: dict,
                       flavor: str = "xgboost", task: str | None = None) -> list[str]:
        """What ``log_model`` will do, touching nothing: the ``log_model`` call, then the statements
        snowflake-ml 2.6 sends for it (``SHOW``/``SELECT`` reads left out) and ours after it. A test drives the
        real classes over a recording session and compares; ``<random>`` marks what the plan cannot know."""
        version = version_name.upper() if version_name else "V<n>"
        model = self.qualified(model_name)
        stage = f"@{self.qualified('SNOWPARK_TEMP_STAGE_<random>')}/model"
        lines = [
            f"Registry(session, database_name={self.database!r}, schema_name={self.schema!r}, "
            f"options={{'enable_monitoring': {bool(self.enable_monitoring)}}})",
            f"log_model(ContractModel[model.ubj + contract.json], model_name={model_name!r}, version_name="
            f"{version_name or 'the next V<n> after SHOW VERSIONS IN MODEL'}, comment={comment!r}, "
            f"metrics=<evaluation metrics + mlops record>, sample_input_data=<10 training rows>, "
            f"conda_dependencies={self.dependencies(flavor)}, target_platforms={list(self.target_platforms)}, "
            f"code_paths=[mlops_framework], task={_planned_task(task)}, options={self.log_options()}), which sends:",
            f"CREATE SCOPED TEMPORARY STAGE {stage[1:-len('/model')]}",
            f"PUT file://<each file of the packaged model> {stage}/...",
            f"CREATE MODEL {model} WITH VERSION {version} FROM {stage} -- if {model_name} does not exist yet",
            f"ALTER MODEL {model} ADD VERSION {version} FROM {stage} -- if it exists",
        ]
        if comment:
            lines.append(f"ALTER MODEL {model} MODIFY VERSION {version} SET COMMENT={_dollar_quoted(comment)}")
        lines += [
            f"ALTER MODEL {model} MODIFY VERSION {version} SET METADATA=$${{\"metrics\": <evaluation metrics + "
            f"mlops record>, \"snowpark_ml_schema_version\": \"<snowflake-ml's>\"}}$$",
            f"verify: mv.run(sample_input, function_name={FUNCTION_NAME!r}) equals the local predictions "
            f"(|score difference| <= {self.tolerance}, same classes), else DROP the version and fail",
        ]
        if comment:
            lines.append(f"COMMENT ON MODEL {model} IS {_dollar_quoted(comment)}")
        for tag, value in sorted((tags or {}).items()):
            lines += [f"CREATE TAG IF NOT EXISTS {self.qualified(tag)}",
                      f"ALTER MODEL {model} SET TAG {self.qualified(tag)} = {_dollar_quoted(str(value))}"]
        return lines

    def plan_alias(self, model_name: str, version: str, alias: str) -> list[str]:
        model = self.qualified(model_name)
        statements = [
            f"ALTER MODEL {model} VERSION {alias.upper()} UNSET ALIAS -- if a version holds it (VERSION takes a "
            f"version or an alias: snowflake-ml's unset_alias sends the alias)",
            f"ALTER MODEL {model} VERSION {version} SET ALIAS = {alias.upper()}",
            f"INSERT INTO {self.qualified(self.history_table)} (...) -- promotion record",
        ]
        monitored = self._monitored(alias)
        if monitored:
            from mlops_snowflake.monitor import follow_alias_sql

            settings, rules, columns = monitored
            statements += [
                f"{statement} -- unless SHOW MODEL MONITORS lists it (then only RESUME)"
                if statement.startswith("CREATE MODEL MONITOR") else statement
                for statement in follow_alias_sql(model, version, [], settings, rules, columns=columns,
                                                  if_not_exists=False)]
            statements.append(f"-- and SUSPEND the model monitor of the version that held {alias.upper()} before")
        return statements

    def _monitored(self, alias):
        """(settings, rules, feature columns) when ``alias`` is the one the model monitor follows, else None."""
        if not self.monitor or str(alias).upper() != str(self.monitor.get("alias", "PRODUCTION")).upper():
            return None
        from mlops_framework.alerts import build_rules
        from mlops_snowflake.monitor import MonitorSettings

        values = {key: value for key, value in self.monitor.items() if key not in ("alias", "feature_columns")}
        if self.location():
            loose = [f"registry.monitor.{key}={values[key]!r}" for key in ("source", "baseline", "actuals")
                     if values.get(key) and str(values[key]).count(".") != 2]
            if loose:
                raise MlopsError(f"{', '.join(loose)}: write DATABASE.SCHEMA.TABLE when the registry has its own "
                                 f"database/schema ({self.location()}); the monitor lives beside the model and would "
                                 f"otherwise look for the table there, not where the predictions are written")
        return MonitorSettings(**values), build_rules(self.alert_rules), list(self.monitor.get("feature_columns") or [])

    # ---- writing versions ---------------------------------------------------------------------------

    def log_model(self, model, *, model_name: str, version_name: str | None = None, comment: str | None = None,
                  metrics: dict | None = None, metadata: dict | None = None, tags: dict | None = None,
                  sample_input=None, signature: dict | None = None, lineage: dict | None = None) -> dict:
        """Register ``model`` (a ``TrainedModel``) as a new version; return its record. All-or-nothing."""
        check_name(model_name, "model name")
        if version_name is not None:
            check_name(version_name, "version name")
        tags = dict(tags or {})
        for tag, value in tags.items():
            check_tag(tag, value)
        if sample_input is None or not hasattr(sample_input, "columns") or len(sample_input) == 0:
            raise MlopsError("the Snowflake registry needs a non-empty sample_input DataFrame: it infers the model "
                             "signature and verifies the registered model's predictions against the local ones")
        if self.enable_explainability:
            raise MlopsError("registry.enable_explainability=true is not available: the registered model is a "
                             "custom model (it carries the feature contract), for which snowflake-ml has no SHAP explainer")
        for what, text in (("comment", comment), *((f"tag {tag}", value) for tag, value in tags.items())):
            if text is not None and "$$" in str(text):
                raise MlopsError(f"the {what} contains '$$', which Snowflake's dollar-quoted strings cannot hold "
                                 f"(snowflake-ml sends it as $$...$$): {text!r}")
        registration_id = uuid.uuid4().hex  # tells our version from one a concurrent run logged under the same name
        task = str((metadata or {}).get("task") or "binary")
        record_metric = {"metadata": metadata or {}, "signature": signature, "lineage": lineage or {},
                         "registration_id": registration_id}
        all_metrics = {**_json_safe(metrics or {}), RECORD_METRIC: _dollar_free_json(record_metric)}
        platforms = self._platforms()

        registry = self._get_registry()
        from snowflake.ml.model import target_platform

        from mlops_snowflake import custom_model

        with tempfile.TemporaryDirectory(prefix="mlops-snowflake-") as tmp:
            wrapped = custom_model.build(model, Path(tmp) / "model")
            for attempt in range(1, VERSION_NAME_ATTEMPTS + 1):
                existing, version = self._free_version(registry, model_name, version_name)
                try:
                    mv = registry.log_model(
                        wrapped,
                        model_name=model_name,
                        version_name=version,
                        comment=comment,
                        metrics=all_metrics,
                        conda_dependencies=self.dependencies(model.flavor),
                        target_platforms=[getattr(target_platform.TargetPlatform, p) for p in platforms],
                        sample_input_data=sample_input,
                        code_paths=[_core_package_dir()],
                        task=snowflake_task(task),
                        options=self.log_options(),
                    )
                    break
                except Exception as error:
                    if (version_name is None and attempt < VERSION_NAME_ATTEMPTS
                            and self._taken_by_another_run(registry, model_name, version, registration_id)):
                        continue  # a parallel run (e.g. another trial) took this V<n> meanwhile: take the next
                    note = self._discard(registry, model_name, version, created_model=existing is None,
                                         only_if=registration_id)
                    raise MlopsError(f"log_model of {model_name} {version} failed: {_one_line(error)}{note}") from error
        try:
            self._verify(mv, model, sample_input)
            registered = self._model(registry, model_name)
            if comment:
                registered.comment = comment
            for tag, value in tags.items():
                self._create_tag(tag)
                registered.set_tag(self.qualified(tag), value)
        except BaseException as error:
            note = self._discard(registry, model_name, version, created_model=existing is None)
            if isinstance(error, MlopsError):
                raise MlopsError(f"{error}{note}") from error
            if not isinstance(error, Exception):
                raise
            raise MlopsError(f"registering {model_name} {version} failed after log_model: {_one_line(error)}{note}") from error
        return {
            "model_name": model_name, "version_name": _canonical(version), "created_on": _now(),
            "comment": comment, "metrics": dict(metrics or {}), "metadata": metadata or {}, "signature": signature,
            "lineage": lineage or {}, "aliases": [], "location": self.location() or None,
            "files": {}, "sample_input": None,
        }

    def _free_version(self, registry, model_name, version_name):
        """(the model or None, the version name to log): ``version_name`` if free, else the next ``V<n>``."""
        existing = self._model(registry, model_name, missing_ok=True)
        rows = _rows(existing.show_versions()) if existing is not None else []
        names = [row["name"] for row in rows]
        version = version_name or _next_version(names)
        if _canonical(version) in {_canonical(name) for name in names}:
            raise MlopsError(f"model {model_name!r} already has a version {_canonical(version)!r}")
        if _canonical(version) in {alias for row in rows for alias in _aliases(row)}:
            raise MlopsError(f"{version!r} is already an alias of model {model_name!r}")
        return existing, version

    def _taken_by_another_run(self, registry, model_name, version, registration_id) -> bool:
        """True when ``version`` now exists and was logged by another registration than ``registration_id``."""
        try:
            model = self._model(registry, model_name, missing_ok=True)
            rows = _rows(model.show_versions()) if model is not None else []
        except Exception:
            return False
        row = next((r for r in rows if _canonical(r["name"]) == _canonical(version)), None)
        return row is not None and _registration_id(row) != registration_id

    def _verify(self, mv, model, sample_input) -> None:
        """Score the sample through the registry and compare with the local predictions."""
        import numpy as np

        try:
            remote = mv.run(sample_input, function_name=FUNCTION_NAME)
        except Exception as error:
            raise MlopsError(f"the registered model could not score its sample input: {_one_line(error)}") from error
        from mlops_snowflake.custom_model import CLASS_COLUMN, SCORE_COLUMN

        columns = {str(c).strip('"').upper(): c for c in remote.columns}
        missing = [c for c in (SCORE_COLUMN, CLASS_COLUMN) if c not in columns]
        if missing:
            raise MlopsError(f"the registered model's {FUNCTION_NAME} returned no {', '.join(missing)}; "
                             f"it returned: {', '.join(map(str, remote.columns))}")
        if len(remote) != len(sample_input):
            raise MlopsError(f"the registered model scored {len(remote)} rows of a {len(sample_input)}-row sample")
        local_scores = np.asarray(model.predict_scores(model.contract.encode_frame(sample_input)), dtype="float64")
        local_classes = list(model.predict_classes(local_scores))
        remote_scores = np.asarray(remote[columns[SCORE_COLUMN]], dtype="float64")
        remote_classes = list(remote[columns[CLASS_COLUMN]])
        bad = [i for i in range(len(local_scores))
               if not abs(remote_scores[i] - local_scores[i]) <= self.tolerance
               or not _same_value(remote_classes[i], local_classes[i])]
        if bad:
            shown = "\n".join(
                f"  row {i}: {sample_input.iloc[i].to_dict()} local {local_scores[i]:.9f}/{local_classes[i]!r} "
                f"registry {remote_scores[i]:.9f}/{remote_classes[i]!r}" for i in bad[:MISMATCH_ROWS_SHOWN])
            more = f"\n  ... and {len(bad) - MISMATCH_ROWS_SHOWN} more" if len(bad) > MISMATCH_ROWS_SHOWN else ""
            raise MlopsError(
                f"the registered model's predictions differ from the local ones on {len(bad)} of {len(local_scores)} "
                f"sample rows (tolerance {self.tolerance}); dependency versions or column casing may have drifted:\n"
                f"{shown}{more}"
            )

    def _discard(self, registry, model_name, version, *, created_model: bool, only_if: str | None = None) -> str:
        """Delete a version logged by a failed registration; '' or a note saying why it was not deleted.

        With ``only_if`` (log_model itself failed, so the version may not exist, or may be another run's),
        the version is deleted only when its metrics carry that registration id."""
        try:
            model = self._model(registry, model_name, missing_ok=True)
            if model is None:
                return ""
            rows = {_canonical(row["name"]): row for row in _rows(model.show_versions())}
            names = set(rows)
            if only_if is not None:
                row = rows.get(_canonical(version))
                if row is None:
                    return ""
                if _registration_id(row) != only_if:
                    return (f"; a version {_canonical(version)} exists but was not provably logged by this run, so it "
                            f"was left alone: check it with mlops registry show {model_name} {_canonical(version)}")
            if created_model and names <= {_canonical(version)}:
                registry.delete_model(model_name)
            else:
                model.delete_version(version)
            return f"; version {_canonical(version)} was deleted again"
        except Exception as error:
            return (f"; version {_canonical(version)} could not be deleted ({_one_line(error)}): delete it by hand with "
                    f"ALTER MODEL {self.qualified(model_name)} DROP VERSION {_canonical(version)}")

    # ---- reading ------------------------------------------------------------------------------------

    def models(self) -> list[dict]:
        """Every model: name, comment, tags, versions (count), aliases, created_on; sorted by name."""
        registry = self._get_registry()
        frame = _call(registry.show_models, "SHOW MODELS")
        out = []
        for row in _rows(frame):
            model = self._model(registry, row["name"])
            versions = _rows(model.show_versions())
            out.append({
                "name": row["name"], "comment": row.get("comment") or None, "tags": dict(model.show_tags() or {}),
                "versions": len(versions), "aliases": _alias_map(versions), "created_on": _iso(row.get("created_on")),
            })
        return sorted(out, key=lambda m: m["name"])

    def versions(self, model_name: str) -> list[dict]:
        """The version records of a model, oldest first."""
        rows = self._versions(model_name)
        records = [self._record(model_name, row) for row in rows]
        return sorted(records, key=lambda r: (str(r["created_on"]), _natural_key(r["version_name"])))

    def get_version(self, model_name: str, version_or_alias: str) -> dict:
        """The record of a version, by version name or alias (case-insensitive, as Snowflake identifiers)."""
        return self._record(model_name, self._resolve(model_name, version_or_alias))

    def model_version(self, model_name: str, version_or_alias: str):
        """The snowflake-ml ``ModelVersion`` (resolved by Snowflake, so an alias follows its promotions)."""
        model = self._model(self._get_registry(), model_name)
        try:
            return model.version(version_or_alias)
        except ValueError:
            rows = _rows(model.show_versions())
            raise MlopsError(f"model {model_name!r} has no version or alias {version_or_alias!r}; "
                             f"versions: {_listing(r['name'] for r in rows)}; aliases: {_listing(_alias_map(rows))}") from None

    def load_model(self, model_name: str, version_or_alias: str):
        """Download a version's files and load them as a ``TrainedModel`` (nothing is unpickled)."""
        from mlops_framework.model import TrainedModel

        row = self._resolve(model_name, version_or_alias)
        mv = self.model_version(model_name, row["name"])
        with tempfile.TemporaryDirectory(prefix="mlops-snowflake-") as tmp:
            target = Path(tmp) / "export"
            try:
                mv.export(str(target))
            except Exception as error:
                raise MlopsError(f"cannot download {model_name} {row['name']}: {_one_line(error)}") from error
            found = sorted(target.glob("**/artifacts/model_info.json"))
            if not found:
                raise MlopsError(f"{model_name} {row['name']} holds no mlops-framework model (no model_info.json): "
                                 f"was it registered by this framework?")
            return TrainedModel.load(found[0].parent)

    def aliases(self, model_name: str) -> dict[str, str]:
        """alias -> version name (Snowflake's system aliases FIRST, LAST and DEFAULT left out)."""
        return _alias_map(self._versions(model_name))

    # ---- aliases and tags -----------------------------------------------------------------------------

    def set_alias(self, model_name: str, version_name: str, alias: str, *, actor: str | None = None,
                  reason: str | None = None, metrics: dict | None = None, config_hash: str | None = None,
                  event: str = "set") -> dict:
        """Point ``alias`` at ``version_name`` (unset from its holder, then set); record it; return the record."""
        alias = _check_alias(alias)
        rows = self._versions(model_name)
        target = next((row["name"] for row in rows if _canonical(row["name"]) == _canonical(version_name)), None)
        if target is None:
            raise MlopsError(f"model {model_name!r} has no version {version_name!r}; versions: "
                             f"{_listing(r['name'] for r in rows)}")
        if any(_canonical(row["name"]) == alias for row in rows):
            raise MlopsError(f"alias {alias!r} clashes with a version name of model {model_name!r}")
        old = _alias_map(rows).get(alias)
        model = self._model(self._get_registry(), model_name)
        if old != target:
            if old is not None:
                _call(lambda: model.version(old).unset_alias(alias), f"unset alias {alias} of {model_name} {old}")
            try:
                model.version(target).set_alias(alias)
            except Exception as error:
                restored = ""
                if old is not None:
                    try:
                        model.version(old).set_alias(alias)
                        restored = f"; {alias} was put back on {old}"
                    except Exception as again:
                        restored = f"; {alias} could not be put back on {old} ({_one_line(again)}): it is unset now"
                raise MlopsError(f"cannot set alias {alias} on {model_name} {target}: {_one_line(error)}{restored}") from error
        record = self._record_move(model_name, alias, old, target, actor, reason, metrics, event, config_hash)
        monitored = self._monitored(alias)
        if monitored:
            from mlops_snowflake import monitor as model_monitor

            settings, rules, columns = monitored
            task = (self.get_version(model_name, target)["metadata"] or {}).get("task")
            record["monitor"] = model_monitor.follow_alias(self._get_registry(), self._session(), model, target,
                                                           model_monitor.for_task(settings, task), rules, columns=columns,
                                                           model_name=self.qualified(model_name))
        return record

    def monitor_in_warehouse(self, model_name: str, version_or_alias: str, *, window: str = "7 DAY") -> dict:
        """Monitor a version in Snowflake: its native model monitor (on a view of that version's rows) is
        ensured, and its metrics are read with SQL in the warehouse; only the metric rows come back, never
        the scored table. Needs ``registry.monitor``."""
        if not self.monitor:
            raise MlopsError("monitoring in Snowflake needs registry.monitor (source, warehouse, baseline, "
                             "feature_columns): see conf/registry/snowflake.yaml")
        from mlops_snowflake import monitor as model_monitor

        settings, _, columns = self._monitored(self.monitor.get("alias", "PRODUCTION"))
        row = self._resolve(model_name, version_or_alias)
        version = row["name"]
        task = (self._record(model_name, row)["metadata"] or {}).get("task")
        settings = model_monitor.for_task(settings, task)
        model = self._model(self._get_registry(), model_name)
        session = self._session()
        done = model_monitor.ensure_monitor(self._get_registry(), session, model, version, settings,
                                            model_name=self.qualified(model_name))
        rows = []
        for statement in model_monitor.metrics_sql(done["monitor"], settings, columns=columns, window=window, task=task):
            rows += [row.as_dict() for row in _call(lambda s=statement: session.sql(s).collect(), "read the monitor")]
        return {**done, "model_version": version, "where": "warehouse", "window": window,
                "metrics": [{str(k).lower(): v for k, v in row.items()} for row in rows]}

    def unset_alias(self, model_name: str, alias: str, *, actor: str | None = None, reason: str | None = None) -> dict:
        """Remove an alias; record it; return the record."""
        alias = str(alias).upper()
        rows = self._versions(model_name)
        aliases = _alias_map(rows)
        if alias not in aliases:
            raise MlopsError(f"model {model_name!r} has no alias {alias!r}; aliases: {_listing(aliases)}")
        model = self._model(self._get_registry(), model_name)
        _call(lambda: model.version(aliases[alias]).unset_alias(alias), f"unset alias {alias} of {model_name}")
        return self._record_move(model_name, alias, aliases[alias], None, actor, reason, None, "unset", None)

    def record_refusal(self, model_name: str, version_name: str, alias: str, *, actor: str | None = None,
                       reason: str | None = None, metrics: dict | None = None,
                       config_hash: str | None = None) -> dict:
        """Record that ``version_name`` was refused ``alias`` (the alias does not move); return the entry
        (``event`` ``refused``, ``old_version`` the alias's holder, ``new_version`` the refused candidate)."""
        alias = str(alias).upper()
        rows = self._versions(model_name)
        target = next((row["name"] for row in rows if _canonical(row["name"]) == _canonical(version_name)), None)
        if target is None:
            raise MlopsError(f"model {model_name!r} has no version {version_name!r}; versions: "
                             f"{_listing(r['name'] for r in rows)}")
        return self._record_move(model_name, alias, _alias_map(rows).get(alias), target, actor, reason, metrics,
                                 "refused", config_hash)

    def rollback(self, model_name: str, alias: str, *, actor: str | None = None, reason: str | None = None) -> dict:
        """Move ``alias`` back to the version it held before its current one (as the local registry does:
        repeated rollbacks walk further back, refusals are skipped); return the history entry."""
        alias = str(alias).upper()
        current = self.aliases(model_name).get(alias)
        previous = previous_holders(self.history(model_name), alias)
        target = previous[-1] if previous else None
        if target is None:
            now = f"holds {current}" if current else "is not set"
            raise MlopsError(f"alias {alias!r} of model {model_name!r} {now} and has no earlier version to roll "
                             f"back to; see mlops registry history {model_name}")
        return self.set_alias(model_name, target, alias, actor=actor, reason=reason or f"rollback from {current}",
                              event="rollback")

    def history(self, model_name: str) -> list[dict]:
        """Every alias move recorded by this framework, oldest first."""
        self._model(self._get_registry(), model_name)
        table = self.qualified(self.history_table)
        try:
            rows = self._session().sql(
                f"SELECT CHANGED_AT, ACTOR, ALIAS, OLD_VERSION, NEW_VERSION, REASON, METRICS, EVENT, CONFIG_HASH "
                f"FROM {table} "
                f"WHERE MODEL_NAME = ? ORDER BY CHANGED_AT, SEQ", params=[model_name]).collect()
        except Exception as error:
            if "does not exist" in str(error).lower():
                return []
            raise MlopsError(f"cannot read the promotion history {table}: {_one_line(error)}") from error
        return [{
            "when": _iso(row["CHANGED_AT"]), "actor": row["ACTOR"], "alias": row["ALIAS"],
            "old_version": row["OLD_VERSION"], "new_version": row["NEW_VERSION"], "reason": row["REASON"],
            "metrics": _loads(row["METRICS"]) or {},
            "event": row["EVENT"] or ("set" if row["NEW_VERSION"] else "unset"), "config_hash": row["CONFIG_HASH"],
        } for row in rows]

    def set_tag(self, model_name: str, tag: str, value: str) -> None:
        """Set a model-level tag: ``CREATE TAG IF NOT EXISTS`` then ``Model.set_tag``."""
        check_tag(tag, value)
        model = self._model(self._get_registry(), model_name)
        self._create_tag(tag)
        _call(lambda: model.set_tag(self.qualified(tag), value), f"set tag {tag} on {model_name}")

    # ---- internals ------------------------------------------------------------------------------------

    def _session(self):
        return connection_module.resolve(self.connection).session()

    def _get_registry(self):
        if self._registry is None:
            from snowflake.ml.registry import Registry

            session = self._session()
            location = self.location()  # validates the identifiers
            try:
                self._registry = Registry(session, database_name=self.database, schema_name=self.schema,
                                          options={"enable_monitoring": bool(self.enable_monitoring)})
            except Exception as error:
                raise MlopsError(f"cannot open the Snowflake Model Registry in {location or 'the current schema'}: "
                                 f"{_one_line(error)}") from error
        return self._registry

    def _model(self, registry, model_name: str, *, missing_ok: bool = False):
        try:
            return registry.get_model(model_name)
        except ValueError:
            if missing_ok:
                return None
            known = [row["name"] for row in _rows(_call(registry.show_models, "SHOW MODELS"))]
            raise MlopsError(f"unknown model {model_name!r}; known models: {_listing(known)}") from None

    def _versions(self, model_name: str) -> list[dict]:
        model = self._model(self._get_registry(), model_name)
        return _rows(_call(model.show_versions, f"SHOW VERSIONS IN MODEL {model_name}"))

    def _resolve(self, model_name: str, version_or_alias: str) -> dict:
        rows = self._versions(model_name)
        wanted = _canonical(version_or_alias)
        for row in rows:
            if _canonical(row["name"]) == wanted:
                return row
        for row in rows:
            if wanted in _aliases(row):
                return row
        raise MlopsError(f"model {model_name!r} has no version or alias {version_or_alias!r}; versions: "
                         f"{_listing(r['name'] for r in rows)}; aliases: {_listing(_alias_map(rows))}")

    def _record(self, model_name: str, row: dict) -> dict:
        metadata = _loads(row.get("metadata")) or {}
        metrics = dict(metadata.get("metrics") or {})
        ours = _loads(metrics.pop(RECORD_METRIC, None)) or {}
        return {
            "model_name": model_name, "version_name": row["name"], "created_on": _iso(row.get("created_on")),
            "comment": row.get("comment") or None, "metrics": metrics, "metadata": ours.get("metadata") or {},
            "signature": ours.get("signature"), "lineage": ours.get("lineage") or {},
            "aliases": sorted(a for a in _aliases(row) if a not in SYSTEM_ALIASES),
            "location": self.location() or None, "files": {}, "sample_input": None,
        }

    def _platforms(self) -> list[str]:
        platforms = [self.target_platforms] if isinstance(self.target_platforms, str) else list(self.target_platforms or [])
        bad = [p for p in platforms if str(p).upper() not in PLATFORMS]
        if bad or not platforms:
            raise MlopsError(f"registry.target_platforms must be a non-empty list of {', '.join(PLATFORMS)}; got {platforms!r}")
        return [str(p).upper() for p in platforms]

    def _create_tag(self, tag: str) -> None:
        name = self.qualified(tag)
        _call(lambda: self._session().sql(f"CREATE TAG IF NOT EXISTS {name}").collect(), f"CREATE TAG {name}")

    def _record_move(self, model_name, alias, old, new, actor, reason, metrics, event, config_hash) -> dict:
        entry = {"when": _now(), "actor": actor or _user(), "alias": alias, "old_version": old,
                 "new_version": new, "reason": reason, "metrics": metrics or {}, "event": event,
                 "config_hash": config_hash}
        table = self.qualified(self.history_table)
        session = self._session()
        try:
            for statement in HISTORY_DDL:
                session.sql(statement.format(table=table)).collect()
            session.sql(HISTORY_INSERT.format(table=table), params=[
                entry["when"], entry["actor"], model_name, alias, old, new, reason, _json(entry["metrics"]),
                event, config_hash,
            ]).collect()
        except Exception as error:
            moved = {"refused": f"still on {old}"}.get(event) or (f"now on {new}" if new else "unset")
            raise MlopsError(f"alias {alias} of {model_name} is {moved}, but its promotion record could not be "
                             f"written to {table}: {_one_line(error)}") from error
        return entry


HISTORY_DDL = (  # the ALTERs bring a table written by an older release up to date
    "CREATE TABLE IF NOT EXISTS {table} (SEQ NUMBER AUTOINCREMENT, CHANGED_AT TIMESTAMP_NTZ, ACTOR VARCHAR, "
    "MODEL_NAME VARCHAR, ALIAS VARCHAR, OLD_VERSION VARCHAR, NEW_VERSION VARCHAR, REASON VARCHAR, METRICS VARIANT, "
    "EVENT VARCHAR, CONFIG_HASH VARCHAR)",
    "ALTER TABLE {table} ADD COLUMN IF NOT EXISTS EVENT VARCHAR",
    "ALTER TABLE {table} ADD COLUMN IF NOT EXISTS CONFIG_HASH VARCHAR",
)
HISTORY_INSERT = (
    "INSERT INTO {table} (CHANGED_AT, ACTOR, MODEL_NAME, ALIAS, OLD_VERSION, NEW_VERSION, REASON, METRICS, EVENT, "
    "CONFIG_HASH) SELECT TO_TIMESTAMP_NTZ(?), ?, ?, ?, ?, ?, ?, PARSE_JSON(?), ?, ?"
)


# ---- helpers -------------------------------------------------------------------------------------------

def snowflake_task(task: str):
    """The ``snowflake.ml.model.type_hints.Task`` for a framework task (binary, multiclass, regression)."""
    from snowflake.ml.model import type_hints

    if task not in SNOWFLAKE_TASKS:
        raise MlopsError(f"the Snowflake registry logs binary, multiclass or regression models, not {task!r}")
    return getattr(type_hints.Task, SNOWFLAKE_TASKS[task])


def _planned_task(task) -> str:
    if task in SNOWFLAKE_TASKS:
        return SNOWFLAKE_TASKS[task]
    return ("<from the trained model's task: " + " | ".join(f"{k}: {v}" for k, v in SNOWFLAKE_TASKS.items()) + ">")


def _registration_id(row: dict):
    ours = _loads(((_loads(row.get("metadata")) or {}).get("metrics") or {}).get(RECORD_METRIC)) or {}
    return ours.get("registration_id") if isinstance(ours, dict) else None


def _json_safe(value):
    """``value`` after a JSON round trip (numpy values become plain numbers); refuses what JSON cannot hold."""
    return json.loads(_json(value))


def _dollar_free_json(value) -> str:
    """``value`` as JSON text without a ``$`` (each one written ``\\u0024``, which JSON reads back as ``$``).

    snowflake-ml sends version metadata as ``SET METADATA=$$<json>$$``; a ``$$`` anywhere in the config
    would end that string early."""
    return _json(value).replace("$", "\\u0024")


def _core_package_dir() -> str:
    import mlops_framework

    return str(Path(mlops_framework.__file__).resolve().parent)


def _check_alias(alias) -> str:
    check_name(alias, "alias")
    alias = alias.upper()
    if AUTO_VERSION.match(alias):
        raise MlopsError(f"alias {alias!r} looks like a version name; choose another")
    if alias in SYSTEM_ALIASES:
        raise MlopsError(f"{alias} is a Snowflake system alias and cannot be set; choose another")
    return alias


def _canonical(name) -> str:
    """A name as Snowflake stores an unquoted identifier: upper-cased."""
    name = str(name)
    return name[1:-1] if len(name) > 1 and name[0] == name[-1] == '"' else name.upper()


def _next_version(names) -> str:
    numbers = [int(m.group(1)) for name in names if (m := AUTO_VERSION.match(str(name)))]
    return f"V{max(numbers, default=0) + 1}"


def _rows(frame) -> list[dict]:
    if frame is None or len(frame) == 0:
        return []
    return [{str(k): v for k, v in row.items()} for row in frame.to_dict("records")]


def _aliases(row: dict) -> list[str]:
    value = _loads(row.get("aliases"))
    return [str(a).upper() for a in value] if isinstance(value, list) else []


def _alias_map(rows) -> dict[str, str]:
    return dict(sorted((alias, row["name"]) for row in rows for alias in _aliases(row) if alias not in SYSTEM_ALIASES))


def _loads(value):
    if value is None or isinstance(value, (dict, list)):
        return value
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return None


def _json(value) -> str:
    def default(obj):
        if hasattr(obj, "tolist"):
            return obj.tolist()
        if isinstance(obj, (dt.date, dt.datetime)):
            return obj.isoformat()
        raise TypeError(f"{type(obj).__name__} is not JSON serialisable")

    try:
        return json.dumps(value, default=default)
    except (TypeError, ValueError) as error:
        raise MlopsError(f"registry records must be JSON-serialisable: {error}") from None


def _same_value(a, b) -> bool:
    if a == b:
        return True
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)


def _natural_key(name: str):
    m = AUTO_VERSION.match(name)
    return (0, int(m.group(1)), name) if m else (1, 0, name)


def _listing(names) -> str:
    names = list(names)
    return ", ".join(sorted(map(str, names), key=_natural_key)) if names else "(none)"


def _iso(value):
    if value is None:
        return None
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None).isoformat()


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return "unknown"


def _dollar_quoted(value: str) -> str:
    """``value`` as snowflake-ml writes a comment or tag value (``log_model`` refuses a ``$$`` inside)."""
    return f"$${value}$$"


def _call(fn, what: str):
    try:
        return fn()
    except MlopsError:
        raise
    except Exception as error:
        raise MlopsError(f"{what} failed: {_one_line(error)}") from error
