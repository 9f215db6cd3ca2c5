"""The standing adversarial suite: hostile config, corrupt registry files, slow endpoints, crashes in the
middle of multi-file updates, secrets given in every place a secret can be given. Each case asserts one
message (no traceback), exit 2 where the CLI is involved, and a registry and warehouse byte-identical to
before. Add a case here for every new attack."""

import hashlib
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import duckdb
import pytest

from run_sizes import SMALL
from mlops_framework import config
from mlops_framework.errors import MlopsError
from mlops_local.registry import LocalRegistry

CANARIES = {"tag": "CANARY-TAG-91ab", "url": "CANARY-URL-77cd", "header": "CANARY-HDR-5e0f",
            "env": "CANARY-ENV-3c21", "pwd": "CANARY-PWD-a4b2"}


def snapshot(root):
    """Every file under ``root`` with its sha256: equal snapshots mean byte-identical trees."""
    root = Path(root)
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.name.endswith(".lock")}


def one_message(result):
    """Exit 2 and exactly one ``mlops: error:`` line, no traceback; the message."""
    assert result.returncode == 2, f"exit {result.returncode}\n{result.stdout}\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("mlops: error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


class _Model:
    def save(self, directory):
        (Path(directory) / "weights.txt").write_text("w")


def registry_with_versions(root, count=3):
    registry = LocalRegistry(root)
    for _ in range(count):
        registry.log_model(_Model(), model_name="M")
    return registry


# ------------------------------------------------------------------ secrets
@pytest.mark.parametrize("key", ["db_password", "client_secret", "private_key_file_pwd", "passcode", "X-Token",
                                 "Authorization", "api_key", "credentials", "private_key", "key", "pwd"])
def test_redaction_covers_secret_key_patterns(key):
    assert config.redact({"outer": {key: "hunter2-value"}}) == {"outer": {key: config.REDACTED}}


@pytest.mark.parametrize("key", ["private_key_file", "join_keys", "model_name", "partition_by"])
def test_redaction_keeps_plain_keys(key):
    assert config.redact({key: "visible"}) == {key: "visible"}


def test_urls_with_credentials_are_masked():
    assert config.redact({"url": "https://bob:s3cr3t@hooks.example.com/x"}) == \
        {"url": f"https://{config.REDACTED}@hooks.example.com/x"}


