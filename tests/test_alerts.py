"""Alert rules firing and not firing, and every built-in notifier delivering to a real local endpoint."""

import datetime as dt
import email
import email.policy
import http.server
import json
import socketserver
import threading

import pytest

from mlops_framework import alerts as al
from mlops_framework import hookspecs
from mlops_framework.errors import MlopsError
from mlops_framework.plugins import Components, get_plugin_manager
from mlops_local import notifiers

W1, W2, W3 = (dt.datetime(2024, 1, 1) + dt.timedelta(days=7 * k) for k in range(3))


def result(f1s=(0.8, 0.75, 0.69), psi_income=(0.01, 0.1, 0.25), psi_score=(0.0, 0.5, 0.9)):
    starts = [W1, W2, W3]
    performance = [{"window_start": s, "window_end": s + dt.timedelta(days=7), "f1": f, "rows": 100, "roc_auc": None}
                   for s, f in zip(starts, f1s)]
    drift = []
    for s, pi, ps in zip(starts, psi_income, psi_score):
        end = s + dt.timedelta(days=7)
        drift.append({"window_start": s, "window_end": end, "column": "INCOME", "role": "feature", "psi": pi,
                      "difference_of_means": -pi * 100})
        drift.append({"window_start": s, "window_end": end, "column": "PREDICTED_SCORE", "role": "score", "psi": ps,
                      "difference_of_means": None})
    return {"performance": performance, "drift": drift, "model_name": "M", "model_version": "v1", "run_id": "r1"}


def rules(**definitions):
    return al.build_rules(definitions)


def test_f1_rule_fires_on_the_last_window_only_below_the_threshold():
    rule = {"metric": "f1", "op": "<", "threshold": 0.7, "window": "last"}
    fired = al.evaluate(rules(f1_low=rule), result())
    assert len(fired) == 1
    alert = fired[0]
    assert (alert.rule, alert.value, alert.threshold, alert.window_start) == ("f1_low", 0.69, 0.7, W3)
    assert alert.message == "f1_low: f1 = 0.69 < 0.7 in window 2024-01-15..2024-01-22 (M v1)"
    assert al.evaluate(rules(f1_low=rule), result(f1s=(0.5, 0.6, 0.7))) == []  # 0.7 is not < 0.7
    any_window = al.evaluate(rules(f1_low={**rule, "window": "any", "threshold": 0.76}), result())
    assert [a.window_start for a in any_window] == [W2, W3]


def test_psi_rule_watches_features_unless_columns_are_named():
    rule = {"metric": "psi", "op": ">", "threshold": 0.2, "window": "last"}
    fired = al.evaluate(rules(psi_high=rule), result())
    assert [(a.column, a.value) for a in fired] == [("INCOME", 0.25)]  # the score's 0.9 is not a feature
    assert al.evaluate(rules(psi_high=rule), result(psi_income=(0.3, 0.3, 0.19))) == []
    on_score = al.evaluate(rules(psi_high={**rule, "columns": ["PREDICTED_SCORE"]}), result())
    assert [(a.column, a.value) for a in on_score] == [("PREDICTED_SCORE", 0.9)]
    shift = al.evaluate(rules(mean_shift={"metric": "difference_of_means", "op": ">", "threshold": 20,
                                          "absolute": True, "window": "last"}), result())
    assert [a.value for a in shift] == [-25.0]
    assert "psi of INCOME = 0.25 > 0.2" in fired[0].message


def test_default_rules_cover_every_new_window_once_and_compare_with_the_baseline():
    """window: new (the default) fires on every computed window, but not again on one alerted before;
    against: baseline compares the change from the baseline's value; metrics a window lacks are skipped."""
    psi = rules(psi_high={"metric": "psi", "op": ">", "threshold": 0.2})
    data = result(psi_income=(0.3, 0.01, 0.25))
    assert [a.window_start for a in al.evaluate(psi, data)] == [W1, W3]  # not only the last window
    assert [a.window_start for a in al.evaluate(psi, data, already={("psi_high", "v1", W1, "INCOME")})] == [W3]
    data = result(f1s=(0.8, 0.75, 0.69))
    for row in data["performance"]:
        row["baseline"] = {"f1": 0.82}
    data["performance"].append({"window_start": W3, "window_end": W3, "f1": None, "rows": 5, "model_version": "v2",
                                "baseline": {"f1": 0.9}})  # no labels yet: skipped
    drop = al.evaluate(rules(f1_drop={"metric": "f1", "against": "baseline", "op": "<", "threshold": -0.05}), data)
    assert [(a.window_start, round(a.value, 4), a.baseline) for a in drop] == [(W2, -0.07, 0.82), (W3, -0.13, 0.82)]
    assert drop[0].message.startswith("f1_drop: f1 - baseline's 0.82 = -0.07 < -0.05 in window 2024-01-08")
    regression = result()
    regression["performance"] = [{"window_start": W1, "window_end": W2, "rmse": 12.0, "rows": 900,
                                  "baseline": {"rmse": 5.0}}]
    assert [a.value for a in al.evaluate(rules(rmse_up={"metric": "rmse", "against": "baseline", "op": ">",
                                                        "threshold": 5}), regression)] == [7.0]
    with pytest.raises(MlopsError, match="applies to performance metrics"):
        rules(x={"metric": "psi", "threshold": 1, "against": "baseline"})


