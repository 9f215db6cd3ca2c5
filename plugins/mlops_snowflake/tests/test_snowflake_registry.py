"""registry=snowflake: contract tests against create_autospec'd snowflake-ml classes, the registry's own SQL
on fakesnow, and the registered CustomModel built for real with snowflake-ml's ModelPackager."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops_framework.errors import MlopsError
from mlops_snowflake.registry import SnowflakeRegistry

METRICS = {"holdout_roc_auc": 0.81, "holdout_f1": 0.7}


@pytest.fixture
def registry(snowml, fakesnow_session, kit):
    return SnowflakeRegistry(kit.FakeConnection(fakesnow_session), database="DB", schema="S")


@pytest.fixture
def log(kit):
    """registry.log_model(model, ...) with the arguments the core's register stage passes."""
    def log_model(registry, model, frame, **kwargs):
        arguments = dict(model_name="MORTGAGE_XGB", version_name=None, comment="first", metrics=METRICS,
                         metadata={"estimator": "xgboost.XGBClassifier"}, tags={"PROJECT": "MORTGAGE"},
                         sample_input=frame[kit.INPUTS].head(10), signature={"inputs": []},
                         lineage={"config": {"seed": 1}, "data_fingerprint": "sha256:x"})
        return registry.log_model(model, **{**arguments, **kwargs})
    return log_model


def test_init_and_describe_touch_nothing(snowml, tmp_path, monkeypatch):
    monkeypatch.setenv("SNOWFLAKE_HOME", str(tmp_path))
    registry = SnowflakeRegistry({"connection_name": "nowhere"}, database="ML", schema="REG")
    line = registry.describe()
    assert "Snowflake Model Registry in ML.REG" in line and "monitoring on" in line and "not usable yet" in line
    snowml.Registry.assert_not_called()
    assert registry.qualified("T") == "ML.REG.T"
    with pytest.raises(MlopsError, match="not a Snowflake identifier"):
        SnowflakeRegistry(database="ML; DROP TABLE X").location()


def test_log_model_calls_snowflake_ml_as_documented(registry, snowml, fakesnow_session, trained_model, frame, kit, log):
    from snowflake.ml.model.target_platform import TargetPlatform
    from snowflake.ml.model.task import Task

    from mlops_snowflake.custom_model import ContractModel

    record = log(registry, trained_model, frame)
    assert record["version_name"] == "V1" and record["metrics"] == METRICS
    snowml.Registry.assert_called_once()
    args, kwargs = snowml.Registry.call_args
    assert args == (fakesnow_session,)
    assert kwargs == {"database_name": "DB", "schema_name": "S", "options": {"enable_monitoring": True}}
    (model,), call = snowml.registry.log_model.call_args
    assert isinstance(model, ContractModel)
    assert call["model_name"] == "MORTGAGE_XGB" and call["version_name"] == "V1" and call["comment"] == "first"
    assert call["target_platforms"] == [TargetPlatform.WAREHOUSE]
    assert call["task"] == Task.TABULAR_BINARY_CLASSIFICATION
    assert call["options"] == {"enable_explainability": False, "relax_version": False}
    import xgboost
    assert f"xgboost=={xgboost.__version__}" in call["conda_dependencies"]
    assert {pin.split("==")[0] for pin in call["conda_dependencies"]} == {"pandas", "numpy", "pyarrow", "xgboost"}
    assert call["code_paths"] == [str(Path(__import__("mlops_framework").__file__).resolve().parent)]
    assert call["metrics"]["holdout_roc_auc"] == 0.81
    assert json.loads(call["metrics"]["mlops"])["lineage"]["data_fingerprint"] == "sha256:x"
    pd.testing.assert_frame_equal(call["sample_input_data"], frame[kit.INPUTS].head(10))
    mv = snowml.models["MORTGAGE_XGB"]["versions"]["V1"]["mv"]
    mv.run.assert_called_once()
    assert mv.run.call_args.kwargs == {"function_name": "predict"}
    assert snowml.models["MORTGAGE_XGB"]["mock"].comment == "first"
    from snowflake.ml.model import Model
    assert Model.comment.fset is not None  # autospec cannot check a property assignment: the setter must exist
    assert snowml.models["MORTGAGE_XGB"]["tags"] == {"DB.S.PROJECT": "MORTGAGE"}
    assert "CREATE TAG IF NOT EXISTS DB.S.PROJECT" in fakesnow_session.statements


