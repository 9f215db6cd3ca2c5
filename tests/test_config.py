"""Composition: every experiment and option composes; bad configs are refused once, up front, by name."""

from pathlib import Path

import pytest

from mlops_framework import config, hookspecs
from mlops_framework.errors import MlopsError
from mlops_framework.pipeline import build_run
from mlops_framework.plugins import Components, get_plugin_manager

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p.stem for p in (REPO / "experiments").glob("*.yaml"))


@pytest.fixture(scope="module")
def components():
    return Components(get_plugin_manager())


def build(overrides, components):
    cfg = config.compose(overrides, components)
    config.check(cfg, components)
    return build_run(config.resolved(cfg), components)


def test_there_are_experiments():
    assert "mortgage_xgb" in EXPERIMENTS


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_builds(experiment, components, home):
    run = build([f"experiment={experiment}"], components)
    assert run.stages and run.backend.plan(run)


@pytest.mark.parametrize("group", ["data", "model", "pipeline", "scoring", "features", "split", "tags"])
def test_every_core_option_composes(group, components, home):
    """Required values (``???``) are filled with placeholders; plugin options are the plugins' tests' job."""
    from omegaconf import OmegaConf

    for option in sorted(f.stem for f in (config.conf_dir() / group).glob("*.yaml")):
        overrides = [f"{group}={option}"]
        missing = OmegaConf.missing_keys(config.compose(overrides, components))
        run = build([*overrides, *(f"{key}=placeholder" for key in missing)], components)
        plan = run.backend.plan(run)
        assert len(plan) == len(run.stages) > 0, f"{group}={option} builds no stages"
        assert [line.split(":")[0] for line in plan] == [stage.name for stage in run.stages]


def test_defaults_are_the_documented_ones(components, home):
    run = build([], components)
    assert [s.name for s in run.stages] == ["load", "validate", "features", "split", "train", "evaluate", "register", "score"]
    assert run.registration.model_name == "MORTGAGE_XGB"
    assert run.scoring.sink.describe().endswith("PREDICTIONS_WITH_GROUND_TRUTH") or "PREDICTIONS_WITH_GROUND_TRUTH" in run.scoring.sink.describe()
    assert str(home) in run.registry.describe()


def test_missing_required_values_are_reported_together(components):
    cfg = config.compose(["data=csv"], components)
    with pytest.raises(MlopsError, match=r"missing required config values: data.path"):
        config.check(cfg, components)


def test_unknown_option_names_the_group(components):
    with pytest.raises(MlopsError, match="Could not find 'data/excel'"):
        config.compose(["data=excel"], components)


def test_typo_override_key_is_refused(components):
    with pytest.raises(MlopsError, match="rows_per_wek"):
        config.compose(["data.rows_per_wek=3"], components)


def test_typo_key_in_a_config_file_is_refused(components, home):
    with pytest.raises(MlopsError, match=r"unknown key data.rows_per_wek \(did you mean 'rows_per_week'\?\)"):
        build(["+data.rows_per_wek=3"], components)
    with pytest.raises(MlopsError, match=r"unknown key features.encodng"):
        build(["+features.encodng=native"], components)


def test_bad_values_are_refused(components, home):
    with pytest.raises(MlopsError, match="features.encoding must be one of onehot, native"):
        build(["features.encoding=ordinal"], components)
    with pytest.raises(MlopsError, match="split.holdout must be between 0 and 1"):
        build(["split.holdout=1.5"], components)
    with pytest.raises(MlopsError, match="unknown stages trian"):
        build(["pipeline.stages=[load,trian]"], components)


def test_home_moves_with_mlops_home_and_paths_home(components, monkeypatch, tmp_path):
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "a"))
    assert str(tmp_path / "a") in build([], components).registry.describe()
    assert str(tmp_path / "b") in build([f"paths.home={tmp_path / 'b'}"], components).registry.describe()


def test_secrets_are_redacted_from_resolved_configs():
    data = {"connection": {"password": "hunter2", "private_key_file": "/k.p8", "nested": [{"token": "t"}]}}
    redacted = config.redact(data)
    assert redacted["connection"]["password"] == config.REDACTED
    assert redacted["connection"]["private_key_file"] == "/k.p8"
    assert redacted["connection"]["nested"][0]["token"] == config.REDACTED


def test_a_plugin_config_dir_adds_options(tmp_path, home):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "fixed.yaml").write_text("kind: synthetic\nweeks: 2\nrows_per_week: 7\n")
    (tmp_path / "features").mkdir()  # the data option's own features option, found by name (else: inferred roles)
    (tmp_path / "features" / "fixed.yaml").write_text("defaults:\n  - mortgage\n")

    class ConfPlugin:
        @hookspecs.hookimpl
        def register_config_dirs(self, register):
            register(tmp_path)

    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(ConfPlugin())
    components = Components(pm)
    assert "fixed" in config.group_options(components)["data"]
    run = build(["data=fixed"], components)
    assert run.source.rows_per_week == 7


