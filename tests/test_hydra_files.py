"""Hydra's record of a run (``.hydra/*.yaml``), scrubbed of secrets by ``config.scrub_hydra_files`` with
libyaml, reads back as the same text as PyYAML's own parser and emitter write."""

import yaml

from mlops_framework import config

CONFIG = {
    "model": {"params": {"max_depth": 3, "learning_rate": 0.1, "missing": float("nan"), "big": 1e20}},
    "text": {"long": "word " * 40, "lines": "first\nsecond\n", "unicode": "Zürich – 東京", "quoted": "yes",
             "empty": "", "number_like": "012", "colon": "a: b", "none": None, "flag": True},
    "connection": {"user": "me", "password": "hunter2-canary"},
    "list": [1, "two", {"three": 3}, []],
}
OVERRIDES = ["model.params.max_depth=3", "connection.password=hunter2-canary", "+text.note='a b'"]


def scrubbed(tmp_path, name):
    hydra = tmp_path / name / ".hydra"
    hydra.mkdir(parents=True)
    (hydra / "config.yaml").write_text(yaml.safe_dump(CONFIG, sort_keys=False, allow_unicode=True))
    (hydra / "overrides.yaml").write_text(yaml.safe_dump(OVERRIDES))
    config.scrub_hydra_files(tmp_path / name)
    return {path.name: path.read_text() for path in hydra.glob("*.yaml")}


def test_scrubbed_files_are_the_text_pyyamls_own_code_writes(tmp_path, monkeypatch):
    fast = scrubbed(tmp_path, "libyaml")
    monkeypatch.delattr(yaml, "CSafeLoader", raising=False)
    monkeypatch.delattr(yaml, "CSafeDumper", raising=False)
    assert fast == scrubbed(tmp_path, "pure")
    assert "hunter2-canary" not in "".join(fast.values()) and "Zürich" in yaml.safe_load(fast["config.yaml"])["text"]["unicode"]
