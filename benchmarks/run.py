"""``python -m benchmarks`` (or ``python benchmarks/run.py``): run the targets, print the table, write JSON."""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import platform
import sys
import time
import traceback
from importlib import metadata
from pathlib import Path

if __package__ in (None, ""):  # python benchmarks/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import FULL, QUICK, REPO, Context, Row  # noqa: E402

TARGETS = ("scoring", "training", "startup", "warehouse", "sweeps", "gpu")


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = None
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        memory = round(pages * size / (1 << 30), 1)
    except (ValueError, OSError):
        pass
    versions = {}
    for name in ("xgboost", "pandas", "pyarrow", "duckdb", "numpy", "hydra-core", "mlops-framework"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": memory, "os": platform.platform(),
            "python": platform.python_version(), "versions": versions}


def table(rows: list[Row]) -> str:
    def value(r: Row) -> str:
        if r.value is None:
            return "-"
        if r.unit == "x":
            return f"{r.value:.2f}x"
        if r.unit == "rows":
            return f"{r.value:,.0f}"
        return f"{r.value:.2f} {r.unit}"

    def goal(r: Row) -> str:
        g = f"{r.goal:g}x" if r.unit == "x" else f"{r.goal:g} {r.unit}" if r.unit != "rows" else f"{r.goal:g}"
        return f"{r.op} {g}"

    header = ("target", "measure", "value", "goal", "result")
    body = [(r.target, r.measure, value(r), goal(r), r.status) for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    out = [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *(line(b) for b in body)]
    return "\n".join(out)


def parse(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat: a smoke run (~30 s)")
    parser.add_argument("--only", action="append", default=[], metavar="TARGET",
                        help=f"run only these targets (repeatable or comma-separated): {', '.join(TARGETS)}")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results.json"), help="where to write the JSON")
    parser.add_argument("--repeats", type=int, help="runs of each scoring/warehouse/training measurement")
    parser.add_argument("--check", action="store_true", help="exit 1 if any target fails")
    parser.add_argument("--keep", action="store_true", help="keep the scored outputs under the data directory")
    args = parser.parse_args(argv)
    only = [t.strip() for item in args.only for t in item.split(",") if t.strip()]
    unknown = [t for t in only if t not in TARGETS]
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}; choose from {', '.join(TARGETS)}")
    args.only = only or list(TARGETS)
    return args


def main(argv=None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    sizes = QUICK if args.quick else FULL
    if args.repeats:
        from dataclasses import replace

        sizes = replace(sizes, repeats=args.repeats, train_repeats=args.repeats)
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    ctx = Context(sizes, log=log)
    started = time.perf_counter()
    load_before = os.getloadavg()
    rows: list[Row] = []
    seconds = {}
    for target in [t for t in TARGETS if t in args.only]:
        log(f"{target}:")
        t0 = time.perf_counter()
        try:
            rows += importlib.import_module(f"benchmarks.{target}").run(ctx)
        except Exception as error:  # noqa: BLE001 - one target's failure leaves the others measured
            log(traceback.format_exc())
            rows.append(Row(target, "(could not measure)", None, ">=", 0, status="ERROR",
                            detail=str(error).strip().splitlines()[-1][:300] if str(error).strip() else type(error).__name__))
        seconds[target] = round(time.perf_counter() - t0, 1)
    elapsed = time.perf_counter() - started
    if not args.keep:
        import shutil

        shutil.rmtree(ctx.dir / "out", ignore_errors=True)  # scored outputs: hundreds of MB; the data stays cached
    result = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "quick": args.quick,
        "sizes": {**sizes.__dict__, "score_rows": sizes.score_rows, "small_rows": sizes.small_rows,
                  "train_rows": sizes.train_rows},
        "load_average": {"before": [round(x, 2) for x in load_before],
                         "after": [round(x, 2) for x in os.getloadavg()]},
        "seconds": {**seconds, "total": round(elapsed, 1)},
        "data_dir": str(ctx.dir),
        "rows": [r.to_dict() for r in rows],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")

    m = result["machine"]
    v = m["versions"]
    print(f"Measured {result['date'][:10]} on {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, Python {m['python']}, "
          f"xgboost {v['xgboost']}, pyarrow {v['pyarrow']}, duckdb {v['duckdb']}, pandas {v['pandas']}; "
          f"load average {load_before[0]:.1f} at the start{' (QUICK sizes)' if args.quick else ''}.\n")
    print(table(rows))
    print()
    for r in rows:
        if r.detail:
            print(f"- {r.target}, {r.measure}: {r.detail}")
    passed = sum(r.status == "PASS" for r in rows)
    print(f"\n{passed} of {len(rows)} pass; {elapsed:.0f} s on {m['cores']} cores ({m['cpu']}, {m['memory_gib']} GiB), "
          f"load average {load_before[0]:.1f} before, {result['load_average']['after'][0]:.1f} after"
          f"{'; QUICK sizes: the numbers mean little' if args.quick else ''}. JSON: {out}")
    if any(r.status == "ERROR" for r in rows):
        return 1
    if args.check and any(r.status == "FAIL" for r in rows):
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
