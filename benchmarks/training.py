"""Target 2: the framework's train stage against a bare ``XGBClassifier.fit`` on the same data.

One process composes ``mlops run pipeline=train`` (default model params from conf/model/xgboost.yaml)
on the notebook's 369,245 rows, runs load -> validate -> features -> split, then alternates, ``repeats``
times: the ``train`` stage itself, a bare ``XGBClassifier(**params).fit`` on the same training split (the
framework's DataFrame: the reference) and, for information, the same fit on that split as a
C-contiguous float32 numpy matrix. The ratio is of medians.
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
                   f"(60% split) x {result['features']} features"),
    ]
