"""The ``mlops`` command. Imports only argparse-level code at start; everything heavy loads on use."""

import argparse
import json
import sys

from mlops_framework.errors import MlopsError

EXIT_USER_ERROR = 2


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
            from mlops_framework.sweeps import main as sweep_main

            return sweep_main(rest)
        raise MlopsError(f"unknown command {command!r}; commands: run, plan, features, registry, sweep (see mlops --help)")
    except MlopsError as error:
        print(f"mlops: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:  # Ctrl-C: a sweep's workers are already stopped (mlops_framework.workers)
        print("mlops: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `mlops plan ... | head` closed the pipe: stop quietly, as cat and ls do
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 1


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
        "                            tag set MODEL TAG VALUE | history MODEL | rollback MODEL ALIAS",
        "                            (each takes --json)",
        "  sweep show [DIR]          the leaderboard of a sweep (default: the latest), as a table, CSV and plot",
        "  sweep list | rerun [DIR]  every sweep | run a sweep's recorded command again, compare the metrics",
        "",
        "config groups (choose with GROUP=OPTION, change a value with GROUP.KEY=VALUE):",
    ]
    for group, options in config.group_options(components).items():
        lines.append(f"  {group:<12} {', '.join(options)}")
    lines += ["", f"registered stages: {', '.join(components.stages)}",
              "examples: mlops run   |   mlops plan backend=local data=csv data.path=loans.csv"]
    return "\n".join(lines)


def execute(cfg, components, output_dir):
    """Check, resolve and run a composed config (``mlops_framework.runner``); print and return its summary."""
    from mlops_framework import config, runner

    config.check(cfg, components)
    result = runner.execute(config.resolved(cfg), components, output_dir)
    print("\n".join(result.lines()))
    return result.to_dict()


def _run(overrides):
    import traceback

    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from mlops_framework import config

    components = _components()

    def task(cfg):
        multirun = HydraConfig.get().mode == RunMode.MULTIRUN
        try:
            return execute(cfg, components, HydraConfig.get().runtime.output_dir)
        except MlopsError as error:
            print(f"mlops: error: {error}", file=sys.stderr)
            if multirun:  # one failed trial: the others go on; the sweep reports it at the end (sweeps.py)
                return {"error": str(error)}
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
        hydra.main(config_path=str(config.conf_dir()), config_name="config", version_base="1.3")(task)()
    except SystemExit as exit_:  # Hydra and the task exit this way; `main` returns the status instead
        return exit_.code if isinstance(exit_.code, int) else 1
    finally:
        sys.argv = saved_argv
    return 0


def _plan(argv):
    from mlops_framework import config
    from mlops_framework.pipeline import build_run

    overrides = [item for item in argv if item not in ("-m", "--multirun")]
    components = _components()
    lines, title = [], "plan"
    if len(overrides) < len(argv):  # a sweep: its trials, then one trial's plan in full
        from mlops_framework import sweeps

        lines, overrides, label = sweeps.plan(overrides, components)
        title = f"\nplan of {label} ({' '.join(overrides) or 'no overrides'})"
    cfg = config.compose(overrides, components)
    config.check(cfg, components)
    run = build_run(config.resolved(cfg), components)
    lines.append(f"{title}: backend {cfg.backend.kind}, registry {run.registry.describe()}, {len(run.stages)} stages")
    lines += [f"{number:>3}. {line}" for number, line in enumerate(run.backend.plan(run), 1)]
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
                  "unseen": spec.unseen}
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
    parser.add_argument("--json", action="store_true", help="print JSON")
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("models")
    sub.add_parser("versions").add_argument("model")
    show = sub.add_parser("show")
    show.add_argument("model")
    show.add_argument("version")
    sub.add_parser("history").add_argument("model")
    rollback = sub.add_parser("rollback", help="move an alias back to the version it held before")
    rollback.add_argument("model")
    rollback.add_argument("alias")
    rollback.add_argument("--reason", default=None)
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

    if args.action == "models":
        result = registry.models()
    elif args.action == "versions":
        result = registry.versions(args.model)
    elif args.action == "show":
        result = registry.get_version(args.model, args.version)
    elif args.action == "history":
        result = registry.history(args.model)
    elif args.action == "rollback":
        from mlops_framework.contracts import RollbackRegistry

        if not isinstance(registry, RollbackRegistry):
            raise MlopsError(f"{registry.describe()} cannot roll back aliases")
        result = registry.rollback(args.model, args.alias, reason=args.reason)
    elif args.action == "alias" and args.alias_action == "set":
        result = registry.set_alias(args.model, args.version, args.alias)
    elif args.action == "alias":
        result = registry.unset_alias(args.model, args.alias)
    else:
        registry.set_tag(args.model, args.tag, args.value)
        result = {"model": args.model, "tag": args.tag, "value": args.value}
    print(json.dumps(result, indent=2, default=str) if args.json else _table(result))
    return 0


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
        rows = [[str(item.get(k, "")) for k in keys] for item in result]
        widths = [max(len(k), *(len(r[i]) for r in rows)) for i, k in enumerate(keys)]
        lines = ["  ".join(k.upper().ljust(w) for k, w in zip(keys, widths))]
        lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in rows]
        return "\n".join(lines)
    return json.dumps(result, indent=2, default=str)


if __name__ == "__main__":
    sys.exit(main())