def test_windows_with_fewer_rows_than_min_rows_are_skipped_but_by_a_rows_rule():
    """A drift or quality metric of a few rows is noise: 100 rows by default, labelled rows for f1."""
    data = result(f1s=(0.5, 0.5, 0.5), psi_income=(0.9, 0.9, 0.9))
    for row, rows, labeled in zip(data["performance"], (99, 100, 500), (100, 99, 500)):
        row.update(rows=rows, labeled_rows=labeled)
    for row, rows in zip(data["drift"], (99, 99, 100, 100, 500, 500)):
        row["rows"] = rows
    psi = rules(psi_high={"metric": "psi", "op": ">", "threshold": 0.2})
    assert [a.window_start for a in al.evaluate(psi, data)] == [W2, W3]
    f1 = rules(f1_low={"metric": "f1", "op": "<", "threshold": 0.7})
    assert [a.window_start for a in al.evaluate(f1, data)] == [W1, W3]  # W2 has 99 labelled rows
    assert [a.window_start for a in al.evaluate(rules(f1_low={"metric": "f1", "op": "<", "threshold": 0.7,
                                                              "min_rows": 500}), data)] == [W3]
    assert len(al.evaluate(rules(psi_high={"metric": "psi", "op": ">", "threshold": 0.2, "min_rows": 0}), data)) == 3
    unlabelled_count = {**data, "performance": [{**data["performance"][2], "rows": 50}]}
    del unlabelled_count["performance"][0]["labeled_rows"]  # a window recorded without its labelled rows
    assert al.evaluate(f1, unlabelled_count) == []  # its rows count
    few = rules(few={"metric": "rows", "op": "<", "threshold": 200})
    assert [a.window_start for a in al.evaluate(few, data)] == [W1, W2]  # the rows rule sees small windows
    assert psi[0].describe() == "psi_high: psi of any feature > 0.2 in new windows of 100+ rows"
    assert few[0].describe() == "few: rows < 200 in new windows"
    for bad in (-1, 1.5, True, "100"):
        with pytest.raises(MlopsError, match=r"alerts\.rules\.x\.min_rows must be"):
            rules(x={"metric": "psi", "threshold": 1, "min_rows": bad})


def test_rules_are_validated_and_can_be_switched_off():
    assert rules(off=None) == []
    with pytest.raises(MlopsError, match="alerts.rules.x.metric 'f2' is unknown"):
        rules(x={"metric": "f2", "threshold": 1})
    with pytest.raises(MlopsError, match="op '=<' is unknown"):
        rules(x={"metric": "f1", "op": "=<", "threshold": 1})
    with pytest.raises(MlopsError, match=r"unknown key alerts.rules.x.treshold \(did you mean 'threshold'\?\)"):
        rules(x={"metric": "f1", "treshold": 1})
    with pytest.raises(MlopsError, match="drift metrics only"):
        rules(x={"metric": "f1", "threshold": 1, "columns": ["A"]})


def test_console_and_jsonl_notifiers(tmp_path, capsys):
    fired = al.evaluate(rules(f1_low={"metric": "f1", "threshold": 0.7}), result())
    path = tmp_path / "sub" / "alerts.jsonl"
    delivery = al.notify({"console": notifiers.ConsoleNotifier(), "file": notifiers.JsonLinesNotifier(str(path))}, fired)
    assert delivery == {"console": "ok", "file": "ok"}
    assert "ALERT f1_low: f1 = 0.69 < 0.7" in capsys.readouterr().out
    al.notify({"file": notifiers.JsonLinesNotifier(str(path))}, fired)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == 2 and records[0]["rule"] == "f1_low" and records[0]["threshold"] == 0.7
    assert records[0]["window_start"].startswith("2024-01-15")
    assert al.notify({"file": notifiers.JsonLinesNotifier(str(tmp_path / "never"))}, []) == {}
    assert not (tmp_path / "never").exists()  # nothing fired: no notifier called


@pytest.fixture
def webhook():
    """A real HTTP server on 127.0.0.1 recording POSTs; ``status`` sets its reply."""
    received, state = [], {"status": 204}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append({"path": self.path, "headers": dict(self.headers), "body": body})
            self.send_response(state["status"])
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks/mlops", received, state
    finally:
        server.shutdown()
        server.server_close()