def test_versions_are_numbered_and_records_round_trip(registry, snowml, trained_model, frame, log):
    log(registry, trained_model, frame)
    log(registry, trained_model, frame, version_name="candidate")
    third = log(registry, trained_model, frame, comment="third")
    assert third["version_name"] == "V2"
    versions = registry.versions("MORTGAGE_XGB")
    assert [v["version_name"] for v in versions] == ["V1", "CANDIDATE", "V2"]
    assert versions[0]["metrics"] == METRICS and "mlops" not in versions[0]["metrics"]
    assert versions[0]["metadata"] == {"estimator": "xgboost.XGBClassifier"}
    assert versions[0]["lineage"]["config"] == {"seed": 1} and versions[2]["comment"] == "third"
    assert registry.get_version("mortgage_xgb".upper(), "candidate")["version_name"] == "CANDIDATE"
    assert snowml.Registry.call_count == 1


def test_existing_version_is_refused_before_logging(registry, snowml, trained_model, frame, log):
    log(registry, trained_model, frame)
    with pytest.raises(MlopsError, match="already has a version 'V1'"):
        log(registry, trained_model, frame, version_name="v1")
    assert snowml.registry.log_model.call_count == 1


def test_log_model_failure_is_reported_and_leaves_nothing(registry, snowml, trained_model, frame, log):
    log(registry, trained_model, frame)
    snowml.fail_log, snowml.fail_after_create = RuntimeError("upload to stage failed"), True
    with pytest.raises(MlopsError, match="log_model of MORTGAGE_XGB V2 failed: RuntimeError: upload to stage failed"):
        log(registry, trained_model, frame)
    assert list(snowml.models["MORTGAGE_XGB"]["versions"]) == ["V1"]
    snowml.fail_after_create = False
    with pytest.raises(MlopsError, match="upload to stage failed"):
        log(registry, trained_model, frame)
    assert list(snowml.models["MORTGAGE_XGB"]["versions"]) == ["V1"]


def test_a_version_logged_meanwhile_by_another_run_is_left_alone(registry, snowml, trained_model, frame, log):
    log(registry, trained_model, frame)

    def another_run_wins(model, *, model_name, version_name=None, metrics=None, **kwargs):
        snowml._log_model(model, model_name=model_name, version_name=version_name, metrics={"other": 1}, **kwargs)
        raise RuntimeError(f"Version {version_name} already exists")

    snowml.registry.log_model.side_effect = another_run_wins
    with pytest.raises(MlopsError, match="V2 already exists; a version V2 exists but was not provably logged by this run"):
        log(registry, trained_model, frame, version_name="V2")  # a name asked for is never swapped for another
    assert list(snowml.models["MORTGAGE_XGB"]["versions"]) == ["V1", "V2"]


def test_parallel_registrations_over_one_registry_each_get_a_version(snowml, fakesnow_session, trained_model, frame,
                                                                      kit, log):
    """Defect 6: two trials (two registries, one account) read SHOW VERSIONS before either logs; the
    loser's log_model fails as snowflake-ml fails it, and it takes the next name instead of losing the trial."""
    first = SnowflakeRegistry(kit.FakeConnection(fakesnow_session), database="DB", schema="S")
    second = SnowflakeRegistry(kit.FakeConnection(fakesnow_session), database="DB", schema="S")
    log(first, trained_model, frame)
    real_log_model = snowml.registry.log_model.side_effect
    interleaved = []

    def second_trial_logs_in_between(model, **kwargs):
        if not interleaved:  # the first trial has read SHOW VERSIONS (V1) and chosen V2: the second logs V2 now
            interleaved.append(kwargs["version_name"])
            log(second, trained_model, frame)
        return real_log_model(model, **kwargs)

    snowml.registry.log_model.side_effect = second_trial_logs_in_between
    record = log(first, trained_model, frame)
    assert interleaved == ["V2"] and record["version_name"] == "V3"
    assert list(snowml.models["MORTGAGE_XGB"]["versions"]) == ["V1", "V2", "V3"]
    assert [r["version_name"] for r in first.versions("MORTGAGE_XGB")] == ["V1", "V2", "V3"]


