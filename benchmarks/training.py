"""Target 2: the framework's train stage against a bare ``XGBClassifier.fit`` on the same data.

One process composes ``mlops run pipeline=train`` (default model params from conf/model/xgboost.yaml)
on the notebook's 369,245 rows, runs load -> validate -> features -> split, then alternates, ``repeats``
times: the ``train`` stage itself, a bare ``XGBClassifier(**params).fit`` on the same training split (the
framework's DataFrame: the reference) and, for information, the same fit on that split as a
C-contiguous float32 numpy matrix. The ratio is of medians (an in-process breakdown).

Then the commands a user types, each a whole process: ``mlops run pipeline=train data=parquet`` on 1M
rows against :func:`bare_script` (read the file into pandas, ``get_dummies``, the same split, ``fit``):
wall time and peak RSS of each. Today both read the whole table into memory, so memory grows with the rows.
"""

from __future__ import annotations

import tempfile
import time

from benchmarks.common import Row, build_run, child, median, train_overrides


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


def user_commands(ctx) -> list[Row]:
    import shutil

    from benchmarks.common import GIB, MODEL_NAME

    sizes = ctx.sizes
    data = ctx.data(sizes.small_weeks)
    home = ctx.scratch("home-training")
    command = ["mlops", "run", "pipeline=train", "data=parquet", "features=mortgage", f"data.path={data}", f"paths.home={home}",
               f"registry.model_name={MODEL_NAME}"]
    if sizes.n_estimators:
        command.append(f"model.params.n_estimators={sizes.n_estimators}")
    framework, bare = [], []
    for i in range(min(2, sizes.repeats)):
        ctx.log(f"  mlops run pipeline=train on {sizes.small_rows:,} rows, then the bare script (round {i + 1})")
        shutil.rmtree(home, ignore_errors=True)
        framework.append(child("benchmarks.common:measure_command", argv=command))
        bare.append(child("benchmarks.training:bare_script", data=str(data), n_estimators=sizes.n_estimators))
    f, b = median(r["seconds"] for r in framework), median(r["child_s"] for r in bare)
    f_rss, b_rss = max(r["command_peak_rss"] for r in framework) / GIB, max(r["peak_rss"] for r in bare) / GIB
    rows = f"{sizes.small_rows / 1e6:g}M rows"
    return [
        Row("training", f"mlops run pipeline=train / bare script, {rows}", f / b, "<=", 1.15,
            detail=f"command {f:.1f} s, bare script {b:.1f} s (whole processes; the command also validates, "
                   f"evaluates and registers)"),
        Row("training", f"peak RSS of mlops run pipeline=train, {rows}", f_rss, "<=", 2.0, unit="GiB",
            detail=f"bare script {b_rss:.2f} GiB"),
    ]


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
