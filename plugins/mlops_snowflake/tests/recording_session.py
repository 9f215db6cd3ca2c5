"""A recording stand-in for a Snowpark ``Session`` that answers the ``SHOW ...`` queries snowflake-ml's
real client classes send (``SHOW DATABASES``/``SCHEMAS``/``MODELS``/``VERSIONS``/``FUNCTIONS``,
``SHOW WAREHOUSES``, ``DESCRIBE TABLE``) with the columns Snowflake returns, keeps the aliases that
``ALTER MODEL ... SET/UNSET ALIAS`` change, and records every statement. With it the tests drive
``snowflake.ml.registry.Registry``, ``Model``, ``ModelVersion`` and the model monitor manager themselves
and assert on the SQL snowflake-ml emits, instead of on autospec'd calls.

The version's ``model_spec`` (what ``SHOW VERSIONS`` returns with model details) is written by
snowflake-ml's real ``ModelPackager`` for a tiny scikit-learn model (:func:`packaged_spec`).
"""

import contextlib
import datetime as dt
import json
import re
from unittest import mock

from snowflake.snowpark import Row

NOW = dt.datetime(2024, 1, 1)
RUNTIME_IMAGE = "/snowflake/images/snowflake_images/st_plat/runtime/x86/runtime_image/snowbooks:1.7.1"


class _Result:
    def __init__(self, rows):
        self.rows = rows

    def collect(self, *args, block=True, **kwargs):
        return self.rows if block else self.collect_nowait()

    def count(self, *args, **kwargs):
        return len(self.rows)

    def collect_nowait(self, *args, **kwargs):
        """A finished Snowpark ``AsyncJob`` (snowflake-ml checks the type), for statements sent with ASYNC."""
        from snowflake.snowpark import AsyncJob

        class Finished(AsyncJob):
            def __init__(self, rows):
                self.query_id, self.rows = "01b2c3d4-0000-4000-8000-000000000001", rows

            def is_done(self):
                return True

            def result(self, *args, **kwargs):
                return self.rows

        return Finished(self.rows)

        job = object.__new__(AsyncJob)
        job.query_id, job._result = "01-RECORDED", self.rows
        return job


class _Connection:
    """What ``snowflake.ml.jobs`` reaches below the session: ``run_query`` with ``?`` binds (recorded with the
    values written in, as the connector's client-side binding would) and the cursor's pyformat binding
    (``MLJobDefinition.to_sql``), both through the connector's own ``SnowflakeConverter``."""

    def __init__(self, session):
        from types import SimpleNamespace

        self.session = session
        self._cursor = SimpleNamespace(description=[], _preprocess_pyformat_query=self.bind_pyformat)

    @staticmethod
    def literal(value):
        from snowflake.connector.converter import SnowflakeConverter

        converter = SnowflakeConverter()
        return converter.quote(converter.escape(converter.to_snowflake(value)))

    def bind_pyformat(self, query, params):
        return query % tuple(self.literal(p) for p in params)

    def run_query(self, query, params=None, **kwargs):
        from types import SimpleNamespace

        parts = query.split("?")
        text = parts[0] + "".join(self.literal(p) + rest for p, rest in zip(params or [], parts[1:]))
        rows = self.session.sql(text).collect()
        names = getattr(rows[0], "_fields", None) if rows else None
        self._cursor.description = [SimpleNamespace(name=n, type_code=2, fields=None) for n in names or []]
        return {"data": [list(row) for row in rows]}


class _Files:
    """``session.file``: uploads recorded as ``PUT`` statements."""

    def __init__(self, session):
        self.session = session

    def put(self, local_file_name, stage_location, *args, **kwargs):
        self.session.statements.append(f"PUT file://{str(local_file_name).rsplit('/', 1)[-1]} {stage_location}")
        return []

    def put_stream(self, input_stream, stage_location, *args, **kwargs):
        self.session.uploads[stage_location] = input_stream.read()
        self.session.statements.append(f"PUT <stream> {stage_location}")


