"""``fal-ai/veo3``: text-to-video with Veo 3's real schema; returns a real, playable H.264 MP4 (AAC audio
when ``generate_audio``), deterministic per (prompt, seed). Needs PyAV (the ``media`` extra)."""

from __future__ import annotations

import math
import random
from typing import Any, ClassVar

import anyio
from PIL import Image, ImageDraw

from fal_mcp.emulator.models.base import DocumentModel, RunContext
from fal_mcp.emulator.models.imaging import check_prompt, pick_seed, render
from fal_mcp.emulator.models.media import MEDIA_EXTRA_HINT, have_pyav, mp4, tone

FPS = 24
SECONDS_PER_VIDEO_SECOND = 1.0  # simulated generation time
SIZES = {("720p", "16:9"): (1280, 720), ("720p", "9:16"): (720, 1280), ("1080p", "16:9"): (1920, 1080)}


def frames(width: int, height: int, prompt: str, seed: int, count: int) -> Any:
    """``frame(i)``: the (prompt, seed) picture with a ball crossing it — motion a viewer can see."""
    background = render(width, height, prompt, seed)
    rng = random.Random(seed)
    colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
    radius = max(8, min(width, height) // 10)

    def frame(index: int) -> Image.Image:
        image = background.copy()
        progress = index / max(1, count - 1)
        x = int(radius + progress * (width - 2 * radius))
        y = int(height / 2 + math.sin(progress * 2 * math.pi) * height / 4)
        ImageDraw.Draw(image).ellipse((x - radius, y - radius, x + radius, y + radius), fill=colour)
        return image

    return frame


def soundtrack(seed: int, seconds: float) -> Any:
    """``audio(rate)``: a short seeded melody filling the video's length."""
    notes = [220.0 * 2 ** (step / 12) for step in random.Random(seed).choices((0, 3, 5, 7, 10, 12), k=8)]

    def audio(rate: int) -> bytes:
        each = seconds / len(notes)
        return b"".join(tone(note, each, rate, volume=0.2) for note in notes)

    return audio


class Veo3(DocumentModel):
    endpoint_id: ClassVar[str] = "fal-ai/veo3"

    @property
    def unavailable_reason(self) -> str | None:
        return None if have_pyav() else f"its MP4 output is encoded with PyAV, and {MEDIA_EXTRA_HINT}"

    async def run(self, data: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
        prompt: str = data["prompt"]
        check_prompt(ctx, prompt)
        seed = pick_seed(data)
        seconds = float(data["duration"].rstrip("s"))
        width, height = SIZES.get((data["resolution"], data["aspect_ratio"]), (1080, 1920))
        await ctx.log(f"Generating {seconds:g}s of {width}x{height} video, seed {seed}")
        for second in range(1, int(seconds) + 1):
            await ctx.sleep(SECONDS_PER_VIDEO_SECOND)
            await ctx.log(f"Rendered {second}/{int(seconds)} s")
        count = round(seconds * FPS)
        audio = soundtrack(seed, seconds) if data["generate_audio"] else None
        video = await anyio.to_thread.run_sync(
            lambda: mp4(
                frames(width, height, prompt, seed, count),
                width=width,
                height=height,
                fps=FPS,
                seconds=seconds,
                audio=audio,
            )
        )
        return {"video": await ctx.store(video, "video/mp4", f"veo3-{seed}.mp4")}

    def billable_units(self, data: dict[str, Any], output: dict[str, Any]) -> float:
        return float(data["duration"].rstrip("s"))