def test_dollar_quotes_in_the_config_survive_log_model(registry, snowml, trained_model, frame, log):
    """Defect 11: snowflake-ml sends metadata as SET METADATA=$$<json>$$; a '$$' in the config ended it."""
    metadata = {"config": {"data": {"where": "NOTE <> $$x$$"}}, "task": "binary"}
    log(registry, trained_model, frame, metadata=metadata)
    (_, call) = snowml.registry.log_model.call_args
    assert "$" not in json.dumps({"metrics": call["metrics"]})  # what snowflake-ml embeds between $$...$$
    assert registry.get_version("MORTGAGE_XGB", "V1")["metadata"] == metadata
    with pytest.raises(MlopsError, match=r"comment contains '\$\$'"):
        log(registry, trained_model, frame, comment="a $$ b")


def test_cuda_version_reaches_log_model_and_the_real_packager(snowml, fakesnow_session, trained_model, frame, kit, log):
    """Defect 7: the model gets a GPU runtime only when log_model's options carry cuda_version."""
    registry = SnowflakeRegistry(kit.FakeConnection(fakesnow_session), database="DB", schema="S", cuda_version="12.4")
    log(registry, trained_model, frame)  # the fake packages with snowflake-ml's real ModelPackager and these options
    assert snowml.registry.log_model.call_args.kwargs["options"] == {
        "enable_explainability": False, "relax_version": False, "cuda_version": "12.4"}
    import yaml
    manifest = yaml.safe_load((snowml.stage / "MORTGAGE_XGB" / "V1" / "model.yaml").read_text())
    assert manifest["env"]["cuda_version"] == "12.4"


@pytest.mark.parametrize("task, expected", [("binary", "TABULAR_BINARY_CLASSIFICATION"),
                                            ("multiclass", "TABULAR_MULTI_CLASSIFICATION"),
                                            ("regression", "TABULAR_REGRESSION"), (None, "TABULAR_BINARY_CLASSIFICATION")])
def test_log_model_passes_the_snowflake_task_of_the_metadata(registry, snowml, trained_model, frame, log, task, expected):
    from snowflake.ml.model.type_hints import Task

    log(registry, trained_model, frame, metadata={"task": task} if task else {})
    assert snowml.registry.log_model.call_args.kwargs["task"] == Task[expected]


def test_promotion_refusals_and_config_hashes_are_recorded_as_locally(registry, snowml, trained_model, frame, log,
                                                                     tmp_path):
    """The lifecycle calls record_refusal and passes config_hash; history and rollback read like the local one."""
    import inspect

    from mlops_local.registry import LocalRegistry

    for method in ("set_alias", "record_refusal", "rollback", "unset_alias"):
        ours = inspect.signature(getattr(SnowflakeRegistry, method)).parameters
        local = inspect.signature(getattr(LocalRegistry, method)).parameters
        assert set(local) <= set(ours), method
    log(registry, trained_model, frame)
    log(registry, trained_model, frame)
    registry.set_alias("MORTGAGE_XGB", "V1", "PRODUCTION", config_hash="abc", actor="ci")
    refused = registry.record_refusal("MORTGAGE_XGB", "V2", "production", reason="f1 worse", metrics={"f1": 0.5},
                                      config_hash="def", actor="ci")
    assert refused["event"] == "refused" and refused["old_version"] == "V1" and refused["new_version"] == "V2"
    assert registry.aliases("MORTGAGE_XGB") == {"PRODUCTION": "V1"}  # a refusal moves nothing
    registry.set_alias("MORTGAGE_XGB", "V2", "PRODUCTION", config_hash="ghi", actor="ci")
    back = registry.rollback("MORTGAGE_XGB", "PRODUCTION", actor="ci")
    assert back["event"] == "rollback" and back["new_version"] == "V1" and registry.aliases("MORTGAGE_XGB") == {"PRODUCTION": "V1"}
    history = registry.history("MORTGAGE_XGB")
    assert [(h["event"], h["new_version"], h["config_hash"]) for h in history] == [
        ("set", "V1", "abc"), ("refused", "V2", "def"), ("set", "V2", "ghi"), ("rollback", "V1", None)]
    assert history[1]["metrics"] == {"f1": 0.5} and history[1]["reason"] == "f1 worse"
    with pytest.raises(MlopsError, match="no earlier version to roll back to"):
        registry.rollback("MORTGAGE_XGB", "PRODUCTION")


