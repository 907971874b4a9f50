"""``fal-ai/flux/dev/image-to-image``: downloads ``image_url`` and really transforms it (blend by ``strength``)."""

from __future__ import annotations

import time
from typing import Any, ClassVar

from PIL import Image

from fal_mcp.emulator.models.base import DocumentModel, RunContext
from fal_mcp.emulator.models.flux_dev import denoise
from fal_mcp.emulator.models.imaging import check_prompt, decode, images_result, megapixels, pick_seed, render


def transform(source: Image.Image, prompt: str, seed: int, index: int, strength: float) -> Image.Image:
    """Blend the source with the (prompt, seed) picture: strength 0 keeps the source, 1 replaces it."""
    pattern = render(source.width, source.height, prompt, seed, index)
    return Image.blend(source, pattern, strength)


class FluxImageToImage(DocumentModel):
    endpoint_id: ClassVar[str] = "fal-ai/flux/dev/image-to-image"

    async def run(self, data: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
        prompt: str = data["prompt"]
        check_prompt(ctx, prompt)
        seed = pick_seed(data)
        started = time.monotonic()
        raw, _ = await ctx.fetch(data["image_url"])
        source = decode(raw, "image_url", data["image_url"])
        await ctx.log(f"Loaded input image {source.width}x{source.height}; strength {data['strength']}, seed {seed}")
        await denoise(ctx, data["num_inference_steps"])
        return await images_result(
            ctx,
            data,
            lambda index: transform(source, prompt, seed, index, data["strength"]),
            seed=seed,
            started=started,
            name="flux-i2i",
            output_format=data["output_format"],
        )

    def billable_units(self, data: dict[str, Any], output: dict[str, Any]) -> float:
        return megapixels(output["images"])
