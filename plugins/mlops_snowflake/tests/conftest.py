"""Fixtures for the Snowflake plugin's tests: tiny data, a tiny model, and the offline stand-ins.

Test modules never import this file (``from conftest import`` breaks under ``--import-mode=importlib`` and
beside the core's own ``tests/conftest.py``): constants and helpers reach them through the ``kit`` fixture.

Layers (see shared/reference/snowflake.md): Snowpark local testing for DataFrame logic (``local_session``),
fakesnow for connector-level SQL (``fakesnow_session``), and ``SnowML``: ``create_autospec`` of the real
installed Registry / Model / ModelVersion classes, so that a call drifting from the installed signatures
fails, driven by a small in-memory state so the registry's behaviour can be followed across calls.
"""

import inspect
import json
import textwrap
from types import SimpleNamespace
from datetime import datetime, timedelta
from unittest import mock

import pandas as pd
import pytest



def pytest_configure(config):
    config.addinivalue_line("filterwarnings", "ignore:Arrow output on a DB-API result")  # fakesnow's own

NUMERIC = ["APPLICANT_INCOME_000S", "LOAN_AMOUNT_000S"]
CATEGORICAL = ["LOAN_TYPE_NAME", "LOAN_PURPOSE_NAME", "COUNTY_NAME"]
TARGET = "MORTGAGERESPONSE"
INPUTS = NUMERIC + CATEGORICAL
TABLE_COLUMNS = ["LOAN_ID", "WEEK", *INPUTS, TARGET]

CANARY_PASSWORD = "CANARY-pw-7f3a9c1e"
CANARY_PASSPHRASE = "CANARY-pp-51d2b8aa"


# ---------------------------------------------------------------------------------------------- data
@pytest.fixture(scope="session")
def frame():
    """180 mortgage rows over 3 weeks: the columns a Snowflake table of the demo would hold."""
    from mlops_local.synthetic import generate_table

    data = generate_table(weeks=3, rows_per_week=60, seed=7).to_pandas()[TABLE_COLUMNS]
    return data.astype({"WEEK": "int64", TARGET: "int64"})


@pytest.fixture(scope="session")
def trained_model(frame):
    """A small XGBoost TrainedModel with its feature contract, trained on ``frame``."""
    import xgboost

    from mlops_framework.features import FeatureContract
    from mlops_framework.model import TrainedModel

    contract = FeatureContract.fit(frame, numeric=NUMERIC, categorical=CATEGORICAL, target=TARGET)
    estimator = xgboost.XGBClassifier(n_estimators=8, max_depth=3, n_jobs=1, random_state=0)
    estimator.fit(contract.encode_frame(frame), contract.encode_target(frame[TARGET]))
    return TrainedModel(estimator, contract)


def local_predictions(model, frame):
    scores = model.predict_scores(model.contract.encode_frame(frame))
    return scores, model.predict_classes(scores)


# ---------------------------------------------------------------------------------- Snowpark local testing
@pytest.fixture(scope="session")
def local_session():
    from snowflake.snowpark import Session

    session = Session.builder.config("local_testing", True).create()
    yield session
    session.close()


class FakeConnection:
    """Stands in for SnowflakeConnection: hands out a given session (local testing or fakesnow-backed)."""

    def __init__(self, session):
        self._session = session

    def session(self):
        return self._session

    def describe(self):
        return "a test connection"


@pytest.fixture
def use_connection(monkeypatch):
    """Make every connection config (not the connection objects tests pass) resolve to ``session``."""

    def use(session):
        from mlops_snowflake import connection

        fake = FakeConnection(session)
        monkeypatch.setattr(connection, "resolve", lambda config: config if hasattr(config, "session") else fake)
        return fake

    return use


# --------------------------------------------------------------------------------------------- fakesnow
class FakesnowSession:
    """The part of a Snowpark Session our code uses for SQL (``sql(query, params).collect()`` and
    ``connection``), executed on fakesnow. Each call is bound to the real ``Session.sql`` signature."""

    def __init__(self, conn):
        self.connection = conn
        self.statements = []

    def sql(self, query, params=None):
        from snowflake.snowpark import Session

        inspect.signature(Session.sql).bind(None, query, params=params)
        self.statements.append(query)
        return _Query(self.connection, query, params)


