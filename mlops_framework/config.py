"""Where the configs live, how they are composed, and the checks made once, before anything runs."""

import re
from pathlib import Path

from mlops_framework.errors import MlopsError

SECRET_KEY = re.compile(r"pass(word|phrase)|secret|token|private_key(?!_file)", re.IGNORECASE)
REDACTED = "**redacted**"


def conf_dir():
    """``conf/`` beside the package in a source checkout, ``mlops_framework/_conf`` in a wheel."""
    package = Path(__file__).resolve().parent
    for candidate in (package.parent / "conf", package / "_conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise MlopsError(f"no conf/config.yaml found beside {package}; reinstall mlops-framework")


def user_conf_dir():
    """``$MLOPS_HOME/conf`` (``.mlops/conf``): the user's own options, e.g. a saved ``features/NAME.yaml``."""
    import os

    return Path(os.environ.get("MLOPS_HOME") or ".mlops") / "conf"


def _extra_dirs(components):
    user = user_conf_dir()
    return [*components.config_dirs, *([user] if user.is_dir() else [])]


def search_path_overrides(components):
    """The Hydra override adding every plugin's config directory, and the user's, to the search path."""
    dirs = _extra_dirs(components)
    if not dirs:
        return []
    paths = ",".join(f"file://{path.resolve()}" for path in dirs)
    return [f"hydra.searchpath=[{paths}]"]


def group_options(components):
    """``{group: [option, ...]}`` over the primary config directory, every plugin's and the user's."""
    options = {}
    for directory in [conf_dir(), *_extra_dirs(components)]:
        for group in sorted(p for p in directory.iterdir() if p.is_dir()):
            names = options.setdefault(group.name, [])
            names.extend(f.stem for f in sorted(group.glob("*.yaml")) if f.stem not in names)
    return options


def compose(overrides, components):
    """Compose ``conf/config.yaml`` with ``overrides`` as ``mlops run`` would, without running anything."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3", job_name="mlops"):
            return hydra_compose("config", overrides=[*overrides, *search_path_overrides(components)])
    except (HydraException, OmegaConfBaseException) as error:
        raise MlopsError(_first_paragraph(error)) from error


def _first_paragraph(error):
    text = str(error).strip()
    return text.split("\nConfig search path")[0].strip()


def check(cfg, components):
    """Refuse unknown top-level keys and report every missing required (``???``) value at once."""
    from omegaconf import OmegaConf

    known = {"paths", "seed", *group_options(components)}
    unknown = [key for key in cfg if key not in known]
    if unknown:
        raise MlopsError(f"unknown top-level config keys: {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        hint = " ".join(f"{key}=..." for key in missing)
        raise MlopsError(f"missing required config values: {', '.join(missing)} (set them, e.g. {hint})")


def resolved(cfg):
    """The config as plain data with interpolations resolved and secret-looking values redacted."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        data = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as error:
        raise MlopsError(f"config cannot be resolved: {error}") from error
    return redact(data)


def redact(data):
    if isinstance(data, dict):
        return {
            key: REDACTED if SECRET_KEY.search(str(key)) and value is not None else redact(value)
            for key, value in data.items()
        }
    if isinstance(data, list):
        return [redact(item) for item in data]
    return data
