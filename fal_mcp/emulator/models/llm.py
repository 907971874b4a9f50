"""``openrouter/router``: a deterministic "LLM" with fal's real schema that streams its answer over ``/stream``."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any, ClassVar

from fal_mcp.emulator.models.base import DocumentModel, RunContext

SECONDS_PER_WORD = 0.05
PRICE_PER_TOKEN = 0.000002  # as data/catalog.json lists it
VOCABULARY = [
    *("indeed", "certainly", "consider", "the", "question", "carefully", "because", "every"),
    *("answer", "depends", "on", "context", "and", "a", "clear", "example", "helps", "so"),
    *("here", "is", "a", "short", "deterministic", "reply"),
]


def answer(model: str, prompt: str, system_prompt: str | None) -> str:
    """The same (model, prompt, system prompt) always gives the same text."""
    digest = hashlib.sha256(f"{model}\x1f{system_prompt or ''}\x1f{prompt}".encode()).digest()
    words = [VOCABULARY[b % len(VOCABULARY)] for b in digest[:12]]
    return f'You asked: "{prompt.strip()}". ' + " ".join(words).capitalize() + "."


def tokens(text: str | None) -> int:
    """A rough token count (one per word), enough for usage and billing."""
    return len((text or "").split())


def reply(data: dict[str, Any]) -> dict[str, Any]:
    """The final output for an input (with its defaults): text, reasoning and token usage."""
    text = answer(data["model"], data["prompt"], data.get("system_prompt"))
    if data.get("max_tokens"):
        text = " ".join(text.split(" ")[: data["max_tokens"]])
    reasoning = "Thinking it through step by step." if data.get("reasoning") else None
    prompt_tokens = tokens(data["prompt"]) + tokens(data.get("system_prompt"))
    completion_tokens = tokens(text) + tokens(reasoning)
    total = prompt_tokens + completion_tokens
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": total,
        "cost": round(total * PRICE_PER_TOKEN, 8),
    }
    return {"output": text, "reasoning": reasoning, "partial": False, "error": None, "usage": usage}


class OpenRouterRouter(DocumentModel):
    endpoint_id: ClassVar[str] = "openrouter/router"
    supports_stream: ClassVar[bool] = True

    async def stream(self, data: dict[str, Any], ctx: RunContext) -> AsyncIterator[dict[str, Any]]:
        final = reply(data)
        words = final["output"].split(" ")
        await ctx.log(f"Generating with {data['model']}")
        for count in range(1, len(words)):
            await ctx.sleep(SECONDS_PER_WORD)
            yield {"output": " ".join(words[:count]), "reasoning": final["reasoning"], "partial": True, "error": None}
        await ctx.sleep(SECONDS_PER_WORD)
        yield final

    async def run(self, data: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
        events = [event async for event in self.stream(data, ctx)]
        return events[-1]

    def billable_units(self, data: dict[str, Any], output: dict[str, Any]) -> float:
        return float(output["usage"]["total_tokens"])