class RecordingSession:
    def __init__(self, model_spec, database="DB", schema="S", tables=None):
        self.model_spec, self.database, self.schema = model_spec, database, schema
        self.statements = []
        self.uploads = {}     # stage path -> bytes put as a stream
        self.job_statuses = []  # DESCRIBE SERVICE <job> answers one per call, the last one stays
        self.job_logs = ""
        self.job_ids = iter(f"DB.S.MLOPS_JOB_{n}" for n in range(1, 1000))
        self._conn, self.file = _Connection(self), _Files(self)
        self.models = {}      # model -> {version: set(aliases)}
        self.tables = dict(tables or {})  # table -> [(column, type)]
        self.task = "TABULAR_BINARY_CLASSIFICATION"  # what SHOW VERSIONS reports in model_attributes

    def get_current_database(self):
        return f'"{self.database}"'

    def get_current_schema(self):
        return f'"{self.schema}"'

    def get_current_role(self):
        return '"ROLE"'

    def get_current_warehouse(self):
        return '"WH"'

    def table(self, name):
        """A table's schema, as ``session.table(name).schema`` gives it (snowflake-ml validates sources so)."""
        from types import SimpleNamespace

        from snowflake.snowpark import types as T

        kinds = {"TIMESTAMP_NTZ": lambda: T.TimestampType(T.TimestampTimeZone.NTZ), "NUMBER": T.LongType,
                 "FLOAT": T.DoubleType, "VARCHAR": T.StringType}
        short = str(name).split(".")[-1].strip('"')
        if short not in self.tables:
            raise LookupError(f"Table {name} does not exist or not authorized.")
        fields = [T.StructField(c, kinds[t.split("(")[0]]()) for c, t in self.tables[short]]
        return SimpleNamespace(schema=T.StructType(fields))

    def sql(self, query, params=None, **kwargs):
        self.statements.append(query)
        q = " ".join(query.split())
        if m := re.match(r"SHOW DATABASES LIKE '(.*)'", q):
            return _Result([Row(created_on=NOW, name=m.group(1), kind="STANDARD")])
        if m := re.match(r"SHOW SCHEMAS LIKE '(.*)' IN DATABASE (\S+)", q):
            return _Result([Row(created_on=NOW, name=m.group(1), database_name=self.database)])
        if m := re.match(r"SHOW WAREHOUSES LIKE '(.*)'", q):
            return _Result([Row(name=m.group(1), state="STARTED", type="STANDARD", size="X-Small")])
        if m := re.match(r"SHOW MODELS LIKE '(.*)' IN SCHEMA (\S+)", q):
            name = m.group(1)
            return _Result([] if name not in self.models else [Row(
                created_on=NOW, name=name, database_name=self.database, schema_name=self.schema, comment=None,
                default_version_name=next(iter(self.models[name])), versions=json.dumps(list(self.models[name])),
                aliases="{}")])
        if m := re.match(r"SHOW VERSIONS (?:LIKE '(.*)' )?IN MODEL (\S+)", q):
            model = m.group(2).split(".")[-1]
            return _Result([Row(
                created_on=NOW, name=version, aliases=json.dumps(sorted(aliases)), comment=None,
                database_name=self.database, schema_name=self.schema, model_name=model, is_default_version=False,
                functions=json.dumps(self._functions()), metadata="{}", user_data="{}", model_spec=self.model_spec,
                model_attributes=json.dumps({"task": self.task}), inference_services="[]")
                for version, aliases in self.models.get(model, {}).items() if m.group(1) in (None, version)])
        if re.match(r"SHOW FUNCTIONS IN MODEL", q):
            return _Result([Row(name=f, return_type="OBJECT", arguments=f"{f}(...)") for f in self._functions()])
        if m := re.match(r"(?:DESCRIBE|DESC) TABLE (\S+)", q):
            columns = self.tables.get(m.group(1).split(".")[-1], [])
            return _Result([Row(name=c, type=t, kind="COLUMN", null="Y") for c, t in columns])
        if m := re.match(r"CREATE MODEL (\S+) WITH VERSION (\S+) FROM", q):
            self.models[m.group(1).split(".")[-1]] = {m.group(2): set()}
        elif m := re.match(r"ALTER MODEL (\S+) ADD VERSION (\S+) FROM", q):
            self.models[m.group(1).split(".")[-1]][m.group(2)] = set()
        elif m := re.match(r"ALTER MODEL (\S+) VERSION (\S+) SET ALIAS = (\S+)", q):
            self.models[m.group(1).split(".")[-1]][m.group(2)].add(m.group(3))
        elif m := re.match(r"ALTER MODEL (\S+) VERSION (\S+) UNSET ALIAS", q):
            for aliases in self.models[m.group(1).split(".")[-1]].values():
                aliases.discard(m.group(2))
        if m := re.match(r"DESCRIBE SERVICE IDENTIFIER\('(.*)'\)", q):
            status = (self.job_statuses.pop(0) if len(self.job_statuses) > 1 else
                      self.job_statuses[0] if self.job_statuses else "DONE")
            return _Result([Row(name=m.group(1), status=status, compute_pool="POOL", target_instances=1,
                                spec=json.dumps({"spec": {"containers": [{"name": "main"}]}}))])
        if re.match(r"SELECT SYSTEM\$GET_SERVICE_LOGS\(", q):
            return _Result([Row(self.job_logs)])
        if re.match(r"CALL SYSTEM\$DEPLOY_MODEL\(", q):
            return _Result([Row("Deployment started.")])
        if re.match(r"CALL SYSTEM\$GET_ML_JOB_RUNTIME\(", q):
            return _Result([Row(RUNTIME_IMAGE)])
        if re.match(r"CALL SYSTEM\$EXECUTE_ML_JOB\(", q):
            return _Result([Row(next(self.job_ids))])
        if re.match(r"(ALTER|CREATE|DROP|INSERT|COMMENT)\b", q):
            return _Result([Row(status="Statement executed successfully.")])
        return _Result([])

    def _functions(self):
        import yaml

        return [name.upper() for name in yaml.safe_load(self.model_spec)["signatures"]]


