"""``backend=ml_job``: the pipeline runs as a Snowflake ML Job on a compute pool.

``execute`` builds a self-contained payload directory (``build_payload``), submits it with
``snowflake.ml.jobs.submit_directory``, follows the job (status, elapsed time, logs as they grow) and
prints its result; FAILED, INTERNAL_ERROR and CANCELLED end in ``MlopsError`` with the last log lines.
With ``schedule`` set it deploys a Snowflake TASK that runs the same payload on a cron instead.
Inside the job, ``job_entrypoint.py`` runs the stages in-process (``backend: {kind: local}``) while data,
registry and sink stay whatever the config names (Snowflake tables and registry, normally).
"""

import json
import os
import re
import shutil
import time
from pathlib import Path

from mlops_framework.contracts import PlannedRegistry, SqlSource
from mlops_framework.errors import MlopsError
from mlops_framework.stages import planned_registration

ENTRYPOINT = "job_entrypoint.py"
RESOLVED_CONFIG = "resolved_config.yaml"
MANIFEST = "payload.json"
FAILED_STATES = ("FAILED", "INTERNAL_ERROR", "CANCELLED", "DELETED")
DONE_STATE = "DONE"
LOG_TAIL_LINES = 30
# Pure-Python packages the core imports that the ML Container Runtime may lack: shipped in the
# payload so that the job needs no PyPI access (no external access integration) for them.
VENDORED_PACKAGES = ("pluggy",)
_IDENTIFIER = re.compile(r'^([A-Za-z_][A-Za-z0-9_$]*|"[^"]+")(\.([A-Za-z_][A-Za-z0-9_$]*|"[^"]+")){0,2}$')
_SKIP_PARTS = {"__pycache__", "tests", ".pytest_cache"}


