"""``fal-ai/flux/dev``: text-to-image with FLUX.1 [dev]'s real schema; draws real, deterministic pictures."""

from __future__ import annotations

import time
from typing import Any, ClassVar

from fal_mcp.emulator.models.base import DocumentModel, RunContext
from fal_mcp.emulator.models.imaging import check_prompt, images_result, megapixels, pick_seed, render, size_of

SECONDS_PER_STEP = 0.1  # 28 default steps ≈ 2.8 simulated seconds


async def denoise(ctx: RunContext, steps: int) -> None:
    """Spend the simulated time of ``steps`` denoising steps, logging progress a few times."""
    checkpoints = sorted({max(1, round(steps * q / 4)) for q in (1, 2, 3, 4)})
    done = 0
    for step in checkpoints:
        await ctx.sleep((step - done) * SECONDS_PER_STEP)
        done = step
        await ctx.log(f"Denoising step {step}/{steps}")


class FluxDev(DocumentModel):
    endpoint_id: ClassVar[str] = "fal-ai/flux/dev"

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
