"""``fal-ai/fast-lcm-diffusion``: few-step image model, usable over the realtime WebSocket as well as queue/run."""

from __future__ import annotations

import time
from typing import Any, ClassVar

from fal_mcp.emulator.models.base import DocumentModel, RunContext
from fal_mcp.emulator.models.imaging import check_prompt, images_result, pick_seed, render, size_of

SECONDS_PER_STEP = 0.02


class FastLcmDiffusion(DocumentModel):
    endpoint_id: ClassVar[str] = "fal-ai/fast-lcm-diffusion"
    supports_realtime: ClassVar[bool] = True

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
