"""What a sweep leaves in its directory: ``sweep.json`` for the sweep, ``trial.json`` for each trial.

A sweep directory (Hydra's ``hydra.sweep.dir``, ``$MLOPS_HOME/multiruns/<time>`` by default) holds::

    sweep.json          the command line, git commit, seeds, search space, metric; the study and the best trial
    multirun.yaml       Hydra's composed config of the sweep
    leaderboard.csv     every trial ranked by the metric: params, metrics, seconds, model version
    leaderboard.html    the metric by trial number with the best so far (an interactive chart, offline)
    optuna.journal      the Optuna study (Optuna searches with the default storage)
    N/                  one trial: .hydra/, resolved_config.yaml, evaluation.json, summary.json, trial.json,
                        and model/ (a local registry holding the trial's model when the sweep does not register
                        every trial: ``hydra.callbacks.sweep.register=best|none``)

Written by ``mlops_framework.sweeps.SweepCallback`` and the sweepers; read by the leaderboard and ``mlops sweep``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shlex
import sys
from pathlib import Path

from mlops_framework.errors import MlopsError

RECORD = "sweep.json"
TRIAL = "trial.json"
KEPT_MODEL_DIR = "model"
DEFAULT_METRIC = "validation_f1"
DEFAULT_DIRECTION = "maximize"
DEFAULT_ALIAS = "SWEEP_BEST"
REGISTER_POLICIES = ("best", "all", "none")
DEFAULT_REGISTER = "best"
RECORDED_ENV = ("MLOPS_HOME", "MLOPS_PLUGINS", "MLOPS_DISABLE_PLUGINS", "OMP_NUM_THREADS")
RERUN_ENV = ("MLOPS_HOME", "OMP_NUM_THREADS")  # what `sweep rerun` takes back from sweep.json: nothing that loads code
SEED_KEYS = ("seed", "random_state")


def now():
    return dt.datetime.now(dt.timezone.utc).isoformat()


def read_json(path, default=None):
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return default


def write_json(path, data):
    from mlops_framework.files import write_json_atomic

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, data)


def read_record(sweep_dir):
    """``sweep.json`` of a sweep directory, or ``{}``."""
    return read_json(Path(sweep_dir) / RECORD, {})


def update_record(sweep_dir, **fields):
    """Merge ``fields`` into ``sweep.json`` (dict values are merged one level deep)."""
    record = read_record(sweep_dir)
    for key, value in fields.items():
        if isinstance(value, dict) and isinstance(record.get(key), dict):
            record[key] = {**record[key], **value}
        else:
            record[key] = value
    write_json(Path(sweep_dir) / RECORD, record)
    return record


def read_trial(trial_dir):
    return read_json(Path(trial_dir) / TRIAL, {})


def update_trial(trial_dir, **fields):
    """Merge ``fields`` into a trial's ``trial.json``."""
    write_json(Path(trial_dir) / TRIAL, {**read_trial(trial_dir), **fields})


def trial_metrics(trial_dir):
    """A trial's metrics: ``validation_*`` and ``holdout_*`` from evaluation.json, else summary.json's."""
    trial_dir = Path(trial_dir)
    metrics = dict((read_json(trial_dir / "summary.json", {}) or {}).get("metrics") or {})
    for part, values in (read_json(trial_dir / "evaluation.json", {}) or {}).items():
        for name, value in (values or {}).items():
            if isinstance(value, float):
                metrics[f"{part}_{name}"] = value
    return metrics


def register_policy(hydra_config):
    """Which trials of a multirun register their model: ``best`` (default), ``all`` or ``none``, from
    ``hydra.callbacks.sweep.register``; ``all`` when the sweep callback is not configured (as before it)."""
    from omegaconf import OmegaConf

    callback = OmegaConf.select(hydra_config, "callbacks.sweep", default=None)
    if callback is None:
        return "all"
    policy = str(callback.get("register") or DEFAULT_REGISTER)
    if policy not in REGISTER_POLICIES:
        raise MlopsError(f"hydra.callbacks.sweep.register must be one of {', '.join(REGISTER_POLICIES)}, "
                         f"not {policy!r}")
    return policy