class MLJobBackend:
    """Submits the run's stages as a Snowflake ML Job (``submit_directory``) or schedules them as a TASK."""

    def __init__(self, connection=None, compute_pool=None, cpu_compute_pool="SYSTEM_COMPUTE_POOL_CPU",
                 gpu_compute_pool="SYSTEM_COMPUTE_POOL_GPU", stage_name="MLOPS_JOBS", target_instances=1,
                 min_instances=None, pip_requirements=None, external_access_integrations=None, env_vars=None,
                 runtime_environment=None, query_warehouse=None, job_name=None, schedule=None, task_name=None,
                 task_warehouse=None, timeout_s=7200, poll_s=10):
        self.connection = connection
        self.compute_pool = compute_pool
        self.cpu_compute_pool = cpu_compute_pool
        self.gpu_compute_pool = gpu_compute_pool
        self.stage_name = stage_name
        self.target_instances = target_instances
        self.min_instances = min_instances
        self.pip_requirements = pip_requirements
        self.external_access_integrations = external_access_integrations
        self.env_vars = env_vars
        self.runtime_environment = runtime_environment
        self.query_warehouse = query_warehouse
        self.job_name = job_name
        self.schedule = schedule
        self.task_name = task_name
        self.task_warehouse = task_warehouse
        self.timeout_s = timeout_s
        self.poll_s = poll_s

    # ---------------------------------------------------------------- what would run (no connection)

    def choose_pool(self, run):
        """``(compute pool, why)``: the configured pool, else GPU when ``model.params.device`` is CUDA."""
        if self.compute_pool:
            return self.compute_pool, "backend.compute_pool"
        device = str((run.model.params or {}).get("device") or "cpu")
        if device.lower().startswith("cuda"):
            return self.gpu_compute_pool, f"model.params.device={device} asks for CUDA -> backend.gpu_compute_pool"
        return self.cpu_compute_pool, f"model.params.device={device} -> backend.cpu_compute_pool"

    def job_name_for(self, run):
        if self.job_name:
            return _identifier(self.job_name, "backend.job_name")
        return "MLOPS_" + re.sub(r"[^A-Za-z0-9_]", "_", run.registration.model_name).upper()

    def submit_arguments(self, run):
        """Keyword arguments for ``submit_directory`` (and ``MLJobDefinition.register``), set ones only."""
        if int(self.target_instances) < 1:
            raise MlopsError(f"backend.target_instances must be at least 1, not {self.target_instances}")
        if int(self.target_instances) > 1:
            raise MlopsError(f"backend.target_instances={self.target_instances}: the job's stages train with a plain "
                             f"fit on the head node, so extra nodes would be billed and idle; use one instance (and a "
                             f"bigger compute pool). snowflake-ml 2.6's parallel=True would only start the same "
                             f"pipeline on every node, and its distributed XGBEstimator "
                             f"(snowflake.ml.modeling.distributors) ships in the job runtime, not in the PyPI package "
                             f"this framework is tested with")
        if self.min_instances is not None and int(self.min_instances) != 1:
            raise MlopsError(f"backend.min_instances must be 1 (one instance runs the job), not {self.min_instances}")
        arguments = {
            "entrypoint": ENTRYPOINT,
            "stage_name": self.stage_name,
            "target_instances": int(self.target_instances),
            "name": self.job_name_for(run),
            "comment": job_comment(run),
            # print() inside the job reaches get_logs() as it happens, not at exit
            "env_vars": {"PYTHONUNBUFFERED": "1", **{k: str(v) for k, v in (self.env_vars or {}).items()}},
        }
        optional = {
            "min_instances": self.min_instances,
            "pip_requirements": list(self.pip_requirements or []) or None,
            "external_access_integrations": list(self.external_access_integrations or []) or None,
            "runtime_environment": self.runtime_environment,
            "query_warehouse": self.query_warehouse,
        }
        arguments.update({key: value for key, value in optional.items() if value is not None})
        return arguments

    def task_sql(self, run, call_sql):
        """The ``CREATE OR REPLACE TASK`` statement running ``call_sql`` on ``schedule``, and its RESUME."""
        cron = _cron(self.schedule)
        task = self.task_name_for(run)
        warehouse = self.task_warehouse or self.query_warehouse or (self.connection or {}).get("warehouse")
        lines = [f"CREATE OR REPLACE TASK {task}"]
        if warehouse:
            lines.append(f"  WAREHOUSE = {_identifier(warehouse, 'backend.task_warehouse')}")
        else:
            lines.append("  USER_TASK_MANAGED_INITIAL_WAREHOUSE_SIZE = 'XSMALL'")
        lines += [f"  SCHEDULE = 'USING CRON {cron}'",
                  f"  COMMENT = 'mlops-framework: {run.registration.model_name} pipeline as ML Job {self.job_name_for(run)}'",
                  f"AS {call_sql}"]
        return ["\n".join(lines), f"ALTER TASK {task} RESUME"]

    def task_name_for(self, run):
        if self.task_name:
            return _identifier(self.task_name, "backend.task_name")
        return self.job_name_for(run) + "_TASK"

    def plan(self, run):
        from mlops_snowflake import connection as connection_module

        pool, why = self.choose_pool(run)
        files = payload_files(run)
        arguments = self.submit_arguments(run)
        lines = [
            f"connect: one Snowpark session to {connection_module.describe(self.connection)} (submits; the job "
            f"itself uses the container's own session)",
            f"ML Job on compute pool {pool} ({why}), {arguments['target_instances']} instance(s)"
            + (f", at least {self.min_instances} to start" if self.min_instances else ""),
            f"payload: {_describe_files(files)}; entrypoint {ENTRYPOINT}; "
            f"{RESOLVED_CONFIG} is this config with backend -> {{kind: local}}",
        ]
        lines += [f"  in the job, {line}" for line in _stage_lines(run)]
        lines += _warnings(run)
        if self.schedule:
            database = (self.connection or {}).get("database") or "<current database>"
            schema = (self.connection or {}).get("schema") or "<current schema>"
            keywords = {key: value for key, value in arguments.items() if key != "stage_name"}
            register = _call("snowflake.ml.jobs.MLJobDefinition.register",
                             ["<payload dir>", repr(pool), repr(self.stage_name), "session"],
                             {"overwrite": True, **keywords})
            call_sql = (f"CALL SYSTEM$EXECUTE_ML_JOB('{database}.{schema}.{arguments['name']}_', '{pool}', "
                        f"<spec options: payload stage path, env vars, runtime>, <job options: ASYNC true, "
                        f"warehouse, instances>)  -- exact text from MLJobDefinition.to_sql(use_async=True) at deploy")
            lines.append(f"upload the payload to @{self.stage_name}/{arguments['name']}: {register}")
            lines += [f"SQL: {statement}" for statement in self.task_sql(run, call_sql)]
            lines.append("preview: CALL SYSTEM$EXECUTE_ML_JOB (from MLJobDefinition.to_sql) is a preview, undocumented "
                         "Snowflake feature; the job name's trailing '_' asks the server for a unique suffix")
            lines.append(SCHEDULE_PATH_NOTE)
            lines.append("nothing runs now: the TASK starts the job on its schedule "
                         "(SHOW TASKS / TASK_HISTORY and snowflake.ml.jobs.list_jobs() follow it)")
            return lines
        lines.append(f"submit: {_call('snowflake.ml.jobs.submit_directory', ['<payload dir>', repr(pool)], arguments)}")
        lines.append(f"wait up to {self.timeout_s}s, polling every {self.poll_s}s, streaming job.get_logs(); "
                     f"print job.result(); {', '.join(FAILED_STATES[:3])} -> error with the last "
                     f"{LOG_TAIL_LINES} log lines")
        return lines

    # ---------------------------------------------------------------- doing it

    def execute(self, run):
        import tempfile

        from rich.console import Console

        console = Console(stderr=True, highlight=False)
        pool, why = self.choose_pool(run)
        arguments = self.submit_arguments(run)
        if self.schedule:
            self.task_sql(run, "")  # refuse a bad cron or name before anything is uploaded
        with tempfile.TemporaryDirectory(prefix="mlops-job-") as directory:
            files = build_payload(run, directory)
            console.print(f"payload: {_describe_files(files)}")
            session = self._session()
            if self.schedule:
                return self._deploy_task(run, directory, pool, arguments, session, console)
            from snowflake.ml import jobs

            console.print(f"submitting ML Job {arguments['name']} to compute pool {pool} ({why})")
            job = jobs.submit_directory(directory, pool, session=session, **arguments)
        status, _ = follow_job(job, console, timeout_s=self.timeout_s, poll_s=self.poll_s, where=f"on {pool}")
        for key, value in {"job_id": job.id, "job_status": status, "compute_pool": pool}.items():
            run.summarize(key, value)
        try:
            result = job.result()
        except Exception as error:  # the job ran but its result cannot be read
            raise MlopsError(f"ML Job {job.id} is DONE but its result could not be read: {error}") from error
        console.print(f"ML Job {job.id} DONE; result:\n{json.dumps(result, indent=2, default=str)}", markup=False)
        if isinstance(result, dict):  # the job's RunResult: what its stages left, as if they ran here
            from mlops_framework.runner import RunResult

            job_result = RunResult.from_dict(result)
            if job_result.version:
                run.results["version"] = {"model_name": job_result.model, "version_name": job_result.version}
            if job_result.metrics:
                run.results["metrics"] = job_result.metrics
            if job_result.scored:
                run.results["scored"] = job_result.scored
            run.summarize("job_result", result)
        return None

    def _deploy_task(self, run, directory, pool, arguments, session, console):
        from snowflake.ml.jobs import MLJobDefinition

        arguments = {key: value for key, value in arguments.items() if key != "stage_name"}
        definition = MLJobDefinition.register(directory, pool, self.stage_name, session, overwrite=True, **arguments)
        statements = self.task_sql(run, definition.to_sql(use_async=True))
        for statement in statements:
            console.print(statement, markup=False)
            session.sql(statement).collect()
        task = self.task_name_for(run)
        for key, value in {"task": task, "schedule": self.schedule, "compute_pool": pool,
                           "job_definition": arguments["name"]}.items():
            run.summarize(key, value)
        console.print(f"TASK {task} deployed and resumed: runs {arguments['name']} on {pool} at '{self.schedule}'")

    def _session(self):
        from mlops_snowflake import connection as connection_module

        return connection_module.resolve(self.connection).session()


