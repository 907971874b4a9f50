"""``fal-ai/fast-lcm-diffusion``: few-step image model, usable over the realtime WebSocket as well as queue/run."""

from __future__ import annotations

import time
from typing import Any, ClassVar

from fal_mcp.emulator.models.base import EmulatedModel, ModelInfo, RunContext
from fal_mcp.emulator.models.imaging import (
    IMAGE_COMPONENTS,
    check_prompt,
    image_size_property,
    images_output_schema,
    images_result,
    pick_seed,
    render,
    size_of,
)

SECONDS_PER_STEP = 0.02


class FastLcmDiffusion(EmulatedModel):
    info: ClassVar[ModelInfo] = ModelInfo(
        endpoint_id="fal-ai/fast-lcm-diffusion",
        display_name="Fast LCM Diffusion",
        category="text-to-image",
        description="Latent consistency model: images in a few steps, fast enough for realtime (emulated).",
        tags=("lcm", "realtime", "text-to-image", "emulated"),
        unit_price=0.001,
        unit="image",
        duration_estimate=0.01,
    )
    supports_realtime: ClassVar[bool] = True
    components: ClassVar[dict[str, dict[str, Any]]] = IMAGE_COMPONENTS
    input_schema: ClassVar[dict[str, Any]] = {
        "title": "TextToImageLCMInput",
        "type": "object",
        "x-fal-order-properties": [
            "prompt",
            "negative_prompt",
            "image_size",
            "num_inference_steps",
            "guidance_scale",
            "seed",
            "sync_mode",
            "num_images",
            "enable_safety_checker",
            "format",
        ],
        "properties": {
            "prompt": {
                "title": "Prompt",
                "type": "string",
                "description": "The prompt to use for generating the image.",
                "examples": ["an island near sea, with seagulls, moon shining over the sea, light house"],
            },
            "negative_prompt": {
                "title": "Negative Prompt",
                "type": "string",
                "description": "The negative prompt to use.",
                "default": "",
            },
            "image_size": image_size_property("square"),
            "num_inference_steps": {
                "title": "Num Inference Steps",
                "type": "integer",
                "description": "The number of inference steps to perform.",
                "default": 6,
                "minimum": 1,
                "maximum": 8,
            },
            "guidance_scale": {
                "title": "Guidance scale (CFG)",
                "type": "number",
                "default": 1.5,
                "minimum": 0,
                "maximum": 16,
            },
            "seed": {"title": "Seed", "type": "integer", "description": "The same seed gives the same image."},
            "sync_mode": {
                "title": "Sync Mode",
                "type": "boolean",
                "description": "If set to true, the image is returned as a data URI instead of a CDN URL.",
                "default": False,
            },
            "num_images": {"title": "Num Images", "type": "integer", "default": 1, "minimum": 1, "maximum": 4},
            "enable_safety_checker": {"title": "Enable Safety Checker", "type": "boolean", "default": True},
            "format": {"title": "Format", "type": "string", "enum": ["jpeg", "png"], "default": "jpeg"},
        },
        "required": ["prompt"],
    }
    output_schema: ClassVar[dict[str, Any]] = images_output_schema("LCMOutput")

    async def run(self, data: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
        prompt: str = data["prompt"]
        check_prompt(ctx, prompt)
        seed = pick_seed(data)
        width, height = size_of(data["image_size"])
        started = time.monotonic()
        await ctx.sleep(data["num_inference_steps"] * SECONDS_PER_STEP)
        await ctx.log(f"Generated {data['num_images']} image(s) in {data['num_inference_steps']} steps")
        return await images_result(
            ctx,
            data,
            lambda index: render(width, height, prompt, seed, index),
            seed=seed,
            started=started,
            name="lcm",
            output_format=data["format"],
        )

    async def realtime(self, data: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
        """One realtime frame: validated like any call, then the same (fast) generation."""
        self.validate(data)
        return await self.run(self.with_defaults(data), ctx)

    def billable_units(self, data: dict[str, Any], output: dict[str, Any]) -> float:
        return float(len(output["images"]))
