"""The ``mlops`` command. Imports only argparse-level code at start; everything heavy loads on use."""

import argparse
import contextlib
import json
import sys

from mlops_framework import registry_views
from mlops_framework.errors import MlopsError

EXIT_USER_ERROR = 2
_RESOURCE_ERRORS = (28, 30, 13, 122)  # ENOSPC, EROFS, EACCES, EDQUOT: one message, not a traceback


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if not argv or argv[0] in ("-h", "--help"):
            print(_help_text())
            return 0
        command, rest = argv[0], argv[1:]
        if command == "run":
            return _run(rest)
        if command == "plan":
            return _plan(rest)
        if command == "registry":
            return _registry(rest)
        if command == "features":
            return _features(rest)
        if command == "sweep":
            return _sweep(rest)
        raise MlopsError(f"unknown command {command!r}; commands: run, plan, features, registry, sweep (see mlops --help)")
    except MlopsError as error:
        print(f"mlops: error: {_scrubbed(error)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:  # Ctrl-C: a sweep's workers are already stopped (mlops_framework.workers)
        print("mlops: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `mlops plan ... | head` closed the pipe: stop quietly, as cat and ls do
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 1
    except OSError as error:
        if error.errno not in _RESOURCE_ERRORS:
            raise
        print(f"mlops: error: {error.strerror}: {error.filename or ''} (nothing more was written)".rstrip(),
              file=sys.stderr)
        return EXIT_USER_ERROR


def _scrubbed(error):
    from mlops_framework.config import scrub

    return scrub(str(error))


def _components():
    from mlops_framework.plugins import Components, get_plugin_manager

    return Components(get_plugin_manager())


def _help_text():
    from mlops_framework import config

    components = _components()
    lines = [
        "usage: mlops COMMAND [OVERRIDES...]",
        "",
        "Declarative MLOps: Hydra configs in, trained, registered and scored models out.",
        "",
        "commands:",
        "  run [-m] [OVERRIDES...]   run the configured pipeline (-m: a Hydra multirun / sweep)",
        "  plan [-m] [OVERRIDES...]  resolve the config and print what each stage would do; touches nothing",
        "                            (-m: a sweep's trials as its launcher would submit them, then one trial's plan)",
        "  features [OVERRIDES...] [--save NAME]",
        "                            the data's columns, types and inferred feature roles and task;",
        "                            --save NAME writes them to $MLOPS_HOME/conf/features/NAME.yaml (features=NAME)",
        "  registry ...              models | versions MODEL | show MODEL VERSION_OR_ALIAS |",
        "                            alias set MODEL VERSION ALIAS | alias unset MODEL ALIAS |",
        "                            tag set MODEL TAG VALUE | history MODEL | rollback MODEL ALIAS |",
        "                            delete MODEL VERSION   (each takes --json)",
        "  sweep show [DIR]          the leaderboard of a sweep (default: the latest), as a table, CSV and chart",
        "  sweep list | rerun [DIR]  every sweep | run a sweep's recorded command again, compare the metrics",
        "",
        "config groups (choose with GROUP=OPTION, change a value with GROUP.KEY=VALUE):",
    ]
    for group, options in config.group_options(components).items():
        lines.append(f"  {group:<12} {', '.join(options)}")
    lines += ["", f"registered stages: {', '.join(components.stages)}",
              "examples: mlops run   |   mlops plan backend=local data=csv data.path=loans.csv"]
    return "\n".join(lines)


def execute(cfg, components, output_dir, *, keep_model_in=None, shared=None):
    """Check, resolve and run a composed config (``mlops_framework.runner``) with its trackers around it;
    print and return its summary. ``keep_model_in``: a directory where a local registry takes the run's model
    instead of the configured registry (a sweep's trial, see ``mlops_framework.sweeps``); ``shared``: the data
    earlier trials in this process made (a sweep's trial, see ``mlops_framework.shared_data``)."""
    from mlops_framework import config, runner, tracking

    config.check(cfg, components)
    values = config.resolved_values(cfg)  # resolved once: with the secrets for the run, redacted for the rest
    resolved = config.redact(values)  # secrets redacted: what trackers log and files hold
    trackers = tracking.build_trackers(resolved, components)  # their keys checked before anything is written
    registry = None
    if keep_model_in is not None:
        registry = components.build("registry", {"kind": "local", "root": str(keep_model_in)},
                                    where="the trial's own registry")
    with tracking.track(trackers, components) as begin:  # one run in each tracker (tracker=[local,mlflow])
        # the values with their secrets: they reach notifiers and connections intact; what is written is redacted
        result = runner.execute(values, components, output_dir, announce=begin,
                                registry=registry, shared=shared)
    print("\n".join(result.lines()))
    return result.to_dict()


def _run(overrides):
    multirun = any(item in ("-m", "--multirun") for item in overrides)
    if multirun:  # first: its imports overlap with this process's and with Hydra composing the sweep
        from mlops_framework.workers import start_forkserver_for

        start_forkserver_for(overrides)
    import traceback

    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from mlops_framework import config

    _check_override_syntax(overrides)
    components = _components()
    config.register_resolvers()

    composing = _HydraStderr(held=not multirun)

    def task(cfg):
        from mlops_framework import shared_data
        from mlops_framework.sweep_record import keep_trial_model

        composing.release()
        multirun = HydraConfig.get().mode == RunMode.MULTIRUN
        try:
            output_dir = HydraConfig.get().runtime.output_dir
            config.scrub_hydra_files(output_dir)  # written by Hydra before this
            return execute(cfg, components, output_dir, keep_model_in=keep_trial_model(HydraConfig.get(), output_dir),
                           shared=shared_data.in_this_process() if multirun else None)
        except MlopsError as error:
            print(f"mlops: error: {_scrubbed(error)}", file=sys.stderr)
            if multirun:  # one failed trial: the others go on; the sweep reports it at the end (sweeps.py)
                return {"error": str(error)}
            raise SystemExit(EXIT_USER_ERROR) from None
        except BrokenPipeError:  # `mlops run ... | head -2`: the run is done, only its printing stopped
            import os

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return None
        except OSError as error:
            if multirun or error.errno not in _RESOURCE_ERRORS:
                raise
            print(f"mlops: error: {error.strerror}: {error.filename or ''}".rstrip(), file=sys.stderr)
            raise SystemExit(EXIT_USER_ERROR) from None
        except Exception as error:
            if not multirun:
                raise
            traceback.print_exc()
            return {"error": f"{type(error).__name__}: {error}"}

    task.__module__ = __name__
    saved_argv = sys.argv
    sys.argv = ["mlops run", *overrides, *config.search_path_overrides(components)]
    try:
        composing.hold()
        with _mode_from_the_command_line(overrides):
            hydra.main(config_path=str(config.conf_dir()), config_name="config", version_base="1.3")(task)()
    except SystemExit as exit_:  # Hydra and the task exit this way; `main` returns the status instead
        code = exit_.code if isinstance(exit_.code, int) else 1
        return composing.failed(code)
    finally:
        sys.argv = saved_argv
        composing.release()
    return 0


@contextlib.contextmanager
def _mode_from_the_command_line(overrides):
    """``-m`` makes a multirun, its absence a single run. Hydra composes the whole config once more only to
    read ``hydra.mode`` (0.3-0.6 s of every run); mlops reads it only when an override sets it."""
    from hydra._internal.hydra import Hydra

    if any(item.lstrip("+~").startswith("hydra.mode") for item in overrides):
        yield
        return
    get_mode = Hydra.get_mode
    Hydra.get_mode = lambda self, config_name, overrides: None  # Hydra's own meaning: the command line decides
    try:
        yield
    finally:
        Hydra.get_mode = get_mode


class _HydraStderr:
    """What Hydra writes to stderr before a single run's task starts, held: if Hydra then exits 1 (it could
    not compose the config: an unknown key or option), its block becomes one ``mlops: error:`` line and
    exit 2; otherwise it is passed on unchanged. A sweep's stderr is never held."""

    NOISE = ("Set the environment variable HYDRA_FULL_ERROR", "full_key:", "object_type=", "reference_type=")

    def __init__(self, held):
        import io

        self.buffer = io.StringIO() if held else None
        self.stderr = sys.stderr

    def hold(self):
        if self.buffer is not None:
            sys.stderr = self.buffer

    def release(self):
        if self.buffer is not None:
            sys.stderr = self.stderr
            self.stderr.write(self.buffer.getvalue())
            self.buffer = None

    def failed(self, code):
        if self.buffer is None or code != 1:
            return code
        text = self.buffer.getvalue().split("\nConfig search path")[0]
        lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith(self.NOISE)]
        yaml_error = next((i for i, line in enumerate(lines) if line.startswith("yaml.") and "Error: " in line), None)
        if yaml_error is not None:  # a config file that is not YAML: PyYAML's message says where (as `mlops plan`)
            lines = ["a config file is not valid YAML:", lines[yaml_error].split("Error: ", 1)[1], *lines[yaml_error + 1:]]
        elif not lines or "Traceback" in text:
            return code  # not a composition error: released as it was
        self.buffer = None
        sys.stderr = self.stderr
        print(f"mlops: error: {' '.join(lines)}", file=sys.stderr)
        return EXIT_USER_ERROR


def _check_override_syntax(overrides):
    """Hydra's override grammar, checked before Hydra runs (it would print its own block and exit 1)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    for override in overrides:
        if override.startswith("-") or "=" not in override:  # Hydra's flags and their values
            continue
        try:
            parser.parse_override(override)
        except HydraException as error:
            reason = str(error).strip().splitlines()[0]
            raise MlopsError(f"{override!r} is not a valid override ({reason}); quote a value holding spaces, "
                             f"';' or brackets: key=\"'...'\"") from None


def _plan(argv):
    from mlops_framework import config, tracking
    from mlops_framework.pipeline import build_run

    overrides = [item for item in argv if item not in ("-m", "--multirun")]
    components = _components()
    lines, title = [], "plan"
    if len(overrides) < len(argv):  # a sweep: its trials, then one trial's plan in full
        from mlops_framework.sweep_plan import plan

        lines, overrides, label = plan(overrides, components)
        title = f"\nplan of {label} ({' '.join(overrides) or 'no overrides'})"
    cfg = config.compose(overrides, components)
    config.check(cfg, components)
    resolved = config.resolved(cfg)
    run = build_run(resolved, components)
    lines.append(f"{title}: backend {cfg.backend.kind}, registry {run.registry.describe()}, {len(run.stages)} stages")
    lines += [f"{number:>3}. {line}" for number, line in enumerate(run.backend.plan(run), 1)]
    lines += tracking.plan_lines(resolved, components)
    print("\n".join(lines))  # all or nothing: an error prints only its message
    return 0


def _features(argv):
    import yaml

    from mlops_framework import config
    from mlops_framework.features import schema_lines
    from mlops_framework.pipeline import FeatureSpec, _spec
    from mlops_framework.stages import resolve_task

    parser = argparse.ArgumentParser(prog="mlops features", description="Show, and save, the feature roles "
                                     "and task inferred from the data.")
    parser.add_argument("--save", metavar="NAME", help="write the roles as the features option NAME")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    if args.save is not None and not args.save.replace("_", "").replace("-", "").isalnum():
        raise MlopsError(f"--save takes an option name (letters, digits, - and _), not {args.save!r}")
    components = _components()
    cfg = config.compose(args.overrides, components)
    resolved = config.resolved(cfg)
    if resolved["features"].get("target") is None:
        raise MlopsError("name the target column: mlops features ... features.target=COLUMN")
    spec = _spec(FeatureSpec, resolved["features"], "features")
    source = components.build("data", resolved["data"], where="data")
    frame = source.read(columns=spec.columns)
    roles = spec.roles(frame)
    task = resolve_task(spec, resolved["model"]["_target_"], frame[spec.target].dropna())
    print("\n".join([f"{source.describe()}: {len(frame):,} rows", *schema_lines(frame, roles), f"task         {task}"]))
    if args.save:
        path = config.user_conf_dir() / "features" / f"{args.save}.yaml"
        values = {"target": roles.target, "id": roles.id, "time": roles.time, "exclude": spec.exclude, "task": task,
                  "numeric": roles.numeric, "categorical": roles.categorical, "encoding": spec.encoding,
                  "unseen": spec.unseen, "positive_class": spec.positive_class}
        path.parent.mkdir(parents=True, exist_ok=True)
        header = f"# Inferred by `mlops features` from {source.describe()}; edit freely.\n"
        path.write_text(header + yaml.safe_dump(values, sort_keys=False))
        print(f"saved {path}\nuse it: mlops run {' '.join(o for o in args.overrides if not o.startswith('features.'))} "
              f"features={args.save}".replace("  ", " "))
    return 0


def _registry(argv):
    from mlops_framework import config
    from mlops_framework.pipeline import build_registry

    parser = argparse.ArgumentParser(prog="mlops registry", description="Inspect and change the model registry.")
    parser.add_argument("-c", "--config", action="append", default=[], metavar="OVERRIDE",
                        help="a config override choosing the registry, e.g. -c registry=snowflake")
    parser.add_argument("--json", action="store_true", help="print the whole records as JSON")
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("models", help="every model: versions, latest version, aliases, tags, comment")
    sub.add_parser("versions", help="a model's versions: created, aliases, key metrics, comment").add_argument("model")
    show = sub.add_parser("show", help="one version: aliases, metrics, comment, tags, where it came from")
    show.add_argument("model")
    show.add_argument("version")
    sub.add_parser("history").add_argument("model")
    rollback = sub.add_parser("rollback", help="move an alias back to the version it held before")
    rollback.add_argument("model")
    rollback.add_argument("alias")
    rollback.add_argument("--reason", default=None)
    delete = sub.add_parser("delete", help="delete a version (refused while an alias points at it)")
    delete.add_argument("model")
    delete.add_argument("version")
    delete.add_argument("--reason", default=None)
    alias = sub.add_parser("alias").add_subparsers(dest="alias_action", required=True)
    alias_set = alias.add_parser("set")
    for name in ("model", "version", "alias"):
        alias_set.add_argument(name)
    alias_unset = alias.add_parser("unset")
    alias_unset.add_argument("model")
    alias_unset.add_argument("alias")
    tag = sub.add_parser("tag").add_subparsers(dest="tag_action", required=True)
    tag_set = tag.add_parser("set")
    for name in ("model", "tag", "value"):
        tag_set.add_argument(name)
    args = parser.parse_args(options_first(argv))

    components = _components()
    registry = build_registry(config.resolved(config.compose(args.config, components)), components)
    text = None
    if args.action == "models":
        result = [{**model, "latest_version": _latest(registry, model)} for model in registry.models()]
        text = registry_views.models_table(result)
    elif args.action == "versions":
        result = registry.versions(args.model)
        text = registry_views.versions_table(result, registry.aliases(args.model))
    elif args.action == "show":
        result = registry.get_version(args.model, args.version)
        model = next((m for m in registry.models() if m["name"] == result["model_name"]), {})
        text = registry_views.version_summary(result, registry.aliases(args.model), model)
    elif args.action == "history":
        result = registry.history(args.model)
    elif args.action == "rollback":
        from mlops_framework.contracts import RollbackRegistry

        if not isinstance(registry, RollbackRegistry):
            raise MlopsError(f"{registry.describe()} cannot roll back aliases")
        result = registry.rollback(args.model, args.alias, reason=args.reason)
    elif args.action == "delete":
        from mlops_framework.contracts import DeletingRegistry

        if not isinstance(registry, DeletingRegistry):
            raise MlopsError(f"{registry.describe()} cannot delete versions from mlops; use the registry's own tools")
        result = registry.delete_version(args.model, args.version, reason=args.reason)
        text = f"deleted {args.model} {args.version} (recorded in mlops registry history {args.model})"
    elif args.action == "alias" and args.alias_action == "set":
        result = registry.set_alias(args.model, args.version, args.alias)
    elif args.action == "alias":
        result = registry.unset_alias(args.model, args.alias)
    else:
        registry.set_tag(args.model, args.tag, args.value)
        result = {"model": args.model, "tag": args.tag, "value": args.value}
    if args.json or text is None:
        text = json.dumps(result, indent=2, default=str) if args.json else _table(result)
    print(text)
    return 0


def _latest(registry, model):
    versions = registry.versions(model["name"]) if model.get("versions") else []
    return versions[-1]["version_name"] if versions else None


def _sweep(argv):
    from mlops_framework.sweep_record import DEFAULT_ALIAS, REGISTER_POLICIES

    parser = argparse.ArgumentParser(prog="mlops sweep", description="Leaderboards of sweeps (mlops run -m ...).")
    parser.add_argument("-c", "--config", action="append", default=[], metavar="OVERRIDE",
                        help="a config override locating the home, e.g. -c paths.home=/data/mlops")
    sub = parser.add_subparsers(dest="action", required=True)
    show = sub.add_parser("show", help="rank the trials of a sweep; write leaderboard.csv and leaderboard.html")
    show.add_argument("dir", nargs="?", help="a sweep directory (default: the latest under HOME/multiruns)")
    show.add_argument("--metric", help="rank by this metric (default: the sweep's)")
    show.add_argument("--direction", choices=("maximize", "minimize"))
    show.add_argument("--promote", nargs="?", const="", metavar="ALIAS",
                      help=f"point ALIAS (default: the sweep's, else {DEFAULT_ALIAS}) at the best trial's version")
    show.add_argument("--top", type=int, help="print only the first N rows")
    show.add_argument("--json", action="store_true", help="print JSON")
    sub.add_parser("list", help="the sweeps under HOME/multiruns, oldest first")
    rerun = sub.add_parser("rerun", help="run a sweep's recorded command again and compare the metrics; registers "
                                         "nothing and moves no alias unless --register is given")
    rerun.add_argument("dir", nargs="?", help="a sweep directory (default: the latest)")
    rerun.add_argument("--register", choices=REGISTER_POLICIES,
                       help="register trials as the sweep would (best, all) and move its alias")
    args = parser.parse_args(options_first(argv, flags=()))  # --json belongs to `show`

    if args.action == "list":
        return _sweep_list(args.config)
    sweep_dir = _sweep_dir(args.dir, args.config)
    if args.action == "rerun":
        return _sweep_rerun(sweep_dir, args.register)
    return _sweep_show(sweep_dir, args)


def _sweep_show(sweep_dir, args):
    from mlops_framework.leaderboard import leaderboard, print_board, write_chart, write_csv
    from mlops_framework.sweep_record import DEFAULT_ALIAS, read_record
    from mlops_framework.sweeps import promote

    alias = None
    if args.promote is not None:
        alias = args.promote or read_record(sweep_dir).get("promote") or DEFAULT_ALIAS
    board = leaderboard(sweep_dir, metric=args.metric, direction=args.direction)
    if not board["rows"]:
        raise MlopsError(f"{sweep_dir} has no trials")
    if args.metric and board["best"] is None:
        known = sorted({k for row in board["rows"] for k in row["metrics"]})
        raise MlopsError(f"no trial has the metric {args.metric!r}; metrics: {', '.join(known) or 'none'}")
    if alias and board["best"] and not board["best"]["version"]:
        raise MlopsError(f"the best trial ({board['best']['trial']}) registered no version (its model is kept in "
                         f"{board['best']['kept']}); rerun the sweep with mlops sweep rerun --register best")
    write_csv(board, sweep_dir / "leaderboard.csv")
    promoted = promote(board, alias) if alias else None
    chart = write_chart(board, sweep_dir)
    if args.json:
        print(json.dumps({k: v for k, v in board.items() if k != "record"} | {"promoted": promoted}, indent=2,
                         default=str))
    else:
        print_board(board, promoted, [sweep_dir / "leaderboard.csv", chart], top=args.top)
    return 0


def _sweeps(overrides):
    import datetime as dt
    from pathlib import Path

    from mlops_framework import config
    from mlops_framework.sweep_record import RECORD, read_record

    cfg = config.compose(overrides, _components())
    root = Path(str(cfg.paths.home)) / "multiruns"
    found = [p for p in root.glob("*") if p.is_dir() and ((p / RECORD).exists() or (p / "multirun.yaml").exists())] \
        if root.is_dir() else []

    def started(path):
        return read_record(path).get("started") or dt.datetime.fromtimestamp(
            path.stat().st_mtime, dt.timezone.utc).isoformat()

    return root, sorted(found, key=lambda p: (started(p), p.name))


def _sweep_dir(given, overrides):
    from pathlib import Path

    if given:
        path = Path(given)
        if not path.is_dir():
            raise MlopsError(f"no sweep directory {given}")
        return path
    root, found = _sweeps(overrides)
    if not found:
        raise MlopsError(f"no sweeps under {root}; run one with mlops run -m ...")
    return found[-1]


def _sweep_list(overrides):
    from mlops_framework.sweep_record import read_record

    root, found = _sweeps(overrides)
    if not found:
        print(f"(no sweeps under {root})")
        return 0
    for path in found:
        record = read_record(path)
        best = record.get("best") or {}
        trials = record.get("trials") or {}
        line = f"{path.name}  {trials.get('ok', '?')} ok {trials.get('failed', '?')} failed"
        if best:
            registered = f"{best.get('model')} {best.get('version')}" if best.get("version") else "not registered"
            line += f"  best {best.get('metric')}={best.get('value'):.4f} ({registered})"
        print(f"{line}  {record.get('command', '')}".rstrip())
    return 0


SWEEP_SETTINGS = ("hydra.callbacks.sweep.register=", "hydra.callbacks.sweep.promote=")


def _sweep_rerun(sweep_dir, register=None):
    """Run the recorded command into a new sweep directory; compare params and metrics trial by trial. Without
    ``register`` the rerun registers nothing and moves no alias; with it, trials register by that policy and
    the sweep's recorded alias moves as at the end of any sweep."""
    import datetime as dt
    import os
    import subprocess
    from pathlib import Path

    from mlops_framework.leaderboard import leaderboard
    from mlops_framework.sweep_record import RECORD, read_record

    record = read_record(sweep_dir)
    if not record.get("argv"):
        raise MlopsError(f"{sweep_dir} has no {RECORD} with a recorded command")
    stamp = dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
    new_dir = Path(sweep_dir).parent / f"{stamp}-rerun-of-{Path(sweep_dir).name}"
    argv = [a for a in record["argv"] if not a.startswith(("hydra.sweep.dir=", *SWEEP_SETTINGS))]
    if register is None:
        argv += ["hydra.callbacks.sweep.register=none", "hydra.callbacks.sweep.promote=null"]
    else:
        argv += [f"hydra.callbacks.sweep.register={register}"]
        argv += [f"hydra.callbacks.sweep.promote={record['promote'] or 'null'}"] if "promote" in record else []
    command = [sys.executable, "-m", "mlops_framework.cli", "run", *argv, f"hydra.sweep.dir={new_dir}"]
    cwd = record.get("cwd") if record.get("cwd") and Path(record["cwd"]).is_dir() else None
    print(f"rerun    {record['command']}\ninto     {new_dir}"
          + ("" if register else "\n         (registering nothing, moving no alias: --register best|all to do so)"),
          flush=True)
    result = subprocess.run(command, cwd=cwd, env={**os.environ, **_harmless_env(record.get("env"))})
    old, new = leaderboard(sweep_dir), leaderboard(new_dir)
    old_rows = {row["trial"]: row for row in old["rows"]}
    differences = []
    for row in new["rows"]:
        before = old_rows.get(row["trial"])
        if before is None:
            differences.append(f"trial {row['trial']} is new")
        elif before["params"] != row["params"] or before["metrics"] != row["metrics"]:
            differences.append(f"trial {row['trial']}: {old['metric']} {before['value']} -> {row['value']}")
    missing = sorted(set(old_rows) - {row["trial"] for row in new["rows"]}, key=lambda n: (len(n), n))
    differences += [f"trial {name} did not run" for name in missing]
    if differences:
        print("differs  " + "\n         ".join(differences))
        return 1
    print(f"same     params and metrics in all {len(new['rows'])} trials")
    return result.returncode


def _harmless_env(recorded):
    """The recorded variables a rerun may take from ``sweep.json``: only ``RERUN_ENV``. Anything that
    loads code (PYTHONPATH, MLOPS_PLUGINS, LD_PRELOAD...) is ignored, with a note: a file must not
    choose what runs."""
    from mlops_framework.sweep_record import RECORD, RERUN_ENV

    recorded = recorded if isinstance(recorded, dict) else {}
    taken = {k: str(v) for k, v in recorded.items() if k in RERUN_ENV and isinstance(v, (str, int))}
    ignored = sorted(str(k) for k in recorded if k not in taken)
    if ignored:
        print(f"note     not taken from {RECORD}: {', '.join(ignored)} (set them yourself if you trust them)",
              file=sys.stderr)
    return taken


def options_first(argv, flags=("--json",)):
    """Let ``-c X`` and the top-level ``flags`` appear anywhere, as users type them."""
    options, rest, iterator = [], [], iter(argv)
    for item in iterator:
        if item in flags:
            options.append(item)
        elif item in ("-c", "--config"):
            options += [item, next(iterator, "")]
        else:
            rest.append(item)
    return options + rest


def _table(result):
    if isinstance(result, list):
        if not result:
            return "(none)"
        keys = [k for k in result[0] if not isinstance(result[0][k], (dict, list))]
        rows = [["" if item.get(k) is None else str(item[k]) for k in keys] for item in result]
        widths = [max(len(k), *(len(r[i]) for r in rows)) for i, k in enumerate(keys)]
        lines = ["  ".join(k.upper().ljust(w) for k, w in zip(keys, widths)).rstrip()]
        lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in rows]
        return "\n".join(lines)
    return json.dumps(result, indent=2, default=str)


if __name__ == "__main__":
    sys.exit(main())
