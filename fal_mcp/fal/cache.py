"""A small TTL cache for catalog lookups: a memory LRU in front of JSON files on disk, with single-flight.

Why both layers: the memory LRU makes repeat lookups free inside one process; the disk layer makes them
free across restarts (an MCP host restarts its servers often, and fal's catalog changes slowly). Values
are JSON, stored as text, so every hit hands out a fresh copy that callers may mutate freely.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import anyio

from fal_mcp.log import get_logger

log = get_logger(__name__)

# Seconds each kind of entry stays fresh. Schemas change rarely; search pages and prices more often.
DEFAULT_TTLS: Final[Mapping[str, float]] = {
    "schema": 24 * 3600.0,
    "model": 10 * 60.0,
    "search": 10 * 60.0,
    "price": 3600.0,
}
DEFAULT_TTL: Final = 10 * 60.0
# An entry stamped further in the future than this is from a broken clock: ignore it.
MAX_CLOCK_SKEW: Final = 300.0
FORMAT_VERSION: Final = 1


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()


@dataclass
class _Flight:
    """One lookup in progress; identical lookups wait for it instead of asking fal again."""

    done: anyio.Event = field(default_factory=anyio.Event)
    text: str | None = None  # the value as JSON, so each waiter decodes its own copy
    error: Exception | None = None


class TTLCache:
    """``kind`` + JSON-able ``key`` → JSON value, fresh for ``ttls[kind]`` seconds.

    ``cache_dir=None`` keeps everything in memory. Disk problems (unwritable directory, corrupt or
    half-written files) never fail a lookup: the entry is treated as missing and rewritten.
    """

    def __init__(
        self,
        cache_dir: Path | None = None,
        *,
        ttls: Mapping[str, float] | None = None,
        clock: Callable[[], float] = time.time,
        max_entries: int = 512,
    ) -> None:
        self.cache_dir = cache_dir
        self.ttls = {**DEFAULT_TTLS, **(ttls or {})}
        self.clock = clock
        self.max_entries = max_entries
        self._memory: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._flights: dict[str, _Flight] = {}

    # -- public API -------------------------------------------------------------------------------

    def ttl(self, kind: str) -> float:
        return self.ttls.get(kind, DEFAULT_TTL)

    async def get(self, kind: str, key: Any) -> Any:
        """The cached value, or :data:`MISSING` when absent, expired or unreadable."""
        digest = self._digest(kind, key)
        value = self._memory_get(kind, digest)
        if value is MISSING and self.cache_dir is not None:
            value = await self._disk_get(kind, digest)
        return value

    async def set(self, kind: str, key: Any, value: Any) -> None:
        await self._store(kind, self._digest(kind, key), _dumps(value))

    async def get_or_fetch(self, kind: str, key: Any, fetch: Callable[[], Awaitable[Any]]) -> Any:
        """The cached value, else ``await fetch()`` (stored on success).

        Concurrent calls for the same entry share one ``fetch`` (single-flight): the first caller fetches,
        the others wait and get its value or its exception. Exceptions are never cached.
        """
        digest = self._digest(kind, key)

        async def lookup() -> Any:
            value = await self._disk_get(kind, digest) if self.cache_dir is not None else MISSING
            if value is MISSING:
                value = await fetch()
                await self._store(kind, digest, _dumps(value))
            return value

        value = self._memory_get(kind, digest)
        if value is not MISSING:
            return value
        return await self._single_flight(digest, lookup, lambda: self._memory_get(kind, digest))

    async def coalesce(self, key: Any, fetch: Callable[[], Awaitable[Any]]) -> Any:
        """Single-flight without storing: concurrent identical ``fetch``es become one (JSON results only)."""
        return await self._single_flight(self._digest("(in-flight)", key), fetch, lambda: MISSING)

    async def _single_flight(self, digest: str, run: Callable[[], Awaitable[Any]], recheck: Callable[[], Any]) -> Any:
        while True:
            flight = self._flights.get(digest)
            if flight is None:
                break
            await flight.done.wait()
            if flight.error is not None:
                raise flight.error
            if flight.text is not None:
                return json.loads(flight.text)  # each waiter decodes its own copy
            # The leader was cancelled before it finished: try again (possibly as the new leader).
            value = recheck()
            if value is not MISSING:
                return value

        flight = _Flight()
        self._flights[digest] = flight
        try:
            value = await run()
            flight.text = _dumps(value)
            return value
        except Exception as exc:
            flight.error = exc
            raise
        finally:
            del self._flights[digest]
            flight.done.set()

    def clear_memory(self) -> None:
        self._memory.clear()

    async def _store(self, kind: str, digest: str, text: str) -> None:
        if self.ttl(kind) <= 0:
            return
        stored_at = self.clock()
        self._memory_put(digest, stored_at, text)
        if self.cache_dir is not None:
            await anyio.to_thread.run_sync(self._write_file, kind, digest, stored_at, text)

    # -- memory -----------------------------------------------------------------------------------

    def _fresh(self, kind: str, stored_at: float) -> bool:
        age = self.clock() - stored_at
        return -MAX_CLOCK_SKEW <= age < self.ttl(kind)

    def _memory_get(self, kind: str, digest: str) -> Any:
        entry = self._memory.get(digest)
        if entry is None:
            return MISSING
        stored_at, text = entry
        if not self._fresh(kind, stored_at):
            del self._memory[digest]
            return MISSING
        self._memory.move_to_end(digest)
        return json.loads(text)

    def _memory_put(self, digest: str, stored_at: float, text: str) -> None:
        self._memory[digest] = (stored_at, text)
        self._memory.move_to_end(digest)
        while len(self._memory) > self.max_entries:
            self._memory.popitem(last=False)

    # -- disk -------------------------------------------------------------------------------------

    def _path(self, kind: str, digest: str) -> Path:
        assert self.cache_dir is not None
        return self.cache_dir / kind / f"{digest}.json"

    async def _disk_get(self, kind: str, digest: str) -> Any:
        entry = await anyio.to_thread.run_sync(self._read_file, kind, digest)
        if entry is None:
            return MISSING
        stored_at, text = entry
        if not self._fresh(kind, stored_at):
            return MISSING
        self._memory_put(digest, stored_at, text)
        return json.loads(text)

    def _read_file(self, kind: str, digest: str) -> tuple[float, str] | None:
        path = self._path(kind, digest)
        try:
            raw = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("cache.read_failed", path=str(path), error=str(exc))
            return None
        try:
            doc = json.loads(raw)
            if doc.get("format") != FORMAT_VERSION or doc.get("kind") != kind:
                raise ValueError("not one of our entries")
            stored_at = float(doc["stored_at"])
            text = _dumps(doc["value"])
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            log.info("cache.corrupt_entry_ignored", path=str(path), error=str(exc))
            return None
        return stored_at, text

    def _write_file(self, kind: str, digest: str, stored_at: float, text: str) -> None:
        """Atomically: write a temporary file next to the target, then ``os.replace`` it."""
        path = self._path(kind, digest)
        doc = f'{{"format":{FORMAT_VERSION},"kind":{json.dumps(kind)},"stored_at":{stored_at!r},"value":{text}}}'
        tmp_name: str | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{digest[:16]}.", suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(doc)
            os.replace(tmp_name, path)
            tmp_name = None
        except OSError as exc:
            log.warning("cache.write_failed", path=str(path), error=str(exc))
        finally:
            if tmp_name is not None:
                Path(tmp_name).unlink(missing_ok=True)

    @staticmethod
    def _digest(kind: str, key: Any) -> str:
        material = json.dumps([kind, key], sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
        return hashlib.sha256(material.encode("utf-8")).hexdigest()


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