def test_sklearn_models_are_pinned_for_their_flavor(registry, snowml, frame, kit, log):
    from sklearn.linear_model import LogisticRegression

    from mlops_framework.features import FeatureContract
    from mlops_framework.model import TrainedModel

    complete = frame.dropna()  # logistic regression takes no missing values
    contract = FeatureContract.fit(complete, numeric=kit.NUMERIC, categorical=kit.CATEGORICAL, target=kit.TARGET)
    estimator = LogisticRegression(max_iter=200).fit(contract.encode_frame(complete),
                                                     contract.encode_target(complete[kit.TARGET]))
    assert log(registry, TrainedModel(estimator, contract), complete)["version_name"] == "V1"  # verified by mv.run
    pins = snowml.registry.log_model.call_args.kwargs["conda_dependencies"]
    assert {pin.split("==")[0] for pin in pins} == {"pandas", "numpy", "pyarrow", "scikit-learn", "skops"}


def test_prediction_mismatch_deletes_the_version_and_shows_rows(registry, snowml, trained_model, frame, log):
    log(registry, trained_model, frame)
    snowml.perturb = 1e-3
    with pytest.raises(MlopsError) as info:
        log(registry, trained_model, frame)
    message = str(info.value)
    assert "differ from the local ones on 10 of 10 sample rows" in message
    assert "row 0: {'APPLICANT_INCOME_000S'" in message and "local 0." in message and "registry 0." in message
    assert "\n  row 9: {" in message and "more" not in message, "every row of the sample shown, one a line"
    assert re.search(r"\n  row 9: \{[^\n]* registry 0\.\d{9}/\d; version V2 was deleted again$", message)
    assert "version V2 was deleted again" in message
    assert list(snowml.models["MORTGAGE_XGB"]["versions"]) == ["V1"]


def test_mismatch_on_a_new_model_deletes_the_model(registry, snowml, trained_model, frame, log):
    snowml.perturb = 1e-3
    with pytest.raises(MlopsError, match="deleted again"):
        log(registry, trained_model, frame)
    assert snowml.models == {}
    snowml.registry.delete_model.assert_called_once_with("MORTGAGE_XGB")


def test_a_version_the_registry_cannot_score_is_deleted_with_the_reason(registry, snowml, trained_model, frame, log):
    log(registry, trained_model, frame)
    snowml.fail_run = RuntimeError("warehouse WH is suspended\n  at line 2")
    with pytest.raises(MlopsError) as info:
        log(registry, trained_model, frame)
    assert str(info.value) == ("the registered model could not score its sample input: RuntimeError: warehouse WH is "
                               "suspended; version V2 was deleted again")
    assert list(snowml.models["MORTGAGE_XGB"]["versions"]) == ["V1"]


def test_the_registry_s_output_columns_are_found_quoted_or_in_any_case(registry, snowml, trained_model, frame, log):
    snowml.run_columns = {"PREDICTED_SCORE": '"predicted_score"', "PREDICTED_RESPONSE": "Predicted_Response"}
    assert log(registry, trained_model, frame)["version_name"] == "V1"
    snowml.run_columns = {"PREDICTED_SCORE": "SCORE"}
    with pytest.raises(MlopsError) as info:
        log(registry, trained_model, frame)
    assert str(info.value).startswith("the registered model's predict returned no PREDICTED_SCORE; it returned: ")
    assert "SCORE, PREDICTED_RESPONSE" in str(info.value) and str(info.value).endswith("version V2 was deleted again")


def test_every_output_column_missing_is_named(registry, snowml, trained_model, frame, log):
    snowml.run_columns = {"PREDICTED_SCORE": "S", "PREDICTED_RESPONSE": "R"}
    with pytest.raises(MlopsError, match="^the registered model's predict returned no PREDICTED_SCORE, PREDICTED_RESPONSE;"):
        log(registry, trained_model, frame)


