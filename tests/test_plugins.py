"""The plugin mechanism: built-ins and external plugins go through the same hooks."""

import sys
import textwrap

import pytest

from mlops_framework import hookspecs
from mlops_framework.errors import MlopsError
from mlops_framework.plugins import Components, check_arguments, get_plugin_manager


class ConstantSource:
    """A test data source: the same rows every time."""

    def __init__(self, rows=10, where=None):
        self.rows = rows

    def describe(self):
        return f"{self.rows} constant rows"


class TestPlugin:
    @hookspecs.hookimpl
    def register_data_sources(self, register):
        register("constant", ConstantSource)


def test_builtins_are_registered_through_the_hooks():
    components = Components(get_plugin_manager(load_entrypoints=False))
    assert {"synthetic", "csv", "parquet"} <= set(components.kinds["data"])
    assert set(components.kinds["registry"]) >= {"local"}
    assert list(components.stages)[:8] == ["load", "validate", "features", "split", "train", "evaluate", "register", "score"]


def test_a_plugin_registered_on_the_manager_adds_a_kind():
    pm = get_plugin_manager(load_entrypoints=False)
    plugin = TestPlugin()
    pm.register(plugin)
    try:
        components = Components(pm)
        source = components.build("data", {"kind": "constant", "rows": 3}, where="data")
        assert isinstance(source, ConstantSource) and source.rows == 3
    finally:
        pm.unregister(plugin)
    assert "constant" not in Components(pm).kinds["data"]


def test_two_plugins_claiming_one_kind_are_refused():
    pm = get_plugin_manager(load_entrypoints=False)

    class Clash:
        @hookspecs.hookimpl
        def register_data_sources(self, register):
            register("csv", ConstantSource)

    pm.register(Clash())
    with pytest.raises(MlopsError, match="two plugins register the data kind 'csv'"):
        Components(pm)


def test_a_hookimpl_without_a_spec_fails_loudly(tmp_path, monkeypatch):
    (tmp_path / "typo_plugin.py").write_text(textwrap.dedent("""
        from mlops_framework.hookspecs import hookimpl

        @hookimpl
        def register_data_source(register):
            pass
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("MLOPS_PLUGINS", "typo_plugin")
    with pytest.raises(MlopsError, match="typo_plugin.*no spec"):
        get_plugin_manager()


def test_a_plugin_that_raises_on_import_is_named(tmp_path, monkeypatch):
    (tmp_path / "broken_plugin.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("MLOPS_PLUGINS", "broken_plugin")
    with pytest.raises(MlopsError, match="plugin 'broken_plugin'.*RuntimeError: boom at import"):
        get_plugin_manager()
    sys.modules.pop("broken_plugin", None)


def test_unknown_kind_lists_the_registered_ones():
    components = Components(get_plugin_manager(load_entrypoints=False))
    with pytest.raises(MlopsError, match="unknown data kind 'excel'; registered kinds: .*csv"):
        components.build("data", {"kind": "excel"}, where="data")


def test_typo_keys_are_refused_with_a_suggestion():
    with pytest.raises(MlopsError, match=r"unknown key data.rowz \(did you mean 'rows'\?\)"):
        check_arguments(ConstantSource, {"rowz": 3}, where="data")


def test_every_hookspec_is_documented_and_implemented_by_a_builtin_or_a_test():
    """datasette's rule: every hook documented; every register_* hook exercised by the built-ins."""
    import mlops_local as local

    specs = [name for name in dir(hookspecs) if name.startswith(("register_", "before_", "after_", "on_"))]
    assert specs
    for name in specs:
        assert (getattr(hookspecs, name).__doc__ or "").strip(), f"hookspec {name} has no docstring"
    lifecycle = {"before_stage_run", "after_stage_run", "on_stage_error"}
    for name in specs:
        if name not in lifecycle and name != "register_config_dirs":
            assert hasattr(local, name), f"no built-in implements {name}"


def test_lifecycle_hooks_observe_every_stage_in_order(tmp_path, home, monkeypatch, capsys):
    """A plugin loaded through MLOPS_PLUGINS sees before/after for each stage, and on_stage_error on failure."""
    from mlops_framework.cli import main
    from run_sizes import SMALL

    log = tmp_path / "events.log"
    (tmp_path / "recording_plugin.py").write_text(textwrap.dedent(f"""
        from mlops_framework.hookspecs import hookimpl

        def _write(line):
            with open({str(log)!r}, "a") as f:
                f.write(line + "\\n")

        @hookimpl
        def before_stage_run(stage, run):
            _write("before " + stage.name)

        @hookimpl
        def after_stage_run(stage, run, seconds):
            _write("after " + stage.name)

        @hookimpl
        def on_stage_error(stage, run, error):
            _write("error " + stage.name + " " + type(error).__name__)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("MLOPS_PLUGINS", "recording_plugin")
    assert main(["run", "pipeline=train", *SMALL]) == 0
    stages = ["load", "validate", "features", "split", "train", "evaluate", "register"]
    assert log.read_text().split("\n")[:-1] == [f"{when} {name}" for name in stages for when in ("before", "after")]
    log.unlink()
    with open(home / "registry" / "MORTGAGE_XGB" / "versions" / "v1" / "artifact" / "model.ubj", "ab") as artifact:
        artifact.write(b"tampered")  # found by the score stage, which checks the files it loads
    assert main(["run", "pipeline=score", *SMALL[:2]]) == 2
    assert log.read_text().split("\n")[:-1] == ["before score", "error score MlopsError"]
    sys.modules.pop("recording_plugin", None)
