"""snowflake-ml's real client classes (Registry, Model, ModelVersion, the model monitor manager) driven over
a recording session that answers SHOW queries as Snowflake does: the assertions are on the SQL
snowflake-ml itself sends, and ``plan`` is compared with it."""

import importlib.util
from pathlib import Path

import pytest

from mlops_snowflake.registry import SnowflakeRegistry


def _load(name):
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


recording = _load("recording_session")


@pytest.fixture(scope="module")
def model_spec(tmp_path_factory):
    return recording.packaged_spec(tmp_path_factory.mktemp("packaged"))


@pytest.fixture
def session(model_spec):
    from snowflake.ml._internal.platform_capabilities import PlatformCapabilities

    with PlatformCapabilities.mock_features({}), recording.uploads_recorded():  # no account to ask
        yield recording.RecordingSession(model_spec, tables={"PREDICTIONS": [
            ("TS", "TIMESTAMP_NTZ(9)"), ("LOAN_ID", "NUMBER(38,0)"), ("PREDICTED_SCORE", "FLOAT"),
            ("PREDICTED_RESPONSE", "NUMBER(38,0)"), ("MORTGAGERESPONSE", "NUMBER(38,0)"),
            ("MODEL_VERSION", "VARCHAR")]})


def _alters(statements):
    return [" ".join(s.split()) for s in statements if s.startswith("ALTER MODEL ")]


def test_an_alias_move_sends_exactly_what_the_plan_prints(session, kit):
    session.models["MORTGAGE_XGB"] = {"V1": {"PRODUCTION"}, "V2": set()}
    registry = SnowflakeRegistry(kit.FakeConnection(session), database="DB", schema="S")
    planned = [line.split(" -- ")[0] for line in registry.plan_alias("MORTGAGE_XGB", "V2", "production")
               if line.startswith("ALTER MODEL ")]
    record = registry.set_alias("MORTGAGE_XGB", "V2", "production")
    sent = _alters(session.statements)
    assert sent == planned == ["ALTER MODEL DB.S.MORTGAGE_XGB VERSION PRODUCTION UNSET ALIAS",
                               "ALTER MODEL DB.S.MORTGAGE_XGB VERSION V2 SET ALIAS = PRODUCTION"]
    assert session.models["MORTGAGE_XGB"] == {"V1": set(), "V2": {"PRODUCTION"}}
    assert record["old_version"] == "V1" and registry.aliases("MORTGAGE_XGB") == {"PRODUCTION": "V2"}


def test_unset_and_rollback_through_the_real_classes(session, kit):
    session.models["MORTGAGE_XGB"] = {"V1": set(), "V2": set()}
    registry = SnowflakeRegistry(kit.FakeConnection(session), database="DB", schema="S")
    registry.set_alias("MORTGAGE_XGB", "V1", "PRODUCTION")
    registry.unset_alias("MORTGAGE_XGB", "PRODUCTION")
    assert _alters(session.statements) == ["ALTER MODEL DB.S.MORTGAGE_XGB VERSION V1 SET ALIAS = PRODUCTION",
                                           "ALTER MODEL DB.S.MORTGAGE_XGB VERSION PRODUCTION UNSET ALIAS"]
    assert session.models["MORTGAGE_XGB"] == {"V1": set(), "V2": set()}


def test_the_monitor_and_alerts_sent_on_promotion_are_what_the_plan_prints(session, kit):
    """registry.add_monitor through snowflake-ml's real monitor manager (which validates the source's
    columns and types), the view and the alerts through the session: compared statement by statement."""
    session.models["MORTGAGE_XGB"] = {"V1": set(), "V2": set()}
    session.tables["MORTGAGE_XGB_V2_MONITOR_SOURCE"] = session.tables["PREDICTIONS"]
    registry = SnowflakeRegistry(
        kit.FakeConnection(session), database="DB", schema="S",
        monitor={"alias": "PRODUCTION", "source": "DB.S.PREDICTIONS", "warehouse": "WH",
                 "feature_columns": ["LOAN_ID"]},
        alert_rules={"f1_low": {"metric": "f1", "op": "<", "threshold": 0.7},
                     "psi": {"metric": "psi", "op": ">", "threshold": 0.2}})
    planned = [" ".join(line.split(" -- ")[0].split()) for line in registry.plan_alias("MORTGAGE_XGB", "V2", "PRODUCTION")
               if line.startswith(("CREATE ", "ALTER ALERT", "ALTER MODEL DB"))]
    registry.set_alias("MORTGAGE_XGB", "V2", "PRODUCTION")
    sent = [s for s in (" ".join(s.split()) for s in session.statements)
            if s.startswith(("CREATE ", "ALTER ALERT", "ALTER MODEL DB")) and "MLOPS_PROMOTION_HISTORY" not in s]
    assert any(s.startswith("CREATE MODEL MONITOR DB.S.MORTGAGE_XGB_V2_MONITOR WITH MODEL=DB.S.MORTGAGE_XGB "
                            "VERSION='V2' FUNCTION='predict' WAREHOUSE='WH' SOURCE=DB.S.MORTGAGE_XGB_V2_MONITOR_SOURCE")
               for s in sent)
    # the plan says UNSET only "if a version holds it": nothing held PRODUCTION here
    assert sent == [p for p in planned if "UNSET ALIAS" not in p]


