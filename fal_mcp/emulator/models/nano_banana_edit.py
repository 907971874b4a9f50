"""``fal-ai/nano-banana/edit``: image editing with Nano Banana's real schema — several ``image_urls`` in,
edited pictures out: the inputs tiled side by side, blended with the (prompt, seed) picture."""

from __future__ import annotations

import base64
from typing import Any, ClassVar

import anyio
from PIL import Image

from fal_mcp.emulator.models.base import DocumentModel, RunContext
from fal_mcp.emulator.models.imaging import check_prompt, decode, encode, pick_seed, render

EDIT_STRENGTH = 0.35
LONG_SIDE = 1024


def canvas_size(aspect_ratio: str | None, first: Image.Image) -> tuple[int, int]:
    """``auto`` keeps the first input's size; ``W:H`` fits that ratio into 1024 pixels on the long side."""
    if not aspect_ratio or aspect_ratio == "auto":
        return first.size
    w, h = (int(part) for part in aspect_ratio.split(":"))
    return (LONG_SIDE, round(LONG_SIDE * h / w)) if w >= h else (round(LONG_SIDE * w / h), LONG_SIDE)


def edit(sources: list[Image.Image], size: tuple[int, int], prompt: str, seed: int, index: int) -> Image.Image:
    width, height = size
    tiled = Image.new("RGB", size)
    step = width / len(sources)
    for position, source in enumerate(sources):
        left, right = round(position * step), round((position + 1) * step)
        tiled.paste(source.resize((max(1, right - left), height)), (left, 0))
    return Image.blend(tiled, render(width, height, prompt, seed, index), EDIT_STRENGTH)


class NanoBananaEdit(DocumentModel):
    endpoint_id: ClassVar[str] = "fal-ai/nano-banana/edit"

    async def run(self, data: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
        prompt: str = data["prompt"]
        check_prompt(ctx, prompt)
        seed = pick_seed(data)
        sources = []
        for url in data["image_urls"]:
            raw, _ = await ctx.fetch(url, "image_urls")
            sources.append(decode(raw, "image_urls", url))
        if not sources:
            return {"images": [], "description": "No input images were given."}
        size = canvas_size(data.get("aspect_ratio"), sources[0])
        await ctx.log(f"Editing {len(sources)} image(s) into {size[0]}x{size[1]}")
        await ctx.sleep(2.0)
        images = []
        for index in range(data["num_images"]):
            picture = await anyio.to_thread.run_sync(edit, sources, size, prompt, seed, index)
            content, content_type = await anyio.to_thread.run_sync(encode, picture, data["output_format"])
            name = f"nano-banana-edit-{seed}-{index}.{data['output_format'].replace('jpeg', 'jpg')}"
            if data["sync_mode"]:
                url = f"data:{content_type};base64,{base64.b64encode(content).decode()}"
                file: dict[str, Any] = {"url": url, "content_type": content_type, "file_name": name}
                file["file_size"] = len(content)
            else:
                file = await ctx.store(content, content_type, name)
            images.append({**file, "width": size[0], "height": size[1]})
        return {"images": images, "description": f"Edited {len(sources)} image(s) as asked: {prompt}"}

    def billable_units(self, data: dict[str, Any], output: dict[str, Any]) -> float:
        return float(len(output["images"]))
