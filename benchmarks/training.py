"""Target 2: the framework's train stage against a bare ``XGBClassifier.fit`` on the same data.

One process composes ``mlops run pipeline=train`` (default model params from conf/model/xgboost.yaml)
on the notebook's 369,245 rows, runs load -> validate -> features -> split, then alternates, ``repeats``
times: the ``train`` stage itself, a bare ``XGBClassifier(**params).fit`` on the same training split (the
framework's DataFrame: the reference) and, for information, the same fit on that split as a
C-contiguous float32 numpy matrix. The ratio is of medians (an in-process breakdown).

Then the commands a user types, each a whole process: ``mlops run pipeline=train data=parquet`` at 1M and
10M rows against :func:`bare_script` (read the file into pandas, ``get_dummies``, the same split, ``fit``):
wall time and peak RSS of each. From 1M rows the command trains from batches (``mlops_framework.streamed``):
its memory follows XGBoost's quantized matrix, the bare script's the raw table and its one-hot copy.
A last run trains the 10M rows with the quantized matrix paged to disk under a memory limit (RLIMIT_DATA)
smaller than the table.
"""

from __future__ import annotations

import tempfile
import time

from benchmarks.common import MODEL_NAME, Row, build_run, child, median, train_overrides


def compare(sizes: dict, repeats: int) -> dict:
    import numpy as np
    import xgboost

    from mlops_framework import stages

    with tempfile.TemporaryDirectory(prefix="mlops-bench-train-") as home:
        run = build_run(train_overrides(home, sizes))
        for stage in run.stages:
            if stage.name == "train":
                break
            stage.run(run)
        X_train, y_train = run.results["splits"]["train"]
        X_numpy = np.ascontiguousarray(X_train.to_numpy(dtype=np.float32))
        params = dict(run.model.params)

        def stage():
            stages.train(run)

        def bare_frame():
            xgboost.XGBClassifier(**params).fit(X_train, y_train)

        def bare_numpy():
            xgboost.XGBClassifier(**params).fit(X_numpy, y_train)

        variants = {"stage": stage, "bare_frame": bare_frame, "bare_numpy": bare_numpy}
        times: dict[str, list[float]] = {name: [] for name in variants}
        bare_numpy()  # warm-up: first-call costs (thread pool, page faults) are no one's
        for i in range(repeats):
            order = list(variants) if i % 2 == 0 else list(reversed(variants))
            for name in order:
                started = time.perf_counter()
                variants[name]()
                times[name].append(time.perf_counter() - started)
        return {"times": times, "fit_rows": int(len(y_train)), "rows": sizes["train_weeks"] * sizes["train_rows_per_week"],
                "features": int(X_numpy.shape[1]), "params": params}


def bare_script(data: str, n_estimators: int | None) -> dict:
    """What a user would write instead of the framework: pandas, get_dummies, split, fit."""
    import pandas as pd
    import xgboost
    from sklearn.model_selection import train_test_split

    frame = pd.read_parquet(data)
    X = pd.get_dummies(frame[["APPLICANT_INCOME_000S", "LOAN_AMOUNT_000S", "LOAN_TYPE_NAME", "LOAN_PURPOSE_NAME",
                              "COUNTY_NAME"]], dtype="float32")
    y = frame["MORTGAGERESPONSE"].to_numpy()
    X_rest, _, y_rest, _ = train_test_split(X, y, test_size=0.2, random_state=42, stratify=y)
    X_train, _, y_train, _ = train_test_split(X_rest, y_rest, test_size=0.25, random_state=42, stratify=y_rest)
    xgboost.XGBClassifier(n_estimators=n_estimators or 200, max_depth=6, learning_rate=0.1, tree_method="hist",
                          random_state=42).fit(X_train, y_train)
    return {"rows": len(frame)}


# Private writable memory (RLIMIT_DATA, as ``prlimit --data``: the heap and anonymous mappings, not the
# libraries' code nor the read-only mapped cache pages) of the larger-than-memory run.
MEMORY_LIMIT = 2 << 30  # 1.5 GiB stops DuckDB's reader mid-run


def train_command(data, home, n_estimators, *extra) -> list[str]:
    command = ["mlops", "run", "pipeline=train", "data=parquet", "features=mortgage", f"data.path={data}",
               f"paths.home={home}", f"registry.model_name={MODEL_NAME}", *extra]
    if n_estimators:
        command.append(f"model.params.n_estimators={n_estimators}")
    return command


