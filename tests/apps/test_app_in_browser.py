"""The gallery app in a real browser: a minimal MCP Apps host page in headless Chromium loads
``ui://fal/gallery.html`` in a sandboxed iframe and speaks the Apps protocol through the official host-side
bridge (``AppBridge`` from ``@modelcontextprotocol/ext-apps``), wired to a real ``fal-mcp --local`` over
streamable HTTP. Jobs are run, re-run, cancelled and picked through the app's own buttons.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser import Page, open_page

HERE = Path(__file__).parent
NODE_MODULES = HERE / "node_modules"
PROMPT = "a red fox in fresh snow"
# Sandboxed iframes stay in the page's process, so DevTools can evaluate inside the app's frame.
SAME_PROCESS_FRAMES = ("--disable-site-isolation-trials", "--disable-features=IsolateSandboxedIframes,site-per-process")
HOST_PAGE = b"""<!doctype html><html><head><meta charset="utf-8"><title>test host</title>
<style>body{margin:0;background:#888}iframe{border:0;display:block;width:100%}</style></head>
<body><script type="module" src="/host.js"></script></body></html>"""


@pytest.fixture(scope="module")
def host_bundle(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The host page's script bundled for the browser from the pinned npm packages (built per run, never committed)."""
    if not (NODE_MODULES / "@modelcontextprotocol" / "ext-apps").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=HERE, check=True)
    out = tmp_path_factory.mktemp("host") / "host.js"
    esbuild = NODE_MODULES / ".bin" / "esbuild"
    subprocess.run(
        [
            str(esbuild),
            "host.mjs",
            "--bundle",
            "--format=esm",
            "--platform=browser",
            f"--outfile={out}",
            "--log-level=error",
        ],
        cwd=HERE,
        check=True,
    )
    return out.read_bytes()


class LocalServer:
    """``fal-mcp --local serve --transport http --port 0`` in a subprocess; its URL from the listening log line."""

    def __init__(self, tmp: Path) -> None:
        env = {
            **os.environ,
            "FAL_MCP_LEDGER": str(tmp / "ledger.sqlite3"),
            "FAL_MCP_CACHE_DIR": str(tmp / "cache"),
            "FAL_MCP_LOG_LEVEL": "INFO",
            "FAL_MCP_LOG_FORMAT": "json",
        }
        env.pop("FAL_KEY", None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "fal_mcp", "--local", "serve", "--transport", "http", "--port", "0"],
            env=env,
            cwd=tmp,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.url = ""
        self.lines: list[str] = []
        listening = threading.Event()

        def read() -> None:
            assert self.process.stderr is not None
            for line in self.process.stderr:
                self.lines.append(line)
                if '"http.listening"' in line:
                    self.url = json.loads(line)["url"]
                    listening.set()

        self.reader = threading.Thread(target=read, daemon=True)
        self.reader.start()
        if not listening.wait(60):
            self.stop()
            raise AssertionError("fal-mcp never logged http.listening:\n" + "".join(self.lines))

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.reader.join(timeout=5)
        assert self.process.stderr is not None
        self.process.stderr.close()


