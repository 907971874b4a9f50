"""Small helpers for server tests: calling tools and collecting progress."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
from mcp import Client
from mcp.types import CallToolResult

from fal_mcp.server.errors import ERROR_META_KEY


@dataclass
class Progress:
    events: list[tuple[float, float | None, str | None]] = field(default_factory=list)

    _changed: anyio.Event | None = None

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.events.append((progress, total, message))
        if self._changed is not None:
            self._changed.set()

    async def wait_until(self, predicate: Callable[[list[tuple[float, float | None, str | None]]], bool]) -> None:
        """Progress callbacks may trail the result over real transports: wait for the expected ones."""
        with anyio.fail_after(5):
            while not predicate(self.events):
                self._changed = anyio.Event()
                await self._changed.wait()

    @property
    def messages(self) -> list[str]:
        return [m or "" for _, _, m in self.events]

    def assert_strictly_increasing(self) -> None:
        values = [p for p, _, _ in self.events]
        assert values == sorted(set(values)), values


async def call(client: Client, tool: str, args: dict[str, Any], progress: Progress | None = None) -> CallToolResult:
    return await client.call_tool(tool, args, progress_callback=progress)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Wait until ``check()`` holds (polled, bounded): for states only another request can observe."""
    with anyio.fail_after(timeout):
        while True:
            if await check():
                return
            await anyio.sleep(0.02)


def structured(result: CallToolResult) -> dict[str, Any]:
    assert result.structured_content is not None, result.content
    return result.structured_content


def text_of(result: CallToolResult) -> str:
    return "\n".join(getattr(block, "text", "") for block in result.content)


def error_of(result: CallToolResult) -> dict[str, Any]:
    """The machine-readable error (``_meta``); error results carry no structuredContent (see server/errors.py)."""
    assert result.is_error, text_of(result)
    assert result.structured_content is None, "an error's structuredContent would break outputSchema validation"
    return (result.meta or {})[ERROR_META_KEY]