class _Query:
    def __init__(self, conn, query, params):
        self._conn, self._query, self._params = conn, query, params

    def collect(self):
        from snowflake.snowpark import Row

        cursor = self._conn.cursor()
        cursor.execute(self._query, self._params)
        if not cursor.description:
            return []
        names = [d[0] for d in cursor.description]
        return [Row(**dict(zip(names, values))) for values in cursor.fetchall()]


@pytest.fixture
def fakesnow_session():
    """A fresh fakesnow database DB.S (qmark parameters, as Snowpark binds them)."""
    import fakesnow
    import snowflake.connector

    with fakesnow.patch():
        conn = snowflake.connector.connect(database="DB", schema="S", paramstyle="qmark")
        yield FakesnowSession(conn)
        conn.close()


def fetch(session, sql):
    cursor = session.connection.cursor()
    cursor.execute(sql)
    return pd.DataFrame(cursor.fetchall(), columns=[d[0] for d in cursor.description])


# ------------------------------------------------------------------------- snowflake-ml, autospec'd
class SnowML:
    """``create_autospec`` of snowflake-ml's Registry, Model and ModelVersion over an in-memory registry.

    ``mv.run`` scores with the ContractModel that was logged (what the warehouse would run), on pandas or
    on a Snowpark DataFrame (returning a DataFrame of the same session with every input column kept);
    ``mv.export`` writes the version's files with snowflake-ml's real ModelPackager. ``perturb`` shifts
    the scores ``mv.run`` returns, to simulate dependency drift; ``fail_run`` is an exception it raises;
    ``run_columns`` renames the columns it returns (old name -> new name); ``run_rows`` keeps only that many rows.
    """

    def __init__(self, stage):
        from snowflake.ml.model import Model, ModelVersion
        from snowflake.ml.registry import Registry

        self._Model, self._ModelVersion = Model, ModelVersion
        self.Registry = mock.create_autospec(Registry)
        self.registry = self.Registry.return_value
        self.registry.get_model.side_effect = self._get_model
        self.registry.log_model.side_effect = self._log_model
        self.registry.show_models.side_effect = self._show_models
        self.registry.delete_model.side_effect = self._delete_model
        self.models = {}
        self.stage = stage            # where "uploaded" artifacts go, as log_model uploads to a stage
        self.clock = datetime(2024, 1, 1)
        self.perturb = 0.0
        self.fail_run = None
        self.run_columns = {}
        self.run_rows = None
        self.fail_log = None          # an exception log_model raises (after creating the version if fail_after_create)
        self.fail_after_create = False

    # -- registry
    def _get_model(self, model_name):
        if model_name.upper() not in self.models:
            raise ValueError(f"Unable to find model {model_name}")
        return self.models[model_name.upper()]["mock"]

    def _delete_model(self, model_name):
        del self.models[model_name.upper()]

    def _show_models(self):
        return pd.DataFrame([{"created_on": m["created_on"], "name": name, "comment": m["mock"].comment,
                              "versions": json.dumps(list(m["versions"]))} for name, m in self.models.items()])

    def _log_model(self, model, *, model_name, version_name=None, comment=None, metrics=None, sample_input_data=None,
                   **kwargs):
        if self.fail_log is not None and not self.fail_after_create:
            raise self.fail_log
        entry = self.models.get(model_name.upper())
        if entry is None:
            entry = self.models[model_name.upper()] = self._new_model(model_name)
        name = version_name.upper()
        if name in entry["versions"]:  # as snowflake-ml's ModelManager refuses it
            raise ValueError(f"Model {model_name} version {version_name} already existed. "
                             "To auto-generate `version_name`, skip that argument.")
        self.clock += timedelta(minutes=1)
        mv = mock.create_autospec(self._ModelVersion, instance=True)
        mv.version_name = name
        mv.model_name = model_name.upper()
        mv.run.side_effect = lambda X, **kw: self._run(entry, name, X, **kw)
        mv.set_alias.side_effect = lambda alias_name: self._set_alias(entry, name, alias_name)
        mv.unset_alias.side_effect = lambda version_or_alias: self._unset_alias(entry, version_or_alias)
        mv.export.side_effect = lambda target_path, **kw: self._export(entry, name, target_path)
        artifact = self.stage / model_name.upper() / name
        packaged = self._package(artifact, name, model, sample_input_data, kwargs)
        entry["versions"][name] = {"created_on": self.clock, "aliases": set(), "comment": comment,
                                   "metrics": metrics or {}, "model": packaged, "artifact": artifact, "mv": mv}
        if self.fail_log is not None:
            raise self.fail_log
        return mv

    def _new_model(self, model_name):
        model = mock.create_autospec(self._Model, instance=True)
        model.comment = None
        entry = {"mock": model, "versions": {}, "tags": {}, "created_on": self.clock}
        model.show_versions.side_effect = lambda: self._show_versions(entry)
        model.version.side_effect = lambda version_or_alias: self._version(entry, version_or_alias)
        model.delete_version.side_effect = lambda version_name: entry["versions"].pop(version_name.upper())
        model.set_tag.side_effect = lambda tag_name, tag_value: entry["tags"].__setitem__(tag_name, tag_value)
        model.show_tags.side_effect = lambda: dict(entry["tags"])
        return entry

    # -- model
    def _show_versions(self, entry):
        rows = []
        names = list(entry["versions"])
        for i, (name, v) in enumerate(entry["versions"].items()):
            system = (["FIRST"] if i == 0 else []) + (["LAST", "DEFAULT"] if i == len(names) - 1 else [])
            rows.append({"created_on": v["created_on"], "name": name, "aliases": json.dumps(system + sorted(v["aliases"])),
                         "comment": v["comment"], "database_name": "DB", "schema_name": "S",
                         "model_name": "M", "is_default_version": i == len(names) - 1, "functions": '["PREDICT"]',
                         "metadata": json.dumps({"metrics": v["metrics"]}), "user_data": "{}"})
        return pd.DataFrame(rows)

    def _version(self, entry, version_or_alias):
        wanted = version_or_alias.upper()
        for name, v in entry["versions"].items():
            if name == wanted or wanted in v["aliases"]:
                return v["mv"]
        raise ValueError(f"Unable to find version or alias with name {wanted}")

    # -- version
    def _set_alias(self, entry, name, alias):
        alias = alias.upper()
        holder = [n for n, v in entry["versions"].items() if alias in v["aliases"]]
        if holder:
            raise RuntimeError(f"alias {alias} is already set on version {holder[0]}")
        entry["versions"][name]["aliases"].add(alias)

    def _unset_alias(self, entry, version_or_alias):
        wanted = version_or_alias.upper()
        for v in entry["versions"].values():
            if wanted in v["aliases"]:
                v["aliases"].discard(wanted)
                return
        raise RuntimeError(f"no alias {wanted}")

    def _run(self, entry, name, X, *, function_name=None, **kwargs):
        assert function_name == "predict"
        if self.fail_run is not None:
            raise self.fail_run
        model = entry["versions"][name]["model"]
        if isinstance(X, pd.DataFrame):
            out = model.predict(X)
            out["PREDICTED_SCORE"] += self.perturb
            return out.rename(columns=self.run_columns).head(self.run_rows)
        pdf = X.to_pandas()
        out = model.predict(pdf)
        out["PREDICTED_SCORE"] += self.perturb
        return X.session.create_dataframe(pd.concat([pdf.reset_index(drop=True), out], axis=1))

    def _package(self, artifact, name, model, sample_input_data, kwargs):
        """Save the model with snowflake-ml's real packager and the arguments log_model received (as the
        upload does), then load it back as the warehouse would: ``mv.run`` scores with what was packaged."""
        import sys

        from snowflake.ml._internal.platform_capabilities import PlatformCapabilities
        from snowflake.ml.model._packager.model_packager import ModelPackager

        with PlatformCapabilities.mock_features({}):  # no account to ask which features it has
            ModelPackager(str(artifact)).save(name=name, model=model, sample_input_data=sample_input_data,
                                              conda_dependencies=kwargs.get("conda_dependencies"),
                                              target_platforms=kwargs.get("target_platforms"),
                                              code_paths=kwargs.get("code_paths"), task=kwargs.get("task"),
                                              options=kwargs.get("options") or {})
        saved_path = list(sys.path)
        try:
            loader = ModelPackager(str(artifact))
            loader.load(as_custom_model=True)
        finally:
            sys.path[:] = saved_path
        return loader.model

    def _export(self, entry, name, target_path):
        import shutil

        shutil.copytree(entry["versions"][name]["artifact"], target_path)