def test_webhook_posts_json_and_a_failing_one_does_not_stop_the_others(webhook, tmp_path, capsys):
    url, received, state = webhook
    fired = al.evaluate(rules(f1_low={"metric": "f1", "threshold": 0.7}), result())
    notifiers.WebhookNotifier(url, headers={"X-Token": "t0k"}).notify(fired)
    assert received[0]["path"] == "/hooks/mlops" and received[0]["headers"]["X-Token"] == "t0k"
    assert received[0]["headers"]["Content-Type"] == "application/json"
    payload = json.loads(received[0]["body"])
    assert payload["count"] == 1 and payload["alerts"][0]["rule"] == "f1_low" and payload["alerts"][0]["value"] == 0.69

    state["status"] = 500
    delivery = al.notify({"hook": notifiers.WebhookNotifier(url), "file": notifiers.JsonLinesNotifier(str(tmp_path / "a.jsonl"))}, fired)
    assert "500" in delivery["hook"] and delivery["file"] == "ok"
    assert "notifier hook" in capsys.readouterr().err
    with pytest.raises(MlopsError, match="http"):
        notifiers.WebhookNotifier("file:///etc/passwd").notify(fired)


class _SMTPSink(socketserver.StreamRequestHandler):
    """Just enough SMTP (RFC 5321) to accept a message: EHLO, MAIL, RCPT, DATA, QUIT."""

    def reply(self, text):
        self.wfile.write(text.encode() + b"\r\n")

    def handle(self):
        self.reply("220 127.0.0.1 test sink")
        envelope, data, in_data = {"to": []}, [], False
        while line := self.rfile.readline():
            if in_data:
                if line.rstrip(b"\r\n") == b".":
                    in_data = False
                    self.server.messages.append({**envelope, "data": b"".join(data)})
                    self.reply("250 queued")
                else:
                    data.append(line[1:] if line.startswith(b"..") else line)
                continue
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                self.reply("250 127.0.0.1")
            elif verb == b"MAIL":
                envelope["from"] = line.decode().split(":", 1)[1].strip()
                self.reply("250 ok")
            elif verb == b"RCPT":
                envelope["to"].append(line.decode().split(":", 1)[1].strip())
                self.reply("250 ok")
            elif verb == b"DATA":
                in_data = True
                self.reply("354 end with .")
            elif verb == b"QUIT":
                self.reply("221 bye")
                return
            else:
                self.reply("250 ok")


@pytest.fixture
def smtp_server():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _SMTPSink)
    server.daemon_threads = True
    server.messages = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], server.messages
    finally:
        server.shutdown()
        server.server_close()


def test_email_notifier_sends_over_smtp(smtp_server):
    port, messages = smtp_server
    fired = al.evaluate(rules(f1_low={"metric": "f1", "threshold": 0.7},
                              psi={"metric": "psi", "op": ">", "threshold": 0.2}), result())
    notifier = notifiers.EmailNotifier(host="127.0.0.1", port=port, to=["ops@example.com", "ds@example.com"],
                                sender="mlops@example.com")
    assert al.notify({"mail": notifier}, fired) == {"mail": "ok"}
    assert len(messages) == 1
    sent = messages[0]
    assert sent["from"] == "<mlops@example.com>"
    assert sent["to"] == ["<ops@example.com>", "<ds@example.com>"]
    message = email.message_from_bytes(sent["data"], policy=email.policy.default)
    assert message["Subject"] == "[mlops] 2 alert(s) M v1: f1_low, psi"
    body = message.get_content()
    assert "f1_low: f1 = 0.69 < 0.7 in window 2024-01-15..2024-01-22" in body and "psi of INCOME = 0.25" in body


def test_email_login_needs_the_password_variable(smtp_server, monkeypatch):
    port, _ = smtp_server
    monkeypatch.delenv("MLOPS_TEST_SMTP_PASSWORD", raising=False)
    notifier = notifiers.EmailNotifier(host="127.0.0.1", port=port, to="a@example.com", username="u",
                                password_env="MLOPS_TEST_SMTP_PASSWORD")
    fired = al.evaluate(rules(f1_low={"metric": "f1", "threshold": 0.7}), result())
    with pytest.raises(MlopsError, match="MLOPS_TEST_SMTP_PASSWORD"):
        notifier.notify(fired)


class _Recorder:
    calls = []

    def __init__(self, channel="x"):
        self.channel = channel

    def describe(self):
        return f"recorder {self.channel}"

    def notify(self, alerts):
        _Recorder.calls.append((self.channel, [a.rule for a in alerts]))


def test_register_notifiers_hook_adds_a_kind_built_from_config():
    pm = get_plugin_manager(load_entrypoints=False)

    class Plugin:
        @hookspecs.hookimpl
        def register_notifiers(self, register):
            register("recorder", _Recorder)

    plugin = Plugin()
    pm.register(plugin)
    try:
        components = Components(pm)
        kinds = components.kinds["notifier"]
        assert {"console", "jsonl", "webhook", "email", "recorder"} <= set(kinds)
        notifier = components.build("notifier", {"kind": "recorder", "channel": "ops"}, where="alerts.notifiers.r")
        al.notify({"r": notifier}, al.evaluate(rules(f1_low={"metric": "f1", "threshold": 0.7}), result()))
        assert _Recorder.calls[-1] == ("ops", ["f1_low"])
        with pytest.raises(MlopsError, match="unknown key alerts.notifiers.r.chanel"):
            components.build("notifier", {"kind": "recorder", "chanel": "ops"}, where="alerts.notifiers.r")
    finally:
        pm.unregister(plugin)
    assert "recorder" not in Components(pm).kinds["notifier"]
