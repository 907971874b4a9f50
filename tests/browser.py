"""A real headless Chromium (Debian's ``chromium``) driven over the DevTools protocol, for tests that look at pages.

No browser library: Chromium is launched with a fresh profile and every network feature off, a page is
opened in a new target, and ``evaluate`` / ``screenshot`` talk to it over the DevTools WebSocket.
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--mute-audio",
    "--hide-scrollbars",
    "--remote-debugging-port=0",
)


def chromium_path() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        raise RuntimeError("Chromium is needed for this test: apt-get install -y chromium (.ci/run installs it)")
    return found


class Page:
    def __init__(self, ws: ClientConnection, session_id: str) -> None:
        self._ws = ws
        self._session = session_id
        self._ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []  # every DevTools event seen so far (Network.*, Page.*)

    def send(self, method: str, params: dict[str, Any] | None = None, timeout: float = 30) -> dict[str, Any]:
        message_id = next(self._ids)
        request = {"id": message_id, "method": method, "params": params or {}, "sessionId": self._session}
        self._ws.send(json.dumps(request))
        deadline = time.monotonic() + timeout
        while True:
            reply = json.loads(self._ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if "method" in reply:
                self.events.append(reply)
            if reply.get("id") == message_id and reply.get("sessionId") == self._session:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"])
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20) -> Any:
        """Poll a condition in the page until it is truthy (the page's own state, not a fixed sleep)."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"page condition never held: {expression}")
            time.sleep(0.05)

    def requested_urls(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events if e["method"] == "Network.requestWillBeSent"]

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})["data"]
        path.write_bytes(base64.b64decode(data))
        return path


@contextmanager
def open_page(url: str, width: int = 1280, height: int = 2000, flags: tuple[str, ...] = ()) -> Iterator[Page]:
    """``url`` loaded in a fresh headless Chromium (``flags`` added to its own); yields the page once loaded."""
    # Chromium's helper processes may still write to the profile as it exits: a leftover file is not a failure.
    with tempfile.TemporaryDirectory(prefix="fal-mcp-chromium-", ignore_cleanup_errors=True) as profile:
        process = subprocess.Popen(
            [chromium_path(), *CHROMIUM_FLAGS, *flags, f"--user-data-dir={profile}", f"--window-size={width},{height}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            ws_url = _devtools_url(process, Path(profile))
            with connect(ws_url, max_size=64 * 1024 * 1024, open_timeout=30) as ws:
                target = _browser_call(ws, "Target.createTarget", {"url": "about:blank"})["targetId"]
                session = _browser_call(ws, "Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
                page = Page(ws, session)
                page.send("Page.enable")
                page.send("Network.enable")
                page.send("Page.navigate", {"url": url})
                page.wait_for("document.readyState === 'complete'")
                yield page
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _devtools_url(process: subprocess.Popen[bytes], profile: Path, timeout: float = 60) -> str:
    """Chromium writes its DevTools port and path to ``DevToolsActivePort`` in the profile once it listens."""
    marker = profile / "DevToolsActivePort"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Chromium exited with status {process.returncode} before listening")
        lines = marker.read_text().split() if marker.exists() else []
        if len(lines) >= 2:
            return f"ws://127.0.0.1:{lines[0]}{lines[1]}"
        time.sleep(0.05)
    raise RuntimeError("Chromium did not open its DevTools port in time")


def _browser_call(ws: ClientConnection, method: str, params: dict[str, Any]) -> dict[str, Any]:
    message_id = 10**9 + len(method)
    ws.send(json.dumps({"id": message_id, "method": method, "params": params}))
    while True:
        reply = json.loads(ws.recv(timeout=30))
        if reply.get("id") == message_id and "sessionId" not in reply:
            if "error" in reply:
                raise RuntimeError(f"{method}: {reply['error']}")
            return reply["result"]
