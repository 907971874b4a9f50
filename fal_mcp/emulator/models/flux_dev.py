"""``fal-ai/flux/dev``: text-to-image with FLUX.1 [dev]'s schema; draws real, deterministic pictures."""

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
    megapixels,
    pick_seed,
    render,
    size_of,
)

SECONDS_PER_STEP = 0.1  # 28 default steps ≈ 2.8 simulated seconds

FLUX_COMMON_PROPERTIES: dict[str, Any] = {
    "prompt": {
        "title": "Prompt",
        "type": "string",
        "description": "The prompt to generate an image from.",
        "examples": ["Extreme close-up of a single tiger eye, direct frontal view."],
    },
    "num_inference_steps": {
        "title": "Num Inference Steps",
        "type": "integer",
        "description": "The number of inference steps to perform.",
        "default": 28,
        "minimum": 1,
        "maximum": 50,
    },
    "seed": {
        "title": "Seed",
        "type": "integer",
        "description": "The same seed and the same prompt given to the same version of the model "
        "will output the same image every time.",
    },
    "guidance_scale": {
        "title": "Guidance scale (CFG)",
        "type": "number",
        "description": "How closely the model sticks to your prompt.",
        "default": 3.5,
        "minimum": 1,
        "maximum": 20,
    },
    "sync_mode": {
        "title": "Sync Mode",
        "type": "boolean",
        "description": "If set to true, the image is returned as a data URI instead of a CDN URL.",
        "default": False,
    },
    "num_images": {
        "title": "Num Images",
        "type": "integer",
        "description": "The number of images to generate.",
        "default": 1,
        "minimum": 1,
        "maximum": 4,
    },
    "enable_safety_checker": {
        "title": "Enable Safety Checker",
        "type": "boolean",
        "description": "If set to true, the safety checker will be enabled.",
        "default": True,
    },
    "output_format": {
        "title": "Output Format",
        "type": "string",
        "description": "The format of the generated image.",
        "enum": ["jpeg", "png"],
        "default": "jpeg",
    },
}


async def denoise(ctx: RunContext, steps: int) -> None:
    """Spend the simulated time of ``steps`` denoising steps, logging progress a few times."""
    checkpoints = sorted({max(1, round(steps * q / 4)) for q in (1, 2, 3, 4)})
    done = 0
    for step in checkpoints:
        await ctx.sleep((step - done) * SECONDS_PER_STEP)
        done = step
        await ctx.log(f"Denoising step {step}/{steps}")


class FluxDev(EmulatedModel):
    info: ClassVar[ModelInfo] = ModelInfo(
        endpoint_id="fal-ai/flux/dev",
        display_name="FLUX.1 [dev]",
        category="text-to-image",
        description="FLUX.1 [dev] text-to-image (emulated: deterministic gradient-and-shapes pictures).",
        tags=("flux", "text-to-image", "emulated"),
        unit_price=0.025,
        unit="megapixel",
        duration_estimate=0.05,
    )
    components: ClassVar[dict[str, dict[str, Any]]] = IMAGE_COMPONENTS
    input_schema: ClassVar[dict[str, Any]] = {
        "title": "TextToImageInput",
        "type": "object",
        "x-fal-order-properties": [
            "prompt",
            "image_size",
            "num_inference_steps",
            "seed",
            "guidance_scale",
            "sync_mode",
            "num_images",
            "enable_safety_checker",
            "output_format",
        ],
        "properties": {
            "prompt": FLUX_COMMON_PROPERTIES["prompt"],
            "image_size": image_size_property("landscape_4_3"),
            **{k: v for k, v in FLUX_COMMON_PROPERTIES.items() if k != "prompt"},
        },
        "required": ["prompt"],
    }
    output_schema: ClassVar[dict[str, Any]] = images_output_schema("Output")

    async def run(self, data: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
        prompt: str = data["prompt"]
        check_prompt(ctx, prompt)
        seed = pick_seed(data)
        width, height = size_of(data["image_size"])
        started = time.monotonic()
        await ctx.log(f"Generating {data['num_images']} image(s) of {width}x{height}, seed {seed}")
        await denoise(ctx, data["num_inference_steps"])
        return await images_result(
            ctx,
            data,
            lambda index: render(width, height, prompt, seed, index),
            seed=seed,
            started=started,
            name="flux-dev",
            output_format=data["output_format"],
        )

    def billable_units(self, data: dict[str, Any], output: dict[str, Any]) -> float:
        return megapixels(output["images"])