SCHEDULE_PATH_NOTE = (
    "why not Code Bundles: snowflake-ml 2.6's register_code_bundle/EXECUTE CODE BUNDLE are Public Preview as well "
    "(snowflake/ml/jobs/code_bundle.py: 'Do not use them in production'), and EXECUTE CODE BUNDLE keeps running "
    "until its job ends (register_job_from_code_bundle sends it with collect_nowait and polls CODE_BUNDLE_HISTORY "
    "for the job id), so a TASK running it would be held, and bound by the task timeout, for the whole job; "
    "to_sql(use_async=True) sends ASYNC true and returns once the job is started")


def job_comment(run) -> str:
    """The comment each job carries (``SHOW SERVICES``, ``list_jobs``): the framework, the model, the run's
    directory and its config hash (the one the promotion history records)."""
    where = f"run {run.output_dir.name}, " if run.output_dir else ""
    return f"mlops-framework: {run.registration.model_name} pipeline, {where}config {run.provenance.config_hash}"


def follow_job(job, console, *, timeout_s, poll_s, what="ML Job", where=""):
    """Poll ``job.status`` until DONE, printing new log lines as they come; return ``(status, log lines)``.

    FAILED, INTERNAL_ERROR, CANCELLED (and DELETED) raise ``MlopsError`` with the last log lines; so does
    still running after ``timeout_s`` (the job is left running, and the message says how to follow it).
    """
    started = time.monotonic()
    printed = 0
    lines = []
    status = "PENDING"
    with console.status(f"{what} {job.id}: {status}") as display:
        while True:
            status = job.status
            elapsed = time.monotonic() - started
            display.update(f"{what} {job.id}: {status} {_elapsed(elapsed)}")
            if status != "PENDING":
                lines = _logs(job) or lines
                for line in lines[printed:]:
                    console.print(line, markup=False)
                printed = max(printed, len(lines))
            if status == DONE_STATE or status in FAILED_STATES or elapsed >= timeout_s:
                break
            time.sleep(poll_s)
    console.print(f"{what} {job.id}: {status} after {_elapsed(time.monotonic() - started)}")
    if status in FAILED_STATES:
        tail = "\n".join(lines[-LOG_TAIL_LINES:]) or "(no logs)"
        raise MlopsError(f"{what} {job.id} ended {status}{' ' + where if where else ''}. "
                         f"Last {LOG_TAIL_LINES} log lines:\n{tail}")
    if status != DONE_STATE:
        raise MlopsError(f"{what} {job.id} is still {status} after {timeout_s}s; it keeps running. Follow it "
                         f"with snowflake.ml.jobs.get_job({job.id!r}) (.status, .get_logs(), .cancel()) or raise "
                         f"backend.timeout_s")
    return status, lines