def test_mismatches_beyond_the_rows_shown_are_counted(registry, snowml, trained_model, frame, kit, log):
    snowml.perturb = 1e-3
    with pytest.raises(MlopsError) as info:
        log(registry, trained_model, frame, sample_input=frame[kit.INPUTS].head(12))
    assert "differ from the local ones on 12 of 12 sample rows" in str(info.value)
    assert "\n  row 9: {" in str(info.value) and "row 10:" not in str(info.value)
    assert "\n  ... and 2 more; " in str(info.value)


def test_a_registry_answer_with_rows_missing_is_refused(registry, snowml, trained_model, frame, log):
    snowml.run_rows = 3
    with pytest.raises(MlopsError, match="^the registered model scored 3 rows of a 10-row sample; version V1"):
        log(registry, trained_model, frame)


def test_a_difference_equal_to_the_tolerance_passes(snowml, fakesnow_session, kit, trained_model, frame, log):
    exact = SnowflakeRegistry(kit.FakeConnection(fakesnow_session), database="DB", schema="S", tolerance=0.0)
    assert log(exact, trained_model, frame)["version_name"] == "V1"


def test_tiny_differences_within_tolerance_pass(registry, snowml, trained_model, frame, log):
    snowml.perturb = 1e-8
    assert log(registry, trained_model, frame)["version_name"] == "V1"


def test_failing_tag_rolls_the_version_back(registry, snowml, trained_model, frame, log):
    log(registry, trained_model, frame)
    snowml.models["MORTGAGE_XGB"]["mock"].set_tag.side_effect = RuntimeError("tag quota")
    with pytest.raises(MlopsError, match="tag quota.*V2 was deleted again"):
        log(registry, trained_model, frame)
    assert list(snowml.models["MORTGAGE_XGB"]["versions"]) == ["V1"]


def test_bad_input_is_refused_before_any_call(registry, snowml, trained_model, frame, log):
    with pytest.raises(MlopsError, match="sample_input"):
        log(registry, trained_model, frame, sample_input=None)
    with pytest.raises(MlopsError, match="at most 256"):
        log(registry, trained_model, frame, tags={"T": "x" * 257})
    with pytest.raises(MlopsError, match="invalid model name"):
        log(registry, trained_model, frame, model_name="bad name")
    with pytest.raises(MlopsError, match="explainer"):
        registry.enable_explainability = True
        log(registry, trained_model, frame)
    snowml.registry.log_model.assert_not_called()


def test_unknown_model_and_version(registry, snowml, trained_model, frame, log):
    log(registry, trained_model, frame)
    with pytest.raises(MlopsError, match="unknown model 'NOPE'; known models: MORTGAGE_XGB"):
        registry.versions("NOPE")
    with pytest.raises(MlopsError, match="no version or alias 'V9'; versions: V1; aliases: "):
        registry.get_version("MORTGAGE_XGB", "V9")
    with pytest.raises(MlopsError, match="no version or alias 'PRODUCTION'"):
        registry.model_version("MORTGAGE_XGB", "PRODUCTION")
    with pytest.raises(MlopsError, match="no version 'V7'"):
        registry.set_alias("MORTGAGE_XGB", "V7", "PRODUCTION")
    with pytest.raises(MlopsError, match="unknown model"):
        registry.history("NOPE")


def test_aliases_move_unset_then_set_with_history(registry, snowml, fakesnow_session, trained_model, frame, kit, log):
    log(registry, trained_model, frame)
    log(registry, trained_model, frame)
    first = registry.set_alias("MORTGAGE_XGB", "V1", "production", actor="ci", reason="first", metrics={"auc": 0.8})
    assert (first["alias"], first["old_version"], first["new_version"]) == ("PRODUCTION", None, "V1")
    versions = snowml.models["MORTGAGE_XGB"]["versions"]
    versions["V2"]["mv"].set_alias.reset_mock()
    registry.set_alias("MORTGAGE_XGB", "v2", "PRODUCTION", actor="ci", reason="better")
    versions["V1"]["mv"].unset_alias.assert_called_once_with("PRODUCTION")
    versions["V2"]["mv"].set_alias.assert_called_once_with("PRODUCTION")
    assert registry.aliases("MORTGAGE_XGB") == {"PRODUCTION": "V2"}  # FIRST/LAST/DEFAULT left out
    assert registry.get_version("MORTGAGE_XGB", "production")["version_name"] == "V2"
    registry.unset_alias("MORTGAGE_XGB", "production", actor="ci")
    assert registry.aliases("MORTGAGE_XGB") == {}
    history = registry.history("MORTGAGE_XGB")
    assert [(h["alias"], h["old_version"], h["new_version"], h["actor"]) for h in history] == [
        ("PRODUCTION", None, "V1", "ci"), ("PRODUCTION", "V1", "V2", "ci"), ("PRODUCTION", "V2", None, "ci")]
    assert history[0]["metrics"] == {"auc": 0.8} and history[1]["reason"] == "better"
    table = kit.fetch(fakesnow_session, "SELECT MODEL_NAME, NEW_VERSION FROM DB.S.MLOPS_PROMOTION_HISTORY ORDER BY SEQ")
    assert table["MODEL_NAME"].tolist() == ["MORTGAGE_XGB"] * 3


