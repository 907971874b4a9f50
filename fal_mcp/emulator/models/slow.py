"""``emulator/slow``: takes as long as asked, logs each step, fails on request — for progress and timeout tests."""

from __future__ import annotations

from typing import Any, ClassVar

from fal_mcp.emulator.models.base import (
    REQUEST_ERROR_STATUS,
    EmulatedModel,
    ModelInfo,
    RunContext,
    request_error,
)


class Slow(EmulatedModel):
    info: ClassVar[ModelInfo] = ModelInfo(
        endpoint_id="emulator/slow",
        display_name="Emulator: slow job",
        category="utility",
        description="Runs for `seconds` in `steps`, logging each; `fail` makes it end in an error.",
        tags=("testing", "emulated", "runs-offline"),
        unit_price=0.0005,
        unit="compute seconds",
        duration_estimate=0.1,
    )
    input_schema: ClassVar[dict[str, Any]] = {
        "title": "SlowInput",
        "type": "object",
        "x-fal-order-properties": ["seconds", "steps", "fail", "fail_with"],
        "properties": {
            "seconds": {
                "title": "Seconds",
                "type": "number",
                "description": "How long the job runs (scaled by the emulator's time scale).",
                "default": 5,
                "minimum": 0,
                "maximum": 3600,
            },
            "steps": {
                "title": "Steps",
                "type": "integer",
                "description": "How many progress steps (one log line each).",
                "default": 5,
                "minimum": 1,
                "maximum": 1000,
            },
            "fail": {
                "title": "Fail",
                "type": "boolean",
                "description": "End with an error instead of a result.",
                "default": False,
            },
            "fail_with": {
                "title": "Fail With",
                "type": "string",
                "description": "With `fail`: the fal request error type to end with (default internal_error).",
                "enum": list(REQUEST_ERROR_STATUS),
            },
        },
    }
    output_schema: ClassVar[dict[str, Any]] = {
        "title": "SlowOutput",
        "type": "object",
        "x-fal-order-properties": ["steps", "seconds", "message"],
        "properties": {
            "steps": {"title": "Steps", "type": "integer"},
            "seconds": {"title": "Seconds", "type": "number"},
            "message": {"title": "Message", "type": "string"},
        },
        "required": ["steps", "seconds", "message"],
    }

    async def run(self, data: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
        steps, seconds = data["steps"], data["seconds"]
        for step in range(1, steps + 1):
            await ctx.sleep(seconds / steps)
            await ctx.log(f"step {step}/{steps}")
        if data["fail"]:
            error_type = data.get("fail_with", "internal_error")
            raise request_error(error_type, f"Emulated failure ({error_type}) after {steps} steps")
        return {"steps": steps, "seconds": seconds, "message": f"Slept {seconds} seconds in {steps} steps"}

    def billable_units(self, data: dict[str, Any], output: dict[str, Any]) -> float:
        return float(data["seconds"])