def serve_host(bundle: bytes, mcp_url: str) -> http.server.ThreadingHTTPServer:
    """The host's own origin: its page and script, and ``/mcp`` passed on to fal-mcp (as a host's backend would)."""
    forwarded = ("content-type", "accept", "mcp-session-id", "mcp-protocol-version", "last-event-id")
    upstream = httpx.Client(timeout=120, trust_env=False)

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path.startswith("/host.html"):
                self._reply(200, HOST_PAGE, {"content-type": "text/html; charset=utf-8"})
            elif self.path == "/host.js":
                self._reply(200, bundle, {"content-type": "text/javascript"})
            else:  # no standalone SSE stream through this proxy: the client then works request by request
                self._reply(405, b"", {})

        def do_POST(self) -> None:
            self._forward("POST")

        def do_DELETE(self) -> None:
            self._forward("DELETE")

        def _forward(self, method: str) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            headers = {k: v for k, v in self.headers.items() if k.lower() in forwarded}
            reply = upstream.request(method, mcp_url, content=body, headers=headers)
            keep = {k: v for k, v in reply.headers.items() if k.lower() in forwarded}
            self._reply(reply.status_code, reply.content, keep)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.upstream = upstream  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class AppFrame:
    """The app's iframe, evaluated in an isolated world (same DOM, the app's own script untouched)."""

    def __init__(self, page: Page) -> None:
        self.page = page
        page.wait_for("window.hostReady || window.hostError", timeout=60)
        if error := page.evaluate("window.hostError"):
            raise AssertionError(f"the test host failed: {error}")
        tree = page.send("Page.getFrameTree")["frameTree"]
        [child] = tree["childFrames"]
        world = page.send("Page.createIsolatedWorld", {"frameId": child["frame"]["id"], "worldName": "test"})
        self.context = world["executionContextId"]

    def evaluate(self, expression: str) -> Any:
        result = self.page.send(
            "Runtime.evaluate", {"expression": expression, "contextId": self.context, "returnByValue": True}
        )
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"])
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30) -> Any:
        deadline = time.monotonic() + timeout
        while not (value := self.evaluate(expression)):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"app condition never held: {expression}\n{self.evaluate('document.body.innerText')}"
                )
            time.sleep(0.05)
        return value

    def cards(self) -> list[dict[str, Any]]:
        return self.evaluate(
            """[...document.querySelectorAll('.card')].map((c) => ({
                id: c.dataset.requestId, status: c.dataset.status,
                text: c.querySelector('.status').textContent,
                prompt: (c.querySelector('.prompt') || {}).textContent,
                buttons: [...c.querySelectorAll('button')].map((b) => b.textContent),
                images: [...c.querySelectorAll('img')].map((i) => i.src)}))"""
        )

    def click(self, request_id: str, label: str) -> None:
        clicked = self.evaluate(
            f"""(() => {{ const card = document.querySelector('.card[data-request-id="{request_id}"]');
                const b = card && [...card.querySelectorAll('button')]
                    .find((b) => b.textContent === {json.dumps(label)});
                if (b) b.click(); return !!b; }})()"""
        )
        assert clicked, f"no {label!r} button on {request_id}: {self.cards()}"


@pytest.fixture
def stack(tmp_path: Path, host_bundle: bytes) -> Iterator[str]:
    if not shutil.which("chromium") and not shutil.which("chromium-browser"):
        pytest.fail("Chromium is needed: apt-get install -y chromium (.ci/run installs it)")
    server = LocalServer(tmp_path)
    host = serve_host(host_bundle, server.url)
    try:
        yield f"http://127.0.0.1:{host.server_address[1]}/host.html"
    finally:
        host.shutdown()
        host.server_close()
        host.upstream.close()  # type: ignore[attr-defined]
        server.stop()


def image_shown(request_id: str) -> str:
    """The card's image decoded (naturalWidth > 0) and laid out whole inside its card."""
    return f"""(() => {{ const card = document.querySelector('.card[data-request-id="{request_id}"]');
        const i = card && card.querySelector('img'); if (!i || !i.complete || !i.naturalWidth) return false;
        const r = i.getBoundingClientRect(), c = card.getBoundingClientRect();
        return r.width > 0 && r.height > 0 && r.left >= c.left - 0.5 && r.right <= c.right + 0.5; }})()"""


def new_card(app: AppFrame, known: set[str]) -> dict[str, Any]:
    ids = json.dumps(sorted(known))
    app.wait_for(f"[...document.querySelectorAll('.card')].some((c) => !{ids}.includes(c.dataset.requestId))")
    return next(card for card in app.cards() if card["id"] not in known)


