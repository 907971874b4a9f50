"""Serve MCP over stdio: exactly what a host expects on the wire, and good manners at a terminal.

The SDK's stdio transport reads stdin in a worker thread that cancellation cannot interrupt, so Ctrl-C
(or a SIGTERM) would wait for the next input line forever. Here a daemon thread reads stdin into a
stream instead; the first SIGINT/SIGTERM ends that stream exactly as a host closing stdin does, so the
server shuts down the usual way (session closed, lifespan exited, exit code 0). A second signal cancels
whatever is still running.

Run by hand in a terminal, the server says in one stderr line what it is and what it is waiting for.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import anyio
import anyio.abc
import anyio.from_thread
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from fal_mcp import __version__
from fal_mcp.log import get_logger

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

log = get_logger(__name__)

WAITING_LINE = (
    f"fal-mcp {__version__}: an MCP server on stdin/stdout, waiting for an MCP client to connect "
    "(e.g. `claude mcp add fal -- fal-mcp`; try `fal-mcp demo` for a tour). Ctrl-C quits."
)


class StdinLines:
    """The lines of fd 0, read by a daemon thread (which may stay blocked in ``read`` when the process exits).

    Like the SDK's transport, it claims the descriptor: fd 0 then points at the null device, so nothing
    else in the process (or a child) can read a byte meant for the MCP session.
    """

    def __init__(self) -> None:
        self._send: MemoryObjectSendStream[str]
        self._receive: MemoryObjectReceiveStream[str]
        self._send, self._receive = anyio.create_memory_object_stream[str](0)
        self.ended = False
        # Read with os.read, never through a buffered file: closing one at exit would wait for the lock
        # the blocked reader holds.
        self.fd = os.dup(0)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)

    def start(self) -> None:
        token = anyio.lowlevel.current_token()
        threading.Thread(target=self._pump, args=(token,), name="fal-mcp stdin", daemon=True).start()

    def _pump(self, token: anyio.lowlevel.EventLoopToken) -> None:
        def deliver(line: bytes) -> None:
            anyio.from_thread.run(self._send.send, line.decode("utf-8", errors="replace"), token=token)

        buffer = bytearray()
        try:
            while chunk := os.read(self.fd, 1 << 16):
                searched = len(buffer)  # only the new bytes can hold the next newline
                buffer += chunk
                while (newline := buffer.find(b"\n", searched)) >= 0:
                    deliver(bytes(buffer[: newline + 1]))
                    del buffer[: newline + 1]
                    searched = 0
            if buffer:
                deliver(bytes(buffer))
            anyio.from_thread.run_sync(self.end, token=token)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, RuntimeError):
            return  # ended by a signal, or the event loop is gone: nobody is listening any more

    def end(self) -> None:
        """What a host closing stdin does: the session sees the end of its input."""
        self.ended = True
        self._send.close()

    async def __aiter__(self) -> AsyncIterator[str]:
        async with self._receive:
            async for line in self._receive:
                yield line


async def _stop_on_signals(
    lines: StdinLines, scope: anyio.CancelScope, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for signum in signals:
            if not lines.ended:
                log.info("stdio.stopping", signal=signal.Signals(signum).name)
                lines.end()
            else:
                log.info("stdio.cancelling", signal=signal.Signals(signum).name)
                scope.cancel()


async def _serve(server: MCPServer) -> None:
    from mcp.server.stdio import stdio_server

    lines = StdinLines()
    lines.start()
    async with anyio.create_task_group() as tg:
        await tg.start(_stop_on_signals, lines, tg.cancel_scope)
        if os.isatty(lines.fd):
            # Said once Ctrl-C is ours to handle; never when a host is on the other end of a pipe.
            sys.stderr.write(WAITING_LINE + "\n")
            sys.stderr.flush()
        async with stdio_server(stdin=lines) as (read_stream, write_stream):  # type: ignore[arg-type]
            # What MCPServer.run_stdio_async does, with our stdin.
            lowlevel = server._lowlevel_server
            await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())
        tg.cancel_scope.cancel()
    log.info("stdio.stopped")


def run_stdio(server: MCPServer) -> int:
    """Serve ``server`` on stdin/stdout until the client leaves or a signal asks it to stop; the exit code."""
    if sys.stdin is None or sys.stdout is None:  # Python found fd 0 or 1 closed at start-up
        if sys.stderr is not None:
            sys.stderr.write("fal-mcp: stdin or stdout is closed; an MCP client launches fal-mcp with pipes on both.\n")
        return 2
    anyio.run(_serve, server)
    return 0
