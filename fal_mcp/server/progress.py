"""Progress notifications while a job runs: readable messages, strictly increasing, with a heartbeat.

Clients reset their tool timeouts on every progress notification, so a heartbeat keeps long waits
alive; and a person watching sees the queue position, the newest log line or partial output.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio

Sender = Callable[[float, float | None, str | None], Awaitable[None]]


class ProgressReporter:
    """Sends ``notifications/progress`` through ``send`` (``ctx.report_progress``); never fails the job."""

    def __init__(self, send: Sender | None, *, heartbeat_seconds: float = 5.0) -> None:
        self._send = send
        self._heartbeat_seconds = heartbeat_seconds
        self._lock = anyio.Lock()
        self._count = 0
        self._started = time.monotonic()
        self._last_sent = self._started
        self.last_message = ""
        self.messages: list[str] = []  # what was sent, for summaries and tests

    @property
    def count(self) -> int:
        return self._count

    def elapsed(self) -> float:
        return time.monotonic() - self._started

    async def report(self, message: str) -> None:
        """Send ``message`` with the next progress value (1, 2, 3, …: strictly increasing)."""
        message = message.strip().replace("\n", " ")
        if len(message) > 300:
            message = message[:297] + "..."
        async with self._lock:
            self._count += 1
            self.last_message = message
            self.messages.append(message)
            self._last_sent = time.monotonic()
            if self._send is not None:
                try:
                    await self._send(self._count, None, message)
                except anyio.get_cancelled_exc_class():
                    raise
                except Exception:  # a client that went away must not fail the job
                    self._send = None

    async def _heartbeat_loop(self, describe: Callable[[], str]) -> None:
        while True:
            due = self._last_sent + self._heartbeat_seconds
            now = time.monotonic()
            if now < due:
                await anyio.sleep(due - now)
                continue
            await self.report(describe())

    @asynccontextmanager
    async def heartbeat(self, describe: Callable[[], str] | None = None) -> AsyncIterator[None]:
        """While the block runs, send ``describe()`` whenever nothing was sent for ``heartbeat_seconds``."""

        def default() -> str:
            return f"still working ({self.elapsed():.0f}s){': ' + self.last_message if self.last_message else ''}"

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._heartbeat_loop, describe or default)
                try:
                    yield
                finally:
                    tg.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # The heartbeat never raises (report() swallows send errors), so the group only wraps the
            # block's own exception: re-raise it as itself, so callers' ``except NotFoundError`` and the
            # error mapping see the real failure, not an exception group.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from group.exceptions[0].__cause__
            raise
