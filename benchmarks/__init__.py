"""Benchmarks for issue 6: the scorer, trainer, start-up, warehouse sink and sweeps, each measured as a
ratio against its reference in the same run (absolute times drift on shared machines).

Run from the repository root::

    python -m benchmarks                    # the full suite (~10 minutes on 2 cores)
    python -m benchmarks --quick            # a small smoke version (~30 s): numbers mean little
    python -m benchmarks --only scoring     # one target (scoring, training, startup, warehouse, sweeps)

It prints a table of ratios and targets with PASS/FAIL and writes JSON (``--out``, default
``benchmarks/results.json``). Data is generated once and cached under ``$MLOPS_BENCH_DIR``
(default ``/tmp/mlops-bench``); memory-heavy measurements each run in their own subprocess, which
reports its own peak RSS.
"""
