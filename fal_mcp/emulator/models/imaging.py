"""Shared pieces of the image models: fal's Image/ImageSize schemas, real pictures, outputs, content policy."""

from __future__ import annotations

import base64
import hashlib
import io
import random
import time
from collections.abc import Callable
from typing import Any

import anyio
from PIL import Image, ImageDraw

from fal_mcp.emulator.models.base import ModelError, RunContext, error_detail, validation_error
from fal_mcp.fal.schemas import IMAGE_SIZE_PRESETS

IMAGE_SIZES = IMAGE_SIZE_PRESETS

IMAGE_COMPONENT: dict[str, Any] = {
    "title": "Image",
    "type": "object",
    "description": "Represents an image file.",
    "x-fal-order-properties": ["url", "width", "height", "content_type"],
    "properties": {
        "url": {"title": "Url", "type": "string", "description": "The URL where the file can be downloaded from."},
        "width": {"title": "Width", "type": "integer", "description": "The width of the image in pixels."},
        "height": {"title": "Height", "type": "integer", "description": "The height of the image in pixels."},
        "content_type": {
            "title": "Content Type",
            "type": "string",
            "description": "The mime type of the file.",
            "default": "image/jpeg",
        },
    },
    "required": ["url"],
}

IMAGE_SIZE_COMPONENT: dict[str, Any] = {
    "title": "ImageSize",
    "type": "object",
    "x-fal-order-properties": ["width", "height"],
    "properties": {
        "width": {
            "title": "Width",
            "type": "integer",
            "description": "The width of the generated image.",
            "default": 512,
            "minimum": 1,
            "maximum": 14142,
        },
        "height": {
            "title": "Height",
            "type": "integer",
            "description": "The height of the generated image.",
            "default": 512,
            "minimum": 1,
            "maximum": 14142,
        },
    },
}

IMAGE_COMPONENTS = {"Image": IMAGE_COMPONENT, "ImageSize": IMAGE_SIZE_COMPONENT}


def image_size_property(default: str) -> dict[str, Any]:
    """fal's ``image_size``: a preset name or an explicit ``{width, height}``."""
    return {
        "title": "Image Size",
        "description": "The size of the generated image.",
        "default": default,
        "anyOf": [
            {"$ref": "#/components/schemas/ImageSize"},
            {"type": "string", "enum": list(IMAGE_SIZES)},
        ],
    }


def images_output_schema(title: str) -> dict[str, Any]:
    """fal's text-to-image output: images, timings, seed, has_nsfw_concepts, prompt."""
    return {
        "title": title,
        "type": "object",
        "x-fal-order-properties": ["images", "timings", "seed", "has_nsfw_concepts", "prompt"],
        "properties": {
            "images": {
                "title": "Images",
                "type": "array",
                "description": "The generated image files info.",
                "items": {"$ref": "#/components/schemas/Image"},
            },
            "timings": {"title": "Timings", "type": "object", "additionalProperties": {"type": "number"}},
            "seed": {"title": "Seed", "type": "integer", "description": "Seed of the generated image."},
            "has_nsfw_concepts": {
                "title": "Has Nsfw Concepts",
                "type": "array",
                "description": "Whether the generated images contain NSFW concepts.",
                "items": {"type": "boolean"},
            },
            "prompt": {"title": "Prompt", "type": "string", "description": "The prompt used for generating the image."},
        },
        "required": ["images", "timings", "seed", "has_nsfw_concepts", "prompt"],
    }


def size_of(value: Any) -> tuple[int, int]:
    if isinstance(value, dict):
        return int(value.get("width", 512)), int(value.get("height", 512))
    return IMAGE_SIZES[str(value)]


def pick_seed(data: dict[str, Any]) -> int:
    seed = data.get("seed")
    return int(seed) if seed is not None else random.randrange(0, 2**31)


