"""``backend=spcs``: serve a registered version from Snowpark Container Services, and score through it.

``action`` says what to do:

- ``score`` (default): the pipeline's other stages (train, register, ...) run in this process; then the
  version (``scoring.version``, else this run's, else the latest) gets an inference service
  (``mv.create_service``, or the existing one is reused) and the scoring data goes through it
  (``mv.run(..., service_name=...)``), predictions beside their ground truth, into the sink. With
  ``batch: true`` it is an SPCS batch inference job instead (``mv.run_batch``, for large tables): no
  service, output files on a stage, then loaded into the sink.
- ``deploy``: the other stages, then the service only.
- ``list`` / ``delete``: the version's services (``mv.list_services``) / drop one (``mv.delete_service``);
  no stage runs.

A Snowflake scoring source and sink keep the rows in Snowflake (a Snowpark DataFrame in, the sink's
transaction out); any other source or sink is scored batch by batch through the service from here.
The version must have been logged with ``SNOWPARK_CONTAINER_SERVICES`` among its target platforms.
"""

import dataclasses
import re
import time

from mlops_framework.contracts import WarehouseRegistry, WarehouseSink, WarehouseSource
from mlops_framework.errors import MlopsError
from mlops_snowflake.data import _one_line
from mlops_snowflake.snowpark import stamp, traceability

ACTIONS = ("score", "deploy", "list", "delete")
SCORE_COLUMN, CLASS_COLUMN = "PREDICTED_SCORE", "PREDICTED_RESPONSE"
SPCS_PLATFORM = "SNOWPARK_CONTAINER_SERVICES"
_EXISTS = ("100132", "already exists")