# -------------------------------------------------------------------- the payload


def payload_files(run):
    """``{path inside the payload: source}``; a source is a ``Path`` to copy or the text to write."""
    import importlib

    import mlops_framework
    import mlops_snowflake
    from mlops_framework import config as core_config
    from mlops_framework.plugins import DEFAULT_PLUGINS

    files = {}
    core = Path(mlops_framework.__file__).resolve().parent
    plugin = Path(mlops_snowflake.__file__).resolve().parent
    _add_tree(files, core, "mlops_framework")
    for builtin in DEFAULT_PLUGINS.values():  # the job runs its stages on the built-in local backend
        _add_tree(files, Path(importlib.import_module(builtin).__file__).resolve().parent, builtin)
    _add_tree(files, plugin, "mlops_snowflake")
    conf = core_config.conf_dir().resolve()
    if core not in conf.parents:  # a source checkout: conf/ beside the package, where conf_dir() looks
        _add_tree(files, conf, "conf")
    for name in VENDORED_PACKAGES:
        module = __import__(name)
        _add_tree(files, Path(module.__file__).resolve().parent, name)
    files[ENTRYPOINT] = plugin / "job_entrypoint.py"
    files[RESOLVED_CONFIG] = job_config_text(run.config)
    files[MANIFEST] = json.dumps(manifest(run), indent=2, default=str)
    return files


def job_config_text(config):
    """The resolved config the job runs: the same, but its stages run in the job's own process."""
    import yaml

    return yaml.safe_dump({**config, "backend": {"kind": "local"}}, sort_keys=False)