def check_prompt(ctx: RunContext, prompt: str) -> None:
    """fal's safety filter, emulated: a configured trigger word fails the request with 422."""
    lowered = prompt.lower()
    if any(word.lower() in lowered for word in ctx.state.config.content_policy_words):
        raise validation_error(
            error_detail(
                "content_policy_violation",
                "The content could not be processed because it contained material flagged by a content checker.",
                ["body", "prompt"],
                input=prompt,
            )
        )


def _rng(*parts: object) -> random.Random:
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _colour(rng: random.Random) -> tuple[int, int, int]:
    return rng.randrange(256), rng.randrange(256), rng.randrange(256)


def render(width: int, height: int, prompt: str, seed: int, index: int = 0) -> Image.Image:
    """A deterministic picture for (prompt, seed): a two-colour gradient with a few seeded shapes."""
    rng = _rng(prompt, seed, index)
    mask = Image.linear_gradient("L").rotate(rng.choice((0, 90, 180, 270))).resize((width, height))
    first, second = Image.new("RGB", (width, height), _colour(rng)), Image.new("RGB", (width, height), _colour(rng))
    image = Image.composite(first, second, mask)
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(3, 8)):
        x0, y0 = rng.randrange(width), rng.randrange(height)
        x1, y1 = x0 + rng.randint(width // 10 + 1, width // 2 + 2), y0 + rng.randint(height // 10 + 1, height // 2 + 2)
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x0, y0, x1, y1), fill=_colour(rng), outline=_colour(rng), width=max(1, min(width, height) // 100))
    return image


def encode(image: Image.Image, output_format: str) -> tuple[bytes, str]:
    buffer = io.BytesIO()
    if output_format == "png":
        image.save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue(), "image/png"
    if output_format == "webp":
        image.save(buffer, format="WEBP", quality=85)
        return buffer.getvalue(), "image/webp"
    image.convert("RGB").save(buffer, format="JPEG", quality=85)
    return buffer.getvalue(), "image/jpeg"


def decode(data: bytes, field: str, url: str) -> Image.Image:
    """Open an input image; unreadable bytes are fal's 422 ``image_load_error``."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception as exc:
        raise ModelError(
            422,
            {
                "detail": [
                    error_detail(
                        "image_load_error",
                        f"Failed to load the image: {exc.__class__.__name__}",
                        ["body", field],
                        input=url[:200],
                    )
                ]
            },
        ) from exc
    return image.convert("RGB")


async def image_output(
    ctx: RunContext, image: Image.Image, output_format: str, sync_mode: bool, name: str
) -> dict[str, Any]:
    """fal's Image dict: a CDN URL on this emulator, or a data URI when ``sync_mode``."""
    data, content_type = await anyio.to_thread.run_sync(encode, image, output_format)
    width, height = image.size
    if sync_mode:
        url = f"data:{content_type};base64,{base64.b64encode(data).decode()}"
    else:
        extension = "png" if content_type == "image/png" else "jpg"
        url = (await ctx.store(data, content_type, f"{name}.{extension}"))["url"]
    return {"url": url, "width": width, "height": height, "content_type": content_type}


async def images_result(
    ctx: RunContext,
    data: dict[str, Any],
    picture: Callable[[int], Image.Image],
    *,
    seed: int,
    started: float,
    name: str,
    output_format: str,
) -> dict[str, Any]:
    """fal's image-model output: ``num_images`` pictures (``picture(index)``, drawn off the event loop)."""
    images = []
    for index in range(data["num_images"]):
        image = await anyio.to_thread.run_sync(picture, index)
        images.append(await image_output(ctx, image, output_format, data["sync_mode"], f"{name}-{seed}-{index}"))
    return {
        "images": images,
        "timings": {"inference": round(time.monotonic() - started, 4)},
        "seed": seed,
        "has_nsfw_concepts": [False] * len(images),
        "prompt": data["prompt"],
    }


def megapixels(images: list[dict[str, Any]]) -> float:
    """Billable megapixels: each image rounded up to whole megapixels, as fal bills FLUX."""
    return float(sum(max(1, -(-(img["width"] * img["height"]) // 1_000_000)) for img in images))
