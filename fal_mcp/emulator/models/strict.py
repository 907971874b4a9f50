"""``emulator/strict``: rejects bad input exactly like fal's models (422 ``{"detail": [...]}``), incl. a custom rule."""

from __future__ import annotations

from typing import Any, ClassVar

from fal_mcp.emulator.models.base import (
    EmulatedModel,
    ModelError,
    ModelInfo,
    RunContext,
    error_detail,
    validation_error,
)

MIN_SIDE = 256


class Strict(EmulatedModel):
    info: ClassVar[ModelInfo] = ModelInfo(
        endpoint_id="emulator/strict",
        display_name="Emulator: strict input",
        category="utility",
        description="Validates its input with several rules (required, range, enum, length, image size) and echoes it.",
        tags=("testing", "emulated", "runs-offline"),
        unit_price=0.0,
        unit="images",
        duration_estimate=0.01,
    )
    input_schema: ClassVar[dict[str, Any]] = {
        "title": "StrictInput",
        "type": "object",
        "x-fal-order-properties": ["prompt", "num_images", "style", "width", "height", "tags"],
        "properties": {
            "prompt": {"title": "Prompt", "type": "string", "minLength": 3, "maxLength": 200},
            "num_images": {"title": "Num Images", "type": "integer", "default": 1, "minimum": 1, "maximum": 4},
            "style": {"title": "Style", "type": "string", "enum": ["photo", "anime", "sketch"], "default": "photo"},
            "width": {
                "title": "Width",
                "type": "integer",
                "description": f"At least {MIN_SIDE} (with height), else image_too_small.",
                "default": 512,
                "minimum": 1,
                "maximum": 4096,
            },
            "height": {"title": "Height", "type": "integer", "default": 512, "minimum": 1, "maximum": 4096},
            "tags": {"title": "Tags", "type": "array", "items": {"type": "string"}, "maxItems": 5},
        },
        "required": ["prompt"],
    }
    output_schema: ClassVar[dict[str, Any]] = {
        "title": "StrictOutput",
        "type": "object",
        "properties": {"ok": {"title": "Ok", "type": "boolean"}, "input": {"title": "Input", "type": "object"}},
        "required": ["ok", "input"],
    }

    def validate(self, data: dict[str, Any]) -> None:
        """Schema rules, then the custom ``image_too_small`` rule (reported together, like one pydantic pass)."""
        details: list[dict[str, Any]] = []
        try:
            super().validate(data)
        except ModelError as exc:
            details.extend(exc.body["detail"])
        width, height = data.get("width", 512), data.get("height", 512)
        if isinstance(width, int) and isinstance(height, int) and 0 < min(width, height) < MIN_SIDE:
            details.append(
                error_detail(
                    "image_too_small",
                    f"Image dimensions are too small. Minimum dimensions are {MIN_SIDE}x{MIN_SIDE} pixels.",
                    ["body", "width" if width < MIN_SIDE else "height"],
                    ctx={"min_height": MIN_SIDE, "min_width": MIN_SIDE},
                    input={"width": width, "height": height},
                )
            )
        if details:
            raise validation_error(*details)

    async def run(self, data: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
        await ctx.log("input accepted")
        return {"ok": True, "input": data}
