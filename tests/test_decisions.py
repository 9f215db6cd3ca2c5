"""Focused tests of the core's decision code, written to kill the mutants that the rest of the suite let
survive (docs/mutation.md lists the areas and the mutants left alive, with the reason for each)."""

import pytest

from hydra_plugins.mlops_optuna_sweeper.sweeper import format_value, search_space


@pytest.mark.parametrize("value, text", [
    (None, "null"), (True, "true"), (False, "false"), (0.1, "0.1"), (3, "3"), ("gbtree", "gbtree"),
    ("a b", "'a b'"), ("it's", "'it\\'s'"), ("back\\slash", "'back\\slash'"), ("end\\", "'end\\\\'"), ("\\'", "'\\\\\\''"),
    ("", "''"), ("null", "'null'"), ("1", "'1'"), ("x1", "x1"),
])
def test_sweep_values_are_written_as_hydra_reads_them_back(value, text):
    assert format_value(value) == text


@pytest.mark.parametrize("value", [None, True, False, 0.1, 1e-7, 3, "gbtree", "a b", "it's", "back\\slash", "end\\",
                                   "\\'", "", "x,y", "null", "True", "1",
                                   "-2.5", "inf", "nan", "1e3", "1_000", "[1]"])
def test_sweep_values_survive_hydras_parser(value):
    _, _, fixed = search_space({}, [f"model.params.x={format_value(value)}"])
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_override(fixed[0]).value()
    assert parsed == value and type(parsed) is type(value)


# ---------------------------------------------------------------- secret redaction (config.py)
from mlops_framework import config  # noqa: E402
from mlops_framework.config import REDACTED  # noqa: E402


@pytest.fixture
def no_secrets(monkeypatch):
    monkeypatch.setattr(config, "_SECRET_VALUES", set())
    return config._SECRET_VALUES


@pytest.mark.parametrize("key", ["password", "PASSWORD", "db_password", "passphrase", "private_key_passcode",
                                 "passwd", "private_key_file_pwd", "client_secret", "token", "X-Token",
                                 "credentials", "Authorization", "authorisation", "api_key", "api-key", "apikey",
                                 "private_key", "key", "db_key", "ssh-key"])
def test_secret_looking_keys_are_redacted(key, no_secrets):
    assert config.redact({key: "s3cr3t-value", "user": "me"}) == {key: REDACTED, "user": "me"}


@pytest.mark.parametrize("key", ["private_key_file", "keyboard", "monkey", "key_id", "user", "partition_by"])
def test_other_keys_are_kept(key, no_secrets):
    assert config.redact({key: "value"}) == {key: "value"}


def test_redaction_recurses_and_leaves_structure_null_and_other_types(no_secrets):
    data = {"connection": {"password": "pw-1234", "port": 443, "token": None},
            "headers": [{"Authorization": "Bearer abcd"}, "https://u:pw-in-url@host/x"],
            "secret": {"nested": "kept"}, "n": 3}
    assert config.redact(data) == {"connection": {"password": REDACTED, "port": 443, "token": None},
                                   "headers": [{"Authorization": REDACTED}, f"https://{REDACTED}@host/x"],
                                   "secret": {"nested": "kept"}, "n": 3}
    assert no_secrets == set(), "redact remembers nothing unless asked"


def test_redaction_remembers_values_and_url_passwords_when_asked(no_secrets):
    config.redact({"password": "pw-1234", "url": "https://user:pw-in-url@host/x", "user": "someone"},
                  remember=True)
    assert no_secrets == {"pw-1234", "pw-in-url"}
    assert config.scrub("pw-1234 and pw-in-url, someone") == f"{REDACTED} and {REDACTED}, someone"


def test_remembered_secrets_are_four_characters_or_more_and_never_the_marker(no_secrets):
    for value in ("abc", REDACTED, 12345, None, "abcd"):
        config.remember_secret(value)
    assert no_secrets == {"abcd"}


def test_scrub_replaces_the_longest_secret_first(no_secrets):
    config.remember_secret("abcd")
    config.remember_secret("abcdefgh")
    assert config.scrub("x abcdefgh y abcd") == f"x {REDACTED} y {REDACTED}"


@pytest.mark.parametrize("text, masked", [
    ("https://user:pw@host/path", f"https://{REDACTED}@host/path"),
    ("smtp+ssl://token@mail.example:465 and http://a:b@c", f"smtp+ssl://{REDACTED}@mail.example:465 and http://{REDACTED}@c"),
    ("https://host/path?to=a@b", "https://host/path?to=a@b"),
    ("user@example.com", "user@example.com"),
])
def test_url_credentials_are_masked(text, masked):
    assert config.mask_url(text) == masked


def test_command_line_secrets_are_found_by_the_last_key_segment(no_secrets):
    assert config._override_secret("+connection.password=pa=ss") == ("+connection.password", "pa=ss")
    assert config._override_secret("password.length=12") is None
    assert config._override_secret("connection.password_policy.min_length=12") is None
    assert config._override_secret("+token=abcd") == ("+token", "abcd")
    assert config._override_secret("password") is None
    assert config._override_secret(42) is None
    data = {"task": {"overrides": ["model.threshold=0.4", "+connection.private_key_file_pwd=long-pass"]},
            "hydra": [["alerts.notifiers.hook.headers.X-Token=tok-9876"]]}
    assert config._redact_overrides(data) == {
        "task": {"overrides": ["model.threshold=0.4", f"+connection.private_key_file_pwd={REDACTED}"]},
        "hydra": [[f"alerts.notifiers.hook.headers.X-Token={REDACTED}"]]}
    config._remember_override_secrets(data)
    assert no_secrets == {"long-pass", "tok-9876"}


# ---------------------------------------------------------------- features: task, roles, names, classes
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from mlops_framework import features as F  # noqa: E402
from mlops_framework.errors import MlopsError  # noqa: E402


@pytest.mark.parametrize("values, task", [
    ([0, 1, 1, None], "binary"), (["a", "b", "a"], "binary"), (["a", "b", "c"], "multiclass"),
    ([1, 2, 3] * 10, "multiclass"), ([1.0, 2.0, 3.0] * 10, "multiclass"), (list(range(20)) * 10, "multiclass"),
    (list(range(21)) * 10, "regression"), ([1, 2, 3], "regression"), ([0.5, 1.0, 2.0] * 10, "regression"),
    (pd.Categorical(["x", "y", "z"]), "multiclass"),
])
def test_the_task_follows_the_target(values, task):
    assert F.infer_task(pd.Series(values), "T") == task


