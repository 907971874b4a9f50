"""Progress notifications while a job runs: readable messages, strictly increasing, with a heartbeat.

Clients reset their tool timeouts on every progress notification, so a heartbeat keeps long waits
alive; and a person watching sees the queue position, the newest log line or partial output.

When the job reveals how far along it is ("step 7/28" in its logs, the n-th of N realtime outputs),
notifications carry a ``total`` and ``progress`` counts those steps. ``progress`` stays strictly
increasing either way: before a total is known it counts notifications (1, 2, 3, …); once one is
known, the steps are counted on top of where it stood (so a bar runs from there to ``total``), and a
heartbeat between two steps moves a tenth of the way to the next step, never reaching it.
"""

from __future__ import annotations

import math
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
        self._value = 0.0  # the last progress sent
        self._base = 0.0  # where progress stood when the current total became known
        self._steps: tuple[float, float] | None = None  # (done, total) as the job last said
        self._started = time.monotonic()
        self._last_sent = self._started
        self.last_message = ""
        self.messages: list[str] = []  # what was sent, for summaries and tests

    @property
    def count(self) -> int:
        return self._count

    @property
    def total(self) -> float | None:
        return None if self._steps is None else self._base + self._steps[1]

    @property
    def steps(self) -> tuple[float, float] | None:
        """(done, total) as the job last said, when it said."""
        return self._steps

    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def _advance(self, steps: tuple[float, float] | None) -> float:
        """The next progress value: strictly above the last, following the job's steps when it gives them."""
        last = self._value
        if steps is not None:
            if self._steps is None or steps[1] != self._steps[1] or steps[0] < self._steps[0]:
                self._base = math.floor(last) + 1.0 if self._count else 0.0  # a (new) count of steps starts here
            self._steps = steps
            target = self._base + steps[0]
            if target > last:
                return target
        if self._steps is None:
            return math.floor(last) + 1.0
        ceiling = min(self._base + self._steps[0] + 1.0, self._base + self._steps[1])
        step = (ceiling - last) / 10
        return last + step if last + step > last else math.nextafter(last, math.inf)

    async def report(self, message: str, *, steps: tuple[float, float] | None = None) -> None:
        """Send ``message`` with the next progress value; ``steps`` is (done, total) when the job said so."""
        message = message.strip().replace("\n", " ")
        if len(message) > 300:
            message = message[:297] + "..."
        async with self._lock:
            self._count += 1
            self._value = self._advance(steps)
            self.last_message = message
            self.messages.append(message)
            self._last_sent = time.monotonic()
            if self._send is not None:
                try:
                    await self._send(self._value, self.total, message)
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