def keep_trial_model(hydra_config, trial_dir):
    """Where a trial running here keeps its model instead of registering it (``<trial dir>/model``, also
    written to its ``trial.json`` as ``kept_in``), or None when the multirun registers every trial (or this is
    not a multirun). Called where the trial's stages run: a trial run elsewhere (an ML Job) registers itself."""
    from hydra.types import RunMode

    if hydra_config.get("mode") != RunMode.MULTIRUN or register_policy(hydra_config) == "all":
        return None
    kept = Path(trial_dir) / KEPT_MODEL_DIR
    update_trial(trial_dir, kept_in=str(kept))
    return kept


# ------------------------------------------------------------------------------ the record at the start
def _packages():
    import importlib.metadata

    from mlops_framework.lineage import package_versions

    versions = package_versions()
    for name in ("hydra-core", "optuna", "joblib"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def _seeds(config):
    """Every ``seed``/``random_state`` value of the job config, resolved, plus the sweeper's seed."""
    from omegaconf import OmegaConf

    seeds = {}

    def walk(node, path):
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{path}.{key}" if path else str(key))
        elif path.rsplit(".", 1)[-1] in SEED_KEYS:
            try:
                seeds[path] = OmegaConf.select(config, path)
            except Exception:  # an interpolation only a job can resolve
                seeds[path] = node

    walk({k: v for k, v in OmegaConf.to_container(config, resolve=False).items() if k != "hydra"}, "")
    sweeper_seed = OmegaConf.select(config, "hydra.sweeper.seed", default=None)
    if sweeper_seed is not None:
        seeds["hydra.sweeper.seed"] = sweeper_seed
    return seeds


def _command(config):
    """The arguments of ``mlops run`` that reproduce this multirun, without the plugins' search path."""
    from omegaconf import OmegaConf

    if sys.argv and sys.argv[0] == "mlops run":
        args = list(sys.argv[1:])
    else:
        args = ["-m", *OmegaConf.to_container(config.hydra.overrides.hydra),
                *OmegaConf.to_container(config.hydra.overrides.task)]
    try:
        from mlops_framework import config as mlops_config
        from mlops_framework.plugins import Components, get_plugin_manager

        automatic = set(mlops_config.search_path_overrides(Components(get_plugin_manager())))
    except MlopsError:
        automatic = set()
    args = [arg for arg in args if arg not in automatic]
    if "-m" not in args and "--multirun" not in args:
        args.insert(0, "-m")
    return args


def _search_space(config):
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    space = {str(k): str(v) for k, v in (OmegaConf.select(config, "hydra.sweeper.params", default=None) or {}).items()}
    parser = OverridesParser.create()
    for override in parser.parse_overrides(OmegaConf.to_container(config.hydra.overrides.task)):
        if override.is_sweep_override():
            space[override.key_or_group] = override.input_line.split("=", 1)[1]
    return space


def start_record(config, *, metric, direction, promote, register):
    """Write ``sweep.json`` for a multirun that starts now (an earlier session's record is kept inside)."""
    from mlops_framework.lineage import git_state
    from omegaconf import OmegaConf

    sweep_dir = Path(str(config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    previous = read_record(sweep_dir)
    sessions = previous.pop("previous_sessions", []) + ([previous] if previous else [])
    sweeper = OmegaConf.select(config, "hydra.sweeper", default={}) or {}
    launcher = OmegaConf.to_container(config.hydra.launcher, resolve=True)
    argv = _command(config)
    env = {name: os.environ[name] for name in RECORDED_ENV if name in os.environ}
    record = {
        "sweep_dir": str(sweep_dir.resolve()),
        "command": " ".join([*(f"{k}={shlex.quote(v)}" for k, v in env.items()), "mlops", "run",
                             *map(shlex.quote, argv)]),
        "argv": argv,
        "cwd": os.getcwd(),
        "env": env,
        "git": git_state(Path(__file__).resolve().parent),  # the code that ran the trials
        "seeds": _seeds(config),
        "sweeper": sweeper.get("_target_"),
        "launcher": launcher,
        "search_space": _search_space(config),
        "metric": sweeper.get("metric") or metric,
        "direction": sweeper.get("direction") or direction,
        "promote": promote,
        "register": register,
        "started": now(),
        "python": sys.version.split()[0],
        "packages": _packages(),
    }
    if sessions:
        record["previous_sessions"] = sessions
    write_json(sweep_dir / RECORD, record)
    return record
