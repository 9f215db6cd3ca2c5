"""The built-in notifiers (``alerts.notifiers`` kinds ``console``, ``jsonl``, ``webhook``, ``email``): each
delivers the alerts one monitor run fired (:class:`mlops_framework.alerts.Alert`), within its ``timeout``
in total (:func:`mlops_framework.alerts.within_deadline`)."""

from __future__ import annotations

import json
import os
import sys

from mlops_framework.alerts import Alert, within_deadline
from mlops_framework.errors import MlopsError


def _payload(alerts: list[Alert]) -> dict:
    return {"alerts": [a.to_dict() for a in alerts], "count": len(alerts)}


def _subject(alerts: list[Alert], prefix: str) -> str:
    rules = sorted({a.rule for a in alerts})
    model = next((f" {a.model_name} {a.model_version or ''}".rstrip() for a in alerts if a.model_name), "")
    return f"{prefix} {len(alerts)} alert(s){model}: {', '.join(rules)}"


class ConsoleNotifier:
    """One line per alert on standard output (``stream: stderr`` for standard error)."""

    def __init__(self, stream: str = "stdout"):
        self.stream = stream

    def describe(self) -> str:
        return f"console ({self.stream})"

    def notify(self, alerts):
        out = sys.stderr if self.stream == "stderr" else sys.stdout
        for alert in alerts:
            print(f"ALERT {alert.message}", file=out)


class JsonLinesNotifier:
    """Appends one JSON object per alert to ``path`` (created with its directory)."""

    def __init__(self, path: str):
        self.path = path

    def describe(self) -> str:
        return f"JSON lines {self.path}"

    def notify(self, alerts):
        from pathlib import Path

        path = Path(self.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = "".join(json.dumps(a.to_dict(), default=str) + "\n" for a in alerts)
        with open(path, "a") as f:
            f.write(text)


class WebhookNotifier:
    """POSTs ``{"alerts": [...], "count": n}`` as JSON to ``url`` (http or https); fails on a non-2xx reply."""

    def __init__(self, url: str, headers: dict | None = None, timeout: float = 10.0):
        self.url = url
        self.headers = headers
        self.timeout = timeout

    def describe(self) -> str:
        from mlops_framework.config import mask_url

        return f"webhook POST {mask_url(self.url)}"

    def notify(self, alerts):
        import urllib.request

        if not str(self.url).startswith(("http://", "https://")):
            raise MlopsError(f"webhook url must start with http:// or https://, not {self.url!r}")
        body = json.dumps(_payload(alerts), default=str).encode()
        url, credentials = _split_credentials(str(self.url))
        headers = {"Content-Type": "application/json", "User-Agent": "mlops-framework"}
        if credentials:  # user:password@ in the url: sent as HTTP Basic authentication, as curl does
            import base64

            headers["Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
        headers.update({str(k): str(v) for k, v in (self.headers or {}).items()})
        request = urllib.request.Request(url, data=body, method="POST", headers=headers)

        def post():
            with urllib.request.urlopen(request, timeout=self.timeout) as reply:  # HTTPError on 4xx/5xx
                reply.read()

        within_deadline(post, self.timeout, "webhook POST")


def _split_credentials(url):
    """``http://user:pw@host/x`` -> (``http://host/x``, ``user:pw``) with percent-escapes decoded."""
    from urllib.parse import unquote, urlsplit, urlunsplit

    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    return urlunsplit(parts._replace(netloc=host)), f"{unquote(user)}:{unquote(password)}"


class EmailNotifier:
    """Sends one plain-text email per monitor run over SMTP.

    ``password_env`` names an environment variable holding the password (never the password itself);
    ``starttls`` upgrades the connection before logging in."""

    def __init__(self, host: str, to: list, sender: str = "mlops@localhost", port: int = 25,
                 username: str | None = None, password_env: str | None = None, starttls: bool = False,
                 timeout: float = 10.0, subject_prefix: str = "[mlops]"):
        self.host = host
        self.to = to
        self.sender = sender
        self.port = port
        self.username = username
        self.password_env = password_env
        self.starttls = starttls
        self.timeout = timeout
        self.subject_prefix = subject_prefix

    def describe(self) -> str:
        return f"email to {', '.join(self._recipients())} via {self.host}:{self.port}"

    def _recipients(self) -> list[str]:
        return [self.to] if isinstance(self.to, str) else list(self.to)

    def notify(self, alerts):
        import smtplib
        from email.message import EmailMessage

        message = EmailMessage()
        message["Subject"] = _subject(alerts, self.subject_prefix)
        message["From"] = self.sender
        message["To"] = ", ".join(self._recipients())
        message.set_content("\n".join(a.message for a in alerts) + "\n\n" + json.dumps(_payload(alerts), indent=1, default=str))
        password = None
        if self.username:
            password = os.environ.get(self.password_env or "", None)
            if password is None:
                raise MlopsError(f"email notifier: set the environment variable {self.password_env or '(password_env)'}")

        def send():
            with smtplib.SMTP(self.host, int(self.port), timeout=self.timeout) as smtp:
                if self.starttls:
                    smtp.starttls()
                if self.username:
                    smtp.login(self.username, password)
                smtp.send_message(message)

        within_deadline(send, self.timeout, "email")
