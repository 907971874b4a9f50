"""The emulator ``fal-mcp --local`` serves against: the CLI creates it, hands it to the server, and stops it
after the server has stopped; the server only asks it where fal is.

It boots when a tool first asks (:meth:`EmbeddedEmulator.base_url`), in a thread: importing the emulator
and loading its model documents takes a few hundred milliseconds that start-up — the first
``tools/list``, a host's health check — should not pay for.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import anyio

from fal_mcp.log import get_logger

if TYPE_CHECKING:
    from fal_mcp.emulator.server import EmulatorServer


log = get_logger(__name__)


class EmbeddedEmulator:
    """An emulator that boots on first use: ``await base_url()``, then ``stop()``."""

    def __init__(self, *, time_scale: float = 1.0) -> None:
        self.time_scale = time_scale
        self._lock = threading.Lock()
        self._booted = False
        self._server: EmulatorServer | None = None
        self._error: BaseException | None = None

    async def base_url(self) -> str:
        """Where the emulator listens, booting it first if needed; raises what stopped it from booting."""
        if not self._booted:
            await anyio.to_thread.run_sync(self._boot)
        if self._server is None:
            raise RuntimeError(f"the local fal emulator did not start: {self._error!r}") from self._error
        return self._server.base_url

    def _boot(self) -> None:
        with self._lock:
            if self._booted:
                return
            try:
                from fal_mcp.emulator.config import EmulatorConfig
                from fal_mcp.emulator.server import EmulatorServer

                self._server = EmulatorServer(EmulatorConfig(time_scale=self.time_scale)).start()
            except Exception as exc:  # said by base_url() to each call that needs it
                self._error = exc
            finally:
                self._booted = True

    def stop(self) -> None:
        with self._lock:  # a boot under way finishes first, then what it started stops
            server, self._server = self._server, None
        if server is not None:
            server.stop()
            log.info("local.emulator.stopped", base_url=server.base_url)