def test_secret_resolver_reads_environment_and_file(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    config.register_resolvers()
    monkeypatch.setenv("ADV_SECRET", CANARIES["env"])
    (tmp_path / "token").write_text("FILE-SECRET-123\n")
    cfg = OmegaConf.create({"hook": {"headers": {"X-Custom": "${secret:ADV_SECRET}"},
                                     "other": f"${{secret:file:{tmp_path / 'token'}}}"}})
    values = config.resolved_values(cfg)
    assert values["hook"] == {"headers": {"X-Custom": CANARIES["env"]}, "other": "FILE-SECRET-123"}
    assert CANARIES["env"] not in json.dumps(config.resolved(cfg))
    assert "FILE-SECRET-123" not in json.dumps(config.resolved(cfg))


def test_missing_secret_is_one_message(monkeypatch):
    from omegaconf import OmegaConf

    monkeypatch.delenv("ADV_NOT_SET", raising=False)
    with pytest.raises(MlopsError, match="ADV_NOT_SET"):
        config.resolved_values(OmegaConf.create({"a": "${secret:ADV_NOT_SET}"}))


class _Receiver(http.server.BaseHTTPRequestHandler):
    received = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Receiver.received.append((dict(self.headers), self.path, body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    _Receiver.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], _Receiver.received
    server.shutdown()


def test_secrets_reach_the_webhook_intact_and_no_file_or_output(tmp_path, receiver):
    """A full run whose alerts fire: the webhook gets the real X-Token and Authorization headers, while no
    file under the home (Hydra's own included), no registry record and no printed line holds a secret."""
    port, received = receiver
    home = tmp_path / "home"
    hook = (f'{{kind: webhook, url: "http://user:{CANARIES["url"]}@127.0.0.1:{port}/hook", '
            f'headers: {{X-Token: {CANARIES["header"]}, Authorization: "${{secret:ADV_HOOK_AUTH}}"}}}}')
    env = {**os.environ, "MLOPS_HOME": str(home), "ADV_HOOK_AUTH": f"Bearer {CANARIES['env']}"}
    result = subprocess.run(
        [sys.executable, "-m", "mlops_framework.cli", "run", *SMALL, f"+tags.db_password={CANARIES['tag']}",
         f"+connection.private_key_file_pwd={CANARIES['pwd']}",
         f"+alerts.notifiers.hook={hook}", "alerts.rules.f1_low.threshold=1.01", "pipeline=lifecycle"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert received, "the webhook was not called"
    headers = received[0][0]
    assert headers["X-Token"] == CANARIES["header"]
    assert headers["Authorization"] == f"Bearer {CANARIES['env']}"  # the header given wins over the url's
    printed = result.stdout + result.stderr
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.parent.name == ".hydra" for p in files)
    for canary in CANARIES.values():
        assert canary not in printed
        for path in files:
            assert canary.encode() not in path.read_bytes(), f"{canary} written to {path}"


def test_secret_on_the_command_line_never_reaches_hydra_files(tmp_path):
    """`+tags.db_password=...` of a run that fails its config check: Hydra's files hold no secret either."""
    home = tmp_path / "home"
    result = subprocess.run(
        [sys.executable, "-m", "mlops_framework.cli", "run", f"+tags.db_password={CANARIES['tag']}",
         "model.threshold=2"],
        cwd=tmp_path, env={**os.environ, "MLOPS_HOME": str(home)}, capture_output=True, text=True, timeout=300)
    assert "model.threshold" in one_message(result)
    hydra_files = list(home.rglob(".hydra/*.yaml"))
    assert hydra_files
    for path in hydra_files:
        assert CANARIES["tag"] not in path.read_text(), path
    assert not (home / "registry").exists()


def test_notifier_warning_masks_url_credentials(capsys):
    from mlops_framework.alerts import Alert, notify
    from mlops_local.notifiers import WebhookNotifier

    hook = WebhookNotifier(url=f"http://user:{CANARIES['url']}@127.0.0.1:9/x", timeout=2)
    alert = Alert(rule="r", metric="f1", op="<", threshold=0.7, value=0.5, window_start="a", window_end="b")
    delivery = notify({"hook": hook}, [alert])
    printed = capsys.readouterr().err
    assert "failed" in printed and CANARIES["url"] not in printed and CANARIES["url"] not in delivery["hook"]


# ------------------------------------------------------------------ hangs
def test_a_slow_drip_webhook_is_abandoned_at_its_total_deadline():
    """One byte a second never trips a per-operation socket timeout; the total deadline (3 s) does."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stop = threading.Event()

    def drip():
        connection, _ = listener.accept()
        connection.recv(65536)
        for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 100:
            if stop.wait(1):
                break
            connection.send(bytes([byte]))
        connection.close()

    threading.Thread(target=drip, daemon=True).start()
    from mlops_local.notifiers import WebhookNotifier

    started = time.monotonic()
    with pytest.raises(TimeoutError, match="3s in total"):
        WebhookNotifier(url=f"http://127.0.0.1:{listener.getsockname()[1]}/", timeout=3).notify([])
    elapsed = time.monotonic() - started
    stop.set()
    listener.close()
    assert elapsed < 30, elapsed  # without the deadline: about 140 s


class SlowDrip:
    """A TCP server that answers every connection with ``reply`` one byte a second and never reads: a per-
    operation socket timeout (longer than a second) never trips. ``connections`` counts who came."""

    def __init__(self, reply: bytes):
        self.reply = reply
        self.connections = 0
        self.stop = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stop.is_set():
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._drip, args=(connection,), daemon=True).start()

    def _drip(self, connection):
        with connection:
            for byte in self.reply:
                if self.stop.wait(1):
                    return
                try:
                    connection.send(bytes([byte]))
                except OSError:
                    return

    def close(self):
        self.stop.set()
        self.listener.close()


@pytest.fixture
def slow_smtp():
    server = SlowDrip(b"220 slow.example.com ESMTP \r\n")
    yield server
    server.close()


@pytest.fixture
def slow_webhook():
    server = SlowDrip(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 100)
    yield server
    server.close()


def test_a_slow_drip_smtp_server_is_abandoned_at_its_total_deadline(slow_smtp):
    from mlops_local.notifiers import EmailNotifier

    with pytest.raises(TimeoutError, match="2s in total"):
        EmailNotifier(host="127.0.0.1", port=slow_smtp.port, to=["ops@example.com"], timeout=2).notify([])
    assert slow_smtp.connections == 1


def test_late_notifiers_do_not_stop_retrain_and_promotion(mlops, home, slow_smtp, slow_webhook):
    """A lifecycle run whose alerts fire at a dripping SMTP server and a dripping webhook: each delivery is
    abandoned at its deadline with a warning, and the run retrains, registers, promotes and scores to the end."""
    result = mlops("run", *SMALL, "pipeline=lifecycle", "alerts.rules.f1_low.threshold=1.01",
                   f"+alerts.notifiers.mail={{kind: email, host: 127.0.0.1, port: {slow_smtp.port}, "
                   "to: [ops@example.com], timeout: 2}",
                   f"+alerts.notifiers.hook={{kind: webhook, url: 'http://127.0.0.1:{slow_webhook.port}/', timeout: 2}}")
    assert result.returncode == 0, result.stderr[-3000:]
    for name, what in (("mail", "email"), ("hook", "webhook POST")):
        warnings = [line for line in result.stderr.splitlines() if line.startswith(f"mlops: warning: notifier {name} ")]
        assert len(warnings) == 2 and all(f"{what} took longer than 2s in total" in w for w in warnings), result.stderr
    assert slow_smtp.connections == slow_webhook.connections == 2  # both monitor runs tried to deliver
    registry = LocalRegistry(home / "registry")
    assert [v["version_name"] for v in registry.versions("MORTGAGE_XGB")] == ["v1", "v2"]
    assert [(e["new_version"], e["event"]) for e in registry.history("MORTGAGE_XGB")][-1][0] == "v2"
    assert "report " in result.stdout


# ------------------------------------------------------------------ SQL fragments
ATTACK = "WEEK <= 1; ATTACH '{path}' AS w; DROP TABLE w.PREDICTIONS; SELECT 0 AS __mlops_row"


@pytest.mark.parametrize("text", ["WEEK <= 1; DROP TABLE t", "1=1) ; DROP TABLE t; SELECT (1", "WEEK <= (",
                                  "", None, 5])
def test_sql_fragments_must_be_one_expression(text):
    from mlops_local.sources import check_sql_expression

    with pytest.raises(MlopsError):
        check_sql_expression(text, where="data.where")


@pytest.mark.parametrize("text", ["WEEK BETWEEN 1 AND 5", "COUNTY_NAME = 'a;b'", "(WEEK < 3) OR (WEEK > 7)"])
def test_sql_expressions_pass(text):
    from mlops_local.sources import check_sql_expression

    assert check_sql_expression(text, where="data.where") == text


def test_monitor_baseline_injection_leaves_the_warehouse_intact(tmp_path):
    from mlops_framework.monitoring import check_expression

    warehouse = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(warehouse)) as con:
        con.execute("CREATE TABLE PREDICTIONS AS SELECT 1 AS WEEK")
    before = snapshot(tmp_path)
    with pytest.raises(MlopsError, match="monitor.baseline"):
        check_expression(ATTACK.format(path=warehouse), "monitor.baseline")
    assert snapshot(tmp_path) == before
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM PREDICTIONS").fetchall() == [(1,)]


def test_monitor_baseline_injection_through_the_cli_is_one_message(mlops, home):
    """The attack as a user types it: `monitor.baseline` holding a second statement that drops the
    predictions table. One message, exit 2, the home byte-identical."""
    home.mkdir()
    with duckdb.connect(str(home / "warehouse.duckdb")) as con:
        con.execute("CREATE TABLE PREDICTIONS_WITH_GROUND_TRUTH AS SELECT 1 AS WEEK")
    before = snapshot(home)
    attack = ATTACK.format(path=home / "warehouse.duckdb").replace("PREDICTIONS", "PREDICTIONS_WITH_GROUND_TRUTH")
    assert "is not a valid override" in one_message(mlops("run", "pipeline=monitor", f"monitor.baseline={attack}"))
    assert "monitor.baseline" in one_message(mlops("run", "pipeline=monitor", f'monitor.baseline="{attack}"'))
    assert {k: v for k, v in snapshot(home).items() if not k.startswith("runs/")} == \
        {k: v for k, v in before.items() if not k.startswith("runs/")}


# ------------------------------------------------------------------ values checked before any write
@pytest.mark.parametrize("override, expected", [
    ("model.params.n_estimators=-5", "n_estimators"),
    ("model.params.n_estimators=0", "n_estimators"),
    ("model.threshold=2", "model.threshold"),
    ("model.threshold=0", "model.threshold"),
    ("model.threshold=abc", "model.threshold"),
    ("split.holdout=abc", "split.holdout"),
    ("scoring.version=[v1]", "scoring.version"),  # 123 names version "123", as Hydra reads a number
    ("scoring.sink.table=2024", "scoring.sink.table"),
    ("registry.model_name=${nope}", "nope"),
    ("registry.model_name=${oc.env:ADV_UNSET_VARIABLE}", "ADV_UNSET_VARIABLE"),
    ("registry.model_name=${secret:ADV_UNSET_VARIABLE}", "ADV_UNSET_VARIABLE"),
    ("+tags.a=${tags.b}", "tags"),
])
def test_bad_values_are_one_message_in_plan(override, expected, mlops, home):
    assert expected in one_message(mlops("plan", override))
    assert not home.exists()


@pytest.mark.parametrize("overrides, expected", [
    (["data=csv", "data.path=x.csv", "data.weeks=2"], "Could not override 'data.weeks'"),  # a key the option lacks
    (["data=nope"], "Could not find 'data/nope' Available options in 'data': csv"),
    (["monitor.baseline=WEEK <= 1; DROP TABLE X"], "is not a valid override"),
])
def test_config_hydra_cannot_compose_is_one_message_in_run(overrides, expected, mlops, home):
    """`mlops run` with a typo'd key or option: Hydra's block (exit 1) becomes one line and exit 2."""
    assert expected in one_message(mlops("run", *overrides))
    assert not home.exists()


def test_bad_values_are_one_message_in_run_and_nothing_registered(mlops, home):
    for override in ("model.params.n_estimators=-5", "model.threshold=2", "registry.model_name=${nope}"):
        one_message(mlops("run", *SMALL, override))
    assert not (home / "registry").exists() and not (home / "warehouse.duckdb").exists()


def test_cyclic_interpolation_is_one_message(mlops):
    assert "Recursive" in one_message(mlops("plan", "+tags.a=${tags.b}", "+tags.b=${tags.a}"))


# ------------------------------------------------------------------ corrupt registry files
@pytest.mark.parametrize("damaged, command", [
    ("M/aliases.json", ["registry", "show", "M", "PRODUCTION"]),
    ("M/versions/v1/version.json", ["registry", "versions", "M"]),
    ("M/model.json", ["registry", "models"]),
])
def test_corrupt_registry_files_are_one_message(damaged, command, mlops, home):
    registry = registry_with_versions(home / "registry", 1)
    registry.set_alias("M", "v1", "PRODUCTION")
    (home / "registry" / damaged).write_text('{"torn": ')
    before = snapshot(home)
    assert "not valid JSON" in one_message(mlops(*command))
    assert snapshot(home) == before


def test_an_alias_pointing_outside_the_registry_is_refused(tmp_path):
    registry = registry_with_versions(tmp_path / "registry", 1)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "version.json").write_text(json.dumps({"version_name": "evil"}))
    (tmp_path / "registry" / "M" / "aliases.json").write_text(json.dumps({"PRODUCTION": "../../outside"}))
    with pytest.raises(MlopsError, match="not a version name"):
        registry.get_version("M", "PRODUCTION")
    with pytest.raises(MlopsError, match="not a version name"):
        registry.artifact_path("M", "PRODUCTION")


def test_a_torn_history_line_is_dropped_and_the_next_move_is_readable(tmp_path):
    registry = registry_with_versions(tmp_path / "registry", 2)
    registry.set_alias("M", "v1", "PRODUCTION")
    with open(tmp_path / "registry" / "M" / "history.jsonl", "a") as f:
        f.write('{"when": "2026-01-01", "alias": "PROD')  # a crash mid-append
    registry.set_alias("M", "v2", "PRODUCTION")
    history = registry.history("M")
    assert [e["new_version"] for e in history] == ["v1", "v2"]
    assert registry.aliases("M") == {"PRODUCTION": "v2"}


def test_a_corrupt_history_line_is_one_message(tmp_path):
    registry = registry_with_versions(tmp_path / "registry", 1)
    registry.set_alias("M", "v1", "PRODUCTION")
    with open(tmp_path / "registry" / "M" / "history.jsonl", "a") as f:
        f.write("not json\n")
    with pytest.raises(MlopsError, match="line 2 is not a history record"):
        registry.history("M")


# ------------------------------------------------------------------ crashes inside multi-file updates
CRASH_CHILD = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from mlops_local import registry as module

    root, marker, action, stop_at = sys.argv[1:5]
    real = module._write_json_atomic

    def stalled(path, data):
        if Path(path).name == stop_at:
            Path(marker).write_text("writing began")
            time.sleep(600)
        return real(path, data)

    module._write_json_atomic = stalled
    registry = module.LocalRegistry(root)
    if action == "move":
        registry.set_alias("M", "v3", "PRODUCTION")
    elif action == "rollback":
        registry.rollback("M", "PRODUCTION")
""")


def kill_when_writing(tmp_path, action, stop_at):
    """Run ``action`` in a real subprocess, SIGKILL it once it reaches the write of ``stop_at``."""
    marker = tmp_path / f"marker-{action}"
    child = subprocess.Popen([sys.executable, "-c", CRASH_CHILD, str(tmp_path / "registry"), str(marker), action,
                              stop_at])
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert child.poll() is None, f"the child ended before writing {stop_at}"
            assert time.monotonic() < deadline, "the child never began writing"
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()


def replayed(history):
    aliases = {}
    for entry in history:
        if entry["event"] == "refused":
            continue
        if entry["new_version"] is None:
            aliases.pop(entry["alias"], None)
        else:
            aliases[entry["alias"]] = entry["new_version"]
    return aliases


def test_kill_between_history_and_aliases_write_the_history_replays_to_the_aliases(tmp_path):
    """PRODUCTION v1 -> v2, then SIGKILL during v2 -> v3 after the history line: the move counts (the history
    line is the commit point), and a rollback really moves back to v2."""
    registry = registry_with_versions(tmp_path / "registry", 3)
    registry.set_alias("M", "v1", "PRODUCTION")
    registry.set_alias("M", "v2", "PRODUCTION")
    kill_when_writing(tmp_path, "move", "aliases.json")
    assert replayed(registry.history("M")) == registry.aliases("M") == {"PRODUCTION": "v3"}
    assert registry.get_version("M", "PRODUCTION")["version_name"] == "v3"
    entry = registry.rollback("M", "PRODUCTION")
    assert (entry["old_version"], entry["new_version"]) == ("v3", "v2")
    assert replayed(registry.history("M")) == registry.aliases("M") == {"PRODUCTION": "v2"}
    assert json.loads((tmp_path / "registry" / "M" / "aliases.json").read_text()) == {"PRODUCTION": "v2"}


def test_kill_during_rollback_never_reports_a_move_that_did_not_happen(tmp_path):
    registry = registry_with_versions(tmp_path / "registry", 3)
    for version in ("v1", "v2", "v3"):
        registry.set_alias("M", version, "PRODUCTION")
    kill_when_writing(tmp_path, "rollback", "aliases.json")
    assert replayed(registry.history("M")) == registry.aliases("M") == {"PRODUCTION": "v2"}
    entry = registry.rollback("M", "PRODUCTION")
    assert (entry["old_version"], entry["new_version"]) == ("v2", "v1")
    assert registry.aliases("M") == {"PRODUCTION": "v1"}


# ------------------------------------------------------------------ resources
def test_disk_full_while_saving_a_model_is_one_message_and_registers_nothing(tmp_path):
    class FullDisk:
        def save(self, directory):
            raise OSError(28, "No space left on device")

    registry = registry_with_versions(tmp_path / "registry", 1)
    before = snapshot(tmp_path / "registry")
    with pytest.raises(MlopsError, match="No space left on device; nothing was registered"):
        registry.log_model(FullDisk(), model_name="M")
    assert {k: v for k, v in snapshot(tmp_path / "registry").items() if ".staging" not in k} == \
        {k: v for k, v in before.items() if ".staging" not in k}
    assert [v["version_name"] for v in registry.versions("M")] == ["v1"]


def test_a_file_size_limit_hit_by_xgboost_while_saving_is_one_message(home, tmp_path):
    """A real native failure: the run's file size limit (RLIMIT_FSIZE, as a full disk or quota would) stops
    XGBoost's own writer mid-model. One line of its native stack, exit 2, and no version, no warehouse."""
    import resource

    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing the run
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    result = subprocess.run([sys.executable, "-m", "mlops_framework.cli", "run", *SMALL], cwd=tmp_path,
                            env={**os.environ, "MLOPS_HOME": str(home)}, preexec_fn=small_files,
                            capture_output=True, text=True, timeout=300)
    message = one_message(result)
    assert "could not save version of model 'MORTGAGE_XGB'" in message and "nothing was registered" in message
    assert not [p for p in (home / "registry").rglob("*") if p.is_file()]
    assert not (home / "warehouse.duckdb").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_home_is_one_message(mlops, home):
    home.mkdir()
    home.chmod(0o555)
    try:
        message = one_message(mlops("run", *SMALL))
    finally:
        home.chmod(0o755)
    assert "ermission denied" in message


@pytest.mark.parametrize("sweep", [[], ["-m"]], ids=["run", "sweep"])
def test_a_home_that_cannot_be_created_is_one_message(sweep, mlops, tmp_path):
    """MLOPS_HOME inside a file (any user, root included, gets this one): exit 2, one message naming the
    directory, no Hydra traceback."""
    (tmp_path / "a_file").write_text("not a directory")
    home = tmp_path / "a_file" / "home"
    result = mlops("run", *sweep, *SMALL, env={"MLOPS_HOME": str(home)})
    message = one_message(result)
    assert f"cannot create the output directory {home}" in message and "Not a directory" in message


def test_a_warehouse_that_cannot_be_created_is_one_message_before_anything_registers(mlops, home, tmp_path):
    (tmp_path / "a_file").write_text("not a directory")
    message = one_message(mlops("run", *SMALL, f"scoring.sink.path={tmp_path / 'a_file' / 'w.duckdb'}"))
    assert f"cannot use the warehouse {tmp_path / 'a_file' / 'w.duckdb'}" in message
    assert not (home / "registry").exists()


def test_run_piped_into_head_is_not_a_traceback(home, tmp_path):
    process = subprocess.Popen([sys.executable, "-m", "mlops_framework.cli", "run", *SMALL], cwd=tmp_path,
                               env={**os.environ, "MLOPS_HOME": str(home)},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    process.stdout.close()
    stderr = process.stderr.read()
    process.wait(timeout=300)
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr[-3000:]


def test_concurrent_writers_wait_their_turn_with_a_bounded_wait(tmp_path):
    from mlops_local.backend import warehouse_lock

    warehouse = tmp_path / "warehouse.duckdb"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from mlops_local.backend import warehouse_lock\n"
         "with warehouse_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(600)", str(warehouse)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(MlopsError, match="busy with another run"):
            with warehouse_lock(str(warehouse), wait_s=0.5):
                pass
    finally:
        holder.kill()
        holder.wait()
    with warehouse_lock(str(warehouse), wait_s=5):  # free again once the holder is gone
        pass


def test_a_run_that_waited_too_long_for_the_warehouse_registered_nothing(mlops, home):
    """Another process holds the warehouse past MLOPS_WAREHOUSE_WAIT_S: one message, exit 2, and no version
    registered (the lock is taken before the first stage, not after registration)."""
    warehouse = home / "warehouse.duckdb"
    home.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from mlops_local.backend import warehouse_lock\n"
         "with warehouse_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(600)", str(warehouse)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        message = one_message(mlops("run", *SMALL, env={"MLOPS_WAREHOUSE_WAIT_S": "1"}))
    finally:
        holder.kill()
        holder.wait()
    assert "is busy with another run; waited 1s" in message and "nothing was done" in message
    assert not (home / "registry").exists() and not warehouse.exists()


def test_six_concurrent_full_runs_on_one_home_take_turns_and_stay_consistent(home, tmp_path):
    """Six `mlops run` processes at once on one home and its default DuckDB warehouse (train, register,
    promote, score through PRODUCTION): every run succeeds in its turn, the versions are v1..v6 once each,
    the history replays to the aliases, and the predictions table holds one copy of each row, scored by the
    version PRODUCTION ends on."""
    stages = "pipeline.stages=[load,validate,features,split,train,evaluate,register,promote,score]"
    argv = [sys.executable, "-m", "mlops_framework.cli", "run", "data.weeks=2", "data.rows_per_week=150",
            "model.params.n_estimators=5", "model.params.n_jobs=1", stages, "promotion.test=none",
            "scoring.version=PRODUCTION"]
    env = {**os.environ, "MLOPS_HOME": str(home), "MLOPS_WAREHOUSE_WAIT_S": "900"}
    runs = [subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(6)]
    outputs = [run.communicate(timeout=1200) for run in runs]
    for run, (stdout, stderr) in zip(runs, outputs):
        assert run.returncode == 0, stderr[-3000:]
        assert "Traceback" not in stderr
    registry = LocalRegistry(home / "registry")
    names = [v["version_name"] for v in registry.versions("MORTGAGE_XGB")]
    assert sorted(names, key=lambda name: int(name[1:])) == [f"v{i}" for i in range(1, 7)]
    registered = sorted(line.split()[2] for stdout, _ in outputs for line in stdout.splitlines()
                        if line.startswith("model "))
    assert registered == sorted(names)  # each run reports the one version it registered
    aliases = registry.aliases("MORTGAGE_XGB")
    assert replayed(registry.history("MORTGAGE_XGB")) == aliases and set(aliases) == {"PRODUCTION"}
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        rows, ids, versions = con.execute(
            "SELECT count(*), count(DISTINCT LOAN_ID), list(DISTINCT MODEL_VERSION) "
            "FROM PREDICTIONS_WITH_GROUND_TRUTH").fetchone()
    assert rows == ids == 300
    assert versions == [aliases["PRODUCTION"]]


# ------------------------------------------------------------------ sweep rerun
def test_sweep_rerun_takes_no_code_loading_env_from_sweep_json(tmp_path, home):
    """A sweep.json naming PYTHONPATH (with a sitecustomize that leaves a mark) must not run that code."""
    evil = tmp_path / "evil"
    evil.mkdir()
    mark = tmp_path / "pwned"
    (evil / "sitecustomize.py").write_text(f"open({str(mark)!r}, 'w').write('ran')\n")
    sweep = home / "sweeps" / "old"
    sweep.mkdir(parents=True)
    (sweep / "sweep.json").write_text(json.dumps({
        "argv": ["-m", "no_such_group=x"], "command": "mlops run -m no_such_group=x", "cwd": str(tmp_path),
        "env": {"PYTHONPATH": str(evil), "MLOPS_PLUGINS": "evil_plugin", "OMP_NUM_THREADS": "1"}}))
    result = subprocess.run([sys.executable, "-m", "mlops_framework.cli", "sweep", "rerun", str(sweep)],
                            cwd=tmp_path, env={**os.environ, "MLOPS_HOME": str(home)},
                            capture_output=True, text=True, timeout=300)
    assert not mark.exists(), "code named by sweep.json ran"
    assert "PYTHONPATH" in result.stderr and "MLOPS_PLUGINS" in result.stderr


# ------------------------------------------------------------------ hostile data
def test_a_csv_with_a_repeated_column_is_refused_before_anything_registers(mlops, home, tmp_path):
    import pyarrow.csv as pa_csv

    from mlops_local.synthetic import generate_table

    table = generate_table(weeks=2, rows_per_week=100, seed=1)
    table = table.append_column("COUNTY_NAME", table["COUNTY_NAME"])  # a second COUNTY_NAME
    pa_csv.write_csv(table, tmp_path / "twice.csv")
    message = one_message(mlops("run", "data=csv", f"data.path={tmp_path / 'twice.csv'}", *SMALL[2:]))
    assert "duplicate column names: 'COUNTY_NAME'" in message
    assert not (home / "registry").exists() and not (home / "warehouse.duckdb").exists()


def test_webhook_url_credentials_are_sent_as_basic_auth(receiver):
    import base64

    from mlops_local.notifiers import WebhookNotifier

    port, received = receiver
    WebhookNotifier(url=f"http://bob:{CANARIES['url']}@127.0.0.1:{port}/x", timeout=10).notify([])
    assert received[0][0]["Authorization"] == "Basic " + base64.b64encode(f"bob:{CANARIES['url']}".encode()).decode()
    assert received[0][1] == "/x"


def test_inf_in_a_training_feature_is_one_message(mlops, home, tmp_path):
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    from mlops_local.synthetic import generate_table

    table = generate_table(weeks=2, rows_per_week=100, seed=1)
    income = table["APPLICANT_INCOME_000S"].to_pylist()
    income[3] = float("inf")
    table = table.set_column(table.column_names.index("APPLICANT_INCOME_000S"), "APPLICANT_INCOME_000S",
                             pa.array(income, pa.float64()))
    pa_csv.write_csv(table, tmp_path / "inf.csv")
    message = one_message(mlops("run", "data=csv", "features=mortgage", f"data.path={tmp_path / 'inf.csv'}", *SMALL[2:]))
    assert "APPLICANT_INCOME_000S" in message and "inf" in message
    assert not (home / "registry").exists()


def test_only_runs_that_write_a_warehouse_take_its_lock(home):
    from mlops_local.backend import warehouses
    from mlops_framework.pipeline import build_run
    from mlops_framework.plugins import Components, get_plugin_manager

    components = Components(get_plugin_manager())

    def locked(*overrides):
        cfg = config.compose(list(overrides), components)
        return warehouses(build_run(config.resolved(cfg), components))

    assert locked() == [str((home / "warehouse.duckdb").resolve())]
    assert locked("pipeline=train") == []  # sweep trials train in parallel
