"""LocalRegistry: real files under tmp_path, real processes for concurrency and crashes."""

import getpass
import json
import multiprocessing
import random
import time

import pandas as pd
import pytest

from mlops_framework.errors import MlopsError
from mlops_local.registry import LocalRegistry

FORK = multiprocessing.get_context("fork")


class TinyModel:
    """Stands in for TrainedModel: the registry only needs save(directory)."""

    def __init__(self, payload=b"weights", slow_chunks=0):
        self.payload = payload
        self.slow_chunks = slow_chunks

    def save(self, directory):
        (directory / "contract.json").write_text(json.dumps({"features": ["a", "b"]}))
        (directory / "extra").mkdir()
        (directory / "extra" / "notes.txt").write_text("nested file")
        with open(directory / "model.ubj", "wb") as f:
            f.write(self.payload)
            for _ in range(self.slow_chunks):
                f.write(b"x" * 4096)
                f.flush()
                time.sleep(0.002)


@pytest.fixture
def reg(tmp_path):
    return LocalRegistry(tmp_path / "registry")


def test_init_does_no_io(tmp_path):
    LocalRegistry(tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()
    assert LocalRegistry(tmp_path / "nowhere").models() == []
    assert str(tmp_path / "nowhere") in LocalRegistry(tmp_path / "nowhere").describe()


def test_log_and_read_back(reg):
    sample = pd.DataFrame({"a": range(150), "b": [0.5] * 150})
    rec = reg.log_model(TinyModel(), model_name="churn", comment="first try",
                        metrics={"auc": 0.91}, metadata={"rows": 1000}, tags={"team": "growth"},
                        sample_input=sample, signature={"inputs": ["a", "b"]},
                        lineage={"table": "DB.S.CUSTOMERS", "query_id": "01ab"})
    assert rec["version_name"] == "v1"
    assert reg.get_version("churn", "v1") == rec
    assert rec["comment"] == "first try"
    assert rec["metrics"] == {"auc": 0.91}
    assert rec["metadata"] == {"rows": 1000}
    assert rec["signature"] == {"inputs": ["a", "b"]}
    assert rec["lineage"] == {"table": "DB.S.CUSTOMERS", "query_id": "01ab"}
    assert rec["created_on"].endswith("+00:00")
    assert sorted(rec["files"]) == ["artifact/contract.json", "artifact/extra/notes.txt",
                                    "artifact/model.ubj", "sample_input.parquet"]

    stored = pd.read_parquet(reg.artifact_path("churn", "v1").parent / rec["sample_input"])
    pd.testing.assert_frame_equal(stored, sample.head(100))

    path = reg.artifact_path("churn", "v1")
    assert (path / "model.ubj").read_bytes() == b"weights"
    assert (path / "extra" / "notes.txt").read_text() == "nested file"

    [model] = reg.models()
    assert model["name"] == "churn"
    assert model["tags"] == {"team": "growth"}
    assert model["versions"] == 1
    assert model["aliases"] == {}
    assert model["comment"] is None


def test_version_without_sample_input_and_numpy_metrics(reg):
    import numpy as np

    rec = reg.log_model(TinyModel(), model_name="m", metrics={"auc": np.float32(0.5), "cm": np.eye(2, dtype=int)})
    assert rec == reg.get_version("m", "v1")
    assert rec["metrics"] == {"auc": 0.5, "cm": [[1, 0], [0, 1]]}
    assert rec["sample_input"] is None
    assert not (reg.artifact_path("m", "v1").parent / "sample_input.parquet").exists()


def test_auto_numbering_and_given_names(reg):
    names = [reg.log_model(TinyModel(), model_name="m")["version_name"] for _ in range(3)]
    assert names == ["v1", "v2", "v3"]
    assert reg.log_model(TinyModel(), model_name="m", version_name="Baseline_1")["version_name"] == "Baseline_1"
    assert reg.log_model(TinyModel(), model_name="m")["version_name"] == "v4"
    assert reg.log_model(TinyModel(), model_name="m", version_name="v10")["version_name"] == "v10"
    assert reg.log_model(TinyModel(), model_name="m")["version_name"] == "v11"
    assert [v["version_name"] for v in reg.versions("m")] == ["v1", "v2", "v3", "Baseline_1", "v4", "v10", "v11"]


def test_duplicate_version_refused(reg, tmp_path):
    reg.log_model(TinyModel(b"one"), model_name="m", version_name="gold")
    with pytest.raises(MlopsError, match="already has a version 'gold'"):
        reg.log_model(TinyModel(b"two"), model_name="m", version_name="gold")
    assert len(reg.versions("m")) == 1
    assert (reg.artifact_path("m", "gold") / "model.ubj").read_bytes() == b"one"
    assert list((tmp_path / "registry" / "m" / ".staging").iterdir()) == []


@pytest.mark.parametrize("kwargs, message", [
    ({"model_name": "bad-name"}, "invalid model name"),
    ({"model_name": "1abc"}, "invalid model name"),
    ({"model_name": "../escape"}, "invalid model name"),
    ({"model_name": "m", "version_name": "v 2"}, "invalid version name"),
    ({"model_name": "m", "tags": {"t": "x" * 257}}, "at most 256"),
    ({"model_name": "m", "tags": {"t": 3}}, "must be a string"),
    ({"model_name": "m", "metrics": {"auc": object()}}, "JSON-serialisable"),
])
def test_bad_input_refused_before_writing(reg, tmp_path, kwargs, message):
    with pytest.raises(MlopsError, match=message):
        reg.log_model(TinyModel(), **kwargs)
    assert not (tmp_path / "registry").exists()


def test_tags(reg):
    reg.log_model(TinyModel(), model_name="m", tags={"team": "a", "domain": "churn"})
    reg.log_model(TinyModel(), model_name="m", tags={"team": "b"})
    reg.set_tag("m", "tier", "gold")
    [model] = reg.models()
    assert model["tags"] == {"team": "b", "domain": "churn", "tier": "gold"}
    assert model["versions"] == 2
    with pytest.raises(MlopsError, match="at most 256"):
        reg.set_tag("m", "t", "x" * 257)


def test_aliases_and_history(reg):
    for _ in range(3):
        reg.log_model(TinyModel(), model_name="m")
    first = reg.set_alias("m", "v1", "production", reason="initial", metrics={"auc": 0.8})
    assert first["alias"] == "PRODUCTION"
    assert (first["old_version"], first["new_version"]) == (None, "v1")
    assert first["actor"] == getpass.getuser()

    moved = reg.set_alias("m", "v3", "Production", actor="ci-bot", reason="better auc", metrics={"auc": 0.9})
    assert (moved["old_version"], moved["new_version"]) == ("v1", "v3")
    reg.set_alias("m", "v2", "staging")
    assert reg.aliases("m") == {"PRODUCTION": "v3", "STAGING": "v2"}
    for spelling in ("production", "PRODUCTION", "pRoDuCtIoN"):
        assert reg.get_version("m", spelling)["version_name"] == "v3"
    assert reg.artifact_path("m", "production") == reg.artifact_path("m", "v3")

    gone = reg.unset_alias("m", "staging", actor="alice", reason="cleanup")
    assert (gone["old_version"], gone["new_version"]) == ("v2", None)
    assert reg.aliases("m") == {"PRODUCTION": "v3"}

    history = reg.history("m")
    assert [(h["alias"], h["old_version"], h["new_version"]) for h in history] == [
        ("PRODUCTION", None, "v1"), ("PRODUCTION", "v1", "v3"), ("STAGING", None, "v2"), ("STAGING", "v2", None)]
    assert history[1] == moved
    assert history[1]["actor"] == "ci-bot" and history[1]["reason"] == "better auc"
    assert history[1]["metrics"] == {"auc": 0.9}
    assert all(h["when"].endswith("+00:00") for h in history)
    assert reg.models()[0]["aliases"] == {"PRODUCTION": "v3"}


def test_alias_errors(reg):
    reg.log_model(TinyModel(), model_name="m")
    with pytest.raises(MlopsError, match="has no version 'v9'; versions: v1"):
        reg.set_alias("m", "v9", "prod")
    with pytest.raises(MlopsError, match="looks like a version name"):
        reg.set_alias("m", "v1", "V7")
    with pytest.raises(MlopsError, match="invalid alias"):
        reg.set_alias("m", "v1", "prod-1")
    with pytest.raises(MlopsError, match="no alias 'PROD'"):
        reg.unset_alias("m", "prod")
    assert reg.history("m") == []


def test_delete_version_refused_while_aliased(reg):
    reg.log_model(TinyModel(), model_name="m")
    reg.log_model(TinyModel(), model_name="m")
    reg.set_alias("m", "v1", "prod")
    with pytest.raises(MlopsError, match="alias PROD"):
        reg.delete_version("m", "v1")
    assert [v["version_name"] for v in reg.versions("m")] == ["v1", "v2"]
    reg.delete_version("m", "v2")
    assert [v["version_name"] for v in reg.versions("m")] == ["v1"]
    reg.unset_alias("m", "prod")
    reg.delete_version("m", "v1", actor="ci", reason="superseded")
    assert reg.versions("m") == []
    with pytest.raises(MlopsError, match="has no version 'v1'"):
        reg.delete_version("m", "v1")
    # each deletion is in the history (a refused one changed nothing, so it is not)
    deleted = [h for h in reg.history("m") if h["event"] == "deleted"]
    assert [(h["old_version"], h["new_version"], h["alias"]) for h in deleted] == [("v2", None, None), ("v1", None, None)]
    assert (deleted[1]["actor"], deleted[1]["reason"]) == ("ci", "superseded")


def test_a_deleted_versions_number_is_never_given_again(reg):
    for _ in range(3):
        reg.log_model(TinyModel(), model_name="m")
    reg.delete_version("m", "v3")
    assert reg.log_model(TinyModel(), model_name="m")["version_name"] == "v4"
    reg.log_model(TinyModel(), model_name="m", version_name="v9")
    reg.delete_version("m", "v9")
    reg.delete_version("m", "v4")
    assert reg.log_model(TinyModel(), model_name="m")["version_name"] == "v10"


def test_unknown_model_version_alias_messages(reg, tmp_path):
    reg.log_model(TinyModel(), model_name="alpha")
    reg.log_model(TinyModel(), model_name="beta")
    reg.set_alias("beta", "v1", "prod")
    with pytest.raises(MlopsError, match="unknown model 'gamma'; known models: alpha, beta"):
        reg.versions("gamma")
    with pytest.raises(MlopsError, match="unknown model"):
        reg.get_version("../alpha", "v1")
    with pytest.raises(MlopsError, match="no version or alias 'v7'; versions: v1; aliases: PROD"):
        reg.get_version("beta", "v7")
    with pytest.raises(MlopsError, match="no version or alias"):
        reg.artifact_path("beta", "../../alpha")

    import shutil
    shutil.rmtree(tmp_path / "registry" / "beta" / "versions" / "v1")
    with pytest.raises(MlopsError, match="alias 'PROD' of model 'beta' points at version 'v1', which no longer exists"):
        reg.get_version("beta", "prod")


def test_checksums_catch_tampering(reg):
    reg.log_model(TinyModel(), model_name="m", sample_input=pd.DataFrame({"a": [1, 2]}))
    path = reg.artifact_path("m", "v1")
    data = bytearray((path / "model.ubj").read_bytes())
    data[3] ^= 0x01
    (path / "model.ubj").write_bytes(bytes(data))
    with pytest.raises(MlopsError, match="file artifact/model.ubj does not match"):
        reg.artifact_path("m", "v1")
    with pytest.raises(MlopsError, match="artifact/model.ubj"):
        reg.load_model("m", "v1")

    data[3] ^= 0x01
    (path / "model.ubj").write_bytes(bytes(data))
    assert reg.artifact_path("m", "v1") == path
    (path.parent / "sample_input.parquet").write_bytes(b"not parquet")
    with pytest.raises(MlopsError, match="sample_input.parquet does not match"):
        reg.load_model("m", "v1")


def test_checksums_catch_missing_and_extra_files(reg):
    reg.log_model(TinyModel(), model_name="m")
    path = reg.artifact_path("m", "v1")
    (path / "dropped_in.py").write_text("import os")
    with pytest.raises(MlopsError, match="unexpected file artifact/dropped_in.py"):
        reg.artifact_path("m", "v1")
    (path / "dropped_in.py").unlink()
    (path / "extra" / "notes.txt").unlink()
    with pytest.raises(MlopsError, match="file artifact/extra/notes.txt is missing"):
        reg.artifact_path("m", "v1")


def _writer(root, barrier, worker):
    reg = LocalRegistry(root)
    barrier.wait()
    for i in range(3):
        rec = reg.log_model(TinyModel(f"w{worker}-{i}".encode()), model_name="m", metrics={"worker": worker})
        reg.set_alias("m", rec["version_name"], "champion", actor=f"worker{worker}")


def test_eight_concurrent_writers(reg):
    barrier = FORK.Barrier(8)
    procs = [FORK.Process(target=_writer, args=(reg.root, barrier, w)) for w in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * 8

    versions = reg.versions("m")
    assert sorted(v["version_name"] for v in versions) == sorted(f"v{n}" for n in range(1, 25))
    assert sorted((v["metrics"]["worker"] for v in versions)) == sorted(list(range(8)) * 3)
    payloads = {(reg.artifact_path("m", v["version_name"]) / "model.ubj").read_bytes() for v in versions}
    assert len(payloads) == 24

    history = reg.history("m")
    assert len(history) == 24
    assert history[0]["old_version"] is None
    for before, after in zip(history, history[1:]):
        assert after["old_version"] == before["new_version"]
    assert sorted(h["new_version"] for h in history) == sorted(v["version_name"] for v in versions)
    assert reg.aliases("m") == {"CHAMPION": history[-1]["new_version"]}
    assert reg.get_version("m", "champion")["version_name"] == history[-1]["new_version"]


def _slow_logger(root):
    sample = pd.DataFrame({"a": range(500), "b": ["x"] * 500})
    LocalRegistry(root).log_model(TinyModel(b"slow", slow_chunks=40), model_name="m", sample_input=sample)


def _wait_until_writing(staging, staged_before, process, deadline_s=120):
    deadline = time.monotonic() + deadline_s
    while not any((d / "artifact" / "model.ubj").exists() for d in set(staging.iterdir()) - staged_before):
        assert process.is_alive() and time.monotonic() < deadline, "the logger never began writing its model"
        time.sleep(0.001)


def _assert_consistent(reg, root):
    versions_dir = root / "m" / "versions"
    on_disk = sorted(p.name for p in versions_dir.iterdir())
    listed = sorted(v["version_name"] for v in reg.versions("m"))
    assert on_disk == listed == sorted(f"v{n}" for n in range(1, len(listed) + 1))
    for name in listed:
        assert (reg.artifact_path("m", name) / "model.ubj").read_bytes().startswith(b"slow")


def test_sigkill_during_log_model_leaves_no_half_version(reg):
    root = reg.root
    reg.log_model(TinyModel(b"slow"), model_name="m")
    start = time.monotonic()
    _slow_logger(root)
    duration = time.monotonic() - start

    rng = random.Random(1234)
    killed_midway = leftovers_seen = 0
    for attempt in range(10):
        before = len(reg.versions("m"))
        staged_before = set((root / "m" / ".staging").iterdir())
        p = FORK.Process(target=_slow_logger, args=(root,))
        p.start()
        if attempt % 2:  # half the kills once the model's file is being written, however loaded the machine
            _wait_until_writing(root / "m" / ".staging", staged_before, p)
        else:
            time.sleep(rng.uniform(0, duration * 1.3))
        p.kill()
        p.join(10)
        if len(reg.versions("m")) == before:
            killed_midway += 1
        leftovers_seen += any((root / "m" / ".staging").iterdir())
        _assert_consistent(reg, root)
    assert killed_midway > 0 and leftovers_seen > 0

    rec = reg.log_model(TinyModel(b"slow after"), model_name="m")
    assert rec["version_name"] == f"v{len(reg.versions('m'))}"
    _assert_consistent(reg, root)
    assert list((root / "m" / ".staging").iterdir()) == []