@contextlib.contextmanager
def uploads_recorded():
    """``FileOperation.put`` (how snowflake-ml uploads the packaged model) recorded as ``PUT`` statements
    on a :class:`RecordingSession` instead of sent."""
    from snowflake.snowpark import FileOperation

    real_put = FileOperation.put

    def put(self, local_file_name, stage_location, *args, **kwargs):
        if not isinstance(self._session, RecordingSession):
            return real_put(self, local_file_name, stage_location, *args, **kwargs)
        name = str(local_file_name).rsplit("/", 1)[-1]
        self._session.statements.append(f"PUT file://{name} {stage_location}")
        if name.endswith((".yml", ".yaml")):
            with open(local_file_name) as file:
                self._session.uploads[f"{stage_location}/{name}"] = file.read()
        return []

    with mock.patch.object(FileOperation, "put", put):
        yield


def packaged_spec(directory) -> str:
    """``model.yaml`` of a tiny LogisticRegression saved by snowflake-ml's real ModelPackager."""
    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    from snowflake.ml._internal.platform_capabilities import PlatformCapabilities
    from snowflake.ml.model._packager.model_packager import ModelPackager

    X = pd.DataFrame({"A": [0.0, 1.0, 2.0, 3.0]})
    with PlatformCapabilities.mock_features({}):
        ModelPackager(str(directory)).save(name="M", model=LogisticRegression().fit(X, [0, 0, 1, 1]),
                                           sample_input_data=X, options={"relax_version": True})
    return (directory / "model.yaml").read_text()