def test_monitoring_in_snowflake_reads_metrics_not_rows(session, kit):
    """pipeline=monitor with registry=snowflake: the version's native monitor is ensured through the real
    monitor manager and its metrics are SELECTed in the warehouse; the scored table is never read here."""
    session.models["MORTGAGE_XGB"] = {"V1": set(), "V2": {"PRODUCTION"}}
    session.tables["MORTGAGE_XGB_V2_MONITOR_SOURCE"] = session.tables["PREDICTIONS"]
    registry = SnowflakeRegistry(kit.FakeConnection(session), database="DB", schema="S",
                                 monitor={"source": "DB.S.PREDICTIONS", "warehouse": "WH", "baseline": "DB.S.BASELINE",
                                          "feature_columns": ["LOAN_ID"]})
    result = registry.monitor_in_warehouse("MORTGAGE_XGB", "PRODUCTION")
    assert result["model_version"] == "V2" and result["created"] and result["where"] == "warehouse"
    sent = [" ".join(s.split()) for s in session.statements]
    assert any(s.startswith("CREATE MODEL MONITOR DB.S.MORTGAGE_XGB_V2_MONITOR WITH") for s in sent)
    selects = [s for s in sent if s.startswith("SELECT ")]
    assert len(selects) == 6 and all("FROM TABLE(MODEL_MONITOR_" in s for s in selects)
    assert not any("FROM DB.S.PREDICTIONS" in s for s in sent if not s.startswith("CREATE OR REPLACE VIEW"))


def _writes(statements):
    """What was sent that changes something, one line each (reads: SHOW, SELECT, DESCRIBE left out)."""
    return [" ".join(s.split()) for s in statements if s.lstrip().startswith(("CREATE", "ALTER", "COMMENT", "PUT", "DROP"))]


def _normalised(line):
    """The values the plan cannot know: the temporary stage's random suffix, the next version's number, the
    metadata JSON (its content is checked separately), the packaged files' names."""
    import re

    line = re.sub(r"SNOWPARK_TEMP_STAGE_[A-Z0-9]+", "SNOWPARK_TEMP_STAGE_<random>", line)
    line = re.sub(r"SET METADATA=\$\$.*\$\$", "SET METADATA=$$<json>$$", line)
    line = re.sub(r"^PUT file://\S+ (@\S+?/model)\S*", r"PUT file://<each file of the packaged model> \1/...", line)
    return line


@pytest.mark.parametrize("exists", [False, True], ids=["new model", "next version"])
def test_registration_sends_exactly_what_the_plan_prints(session, kit, trained_model, frame, monkeypatch, exists):
    """snowflake-ml's real Registry.log_model (packaging, parameter reconciliation, upload, CREATE MODEL or
    ADD VERSION, comment and metadata), then our model comment and tags. mv.run (the parity check) needs a
    warehouse that scores: it is tested with the autospec layer (test_snowflake_registry.py), skipped here."""
    import json

    monkeypatch.setattr(SnowflakeRegistry, "_verify", lambda self, mv, model, sample: None)
    if exists:
        session.models["MORTGAGE_XGB"] = {"V1": set()}
    registry = SnowflakeRegistry(kit.FakeConnection(session), database="DB", schema="S")
    tags = {"DOMAIN": "LENDING", "PROJECT": "MORTGAGE"}
    record = registry.log_model(trained_model, model_name="MORTGAGE_XGB", comment="it's a model", metrics={"f1": 0.5},
                                metadata={"task": "binary"}, tags=tags, sample_input=frame.head(10)[kit.INPUTS])
    version = "V2" if exists else "V1"
    assert record["version_name"] == version and version in session.models["MORTGAGE_XGB"]

    condition = "if it exists" if exists else "does not exist yet"
    planned = [_normalised(line.split(" -- ")[0].replace("V<n>", version)) for line in registry.plan_log_model(
        model_name="MORTGAGE_XGB", version_name=None, comment="it's a model", tags=tags, task="binary")
        if line.startswith(("CREATE", "ALTER", "COMMENT", "PUT")) and (" -- " not in line or condition in line)]
    sent = _writes(session.statements)
    assert [_normalised(s) for s in sent if not s.startswith("PUT ")] == [p for p in planned if not p.startswith("PUT ")]
    puts = {_normalised(s) for s in sent if s.startswith("PUT ")}
    assert puts == {p for p in planned if p.startswith("PUT ")}
    metadata = json.loads(next(s for s in sent if "SET METADATA=" in s).split("SET METADATA=$$", 1)[1][:-2])
    assert metadata["metrics"]["f1"] == 0.5 and json.loads(metadata["metrics"]["mlops"])["metadata"] == {"task": "binary"}


def test_every_backend_plans_the_registration_sql(tmp_path, monkeypatch):
    """`mlops plan registry=snowflake` with the local backend prints the statements too (one helper,
    stages.planned_registration, serves the local, Snowpark and ML Job plans)."""
    from mlops_framework import config
    from mlops_framework.pipeline import build_run
    from mlops_framework.plugins import Components, get_plugin_manager

    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SNOWFLAKE_HOME", str(tmp_path / "snowflake"))
    components = Components(get_plugin_manager())
    cfg = config.compose(["registry=snowflake", "registry.database=DB", "registry.schema=S"], components)
    run = build_run(config.resolved(cfg), components)
    (register,) = [line for line in run.backend.plan(run) if line.startswith("register: ")]
    assert "\n       CREATE MODEL DB.S.MORTGAGE_XGB WITH VERSION V<n> FROM @DB.S.SNOWPARK_TEMP_STAGE_<random>/model" in register
    assert "\n       COMMENT ON MODEL DB.S.MORTGAGE_XGB IS $$" in register
