"""``fal-mcp``: serve over stdio (default) or streamable HTTP, or run the local fal emulator.

Start-up imports only what the chosen command needs: the first ``tools/list`` must come quickly.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from fal_mcp import __version__

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _add_serve_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--local",
        action="store_true",
        help="serve against the embedded offline fal emulator (no key needed)",
    )
    parser.add_argument("--transport", choices=("stdio", "http"), default="stdio", help="default: stdio")
    parser.add_argument("--host", default="127.0.0.1", help="HTTP bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="HTTP port (default 8765)")
    parser.add_argument(
        "--per-user",
        action="store_true",
        help="HTTP: each caller sends its own fal key (Authorization: Bearer <FAL_KEY>); keys never mix",
    )
    parser.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="HOST",
        help="HTTP: Host header to accept besides loopback (DNS-rebinding protection); repeatable",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fal-mcp",
        description="MCP server for fal.ai. With no command it serves MCP over stdio.",
    )
    parser.add_argument("--version", action="version", version=f"fal-mcp {__version__}")
    _add_serve_options(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser("serve", help="serve MCP (stdio or streamable HTTP)")
    _add_serve_options(serve)
    # The emulator's own options live with it; importing it here would slow every start-up.
    commands.add_parser("emulator", help="run the local fal emulator (fal-mcp emulator --help)", add_help=False)
    commands.add_parser("demo", help="offline tour: every tool against a local emulator, in seconds", add_help=False)
    commands.add_parser(
        "doctor", help="check the key, fal's hosts, the ledger, roots and client configs", add_help=False
    )
    return parser


def _emulator(argv: list[str]) -> int:
    from fal_mcp.emulator.server import add_cli, run_cli

    parser = argparse.ArgumentParser(prog="fal-mcp")
    add_cli(parser.add_subparsers(dest="command"))
    return run_cli(parser.parse_args(argv)) or 0


def _demo(argv: list[str]) -> int:
    from fal_mcp import demo

    parser = argparse.ArgumentParser(
        prog="fal-mcp demo",
        description="Run every tool offline against the embedded fal emulator through a real stdio server.",
    )
    demo.add_cli(parser)
    return demo.main(parser.parse_args(argv))


def _doctor(argv: list[str]) -> int:
    from fal_mcp import doctor

    parser = argparse.ArgumentParser(
        prog="fal-mcp doctor",
        description="Check the fal key, fal's hosts, the job ledger, file roots and MCP client configs.",
    )
    doctor.add_cli(parser)
    return doctor.main(parser.parse_args(argv))


def _serve(args: argparse.Namespace) -> int:
    from fal_mcp.config import ConfigError, Settings
    from fal_mcp.log import configure_logging

    configure_logging()
    try:
        settings = Settings.from_env(local=True) if args.local else Settings.from_env()
    except ConfigError as exc:
        print(f"fal-mcp: {exc}", file=sys.stderr)
        return 2
    if args.transport == "http":
        from fal_mcp.server.http import run_http

        return run_http(
            settings,
            host=args.host,
            port=args.port,
            per_user=args.per_user,
            token=os.environ.get("FAL_MCP_HTTP_TOKEN") or None,
            allowed_hosts=args.allowed_host,
        )
    from fal_mcp.server.app import build_server

    build_server(settings).run("stdio")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["emulator"]:
        return _emulator(argv)
    # Each of these parses its own options and is imported only when chosen.
    if argv[:1] == ["demo"]:
        return _demo(argv[1:])
    if argv[:1] == ["doctor"]:
        return _doctor(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return _serve(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