class SPCSBackend:
    """Deploys a model version as an SPCS inference service and scores through it (or runs batch inference)."""

    def __init__(self, connection=None, action="score", service_name=None,
                 service_compute_pool="SYSTEM_COMPUTE_POOL_CPU", image_build_compute_pool=None, image_repo=None,
                 ingress_enabled=False, cpu_requests=None, memory_requests=None, gpu_requests=None,
                 min_instances=0, max_instances=1, num_workers=None, max_batch_rows=None, force_rebuild=False,
                 build_external_access_integrations=None, function_name="predict", batch=False,
                 batch_compute_pool=None, batch_output_stage="MLOPS_BATCH_INFERENCE", batch_replicas=None,
                 timeout_s=3600, poll_s=10):
        self.connection = connection
        self.action = action
        self.service_name = service_name
        self.service_compute_pool = service_compute_pool
        self.image_build_compute_pool = image_build_compute_pool
        self.image_repo = image_repo
        self.ingress_enabled = ingress_enabled
        self.cpu_requests = cpu_requests
        self.memory_requests = memory_requests
        self.gpu_requests = gpu_requests
        self.min_instances = min_instances
        self.max_instances = max_instances
        self.num_workers = num_workers
        self.max_batch_rows = max_batch_rows
        self.force_rebuild = force_rebuild
        self.build_external_access_integrations = build_external_access_integrations
        self.function_name = function_name
        self.batch = batch
        self.batch_compute_pool = batch_compute_pool
        self.batch_output_stage = batch_output_stage
        self.batch_replicas = batch_replicas
        self.timeout_s = timeout_s
        self.poll_s = poll_s

    # ---------------------------------------------------------------- arguments (pure)

    def service_for(self, model_name, version):
        """The service name: ``service_name``, else ``<MODEL>_<VERSION>_SERVICE`` (one service per version)."""
        if self.service_name:
            return self.service_name
        return re.sub(r"[^A-Za-z0-9_]", "_", f"{model_name}_{version}_SERVICE").upper()

    def create_service_arguments(self, service_name):
        """Keyword arguments for ``ModelVersion.create_service``: the required ones and those set."""
        if int(self.min_instances) < 0 or int(self.max_instances) < max(1, int(self.min_instances)):
            raise MlopsError(f"backend.min_instances ({self.min_instances}) must be >= 0 and backend.max_instances "
                             f"({self.max_instances}) >= max(1, min_instances)")
        arguments = {
            "service_name": service_name,
            "service_compute_pool": self.service_compute_pool,
            "ingress_enabled": bool(self.ingress_enabled),
            "min_instances": int(self.min_instances),
            "max_instances": int(self.max_instances),
        }
        optional = {
            "image_build_compute_pool": self.image_build_compute_pool,
            "image_repo": self.image_repo,
            "cpu_requests": _text(self.cpu_requests),
            "memory_requests": _text(self.memory_requests),
            "gpu_requests": self.gpu_requests,
            "num_workers": self.num_workers,
            "max_batch_rows": self.max_batch_rows,
            "build_external_access_integrations": list(self.build_external_access_integrations or []) or None,
        }
        arguments.update({key: value for key, value in optional.items() if value is not None})
        if self.force_rebuild:
            arguments["force_rebuild"] = True
        return arguments

    def batch_job_name(self, model_name, version):
        stamp = time.strftime("%Y%m%d_%H%M%S", time.gmtime())
        return re.sub(r"[^A-Za-z0-9_]", "_", f"MLOPS_{model_name}_{version}_BATCH_{stamp}").upper()

    def batch_output_location(self, model_name):
        """The stage path run_batch writes under (each job in ``<this>/<job_name>/``)."""
        stage = str(self.batch_output_stage or "").lstrip("@").rstrip("/")
        if not stage:
            raise MlopsError("backend.batch_output_stage must name a stage for run_batch's output files")
        return f"@{stage}/{model_name}/"

    def batch_arguments(self, model_name, version):
        """Keyword arguments for ``ModelVersion.run_batch`` (besides the input DataFrame)."""
        from snowflake.ml.model.batch_inference import (
            InferenceSpec,
            OutputSpec,
            ResourcesSpec,
            SaveMode,
        )

        arguments = {
            "compute_pool": self.batch_compute_pool or self.service_compute_pool,
            "output_spec": OutputSpec(stage_location=self.batch_output_location(model_name), mode=SaveMode.OVERWRITE),
            "function_name": self.function_name,
            "job_name": self.batch_job_name(model_name, version),
        }
        resources = {key: _text(value) for key, value in (("cpu_requests", self.cpu_requests),
                                                           ("memory_requests", self.memory_requests),
                                                           ("gpu_requests", self.gpu_requests)) if value is not None}
        if resources:
            arguments["resources_spec"] = ResourcesSpec(**resources)
        inference = {key: value for key, value in (("num_workers", self.num_workers),
                                                   ("max_batch_rows", self.max_batch_rows)) if value is not None}
        if inference:
            arguments["inference_spec"] = InferenceSpec(**inference)
        if self.batch_replicas is not None:
            arguments["replicas"] = int(self.batch_replicas)
        return arguments

    # ---------------------------------------------------------------- plan (no connection)

    def plan(self, run):
        from mlops_snowflake import connection as connection_module

        self._check(run)
        model_name = run.registration.model_name
        managing = self.action in ("list", "delete")
        version = _planned_version(run, stages_run=not managing)
        service = self.service_name or f"{model_name}_<version>_SERVICE"
        model = run.registry.qualified(model_name) if isinstance(run.registry, WarehouseRegistry) else model_name
        if managing:
            call = "mv.list_services()" if self.action == "list" else f"mv.delete_service({service!r})"
            return [f"connect: one Snowpark session to {connection_module.describe(self.connection)}",
                    f"mv = Model({model}).version({version})",
                    f"{self.action}: {call} -- no pipeline stage runs"]
        lines = self._plan_stages(run)
        lines += _target_platform_warning(run)
        lines.append(f"mv = Model({model}).version({version}) -- an alias is resolved when the run starts")
        if self.action == "score" and self.batch:
            return lines + self._plan_batch(run, version)
        arguments = self.create_service_arguments(service)
        lines += [
            f"service spec: {service} on compute pool {self.service_compute_pool} (image built on "
            f"{self.image_build_compute_pool or self.service_compute_pool}, image repo "
            f"{self.image_repo or 'Snowflake default'}), instances {self.min_instances}..{self.max_instances}"
            f"{' (0: suspends when idle)' if int(self.min_instances) == 0 else ''}, requests cpu "
            f"{self.cpu_requests or 'auto'} memory {self.memory_requests or 'auto'} gpu {self.gpu_requests or 'none'}, "
            f"ingress {'public endpoint' if self.ingress_enabled else 'off'}",
            f"deploy: mv.list_services() -> reuse {service} when it exists, else "
            f"{_call('mv.create_service', [], {**arguments, 'block': True})} (error 100132 'already exists': reuse)",
        ]
        if self.action == "score":
            lines += self._plan_score(run, service)
        return lines

    def _plan_stages(self, run):
        from mlops_snowflake.snowpark import SnowparkBackend

        before = [stage for stage in run.stages if stage.name != "score"]
        return SnowparkBackend(self.connection, score_in_warehouse=False).plan(dataclasses.replace(run, stages=before))

    def _plan_score(self, run, service):
        source = run.scoring.source or run.source
        sink = run.scoring.sink
        run_call = f"mv.run({{X}}, function_name={self.function_name!r}, service_name={service!r})"
        if _in_snowflake(source, sink):
            return [f"score: {run_call.format(X=f'<Snowpark DataFrame: {source.sql()}>')}, lazily: every input "
                    f"column kept, ground truth {run.features.target} beside {SCORE_COLUMN}, {CLASS_COLUMN}",
                    *(f"score: {sql}" for sql in sink.plan(source="<mv.run result>"))]
        inputs = ", ".join([*run.features.numeric, *run.features.categorical])
        return [f"score: for each batch of {run.scoring.batch_size:,} rows of {source.describe()}: "
                f"{run_call.format(X=f'<pandas: {inputs}>')}, appended to the batch (ground truth "
                f"{run.features.target} kept) -> {sink.describe()}"]

    def _plan_batch(self, run, version):
        source = run.scoring.source or run.source
        if not isinstance(source, WarehouseSource):
            raise MlopsError(f"backend.batch=true runs SPCS batch inference on a Snowflake table; the scoring "
                             f"source is {source.describe()}: use data=snowflake (or scoring.source.kind: snowflake)")
        arguments = self.batch_arguments(run.registration.model_name, "VERSION")
        arguments["job_name"] = f"MLOPS_{run.registration.model_name}_<version>_BATCH_<UTC time>".upper()
        stage_location = arguments["output_spec"].stage_location
        location = f"{stage_location}{arguments['job_name']}/"
        shown = {**arguments, "output_spec": _Raw(f"OutputSpec(stage_location={stage_location!r}, mode=SaveMode.OVERWRITE)")}
        for key, cls in (("resources_spec", "ResourcesSpec"), ("inference_spec", "InferenceSpec")):
            if key in shown:
                values = ", ".join(f"{k}={v!r}" for k, v in shown[key].model_dump(exclude_none=True).items())
                shown[key] = _Raw(f"{cls}({values})")
        stage = str(self.batch_output_stage or "").lstrip("@").rstrip("/")
        lines = [f"batch: CREATE STAGE IF NOT EXISTS {stage}",
                 f"batch: {_call('mv.run_batch', [f'<Snowpark DataFrame: {source.sql()}>'], shown)}",
                 f"batch: follow the job every {self.poll_s}s up to {self.timeout_s}s with its logs; FAILED, "
                 f"INTERNAL_ERROR, CANCELLED -> error with the last log lines",
                 f"batch: read the output files session.read.parquet({location!r}) (input columns, ground truth "
                 f"{run.features.target}, {SCORE_COLUMN}, {CLASS_COLUMN})"]
        sink = run.scoring.sink
        if isinstance(sink, WarehouseSink):
            lines += [f"batch: {sql}" for sql in sink.plan(source=f"<{location} files>")]
        else:
            lines.append(f"batch: stream them to {sink.describe()}")
        return lines

    # ---------------------------------------------------------------- execute

    def execute(self, run):
        from mlops_framework.pipeline import Stage, run_stages
        from rich.console import Console

        self._check(run)
        console = Console(stderr=True, highlight=False)
        if self.action in ("list", "delete"):
            return self._manage(run, console)
        if "register" in [stage.name for stage in run.stages]:
            platforms = [str(p).upper() for p in _platforms(run)]
            if SPCS_PLATFORM not in platforms:
                raise MlopsError(f"backend=spcs serves the version this run registers, so registry.target_platforms "
                                 f"must include {SPCS_PLATFORM} (it is {platforms}): set "
                                 f"registry.target_platforms=[WAREHOUSE,{SPCS_PLATFORM}]")
        describe_last = next((s.describe for s in run.stages if s.name == "score"), lambda r: f"{self.action} via SPCS")
        last = Stage("score", lambda r: self._score(r, console), describe_last) if self.action == "score" else \
            Stage("deploy", lambda r: self._deploy(r, console), lambda r: "deploy an SPCS inference service")
        stages = [stage for stage in run.stages if stage.name != "score"] + [last]
        run_stages(dataclasses.replace(run, stages=stages))  # same results dict, same lifecycle hooks
        return None

    def _model_version(self, run):
        from mlops_framework.stages import scoring_version

        return run.registry.model_version(run.registration.model_name, scoring_version(run))

    def _deploy(self, run, console):
        mv = self._model_version(run)
        service = self.ensure_service(mv, run.registration.model_name, console)
        for key, value in {"service": service, "version": mv.version_name,
                           "service_compute_pool": self.service_compute_pool}.items():
            run.summarize(key, value)
        return mv, service

    def ensure_service(self, mv, model_name, console):
        """Reuse the version's service of that name, or create it; return the service name."""
        service = self.service_for(model_name, mv.version_name)
        existing = _service_names(mv.list_services())
        if _short(service) in existing:
            console.print(f"SPCS service {service} of {model_name} {mv.version_name} exists "
                          f"({existing[_short(service)]}): reusing it")
            return service
        arguments = self.create_service_arguments(service)
        console.print(f"creating SPCS service {service} for {model_name} {mv.version_name} on "
                      f"{self.service_compute_pool} (building the image can take several minutes)")
        try:
            mv.create_service(block=True, **arguments)
        except Exception as error:
            if not any(marker in str(error).lower() for marker in _EXISTS):
                raise MlopsError(f"create_service {service} failed: {_one_line(error)}") from error
            if _short(service) not in _service_names(mv.list_services()):
                raise MlopsError(f"an SPCS service named {service} already exists but does not serve "
                                 f"{model_name} {mv.version_name}: delete it or set backend.service_name") from error
            console.print(f"SPCS service {service} was created meanwhile: reusing it")
        return service

    def _score(self, run, console):
        started = time.perf_counter()
        mv = self._model_version(run)
        source = run.scoring.source or run.source
        sink = run.scoring.sink
        if self.batch:
            rows, where = self._run_batch(run, mv, source, sink, console), "SPCS batch inference"
        else:
            service = self.ensure_service(mv, run.registration.model_name, console)
            where = f"SPCS service {service}"
            if _in_snowflake(source, sink):
                try:
                    scored = mv.run(source.snowpark_dataframe(), function_name=self.function_name,
                                    service_name=service)
                except Exception as error:
                    raise MlopsError(f"scoring through {where} failed: {_one_line(error)}") from error
                rows = sink.write_dataframe(stamp(scored, run, mv.version_name))
            else:
                rows = self._score_batches(run, mv, service, source, sink)
            for key, value in {"service": service, "service_compute_pool": self.service_compute_pool}.items():
                run.summarize(key, value)
        run.results["scored"] = {"rows": rows, "seconds": time.perf_counter() - started,
                                 "destination": sink.describe(), "version": mv.version_name, "where": where}

    def _score_batches(self, run, mv, service, source, sink):
        """Any source and sink: each Arrow batch through the service, predictions appended, into the sink."""
        import pyarrow as pa

        inputs = [*run.features.numeric, *run.features.categorical]
        trace = traceability(run, mv.version_name)
        rows = 0
        with sink.open() as writer:
            for batch in source.batches(batch_size=run.scoring.batch_size):
                frame = batch.to_pandas()
                try:
                    scored = mv.run(frame[inputs], function_name=self.function_name, service_name=service)
                except Exception as error:
                    raise MlopsError(f"scoring through SPCS service {service} failed: {_one_line(error)}") from error
                columns = {str(c).strip('"').upper(): c for c in scored.columns}
                missing = [c for c in (SCORE_COLUMN, CLASS_COLUMN) if c not in columns]
                if missing or len(scored) != len(frame):
                    raise MlopsError(f"service {service} returned {len(scored)} rows with columns "
                                     f"{list(scored.columns)} for {len(frame)} input rows; expected "
                                     f"{SCORE_COLUMN} and {CLASS_COLUMN} for every row")
                table = pa.Table.from_batches([batch])
                table = table.append_column(SCORE_COLUMN, pa.array(scored[columns[SCORE_COLUMN]].to_numpy(),
                                                                   type=pa.float64()))
                table = table.append_column(CLASS_COLUMN, pa.array(scored[columns[CLASS_COLUMN]].to_numpy()))
                for name, value in trace.items():
                    table = table.append_column(name, pa.array([value] * len(frame)))
                writer.write(table)
                rows += len(frame)
        return rows

    def _run_batch(self, run, mv, source, sink, console):
        from mlops_snowflake.ml_job import follow_job

        if not isinstance(source, WarehouseSource):
            raise MlopsError(f"backend.batch=true needs a Snowflake scoring source, not {source.describe()}")
        model_name = run.registration.model_name
        arguments = self.batch_arguments(model_name, mv.version_name)
        location = f"{arguments['output_spec'].stage_location}{arguments['job_name']}/"
        console.print(f"SPCS batch inference {arguments['job_name']} of {model_name} {mv.version_name} on "
                      f"{arguments['compute_pool']} -> {location}")
        df = source.snowpark_dataframe()
        self.ensure_batch_stage(df.session, console)
        try:
            job = mv.run_batch(df, **arguments)
        except Exception as error:
            raise MlopsError(f"run_batch failed to start: {_one_line(error)}") from error
        follow_job(job, console, timeout_s=self.timeout_s, poll_s=self.poll_s, what="SPCS batch inference job")
        output = df.session.read.parquet(location)
        names = [str(c).strip('"') for c in output.columns]
        missing = [c for c in (run.features.target, SCORE_COLUMN, CLASS_COLUMN) if c not in names]
        if missing:
            raise MlopsError(f"the batch inference output in {location} lacks {', '.join(missing)} "
                             f"(its columns: {', '.join(names)})")
        for key, value in {"batch_job": job.id, "batch_output": location}.items():
            run.summarize(key, value)
        output = stamp(output, run, mv.version_name)
        if isinstance(sink, WarehouseSink):
            return sink.write_dataframe(output)
        import pyarrow as pa

        rows = 0
        with sink.open() as writer:
            for frame in output.to_pandas_batches():
                writer.write(pa.Table.from_pandas(frame, preserve_index=False))
                rows += len(frame)
        return rows

    def _manage(self, run, console):
        from mlops_framework.stages import scoring_version

        model_name = run.registration.model_name
        mv = run.registry.model_version(model_name, scoring_version(run))
        if self.action == "list":
            services = mv.list_services()
            console.print(services.to_string(index=False) if len(services) else
                          f"{model_name} {mv.version_name} has no SPCS service")
            run.summarize("services", [{str(k): str(v) for k, v in row.items()}
                                       for row in services.to_dict("records")])
            return None
        service = self.service_for(model_name, mv.version_name)
        try:
            mv.delete_service(service)
        except Exception as error:
            raise MlopsError(f"delete_service {service} of {model_name} {mv.version_name} failed: "
                             f"{_one_line(error)}") from error
        console.print(f"deleted SPCS service {service} of {model_name} {mv.version_name}")
        run.summarize("deleted_service", service)
        return None

    def _check(self, run):
        if self.action not in ACTIONS:
            raise MlopsError(f"backend.action must be one of {', '.join(ACTIONS)}, not {self.action!r}")
        if not isinstance(run.registry, WarehouseRegistry):
            raise MlopsError(f"backend=spcs serves versions of the Snowflake Model Registry: use registry=snowflake "
                             f"(the registry is {run.registry.describe()})")
        registering = "register" in [stage.name for stage in run.stages]
        from mlops_snowflake.registry import SnowflakeRegistry

        if (self.gpu_requests is not None and registering and isinstance(run.registry, SnowflakeRegistry)
                and not run.registry.cuda_version):
            raise MlopsError("backend.gpu_requests needs registry.cuda_version (e.g. '12.4'): without it log_model "
                             "packages a CPU runtime only, and create_service/run_batch refuse any GPU request")

    def ensure_batch_stage(self, session, console=None) -> str:
        """``CREATE STAGE IF NOT EXISTS`` for run_batch's output (run_batch needs it to exist); returns it."""
        stage = self.batch_output_location("x").split("/")[0].lstrip("@")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*){0,2}", stage):
            raise MlopsError(f"backend.batch_output_stage must be a [DB.][SCHEMA.]NAME stage, not {stage!r}")
        statement = f"CREATE STAGE IF NOT EXISTS {stage}"
        if console is not None:
            console.print(statement, markup=False)
        try:
            session.sql(statement).collect()
        except Exception as error:
            raise MlopsError(f"{statement} failed: {_one_line(error)}") from error
        return stage


