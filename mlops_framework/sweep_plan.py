"""``mlops plan -m``: what a multirun would launch, worked out without running a trial or writing a file."""

from __future__ import annotations

from mlops_framework.errors import MlopsError


def plan(overrides, components):
    """The multirun config is composed as ``mlops run -m`` composes it, and its sweeper and launcher are
    instantiated as Hydra instantiates them, without the callbacks (so no ``sweep.json``). Returns
    ``(lines, trial, label)``: what the sweep would do, the overrides of one trial to plan in full, and how
    to name that trial.

    A sweeper with ``plan(arguments) -> (lines, trial, label)`` describes itself (the Optuna sweeper: its
    study and search space). Otherwise the sweeper is taken to be a grid with Hydra's basic sweeper's
    ``split_arguments``: a header naming the sweeper, the launcher and the number of trials, then one line
    per trial: the launcher's own ``plan(job_overrides, initial_job_idx) -> [str]`` where it has one (the
    local launcher's, the ML Job launcher's), else the trial's number and overrides. Every listed trial's
    config is composed, as a sweep does before launching, so a bad override fails here.
    """
    from hydra import initialize_config_dir
    from hydra._internal.callbacks import Callbacks
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.plugins import Plugins
    from hydra.errors import HydraException
    from hydra.types import HydraContext, RunMode
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from mlops_framework import config

    try:
        # job name "cli": the one hydra.main gives `mlops run`, whose task function lives in cli.py
        with initialize_config_dir(config_dir=str(config.conf_dir()), version_base="1.3", job_name="cli"):
            hydra = GlobalHydra.instance().hydra
            cfg = hydra.compose_config("config", [*overrides, "hydra.mode=MULTIRUN",
                                                  *config.search_path_overrides(components)],
                                       run_mode=RunMode.MULTIRUN)
            context = HydraContext(config_loader=hydra.config_loader, callbacks=Callbacks())
            # no task function: the sweeper and launcher are set up to be asked, not to run (nor warm workers)
            sweeper = Plugins.instance().instantiate_sweeper(config=cfg, hydra_context=context, task_function=None)
            arguments = OmegaConf.to_container(cfg.hydra.overrides.task)
            if callable(getattr(sweeper, "plan", None)):
                lines, trial, label = sweeper.plan(arguments)
                header = f"{lines[0]}, sweeper {describe_plugin(cfg, 'sweeper', sweeper)}, sweep dir {cfg.hydra.sweep.dir}"
                return [header, *lines[1:]], trial, label
            if callable(getattr(sweeper, "split_arguments", None)):
                return _plan_grid(cfg, sweeper, arguments)
            raise MlopsError(f"mlops plan -m lists the trials of a grid (hydra/sweeper=basic) or of a sweeper that "
                             f"plans itself (hydra/sweeper=mlops_optuna), not of "
                             f"{describe_plugin(cfg, 'sweeper', sweeper)}")
    except (HydraException, OmegaConfBaseException) as error:
        if isinstance(error.__cause__, MlopsError):  # a sweeper or launcher refusing its settings
            raise error.__cause__ from None
        raise MlopsError(config._first_paragraph(error)) from error


def describe_plugin(cfg, kind, plugin, settings=()):
    """``JoblibLauncher (hydra/launcher=joblib, n_jobs=-1)``: the class, the config option, chosen settings."""
    node = cfg.hydra[kind]
    shown = [f"hydra/{kind}={cfg.hydra.runtime.choices.get(f'hydra/{kind}')}"]
    shown += [f"{key}={node[key]}" for key in settings if key in node]
    return f"{type(plugin).__name__} ({', '.join(shown)})"


def _plan_grid(cfg, sweeper, arguments):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    # as BasicSweeper.sweep: hydra.sweeper.params first, the command line's overrides replacing them key by key
    lines = [f"{key}={value}" for key, value in (getattr(sweeper, "params", None) or {}).items()]
    parser = OverridesParser.create(config_loader=sweeper.hydra_context.config_loader)
    batches = sweeper.split_arguments(parser.parse_overrides([*lines, *arguments]), sweeper.max_batch_size)
    launcher = sweeper.launcher
    trials, number = [], 0
    for batch in batches:
        sweeper.validate_batch_is_legal(batch)
        if callable(getattr(launcher, "plan", None)):
            trials += launcher.plan(batch, initial_job_idx=number)
        else:
            trials += [f"trial {number + i}: {' '.join(overrides) or '(no overrides)'}"
                       for i, overrides in enumerate(batch)]
        number += len(batch)
    header = (f"sweep: {number} trial{'s' if number != 1 else ''}, sweeper {describe_plugin(cfg, 'sweeper', sweeper)}, "
              f"launcher {describe_plugin(cfg, 'launcher', launcher, ('n_jobs', 'max_parallel'))}, "
              f"sweep dir {cfg.hydra.sweep.dir}")
    return [header, *(f"  {line}" for line in trials)], list(batches[0][0]), "trial 0"
