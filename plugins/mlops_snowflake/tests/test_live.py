"""The live round trip against a real Snowflake account: ``pytest -m snowflake``.

Runs only when ``MLOPS_SNOWFLAKE_CONNECTION`` names a section of Snowflake's ``connections.toml``
(``$SNOWFLAKE_HOME/connections.toml``, else ``~/.snowflake/connections.toml``); otherwise every test here is
reported as SKIPPED with the reason, never as passed. The role needs CREATE MODEL, CREATE TABLE and
CREATE TAG in the connection's database and schema; everything created is named ``MLOPS_LIVE_<random>``
and dropped at the end (the promotion history table is kept, its test rows deleted).
"""

import os
import tomllib
import uuid

import numpy as np
import pytest

from mlops_snowflake.connection import connections_file

ENV = "MLOPS_SNOWFLAKE_CONNECTION"


def _configured():
    name = os.environ.get(ENV)
    path = connections_file()
    if not name:
        return None, f"no live Snowflake connection configured: {ENV} is not set (it names a section of {path})"
    try:
        sections = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return None, f"no live Snowflake connection configured: {ENV}={name} but {path} does not exist"
    except (OSError, tomllib.TOMLDecodeError) as error:
        return None, f"no live Snowflake connection configured: {path} cannot be read ({type(error).__name__})"
    if name not in sections:
        return None, f"no live Snowflake connection configured: {path} has no [{name}] section ({ENV}={name})"
    return name, None


NAME, REASON = _configured()
pytestmark = [pytest.mark.snowflake, pytest.mark.skipif(NAME is None, reason=REASON or "")]


@pytest.fixture(scope="module")
def live():
    from mlops_snowflake.connection import SnowflakeConnection

    connection = SnowflakeConnection(NAME)
    suffix = uuid.uuid4().hex[:8].upper()
    names = {"model": f"MLOPS_LIVE_{suffix}", "loans": f"MLOPS_LIVE_LOANS_{suffix}",
             "week2": f"MLOPS_LIVE_WEEK2_{suffix}", "preds": f"MLOPS_LIVE_PREDS_{suffix}",
             "tag": f"MLOPS_LIVE_TAG_{suffix}", "owner": f"MLOPS_LIVE_OWNER_{suffix}"}
    session = connection.session()
    yield connection, session, names
    from snowflake.ml.registry import Registry

    for cleanup in (
        lambda: Registry(session).delete_model(names["model"]),
        lambda: session.sql("DELETE FROM MLOPS_PROMOTION_HISTORY WHERE MODEL_NAME = ?", params=[names["model"]]).collect(),
        *(lambda t=t: session.sql(f"DROP TABLE IF EXISTS {names[t]}").collect() for t in ("loans", "week2", "preds")),
        *(lambda t=t: session.sql(f"DROP TAG IF EXISTS {names[t]}").collect() for t in ("tag", "owner")),
    ):
        try:
            cleanup()
        except Exception as error:  # report, keep cleaning
            print(f"live cleanup step failed: {type(error).__name__}: {error}")
    connection.close()


def _build(overrides):
    from mlops_framework import config
    from mlops_framework.pipeline import build_run
    from mlops_framework.plugins import Components, get_plugin_manager

    components = Components(get_plugin_manager())
    cfg = config.compose(overrides, components)
    config.check(cfg, components)
    return build_run(config.resolved(cfg), components)


def test_round_trip(live, trained_model, frame, kit):
    from mlops_snowflake.registry import SnowflakeRegistry

    connection, session, names = live
    model_name = names["model"]
    registry = SnowflakeRegistry({"connection_name": NAME})

    # log_model: CustomModel with the contract, pins, sample input, verified through mv.run
    record = registry.log_model(
        trained_model, model_name=model_name, version_name=None, comment="mlops-framework live test",
        metrics={"holdout_roc_auc": 0.5}, metadata={"live": True}, tags={names["tag"]: "yes"},
        sample_input=frame[kit.INPUTS].head(10), signature=None, lineage={"test": "live"})
    assert record["version_name"] == "V1"
    assert registry.get_version(model_name, "V1")["metrics"] == {"holdout_roc_auc": 0.5}

    # aliases, our promotion record
    registry.set_alias(model_name, "V1", "PRODUCTION", actor="live-test", reason="round trip")
    assert registry.aliases(model_name) == {"PRODUCTION": "V1"}
    assert [h["new_version"] for h in registry.history(model_name)] == ["V1"]

    # score in the warehouse through the alias, with the Snowpark backend, into a partitioned table
    session.create_dataframe(frame).write.save_as_table(names["loans"], mode="overwrite")
    session.create_dataframe(frame[frame.WEEK == 2]).write.save_as_table(names["week2"], mode="overwrite")
    for table in (names["loans"], names["week2"]):
        run = _build([
            "backend=snowpark", "registry=snowflake", "pipeline=score", "data=snowflake", f"data.table={table}",
            f"connection.connection_name={NAME}", f"registry.model_name={model_name}", "scoring.version=PRODUCTION",
            "~scoring.sink",
            f"+scoring.sink={{kind:snowflake,connection:${{connection}},table:{names['preds']},partition_by:[WEEK]}}"])
        run.backend.execute(run)
        assert run.results["scored"]["version"] == "V1"
    out = session.table(names["preds"]).sort("LOAN_ID").to_pandas()
    assert out.groupby("WEEK").size().to_dict() == {1: 60, 2: 60, 3: 60}  # week 2 replaced, not doubled
    expected = frame.sort_values("LOAN_ID")
    scores, classes = kit.local_predictions(trained_model, expected)
    np.testing.assert_allclose(out["PREDICTED_SCORE"].to_numpy(dtype=float), scores, atol=1e-6, rtol=0)
    assert out["PREDICTED_RESPONSE"].tolist() == list(classes)
    assert out[kit.TARGET].tolist() == expected[kit.TARGET].tolist()

    # tags, models, and the model back from the registry
    registry.set_tag(model_name, names["owner"], "tests")
    listed = {m["name"]: m for m in registry.models()}[model_name]
    assert set(listed["tags"].values()) >= {"yes", "tests"}
    loaded = registry.load_model(model_name, "PRODUCTION")
    np.testing.assert_array_equal(kit.local_predictions(loaded, frame)[0], kit.local_predictions(trained_model, frame)[0])