def measure_limited(argv: list[str], limit_bytes: int) -> dict:
    """``argv`` run under a memory limit (``RLIMIT_DATA``, as ``prlimit --data``): its wall time, peak RSS and
    exit status. Run it in a fresh process (``child``) so that RUSAGE_CHILDREN is this command's."""
    import resource
    import subprocess
    import sys
    from pathlib import Path

    from benchmarks.common import REPO, user_env

    def limit():
        resource.setrlimit(resource.RLIMIT_DATA, (limit_bytes, limit_bytes))

    argv = [str(Path(sys.executable).with_name("mlops")), *argv[1:]] if argv[0] == "mlops" else argv
    started = time.perf_counter()
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, preexec_fn=limit, timeout=3600,
                          env=user_env())
    return {"seconds": time.perf_counter() - started, "returncode": proc.returncode,
            "tail": (proc.stderr or proc.stdout).strip().splitlines()[-3:],
            "command_peak_rss": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024}


def memory_phases(data: str, home: str, n_estimators: int | None) -> dict:
    """Where the command's peak goes: ``pipeline=train`` on ``data`` in this process, its RSS sampled every
    20 ms (``/proc/self/status``: native memory too, which tracemalloc does not see), marked at each stage,
    at each pass XGBoost makes over the training rows and around boosting. Returns ``phases``: ``[name,
    RSS at its start, peak until the next mark]`` in MiB, in order. Linux only."""
    import threading

    import xgboost

    from mlops_framework import streamed

    def rss():
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) // 1024 for line in status if line.startswith("VmRSS"))

    samples, marks, done = [], [], threading.Event()

    def sample():
        while not done.is_set():
            samples.append((time.perf_counter(), rss()))
            time.sleep(0.02)

    def mark(name):
        marks.append((time.perf_counter(), name, rss()))

    encoded_parts, train = streamed.encoded_parts, xgboost.train

    def passes(table, contract, split, wanted):
        mark(f"pass over {'+'.join(wanted)} rows")
        yield from encoded_parts(table, contract, split, wanted)

    def boosting(*args, **kwargs):
        mark("boosting (the quantized matrix built)")
        try:
            return train(*args, **kwargs)
        finally:
            mark("boosting done")

    streamed.encoded_parts, xgboost.train = passes, boosting
    threading.Thread(target=sample, daemon=True).start()
    run = build_run(train_command(data, home, n_estimators)[2:])
    for stage in run.stages:
        mark(f"stage {stage.name}")
        stage.run(run)
    mark("end")
    done.set()
    phases = []
    for (start, name, at_start), (end, _, _) in zip(marks, marks[1:]):
        inside = [value for moment, value in samples if start <= moment < end]
        phases.append([name, at_start, max(inside, default=at_start)])
    return {"phases": phases}


def pandas_bytes(data: str, rows: int) -> dict:
    """The size of the table ``data`` as pandas holds it (``memory_usage(deep=True)``), from its first
    ``rows`` rows scaled to all of them: what reading the whole table costs before any encoding."""
    import pyarrow.parquet as pq

    file = pq.ParquetFile(data)
    head = next(file.iter_batches(batch_size=rows)).to_pandas()
    return {"bytes": int(head.memory_usage(deep=True).sum() * file.metadata.num_rows / len(head))}


def user_commands(ctx) -> list[Row]:
    """``mlops run pipeline=train data=parquet`` against :func:`bare_script`, whole processes, alternating, at
    ``small_rows`` (1M) and ``score_rows`` (10M): wall time and peak RSS of each, and the growth of the
    command's peak from the small table to the big one. Then the big table trained with
    ``split.external_memory_from_gib=0`` under a memory limit smaller than the table is in pandas."""
    import shutil

    from benchmarks.common import GIB

    sizes = ctx.sizes
    home = ctx.scratch("home-training")
    measured = {}
    big_trees = sizes.big_train_trees or sizes.n_estimators
    for weeks in dict.fromkeys((sizes.small_weeks, sizes.score_weeks)):
        data, rows = ctx.data(weeks), weeks * sizes.rows_per_week
        trees, rounds = ((sizes.n_estimators, min(2, sizes.repeats)) if weeks == sizes.small_weeks
                         else (big_trees, sizes.big_train_rounds))
        framework, bare = [], []
        for i in range(rounds):
            ctx.log(f"  mlops run pipeline=train and the bare script on {rows:,} rows (round {i + 1} of {rounds})")
            for contender in (("framework", "bare") if i % 2 == 0 else ("bare", "framework")):
                shutil.rmtree(home, ignore_errors=True)
                if contender == "framework":
                    framework.append(child("benchmarks.common:measure_command", timeout=7200,
                                           argv=train_command(data, home, trees)))
                else:
                    bare.append(child("benchmarks.training:bare_script", timeout=7200, data=str(data),
                                      n_estimators=trees))
        measured[rows] = {"seconds": median(r["seconds"] for r in framework),
                          "bare_seconds": median(r["child_s"] for r in bare),
                          "rss": max(r["command_peak_rss"] for r in framework) / GIB,
                          "bare_rss": max(r["peak_rss"] for r in bare) / GIB, "trees": trees or 200,
                          "rounds": rounds, "matrix": quantized_matrix_line(framework[0]["stdout"])}
    small, big = measured[sizes.small_rows], measured[sizes.score_rows]
    label = {n: f"{n / 1e6:g}M rows" for n in measured}
    out = [
        Row("training", f"mlops run pipeline=train / bare script, {label[n]}", m["seconds"] / m["bare_seconds"], "<=",
            1.15, detail=f"command {m['seconds']:.1f} s, bare script {m['bare_seconds']:.1f} s ({m['trees']} trees, "
                         f"{m['rounds']} round(s), medians; whole processes; the command also validates, evaluates "
                         f"and registers)")
        for n, m in measured.items()
    ]
    out += [
        Row("training", f"peak RSS of mlops run pipeline=train, {label[n]}", m["rss"], "<=", 2.0, unit="GiB",
            detail=f"bare script {m['bare_rss']:.2f} GiB; the command's quantized matrix: {m['matrix']}")
        for n, m in measured.items()
    ]
    out.append(Row("training", f"peak RSS growth of the command, {label[sizes.small_rows]} -> "
                               f"{label[sizes.score_rows]}", big["rss"] / small["rss"], "<=",
                   sizes.score_rows / sizes.small_rows,
                   detail=f"{small['rss']:.2f} -> {big['rss']:.2f} GiB; the bare script {small['bare_rss']:.2f} -> "
                          f"{big['bare_rss']:.2f} GiB (goal: no faster than the rows)"))
    out += larger_than_memory(ctx, home)
    return out