def test_failed_set_puts_the_alias_back(registry, snowml, trained_model, frame, log):
    log(registry, trained_model, frame)
    log(registry, trained_model, frame)
    registry.set_alias("MORTGAGE_XGB", "V1", "PRODUCTION")
    versions = snowml.models["MORTGAGE_XGB"]["versions"]
    versions["V2"]["mv"].set_alias.side_effect = RuntimeError("insufficient privileges")
    with pytest.raises(MlopsError, match="insufficient privileges; PRODUCTION was put back on V1"):
        registry.set_alias("MORTGAGE_XGB", "V2", "PRODUCTION")
    assert registry.aliases("MORTGAGE_XGB") == {"PRODUCTION": "V1"}
    assert len(registry.history("MORTGAGE_XGB")) == 1  # no record of a move that did not happen


@pytest.mark.parametrize("alias, message", [("V3", "looks like a version"), ("LAST", "system alias"),
                                            ("bad alias", "invalid alias")])
def test_bad_aliases(registry, trained_model, frame, alias, message, log):
    log(registry, trained_model, frame)
    with pytest.raises(MlopsError, match=message):
        registry.set_alias("MORTGAGE_XGB", "V1", alias)


def test_history_is_empty_before_any_promotion(registry, trained_model, frame, log):
    log(registry, trained_model, frame)
    assert registry.history("MORTGAGE_XGB") == []


def test_set_tag_creates_the_tag_first(registry, snowml, fakesnow_session, trained_model, frame, log):
    log(registry, trained_model, frame, tags={})
    registry.set_tag("MORTGAGE_XGB", "OWNER", "risk-team")
    statements = fakesnow_session.statements
    assert statements[-1] == "CREATE TAG IF NOT EXISTS DB.S.OWNER"
    assert snowml.models["MORTGAGE_XGB"]["tags"] == {"DB.S.OWNER": "risk-team"}
    models = registry.models()
    assert [(m["name"], m["versions"], m["tags"], m["comment"]) for m in models] == [
        ("MORTGAGE_XGB", 1, {"DB.S.OWNER": "risk-team"}, "first")]


def test_load_model_reads_the_exported_files(registry, snowml, trained_model, frame, kit, log):
    log(registry, trained_model, frame)
    registry.set_alias("MORTGAGE_XGB", "V1", "PRODUCTION")
    loaded = registry.load_model("MORTGAGE_XGB", "production")
    np.testing.assert_array_equal(kit.local_predictions(loaded, frame)[0], kit.local_predictions(trained_model, frame)[0])
    assert loaded.contract == trained_model.contract
    snowml.models["MORTGAGE_XGB"]["versions"]["V1"]["mv"].export.assert_called_once()


# ---- layer 3: the artifact log_model uploads, built offline with snowflake-ml's packager ------------------