def manifest(run):
    """What the job needs besides the config: the plugins to register and where this payload came from."""
    return {
        "plugins": plugin_entry_points(),
        "model_name": run.registration.model_name,
        "git_commit": _git_commit(),
        "submitted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def plugin_entry_points():
    """``[[name, "module[:attr]"], ...]`` of this payload's plugins, as the submitting process sees them.

    The job has no installed distributions, so it registers these itself instead of reading entry points.
    Only plugins shipped in the payload (``mlops_snowflake``) are listed; any other needs pip_requirements.
    """
    import importlib.metadata

    from mlops_framework.hookspecs import PROJECT
    from mlops_framework.plugins import DISABLE_ENV

    disabled = {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}
    found = [[ep.name, ep.value] for ep in importlib.metadata.entry_points(group=PROJECT)
             if ep.name not in disabled and ep.value.split(":")[0].split(".")[0] == "mlops_snowflake"]
    return found or [["mlops_snowflake", "mlops_snowflake"]]


def build_payload(run, directory):
    """Write the payload into ``directory``; return its files, sorted."""
    directory = Path(directory)
    for name, source in payload_files(run).items():
        target = directory / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(source, Path):
            shutil.copyfile(source, target)
        else:
            target.write_text(source)
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


def _add_tree(files, root, prefix):
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if path.is_file() and not _SKIP_PARTS.intersection(relative.parts) and path.suffix not in (".pyc", ".pyo"):
            files[f"{prefix}/{relative.as_posix()}"] = path


# -------------------------------------------------------------------- helpers


def _logs(job):
    try:
        logs = job.get_logs(as_list=True)
    except Exception:  # no container yet, or the log service is briefly unavailable: try next poll
        return []
    if isinstance(logs, str):
        logs = logs.splitlines()
    return list(logs)


def _elapsed(seconds):
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}m{seconds:02d}s"


def _cron(schedule):
    fields = str(schedule).split()
    if len(fields) != 6:
        raise MlopsError(f"backend.schedule must be a cron with a time zone, five fields and a zone such as "
                         f"'0 6 * * 1 UTC', not {schedule!r}")
    if "'" in str(schedule):
        raise MlopsError(f"backend.schedule must not contain quotes: {schedule!r}")
    return " ".join(fields)


def _identifier(name, where):
    if not _IDENTIFIER.match(str(name)):
        raise MlopsError(f"{where} must be a Snowflake identifier (optionally DB.SCHEMA.NAME), not {name!r}")
    return str(name)


def _describe_files(files):
    """``job_entrypoint.py, mlops_framework/ (17 files), ...``: top-level files, then directories."""
    counts = {}
    for name in files:
        top, _, rest = name.partition("/")
        key = f"{top}/" if rest else top
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(key if not key.endswith("/") else f"{key} ({count} files)"
                     for key, count in sorted(counts.items(), key=lambda item: (item[0].endswith("/"), item[0])))


def _stage_lines(run):
    """What each stage does inside the job, with the Snowflake operations where the component can say."""
    lines = []
    for stage in run.stages:
        if stage.name == "load" and isinstance(run.source, SqlSource):
            lines.append(f"load: {run.source.sql(run.features.columns)}")
        elif stage.name == "register" and isinstance(run.registry, PlannedRegistry):
            lines += [f"register: {operation}" for operation in planned_registration(run)]
        else:
            lines.append(f"{stage.name}: {stage.describe(run)}")
    return lines


def _call(function, positional, keywords):
    parts = [*positional, *(f"{key}={value!r}" for key, value in keywords.items())]
    return f"{function}({', '.join(parts)})"


def _warnings(run):
    warnings = []
    registry_kind = run.config.get("registry", {}).get("kind")
    if registry_kind == "local":
        warnings.append("WARNING: registry=local writes the model to the job container's disk, which is discarded "
                        "when the job ends: use registry=snowflake")
    sink = run.config.get("scoring", {}).get("sink", {})
    if "score" in [stage.name for stage in run.stages] and sink.get("kind") in ("duckdb", "parquet") and \
            "://" not in str(sink.get("path", "")):
        warnings.append(f"WARNING: scoring.sink is a local {sink.get('kind')} file, written on the job container's "
                        f"disk and discarded: use a Snowflake table sink")
    return warnings


def _git_commit():
    from mlops_framework.lineage import git_commit

    return git_commit()
