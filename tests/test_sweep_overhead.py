"""Work a sweep does less often or earlier than before, with the same outcome (docs/benchmarks.md, sweeps)."""

from mlops_framework import config, pipeline
from mlops_framework.plugins import Components, get_plugin_manager


def _run(overrides, output_dir):
    components = Components(get_plugin_manager())
    cfg = config.compose(overrides, components)
    config.check(cfg, components)
    return pipeline.build_run(config.resolved(cfg), components, output_dir=output_dir)


def test_a_run_reads_its_training_source_schema_once(tmp_path, monkeypatch):
    run = _run(["pipeline=train", "data.weeks=2", "data.rows_per_week=200", "features.id=LOAN_ID"], tmp_path)
    assert "LOAN_ID" not in run.features.columns, "load asks the schema only for an id outside the columns"
    calls = []
    source_type = type(run.source)
    original = source_type.schema
    monkeypatch.setattr(source_type, "schema", lambda self: calls.append(self) or original(self))
    run.stages = [stage for stage in run.stages if stage.name == "load"]
    pipeline.run_stages(run)
    assert calls == [run.source]
    assert "LOAN_ID" in run.results["frame"].columns


def test_generated_data_describes_itself_as_duckdb_reads_it_without_generating():
    import pytest

    from mlops_framework.errors import MlopsError
    from mlops_local.sources import SyntheticSource, _Source

    for source in (SyntheticSource(weeks=2, rows_per_week=50, seed=1),
                   SyntheticSource(weeks=3, rows_per_week=20, where="WEEK IN (SELECT 2)", drift_from_week=2)):
        assert source.schema() == _Source.schema(source)  # DuckDB reading the generated rows
    with pytest.raises(MlopsError, match="rows_per_week"):
        SyntheticSource(rows_per_week=0).schema()


def test_a_sweep_with_a_bad_override_is_one_error_though_its_workers_start_first(mlops):
    result = mlops("run", "-m", "hydra/sweeper=mlops_optuna", "model.params.max_depth=range(1,3", "pipeline=train")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("mlops: error: 'model.params.max_depth=range(1,3' is not a valid override (")


def test_package_versions_are_read_once_a_process_and_each_caller_gets_its_own(monkeypatch):
    import importlib.metadata

    from mlops_framework import lineage

    installed = {}
    for name in lineage.PACKAGES:
        try:
            installed[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    first = lineage.package_versions()
    assert first == installed and "xgboost" in first
    first["xgboost"] = "changed by a caller"
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "read again")
    assert lineage.package_versions() == installed
