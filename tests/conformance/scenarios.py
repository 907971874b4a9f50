"""The conformance scenarios, in one place for the three suites (fal_client, @fal-ai/client, our FalClient).

Each scenario names an endpoint, an input and what must come back, so the suites cannot drift apart.
The JS driver gets the same data as JSON (:func:`as_json`). Times assume :data:`CONFIG`: one runner
per app, so a :data:`BLOCKER` makes the next request wait in the queue.
"""

from __future__ import annotations

import base64
import io
import random
import struct
from dataclasses import asdict, dataclass, field
from typing import Any

from PIL import Image

from fal_mcp.emulator.config import EmulatorConfig
from fal_mcp.emulator.models.llm import reply

KEY = "conformance-key-id:conformance-key-secret"
KEY_ID = "conformance-key-id"
# 50× faster than real time; one runner per app, so queue positions and cancels are deterministic.
CONFIG = EmulatorConfig(time_scale=0.02, concurrency_per_app=1, ping_interval_seconds=0.5)
MiB = 1024 * 1024


@dataclass(frozen=True)
class Call:
    """One model call: where, with what, and (when deterministic) exactly what comes back."""

    endpoint_id: str
    input: dict[str, Any]
    output: dict[str, Any] | None = None
    logs: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Failure:
    """The error answer a call must surface: HTTP status and JSON body."""

    status_code: int
    body: dict[str, Any]


# -- queue ---------------------------------------------------------------------------------------

# Holds emulator/slow's only runner for 0.2 s, so the request after it is seen IN_QUEUE first.
BLOCKER = Call("emulator/slow", {"seconds": 10, "steps": 1})
# subscribe: Queued (behind BLOCKER) → InProgress with log lines → Completed → this output.
SUBSCRIBE = Call(
    "emulator/slow",
    {"seconds": 10, "steps": 5},
    output={"steps": 5, "seconds": 10, "message": "Slept 10 seconds in 5 steps"},
    logs=[f"step {step}/5" for step in range(1, 6)],
)
# submit + status + result.
QUEUE = Call(
    "emulator/strict",
    {"prompt": "conformance"},
    output={
        "ok": True,
        "input": {"prompt": "conformance", "num_images": 1, "style": "photo", "width": 512, "height": 512},
    },
    logs=["input accepted"],
)
# Runs for a minute at CONFIG's time scale: long enough to be cancelled while queued or running.
LONG = Call("emulator/slow", {"seconds": 3000, "steps": 1})
CANCELLED = Failure(499, {"detail": "Request cancelled by the client.", "error_type": "client_cancelled"})
ALREADY_COMPLETED = Failure(400, {"status": "ALREADY_COMPLETED"})

# -- run and stream ------------------------------------------------------------------------------

RUN = Call(
    "fal-ai/flux/dev",
    {
        "prompt": "a red fox in the snow",
        "image_size": {"width": 64, "height": 48},
        "seed": 7,
        "num_inference_steps": 2,
        "output_format": "png",
    },
)
RUN_IMAGE = {"width": 64, "height": 48, "content_type": "image/png"}
STREAM = Call(
    "openrouter/router",
    {"prompt": "conformance stream", "model": "google/gemini-2.5-flash"},
    output=reply({"prompt": "conformance stream", "model": "google/gemini-2.5-flash"}),
)

# -- storage -------------------------------------------------------------------------------------

UPLOAD_DATA = bytes(range(256)) * 64 + b"conformance"
UPLOAD_TYPE = "application/octet-stream"
UPLOAD_NAME = "conformance.bin"
IMAGE_SIZE = (40, 24)
IMAGE_COLOR = (30, 140, 220)


def image_png() -> bytes:
    """A small solid PNG of IMAGE_SIZE and IMAGE_COLOR (an input file for image models)."""
    buffer = io.BytesIO()
    Image.new("RGB", IMAGE_SIZE, IMAGE_COLOR).save(buffer, format="PNG")
    return buffer.getvalue()


# fal_client uploads in 10 MiB parts above its threshold; with the threshold patched to 1 MiB this
# is two parts (10 MiB + 123 bytes).
MULTIPART_THRESHOLD = MiB
MULTIPART_DATA = random.Random(20261124).randbytes(10 * MiB + 123)

# -- realtime ------------------------------------------------------------------------------------

REALTIME = Call(
    "fal-ai/fast-lcm-diffusion",
    {
        "prompt": "a lighthouse at night",
        "image_size": {"width": 32, "height": 32},
        "seed": 5,
        "format": "png",
        "sync_mode": False,
    },
)
REALTIME_IMAGE = {"width": 32, "height": 32, "content_type": "image/png"}

# -- errors --------------------------------------------------------------------------------------

INVALID = Call("emulator/strict", {"prompt": "x"})
INVALID_ERROR = Failure(
    422,
    {
        "detail": [
            {
                "loc": ["body", "prompt"],
                "msg": "String should have at least 3 characters",
                "type": "string_too_short",
                "url": "https://docs.fal.ai/errors/#string_too_short",
                "ctx": {"min_length": 3},
                "input": "x",
            }
        ]
    },
)
UNKNOWN_APP = Call("fal-ai/no-such-model", {"prompt": "anything"})
UNKNOWN_APP_ERROR = Failure(404, {"detail": 'Application "no-such-model" not found'})


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR (the JS driver reads them the same way)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:8]
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def as_json(base_url: str) -> dict[str, Any]:
    """Everything the JS driver needs to run against the emulator at ``base_url``, as JSON-ready data."""
    calls = {
        "blocker": BLOCKER,
        "subscribe": SUBSCRIBE,
        "queue": QUEUE,
        "long": LONG,
        "run": RUN,
        "stream": STREAM,
        "realtime": REALTIME,
        "invalid": INVALID,
        "unknown_app": UNKNOWN_APP,
    }
    return {
        "base_url": base_url,
        "key": KEY,
        "calls": {name: asdict(call) for name, call in calls.items()},
        "upload": {"data": base64.b64encode(UPLOAD_DATA).decode(), "content_type": UPLOAD_TYPE},
        "image_png": base64.b64encode(image_png()).decode(),
    }
