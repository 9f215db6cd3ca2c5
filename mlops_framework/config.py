"""Where the configs live, how they are composed, and the checks made once, before anything runs."""

import os
import re
from pathlib import Path

from mlops_framework.errors import MlopsError

SECRET_KEY = re.compile(
    r"pass(word|phrase|code|wd)|pwd|secret|token|credential|authori[sz]ation|api[_-]?key|private_key(?!_file$)"
    r"|(^|[_-])key$",
    re.IGNORECASE)
REDACTED = "**redacted**"
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<userinfo>[^/@\s]+)@", re.IGNORECASE)
_SECRET_VALUES: set[str] = set()


def read_secret(*reference):
    """The ``${secret:...}`` resolver: ``${secret:NAME}`` reads environment variable NAME,
    ``${secret:file:PATH}`` (or ``${secret:file,PATH}``) the first line of a file. The value is
    remembered so that every file and message the framework writes shows ``**redacted**`` instead."""
    parts = [str(part) for part in reference]
    if len(parts) == 1 and parts[0].startswith("file:"):
        parts = ["file", parts[0].removeprefix("file:")]
    if len(parts) == 2 and parts[0] == "file":
        try:
            value = Path(parts[1]).expanduser().read_text().strip()
        except OSError as error:
            raise MlopsError(f"secret file {parts[1]!r} cannot be read: {error.strerror}") from None
    elif len(parts) == 1 and parts[0]:
        if parts[0] not in os.environ:
            raise MlopsError(f"secret environment variable {parts[0]!r} is not set")
        value = os.environ[parts[0]]
    else:
        raise MlopsError("a secret reference is ${secret:ENV_NAME} or ${secret:file:PATH}")
    remember_secret(value)
    return value


def remember_secret(value):
    """Treat ``value`` as a secret for the rest of the process: ``scrub`` replaces it wherever it appears."""
    if isinstance(value, str) and len(value) >= 4 and value != REDACTED:
        _SECRET_VALUES.add(value)


def register_resolvers():
    from omegaconf import OmegaConf

    OmegaConf.register_new_resolver("secret", read_secret, replace=True, use_cache=False)
    OmegaConf.register_new_resolver("required", required_value, replace=True, use_cache=False)
    use_libyaml()


def required_value(key, *, _root_):
    """``${required:features.time}``: the value at ``key``, which a config using it cannot do without (a null
    there would otherwise reach SQL as the text "None")."""
    from omegaconf import OmegaConf

    value = OmegaConf.select(_root_, key)
    if value is None:
        raise MlopsError(f"{key} is not set, and this configuration needs it: add {key}=...")
    return value


def use_libyaml():
    """Make OmegaConf (and so Hydra) parse and write YAML with libyaml, keeping every rule of its own.

    OmegaConf's loader is PyYAML's pure-Python ``SafeLoader``, built anew for every file that Hydra
    composes (~25): 0.02 s of ``mlops plan``'s 0.4 s, measured. This loader takes OmegaConf's
    resolvers and constructors (YAML 1.2 floats, no timestamps, ``pathlib`` tags) and its refusal of
    duplicate keys, on libyaml's parser. ``OmegaConf.to_yaml`` (Hydra's ``.hydra`` files of every run
    and sweep trial: 6-7 ms a file in pure Python) keeps OmegaConf's representers on libyaml's emitter:
    the same text (``_to_yaml``). Without libyaml, nothing changes."""
    import omegaconf._utils as omegaconf_utils
    import yaml
    from omegaconf import OmegaConf

    global _LIBYAML_LOADER, _OMEGACONF_LOADER, _LIBYAML_DUMPER
    if not yaml.__with_libyaml__ or omegaconf_utils.get_yaml_loader is _libyaml_loader:
        return
    reference = _OMEGACONF_LOADER = omegaconf_utils.get_yaml_loader()
    _LIBYAML_DUMPER = type("LibyamlOmegaConfDumper", (yaml.CDumper,), {})
    _LIBYAML_DUMPER.add_representer(str, omegaconf_utils.OmegaConfDumper.str_representer)
    OmegaConf.to_yaml = staticmethod(_to_yaml)

    class LibyamlOmegaConfLoader(yaml.CSafeLoader):
        yaml_implicit_resolvers = dict(reference.yaml_implicit_resolvers)
        yaml_constructors = dict(reference.yaml_constructors)

        def construct_mapping(self, node, deep=False):
            keys = set()
            for key_node, _ in node.value:
                if key_node.tag != yaml.resolver.BaseResolver.DEFAULT_SCALAR_TAG:
                    continue
                if key_node.value in keys:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark, f"found duplicate key {key_node.value}",
                        key_node.start_mark)
                keys.add(key_node.value)
            return super().construct_mapping(node, deep=deep)

    _LIBYAML_LOADER = LibyamlOmegaConfLoader
    omegaconf_utils.get_yaml_loader = _libyaml_loader


