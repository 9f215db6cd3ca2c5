"""Mutation testing of the decision code with mutmut 3 (docs/mutation.md).

    pip install "mutmut>=3.8,<4"
    python tools/mutation.py                 # every area, then the score table
    python tools/mutation.py gate alerts     # some areas
    python tools/mutation.py --survivors     # only the mutants the last runs left alive or timed out
    python tools/mutation.py --report        # the table from the last runs, running nothing

Each area names the functions whose mutants count (mutmut mutates whole files, then runs only the mutants
named here, each against the tests that reach it). The files and the test selection are in the
``[tool.mutmut]`` table of the root ``pyproject.toml`` and of ``plugins/mlops_snowflake/pyproject.toml``
(the plugin is its own project: its modules import as ``mlops_snowflake.*`` only from its own root).
Mutmut's work tree is ``mutants/`` in each root (git-ignored); results are cached there between runs.
"""

import argparse
import fnmatch
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SNOWFLAKE = ROOT / "plugins" / "mlops_snowflake"


def _functions(module, names):
    return [f"{module}.{_mangled(name)}__mutmut_*" for name in names]


def _mangled(name):
    """mutmut's name for a function (``x_name``) or a method (``xǁClassǁmethod``)."""
    if "." in name:
        cls, method = name.split(".")
        return f"xǁ{cls}ǁ{method}"
    return f"x_{name}"


AREAS = {
    "features": (ROOT, _functions("mlops_framework.features", [
        "infer_task", "_kind", "_id_like", "infer_roles", "_check_names", "_learn_classes", "_learn_vocabulary",
        "FeatureContract.check_columns", "FeatureContract.encode_target"])),
    "split": (ROOT, _functions("mlops_framework.stages", ["split", "_split", "resolve_task", "_fractions",
                                                          "classification_metrics"])),
    "sinks": (ROOT, _functions("mlops_local.sinks", [
        "describe_replaced", "_partition_counts", "_partition_groups", "_split_by_partition", "_partition_segment",
        "_DuckDBWriter.finish", "_DuckDBWriter._count_written"])),
    "registry": (ROOT, _functions("mlops_local.registry", [
        "_read_history", "_current_aliases", "_next_version", "_natural_key", "LocalRegistry.rollback",
        "LocalRegistry._resolve", "LocalRegistry._move_alias"])),
    "gate": (ROOT, _functions("mlops_framework.lifecycle", ["gate", "paired_bootstrap", "mcnemar", "drift_alerts"])),
    "monitoring": (ROOT, _functions("mlops_framework.monitoring", [
        "roc_auc", "classification_summary", "bin_edges", "histogram", "frequencies", "learn_categories", "psi",
        "jensen_shannon", "hellinger", "wasserstein", "drift", "window_starts", "_window_width",
        "metrics_from_confusion", "auc_from_buckets", "wasserstein_from_quantiles", "check_expression"])),
    "alerts": (ROOT, _functions("mlops_framework.alerts", [
        "AlertRule.__post_init__", "AlertRule.is_drift", "AlertRule.too_few_rows", "build_rules", "evaluate"])),
    "csv": (ROOT, _functions("mlops_local.sources", [
        "CsvSource._bind", "_delimiter_of", "_encoding_of", "_is_number", "_csv_header", "_decimal_comma_columns",
        "_header_position", "_fields", "_not_true_false", "_type_overrides", "_converted", "_space_after_delimiter",
        "_numbers_with_placeholders", "_placeholder", "_numbers"])),
    "redaction": (ROOT, _functions("mlops_framework.config", [
        "redact", "mask_url", "scrub", "remember_secret", "_override_secret", "_remember_override_secrets",
        "_redact_overrides"])),
    "sweeper": (ROOT, _functions("hydra_plugins.mlops_optuna_sweeper.sweeper", [
        "search_space", "_distribution", "format_value"])),
    "snowflake": (SNOWFLAKE, _functions("mlops_snowflake.monitor", [
        "create_monitor_sql", "rule_condition", "_window_condition", "_days", "follow_alias_sql", "metrics_sql",
        "for_task"]) + _functions("mlops_snowflake.registry", ["SnowflakeRegistry._verify", "_same_value"])),
}
KILLED = {"killed", "timeout", "caught by type check"}
NOT_RUN = "not checked"


def run(areas, max_children, survivors_only=False):
    """One mutmut run per project root for all ``areas`` in it (its clean test run then happens once);
    ``survivors_only``: only the mutants the last runs did not kill, by name, and those that timed out (a
    timeout may be the machine's load, not the mutant: it counts as detected only if it happens again)."""
    by_root = {}
    for area in areas:
        root, patterns = AREAS[area]
        if survivors_only:
            patterns = [name for name, status in _matching(statuses(root), patterns).items()
                        if status not in KILLED or status == "timeout"]
        by_root.setdefault(root, []).extend(patterns)
    for root, patterns in by_root.items():
        if not patterns:
            continue
        subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children), *patterns],
                       cwd=root, check=True)


def statuses(root):
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    out = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"], cwd=root, env=env,
                         capture_output=True, text=True, check=True).stdout
    return dict(line.strip().rsplit(": ", 1) for line in out.splitlines() if ": " in line)


def _matching(found, patterns):
    return {name: status for name, status in found.items() if any(fnmatch.fnmatchcase(name, p) for p in patterns)}


def table(areas):
    """Per area: mutants, those run, killed (timeouts among them), left alive, and the score over those run."""
    cache, rows, survivors = {}, [], []
    for area in areas:
        root, patterns = AREAS[area]
        mine = _matching(cache.setdefault(root, statuses(root)), patterns)
        run_ = [s for s in mine.values() if s != NOT_RUN]
        killed = sum(s in KILLED for s in run_)
        rows.append((area, len(mine), len(run_), killed, sum(s == "timeout" for s in run_)))
        survivors += [f"{name}: {status}" for name, status in sorted(mine.items())
                      if status not in KILLED and status != NOT_RUN]
    print(f"{'area':<12} {'mutants':>8} {'run':>6} {'killed':>7} {'timeout':>8} {'alive':>6} {'score':>7}")
    rows.append(("overall", *(sum(row[i] for row in rows) for i in range(1, 5))))
    for area, count, run_, killed, timeouts in rows:
        score = f"{killed / run_:.1%}" if run_ else "-"
        print(f"{area:<12} {count:>8} {run_:>6} {killed:>7} {timeouts:>8} {run_ - killed:>6} {score:>7}")
    print("\nnot killed:" if survivors else "", *survivors, sep="\n  ")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("areas", nargs="*", metavar="AREA", help=", ".join(AREAS))
    parser.add_argument("--report", action="store_true", help="print the table of the last runs only")
    parser.add_argument("--survivors", action="store_true",
                        help="run again only the mutants not killed last time, and the timeouts")
    parser.add_argument("--max-children", type=int, default=1)
    args = parser.parse_args()
    areas = args.areas or list(AREAS)
    unknown = sorted(set(areas) - set(AREAS))
    if unknown:
        parser.error(f"unknown area(s) {', '.join(unknown)}; the areas are {', '.join(AREAS)}")
    if not args.report:
        run(areas, args.max_children, args.survivors)
    table(areas)


if __name__ == "__main__":
    main()