def quantized_matrix_line(stdout: str) -> str:
    """What the command's summary says of its quantized matrix (size, in memory or paged to disk)."""
    for line in stdout.splitlines():
        if line.startswith("quantized matrix"):
            return line.removeprefix("quantized matrix").strip()
    return "none: the run trained from a frame in memory, not from batches"


def larger_than_memory(ctx, home) -> list[Row]:
    """The big table trained with its quantized matrix paged to disk under a ``MEMORY_LIMIT`` memory limit,
    which must be smaller than the table in pandas: no row at sizes where it is not (``--quick``)."""
    import shutil

    from benchmarks.common import GIB

    sizes = ctx.sizes
    data = ctx.data(sizes.score_weeks)
    table = child("benchmarks.training:pandas_bytes", data=str(data), rows=min(1_000_000, sizes.score_rows))["bytes"]
    limit = MEMORY_LIMIT
    measure = f"peak RSS, a table larger than the memory limit ({sizes.score_rows / 1e6:g}M rows, external memory)"
    if table <= limit:
        ctx.log(f"  no larger-than-memory run: the table in pandas, {table / GIB:.2f} GiB, fits the limit")
        return []
    shutil.rmtree(home, ignore_errors=True)
    ctx.log(f"  mlops run pipeline=train split.external_memory_from_gib=0 on {sizes.score_rows:,} rows under a "
            f"{limit / GIB:.2f} GiB memory limit (the table in pandas: {table / GIB:.2f} GiB)")
    argv = train_command(data, home, sizes.big_train_trees or sizes.n_estimators, "split.external_memory_from_gib=0")
    result = child("benchmarks.training:measure_limited", timeout=7200, argv=argv, limit_bytes=limit)
    detail = (f"{sizes.score_rows:,} rows, split.external_memory_from_gib=0; limit {limit / GIB:.2f} GiB (RLIMIT_DATA), "
              f"the table in pandas {table / GIB:.2f} GiB; {result['seconds']:.0f} s")
    if result["returncode"] != 0:
        return [Row("training", measure, None, "<", limit / GIB, unit="GiB", status="FAIL",
                    detail=f"{detail}; failed: {' / '.join(result['tail'])}")]
    return [Row("training", measure, result["command_peak_rss"] / GIB, "<", limit / GIB, unit="GiB", detail=detail)]


def run(ctx) -> list[Row]:
    from dataclasses import asdict

    sizes = ctx.sizes
    ctx.log(f"  training on {sizes.train_rows:,} rows: train stage vs bare fit, {sizes.train_repeats} rounds")
    result = child("benchmarks.training:compare", sizes=asdict(sizes), repeats=sizes.train_repeats)
    t = {name: median(values) for name, values in result["times"].items()}
    reference = t["bare_frame"]
    return [
        Row("training", f"train stage / bare fit, {result['rows']:,} rows", t["stage"] / reference, "<=", 1.10,
            detail=f"stage {t['stage']:.2f} s; bare fit {t['bare_frame']:.2f} s on the DataFrame, "
                   f"{t['bare_numpy']:.2f} s on float32 numpy; {result['fit_rows']:,} training rows "
                   f"(60% split) x {result['features']} features; in-process breakdown"),
        *user_commands(ctx),
    ]
