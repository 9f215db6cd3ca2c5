"""The public contracts hold mechanically: plugins import only public core modules, every registered lazy
"module:Class" imports and satisfies its contract, no attribute probe decides what a component can do,
nested options are built through the plugin manager, stages never read the config, and every runner's
summary has the one shape of ``runner.RunResult``."""

import ast
import json
import uuid
from pathlib import Path

import pytest

from mlops_framework import config, contracts
from mlops_framework.pipeline import build_run
from mlops_framework.plugins import Components, get_plugin_manager
from mlops_framework.runner import RunResult

REPO = Path(__file__).resolve().parents[1]
SNOWFLAKE = REPO / "plugins" / "mlops_snowflake"
TABLE_CONTRACTS = {"data": contracts.DataSource, "sink": contracts.Sink, "registry": contracts.Registry,
                   "backend": contracts.Backend, "notifier": contracts.Notifier, "tracker": contracts.Tracker}
SMALL = ["data.weeks=2", "data.rows_per_week=200", "model.params.n_estimators=5", "model.params.n_jobs=1"]


def _module_file(name):
    package = REPO / name.replace(".", "/") / "__init__.py"
    return package if package.exists() else REPO / (name.replace(".", "/") + ".py")


def builtin_plugin_modules():
    """The built-in plugin's modules: the ``mlops_local`` package."""
    return sorted(".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
                  for path in (REPO / "mlops_local").rglob("*.py"))


def _core_imports(path, prefix="mlops_framework"):
    imports = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(prefix):
            if node.module == prefix:
                imports += [f"{prefix}.{alias.name}" for alias in node.names]
            else:
                imports.append(node.module)
        elif isinstance(node, ast.Import):
            imports += [alias.name for alias in node.names if alias.name.startswith(prefix)]
    return imports


def test_the_builtin_plugin_imports_only_public_core_modules():
    plugin = builtin_plugin_modules()
    assert {"mlops_local", "mlops_local.registry", "mlops_local.sinks", "mlops_local.sources"} <= set(plugin)
    wrong = [(module, imported) for module in plugin for imported in _core_imports(_module_file(module))
             if imported not in contracts.PUBLIC_MODULES]
    assert wrong == []


def test_the_core_imports_no_plugin():
    core = sorted((REPO / "mlops_framework").rglob("*.py"))
    assert len(core) > 20
    wrong = [(path.name, imported) for path in core for prefix in ("mlops_local", "mlops_snowflake", "mlops_mlflow")
             for imported in _core_imports(path, prefix)]
    assert wrong == []


def test_every_registered_kind_of_the_builtin_plugin_lives_in_its_package():
    components = Components(get_plugin_manager(load_entrypoints=False))
    named = {value.partition(":")[0] for table in components.kinds.values() for value in table.values()}
    assert named and all(module.startswith("mlops_local") for module in named), named


def test_the_snowflake_plugin_imports_only_public_core_modules():
    files = [*SNOWFLAKE.joinpath("mlops_snowflake").rglob("*.py"), *SNOWFLAKE.joinpath("hydra_plugins").rglob("*.py")]
    assert len(files) > 5
    wrong = [(path.name, imported) for path in files for imported in _core_imports(path)
             if imported not in contracts.PUBLIC_MODULES]
    assert wrong == []


def test_public_modules_exist_and_import_nothing_heavy_at_start():
    import subprocess
    import sys

    code = ("import sys, importlib; [importlib.import_module(m) for m in %r]; "
            "print(sorted(m for m in ('pandas', 'sklearn', 'xgboost', 'snowflake.snowpark', 'snowflake.ml') "
            "if m in sys.modules))"
            % [m for m in contracts.PUBLIC_MODULES if m in ("mlops_framework.contracts", "mlops_framework.runner",
                                                             "mlops_framework.conformance")])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert all(_module_file(m).exists() or (REPO / m / "__init__.py").exists() for m in contracts.PUBLIC_MODULES)


def test_every_registered_lazy_string_imports_and_follows_its_contract():
    components = Components(get_plugin_manager())
    checked = 0
    for table, entries in components.kinds.items():
        for kind in list(entries):
            cls = components.implementation(table, kind)
            assert isinstance(cls, type), (table, kind)
            assert issubclass(cls, TABLE_CONTRACTS[table]), f"{table} {kind}: {cls.__name__} lacks contract methods"
            checked += 1
    assert "snowflake" in components.kinds["registry"] and checked >= 15
    assert all(isinstance(stage, contracts.Stage) for stage in components.stages.values())


