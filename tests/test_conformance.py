"""The built-in plugin's registry, sinks, sources and notifiers pass mlops_framework.conformance; a broken
registry does not."""

import itertools
import json

import pytest

from mlops_framework import conformance
from mlops_local.registry import LocalRegistry, _read_json, _write_json_atomic

NUMERIC = ["APPLICANT_INCOME_000S", "LOAN_AMOUNT_000S"]
CATEGORICAL = ["LOAN_TYPE_NAME"]
TARGET = "MORTGAGERESPONSE"
_paths = itertools.count()


@pytest.fixture(scope="module")
def frame():
    from mlops_local.synthetic import generate_table

    return generate_table(weeks=2, rows_per_week=60, seed=3).to_pandas()[["WEEK", *NUMERIC, *CATEGORICAL, TARGET]]


@pytest.fixture(scope="module")
def trained_model(frame):
    from sklearn.ensemble import HistGradientBoostingClassifier

    from mlops_framework.features import FeatureContract
    from mlops_framework.model import TrainedModel

    contract = FeatureContract.fit(frame, numeric=NUMERIC, categorical=CATEGORICAL, target=TARGET)
    estimator = HistGradientBoostingClassifier(max_iter=5).fit(contract.encode_frame(frame), contract.encode_target(frame[TARGET]))
    return TrainedModel(estimator, contract)


@pytest.mark.parametrize("check", conformance.REGISTRY_CHECKS)
def test_the_local_registry_conforms(check, tmp_path, trained_model, frame):
    conformance.REGISTRY_CHECKS[check](lambda: LocalRegistry(tmp_path / "registry"), trained_model,
                                       frame[NUMERIC + CATEGORICAL].head(10))


class AliasWithoutHistory(LocalRegistry):
    """A registry that moves aliases without writing the history: the bug the suite must catch."""

    def _move_alias(self, model_dir, alias, new_version, actor, reason, metrics, *, event=None, config_hash=None):
        aliases = _read_json(model_dir / "aliases.json", {})
        if new_version is None:
            aliases.pop(alias)
        else:
            aliases[alias] = new_version
        _write_json_atomic(model_dir / "aliases.json", aliases)
        return {"alias": alias, "new_version": new_version}


def test_a_registry_whose_alias_moves_skip_the_history_fails(tmp_path, trained_model, frame):
    sample = frame[NUMERIC + CATEGORICAL].head(10)
    conformance.check_registry_moves_aliases(lambda: AliasWithoutHistory(tmp_path / "r"), trained_model, sample)
    with pytest.raises(AssertionError, match="history"):
        conformance.check_registry(lambda: AliasWithoutHistory(tmp_path / "r"), trained_model, sample)


def test_a_registry_that_publishes_a_half_saved_version_fails(tmp_path, trained_model, frame):
    class HalfSaved:
        flavor = "sklearn"

        def save(self, directory):
            (directory / "partial.json").write_text("{")

    class PublishesHalfVersions(LocalRegistry):  # swallows the save error and publishes what was written
        def log_model(self, model, **kwargs):
            return super().log_model(HalfSaved() if isinstance(model, conformance.FailingSave) else model, **kwargs)

    with pytest.raises(AssertionError, match="did not fail"):
        conformance.check_registry_logging_is_all_or_nothing(lambda: PublishesHalfVersions(tmp_path / "r"),
                                                             trained_model, frame[NUMERIC + CATEGORICAL].head(10))


@pytest.mark.parametrize("kind", ["duckdb", "parquet_file", "parquet_partitioned"])
@pytest.mark.parametrize("check", conformance.SINK_CHECKS)
def test_the_local_sinks_conform(check, kind, tmp_path):
    from mlops_local.sinks import DuckDBSink, ParquetSink

    def make_sink(partition_by):
        path = tmp_path / f"out{next(_paths)}"
        if kind == "duckdb":
            return DuckDBSink(str(path) + ".duckdb", table="PREDICTIONS", partition_by=partition_by)
        if kind == "parquet_file" and not partition_by:
            return ParquetSink(str(path) + ".parquet")
        return ParquetSink(str(path), partition_by=partition_by or ["WEEK"])

    if kind == "parquet_partitioned" and check == "commits_all_batches":
        pytest.skip("a partitioned sink replaces partitions, not the whole destination (replaces_partitions)")
    conformance.SINK_CHECKS[check](make_sink, conformance.read_back_as_source)


@pytest.mark.parametrize("kind", ["csv", "parquet", "duckdb"])
@pytest.mark.parametrize("check", conformance.SOURCE_CHECKS)
def test_the_local_sources_conform(check, kind, tmp_path, frame):
    import duckdb

    from mlops_local.sources import CsvSource, DuckDBTableSource, ParquetSource

    expected = frame[[*NUMERIC, "WEEK", TARGET]]
    path = tmp_path / f"data.{kind}"
    if kind == "csv":
        expected.to_csv(path, index=False)
    elif kind == "parquet":
        expected.to_parquet(path, index=False)
    else:
        with duckdb.connect(str(path)) as con:
            con.register("frame", expected)
            con.execute("CREATE TABLE LOANS AS SELECT * FROM frame")

    def make_source(where):
        if kind == "csv":
            return CsvSource(str(path), where=where)
        if kind == "parquet":
            return ParquetSource(str(path), where=where)
        return DuckDBTableSource(str(path), table="LOANS", where=where)

    conformance.SOURCE_CHECKS[check](make_source, expected)


def test_the_synthetic_source_conforms(frame):
    from mlops_local.sources import SyntheticSource

    expected = SyntheticSource(weeks=2, rows_per_week=30, seed=1).read()
    expected = expected[[c for c in expected.columns if c != "LOAN_ID"] + ["LOAN_ID"]]
    numeric_first = expected[["APPLICANT_INCOME_000S", *[c for c in expected.columns if c != "APPLICANT_INCOME_000S"]]]
    conformance.check_source(lambda where: SyntheticSource(weeks=2, rows_per_week=30, seed=1, where=where),
                             numeric_first)


def test_the_jsonl_and_console_notifiers_conform(tmp_path, capsys):
    from mlops_local.notifiers import ConsoleNotifier, JsonLinesNotifier

    path = tmp_path / "alerts" / "alerts.jsonl"
    conformance.check_notifier(lambda: JsonLinesNotifier(str(path)), lambda: path.read_text())
    assert json.loads(path.read_text().splitlines()[0])["rule"] == "conformance_rule"
    conformance.check_notifier(lambda: ConsoleNotifier(), lambda: capsys.readouterr().out)


def test_a_notifier_that_delivers_nothing_fails():
    class Silent:
        def describe(self):
            return "silent"

        def notify(self, alerts):
            pass

    with pytest.raises(AssertionError, match="not in what was delivered"):
        conformance.check_notifier(Silent, lambda: "")
