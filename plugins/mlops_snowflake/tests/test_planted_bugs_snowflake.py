"""Snowflake decisions that one-line planted bugs changed without any test noticing."""

import pytest

from mlops_framework.errors import MlopsError
from mlops_snowflake.registry import SnowflakeRegistry


@pytest.fixture
def registry(snowml, fakesnow_session, kit):
    return SnowflakeRegistry(kit.FakeConnection(fakesnow_session), database="DB", schema="S")


def test_the_parity_check_compares_the_predicted_classes(registry, snowml, trained_model, frame, kit, monkeypatch):
    """The registry scores the same probabilities but the opposite classes (a lost threshold, say): the
    registration is refused and the new model deleted, as for a score difference."""
    scored_in_the_warehouse = snowml._run

    def opposite_classes(entry, name, X, **kwargs):
        out = scored_in_the_warehouse(entry, name, X, **kwargs)
        out["PREDICTED_RESPONSE"] = 1 - out["PREDICTED_RESPONSE"]
        return out

    monkeypatch.setattr(snowml, "_run", opposite_classes)
    with pytest.raises(MlopsError, match="differ from the local ones on 10 of 10 sample rows"):
        registry.log_model(trained_model, model_name="M", version_name=None, comment="c", metrics={},
                           metadata={"estimator": "xgboost.XGBClassifier"}, tags={},
                           sample_input=frame[kit.INPUTS].head(10), signature={"inputs": []}, lineage={})
    assert snowml.models == {}
