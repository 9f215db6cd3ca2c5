"""A sweep's trial configs, composed once per group choice (``mlops_framework.trial_composition``),
equal Hydra's own composition of each trial: values, groups, the optional ``connection`` group a plugin's
search path brings, Hydra's override records."""

import importlib

import pytest
from hydra.core.plugins import Plugins
from omegaconf import OmegaConf

from mlops_framework import trial_composition as composition
from mlops_framework import config
from mlops_framework.plugins import Components, get_plugin_manager

SWEEP = ["hydra/sweeper=mlops_optuna", "hydra.sweeper.n_trials=2", "pipeline=train",
         "model.params.max_depth=range(1,3)"]
TRIALS = [
    ["pipeline=train", "model.params.max_depth=1"],
    ["pipeline=train", "model.params.max_depth=2", "seed=7"],
    ["pipeline=train", "connection.role=ANALYST", "+extra.note='a b'"],
    ["pipeline=train", "model.params.max_depth=4"],
    ["pipeline=train", "model=hist_gradient_boosting", "model.params.max_iter=30"],
    ["pipeline=train", "experiment=mortgage_xgb", "data.weeks=3"],
    ["pipeline=train", "hydra.job.name=renamed", "~tags", "registry={kind: local, model_name: M}", "~seed"],
]


@pytest.fixture
def loader_and_sweep():
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    overrides = [*SWEEP, *config.search_path_overrides(Components(get_plugin_manager()))]
    with initialize_config_dir(config_dir=str(config.conf_dir()), version_base="1.3", job_name="mlops"):
        loader = GlobalHydra.instance().config_loader()
        yield loader, loader.load_configuration("config", overrides, run_mode=RunMode.MULTIRUN)


def as_data(cfg):
    return OmegaConf.to_container(cfg, resolve=False), OmegaConf.is_struct(cfg), OmegaConf.is_readonly(cfg.hydra)


def test_trial_configs_equal_hydras_and_compose_each_group_choice_once(loader_and_sweep, monkeypatch):
    loader, sweep = loader_and_sweep
    assert "connection" in sweep  # the Snowflake plugin's search path brings the optional group
    expected = [as_data(loader.load_sweep_config(sweep, trial)) for trial in TRIALS]
    composed = []
    real = type(loader).load_configuration
    monkeypatch.setattr(type(loader), "load_configuration",
                        lambda self, *args, **kwargs: composed.append(kwargs["overrides"]) or real(self, *args, **kwargs))
    for trial, hydras in zip(TRIALS, expected):
        assert as_data(composition.load_sweep_config(loader, sweep, trial)) == hydras, trial
    assert expected[2][0]["connection"]["role"] == "ANALYST" and "tags" not in expected[6][0]
    # the first four trials choose the same groups: Hydra composed them once
    assert len(composed) == len(TRIALS) - 3
    composition.load_sweep_config(loader, sweep, TRIALS[-1])
    Plugins._scan_all_plugins([importlib.import_module("hydra_plugins")])  # as in a worker, between trials
    composition.load_sweep_config(loader, sweep, TRIALS[-1])
    assert len(composed) == len(TRIALS) - 3, "Hydra's plugin scan emptied the cache"
    assert not any("max_depth" in line for lines in composed for line in lines)


def test_a_changed_config_file_is_composed_again(loader_and_sweep, tmp_path):
    import shutil

    loader, sweep = loader_and_sweep
    conf = tmp_path / "conf"
    shutil.copytree(config.conf_dir(), conf)
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf), version_base="1.3", job_name="mlops"):
        loader = GlobalHydra.instance().config_loader()
        first = composition.load_sweep_config(loader, sweep, TRIALS[0])
        (conf / "seed.txt").write_text("")  # a file added: composed again, same config
        assert as_data(composition.load_sweep_config(loader, sweep, TRIALS[0])) == as_data(first)
        model = conf / "model" / "xgboost.yaml"
        model.write_text(model.read_text() + "\nextra_setting: 5\n")
        changed = composition.load_sweep_config(loader, sweep, TRIALS[0])
        assert changed.model.extra_setting == 5
        assert as_data(changed) == as_data(loader.load_sweep_config(sweep, TRIALS[0]))


@pytest.mark.parametrize("bad", ["model.parms.max_depth=1", "hydra.sweeper.n_trials=many", "~seed@x"])
def test_a_bad_value_override_fails_as_hydra_fails(loader_and_sweep, bad):
    from hydra.errors import ConfigCompositionException

    loader, sweep = loader_and_sweep
    with pytest.raises(ConfigCompositionException) as hydras:
        loader.load_sweep_config(sweep, [bad])
    with pytest.raises(ConfigCompositionException) as ours:
        composition.load_sweep_config(loader, sweep, [bad])
    assert (str(ours.value), repr(ours.value.__cause__)) == (str(hydras.value), repr(hydras.value.__cause__))


def test_a_workers_trials_keep_its_plugin_registry_instead_of_scanning_the_plugins_again(monkeypatch):
    import copy

    from hydra.core.singleton import Singleton

    from hydra_plugins.mlops_local_launcher.launcher import restore_singletons

    saved = Singleton._instances
    scans = []
    real = Plugins._scan_all_plugins
    monkeypatch.setattr(Plugins, "_scan_all_plugins", staticmethod(lambda **kwargs: scans.append(1) or real(**kwargs)))
    try:
        registry = Plugins.instance()
        sent = Singleton.get_state()  # what a sweep sends each trial: without Hydra's Plugins
        assert Plugins not in sent["instances"]
        for _ in range(2):
            state = copy.deepcopy(sent)  # a fresh copy per trial, as unpickled in a worker
            restore_singletons(state)
            assert Singleton._instances is state["instances"] and Plugins.instance() is registry
        assert scans == []
        Singleton._instances = {}  # a worker's first trial: no registry yet, one scan
        restore_singletons(copy.deepcopy(sent))
        assert len(scans) == 1 and Plugins.instance() is not registry
    finally:
        Singleton._instances = saved


def test_a_worker_adopts_the_sweep_process_composition_and_composes_nothing_for_its_first_trial(loader_and_sweep,
                                                                                                monkeypatch):
    import cloudpickle

    loader, sweep = loader_and_sweep
    expected = as_data(loader.load_sweep_config(sweep, TRIALS[1]))
    composition.load_sweep_config(loader, sweep, TRIALS[0])  # the sweep's check of its first trial
    sent = cloudpickle.loads(cloudpickle.dumps(composition.composed()))  # with each worker's first trial
    monkeypatch.setattr(composition, "_COMPOSED", {})  # a fresh worker
    monkeypatch.setattr(composition, "_REPOSITORIES", {})
    composed = []
    real = type(loader).load_configuration
    monkeypatch.setattr(type(loader), "load_configuration",
                        lambda self, *args, **kwargs: composed.append(kwargs["overrides"]) or real(self, *args, **kwargs))
    composition.adopt(sent)
    assert as_data(composition.load_sweep_config(loader, sweep, TRIALS[1])) == expected
    assert composed == []
    composition.adopt(({}, {}))  # what the worker composed itself stays
    assert as_data(composition.load_sweep_config(loader, sweep, TRIALS[3])) == as_data(
        loader.load_sweep_config(sweep, TRIALS[3])) and len(composed) == 1  # Hydra's own, for the comparison