def test_a_job_a_rerun_and_a_cancel_through_the_app(stack: str, tmp_path: Path) -> None:
    with open_page(stack, width=900, height=1100, flags=SAME_PROCESS_FRAMES) as page:
        app = AppFrame(page)
        # The model's fal_subscribe, shown by the app: the finished image is really rendered.
        args = {"endpoint_id": "fal-ai/flux/dev", "input": {"prompt": PROMPT, "seed": 1, "num_inference_steps": 40}}
        done = page.evaluate(f"window.callModelTool('fal_subscribe', {json.dumps({**args, 'wait_seconds': 60})})")
        assert done["status"] == "COMPLETED"
        first = done["request_id"]
        app.wait_for(image_shown(first))
        [card] = app.cards()
        assert card["prompt"] == PROMPT and card["status"] == "COMPLETED"
        assert card["buttons"] == ["Run again (new seed)", "Use in chat"]

        # Run again with another seed: a new job the app submits, watches (live status) and shows when done.
        app.click(first, "Run again (new seed)")
        rerun = new_card(app, {first})
        seen = {rerun["text"]}
        deadline = time.monotonic() + 60
        while (now := next(c for c in app.cards() if c["id"] == rerun["id"]))["status"] != "COMPLETED":
            seen.add(now["text"])
            assert time.monotonic() < deadline, now
            time.sleep(0.1)
        assert any(text.startswith(("in queue", "in progress")) for text in seen), seen
        app.wait_for(image_shown(rerun["id"]))
        page.screenshot(tmp_path / "gallery-light.png")

        # Run again, then Cancel while it runs: fal reports it cancelled and the app shows that.
        app.click(first, "Run again (new seed)")
        doomed = new_card(app, {first, rerun["id"]})
        assert doomed["status"] in ("IN_QUEUE", "IN_PROGRESS", "SUBMITTING") and "Cancel" in doomed["buttons"]
        app.click(doomed["id"], "Cancel")
        app.wait_for(
            f"document.querySelector('.card[data-request-id=\"{doomed['id']}\"]').dataset.status === 'CANCELLED'"
        )
        cancelled = next(c for c in app.cards() if c["id"] == doomed["id"])
        assert cancelled["images"] == [] and "Cancel" not in cancelled["buttons"]

        # Use in chat: the chosen result goes into the model's context through the host.
        app.click(rerun["id"], "Use in chat")
        context = page.wait_for("window.modelContext")
        assert (
            rerun["id"] in context["content"][0]["text"] and context["structuredContent"]["request_id"] == rerun["id"]
        )

        # Fullscreen through the host, then a look at it.
        assert app.evaluate("document.getElementById('mode').hidden") is False
        app.evaluate("document.getElementById('mode').click()")
        page.wait_for("window.displayModes.includes('fullscreen')")
        app.wait_for("document.documentElement.dataset.mode === 'fullscreen'")
        page.screenshot(tmp_path / "gallery-fullscreen.png")

        # Every image the app loaded came from the emulator's CDN on loopback, as its CSP allows.
        images = [u for u in page.requested_urls() if "/cdn/" in u]
        assert images and all(u.startswith("http://127.0.0.1:") for u in images)


def test_dark_theme_small_size_a_job_outliving_the_wait_and_jobs_list(stack: str, tmp_path: Path) -> None:
    with open_page(stack + "?theme=dark&width=320px", width=360, height=700, flags=SAME_PROCESS_FRAMES) as page:
        app = AppFrame(page)
        assert app.evaluate("document.documentElement.dataset.theme") == "dark"
        # The model's call returns before the job is done: the app watches it to the end by itself.
        args = {"endpoint_id": "fal-ai/flux/dev", "input": {"prompt": PROMPT, "seed": 2}, "wait_seconds": 0}
        running = page.evaluate(f"window.callModelTool('fal_subscribe', {json.dumps(args)})")
        assert running["status"] in ("IN_QUEUE", "IN_PROGRESS"), running
        app.wait_for(image_shown(running["request_id"]))
        assert app.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(22, 22, 24)"
        # At 320 px one column fits and nothing overflows sideways.
        assert app.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
        page.screenshot(tmp_path / "gallery-dark-small.png")
        # jobs_list lists the same job: one card, still complete, image still shown.
        listed = page.evaluate("window.callModelTool('jobs_list', {})")
        assert [job["request_id"] for job in listed["jobs"]] == [running["request_id"]]
        page.wait_for("window.hostLog.includes('result jobs_list')")
        [card] = app.cards()
        assert card["id"] == running["request_id"] and card["status"] == "COMPLETED"
        assert app.evaluate(image_shown(running["request_id"])), "the card was rebuilt"

        # A new app instance (the host shows one per tool result) starts with the session's earlier jobs.
        page.evaluate("window.hostReady = false")  # so only the new page can satisfy the wait below
        page.send("Page.navigate", {"url": stack + "?theme=dark&width=320px"})
        page.wait_for("document.readyState === 'complete' && window.hostReady")
        fresh = AppFrame(page)
        fresh.wait_for(image_shown(running["request_id"]))
        [card] = fresh.cards()
        assert card["prompt"] == PROMPT and card["status"] == "COMPLETED"