# -------------------------------------------------------------------- helpers


def _in_snowflake(source, sink):
    return isinstance(source, WarehouseSource) and isinstance(sink, WarehouseSink)


def _planned_version(run, *, stages_run=True):
    if run.scoring.version:
        return run.scoring.version
    if stages_run and "register" in [stage.name for stage in run.stages]:
        return "<the version this run registers>"
    return "<the latest version>"


def _platforms(run):
    platforms = run.config.get("registry", {}).get("target_platforms") or []
    return [platforms] if isinstance(platforms, str) else list(platforms)


def _target_platform_warning(run):
    if "register" not in [stage.name for stage in run.stages]:
        return []
    platforms = [str(p).upper() for p in _platforms(run)]
    if SPCS_PLATFORM in platforms:
        return []
    return [f"WARNING: registry.target_platforms is {platforms}: the version this run registers cannot be served "
            f"by SPCS and execute will refuse; set registry.target_platforms=[WAREHOUSE,{SPCS_PLATFORM}]"]


def _service_names(frame):
    """``{NAME: status}`` of ``list_services()`` rows, names unqualified and upper-cased."""
    if frame is None or len(frame) == 0:
        return {}
    columns = {str(c).lower(): c for c in frame.columns}
    name_column, status_column = columns.get("name"), columns.get("status")
    if name_column is None:
        return {}
    return {_short(row[name_column]): (row[status_column] if status_column else "?")
            for _, row in frame.iterrows()}


def _short(name):
    last = str(name).split(".")[-1]
    return last[1:-1] if len(last) > 1 and last[0] == last[-1] == '"' else last.upper()


class _Raw(str):
    """Shown as is in a plan's call (not quoted)."""

    def __repr__(self):
        return str(self)


def _text(value):
    return None if value is None else str(value)


def _call(function, positional, keywords):
    parts = [*positional, *(f"{key}={value!r}" for key, value in keywords.items())]
    return f"{function}({', '.join(parts)})"
