"""The GPU section: XGBoost training and scoring with ``device="cuda"`` against the CPU path, same rows.

It runs only where a CUDA device is visible to XGBoost (``python -m benchmarks --only gpu``, or
``python -m benchmarks.gpu`` on a GPU machine that has no DuckDB or Hydra: it needs numpy, pandas,
pyarrow, scikit-learn, CuPy and xgboost only). Elsewhere its rows are reported as N/A with the reason.

Both devices train the benchmark model's parameters (conf/model/xgboost.yaml: 200 trees, depth 6,
``hist``) on the same one-hot encoded synthetic rows (the framework's own generator and feature
contract), then score the same held-out rows with ``inplace_predict``. Reported: wall time of each fit
and each predict (median of ``repeats``, devices alternating; the GPU's includes copying the rows to the
device and the scores back), the speed-ups, and each model's ROC AUC on the scored rows (the two devices
build their histograms differently, so their trees and scores differ slightly; the quality must not).
"""

from __future__ import annotations

import functools
import json
import statistics
import sys
import time

PARAMS = {"n_estimators": 200, "max_depth": 6, "learning_rate": 0.1, "tree_method": "hist", "random_state": 42}


def cuda_available() -> str | None:
    """None when XGBoost can train on a CUDA device here; else why not."""
    try:
        import numpy as np
        import xgboost
    except ImportError as error:
        return f"xgboost is not importable: {error}"
    if not xgboost.build_info().get("USE_CUDA"):
        return f"this xgboost {xgboost.__version__} build has no CUDA support"
    import warnings

    with warnings.catch_warnings(record=True):  # without a GPU, XGBoost warns and falls back to the CPU
        model = xgboost.XGBClassifier(n_estimators=1, device="cuda", tree_method="hist")
        model.fit(np.zeros((4, 1), dtype=np.float32), np.array([0, 1, 0, 1]))
    device = json.loads(model.get_booster().save_config())["learner"]["generic_param"]["device"]
    return None if device.startswith("cuda") else "no visible CUDA device (XGBoost fell back to the CPU)"


def encoded(rows: int, seed: int):
    """``rows`` synthetic loan applications, one-hot encoded by the framework's feature contract."""
    import pyarrow as pa

    from mlops_local import synthetic
    from mlops_framework.features import FeatureContract

    weeks = max(1, rows // 100_000)
    table = pa.concat_tables(synthetic.generate(weeks=weeks, rows_per_week=rows // weeks, seed=seed))
    frame = table.to_pandas()
    contract = FeatureContract.fit(
        frame, numeric=["APPLICANT_INCOME_000S", "LOAN_AMOUNT_000S"],
        categorical=["LOAN_TYPE_NAME", "LOAN_PURPOSE_NAME", "COUNTY_NAME"], target="MORTGAGERESPONSE")
    return contract.encode_batch(table), contract.encode_target(frame["MORTGAGERESPONSE"])


def compare(rows: int = 2_000_000, score_rows: int = 10_000_000, repeats: int = 3) -> dict:
    import numpy as np
    import xgboost
    from sklearn.metrics import roc_auc_score

    reason = cuda_available()
    if reason:
        return {"skipped": reason}
    X, y = encoded(rows, seed=0)
    X_score, y_score = encoded(score_rows, seed=1)
    times = {"fit_cpu": [], "fit_cuda": [], "predict_cpu": [], "predict_cuda": []}
    auc = {}
    for i in range(repeats):
        for device in (("cpu", "cuda") if i % 2 == 0 else ("cuda", "cpu")):
            model = xgboost.XGBClassifier(**PARAMS, device=device)
            started = time.perf_counter()
            model.fit(X, y)
            times[f"fit_{device}"].append(time.perf_counter() - started)
            booster = model.get_booster()
            predict = functools.partial(_predict_on_device, booster) if device == "cuda" else booster.inplace_predict
            predict(X_score[:1000])  # warm-up: the device's first call
            started = time.perf_counter()
            scores = predict(X_score)
            times[f"predict_{device}"].append(time.perf_counter() - started)
            auc[device] = float(roc_auc_score(y_score, np.asarray(scores)))
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {
        "rows": rows, "score_rows": score_rows, "features": int(X.shape[1]), "repeats": repeats,
        "params": PARAMS, "seconds": medians, "times": times,
        "fit_speedup": medians["fit_cpu"] / medians["fit_cuda"],
        "predict_speedup": medians["predict_cpu"] / medians["predict_cuda"],
        "roc_auc": auc, "xgboost": xgboost.__version__,
    }


def _predict_on_device(booster, X):
    """Score host rows on the GPU as a scorer must: copy to the device, predict there, copy back."""
    import cupy

    return cupy.asnumpy(booster.inplace_predict(cupy.asarray(X)))


def run(ctx) -> list:
    from benchmarks.common import Row, child

    rows = 200_000 if ctx.sizes.repeats == 1 else 2_000_000
    result = child("benchmarks.gpu:compare", rows=rows, score_rows=rows * 5, repeats=ctx.sizes.repeats)
    if "skipped" in result:
        return [Row("gpu", "XGBoost device=cuda vs cpu", None, ">=", 1.0, status="N/A", detail=result["skipped"])]
    s = result["seconds"]
    detail = (f"{result['rows']:,} training rows x {result['features']} features, {result['score_rows']:,} scored; "
              f"fit {s['fit_cpu']:.2f} s cpu / {s['fit_cuda']:.2f} s cuda; predict {s['predict_cpu']:.2f} s / "
              f"{s['predict_cuda']:.2f} s (host to device copies included); holdout ROC AUC "
              f"{result['roc_auc']['cpu']:.4f} cpu, {result['roc_auc']['cuda']:.4f} cuda")
    return [
        Row("gpu", "training, cpu time / cuda time", result["fit_speedup"], ">=", 1.0, detail=detail),
        Row("gpu", "scoring, cpu time / cuda time", result["predict_speedup"], ">=", 1.0),
    ]


if __name__ == "__main__":
    arguments = dict(arg.split("=", 1) for arg in sys.argv[1:])
    print(json.dumps(compare(**{key: int(value) for key, value in arguments.items()}), indent=2))