CAPABILITY_NAMES = {name for protocol in (
    contracts.SqlSource, contracts.WarehouseSource, contracts.LineageSource, contracts.ReadableSink, contracts.ReportingWriter,
    contracts.WarehouseSink, contracts.AuditedRegistry, contracts.RollbackRegistry, contracts.DeletingRegistry,
    contracts.PlannedRegistry,
    contracts.WarehouseRegistry, contracts.Registry, contracts.DataSource, contracts.Sink, contracts.Backend)
    for name in vars(protocol) if not name.startswith("_")}
COMPONENT_NAMES = ("registry", "source", "sink", "backend", "spine")
ALLOWED_PROBES = {
    # Hydra's launchers and sweepers (not backends) describing their own trials for `mlops plan -m`; Hydra's
    # own (BasicLauncher, BasicSweeper) have no plan, so the planner asks
    ("mlops_framework/sweep_plan.py", "launcher", "plan"),
    ("mlops_framework/sweep_plan.py", "sweeper", "plan"),
    ("mlops_framework/sweep_plan.py", "sweeper", "split_arguments"),
}


def probes():
    """(file, object, attribute) of every hasattr/getattr with a constant attribute name."""
    files = [*REPO.joinpath("mlops_framework").glob("*.py"), *SNOWFLAKE.joinpath("mlops_snowflake").rglob("*.py"),
             *SNOWFLAKE.joinpath("hydra_plugins").rglob("*.py")]
    found = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("hasattr", "getattr")
                    and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)):
                found.append((str(path.relative_to(REPO)), ast.unparse(node.args[0]), node.args[1].value))
    return found


def test_no_attribute_probe_decides_what_a_component_can_do():
    assert len(CAPABILITY_NAMES) > 20
    suspicious = [(path, obj, attribute) for path, obj, attribute in probes()
                  if (attribute in CAPABILITY_NAMES or any(n in obj.lower() for n in COMPONENT_NAMES))
                  and (path, obj, attribute) not in ALLOWED_PROBES]
    assert suspicious == []
    lifecycle = (REPO / "mlops_framework" / "lifecycle.py").read_text()
    assert "inspect.signature" not in lifecycle  # no registry method is called by its signature


def test_the_probe_scan_sees_the_probes_it_must_refuse(tmp_path):
    source = 'if hasattr(run.registry, "record_refusal"):\n    pass\nx = getattr(values, "tolist", None)\n'
    calls = [(ast.unparse(n.args[0]), n.args[1].value) for n in ast.walk(ast.parse(source))
             if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in ("hasattr", "getattr")]
    flagged = [c for c in calls if c[1] in CAPABILITY_NAMES or any(n in c[0].lower() for n in COMPONENT_NAMES)]
    assert flagged == [("run.registry", "record_refusal")]


# ------------------------------------------------------------------------------ nested options
def test_nested_kind_options_are_built_through_the_plugin_manager(tmp_path):
    from mlops_local.sources import ParquetSource, SyntheticSource

    components = Components(get_plugin_manager(load_entrypoints=False))
    source = components.build("data", {
        "kind": "feature_store", "views": ["V"],
        "store": {"warehouse": str(tmp_path / "w.duckdb"), "entities": {"E": {"join_keys": ["K"]}},
                  "feature_views": {"V": {"entities": ["E"], "timestamp_col": "TS", "features": ["F"],
                                          "source": {"kind": "synthetic", "weeks": 1}}}},
        "spine": {"source": {"kind": "parquet", "path": "spine.parquet"}, "timestamp": "TS"},
    }, where="data")
    assert isinstance(source.store["feature_views"]["V"]["source"], SyntheticSource)
    assert isinstance(source.spine["source"], ParquetSource)
    with pytest.raises(Exception, match=r"unknown key data.spine.source.paht"):
        components.build("data", {"kind": "feature_store", "views": ["V"], "store": {},
                                  "spine": {"source": {"kind": "parquet", "paht": "x"}}}, where="data")


