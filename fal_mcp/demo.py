"""``fal-mcp demo``: the whole product, offline, in seconds.

It starts the embedded fal emulator in this process, launches ``fal-mcp`` as a real stdio subprocess
(exactly what an MCP host runs), and drives it as an MCP client: search, schema, upload, a job with a
live progress bar, a polled job, a cancelled job, the ledger. Each step prints what it did and how long
it took, so a newcomer sees what the tools do before getting a key.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import anyio

if TYPE_CHECKING:
    from mcp import Client

DEFAULT_OUTPUT_DIR = "fal-demo-output"
DEFAULT_TIME_SCALE = 0.4  # a flux job takes ~1 s: long enough to watch the bar move
DEMO_KEY = "demo-key:offline"  # the emulator accepts any key; it never leaves this machine
IMAGE_TO_IMAGE = "fal-ai/flux/dev/image-to-image"
TEXT_TO_SPEECH = "fal-ai/kokoro/american-english"
SPEECH_TO_TEXT = "fal-ai/wizper"
SLOW = "emulator/slow"
POLL_SECONDS = 0.2
STEP_PATTERN = re.compile(r"\bstep\s+(\d+)\s*/\s*(\d+)", re.IGNORECASE)
SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
REPO_URL = "https://github.com/fal-mcp/fal-mcp"


class StepFailed(Exception):
    """A step could not do its job; the message is what the user sees (the server's own words)."""


@dataclass
class StepOutcome:
    number: int
    name: str
    ok: bool
    detail: str
    seconds: float


# --- terminal output -----------------------------------------------------------------------------------


class Console:
    """Step lines and the live progress line. On a TTY: colours and one line redrawn in place;
    otherwise (or ``--plain``): plain lines only, no ANSI codes, no carriage returns."""

    def __init__(self, stream: IO[str], *, live: bool) -> None:
        self.stream = stream
        self.live = live
        self._line_open = False

    def style(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.live else text

    def write(self, text: str = "") -> None:
        self.clear_line()
        self.stream.write(text + "\n")
        self.stream.flush()

    def heading(self, text: str) -> None:
        self.write(self.style(text, "1"))

    def dim(self, text: str) -> str:
        return self.style(text, "2")

    def step(self, outcome: StepOutcome) -> None:
        mark = self.style("✓", "32") if outcome.ok else self.style("✗", "31")
        timing = self.dim(f"({outcome.seconds:.2f}s)")
        self.write(f"{mark} {outcome.number}. {outcome.name}: {outcome.detail} {timing}")

    def note(self, text: str) -> None:
        """A sub-line under the running step (progress in plain mode)."""
        self.write(f"    {self.dim('·')} {text}")

    def redraw(self, text: str) -> None:
        """Replace the live line (TTY only)."""
        width = max(20, shutil.get_terminal_size((80, 24)).columns - 1)
        self.stream.write("\r\x1b[2K" + text[:width])
        self.stream.flush()
        self._line_open = True

    def clear_line(self) -> None:
        if self._line_open:
            self.stream.write("\r\x1b[2K")
            self._line_open = False


class ProgressView:
    """Turns the server's progress notifications into a bar (TTY) or one line per new message (plain).

    The percentage comes from log lines like ``step 7/28`` when the model prints them; otherwise a
    spinner shows that the job is alive. The newest message is always shown.
    """

    def __init__(self, console: Console, label: str) -> None:
        self.console = console
        self.label = label
        self.message = "starting"
        self.fraction: float | None = None
        self.updates = 0
        self.messages: list[str] = []
        self.closed = False  # notifications can trail the result over stdio: ignore them once the step ended
        self._started = time.monotonic()
        self._frames = itertools.cycle(SPINNER)

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        """The MCP ``progress_callback``."""
        if self.closed:
            return
        self.updates += 1
        if total:
            self.fraction = min(1.0, progress / total)
        if message:
            self.update(message)

    def update(self, message: str) -> None:
        if self.closed or message == self.message:
            return
        self.message = message
        self.messages.append(message)
        found = STEP_PATTERN.search(message)
        if found and int(found.group(2)) > 0:
            self.fraction = min(1.0, int(found.group(1)) / int(found.group(2)))
        elif message == "completed":
            self.fraction = 1.0
        if self.console.live:
            self.draw()
        else:
            percent = f" ({self.fraction:.0%})" if found and self.fraction is not None else ""
            self.console.note(f"{message}{percent}")

    def draw(self) -> None:
        elapsed = f"{time.monotonic() - self._started:4.1f}s"
        if self.fraction is None:
            gauge = f"{next(self._frames)} working"
        else:
            width = 24
            filled = math.floor(self.fraction * width)
            gauge = "[" + "█" * filled + "░" * (width - filled) + f"] {self.fraction:4.0%}"
        self.console.redraw(f"  {self.label} {gauge} {elapsed}  {self.message}")

    async def _animate(self) -> None:
        while True:
            self.draw()
            await anyio.sleep(0.1)

    @asynccontextmanager
    async def showing(self) -> AsyncIterator[ProgressView]:
        """While the block runs, keep the spinner and clock moving between notifications (TTY only)."""
        async with anyio.create_task_group() as tg:
            if self.console.live:
                tg.start_soon(self._animate)
            try:
                yield self
            finally:
                self.closed = True
                tg.cancel_scope.cancel()
                self.console.clear_line()


# --- the demo ------------------------------------------------------------------------------------------


@dataclass
class DemoOptions:
    output_dir: Path
    plain: bool = False
    time_scale: float = DEFAULT_TIME_SCALE


@dataclass
class Demo:
    """The steps, sharing what earlier ones produced (the sample image, request ids, saved files)."""

    client: Client | None
    console: Console
    output_dir: Path
    time_scale: float
    sample: Path | None = None
    saved: list[Path] = field(default_factory=list)
    outcomes: list[StepOutcome] = field(default_factory=list)

    async def call(self, tool: str, args: dict[str, Any], progress: ProgressView | None = None) -> dict[str, Any]:
        """Call a tool; a tool error becomes :class:`StepFailed` carrying the server's message."""
        if self.client is None:
            raise StepFailed("not connected to the MCP server")
        result = await self.client.call_tool(tool, args, progress_callback=progress)
        text = " ".join(getattr(block, "text", "") for block in result.content).strip()
        if result.is_error:
            raise StepFailed(f"{tool} failed: {text or 'no message'}")
        if result.structured_content is None:
            raise StepFailed(f"{tool} returned no structured result: {text[:200]}")
        return result.structured_content

    async def step(self, name: str, action: Callable[[], Awaitable[str]]) -> None:
        started = time.monotonic()
        try:
            detail, ok = await action(), True
        except StepFailed as exc:
            detail, ok = str(exc), False
        except (OSError, ValueError) as exc:
            detail, ok = f"{type(exc).__name__}: {exc}", False
        outcome = StepOutcome(len(self.outcomes) + 1, name, ok, detail, time.monotonic() - started)
        self.outcomes.append(outcome)
        self.console.step(outcome)

    def shown(self, path: Path | str) -> str:
        """A path as the user would type it: relative to the cwd when inside it."""
        path = Path(path)
        try:
            return str(path.relative_to(Path.cwd()))
        except ValueError:
            return str(path)

    def sim(self, seconds: float) -> float:
        """Simulated emulator seconds → real seconds."""
        return seconds * self.time_scale

    # -- steps --

    async def search(self) -> str:
        found = await self.call("model_search", {"query": "image", "limit": 8})
        models = found["models"]
        if not models:
            raise StepFailed("model_search found no models for 'image'")
        names = ", ".join(m["endpoint_id"] for m in models[:3])
        more = " (more pages)" if found.get("has_more") else ""
        return f"{len(models)} models for 'image'{more}: {names}, …"

    async def schema(self) -> str:
        schema = await self.call("model_schema", {"endpoint_id": IMAGE_TO_IMAGE})
        fields = [f["name"] + ("*" if f["required"] else "") for f in schema["input"]]
        price = f"; {schema['price']}" if schema.get("price") else ""
        files = ", ".join(schema.get("file_fields") or []) or "none"
        return f"{IMAGE_TO_IMAGE} takes {', '.join(fields)} (* required; file fields: {files}){price}"

    async def upload(self) -> str:
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise StepFailed(f"cannot use {self.shown(self.output_dir)} as the output directory: {reason}") from None
        self.sample = self.output_dir / "sample.png"
        await anyio.to_thread.run_sync(draw_sample, self.sample)
        uploaded = await self.call("upload_file", {"path": str(self.sample)})
        self.saved.append(self.sample)
        return f"drew {self.shown(self.sample)} ({uploaded['size']} bytes) and uploaded it → {uploaded['url']}"

    async def image_to_image(self) -> str:
        if self.sample is None:
            raise StepFailed("skipped: needs the sample image from the upload step")
        progress = ProgressView(self.console, "flux")
        data = {
            "image_url": str(self.sample),  # a local path: the server uploads it by itself
            "prompt": "a watercolour sunset over rolling hills",
            "strength": 0.8,
            "num_inference_steps": 28,
            "seed": 42,
            "output_format": "png",
        }
        args = {"endpoint_id": IMAGE_TO_IMAGE, "input": data, "download_dir": str(self.output_dir)}
        async with progress.showing():
            job = await self.call("fal_subscribe", args, progress)
        files = [Path(f["saved_path"]) for f in job["files"] if f.get("saved_path")]
        if not files:
            raise StepFailed(f"fal_subscribe finished ({job['status']}) but saved no files")
        self.saved.extend(files)
        size = job["files"][0]
        return (
            f"request {job['request_id']} {job['status']} with {progress.updates} progress updates "
            f"(local path uploaded automatically); {size.get('width')}x{size.get('height')} image saved to "
            + ", ".join(self.shown(f) for f in files)
        )

    async def speech(self) -> str:
        text = "Hello from the offline fal emulator"
        args = {"endpoint_id": TEXT_TO_SPEECH, "input": {"prompt": text}, "download_dir": str(self.output_dir)}
        spoken = await self.call("fal_subscribe", args)
        audio = next((f for f in spoken["files"] if f.get("saved_path")), None)
        if audio is None:
            raise StepFailed(f"fal_subscribe finished ({spoken['status']}) but saved no audio")
        self.saved.append(Path(audio["saved_path"]))
        heard = await self.call("fal_subscribe", {"endpoint_id": SPEECH_TO_TEXT, "input": {"audio_url": audio["url"]}})
        output = heard.get("output") or {}
        chunks = output.get("chunks") or []
        return (
            f"{audio['content_type']} saved to {self.shown(audio['saved_path'])}; transcribed back: "
            f"{output.get('text')!r} ({len(chunks)} timestamped chunk(s))"
        )

    async def poll(self) -> str:
        submitted = await self.call("queue_submit", {"endpoint_id": SLOW, "input": {"seconds": 6, "steps": 6}})
        request_id = submitted["request_id"]
        position = submitted.get("queue_position")
        seen: list[str] = []
        progress = ProgressView(self.console, "slow")
        if not self.console.live:
            self.console.note(f"submitted {request_id} (queue position {position if position is not None else '?'})")
        deadline = time.monotonic() + 30 + self.sim(6) * 3
        async with progress.showing():
            while True:
                status = await self.call("queue_status", {"request_id": request_id, "logs": True})
                label = status["status"]
                if label == "IN_QUEUE" and status.get("queue_position") is not None:
                    label = f"IN_QUEUE(position {status['queue_position']})"
                if not seen or seen[-1] != label:
                    seen.append(label)
                progress.update(status["logs"][-1] if status["logs"] else label)
                if status["status"] in ("COMPLETED", "FAILED", "CANCELLED"):
                    break
                if time.monotonic() > deadline:
                    raise StepFailed(f"{request_id} still {label} after polling for too long")
                await anyio.sleep(POLL_SECONDS)
        if status["status"] != "COMPLETED":
            raise StepFailed(f"{request_id} ended {status['status']}: {status.get('error') or 'no error given'}")
        result = await self.call("queue_result", {"request_id": request_id})
        message = (result.get("output") or {}).get("message", "no message")
        where = f"queue position {position}, " if position is not None else ""
        return f"{request_id}: {where}polled {' → '.join(seen)}; queue_result: {message!r}"

    async def cancel(self) -> str:
        submitted = await self.call("queue_submit", {"endpoint_id": SLOW, "input": {"seconds": 600, "steps": 60}})
        request_id = submitted["request_id"]
        cancelled = await self.call("queue_cancel", {"request_id": request_id})
        return f"{request_id}: submitted, then queue_cancel → {cancelled['outcome']}"

    async def jobs(self) -> str:
        listed = await self.call("jobs_list", {"limit": 10})
        if listed.get("ledger"):
            raise StepFailed(listed["ledger"])
        jobs = listed["jobs"]
        parts = [f"{j['endpoint_id']} {j['status']}" for j in reversed(jobs)]
        return f"{len(jobs)} jobs in the ledger: " + "; ".join(parts)


def draw_sample(path: Path) -> None:
    """A small, pleasant picture to transform: a sky gradient, a sun, two hills."""
    from PIL import Image, ImageDraw

    width, height = 512, 384
    image = Image.new("RGB", (width, height))
    pixels = ImageDraw.Draw(image)
    for y in range(height):
        t = y / (height - 1)
        colour = (int(40 + 215 * t), int(60 + 110 * t), int(140 - 40 * t))
        pixels.line([(0, y), (width, y)], fill=colour)
    pixels.ellipse((300, 90, 400, 190), fill=(255, 214, 102))
    pixels.ellipse((-120, 250, 330, 560), fill=(46, 110, 70))
    pixels.ellipse((200, 270, 660, 600), fill=(30, 84, 56))
    image.save(path, format="PNG")


# --- running -------------------------------------------------------------------------------------------


def _server_env(base_url: str, state_dir: Path, output_dir: Path) -> dict[str, str]:
    """The subprocess's whole environment: a demo key, a throwaway ledger/cache, the output dir allowed."""
    env = {name: os.environ[name] for name in ("PATH", "HOME", "LANG", "LC_ALL", "SYSTEMROOT") if name in os.environ}
    env.update(
        {
            "FAL_MCP_BASE_URL": base_url,
            "FAL_KEY": DEMO_KEY,
            "FAL_MCP_LEDGER": str(state_dir / "ledger.sqlite3"),
            "FAL_MCP_CACHE_DIR": str(state_dir / "cache"),
            "FAL_MCP_ALLOWED_DIRS": str(output_dir),
            "FAL_MCP_LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


async def run_demo(options: DemoOptions, stream: IO[str] | None = None) -> int:
    """Run every step; 0 when all passed, 1 otherwise (the failures say why, without a traceback)."""
    started = time.monotonic()
    from mcp import Client, StdioServerParameters
    from mcp.client.stdio import stdio_client

    from fal_mcp.emulator.config import EmulatorConfig
    from fal_mcp.emulator.server import EmulatorServer

    stream = stream or sys.stdout
    console = Console(stream, live=not options.plain and stream.isatty())
    output_dir = options.output_dir.expanduser().absolute()
    console.heading("fal-mcp demo: the MCP server against a local fal emulator (offline, no key, nothing billed)")

    try:
        emulator = await anyio.to_thread.run_sync(
            lambda: EmulatorServer(EmulatorConfig(time_scale=options.time_scale)).start()
        )
    except (RuntimeError, OSError) as exc:
        console.write(f"{console.style('✗', '31')} the local fal emulator did not start: {_describe(exc)}")
        return 1
    with tempfile.TemporaryDirectory(prefix="fal-mcp-demo-") as tmp:
        state_dir = Path(tmp)
        server_log = state_dir / "server.log"
        params = StdioServerParameters(
            command=sys.executable,
            args=["-m", "fal_mcp"],
            env=_server_env(emulator.base_url, state_dir, output_dir),
            cwd=Path.cwd(),
        )
        console.write(console.dim(f"  emulator at {emulator.base_url}; server: {sys.executable} -m fal_mcp (stdio)"))
        demo: Demo | None = None
        try:
            async with AsyncExitStack() as stack:
                errlog = stack.enter_context(server_log.open("w"))
                connect_started = time.monotonic()
                client = await stack.enter_async_context(Client(stdio_client(params, errlog=errlog)))
                tools = await client.list_tools()
                console.write(
                    console.dim(
                        f"  connected in {time.monotonic() - connect_started:.2f}s; "
                        f"{len(tools.tools)} tools: {', '.join(t.name for t in tools.tools)}"
                    )
                )
                demo = Demo(client, console, output_dir, options.time_scale)
                await demo.step("model_search", demo.search)
                await demo.step("model_schema", demo.schema)
                await demo.step("upload_file", demo.upload)
                await demo.step("fal_subscribe (image-to-image)", demo.image_to_image)
                await demo.step("fal_subscribe (text-to-speech, then speech-to-text)", demo.speech)
                await demo.step("queue_submit + queue_status + queue_result", demo.poll)
                await demo.step("queue_submit + queue_cancel", demo.cancel)
                await demo.step("jobs_list", demo.jobs)
        except Exception as exc:  # the server or the connection broke: say so plainly
            console.write(f"{console.style('✗', '31')} the MCP server stopped working: {_describe(exc)}")
            tail = _tail(server_log)
            if tail:
                console.write(console.dim("  last lines of the server's log:"))
                for line in tail.splitlines():
                    console.write(console.dim(f"    {line}"))
            demo = demo or Demo(None, console, output_dir, options.time_scale)
            demo.outcomes.append(StepOutcome(len(demo.outcomes) + 1, "server", False, _describe(exc), 0.0))
        finally:
            jobs_seen = sum(emulator.state.submissions.values())
            await anyio.to_thread.run_sync(emulator.stop)
    _summary(console, demo, time.monotonic() - started, jobs_seen)
    return 0 if demo and demo.outcomes and all(o.ok for o in demo.outcomes) else 1


def _describe(exc: BaseException) -> str:
    """One line for an unexpected failure, unwrapping exception groups from task groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return str(exc) or type(exc).__name__


def _summary(console: Console, demo: Demo | None, seconds: float, jobs_seen: int) -> None:
    outcomes = demo.outcomes if demo else []
    passed = sum(o.ok for o in outcomes)
    console.write()
    verdict = "all steps passed" if outcomes and passed == len(outcomes) else f"{passed}/{len(outcomes)} steps passed"
    console.heading(f"Done in {seconds:.1f}s: {verdict}. The emulator ran {jobs_seen} jobs.")
    if demo and demo.saved:
        existing = [p for p in demo.saved if p.exists()]
        console.write(f"Files saved in {demo.shown(demo.output_dir)}/: " + ", ".join(p.name for p in existing))
        if (demo.output_dir / "index.html").exists():
            console.write(f"Gallery: open {demo.shown(demo.output_dir / 'index.html')} in a browser")
    for outcome in outcomes:
        if not outcome.ok:
            console.write(f"Failed: {outcome.name}: {outcome.detail}")
    console.write()
    console.heading("What next")
    console.write("  1. Get a fal key: https://fal.ai/dashboard/keys")
    console.write("  2. Claude Code:  claude mcp add fal -e FAL_KEY=<your key> -- uvx fal-mcp")
    console.write('     Other clients: command "uvx", args ["fal-mcp"], env {"FAL_KEY": "<your key>"}')
    console.write("  3. Check the setup: fal-mcp doctor   ·   Try tools offline: fal-mcp --local")
    console.write(f"  More in the README: {REPO_URL}#readme")


def add_cli(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=Path(DEFAULT_OUTPUT_DIR),
        help=f"where the sample and the generated images go (default ./{DEFAULT_OUTPUT_DIR})",
    )
    parser.add_argument("--plain", action="store_true", help="plain lines: no colours, no live progress bar")
    parser.add_argument(
        "--time-scale",
        type=float,
        default=DEFAULT_TIME_SCALE,
        help=f"emulated seconds → real seconds (default {DEFAULT_TIME_SCALE}; smaller is faster)",
    )


def main(args: argparse.Namespace) -> int:
    from fal_mcp.log import configure_logging

    if not 0.001 <= args.time_scale <= 10:
        print("fal-mcp demo: --time-scale must be between 0.001 and 10", file=sys.stderr)
        return 2
    configure_logging(level="WARNING", fmt="console")  # the emulator's chatter would drown the report
    options = DemoOptions(output_dir=args.output_dir, plain=args.plain, time_scale=args.time_scale)
    try:
        return anyio.run(run_demo, options)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