YAML_CASES = """\
float: 1e3
exponent: 1.5e-3
sexagesimal: 1:30.5
dotted: .5
version: 1.10
date: 2001-12-14
yes_no: [yes, no, on, off]
nulls: [null, ~, ""]
interpolation: ${paths.home}/x
quoted: '${oc.env:HOME}'
path: !!python/object/apply:pathlib.Path [a, b]
nested: {a: [1, {b: c}], "k: v": 2}
"""


def test_config_files_are_parsed_by_libyaml_with_omegaconfs_own_rules(components, home):
    """Composing parses YAML with libyaml (pure-Python PyYAML was 10-15% of composing), giving what
    OmegaConf's own loader gives: its floats, no timestamps, its tags, its refusal of duplicate keys."""
    import omegaconf._utils
    import yaml

    config.compose([], components)
    loader = omegaconf._utils.get_yaml_loader()
    assert issubclass(loader, yaml.CSafeLoader)
    reference = config._OMEGACONF_LOADER
    assert not issubclass(reference, yaml.CSafeLoader)
    assert yaml.load(YAML_CASES, Loader=loader) == yaml.load(YAML_CASES, Loader=reference)
    for loading in (loader, reference):
        with pytest.raises(yaml.constructor.ConstructorError, match="found duplicate key a"):
            yaml.load("x:\n  a: 1\n  a: 2\n", Loader=loading)



def test_hydra_files_are_written_by_libyaml_with_omegaconfs_own_text(components, home):
    """``OmegaConf.to_yaml`` (Hydra's ``.hydra`` files) runs on libyaml's emitter with OmegaConf's representers:
    the text of OmegaConf's pure-Python dumper, for composed configs and for awkward values; text where the
    two emitters differ (a NEL, a line separator, a control character) is written by the pure-Python one."""
    from pathlib import Path

    import yaml
    from omegaconf import OmegaConf
    from omegaconf._utils import get_omega_conf_dumper

    def pure_python(cfg):
        container = OmegaConf.to_container(cfg, enum_to_str=True)
        return yaml.dump(container, default_flow_style=False, allow_unicode=True, sort_keys=False,
                         Dumper=get_omega_conf_dumper())

    composed = config.compose(["hydra/sweeper=mlops_optuna", "pipeline=train"], components)
    awkward = OmegaConf.create({**RECORD, "odd": ["x: y", "*star", "- dash", "~", "null", "2024-01-01", ".5", "+1",
                                                  "12:30:00", "? q", "!tag", "%p", "@at", "`b", "'", '"'],
                                "path": Path("/data/x.parquet"), 3: {"k": "v"}})
    unlike = OmegaConf.create({"odd": ["\x85", "a\u2028b", "bell\x07", "\ufeffbom"], "when": "${now:%Y}"})
    for cfg in (composed, awkward, unlike):
        assert OmegaConf.to_yaml(cfg) == pure_python(cfg)
    assert config._emitted_alike(OmegaConf.to_container(awkward)) and not config._emitted_alike(OmegaConf.to_container(unlike))
    assert OmegaConf.to_yaml is config._to_yaml
    assert config._emitted_alike(OmegaConf.to_container(composed)), "composed configs take libyaml's emitter"


RECORD = {"paths": {"home": "/tmp/h"}, "seed": 42, "empty": None, "flags": [True, False, "yes", "no", "on"],
          "numbers": [1, -2.5, 1e-12, float("inf"), "1e3", "0x1F", "007"], "when": "2001-12-14", "colon": "a: b",
          "hash": "a #b", "quote": "it's \"x\"", "unicode": "naïve — ✓", "multiline": "one\ntwo\n",
          "long": "word " * 40, "nested": {"list": [{"k": [1, {"z": []}]}, {}], "ünï": "${oc.env:HOME}"},
          "sql": "WEEK <= 5 AND NAME = 'x'", "tabs": "a\tb", "blank": "", "spaces": "  padded  "}


def test_run_records_are_read_and_written_by_libyaml_exactly_as_by_pyyaml():
    """Hydra's record of a run and ``resolved_config.yaml`` are parsed and written with libyaml (the
    pure-Python parser and emitter were ~0.1 s of every run): the same values and the same text."""
    import yaml

    text = yaml.safe_dump(RECORD, sort_keys=False)
    assert config.dump_yaml(RECORD) == text
    assert config.load_yaml(text) == yaml.safe_load(text) == RECORD  # Hydra's files: tests/test_hydra_files.py