def test_the_feature_store_builds_no_plugin_manager():
    text = (REPO / "mlops_local" / "feature_store.py").read_text()
    assert "get_plugin_manager" not in text and "Components" not in text


# ------------------------------------------------------------------------------ stages and runner
class _ConfigTrap(dict):
    def __getitem__(self, key):
        raise AssertionError(f"a stage read run.config[{key!r}]")

    def get(self, key, default=None):
        raise AssertionError(f"a stage read run.config.get({key!r})")


def test_no_stage_reads_the_config(tmp_path, monkeypatch):
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "home"))
    components = Components(get_plugin_manager(load_entrypoints=False))
    cfg = config.compose([*SMALL, "pipeline.stages=[load,validate,features,split,train,evaluate,register,promote,"
                                  "score]"], components)
    config.check(cfg, components)
    resolved = config.resolved(cfg)
    run = build_run(resolved, components, output_dir=tmp_path / "out")
    (tmp_path / "out").mkdir()
    run.config = _ConfigTrap(resolved)
    run.backend.execute(run)
    version = run.results["version"]
    assert version["lineage"]["config"] == resolved  # the lineage record came from run.provenance
    assert run.registry.history("MORTGAGE_XGB")[-1]["config_hash"] == run.provenance.config_hash
    assert run.results["summary"]["promote 1"].startswith(f"{version['version_name']} -> PRODUCTION")


def test_the_run_result_has_one_shape_and_round_trips(tmp_path, monkeypatch):
    from mlops_framework import runner

    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "home"))
    components = Components(get_plugin_manager(load_entrypoints=False))
    cfg = config.compose([*SMALL, "pipeline=train"], components)
    resolved, _ = runner.prepare(cfg, components)
    out = tmp_path / "runs" / uuid.uuid4().hex[:6]
    result = runner.execute(resolved, components, out, announce=lambda run: run.summarize("note", "hello"))
    saved = json.loads((out / "summary.json").read_text())
    assert set(saved) == {"model", "version", "registry", "metrics", "scored", "outputs", "note", "task", "features", "data"}
    assert saved["version"] == "v1" and saved["note"] == "hello" and "holdout_f1" in saved["metrics"]
    assert runner.read_result(out) == result == RunResult.from_dict(result.to_dict())
    assert result.lines()[0] == "model     MORTGAGE_XGB v1" and "note      hello" in result.lines()


def test_the_ml_job_entrypoint_and_launcher_use_the_runner():
    entrypoint = (SNOWFLAKE / "mlops_snowflake" / "job_entrypoint.py").read_text()
    launcher = (SNOWFLAKE / "hydra_plugins" / "mlops_ml_job_launcher" / "launcher.py").read_text()
    assert "runner.execute(" in entrypoint and "build_run" not in entrypoint
    assert "runner.prepare(" in launcher and "RunResult.from_dict(" in launcher and "build_run" not in launcher


class PlainRegistry:
    """A registry with the base contract only: no refusals, no rollback, no config hash on set_alias."""

    def __init__(self, inner):
        self.inner = inner
        for name in ("log_model", "load_model", "get_version", "versions", "models", "aliases", "unset_alias",
                     "set_tag", "history", "describe"):
            setattr(self, name, getattr(inner, name))

    def set_alias(self, model_name, version_name, alias, *, reason=None, metrics=None):
        return self.inner.set_alias(model_name, version_name, alias, reason=reason, metrics=metrics)


def test_promote_calls_a_registry_without_the_audit_capability_by_its_contract(tmp_path, monkeypatch):
    from mlops_local.registry import LocalRegistry

    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "home"))
    components = Components(get_plugin_manager(load_entrypoints=False))
    cfg = config.compose([*SMALL, "pipeline.stages=[load,validate,features,split,train,evaluate,register,promote]"],
                         components)
    run = build_run(config.resolved(cfg), components)
    assert isinstance(run.registry, contracts.AuditedRegistry)
    run.registry = PlainRegistry(run.registry)
    assert isinstance(run.registry, contracts.Registry) and not isinstance(run.registry, contracts.AuditedRegistry)
    run.backend.execute(run)  # set_alias without config_hash: a TypeError if promote passed it
    assert run.results["promotions"][0]["promoted"] is True
    assert isinstance(run.registry.inner, LocalRegistry) and run.registry.history("MORTGAGE_XGB")[0]["config_hash"] is None