def test_custom_model_packaged_and_loaded_in_a_clean_process(trained_model, frame, tmp_path, kit):
    """The ContractModel saved by ModelPackager (as log_model does) scores raw columns exactly like the local
    model when loaded back as_custom_model=True in a fresh interpreter where mlops_snowflake cannot be imported
    and mlops_framework comes from the artifact's code path, as in the warehouse."""
    from snowflake.ml.model import task, target_platform
    from snowflake.ml.model._packager.model_packager import ModelPackager

    from mlops_snowflake import custom_model
    from mlops_snowflake.registry import SnowflakeRegistry, _core_package_dir

    from snowflake.ml._internal.platform_capabilities import PlatformCapabilities

    wrapped = custom_model.build(trained_model, tmp_path / "files")
    with PlatformCapabilities.mock_features({}):  # else it asks the active session (local testing) for them
        meta = ModelPackager(str(tmp_path / "artifact")).save(
            name="MORTGAGE_XGB", model=wrapped, sample_input_data=frame[kit.INPUTS].head(10),
            conda_dependencies=SnowflakeRegistry().dependencies("xgboost"), code_paths=[_core_package_dir()],
            target_platforms=[target_platform.TargetPlatform.WAREHOUSE], task=task.Task.TABULAR_BINARY_CLASSIFICATION,
            options={"relax_version": False})
    signature = meta.signatures["predict"]
    assert [f.name for f in signature.inputs] == kit.INPUTS
    assert [f.name for f in signature.outputs] == ["PREDICTED_SCORE", "PREDICTED_RESPONSE"]
    frame[kit.INPUTS].to_parquet(tmp_path / "input.parquet")
    script = f"""
import sys
sys.modules["mlops_snowflake"] = None            # the plugin is not installed in the warehouse
sys.path = [p for p in sys.path if "mlops" not in p and p not in ("", ".")]
import pandas as pd
from snowflake.ml.model._packager.model_packager import ModelPackager
packager = ModelPackager({str(tmp_path / "artifact")!r})
packager.load(as_custom_model=True)
import mlops_framework
assert mlops_framework.__file__.startswith({str(tmp_path / "artifact")!r}), mlops_framework.__file__
packager.model.predict(pd.read_parquet({str(tmp_path / "input.parquet")!r})).to_parquet({str(tmp_path / "out.parquet")!r})
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    out = pd.read_parquet(tmp_path / "out.parquet")
    scores, classes = kit.local_predictions(trained_model, frame)
    np.testing.assert_allclose(out["PREDICTED_SCORE"].to_numpy(), scores, rtol=0, atol=1e-6)
    assert out["PREDICTED_RESPONSE"].tolist() == list(classes)
    assert set(out["PREDICTED_RESPONSE"]) <= set(frame[kit.TARGET])


def test_custom_model_rejects_missing_columns(trained_model, frame, tmp_path, kit):
    from mlops_snowflake import custom_model

    wrapped = custom_model.build(trained_model, tmp_path / "files")
    with pytest.raises(MlopsError, match="missing 1 required column"):
        wrapped.predict(frame[kit.INPUTS].drop(columns=["COUNTY_NAME"]))
    assert json.loads((tmp_path / "files" / "contract.json").read_text())["target"] == kit.TARGET


def test_generated_warehouse_handler_scores_raw_columns(trained_model, frame, tmp_path, local_session, kit):
    """What the warehouse runs: ModelComposer (log_model's packaging step; the upload goes to a local-testing
    stage) writes MANIFEST.yml and functions/predict.py; that handler, run in a clean interpreter with a stub
    ``_snowflake`` module and positional columns as a vectorized UDF receives them, returns the local model's
    predictions, nulls and categories never seen in training included."""
    import pandas as pd
    from snowflake.ml._internal.platform_capabilities import PlatformCapabilities
    from snowflake.ml.model import task, target_platform
    from snowflake.ml.model._model_composer.model_composer import ModelComposer

    from mlops_snowflake import custom_model
    from mlops_snowflake.registry import SnowflakeRegistry, _core_package_dir

    wrapped = custom_model.build(trained_model, tmp_path / "files")
    workspace = tmp_path / "workspace"
    with PlatformCapabilities.mock_features({}):
        ModelComposer(local_session, "@MODELS/MORTGAGE_XGB/V1", save_location=str(workspace)).save(
            name="MORTGAGE_XGB", model=wrapped, sample_input_data=frame[kit.INPUTS].head(10),
            conda_dependencies=SnowflakeRegistry().dependencies("xgboost"), code_paths=[_core_package_dir()],
            target_platforms=[target_platform.TargetPlatform.WAREHOUSE],
            task=task.Task.TABULAR_BINARY_CLASSIFICATION, options={"relax_version": True})
    manifest = (workspace / "MANIFEST.yml").read_text()
    assert "handler: functions.predict.infer" in manifest and "name: PREDICT" in manifest
    rows = frame[kit.INPUTS].copy()
    rows.loc[0, "APPLICANT_INCOME_000S"] = None
    rows.loc[1, "LOAN_TYPE_NAME"] = "NEVER SEEN"
    rows.loc[2, "COUNTY_NAME"] = None
    rows.to_parquet(tmp_path / "input.parquet")
    script = f"""