def test_a_target_with_one_value_or_times_is_refused():
    with pytest.raises(MlopsError, match=r"^target column 'T' has only one value \(1\.0\): nothing to learn"):
        F.infer_task(pd.Series([1, 1, None]), "T")
    with pytest.raises(MlopsError, match=r"only one value \(no values\)"):
        F.infer_task(pd.Series([None, None], dtype=float), "T")
    with pytest.raises(MlopsError, match="has time values: a target must hold numbers, strings or bools"):
        F.infer_task(pd.Series(pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03"])), "T")


def _contract(task="binary", classes=("no", "yes")):
    return F.FeatureContract(["A", "B"], {"C": ["x"]}, "T", list(classes), "onehot", "ignore", task)


def test_too_many_classes_for_binary_are_shown_ten_at_most_and_mixed_types_five():
    with pytest.raises(MlopsError) as info:
        F._learn_classes(pd.Series(range(10)), "T", "binary")
    assert f"has 10 classes ({', '.join(map(str, range(10)))}): binary" in str(info.value)
    with pytest.raises(MlopsError) as info:
        F._learn_classes(pd.Series(range(11)), "T", "binary")
    assert f"has 11 classes ({', '.join(map(str, range(10)))}, ...): binary" in str(info.value)
    with pytest.raises(MlopsError) as info:
        F._learn_classes(pd.Series(["a", 1, "b", 2, "c", 3, "d"], dtype=object), "T", "multiclass")
    assert str(info.value) == "target column 'T' mixes value types: ['a', 1, 'b', 2, 'c']"


def test_missing_columns_are_named_with_what_was_found():
    contract = _contract()
    contract.check_columns(["C", "B", "A", "EXTRA"])
    contract.check_columns(("A", "B", "C", "T"), need_target=True)
    with pytest.raises(MlopsError) as info:
        contract.check_columns(iter(["a", "C", "Z"]), need_target=True)
    assert str(info.value) == ("the input is missing 3 required column(s): A, B, T. Column names are case-sensitive; "
                               "found 'a' for 'A'. Found: a, C, Z.")
    with pytest.raises(MlopsError) as info:
        contract.check_columns(["A", "B"])
    assert str(info.value) == "the input is missing 1 required column(s): C. Found: A, B."
    with pytest.raises(MlopsError) as info:
        contract.check_columns([])
    assert str(info.value) == "the input is missing 3 required column(s): A, B, C. Found: no columns."
    twenty = [f"X{i}" for i in range(20)]
    with pytest.raises(MlopsError) as info:
        contract.check_columns(twenty)
    assert str(info.value).endswith(f"Found: {', '.join(twenty)}.")
    with pytest.raises(MlopsError) as info:
        contract.check_columns([*twenty, "X20"])
    assert str(info.value).endswith(f"Found: {', '.join(twenty)}, ... (21 in all).")


def test_one_delimited_column_name_says_which_delimiter_instead_of_what_was_found():
    with pytest.raises(MlopsError) as info:
        _contract().check_columns(["A;B;C"])
    assert str(info.value) == ("the input is missing 3 required column(s): A, B, C. The input has one column named "
                               "'A;B;C': the file looks delimited by ';', not the delimiter it was read with; set "
                               "the delimiter to ';'.")


def test_target_values_become_class_indices_or_numbers():
    contract = _contract()
    for values in (["yes", "no", "yes"], pa.array(["yes", "no", "yes"]), pa.chunked_array([["yes"], ["no", "yes"]])):
        codes = contract.encode_target(values)
        assert codes.tolist() == [1, 0, 1] and codes.dtype == np.int32
    numbers = _contract("regression", ()).encode_target(pa.array([1, 2.5]))
    assert numbers.tolist() == [1.0, 2.5] and numbers.dtype == np.float64
    whole = _contract("regression", ()).encode_target(["3", 4])
    assert whole.tolist() == [3.0, 4.0] and whole.dtype == np.float64, "whole numbers too"


def test_target_values_outside_the_classes_or_not_numbers_are_counted_and_shown():
    with pytest.raises(MlopsError) as info:
        _contract().encode_target(["yes", "maybe", None, "maybe", "no"])
    assert str(info.value) == "target column 'T' has 3 value(s) outside the classes ['no', 'yes']: 'maybe', None"
    many = [f"v{i:02d}" for i in range(12)]
    with pytest.raises(MlopsError) as info:
        _contract().encode_target(many)
    assert str(info.value).endswith(": " + ", ".join(map(repr, many[:10]))) and "has 12 value(s)" in str(info.value)
    with pytest.raises(MlopsError) as info:
        _contract("regression", ()).encode_target(["1", "x", None, 2])
    assert str(info.value) == "target column 'T' has 2 missing or non-numeric value(s)"


import datetime as dt  # noqa: E402


@pytest.mark.parametrize("values, kind", [
    (pd.Series([True, False]), "bool"), (pd.Series([1, 2]), "numeric"), (pd.Series([1.5, None]), "numeric"),
    (pd.Series(pd.to_datetime(["2024-01-01"])), "time"), (pd.Series(pd.period_range("2024-01", periods=2, freq="M")), "time"),
    (pd.Series(pd.Categorical(["a"])), "categorical"), (pd.Series([None, None], dtype=object), "empty"),
    (pd.Series([True, None], dtype=object), "bool"), (pd.Series(["a", None], dtype=object), "categorical"),
    (pd.Series([pd.Timestamp("2024-01-01").date()], dtype=object), "time"),
    (pd.Series([1, 2], dtype=object), "numeric"), (pd.Series([1, 2.5], dtype=object), "numeric"),
    (pd.Series([1.5, 2.5], dtype=object), "numeric"), (pd.Series([dt.datetime(2024, 1, 2, 3)], dtype=object), "time"),
    (pd.Series([dt.time(3, 4)], dtype=object), "time"),
    (pd.Series([b"x"], dtype=object), "other"), (pd.Series([1, "a"], dtype=object), "other"),
])
def test_column_kinds(values, kind):
    assert F._kind(values) == kind


def test_id_like_columns():
    rows = F._ID_MIN_ROWS
    unique = pd.Series([f"k{i}" for i in range(rows)])
    assert F._id_like(unique, "categorical") == "id-like (a different string on every row)"
    assert F._id_like(unique[: rows - 1], "categorical") is None, "too few rows to call unique strings an id"
    many = pd.Series([f"k{i % 60}" for i in range(110)])  # 60 distinct > max(50, 55)
    assert F._id_like(many, "categorical") == "id-like (60 distinct strings in 110 rows)"
    assert F._id_like(pd.Series([f"k{i % 55}" for i in range(110)]), "categorical") is None
    assert F._id_like(pd.Series([f"k{i % 51}" for i in range(60)]), "categorical") == "id-like (51 distinct strings in 60 rows)"
    assert F._id_like(pd.Series([f"k{i % 50}" for i in range(60)]), "categorical") is None
    numbers = pd.Series(range(rows), name="N")
    assert F._id_like(numbers, "numeric") == "id-like (a different whole number on every row, in order)"
    assert F._id_like(numbers[: rows - 1], "numeric") is None
    shuffled = pd.Series([3, 1, 2, 0, 4, 5, 6, 7, 8, 9], name="N")
    assert F._id_like(shuffled, "numeric") is None
    assert F._id_like(shuffled.rename("LoanId"), "numeric") is not None
    assert F._id_like(numbers.astype(float), "numeric") is None, "floats are measurements, not ids"
    assert F._id_like(pd.Series([1, 1, 2, 3, 4, 5, 6, 7, 8, 9], name="ID"), "numeric") is None
    assert F._id_like(unique, "numeric") is None


def test_roles_are_inferred_from_types_and_names():
    n = 12
    frame = pd.DataFrame({
        "T": [0, 1] * (n // 2), "AGE": np.arange(n) % 5 * 1.5, "FLAG": [True, False] * (n // 2),
        "CITY": ["a", "b", "c"] * (n // 3), "ROW": range(n), "WHEN": pd.date_range("2024-01-01", periods=n),
        "EMPTY": [None] * n, "BLOB": [b"x"] * n, "PREDICTED_SCORE": 0.5, "PROBA_1": 0.5, "DROP": 1, "KEY": range(n),
        "AT": pd.date_range("2024-01-01", periods=n),
    })
    roles = F.infer_roles(frame, target="T", id="KEY", time="AT", exclude=["DROP"])
    assert roles.numeric == ["AGE", "FLAG"] and roles.categorical == ["CITY"]
    assert (roles.target, roles.id, roles.time) == ("T", "KEY", "AT")
    assert roles.skipped == {
        "DROP": "excluded", "KEY": "the row id (features.id)", "AT": "the time column (features.time)",
        "ROW": "id-like (a different whole number on every row, in order)",
        "WHEN": "a date/time column (name it in features.numeric to use it)", "EMPTY": "every value is missing",
        "BLOB": "values of type object are not features", "PREDICTED_SCORE": "a column scoring writes",
        "PROBA_1": "a column scoring writes"}
    assert roles.lines()[:3] == ["target       T", "numeric      AGE, FLAG", "categorical  CITY"]


def test_explicit_feature_lists_are_taken_as_given_and_make_id_and_time_optional():
    frame = pd.DataFrame({"T": [0, 1, 0], "A": [1.0, 2.0, 3.0], "B": ["x", "y", "x"], "C": [1, 2, 3]})
    roles = F.infer_roles(frame, target="T", numeric=["C"], categorical=[], id="GONE", time="GONE_TOO")
    assert (roles.numeric, roles.categorical, roles.id, roles.time) == (["C"], [], None, None)
    roles = F.infer_roles(frame, target="T", categorical="B")
    assert (roles.numeric, roles.categorical) == (["A", "C"], ["B"])
    with pytest.raises(MlopsError, match="^features.id names 'GONE', not a column"):
        F.infer_roles(frame, target="T", numeric=["C"], id="GONE")


def test_unknown_or_missing_columns_are_named_with_a_hint():
    frame = pd.DataFrame({"Target": [0, 1], "A": [1.0, 2.0]})
    with pytest.raises(MlopsError, match=r"^features.target names 'target' \(did you mean 'Target'\?\), not a column"
                                         r" of the data; columns: Target, A"):
        F.infer_roles(frame, target="target")
    with pytest.raises(MlopsError, match=r"^features.exclude names 'B', not a column of the data; columns: Target, A$"):
        F.infer_roles(frame, target="Target", exclude=["B"])
    with pytest.raises(MlopsError, match="^features.target must name the target column, got ''"):
        F.infer_roles(frame, target="")
    with pytest.raises(MlopsError, match="^features.numeric must be a list of column names, got 3"):
        F.infer_roles(frame, target="Target", numeric=3)
    with pytest.raises(MlopsError, match=r"^no feature columns in the data besides the target 'Target': A: excluded"):
        F.infer_roles(frame, target="Target", exclude="A")
    with pytest.raises(MlopsError, match=r"besides the target 'Target': no other columns"):
        F.infer_roles(frame[["Target"]], target="Target")


def test_feature_name_lists_are_checked():
    F._check_names(["A"], [], "T")
    F._check_names([], ["B"], "T")
    for args, message in [(([], [], "T"), "no feature columns: list at least one"),
                          ((["A", "B"], ["B", "A"], "T"), "columns listed as both numeric and categorical: A, B$"),
                          ((["A", "A"], [], "T"), "numeric feature columns listed twice: A"),
                          ((["A"], ["C", "C"], "T"), "categorical feature columns listed twice: C"),
                          ((["T"], [], "T"), "the target column 'T' is also listed as a feature"),
                          ((["A"], ["T"], "T"), "the target column 'T' is also listed as a feature")]:
        with pytest.raises(MlopsError, match="^" + message):
            F._check_names(*args)


def test_classes_are_learned_sorted_and_checked():
    assert F._learn_classes(pd.Series([1, 0, 1]), "T", "binary") == [0, 1]
    assert F._learn_classes(pd.Series(["b", "c", "a"]), "T", "multiclass") == ["a", "b", "c"]
    assert F._learn_classes(pd.Series([1.5, 2.0]), "T", "regression") == []
    for series, task, message in [
        (pd.Series([1.0, None]), "binary", "has 1 missing value"),
        (pd.Series([True, False]), "regression", "has dtype bool: regression needs numbers"),
        (pd.Series(["a", "b"]), "regression", "has dtype object"),
        (pd.Series([1, "a"], dtype=object), "multiclass", "mixes value types"),
        (pd.Series([1, 1]), "binary", r"has only one class \(1\): a binary classifier needs exactly two classes"),
        (pd.Series(["x"]), "multiclass", "has only one class .*: classification needs two or more"),
        (pd.Series([], dtype=float), "binary", "has no rows"),
        (pd.Series(range(12)), "binary", r"has 12 classes \(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, \.\.\.\): binary"),
        (pd.Series([0, 1, 2]), "binary", r"has 3 classes \(0, 1, 2\): binary classification needs exactly two"),
    ]:
        with pytest.raises(MlopsError, match="^target column 'T' " + message):
            F._learn_classes(series, "T", task)
    assert F._learn_classes(pd.Series([0, 1, 2]), "T", "multiclass") == [0, 1, 2]


def test_vocabularies_are_sorted_natives_of_one_type():
    assert F._learn_vocabulary(pd.Series(["b", None, "a"]), "C") == ["a", "b"]
    assert F._learn_vocabulary(pd.Series([2, True], dtype=object), "C") == [True, 2]
    assert F._learn_vocabulary(pd.Series([2, 1.5], dtype=object), "C") == [1.5, 2]
    assert type(F._learn_vocabulary(pd.Series(np.array([3, 1])), "C")[0]) is int
    with pytest.raises(MlopsError, match="^categorical feature column 'C' has no values"):
        F._learn_vocabulary(pd.Series([None, np.nan], dtype=object), "C")
    with pytest.raises(MlopsError, match="has values of type int, str: use one type"):
        F._learn_vocabulary(pd.Series(["a", 1], dtype=object), "C")


# ---------------------------------------------------------------- split (stages.py)
from types import SimpleNamespace  # noqa: E402

from mlops_framework.pipeline import SplitSpec  # noqa: E402
from mlops_framework.stages import _fractions, classification_metrics, resolve_task, split  # noqa: E402


def _run_split(spec, y, task="binary", time=None, said=None):
    X = pd.DataFrame({"A": np.arange(len(y), dtype=float)})
    frame = X.assign(WHEN=time if time is not None else 0)
    said = [] if said is None else said
    run = SimpleNamespace(results={"X": X, "y": pd.Series(y), "frame": frame, "contract": SimpleNamespace(task=task)},
                          split=spec, features=SimpleNamespace(time="WHEN" if time is not None else None), shared=None,
                          summarize=lambda key, line: said.append((key, line)))
    split(run)
    return {name: sorted(part[0]["A"].astype(int)) for name, part in run.results["splits"].items()}, said


def test_a_time_split_holds_out_the_latest_rows_and_validates_on_the_ones_before():
    time = pd.date_range("2024-01-01", periods=10)[::-1]  # row 0 is the latest
    parts, _ = _run_split(SplitSpec(holdout=0.25, validation=0.5, order="time"), [0, 1] * 5, time=time)
    assert parts == {"train": [7, 8, 9], "validation": [3, 4, 5, 6], "holdout": [0, 1, 2]}  # ceil(2.5), ceil(3.5)


def test_a_time_split_needs_the_time_column_and_a_training_row():
    with pytest.raises(MlopsError, match="^split.order=time needs the time column"):
        _run_split(SplitSpec(order="time"), [0, 1] * 5)
    parts, _ = _run_split(SplitSpec(holdout=0.3, validation=0.5, order="time"), [0, 1, 0], time=[3, 2, 1])
    assert parts == {"train": [2], "validation": [1], "holdout": [0]}
    with pytest.raises(MlopsError, match="^cannot split 2 rows by time into train/validation/holdout"):
        _run_split(SplitSpec(holdout=0.3, validation=0.5, order="time"), [0, 1], time=[2, 1])


def test_a_random_split_is_seeded_and_stratified_only_for_classification():
    y = [0] * 90 + [1] * 10
    parts, said = _run_split(SplitSpec(holdout=0.2, validation=0.25, seed=3), y)
    assert said == []
    assert sum(a >= 90 for a in parts["holdout"]) == 2 and sum(a >= 90 for a in parts["validation"]) == 2
    assert parts != _run_split(SplitSpec(holdout=0.2, validation=0.25, seed=4), y)[0]
    assert parts == _run_split(SplitSpec(holdout=0.2, validation=0.25, seed=3), y)[0]
    values = np.arange(100) * 1.5  # a regression target: never stratified, nothing to say
    parts, said = _run_split(SplitSpec(holdout=0.2, validation=0.25, seed=3), values, task="regression")
    assert said == [] and [len(p) for p in parts.values()] == [60, 20, 20]
    unstratified, _ = _run_split(SplitSpec(holdout=0.2, validation=0.25, seed=3, stratify=False), y)
    assert unstratified != _run_split(SplitSpec(holdout=0.2, validation=0.25, seed=3), y)[0]


def test_a_class_too_rare_to_stratify_is_split_at_random_and_said():
    y = [0] * 19 + [1]
    parts, said = _run_split(SplitSpec(holdout=0.2, validation=0.25, seed=1), y)
    assert [len(p) for p in parts.values()] == [12, 4, 4]
    assert said and said[0][0] == "split" and said[0][1].startswith("not stratified: ")
    with pytest.raises(MlopsError, match=r"^cannot split 1 rows into train/validation/holdout \(60%/20%/20%\): "):
        _run_split(SplitSpec(), [0])
    with pytest.raises(MlopsError, match=r"^cannot split 2 rows into train/validation/holdout \(60%/20%/20%\): "):
        _run_split(SplitSpec(), [0, 1])  # the second split, of the one row left, fails: the table's rows are named
    said = []
    with pytest.raises(MlopsError, match="^cannot split 1 rows into "):
        _run_split(SplitSpec(stratify=False), [0], said=said)
    assert said == [], "nothing to fall back to when not stratifying"
    from sklearn.model_selection import train_test_split

    rest, holdout = train_test_split(np.arange(20), test_size=0.2, random_state=1)
    train, validation = train_test_split(rest, test_size=0.5, random_state=1)
    parts, _ = _run_split(SplitSpec(holdout=0.2, validation=0.5, seed=1), y)
    assert parts == {"train": sorted(train), "validation": sorted(validation), "holdout": sorted(holdout)}, \
        "the random fallback keeps the seed"


def test_a_class_too_rare_for_the_validation_split_only_is_said_once():
    parts, said = _run_split(SplitSpec(holdout=0.5, validation=0.2, seed=0), [0] * 18 + [1] * 2)
    assert [len(p) for p in parts.values()] == [8, 2, 10] and sum(a >= 18 for a in parts["holdout"]) == 1
    assert len(said) == 1 and said[0][1].startswith("not stratified: The least populated class")


def test_a_time_split_keeps_the_row_order_among_equal_times():
    time = (np.arange(200) * 7) % 3
    parts, _ = _run_split(SplitSpec(holdout=0.1, validation=0.1, order="time"), [0, 1] * 100, time=time)
    order = np.argsort(time, kind="stable")
    assert parts["holdout"] == sorted(order[-20:]) and parts["validation"] == sorted(order[-38:-20])


def test_a_streamed_split_is_assigned_row_by_row_with_the_configured_fractions_and_seed():
    from mlops_framework.streamed import BLOCK, HOLDOUT, TRAIN, VALIDATION

    for task, stratified in (("binary", True), ("regression", False)):
        run = SimpleNamespace(results={"table": object(), "contract": SimpleNamespace(task=task)},
                              split=SplitSpec(holdout=0.2, validation=0.25, seed=7))
        split(run)
        row_split = run.results["row_split"]
        assert "splits" not in run.results and (row_split.seed, row_split.stratified) == (7, stratified)
        holdout = round(BLOCK * 0.2)
        assert row_split.counts[HOLDOUT] == holdout and row_split.counts[VALIDATION] == round((BLOCK - holdout) * 0.25)
        assert sum(row_split.counts.values()) == BLOCK and row_split.counts[TRAIN] > 0
    with pytest.raises(MlopsError, match=r"^stage 'split' needs 'contract', which no earlier stage"):
        split(SimpleNamespace(results={"table": object()}, split=SplitSpec()))


def test_trials_with_the_same_matrix_and_split_settings_share_one_split():
    from mlops_framework.shared_data import SharedData

    X = pd.DataFrame({"A": np.arange(20.0), "W1": np.arange(20), "W2": np.arange(20)[::-1]})
    y = pd.Series([0, 1] * 10)
    shared = SharedData()
    shared.results(None, "features", "the features' key", lambda: {"X": X})

    def trial(spec, matrix=X, time=None):
        said = []
        run = SimpleNamespace(results={"X": matrix, "y": y, "frame": matrix, "contract": SimpleNamespace(task="binary")},
                              split=spec, features=SimpleNamespace(time=time), shared=shared,
                              summarize=lambda key, line: said.append((key, line)))
        split(run)
        return run.results["splits"], said

    first, said = trial(SplitSpec(seed=1))
    assert said == []
    again, said = trial(SplitSpec(seed=1))
    assert again is first and said == [("reused", "data of an earlier trial in this process (same data and "
                                                   "settings): split")]
    other_seed, _ = trial(SplitSpec(seed=2))
    assert other_seed is not first
    assert trial(SplitSpec(seed=2), matrix=X.copy())[0] is not other_seed, "a matrix made elsewhere is split anew"
    by_w1, _ = trial(SplitSpec(order="time"), time="W1")
    by_w2, _ = trial(SplitSpec(order="time"), time="W2")
    assert by_w2 is not by_w1 and list(by_w2["holdout"][0]["A"]) != list(by_w1["holdout"][0]["A"])


def test_a_stage_without_its_input_names_itself():
    run = SimpleNamespace(results={}, split=SplitSpec())
    with pytest.raises(MlopsError, match=r"^stage 'split' needs 'X', which no earlier stage of this pipeline produced$"):
        split(run)


def test_split_fractions_are_described_as_shares():
    assert _fractions(SplitSpec(holdout=0.2, validation=0.25)) == "60%/20%/20%"
    assert _fractions(SplitSpec(holdout=0.1, validation=0.5)) == "45%/45%/10%"


def test_the_task_is_the_configured_one_unless_auto():
    spec = SimpleNamespace(task="multiclass", target="T")
    assert resolve_task(spec, "xgboost.XGBClassifier", pd.Series([0, 1])) == "multiclass"
    spec.task = "auto"
    assert resolve_task(spec, "xgboost.XGBRegressor", pd.Series([0, 1])) == "regression"
    assert resolve_task(spec, "xgboost.XGBClassifier", pd.Series([0, 1, 1])) == "binary"
    with pytest.raises(MlopsError, match="^target column 'T' has only one value"):
        resolve_task(spec, "xgboost.XGBClassifier", pd.Series([1, 1]))


def test_validation_metrics_use_the_threshold_inclusively():
    m = classification_metrics(np.array([0, 0, 1, 1]), np.array([0.1, 0.5, 0.5, 0.9]), 0.5)
    assert m["confusion_matrix"] == [[1, 1], [0, 2]] and m["rows"] == 4
    assert m["accuracy"] == 0.75 and m["roc_auc"] == pytest.approx(0.875)
    assert m["precision"] == pytest.approx((1 + 2 / 3) / 2) and m["recall"] == pytest.approx(0.75)
    assert m["f1"] == pytest.approx((2 / 3 + 0.8) / 2)
    assert m["classification_report"]["1"]["support"] == 2
    assert classification_metrics(np.array([1, 1]), np.array([0.2, 0.9]), 0.5)["roc_auc"] is None
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # undefined ratios are 0, silently (zero_division=0)
        one_class = classification_metrics(np.array([1, 1]), np.array([0.8, 0.9]), 0.5)
        never_predicted = classification_metrics(np.array([0, 1]), np.array([0.8, 0.9]), 0.5)
        never_true = classification_metrics(np.array([1, 1]), np.array([0.2, 0.9]), 0.5)
    assert one_class["confusion_matrix"] == [[0, 0], [0, 2]], "both labels, even when one is absent"
    assert one_class["classification_report"]["0"]["precision"] == 0.0
    assert one_class["classification_report"]["1"]["precision"] == 1.0
    assert never_predicted["precision"] == 0.25 and never_true["recall"] == 0.25


# ---------------------------------------------------------------- promotion gate (lifecycle.py)
from mlops_framework.alerts import Alert  # noqa: E402
from mlops_framework.lifecycle import drift_alerts, gate, mcnemar, paired_bootstrap  # noqa: E402
from mlops_framework.pipeline import PromotionSpec  # noqa: E402


def _vs(candidate, champion, metric="f1", task="binary", test=None, rows=1234):
    return {"task": task, "holdout_rows": rows, "candidate": {metric: candidate}, "test": test,
            "champion": None if champion is None else {metric: champion}}


def _alert(rule, metric="psi", version=None):
    return Alert(rule=rule, metric=metric, op=">", threshold=0.2, value=0.3, window_start=None, window_end=None,
                 model_version=version)


def test_the_gate_says_why_it_passes_or_refuses():
    assert gate(PromotionSpec(), _vs(0.8, None)) == (True, "gate passed: no champion holds PRODUCTION on 1,234 holdout rows")
    assert gate(PromotionSpec(promote_first=False, alias="STAGING"), _vs(0.8, None)) == (
        False, "refused: no version holds STAGING and promotion.promote_first is false on 1,234 holdout rows")
    assert gate(PromotionSpec(min_value=0.9), _vs(None, None)) == (
        False, "refused: f1 n/a < min_value 0.9 on 1,234 holdout rows")
    assert gate(PromotionSpec(min_value=0.9, min_improvement=0.1), _vs(0.5, 0.45)) == (
        False, "refused: f1 0.5000 < min_value 0.9; f1 0.5000 < champion's 0.4500 + 0.1 on 1,234 holdout rows")


def test_the_gate_follows_a_lower_is_better_metric():
    spec = PromotionSpec(metric="rmse", min_improvement=0.5, min_value=3.0)
    assert gate(spec, _vs(2.0, 2.5, "rmse", "regression")) == (
        True, "gate passed: rmse 2.0000 vs champion's 2.5000 - 0.5 on 1,234 holdout rows")
    assert gate(spec, _vs(2.1, 2.5, "rmse", "regression")) == (
        False, "refused: rmse 2.1000 > champion's 2.5000 - 0.5 on 1,234 holdout rows")
    assert gate(spec, _vs(3.0, None, "rmse", "regression"))[0]
    assert gate(spec, _vs(3.5, None, "rmse", "regression")) == (
        False, "refused: rmse 3.5000 > limit (min_value) 3.0 on 1,234 holdout rows")
    assert gate(PromotionSpec(), _vs(2.0, 2.5, "rmse", "regression"))[0], "the task's default metric"


def test_the_gate_on_a_paired_bootstrap_needs_the_lower_bound_strictly_above_the_margin():
    test = {"test": "paired bootstrap", "improvement": 0.05, "lower": 0.01, "upper": 0.09, "confidence": 0.9,
            "resamples": 200}
    interval = "f1 improvement +0.0500, 90% paired bootstrap interval [+0.0100, +0.0900] (200 resamples)"
    assert gate(PromotionSpec(), _vs(0.8, 0.75, test=test)) == (
        True, f"gate passed: {interval} above 0.0 on 1,234 holdout rows")
    assert gate(PromotionSpec(min_improvement=0.01), _vs(0.8, 0.75, test=test)) == (
        False, f"refused: {interval}: lower bound not above min_improvement 0.01 on 1,234 holdout rows")
    assert gate(PromotionSpec(), _vs(0.7, 0.75, test=test))[0], "the interval decides, not the point values"


def test_the_gate_with_mcnemar_needs_p_below_one_minus_confidence():
    def test(p):
        return {"test": "mcnemar", "p_value": p, "only_challenger_right": 9, "only_champion_right": 2}

    spec = PromotionSpec(confidence=0.9, test="mcnemar")
    assert gate(spec, _vs(0.8, 0.75, test=test(0.0999))) == (
        True, "gate passed: f1 0.8000 vs champion's 0.7500 + 0.0, McNemar p = 0.0999 (9 vs 2 rows) on 1,234 holdout rows")
    assert not gate(spec, _vs(0.8, 0.75, test=test(1 - 0.9)))[0], "p equal to 1 - confidence is not below it"
    passed, reason = gate(spec, _vs(0.8, 0.75, test=test(0.1)))
    assert not passed and reason == "refused: McNemar p = 0.1000 (9 vs 2 rows) not below 0.1 on 1,234 holdout rows"
    assert not gate(spec, _vs(0.7, 0.75, test=test(0.01)))[0], "a worse point value is refused whatever p says"


def test_the_gate_blocks_on_drift_alerts_only_when_asked_and_names_each_once():
    alerts = [_alert("psi_high", version="V2"), _alert("psi_high", version="V2"), _alert("js_high"),
              _alert("f1_low", metric="f1")]
    assert gate(PromotionSpec(), _vs(0.8, 0.7), alerts)[0]
    assert gate(PromotionSpec(block_on_drift_alert=True), _vs(0.8, 0.7), alerts) == (
        False, "refused: drift alert(s) on the champion's recent windows or in this run: js_high, psi_high (V2)"
               " on 1,234 holdout rows")
    assert gate(PromotionSpec(block_on_drift_alert=True), _vs(0.8, 0.7), [_alert("f1_low", metric="f1")])[0]


def test_drift_alerts_are_this_runs_alone_without_a_champion_monitor_or_blocking():
    mine = [_alert("psi_high")]
    run = SimpleNamespace(results={"alerts": mine}, monitor=object())
    assert drift_alerts(run, PromotionSpec(block_on_drift_alert=True), None) == mine
    assert drift_alerts(run, PromotionSpec(block_on_drift_alert=False), "V1") == mine
    assert drift_alerts(SimpleNamespace(results={}, monitor=None), PromotionSpec(block_on_drift_alert=True), "V1") == []


def test_drift_alerts_add_the_champions_recorded_ones_field_by_field(monkeypatch):
    from mlops_framework import monitoring

    row = {"RULE": "psi_high", "METRIC": "psi", "OP": ">", "THRESHOLD": 0.2, "VALUE": 0.4, "WINDOW_START": "w0",
           "WINDOW_END": "w1", "COLUMN_NAME": "A", "MODEL_NAME": "M", "MODEL_VERSION": "V1", "RUN_ID": "R"}
    asked = []
    monkeypatch.setattr(monitoring, "recorded_alerts", lambda *args: asked.append(args) or [row])
    mine = _alert("js_high")
    run = SimpleNamespace(results={"alerts": [mine]}, monitor="MONITOR", registration=SimpleNamespace(model_name="M"))
    alerts = drift_alerts(run, PromotionSpec(block_on_drift_alert=True, drift_windows=3), "V1")
    assert asked == [("MONITOR", "M", "V1", 3)]
    assert alerts == [mine, Alert(rule="psi_high", metric="psi", op=">", threshold=0.2, value=0.4, window_start="w0",
                                  window_end="w1", column="A", model_name="M", model_version="V1", run_id="R")]


def _accuracy(truth, predictions):
    return float(np.sum(truth == predictions)) / len(truth)


def test_paired_bootstrap_measures_both_on_the_same_draws_in_the_metrics_direction():
    truth = np.array([1, 0] * 50)
    champion = (np.where(np.arange(100) < 30, 1 - truth, truth),)  # wrong on 30 rows
    challenger = (np.where(np.arange(100) < 10, 1 - truth, truth),)  # wrong on 10 of the same rows
    result = paired_bootstrap(_accuracy, truth, champion, challenger, resamples=200, confidence=0.9, seed=1)
    assert result["improvement"] == pytest.approx(0.2) and 0 < result["lower"] < 0.2 < result["upper"]
    assert {k: result[k] for k in ("test", "confidence", "resamples", "rows")} == {
        "test": "paired bootstrap", "confidence": 0.9, "resamples": 200, "rows": 100}
    again = paired_bootstrap(_accuracy, truth, champion, challenger, resamples=200, confidence=0.9, seed=1)
    assert again == result
    assert paired_bootstrap(_accuracy, truth, champion, challenger, resamples=200, seed=2)["lower"] != result["lower"]
    wider = paired_bootstrap(_accuracy, truth, champion, challenger, resamples=200, confidence=0.99, seed=1)
    assert wider["lower"] < result["lower"] and wider["upper"] > result["upper"]
    error = paired_bootstrap(lambda t, p: 1 - _accuracy(t, p), truth, champion, challenger, higher_is_better=False,
                             resamples=200, confidence=0.9, seed=1)
    assert error["improvement"] == pytest.approx(0.2) and error["lower"] == pytest.approx(result["lower"])
    differences = []
    rng = np.random.default_rng(1)
    for _ in range(200):
        index = rng.integers(0, 100, 100)
        differences.append(_accuracy(truth[index], challenger[0][index]) - _accuracy(truth[index], champion[0][index]))
    assert result["lower"] == pytest.approx(np.quantile(differences, 0.05))
    assert result["upper"] == pytest.approx(np.quantile(differences, 0.95))


def test_paired_bootstrap_skips_undefined_draws_and_refuses_no_rows():
    truth = np.array([0, 1, 1, 0])
    calls = []

    def sometimes(t, p):
        calls.append(1)
        return None if len(calls) % 2 else float(np.mean(t == p))  # the challenger's value is None on every draw

    result = paired_bootstrap(sometimes, truth, (truth,), (truth,), resamples=5)
    assert np.isnan(result["improvement"]) and np.isnan(result["lower"]) and np.isnan(result["upper"])
    with pytest.raises(MlopsError, match="^the promotion gate has no holdout rows to compare on"):
        paired_bootstrap(_accuracy, [], ([],), ([],))


def test_mcnemar_counts_the_rows_only_one_gets_right():
    from scipy.stats import binomtest

    truth = np.array([1] * 20)
    champion = np.array([1] * 10 + [0] * 10)
    challenger = np.array([1] * 8 + [0] * 2 + [1] * 7 + [0] * 3)
    result = mcnemar(truth, champion, challenger)
    assert result == {"test": "mcnemar", "only_challenger_right": 7, "only_champion_right": 2,
                      "p_value": pytest.approx(binomtest(7, 9, 0.5, alternative="greater").pvalue), "rows": 20}
    assert mcnemar(truth, champion, champion)["p_value"] == 1.0
    assert paired_bootstrap(_accuracy, truth, (champion,), (challenger,))["resamples"] == 1000, "the default"
    tie = mcnemar([1] * 6, [1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1])
    assert tie["p_value"] == pytest.approx(binomtest(3, 6, 0.5, alternative="greater").pvalue) and tie["p_value"] < 1


# ---------------------------------------------------------------- alert rules (alerts.py)
from mlops_framework.alerts import AlertRule, build_rules, evaluate  # noqa: E402


def test_alert_rules_are_checked_one_message_each():
    for keys, message in [
        ({"metric": "auc"}, r"alerts.rules.r.metric 'auc' is unknown; use one of accuracy, "),
        ({"metric": "f1", "op": "=="}, r"alerts.rules.r.op '==' is unknown; use one of <, <=, >, >="),
        ({"metric": "f1", "window": "all"}, "alerts.rules.r.window must be new, last or any, not 'all'"),
        ({"metric": "f1", "columns": ["A"]}, "alerts.rules.r.columns applies to drift metrics only"),
        ({"metric": "f1", "against": "champion"}, "alerts.rules.r.against must be baseline or null, not 'champion'"),
        ({"metric": "psi", "against": "baseline"}, "alerts.rules.r.against: baseline applies to performance metrics"),
        ({"metric": "rows", "against": "baseline"}, "alerts.rules.r.against: baseline applies to performance metrics"),
    ]:
        with pytest.raises(MlopsError, match="^" + message):
            AlertRule(name="r", threshold=0.5, **keys)
    for metric in ("psi", "jensen_shannon", "hellinger", "wasserstein", "difference_of_means"):
        assert AlertRule(name="d", metric=metric, threshold=1, columns=["A"]).is_drift
    for metric in ("accuracy", "roc_auc", "rmse", "r2", "rows"):
        assert not AlertRule(name="p", metric=metric, threshold=1, window="any").is_drift
    assert AlertRule(name="p", metric="f1", threshold=1, against="baseline").against == "baseline"


def test_rules_are_built_from_config_skipping_switched_off_ones():
    rules = build_rules({"low": {"metric": "f1", "threshold": 0.5}, "off": None,
                         "psi": {"metric": "psi", "threshold": 0.2, "op": ">", "columns": ["A"]}})
    assert [(r.name, r.metric, r.op, r.threshold, r.columns) for r in rules] == [
        ("low", "f1", "<", 0.5, None), ("psi", "psi", ">", 0.2, ["A"])]
    assert build_rules(None) == [] and build_rules({}) == []
    with pytest.raises(MlopsError, match=r"^unknown key alerts.rules.low.treshold \(did you mean 'threshold'\?\)"):
        build_rules({"low": {"metric": "f1", "threshold": 0.5, "treshold": 1}})


def _window(start, version="V1", **metrics):
    return {"window_start": start, "window_end": start + 7, "model_version": version, **metrics}


def test_rules_fire_per_window_op_and_version():
    result = {"model_name": "M", "run_id": "R", "performance": [
        _window(0, f1=0.4, rows=100), _window(7, f1=0.5, rows=100), _window(14, f1=0.6, rows=100),
        _window(7, "V2", f1=0.45, rows=100)]}
    fired = evaluate([AlertRule(name="low", metric="f1", threshold=0.5, window="any")], result)
    assert [(a.window_start, a.model_version, a.value) for a in fired] == [(0, "V1", 0.4), (7, "V2", 0.45)]
    assert (fired[0].model_name, fired[0].run_id, fired[0].column, fired[0].op, fired[0].threshold) == (
        "M", "R", None, "<", 0.5)
    fired = evaluate([AlertRule(name="low", metric="f1", threshold=0.5, op="<=", window="any")], result)
    assert [a.window_start for a in fired] == [0, 7, 7]
    fired = evaluate([AlertRule(name="high", metric="f1", threshold=0.5, op=">=", window="last")], result)
    assert [(a.window_start, a.model_version) for a in fired] == [(14, "V1")]
    fired = evaluate([AlertRule(name="low", metric="f1", threshold=0.5, window="last")], result)
    assert [(a.window_start, a.model_version) for a in fired] == [(7, "V2")], "the last window of each version"
    fired = evaluate([AlertRule(name="few", metric="rows", threshold=100, op=">")], result)
    assert fired == []
    assert fired == evaluate([AlertRule(name="gt", metric="f1", threshold=0.6, op=">", window="any")], result)


def test_rules_on_new_windows_skip_those_fired_before_and_missing_values():
    result = {"model_version": "V9", "performance": [
        {"window_start": 0, "window_end": 7, "f1": 0.1}, {"window_start": 7, "window_end": 14, "f1": 0.2},
        {"window_start": 14, "window_end": 21, "f1": None}, {"window_start": 21, "window_end": 28, "f1": float("nan")}]}
    rule = AlertRule(name="low", metric="f1", threshold=0.5)
    fired = evaluate([rule], result, already={("low", "V9", 0, None)})
    assert [(a.window_start, a.model_version, a.window_end) for a in fired] == [(7, "V9", 14)]
    assert len(evaluate([AlertRule(name="low", metric="f1", threshold=0.5, window="any")], result,
                        already={("low", "V9", 0, None)})) == 2


def test_drift_rules_watch_features_or_the_named_columns_by_absolute_value():
    drift = [{"window_start": 0, "window_end": 7, "column": "A", "role": "feature", "psi": 0.3,
              "difference_of_means": -2.0},
             {"window_start": 0, "window_end": 7, "column": "PREDICTED_SCORE", "role": "prediction", "psi": 0.5,
              "difference_of_means": 0.1}]
    result = {"performance": [], "drift": drift}
    fired = evaluate([AlertRule(name="psi", metric="psi", threshold=0.2, op=">")], result)
    assert [(a.column, a.value) for a in fired] == [("A", 0.3)]
    fired = evaluate([AlertRule(name="psi", metric="psi", threshold=0.2, op=">", columns=["PREDICTED_SCORE"])], result)
    assert [a.column for a in fired] == ["PREDICTED_SCORE"]
    fired = evaluate([AlertRule(name="dm", metric="difference_of_means", threshold=1, op=">", absolute=True)], result)
    assert [(a.column, a.value) for a in fired] == [("A", -2.0)]
    assert evaluate([AlertRule(name="dm", metric="difference_of_means", threshold=1, op=">")], result) == []
    assert evaluate([AlertRule(name="psi", metric="psi", threshold=0.2, op=">", window="new")], result,
                    already={("psi", None, 0, "A")}) == []


def test_rules_against_the_baseline_compare_the_change():
    result = {"performance": [
        {"window_start": 0, "window_end": 7, "f1": 0.6, "baseline": {"f1": 0.8}},
        {"window_start": 7, "window_end": 14, "f1": 0.75, "baseline": {"f1": 0.8}},
        {"window_start": 14, "window_end": 21, "f1": 0.1, "baseline": {}},
        {"window_start": 21, "window_end": 28, "f1": 0.1}]}
    fired = evaluate([AlertRule(name="drop", metric="f1", threshold=-0.1, against="baseline", window="any")], result)
    assert [(a.window_start, round(a.value, 6), a.baseline) for a in fired] == [(0, -0.2, 0.8)]
    assert fired[0].message.startswith("drop: f1 - baseline's 0.8 = -0.2 < -0.1 in window 0..7")


# ---------------------------------------------------------------- monitoring math (monitoring.py)
from mlops_framework import monitoring as M  # noqa: E402


def test_roc_auc_counts_ties_half_and_needs_both_classes():
    assert M.roc_auc([0, 1], [0.2, 0.8]) == 1.0 and M.roc_auc([0, 1], [0.8, 0.2]) == 0.0
    assert M.roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.1, 0.9]) == 0.875
    assert M.roc_auc([0, 0, 1], [0.3, 0.2, 0.9]) == 1.0
    assert M.roc_auc([1, 1], [0.2, 0.8]) is None and M.roc_auc([0, 0], [0.2, 0.8]) is None
    assert M.auc_from_buckets([(0.9, 1, 0), (0.5, 1, 1), (0.1, 0, 1)]) == 0.875
    assert M.auc_from_buckets([(0.2, 0, 2), (0.8, 3, 0)]) == 1.0
    assert M.auc_from_buckets([(0.2, 2, 0), (0.8, 0, 3)]) == 0.0
    assert M.auc_from_buckets([(0.5, 1, 0)]) is None and M.auc_from_buckets([(0.5, 0, 1)]) is None


def test_classification_summary_binary_macro_and_zero_division():
    y, pred = [1, 1, 1, 0, 0], [1, 1, 0, 1, 0]
    binary = M.classification_summary(y, pred, average="binary")
    assert binary == {"rows": 5, "accuracy": 0.6, "precision": 2 / 3, "recall": 2 / 3, "f1": pytest.approx(2 / 3),
                      "roc_auc": None, "tn": 1, "fp": 1, "fn": 1, "tp": 2}
    macro = M.classification_summary(y, pred, scores=[0.9, 0.8, 0.3, 0.6, 0.1])
    assert macro["precision"] == pytest.approx((2 / 3 + 1 / 2) / 2) and macro["recall"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert macro["f1"] == pytest.approx((2 / 3 + 1 / 2) / 2) and macro["roc_auc"] == pytest.approx(5 / 6)
    none = M.classification_summary([0, 0], [0, 0], average="binary")
    assert (none["precision"], none["recall"], none["f1"], none["accuracy"]) == (0.0, 0.0, 0.0, 1.0)
    assert M.classification_summary([], [])["accuracy"] == 0.0
    with pytest.raises(MlopsError, match="^monitor.average must be macro or binary, not 'micro'"):
        M.classification_summary(y, pred, average="micro")


def test_metrics_from_confusion_counts():
    counts = {(1, 1): 2, (1, 0): 1, (0, 1): 1, (0, 0): 1}
    binary = M.metrics_from_confusion(counts, average="binary")
    assert binary == {"rows": 5, "accuracy": 0.6, "precision": 2 / 3, "recall": 2 / 3, "f1": pytest.approx(2 / 3),
                      "tn": 1, "fp": 1, "fn": 1, "tp": 2}
    flipped = M.metrics_from_confusion(counts, positive=0, average="binary")
    assert (flipped["precision"], flipped["recall"], flipped["tp"], flipped["tn"], flipped["fp"], flipped["fn"]) == (
        0.5, 0.5, 1, 2, 1, 1)
    macro = M.metrics_from_confusion(counts, classes=[0, 1])
    assert macro["precision"] == pytest.approx((2 / 3 + 1 / 2) / 2) and macro["f1"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    three = M.metrics_from_confusion({("a", "a"): 2, ("b", "c"): 1, ("c", "c"): 1})
    assert three["precision"] == pytest.approx((1 + 0 + 0.5) / 3) and three["recall"] == pytest.approx((1 + 0 + 1) / 3)
    assert "tp" not in three and three["accuracy"] == 0.75
    empty = M.metrics_from_confusion({}, classes=[])
    assert empty == {"rows": 0, "accuracy": 0.0, "precision": 0.0, "recall": 0.0, "f1": 0.0}
    with pytest.raises(MlopsError, match="^monitor.average must be macro or binary, not 'weighted'"):
        M.metrics_from_confusion(counts, average="weighted")


def test_bins_are_learned_from_the_baseline_and_values_on_an_edge_go_up():
    assert list(M.bin_edges([0, 1, 2, 3, 4, np.nan], bins=4)) == [1, 2, 3]
    assert list(M.bin_edges([0, 1, 2, 10], bins=2, binning="uniform")) == [5]
    assert list(M.bin_edges([0, None, 1, 2, 3, 4], bins=4)) == [1, 2, 3], "None is missing, as NaN"
    assert list(M.histogram([0, None, 2], [1])) == [0.5, 0.5]
    assert M.wasserstein([0, None, 1], [2, None, 3]) == 2.0
    assert M.bin_edges(np.arange(101)) == pytest.approx([10, 20, 30, 40, 50, 60, 70, 80, 90]), "ten bins by default"
    assert len(M.drift(np.arange(101), [1], kind="numeric")["bins"]) == 10
    assert len(M.learn_categories(list("abcdefghijkl"))) == 10 and len(M.drift(list("abcdefghijkl"), ["a"],
                                                                             kind="categorical")["bins"]) == 10
    assert list(M.bin_edges([1, 1, 1], bins=4)) == [] and list(M.bin_edges([np.nan])) == []
    with pytest.raises(MlopsError, match="^monitor.binning must be quantile or uniform, not 'log'"):
        M.bin_edges([1, 2], binning="log")
    assert list(M.histogram([0, 1, 1.5, 2, 3, np.nan], [1, 2])) == [0.2, 0.4, 0.4]
    assert list(M.histogram([np.nan], [1])) == [0.0, 0.0] and M.histogram([], [1]).dtype == float


def test_category_shares_and_the_pooled_rest():
    assert list(M.frequencies(["a", "b", "a", "z"], ["a", "b"])) == [0.5, 0.25]
    assert list(M.frequencies([None, "a"], [None, "a"])) == [0.5, 0.5]
    assert list(M.frequencies([], ["a"])) == [0.0] and M.frequencies([], ["a"]).dtype == float
    assert M.learn_categories(["b", "a", "b", None, None, None]) == [None, "b", "a"]
    assert M.learn_categories(list("aaabbc"), bins=3) == ["a", "b", "c"]
    assert M.learn_categories(list("aaabbcd"), bins=3) == ["a", "b", M.OTHER]
    assert M.learn_categories(list("aab"), bins=1) == ["a", M.OTHER]


def test_distances_between_distributions():
    assert M.psi([0.5, 0.5], [0.5, 0.5]) == 0.0
    assert M.psi([0.25, 0.75], [0.5, 0.5]) == pytest.approx(0.25 * np.log(2) - 0.25 * np.log(2 / 3))
    assert M.psi([0.0, 1.0], [0.5, 0.5]) == pytest.approx((0.5 - 1e-4) * np.log(0.5 / 1e-4) - 0.5 * np.log(0.5))
    assert M.psi([0.0, 1.0], [0.5, 0.5], epsilon=0.01) == pytest.approx(0.49 * np.log(50) - 0.5 * np.log(0.5))
    assert M.jensen_shannon([1, 0], [0, 1]) == 1.0 and M.jensen_shannon([2, 2], [1, 1]) == 0.0
    assert M.jensen_shannon([3, 1], [1, 1]) == pytest.approx(M.jensen_shannon([0.75, 0.25], [0.5, 0.5]))
    assert M.hellinger([1, 0], [0, 1]) == 1.0 and M.hellinger([0.5, 0.5], [0.5, 0.5]) == 0.0
    assert M.hellinger([0.25, 0.75], [0.75, 0.25]) == pytest.approx(np.sqrt(1 - 2 * np.sqrt(0.1875)))
    assert M.wasserstein([0, 1, np.nan], [2, 3]) == 2.0 and M.wasserstein([1, 2, 3], [1, 2, 3]) == 0.0
    assert M.wasserstein([0, 4], [1]) == 2.0
    assert M.wasserstein([np.nan], [1]) is None and M.wasserstein([1], []) is None
    assert M.wasserstein_from_quantiles([0, 1, 2], [1, 1, 4]) == 1.0
    for p, q in ([], [1]), ([1], None), (None, [1]):
        assert M.wasserstein_from_quantiles(p, q) is None


def test_numeric_drift_reports_every_metric_on_the_baselines_bins():
    result = M.drift([0, 1, 2, 3, np.nan], [2, 3, 3, np.nan], kind="numeric", bins=2)
    assert result["bins"] == ["< 1.5", ">= 1.5"] and result["baseline_hist"] == [0.5, 0.5]
    assert result["current_hist"] == [0.0, 1.0] and result["null_share"] == 0.25
    assert result["difference_of_means"] == pytest.approx(8 / 3 - 1.5)
    assert result["wasserstein"] == pytest.approx(M.wasserstein([0, 1, 2, 3], [2, 3, 3]))
    assert result["psi"] == pytest.approx(M.psi([0.5, 0.5], [0, 1]))
    assert result["hellinger"] == pytest.approx(M.hellinger([0.5, 0.5], [0, 1]))
    assert result["jensen_shannon"] == pytest.approx(M.jensen_shannon([0.5, 0.5], [0, 1]))
    with_none = M.drift([0, 1, None, 2, 3], [None, 2, 3, 3], kind="numeric", bins=2)
    assert with_none["current_hist"] == [0.0, 1.0] and with_none["null_share"] == 0.25
    fixed = M.drift([0, 1, 2, 3], [2, 3], kind="numeric", edges=np.array([1.0, 2.5]))
    assert fixed["bins"] == ["< 1", "1 - 2.5", ">= 2.5"] and fixed["current_hist"] == [0.0, 0.5, 0.5]
    uniform = M.drift([0, 1, 2, 10], [9], kind="numeric", bins=2, binning="uniform")
    assert uniform["bins"] == ["< 5", ">= 5"]
    empty = M.drift([1.0, 2.0], [], kind="numeric")
    assert (empty["psi"], empty["jensen_shannon"], empty["hellinger"], empty["wasserstein"],
            empty["difference_of_means"], empty["null_share"]) == (None, None, None, None, None, None)
    flat = M.drift([1.0, 1.0], [1.0], kind="numeric")
    assert flat["bins"] == ["all"] and flat["psi"] == 0.0


def test_categorical_drift_pools_rare_categories_and_adds_new_ones():
    result = M.drift(["a", "a", "b", None], ["a", "c", None, None], kind="categorical")
    assert result["bins"] == ["a", "b", "(null)", "c"]
    assert result["baseline_hist"] == [0.5, 0.25, 0.25, 0.0] and result["current_hist"] == [0.25, 0.0, 0.5, 0.25]
    assert result["null_share"] == 0.5 and result["difference_of_means"] is None and result["wasserstein"] is None
    assert result["psi"] == pytest.approx(M.psi([0.5, 0.25, 0.25, 0.0], [0.25, 0.0, 0.5, 0.25]))
    pooled = M.drift(list("aaabbcd") + [None], ["a", "d", "e", None], kind="categorical", bins=3)
    assert pooled["bins"] == ["a", "b", M.OTHER]
    assert pooled["baseline_hist"] == [3 / 8, 2 / 8, 3 / 8] and pooled["current_hist"] == [0.25, 0.0, 0.75]
    with_null = M.drift(["a", None, None, "b", "c"], [None, "c"], kind="categorical", categories=[None, "a", M.OTHER])
    assert with_null["baseline_hist"] == [0.4, 0.2, 0.4] and with_null["current_hist"] == [0.5, 0.0, 0.5]
    rates = M.drift([0, 0, 1, 1], [1, 1, 1, 0], kind="categorical")
    assert rates["difference_of_means"] == 0.25 and rates["bins"] == ["0", "1"]
    empty = M.drift(["a"], [], kind="categorical")
    assert (empty["psi"], empty["null_share"], empty["difference_of_means"]) == (None, None, None)


def test_windows_start_on_mondays_and_widths_are_checked():
    starts, width = M.window_starts(["2024-01-01 00:00", "2024-01-07 23:59", "2024-01-08 00:00"])
    assert [str(s.date()) for s in starts] == ["2024-01-01", "2024-01-01", "2024-01-08"] and width.days == 7
    starts, _ = M.window_starts(pd.Series(pd.to_datetime(["2024-01-08 02:00"]).tz_localize("Europe/Paris")))
    assert str(starts[0]) == "2024-01-08 00:00:00", "a zoned time is bucketed in UTC (01:00 UTC on the 8th)"
    starts, _ = M.window_starts(pd.Series(pd.to_datetime(["2024-01-08 00:30"]).tz_localize("Europe/Paris")))
    assert str(starts[0]) == "2024-01-01 00:00:00"
    starts, width = M.window_starts(["2024-01-02 13:00"], window="1 day", origin="2024-01-01 12:00")
    assert str(starts[0]) == "2024-01-02 12:00:00" and width == pd.Timedelta("1 day")
    with pytest.raises(MlopsError, match="^monitor.window must be positive, not '0 days'"):
        M.window_starts(["2024-01-01"], window="0 days")
    with pytest.raises(MlopsError, match="^monitor.window 'weekly' / origin '2000-01-03': "):
        M.window_starts(["2024-01-01"], window="weekly")


def test_a_config_sql_fragment_must_be_one_expression():
    assert M.check_expression("WEEK <= 3", "monitor.baseline") == "WEEK <= 3"
    assert M.check_expression("WEEK <= 3 -- note", "monitor.baseline") == "WEEK <= 3"
    with pytest.raises(MlopsError, match="monitor.baseline"):
        M.check_expression("1; DROP TABLE T", "monitor.baseline")


# ---------------------------------------------------------------- sinks: which rows a re-scoring replaces
import datetime as dt  # noqa: E402

import pyarrow as pa  # noqa: E402

from mlops_local import sinks as S  # noqa: E402


def test_what_was_replaced_is_described_with_runs_of_keys():
    assert S.describe_replaced(["WEEK"], {}, {}) is None
    replaced = {(1,): 10, (2,): 10, (3,): 5, (5,): 1, (7,): 2, (8,): 2}
    written = {(1,): 11, (2,): 9, (5,): 3, (9,): 100}
    assert S.describe_replaced(["WEEK"], replaced, written) == "WEEK 1-3, 5, 7-8: 30 rows -> 23"
    assert S.describe_replaced(["WEEK"], {(4,): 1000}, {(4,): 1300}) == "WEEK 4: 1,000 rows -> 1,300"
    assert S.describe_replaced(["R"], {("b",): 1, ("a",): 2}, {}) == "R a, b: 3 rows -> 0"
    many = {(w, "x"): 1 for w in (9, 10, 11, 12, 13, 14, 15)}
    assert S.describe_replaced(["W", "C"], many, many) == "W/C 9/x, 10/x, 11/x, 12/x, 13/x and 2 more: 7 rows -> 7"
    five = {(w, "x"): 1 for w in range(5)}
    assert S.describe_replaced(["W", "C"], five, {}) == "W/C 0/x, 1/x, 2/x, 3/x, 4/x: 5 rows -> 0"
    six = {(w, "x"): 1 for w in range(6)}
    assert S.describe_replaced(["W", "C"], six, {}) == "W/C 0/x, 1/x, 2/x, 3/x, 4/x and 1 more: 6 rows -> 0"


def test_replaced_keys_are_listed_in_their_natural_order_missing_values_first():
    signed = {(-5, "x"): 1, (-10, "x"): 1, (3, "x"): 1}
    assert S.describe_replaced(["W", "C"], signed, {}) == "W/C -10/x, -5/x, 3/x: 3 rows -> 0"
    assert S.describe_replaced(["F"], {(0.5,): 1, (1e-05,): 1, (None,): 1}, {}) == "F None, 1e-05, 0.5: 3 rows -> 0"
    assert S.describe_replaced(["R"], {("a",): 1, (None,): 2}, {}) == "R None, a: 3 rows -> 0"


def test_partition_counts_and_slices_keep_nulls_and_first_appearance_order():
    batch = pa.record_batch({"W": [2, 1, 2, None, 1], "C": ["a", "b", "a", "c", "x"], "V": [0, 1, 2, 3, 4]})
    counts = S._partition_counts(batch, ["W"])
    assert counts == {(2,): 2, (1,): 2, (None,): 1} and list(counts) == [(2,), (1,), (None,)]
    counts = S._partition_counts(pa.Table.from_batches([batch]), ["W", "C"])
    assert counts == {(2, "a"): 2, (1, "b"): 1, (None, "c"): 1, (1, "x"): 1}
    assert list(counts) == [(2, "a"), (1, "b"), (None, "c"), (1, "x")]
    assert S._partition_counts(batch.slice(0, 0), ["W"]) == {}
    parts = [(key, part.column("V").to_pylist()) for key, part in S._split_by_partition(batch, ["W"])]
    assert parts == [((2,), [0, 2]), ((1,), [1, 4]), ((None,), [3])]
    parts = [(key, part.column("V").to_pylist()) for key, part in S._split_by_partition(batch, ["W", "C"])]
    assert parts == [((2, "a"), [0, 2]), ((1, "b"), [1]), ((None, "c"), [3]), ((1, "x"), [4])]
    ordered = pa.record_batch({"W": [1, 1, 2], "V": [0, 1, 2]})
    assert [(k, p.column("V").to_pylist()) for k, p in S._split_by_partition(ordered, ["W"])] == [
        ((1,), [0, 1]), ((2,), [2])]
    coded = pa.record_batch({"W": pa.array(["b", "a", "b"]).dictionary_encode(), "V": [0, 1, 2]})
    assert [(k, p.column("V").to_pylist()) for k, p in S._split_by_partition(coded, ["W"])] == [
        (("b",), [0, 2]), (("a",), [1])]
    chunked = pa.table({"W": pa.chunked_array([[3], [3, 4]]), "V": [0, 1, 2]})
    assert [(k, p.column("V").to_pylist()) for k, p in S._split_by_partition(chunked, ["W"])] == [
        ((3,), [0, 1]), ((4,), [2])]
    assert list(S._split_by_partition(batch.slice(0, 0), ["W"])) == []
    one = pa.record_batch({"W": [5], "V": [9]})
    assert [(k, p.num_rows) for k, p in S._split_by_partition(one, ["W"])] == [((5,), 1)]


def test_rows_already_grouped_by_key_are_sliced_without_a_copy():
    for columns in (["W"], ["W", "C"]):
        batch = pa.record_batch({"W": [1, 1, 2, 2, 2], "C": ["a", "a", "b", "b", "b"], "V": [0, 1, 2, 3, 4]})
        values = batch.column("V").buffers()[1].address
        parts = list(S._split_by_partition(batch, columns))
        assert [p.column("V").to_pylist() for _, p in parts] == [[0, 1], [2, 3, 4]]
        assert [p.column("V").buffers()[1].address for _, p in parts] == [values, values], columns


def test_partition_directory_names():
    assert S._partition_segment(None) == "__HIVE_DEFAULT_PARTITION__"
    assert S._partition_segment(dt.date(2024, 1, 2)) == "2024-01-02"
    assert S._partition_segment(dt.datetime(2024, 1, 2, 3, 4)) == "2024-01-02T03:04:00"
    assert S._partition_segment("a b/c%d:e-f_g.h") == "a b%2Fc%25d:e-f_g.h"
    assert S._partition_segment(7) == "7"


def _duckdb_rows(path, table="P"):
    import duckdb

    with duckdb.connect(str(path)) as con:
        return sorted(con.execute(f"SELECT * FROM {table}").fetchall(), key=str)


def test_rescoring_replaces_exactly_the_partitions_written_null_key_included(tmp_path):
    path = tmp_path / "w.duckdb"
    sink = S.DuckDBSink(path, table="P", partition_by=["W", "C"])
    with sink.open() as writer:
        writer.write(pa.table({"W": [1, 1, 2, None, None], "C": ["a", "b", "a", "a", None], "V": [1, 2, 3, 4, 5]}))
    with sink.open() as writer:
        writer.write(pa.record_batch({"W": [1, None], "C": ["a", None], "V": [10, 50]}))
        writer.write(pa.record_batch({"W": [1], "C": ["a"], "V": [11]}))
    assert _duckdb_rows(path) == sorted([(1, "a", 10), (1, "a", 11), (1, "b", 2), (2, "a", 3), (None, "a", 4),
                                         (None, None, 50)], key=str)
    assert writer.replaced == {(1, "a"): 1, (None, None): 1}
    assert writer.written == {(1, "a"): 2, (None, None): 1}
    assert writer.describe_replaced() == "W/C None/None, 1/a: 2 rows -> 3"
    with S.DuckDBSink(path, table="P").open() as whole:
        whole.write(pa.table({"W": [7], "C": ["z"], "V": [0]}))
    assert _duckdb_rows(path) == [(7, "z", 0)] and whole.describe_replaced() is None
    with S.DuckDBSink(path, table="P").open():
        pass
    assert _duckdb_rows(path) == [(7, "z", 0)], "no batch: the table stays as it was"


def test_rescoring_matches_keys_of_a_dictionary_encoded_partition_column(tmp_path):
    path = tmp_path / "w.duckdb"
    sink = S.DuckDBSink(path, table="P", partition_by=["C"])
    for values in (["a", "b", "a"], ["a"]):
        with sink.open() as writer:
            writer.write(pa.table({"C": pa.array(values).dictionary_encode(), "V": range(len(values))}))
    assert _duckdb_rows(path) == [("a", 0), ("b", 1)]
    assert writer.describe_replaced() == "C a: 2 rows -> 1"


# ---------------------------------------------------------------- registry: aliases replayed from history
import json  # noqa: E402

from mlops_local import registry as R  # noqa: E402


def _model_dir(tmp_path, versions=("v1", "v2", "v3")):
    model = tmp_path / "M"
    (model / "versions").mkdir(parents=True)
    for name in versions:
        (model / "versions" / name).mkdir()
        (model / "versions" / name / "version.json").write_text(json.dumps({"version_name": name, "files": {}}))
    (model / "model.json").write_text(json.dumps({"name": "M", "tags": {}}))
    return model


def _history(model, *entries, torn=""):
    (model / "history.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries) + torn)


def test_history_is_read_line_by_line_skipping_a_torn_last_line(tmp_path):
    model = _model_dir(tmp_path)
    assert R._read_history(model) == []
    _history(model, {"alias": "P", "new_version": "v1"}, torn='{"alias": "P", "new_ver')
    assert R._read_history(model) == [{"alias": "P", "new_version": "v1"}]
    (model / "history.jsonl").write_text('{"alias": "P"}\n\n{"alias": "Q"}\n')
    assert R._read_history(model) == [{"alias": "P"}, {"alias": "Q"}]
    for bad in ('{"alias": "P"}\nnot json\n', '{"alias": "P"}\n[1, 2]\n'):
        (model / "history.jsonl").write_text(bad)
        with pytest.raises(MlopsError, match=r"history.jsonl line 2 is not a history record; repair or remove"):
            R._read_history(model)


def test_aliases_are_the_file_with_the_history_replayed_over_it(tmp_path):
    model = _model_dir(tmp_path)
    assert R._current_aliases(model) == {}
    (model / "aliases.json").write_text(json.dumps({"STAGING": "v1", "PRODUCTION": "v1"}))
    _history(model, {"alias": "PRODUCTION", "new_version": "v2", "event": "set"},
             {"alias": "PRODUCTION", "new_version": "v3", "event": "refused"},
             {"alias": "STAGING", "new_version": None, "event": "unset"},
             {"alias": None, "old_version": "v9", "new_version": None, "event": "deleted"},
             {"alias": "CANARY", "new_version": None, "event": "unset"},
             {"alias": "CANARY", "new_version": "v3", "event": "set"})
    assert R._current_aliases(model) == {"CANARY": "v3", "PRODUCTION": "v2"}
    assert list(R._current_aliases(model)) == ["CANARY", "PRODUCTION"]
    (model / "aliases.json").write_text(json.dumps(["v1"]))
    with pytest.raises(MlopsError, match="aliases.json is not an alias map; repair or remove it"):
        R._current_aliases(model)
    for target in ("../../etc", 3):
        (model / "aliases.json").write_text(json.dumps({"PRODUCTION": target}))
        _history(model)
        with pytest.raises(MlopsError, match=r"alias 'PRODUCTION' in .*aliases\.json points at .*, which is not a versi"):
            R._current_aliases(model)


def test_version_numbers_never_go_back_and_list_naturally(tmp_path):
    model = _model_dir(tmp_path, ("v1", "v2", "v10", "best"))
    assert R._next_version(model) == "v11"
    (model / "model.json").write_text(json.dumps({"last_version_number": 12}))
    assert R._next_version(model) == "v13"
    empty = _model_dir(tmp_path / "e", ())
    assert R._next_version(empty) == "v1"
    assert R._listing(["v10", "best", "v2", "alpha", "v1"]) == "v1, v2, v10, alpha, best"
    assert R._listing([]) == "(none)"


def test_rollback_walks_back_and_resolving_follows_aliases_case_insensitively(tmp_path):
    _model_dir(tmp_path)
    registry = R.LocalRegistry(tmp_path)
    for version in ("v1", "v2", "v3"):
        registry.set_alias("M", version, "production", actor="me")
    assert registry.aliases("M") == {"PRODUCTION": "v3"}
    entry = registry.rollback("M", "production", actor="me")
    assert (entry["alias"], entry["old_version"], entry["new_version"], entry["event"], entry["reason"]) == (
        "PRODUCTION", "v3", "v2", "rollback", "rollback from v3")
    assert registry.rollback("M", "PRODUCTION", reason="bad week")["new_version"] == "v1"
    assert registry.aliases("M") == {"PRODUCTION": "v1"}
    assert registry.get_version("M", "Production")["version_name"] == "v1"
    assert registry.get_version("M", "v2")["version_name"] == "v2"
    with pytest.raises(MlopsError, match=r"^alias 'PRODUCTION' of model 'M' holds v1 and has no earlier version"):
        registry.rollback("M", "PRODUCTION")
    with pytest.raises(MlopsError, match=r"^alias 'STAGING' of model 'M' is not set and has no earlier version"):
        registry.rollback("M", "staging")
    with pytest.raises(MlopsError, match=r"^model 'M' has no version or alias 'nope'; versions: v1, v2, v3; "
                                         r"aliases: PRODUCTION"):
        registry.get_version("M", "nope")
    registry.set_alias("M", "v3", "STAGING")
    import shutil

    shutil.rmtree(tmp_path / "M" / "versions" / "v3")
    with pytest.raises(MlopsError, match=r"^alias 'STAGING' of model 'M' points at version 'v3', which no longer exists"):
        registry.get_version("M", "staging")
    entry = registry.unset_alias("M", "staging")
    assert (entry["event"], entry["old_version"], entry["new_version"]) == ("unset", "v3", None)
    assert registry.aliases("M") == {"PRODUCTION": "v1"}
    assert json.loads((tmp_path / "M" / "aliases.json").read_text()) == {"PRODUCTION": "v1"}


# ---------------------------------------------------------------- the Optuna sweeper's search space
import optuna.distributions as od  # noqa: E402

from hydra_plugins.mlops_optuna_sweeper.sweeper import SweepConfigError  # noqa: E402


def test_the_search_space_comes_from_params_with_the_command_line_winning():
    space, keys, fixed = search_space(
        {"model.params.max_depth": "range(2, 8, 2)", "model.params.eta": "tag(log, interval(0.01, 0.3))",
         "+model.params.booster": "choice(gbtree, dart)", "model.params.gamma": "interval(0, 1)",
         "model.params.n_estimators": "tag(int, interval(10, 50))", "model.threshold": "0.4"},
        ["model.params.gamma=choice(0, 1)", "split.seed=3", "model.params.subsample=range(0.5, 1.0, 0.25)"])
    assert space == {
        "model.params.max_depth": od.IntDistribution(2, 6, step=2),
        "model.params.eta": od.FloatDistribution(0.01, 0.3, log=True),
        "model.params.booster": od.CategoricalDistribution(["gbtree", "dart"]),
        "model.params.gamma": od.CategoricalDistribution([0, 1]),
        "model.params.n_estimators": od.IntDistribution(10, 50),
        "model.params.subsample": od.FloatDistribution(0.5, 0.75, step=0.25),
    }
    assert keys["model.params.booster"] == "+model.params.booster" and keys["model.params.eta"] == "model.params.eta"
    assert fixed == ["model.threshold=0.4", "split.seed=3"]
    assert search_space(None, []) == ({}, {}, [])


@pytest.mark.parametrize("value, message", [
    ("choice([1], 2)", "choices must be plain values without tags"),
    ("tag(log, choice(1, 2))", "choices must be plain values without tags"),
    ("range(5, 1)", "is empty or tagged log"),
    ("tag(log, range(1, 5))", "is empty or tagged log"),
    ("glob(*)", "unsupported sweep"),
])
def test_search_spaces_optuna_cannot_take_are_refused(value, message):
    # by name: Hydra's plugin scan executes the sweeper's module again, so the class can be another object
    with pytest.raises(Exception, match=f"^search space model.params.x: (.* )?{message}") as refused:
        search_space({"model.params.x": value}, [])
    assert type(refused.value).__name__ == SweepConfigError.__name__


def test_role_messages_name_the_key_every_unknown_column_and_every_reason():
    frame = pd.DataFrame({f"C{i}": [0, 1] for i in range(35)})
    with pytest.raises(MlopsError, match="^features.exclude must be a list of column names, got 3"):
        F.infer_roles(frame, target="C0", exclude=3)
    with pytest.raises(MlopsError, match="^features.categorical must be a list of column names, got 3"):
        F.infer_roles(frame, target="C0", categorical=3)
    with pytest.raises(MlopsError, match="^features.time names 'X', not a column"):
        F.infer_roles(frame, target="C0", time="X")
    with pytest.raises(MlopsError, match=r"^features.numeric names 'X', 'Y', not a column of the data; "
                                         r"columns: C0, C1, .*, C29$"):
        F.infer_roles(frame, target="C0", numeric=["X", "Y"])
    with pytest.raises(MlopsError, match=r"besides the target 'C0': C1: excluded; C2: excluded$"):
        F.infer_roles(frame[["C0", "C1", "C2"]], target="C0", exclude=["C1", "C2"])


def test_an_alias_move_is_recorded_in_full_before_the_alias_file(tmp_path):
    _model_dir(tmp_path)
    registry = R.LocalRegistry(tmp_path)
    entry = registry.set_alias("M", "v1", "production", actor="ci", reason="first", metrics={"f1": 0.8},
                               config_hash="abc")
    assert {k: v for k, v in entry.items() if k != "when"} == {
        "actor": "ci", "alias": "PRODUCTION", "old_version": None, "new_version": "v1", "reason": "first",
        "metrics": {"f1": 0.8}, "event": "set", "config_hash": "abc"}
    second = registry.set_alias("M", "v2", "PRODUCTION")
    assert (second["old_version"], second["metrics"], second["event"], second["reason"]) == ("v1", {}, "set", None)
    assert registry.history("M") == [entry, second]
    registry.set_alias("M", "v3", "CANARY")
    assert (tmp_path / "M" / "aliases.json").read_text() == '{\n  "CANARY": "v3",\n  "PRODUCTION": "v2"\n}'


def test_the_command_line_replaces_a_param_given_with_a_prefix_and_every_range_end_is_kept():
    space, keys, fixed = search_space({"+model.params.x": "3", "~model.params.y": "null"},
                                      ["model.params.x=choice(1, 2)", "model.params.y=interval(0, 1)"])
    assert fixed == [] and set(space) == {"model.params.x", "model.params.y"}
    space, _, _ = search_space({"a": "range(0.5, 1.25, 0.25)", "b": "tag(int, log, interval(1, 100))"}, [])
    assert space == {"a": od.FloatDistribution(0.5, 1.0, step=0.25), "b": od.IntDistribution(1, 100, log=True)}


def test_more_decisions_named_exactly():
    assert F._kind(pd.Series([np.datetime64("2024-01-01")], dtype=object)) == "time"
    assert F._kind(pd.Series([pd.Period("2024-01", freq="M")], dtype=object)) == "time"
    frame = pd.DataFrame({"T": [0, 1], "A": [1.0, 2.0]})
    with pytest.raises(MlopsError, match="^features.categorical names 'X', not a column"):
        F.infer_roles(frame, target="T", categorical=["X"])
    with pytest.raises(MlopsError, match="^split.order=time needs the time column: set features.time=COLUMN$"):
        _run_split(SplitSpec(order="time"), [0, 1] * 5)
    truth = np.array([1, 0] * 10)
    guess = (np.array([1, 1] * 10),)
    assert paired_bootstrap(_accuracy, truth, guess, (truth,), resamples=30) == paired_bootstrap(
        _accuracy, truth, guess, (truth,), resamples=30, seed=0), "seed 0 by default"


def test_rows_of_a_partition_keep_their_order_when_keys_interleave():
    keys = np.arange(300) % 3
    batch = pa.record_batch({"W": keys, "V": np.arange(300)})
    parts = {key: part.column("V").to_pylist() for key, part in S._split_by_partition(batch, ["W"])}
    assert parts == {(k,): list(range(k, 300, 3)) for k in range(3)}


def test_confusion_counts_missing_cells_are_zero_and_the_last_class_is_positive():
    result = M.metrics_from_confusion({(1, 1): 2, (0, 1): 1})
    assert (result["tn"], result["fp"], result["fn"], result["tp"]) == (0, 1, 0, 2)
    binary = M.metrics_from_confusion({("yes", "yes"): 3, ("no", "yes"): 1}, average="binary")
    assert (binary["precision"], binary["recall"], binary["tp"], binary["tn"]) == (0.75, 1.0, 3, 0)
    mixed = M.metrics_from_confusion({(1, 1): 1, ("a", "a"): 1})
    assert mixed["accuracy"] == 1.0 and "tp" in mixed


def test_binary_metrics_of_more_classes_are_of_the_last_and_absent_cells_count_zero():
    three = M.metrics_from_confusion({("a", "a"): 2, ("c", "c"): 1, ("b", "c"): 1}, average="binary")
    assert (three["precision"], three["recall"]) == (0.5, 1.0)
    never_positive = M.metrics_from_confusion({(0, 0): 3, (1, 0): 1})
    assert [never_positive[k] for k in ("tn", "fp", "fn", "tp")] == [3, 0, 1, 0]


def test_alerts_are_stamped_and_every_row_and_version_is_looked_at():
    result = {"performance": [
        {"window_start": 14, "window_end": 21, "model_version": "V1", "f1": 0.1},
        {"window_start": 0, "window_end": 7, "model_version": "V1", "f1": None},
        {"window_start": 7, "window_end": 14, "model_version": "V1", "f1": 0.2}]}
    before = dt.datetime.now(dt.timezone.utc)
    fired = evaluate([AlertRule(name="low", metric="f1", threshold=0.5, window="any")], result)
    assert [a.window_start for a in fired] == [14, 7], "a missing value skips its row only"
    assert dt.datetime.fromisoformat(fired[0].fired_at) >= before
    last = evaluate([AlertRule(name="low", metric="f1", threshold=0.5, window="last")], result)
    assert [a.window_start for a in last] == [14], "the latest window, whatever the row order"


def test_secrets_inside_lists_are_remembered_too(no_secrets):
    assert config.redact({"hosts": [{"password": "pw-in-a-list"}]}, remember=True) == {"hosts": [{"password": REDACTED}]}
    assert no_secrets == {"pw-in-a-list"}


def test_the_longest_secret_wins_whatever_its_letters_and_url_passwords_may_hold_colons(no_secrets):
    config.remember_secret("zzzz")
    config.remember_secret("azzzz1")
    assert config.scrub("azzzz1") == REDACTED
    config.redact("https://user:pa:ss-word@host", remember=True)
    assert "pa:ss-word" in no_secrets
