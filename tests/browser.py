"""Open an HTML file in headless Chromium (Debian's ``chromium``) through the DevTools protocol: collect console
errors and exceptions, count the plotly charts drawn, save a screenshot. Any network request fails (a proxy
that does not exist), so a page that fetches anything logs an error. A tiny WebSocket client (RFC 6455, text
frames only) keeps the tests free of a browser-automation dependency."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--mute-audio", "--hide-scrollbars",
         "--proxy-server=127.0.0.1:9", "--window-size=1280,1000", "--remote-debugging-port=0",
         "--remote-allow-origins=*")
CHARTS_DRAWN = "[...document.querySelectorAll('.plotly-graph-div')].filter(d => d.querySelector('.main-svg')).length"
CHARTS = "document.querySelectorAll('.plotly-graph-div').length"


def chromium():
    """The Chromium executable, or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


class _WebSocket:
    def __init__(self, url, timeout):
        host_port, _, path = url.removeprefix("ws://").partition("/")
        host, _, port = host_port.partition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /{path} HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        response = b""
        while b"\r\n\r\n" not in response:
            response += self.sock.recv(4096)
        head, _, self.buffer = response.partition(b"\r\n\r\n")
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise ConnectionError(head.decode(errors="replace"))

    def send(self, text):
        data = text.encode()
        mask = os.urandom(4)
        size = len(data)
        header = bytes([0x81]) + (bytes([0x80 | size]) if size < 126 else
                                  bytes([0x80 | 126]) + struct.pack(">H", size) if size < 65536 else
                                  bytes([0x80 | 127]) + struct.pack(">Q", size))
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _read(self, n):
        while len(self.buffer) < n:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("DevTools closed the connection")
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def receive(self):
        message = b""
        while True:
            first, second = self._read(2)
            size = second & 0x7F
            if size == 126:
                size = struct.unpack(">H", self._read(2))[0]
            elif size == 127:
                size = struct.unpack(">Q", self._read(8))[0]
            payload = self._read(size)
            if first & 0x0F in (0x1, 0x0):
                message += payload
                if first & 0x80:
                    return message.decode()
            elif first & 0x0F == 0x8:
                raise ConnectionError("DevTools closed the connection")


class _DevTools:
    def __init__(self, url, timeout):
        self.ws, self.next_id, self.events = _WebSocket(url, timeout), 0, []

    def call(self, method, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.receive())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, event, deadline):
        while time.monotonic() < deadline:
            if any(e.get("method") == event for e in self.events):
                return
            self.events.append(json.loads(self.ws.receive()))
        raise TimeoutError(event)


def open_page(html_path, screenshot_path, timeout=90):
    """Load ``html_path``; return ``{"errors": [...], "charts": n, "drawn": n}`` and write a PNG screenshot."""
    user_data = tempfile.mkdtemp(prefix="mlops-chromium-")
    process = subprocess.Popen([chromium(), *FLAGS, f"--user-data-dir={user_data}", "about:blank"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        port_file = Path(user_data) / "DevToolsActivePort"
        while not (port_file.exists() and port_file.read_text().strip()):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chromium did not start (exit {process.poll()})")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
            target = next(t for t in json.load(response) if t["type"] == "page")
        tools = _DevTools(target["webSocketDebuggerUrl"], timeout)
        for domain in ("Runtime", "Log", "Page"):
            tools.call(f"{domain}.enable")
        tools.call("Page.navigate", url=Path(html_path).resolve().as_uri())
        tools.wait_for("Page.loadEventFired", deadline)
        charts = tools.call("Runtime.evaluate", expression=CHARTS, returnByValue=True)["result"]["value"]
        drawn = 0
        while time.monotonic() < deadline:  # plotly draws each chart after load, unless the page threw
            drawn = tools.call("Runtime.evaluate", expression=CHARTS_DRAWN, returnByValue=True)["result"]["value"]
            if drawn >= charts or any(e.get("method") == "Runtime.exceptionThrown" for e in tools.events):
                break
            time.sleep(0.2)
        shot = tools.call("Page.captureScreenshot", format="png")
        Path(screenshot_path).write_bytes(base64.b64decode(shot["data"]))
        errors = []
        for event in tools.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                errors.append(params["exceptionDetails"].get("exception", {}).get("description")
                              or params["exceptionDetails"].get("text"))
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                errors.append(" ".join(str(a.get("value", a.get("description"))) for a in params.get("args", [])))
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                errors.append(f"{params['entry'].get('text')} {params['entry'].get('url', '')}".strip())
        return {"errors": errors, "charts": charts, "drawn": drawn}
    finally:
        process.kill()
        process.wait(timeout=30)
        shutil.rmtree(user_data, ignore_errors=True)
