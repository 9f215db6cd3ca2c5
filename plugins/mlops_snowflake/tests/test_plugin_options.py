"""Every config option the plugin ships composes, passes the checks and builds a run, offline (required
values filled with placeholders), as the core's options do in tests/test_config.py."""

import pytest
from omegaconf import OmegaConf

from mlops_framework import config
from mlops_framework.pipeline import build_run
from mlops_framework.plugins import Components, get_plugin_manager
from mlops_snowflake import CONFIG_DIR

OPTIONS = sorted((path.parent.name, path.stem) for path in CONFIG_DIR.glob("*/*.yaml"))


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_plugin_option_composes_and_builds(group, option, tmp_path, monkeypatch):
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "home"))
    components = Components(get_plugin_manager())
    overrides = [f"{group}={option}"]
    missing = OmegaConf.missing_keys(config.compose(overrides, components))
    cfg = config.compose([*overrides, *(f"{key}=placeholder" for key in missing)], components)
    config.check(cfg, components)
    assert build_run(config.resolved(cfg), components).stages
