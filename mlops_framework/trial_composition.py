"""A trial's config, composed as Hydra's ``ConfigLoader.load_sweep_config`` composes it, without redoing for
every trial the part that is the same for all of them.

Hydra composes each trial from nothing: it parses every YAML file of the defaults list again and rebuilds
the defaults tree, about 0.2 CPU seconds a trial, while a sweep's trials usually differ in values only
(``model.params.max_depth=3``). The defaults tree and the merged files depend on the config name, the
overrides that choose, add or delete group options (``model=xgboost``, ``+experiment=x``, ``~group``,
``hydra/launcher=...``), ``hydra.searchpath`` (plugins' config directories, where optional groups such as
``connection`` live) and the files themselves. So this process keeps Hydra's own composition of those, and a
trial gets a copy with its value overrides applied by Hydra's own code, the override records Hydra keeps
(``hydra.overrides``, ``hydra.job.override_dirname``) rebuilt from all of the trial's overrides in order, and
what Hydra reads from this process (``hydra.runtime.cwd``, ``hydra.job.env_set``) read again.

Which overrides are values is Hydra's rule (its ``Overrides``): not a group of the search path, or a dict.
A value override whose key is under ``hydra.job``, ``hydra.runtime``, ``hydra.overrides`` or
``hydra.searchpath`` (what Hydra's bookkeeping reads or writes) stays in the composition Hydra does. A
change to a config file under a ``file://`` source (its size or modification time, or a file added or
removed) makes the next trial compose afresh. One composition is kept at a time, here rather than in
``hydra_plugins``: Hydra's plugin scan runs the modules there again, which would empty it.

A process can start from another's composition (``composed`` there, ``adopt`` here): the Optuna sweeper
checks that its first trial composes, in the sweep's own process, and sends what that composed with each
worker's first trial, so that no worker composes from nothing.
"""

from __future__ import annotations

import copy
import os
from typing import Any, Dict, List, Tuple

_BOOKKEEPING = ("hydra.job", "hydra.runtime", "hydra.overrides", "hydra.searchpath")

# (config name, the overrides Hydra composes with, the config files) -> Hydra's composed config
_COMPOSED: Dict[Tuple, Any] = {}
# (search path, config name, hydra.searchpath overrides) -> the repository Hydra's composition uses
_REPOSITORIES: Dict[Tuple, Any] = {}


def load_sweep_config(config_loader, master_config, overrides: List[str]):
    """What ``config_loader.load_sweep_config(master_config, overrides)`` returns, the same config."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra._internal.config_loader_impl import get_overrides_dirname
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    config_name = master_config.hydra.job.config_name
    lines = list(OmegaConf.to_container(master_config.hydra.overrides.hydra)) + list(overrides)
    parsed = OverridesParser.create().parse_overrides(overrides=lines)
    repository = _repository(config_loader, config_name, [o for o in parsed if _is_searchpath(o)])
    late = [o for o in parsed if _applied_after_composition(o, repository)]
    early = [o.input_line for o in parsed if not any(o is value for value in late)]
    key = (config_name, tuple(early), _files(repository))
    if key not in _COMPOSED:
        _COMPOSED.clear()  # one sweep's composition at a time
        _COMPOSED[key] = config_loader.load_configuration(config_name=config_name, overrides=early,
                                                          run_mode=RunMode.RUN)
    config = copy.deepcopy(_COMPOSED[key])
    config_loader._apply_overrides_to_config(late, config)  # reports a bad one as Hydra does
    config.hydra.overrides.hydra = [o.input_line for o in parsed if o.is_hydra_override()]
    config.hydra.overrides.task = [o.input_line for o in parsed if not o.is_hydra_override()]
    for name in config.hydra.job.env_copy:
        config.hydra.job.env_set[name] = os.environ[name]
    config.hydra.runtime.cwd = os.getcwd()
    naming = config.hydra.job.config.override_dirname
    config.hydra.job.override_dirname = get_overrides_dirname(
        overrides=[o for o in parsed if not o.is_hydra_override()], kv_sep=naming.kv_sep,
        item_sep=naming.item_sep, exclude_keys=naming.exclude_keys)
    OmegaConf.copy_cache(from_config=master_config, to_config=config)
    return config


def composed() -> tuple:
    """What this process composed and the repository it read, for ``adopt`` in another process."""
    return dict(_COMPOSED), dict(_REPOSITORIES)


def adopt(state: tuple) -> None:
    """Start from another process's ``composed()`` unless this one composed something itself. Its entries
    are used only where their keys match: the same config name, overrides, search path and files."""
    compositions, repositories = state
    if not _COMPOSED:
        _COMPOSED.update(compositions)
    if not _REPOSITORIES:
        _REPOSITORIES.update(repositories)


def _is_searchpath(override) -> bool:
    return override.get_key_element() == "hydra.searchpath"


def _applied_after_composition(override, repository) -> bool:
    key = override.key_or_group
    if override.is_sweep_override():
        return False
    if key == "hydra" or any(key == prefix or key.startswith(prefix + ".") for prefix in _BOOKKEEPING):
        return False
    return isinstance(override.value(), dict) or not repository.group_exists(key)


def _repository(config_loader, config_name, searchpath_overrides):
    """The repository (search path with ``hydra.searchpath`` applied) Hydra composes ``config_name`` from."""
    key = (tuple((p.provider, p.path) for p in config_loader.get_search_path().get_path()), config_name,
           tuple(o.input_line for o in searchpath_overrides))
    if key not in _REPOSITORIES:
        _REPOSITORIES.clear()
        _, _REPOSITORIES[key] = config_loader._parse_overrides_and_create_caching_repo(
            config_name, [o.input_line for o in searchpath_overrides])
    return _REPOSITORIES[key]


def _files(repository) -> Tuple:
    """Every file under the repository's ``file://`` sources, with its size and modification time."""
    found = []
    for source in repository.get_sources():
        if source.scheme() != "file":
            continue
        for directory, _, names in os.walk(source.path.removeprefix("file://")):
            for name in names:
                path = os.path.join(directory, name)
                try:
                    stat = os.stat(path)
                except OSError:
                    continue
                found.append((path, stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(found))