import sys, types, importlib.util, json
sys.modules["mlops_snowflake"] = None
sys.path = [p for p in sys.path if "mlops" not in p and p not in ("", ".")]
stub = types.ModuleType("_snowflake"); stub.vectorized = lambda **kw: (lambda f: f); sys.modules["_snowflake"] = stub
import pandas as pd
spec = importlib.util.spec_from_file_location("handler", {str(workspace / "functions" / "predict.py")!r})
handler = importlib.util.module_from_spec(spec); spec.loader.exec_module(handler)
import mlops_framework
assert mlops_framework.__file__.startswith({str(workspace)!r}), mlops_framework.__file__
batch = pd.read_parquet({str(tmp_path / "input.parquet")!r})
batch.columns = range(batch.shape[1])  # a vectorized UDF gets positional columns
print(json.dumps(handler.infer(batch)))
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-X", f"snowflake_import_directory={workspace}", "-c", script],
                          capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    out = pd.DataFrame(json.loads(done.stdout.strip().splitlines()[-1]))
    scores, classes = kit.local_predictions(trained_model, rows)
    np.testing.assert_allclose(out["PREDICTED_SCORE"].to_numpy(), scores, rtol=0, atol=1e-6)
    assert out["PREDICTED_RESPONSE"].tolist() == list(classes)


def test_the_model_monitor_follows_the_monitored_alias(snowml, fakesnow_session, trained_model, frame, kit, log,
                                                       monkeypatch):
    from mlops_snowflake import monitor as model_monitor

    registry = SnowflakeRegistry(
        kit.FakeConnection(fakesnow_session), database="DB", schema="S",
        monitor={"alias": "PRODUCTION", "source": "DB.S.PREDICTIONS", "warehouse": "ML_WH", "baseline": "DB.S.BASELINE",
                 "feature_columns": ["APPLICANT_INCOME_000S"]},
        alert_rules={"f1_low": {"metric": "f1", "op": "<", "threshold": 0.7}},
    )
    calls = []
    monkeypatch.setattr(model_monitor, "follow_alias",
                        lambda reg, session, model, version, settings, rules, columns, model_name: calls.append(
                            (model_name, version, settings.source, [r.name for r in rules], columns))
                        or {"monitor": version})
    log(registry, trained_model, frame)
    log(registry, trained_model, frame)
    registry.set_alias("MORTGAGE_XGB", "V1", "CHALLENGER")
    assert calls == []  # not the monitored alias
    record = registry.set_alias("MORTGAGE_XGB", "V2", "production")
    assert calls == [("DB.S.MORTGAGE_XGB", "V2", "DB.S.PREDICTIONS", ["f1_low"], ["APPLICANT_INCOME_000S"])]
    assert record["monitor"] == {"monitor": "V2"}
    plan = "\n".join(registry.plan_alias("MORTGAGE_XGB", "V2", "PRODUCTION"))
    assert "CREATE MODEL MONITOR" in plan and "DB.S.MORTGAGE_XGB_V2_MONITOR" in plan and "CREATE OR REPLACE ALERT" in plan
    assert "ALTER MODEL DB.S.MORTGAGE_XGB VERSION PRODUCTION UNSET ALIAS -- if a version holds it" in plan
    assert "UNSET ALIAS =" not in plan  # defect 12: the statement takes no alias name
    loose = SnowflakeRegistry(kit.FakeConnection(fakesnow_session), database="DB", schema="S",
                              monitor={"source": "PREDICTIONS", "warehouse": "WH"})
    with pytest.raises(MlopsError, match="registry.monitor.source='PREDICTIONS': write DATABASE.SCHEMA.TABLE"):
        loose.plan_alias("MORTGAGE_XGB", "V2", "PRODUCTION")  # defect 5: it would resolve in the registry's schema