_LIBYAML_LOADER = _OMEGACONF_LOADER = _LIBYAML_DUMPER = None
# Where libyaml's emitter and PyYAML's write different text: NEL, line and paragraph separators, BOM, controls.
_EMITTED_UNLIKE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\ufeff]")


def _libyaml_loader():
    return _LIBYAML_LOADER


def _to_yaml(cfg, *, resolve=False, sort_keys=False):
    """``OmegaConf.to_yaml`` with libyaml's emitter: OmegaConf's own container, representers and options;
    a config holding text where the two emitters differ (``_EMITTED_UNLIKE``) is written by PyYAML's."""
    import yaml
    from omegaconf import OmegaConf
    from omegaconf._utils import get_omega_conf_dumper
    from omegaconf.omegaconf import _ensure_container

    container = OmegaConf.to_container(_ensure_container(cfg), resolve=resolve, enum_to_str=True)
    dumper = _LIBYAML_DUMPER if _emitted_alike(container) else get_omega_conf_dumper()
    return yaml.dump(container, default_flow_style=False, allow_unicode=True, sort_keys=sort_keys, Dumper=dumper)


def _emitted_alike(value) -> bool:
    if isinstance(value, str):
        return not _EMITTED_UNLIKE.search(value)
    if isinstance(value, dict):
        return all(_emitted_alike(k) and _emitted_alike(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_emitted_alike(item) for item in value)
    return True


def mask_url(url):
    """``scheme://user:password@host/...`` -> ``scheme://**redacted**@host/...``; other text unchanged."""
    return _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{REDACTED}@", str(url))


def scrub(text):
    """``text`` with every remembered secret value and URL credentials replaced by ``**redacted**``."""
    text = mask_url(text)
    for value in sorted(_SECRET_VALUES, key=len, reverse=True):
        text = text.replace(value, REDACTED)
    return text


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
    from yaml import YAMLError

    register_resolvers()
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3", job_name="mlops"):
            return hydra_compose("config", overrides=[*overrides, *search_path_overrides(components)])
    except (HydraException, OmegaConfBaseException) as error:
        raise MlopsError(_first_paragraph(error)) from error
    except YAMLError as error:  # a config file that is not YAML: where, and what the parser expected
        raise MlopsError("a config file is not valid YAML: " + " ".join(str(error).split())) from None


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
    from omegaconf.errors import OmegaConfBaseException

    register_resolvers()
    try:
        missing = sorted(OmegaConf.missing_keys(cfg))
    except OmegaConfBaseException as error:
        raise _resolution_error(error) from None
    if missing:
        hint = " ".join(f"{key}=..." for key in missing)
        raise MlopsError(f"missing required config values: {', '.join(missing)} (set them, e.g. {hint})")


def resolved(cfg):
    """The config as plain data with interpolations resolved and secret values redacted: what is
    written and printed. ``resolved_values`` gives the same with the secrets, for the run itself."""
    return redact(resolved_values(cfg))


def resolved_values(cfg):
    """The config as plain data with interpolations resolved, secrets included (never write this).
    Every value under a secret-looking key is remembered as a secret (see ``scrub``)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    register_resolvers()
    try:
        data = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as error:
        raise _resolution_error(error) from None
    redact(data, remember=True)
    return data


def _resolution_error(error):
    """One line for an interpolation that cannot be resolved: unknown key, unset variable, cycle."""
    cause = error  # a resolver's own MlopsError, which OmegaConf wraps once or twice
    while not isinstance(cause, MlopsError) and (cause.__cause__ or cause.__context__) is not None:
        cause = cause.__cause__ or cause.__context__
    cause = cause if isinstance(cause, MlopsError) else error
    message = str(cause).split("\n")[0].strip()
    key = getattr(error, "full_key", None)
    where = f" (at {key})" if key else ""
    return MlopsError(f"config cannot be resolved{where}: {scrub(message)}")


def redact(data, *, remember=False):
    """``data`` with values under secret-looking keys (password, pwd, passcode, secret, token, key,
    credential, private_key, authorization...) and remembered secret values replaced by
    ``**redacted**``, and credentials in URLs masked."""
    if isinstance(data, dict):
        redacted = {}
        for key, value in data.items():
            if SECRET_KEY.search(str(key)) and value is not None and not isinstance(value, (dict, list)):
                if remember:
                    remember_secret(str(value))
                redacted[key] = REDACTED
            else:
                redacted[key] = redact(value, remember=remember)
        return redacted
    if isinstance(data, list):
        return [redact(item, remember=remember) for item in data]
    if isinstance(data, str):
        if remember:
            for match in _URL_CREDENTIALS.finditer(data):
                remember_secret(match["userinfo"].partition(":")[2])
        return scrub(data)
    return data


def load_yaml(text):
    """``yaml.safe_load`` on libyaml when PyYAML has it: the same values, ~10x faster on a run's files."""
    import yaml

    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def dump_yaml(data) -> str:
    """``yaml.safe_dump(data, sort_keys=False)`` on libyaml when PyYAML has it (the same text)."""
    import yaml

    return yaml.dump(data, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False)


def scrub_hydra_files(output_dir):
    """Rewrite Hydra's own record of a run (``.hydra/config.yaml``, ``overrides.yaml``, ``hydra.yaml``)
    with secrets redacted: values given on the command line or under secret-looking keys."""
    from mlops_framework.files import write_text_atomic

    hydra_dir = Path(output_dir) / ".hydra"
    paths = sorted(hydra_dir.glob("*.yaml"), key=lambda p: p.name != "config.yaml") if hydra_dir.is_dir() else []
    for path in paths:  # config.yaml first: the values under its secret keys are then scrubbed everywhere
        data = load_yaml(path.read_text())
        _remember_override_secrets(data)
        text = scrub(dump_yaml(redact(_redact_overrides(data), remember=True)))
        write_text_atomic(path, text)


def _override_secret(item):
    if isinstance(item, str) and "=" in item:
        key, value = item.split("=", 1)
        if SECRET_KEY.search(key.rsplit(".", 1)[-1]):
            return key, value
    return None


def _remember_override_secrets(data):
    if isinstance(data, dict):
        for value in data.values():
            _remember_override_secrets(value)
    elif isinstance(data, list):
        for item in data:
            found = _override_secret(item)
            if found:
                remember_secret(found[1])
            _remember_override_secrets(item)


def _redact_overrides(data):
    if isinstance(data, dict):
        return {key: _redact_overrides(value) for key, value in data.items()}
    if isinstance(data, list):
        return [f"{_override_secret(item)[0]}={REDACTED}" if _override_secret(item) else _redact_overrides(item)
                for item in data]
    return data
