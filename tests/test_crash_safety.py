"""SIGKILL at randomized points during registration, scoring writes and alias moves: afterwards the
registry and the warehouse are consistent and the next operation succeeds. Children are forked from
this process (modules already imported), so each of the 20 kills per operation costs milliseconds."""

import multiprocessing
import os
import random
import signal
import time

import duckdb
import pytest

from mlops_framework.features import FeatureContract
from mlops_framework.model import TrainedModel
from mlops_local.registry import LocalRegistry
from mlops_framework.scoring import score_to_sink
from mlops_local.sinks import DuckDBSink
from mlops_local.synthetic import generate_table

KILLS = 20
FORK = multiprocessing.get_context("fork")
MODEL = "CRASHY"


@pytest.fixture(scope="module")
def model():
    import xgboost

    frame = generate_table(weeks=2, rows_per_week=500, seed=11).to_pandas()
    contract = FeatureContract.fit(
        frame, numeric=["APPLICANT_INCOME_000S", "LOAN_AMOUNT_000S"],
        categorical=["LOAN_TYPE_NAME", "LOAN_PURPOSE_NAME", "COUNTY_NAME"], target="MORTGAGERESPONSE",
    )
    estimator = xgboost.XGBClassifier(n_estimators=30, max_depth=4, n_jobs=1)
    estimator.fit(contract.encode_frame(frame), contract.encode_target(frame["MORTGAGERESPONSE"]))
    return TrainedModel(estimator, contract)


def kill_at_random(target, rng, *, max_delay):
    """Start `target` in a forked child, SIGKILL it after a random delay; True if it was still running."""
    child = FORK.Process(target=target, daemon=True)
    child.start()
    time.sleep(rng.uniform(0, max_delay))
    alive = child.is_alive()
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    return alive


def assert_registry_consistent(registry):
    versions = registry.versions(MODEL)
    names = [v["version_name"] for v in versions]
    assert len(names) == len(set(names))
    for version in versions:
        registry.artifact_path(MODEL, version["version_name"])  # every file present and its checksum right
    for alias, version in registry.aliases(MODEL).items():
        assert version in names, f"alias {alias} points at missing {version}"
    return names


def test_registration_killed_at_random_points(tmp_path, model):
    registry = LocalRegistry(tmp_path / "registry")
    registry.log_model(model, model_name=MODEL)
    rng = random.Random(20261122)

    def register_forever():
        while True:
            registry.log_model(model, model_name=MODEL, metrics={"f1": 0.8}, sample_input=None)

    killed_while_running = sum(kill_at_random(register_forever, rng, max_delay=0.25) for _ in range(KILLS))
    assert killed_while_running == KILLS
    before = assert_registry_consistent(registry)
    after = registry.log_model(model, model_name=MODEL)
    assert after["version_name"] == f"v{len(before) + 1}"
    assert registry.load_model(MODEL, after["version_name"]).contract == model.contract


def test_alias_moves_killed_at_random_points(tmp_path, model):
    registry = LocalRegistry(tmp_path / "registry")
    for _ in range(3):
        registry.log_model(model, model_name=MODEL)
    registry.set_alias(MODEL, "v1", "PRODUCTION")
    rng = random.Random(7)

    def move_forever():
        for step in range(10**9):
            registry.set_alias(MODEL, f"v{step % 3 + 1}", "PRODUCTION")
            registry.set_alias(MODEL, f"v{(step + 1) % 3 + 1}", "CHALLENGER")

    assert sum(kill_at_random(move_forever, rng, max_delay=0.2) for _ in range(KILLS)) == KILLS
    assert_registry_consistent(registry)
    history = registry.history(MODEL)
    assert history and all(entry["alias"] in ("PRODUCTION", "CHALLENGER") for entry in history)
    registry.set_alias(MODEL, "v2", "PRODUCTION")
    assert registry.get_version(MODEL, "production")["version_name"] == "v2"


def test_scoring_writes_killed_at_random_points(tmp_path, model):
    path = tmp_path / "warehouse.duckdb"
    sink = DuckDBSink(path, partition_by=["WEEK"])
    data = generate_table(weeks=8, rows_per_week=40_000, seed=3)
    score_to_sink(model, data.to_batches(max_chunksize=20_000), sink, progress=False)

    def table_state():
        with duckdb.connect(str(path), read_only=True) as con:
            return con.sql("SELECT count(*), count(DISTINCT LOAN_ID), sum(PREDICTED_SCORE) FROM "
                           "PREDICTIONS_WITH_GROUND_TRUTH").fetchall()[0]

    committed = table_state()
    assert committed[0] == committed[1] == data.num_rows
    rng = random.Random(3)

    def rescore_forever():
        while True:
            score_to_sink(model, data.to_batches(max_chunksize=20_000), sink, progress=False)

    alive = sum(kill_at_random(rescore_forever, rng, max_delay=0.6) for _ in range(KILLS))
    assert alive == KILLS
    state = table_state()
    assert state[:2] == committed[:2] and state[2] == pytest.approx(committed[2])
    result = score_to_sink(model, data.slice(0, 40_000).to_batches(), sink, progress=False)
    assert result.rows == 40_000 and table_state()[0] == data.num_rows
