"""``fal-ai/flux/dev/image-to-image``: downloads ``image_url`` and really transforms it (blend by ``strength``)."""

from __future__ import annotations

import time
from typing import Any, ClassVar

from PIL import Image

from fal_mcp.emulator.models.base import EmulatedModel, ModelInfo, RunContext
from fal_mcp.emulator.models.flux_dev import FLUX_COMMON_PROPERTIES, denoise
from fal_mcp.emulator.models.imaging import (
    IMAGE_COMPONENTS,
    check_prompt,
    decode,
    images_output_schema,
    images_result,
    megapixels,
    pick_seed,
    render,
)


def transform(source: Image.Image, prompt: str, seed: int, index: int, strength: float) -> Image.Image:
    """Blend the source with the (prompt, seed) picture: strength 0 keeps the source, 1 replaces it."""
    pattern = render(source.width, source.height, prompt, seed, index)
    return Image.blend(source, pattern, strength)


class FluxImageToImage(EmulatedModel):
    info: ClassVar[ModelInfo] = ModelInfo(
        endpoint_id="fal-ai/flux/dev/image-to-image",
        display_name="FLUX.1 [dev] Image-to-Image",
        category="image-to-image",
        description="FLUX.1 [dev] image-to-image (emulated: blends the input with a seeded pattern by strength).",
        tags=("flux", "image-to-image", "emulated"),
        unit_price=0.025,
        unit="megapixel",
        duration_estimate=0.05,
    )
    components: ClassVar[dict[str, dict[str, Any]]] = IMAGE_COMPONENTS
    input_schema: ClassVar[dict[str, Any]] = {
        "title": "ImageToImageInput",
        "type": "object",
        "x-fal-order-properties": [
            "image_url",
            "prompt",
            "strength",
            "num_inference_steps",
            "seed",
            "guidance_scale",
            "sync_mode",
            "num_images",
            "enable_safety_checker",
            "output_format",
        ],
        "properties": {
            "image_url": {
                "title": "Image URL",
                "type": "string",
                "description": "The URL of the image to generate an image from.",
                "examples": ["https://fal.media/files/koala/Chls9L2ZnvuipUTEwlnJC.png"],
            },
            "prompt": FLUX_COMMON_PROPERTIES["prompt"],
            "strength": {
                "title": "Strength",
                "type": "number",
                "description": "The strength of the initial image. Higher strength values are better for this model.",
                "default": 0.95,
                "minimum": 0.01,
                "maximum": 1,
            },
            **{k: v for k, v in FLUX_COMMON_PROPERTIES.items() if k != "prompt"},
            "num_inference_steps": {**FLUX_COMMON_PROPERTIES["num_inference_steps"], "default": 40},
        },
        "required": ["image_url", "prompt"],
    }
    output_schema: ClassVar[dict[str, Any]] = images_output_schema("Output")

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
