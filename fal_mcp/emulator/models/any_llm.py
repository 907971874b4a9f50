"""``fal-ai/any-llm``: a deterministic "LLM" that streams its answer word by word over ``/stream``."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any, ClassVar

from fal_mcp.emulator.models.base import EmulatedModel, ModelInfo, RunContext

MODELS = [
    "google/gemini-flash-1.5",
    "anthropic/claude-3.5-sonnet",
    "openai/gpt-4o",
    "meta-llama/llama-3.1-8b-instruct",
]
SECONDS_PER_WORD = 0.05
_VOCABULARY = [
    *("indeed", "certainly", "consider", "the", "question", "carefully", "because", "every"),
    *("answer", "depends", "on", "context", "and", "a", "clear", "example", "helps", "so"),
    *("here", "is", "a", "short", "deterministic", "reply"),
]


def answer(model: str, prompt: str, system_prompt: str | None) -> str:
    """The same (model, prompt, system prompt) always gives the same text."""
    digest = hashlib.sha256(f"{model}\x1f{system_prompt or ''}\x1f{prompt}".encode()).digest()
    words = [_VOCABULARY[b % len(_VOCABULARY)] for b in digest[:12]]
    return f'You asked: "{prompt.strip()}". ' + " ".join(words).capitalize() + "."


class AnyLlm(EmulatedModel):
    info: ClassVar[ModelInfo] = ModelInfo(
        endpoint_id="fal-ai/any-llm",
        display_name="Any LLM",
        category="llm",
        description="Use any large language model from a selected catalogue (emulated: deterministic text).",
        tags=("llm", "chat", "streaming", "emulated"),
        unit_price=0.001,
        unit="request",
        duration_estimate=0.02,
    )
    supports_stream: ClassVar[bool] = True
    input_schema: ClassVar[dict[str, Any]] = {
        "title": "ChatInput",
        "type": "object",
        "x-fal-order-properties": ["model", "prompt", "system_prompt", "reasoning"],
        "properties": {
            "model": {
                "title": "Model",
                "type": "string",
                "description": "Name of the model to use.",
                "enum": MODELS,
                "default": MODELS[0],
            },
            "prompt": {
                "title": "Prompt",
                "type": "string",
                "description": "Prompt to be used for the chat completion",
                "examples": ["What is the meaning of life?"],
            },
            "system_prompt": {
                "title": "System Prompt",
                "type": "string",
                "description": "System prompt to provide context or instructions to the model",
            },
            "reasoning": {
                "title": "Reasoning",
                "type": "boolean",
                "description": "Should reasoning be the part of the final answer.",
                "default": False,
            },
        },
        "required": ["prompt"],
    }
    output_schema: ClassVar[dict[str, Any]] = {
        "title": "ChatOutput",
        "type": "object",
        "x-fal-order-properties": ["output", "reasoning", "partial", "error"],
        "properties": {
            "output": {"title": "Output", "type": "string", "description": "Generated output"},
            "reasoning": {"title": "Reasoning", "type": "string", "description": "Generated reasoning"},
            "partial": {"title": "Partial", "type": "boolean", "default": False},
            "error": {"title": "Error", "type": "string", "description": "Error message if an error occurred"},
        },
        "required": ["output"],
    }

    async def stream(self, data: dict[str, Any], ctx: RunContext) -> AsyncIterator[dict[str, Any]]:
        text = answer(data["model"], data["prompt"], data.get("system_prompt"))
        reasoning = "Thinking it through step by step." if data["reasoning"] else None
        words = text.split(" ")
        await ctx.log(f"Generating with {data['model']}")
        for count in range(1, len(words)):
            await ctx.sleep(SECONDS_PER_WORD)
            yield {"output": " ".join(words[:count]), "reasoning": reasoning, "partial": True, "error": None}
        await ctx.sleep(SECONDS_PER_WORD)
        yield {"output": text, "reasoning": reasoning, "partial": False, "error": None}

    async def run(self, data: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
        events = [event async for event in self.stream(data, ctx)]
        return events[-1]