@pytest.fixture
def snowml(monkeypatch, tmp_path):
    fake = SnowML(tmp_path / "stage")
    monkeypatch.setattr("snowflake.ml.registry.Registry", fake.Registry)
    return fake


# ------------------------------------------------------------------------------- connections.toml
def write_key(path, passphrase=None):
    """An RSA private key in PEM (PKCS#8), encrypted when ``passphrase`` is given; returns its text."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    encryption = (serialization.BestAvailableEncryption(passphrase.encode()) if passphrase
                  else serialization.NoEncryption())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    path.write_bytes(pem)
    return pem.decode()


@pytest.fixture
def snowflake_home(tmp_path, monkeypatch):
    """$SNOWFLAKE_HOME with a connections.toml holding canary secrets in several sections."""
    home = tmp_path / "snowflake"
    home.mkdir()
    key_file = home / "rsa_key.p8"
    key_text = write_key(key_file, CANARY_PASSPHRASE)
    (home / "connections.toml").write_text(textwrap.dedent(f"""\
        [default]
        account = "myorg-canaryacct"
        user = "CANARY_USER"
        password = "{CANARY_PASSWORD}"
        role = "ANALYST"
        warehouse = "WH_XS"
        database = "ML"
        schema = "MORTGAGE"

        [keypair]
        account = "myorg-canaryacct"
        user = "SVC_MLOPS"
        authenticator = "SNOWFLAKE_JWT"
        private_key_file = "{key_file}"
        private_key_file_pwd = "{CANARY_PASSPHRASE}"

        [browser]
        account = "myorg-canaryacct"
        user = "someone@example.com"
        authenticator = "externalbrowser"

        [incomplete]
        password = "{CANARY_PASSWORD}"

        [underscore]
        account = "myorg-canary_acct"
        user = "U"
        password = "{CANARY_PASSWORD}"
        """))
    (home / "connections.toml").chmod(0o600)  # as Snowflake's connector expects of a file holding secrets
    monkeypatch.setenv("SNOWFLAKE_HOME", str(home))
    monkeypatch.delenv("SNOWFLAKE_DEFAULT_CONNECTION_NAME", raising=False)
    key_lines = [line for line in key_text.splitlines() if "-----" not in line]
    return SimpleNamespace(path=home, key_file=key_file, key_text=key_text,
                           secrets=[CANARY_PASSWORD, CANARY_PASSPHRASE, *key_lines])


@pytest.fixture
def hash_agg_patch():
    """Snowflake's HASH_AGG for Snowpark local testing (which lacks it)."""
    from snowflake.snowpark.mock import ColumnEmulator, patch
    from snowflake.snowpark.mock._functions import MockedFunctionRegistry

    @patch("hash_agg")
    def hash_agg(*columns: ColumnEmulator) -> ColumnEmulator:  # Snowflake's HASH_AGG, emulated
        return ColumnEmulator(data=[hash(tuple(tuple(map(str, c)) for c in columns)) & 0xFFFF], sf_type=columns[0].sf_type)

    yield
    MockedFunctionRegistry.get_or_create().unregister("hash_agg")


@pytest.fixture(scope="session")
def kit():
    """The constants and helpers of this file, for test modules (which do not import conftest)."""
    return SimpleNamespace(
        NUMERIC=NUMERIC, CATEGORICAL=CATEGORICAL, TARGET=TARGET, INPUTS=INPUTS, TABLE_COLUMNS=TABLE_COLUMNS,
        CANARY_PASSWORD=CANARY_PASSWORD, CANARY_PASSPHRASE=CANARY_PASSPHRASE, FakeConnection=FakeConnection,
        fetch=fetch, write_key=write_key, local_predictions=local_predictions,
    )
