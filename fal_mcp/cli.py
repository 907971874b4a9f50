"""``fal-mcp``: serve over stdio (default) or streamable HTTP, or run the local fal emulator.

Start-up imports only what the chosen command needs: the first ``tools/list`` must come quickly.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from fal_mcp import __version__

LOOPBACK = ("127.0.0.1", "localhost", "::1")


SERVE_DEFAULTS: dict[str, object] = {
    "local": False,
    "transport": "stdio",
    "host": "127.0.0.1",
    "port": 8765,
    "per_user": False,
    "allowed_host": [],
}
# Sub-commands that parse their own options (and are imported only when chosen).
OWN_OPTIONS_COMMANDS = ("emulator", "demo", "doctor")


def _add_serve_options(parser: argparse.ArgumentParser) -> None:
    """The serving options; given before ``serve`` or after it, they mean the same (hence no defaults
    here: a sub-parser's defaults would overwrite what was given before it)."""
    parser.add_argument(
        "--local",
        action="store_true",
        default=argparse.SUPPRESS,
        help="serve against the embedded offline fal emulator (no key needed)",
    )
    parser.add_argument("--transport", choices=("stdio", "http"), default=argparse.SUPPRESS, help="default: stdio")
    parser.add_argument("--host", default=argparse.SUPPRESS, help="HTTP bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=argparse.SUPPRESS, help="HTTP port (default 8765)")
    parser.add_argument(
        "--per-user",
        action="store_true",
        default=argparse.SUPPRESS,
        help="HTTP: each caller sends its own fal key (Authorization: Bearer <FAL_KEY>); keys never mix",
    )
    parser.add_argument(
        "--allowed-host",
        action="append",
        default=argparse.SUPPRESS,
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
    local_fal = None
    if settings.local:  # ours to stop; it boots when a tool first needs fal
        from fal_mcp.emulator.embedded import EmbeddedEmulator

        local_fal = EmbeddedEmulator(time_scale=settings.emulator_time_scale)
    try:
        if args.transport == "http":
            from fal_mcp.server.http import run_http

            return run_http(
                settings,
                host=args.host,
                port=args.port,
                per_user=args.per_user,
                token=settings.http_token,
                allowed_hosts=args.allowed_host,
                local_fal=local_fal,
            )
        from fal_mcp.server.app import build_server
        from fal_mcp.server.stdio import run_stdio

        return run_stdio(build_server(settings, local_fal=local_fal))
    finally:
        if local_fal is not None:
            local_fal.stop()


def _run_own_options_command(parser: argparse.ArgumentParser, args: argparse.Namespace, rest: list[str]) -> int:
    """``emulator``/``demo``/``doctor`` with their own options; serving options given before them are
    carried over where they mean something (``--local doctor``), and refused where they would be ignored."""
    command: str = args.command
    given = [name for name in SERVE_DEFAULTS if name in vars(args)]
    if command == "doctor" and "local" in given:
        given.remove("local")
        rest = ["--local", *rest]
    if command == "demo" and "local" in given:
        given.remove("local")  # the demo always runs offline, against the embedded emulator
    if given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        parser.error(
            f"{flags} {'is a serving option' if len(given) == 1 else 'are serving options'}: "
            f"`fal-mcp {command}` does not use {'it' if len(given) == 1 else 'them'}. "
            f"Put {command}'s own options after it (fal-mcp {command} --help)."
        )
    if command == "emulator":
        return _emulator(["emulator", *rest])
    return _demo(rest) if command == "demo" else _doctor(rest)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # Known options before a command, then the command; its own options stay in ``rest`` untouched.
    args, rest = parser.parse_known_args(argv)
    if args.command in OWN_OPTIONS_COMMANDS:
        return _run_own_options_command(parser, args, rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args = argparse.Namespace(**{**SERVE_DEFAULTS, **vars(args)})
    try:
        return _serve(args)
    except KeyboardInterrupt:  # before the server could take over the signal
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
