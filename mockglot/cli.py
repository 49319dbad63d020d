"""The `mockglot` command: `serve` the emulator, `stream` a file to a server, `conform` a server to the contract,
manage Vosk `models`."""

from __future__ import annotations

import argparse
import ipaddress
import signal
import socket
import sys
from collections.abc import Sequence

import msgspec

from mockglot import __version__
from mockglot import settings as settings_module
from mockglot.settings import Settings


def _serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="run the emulator", description="Serve the Kallglot API locally.")
    env = settings_module.ENV_PREFIX
    p.add_argument("--host", help=f"interface to bind (default 127.0.0.1; {env}HOST)")
    p.add_argument("--port", type=int, help=f"port (default 8080, 0 picks a free one; {env}PORT)")
    p.add_argument("--seed", type=int, help=f"seed every ID and token for repeatable runs ({env}SEED)")
    p.add_argument("--keys", help=f"keys file (YAML/JSON); without it any well-formed key works ({env}KEYS)")
    p.add_argument("--strict", action="store_true", default=None, help=f"reject unknown fields ({env}STRICT)")
    p.add_argument("--log-format", choices=["text", "json"], help=f"log format ({env}LOG_FORMAT)")
    p.add_argument("--scenario", help=f"default scenario, a name or a file ({env}SCENARIO)")
    p.add_argument("--fixtures", action="append", help=f"extra fixtures folder, repeatable ({env}FIXTURES)")
    p.add_argument("--engine", choices=["scripted", "vosk"], help=f"recognition engine ({env}ENGINE)")
    p.add_argument(
        "--vosk-model", dest="vosk_models", action="append", metavar="LANG=PATH",
        help=f"a Vosk model for a language, repeatable ({env}VOSK_MODELS=ko=/m/ko,de=/m/de)",
    )  # fmt: skip
    p.add_argument("--output-pace", choices=["realtime", "instant"], help=f"audio.output pacing ({env}OUTPUT_PACE)")
    p.add_argument("--rate-limit", type=int, help=f"requests per minute per key ({env}RATE_LIMIT)")
    p.add_argument("--control-token", help=f"protect /_mockglot with this bearer token ({env}CONTROL_TOKEN)")
    p.add_argument(
        "--max-connections", type=int,
        help=f"open sockets at most (default 1000, fewer if ulimit -n is low; {env}MAX_CONNECTIONS)",
    )  # fmt: skip
    p.add_argument(
        "--header-timeout", type=float, help=f"seconds to send a request head (default 10; {env}HEADER_TIMEOUT)"
    )
    p.add_argument(
        "--retain-sessions", type=int, metavar="N",
        help=f"ended sessions kept, the oldest forgotten first (default 1000; {env}RETAIN_SESSIONS)",
    )  # fmt: skip
    p.add_argument(
        "--retain-minutes", type=float, metavar="M",
        help=f"minutes an ended session is kept (default 60; {env}RETAIN_MINUTES)",
    )  # fmt: skip
    p.add_argument(
        "--retain-mb", type=float, metavar="MB",
        help=f"memory budget of ended sessions' audio and journals (default 256; {env}RETAIN_MB)",
    )  # fmt: skip
    p.add_argument(
        "--state", metavar="memory|URL",
        help=f"where state lives: memory (default) or a Redis/Valkey URL shared by workers and replicas, "
        f"redis://host:6379/0 ({env}STATE)",
    )  # fmt: skip
    p.add_argument(
        "--workers", type=int, metavar="N",
        help=f"serve from N processes on one port, 1 to 64 (default 1; more need --state redis://...; {env}WORKERS)",
    )  # fmt: skip
    p.add_argument(
        "--webhook", dest="webhooks", action="append", metavar="URL[#SECRET]",
        help=f"deliver webhooks to URL, signed with SECRET or a generated one; repeatable ({env}WEBHOOKS=u1,u2#s)",
    )  # fmt: skip


def build_parser(serve_only: bool = False) -> argparse.ArgumentParser:
    """Every subcommand's parser; `serve_only`: just serve's, so a server's start imports no client side."""
    parser = argparse.ArgumentParser(prog="mockglot", description=__doc__)
    parser.add_argument("--version", action="version", version=f"mockglot {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    if serve_only:
        return parser
    from mockglot import conformance, stream_cli
    from mockglot.proxy import cli as proxy_cli

    stream_cli.add_parser(sub)
    proxy_cli.add_parsers(sub)
    conformance.add_parser(sub)
    sub.add_parser("models", help="list or download Vosk models", add_help=False)
    return parser


def loopback_only(host: str) -> bool:
    """Whether binding `host` keeps the server to this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to any interface


def exposure_warning(settings: Settings) -> str | None:
    """What to tell the operator who binds beyond loopback with an open control plane (mockglot warns, and
    serves: Docker images bind 0.0.0.0 and are reached through a published port)."""
    if loopback_only(settings.host) or settings.control_token:
        return None
    return (
        f"mockglot: WARNING: listening on {settings.host}, reachable from other machines, and the control plane "
        "has no token: anyone who can reach this port can reset state, change keys and the clock, upload "
        "scenarios, inject stream frames, arm faults and register webhooks under /_mockglot. Set --control-token "
        "TOKEN (MOCKGLOT_CONTROL_TOKEN) before exposing mockglot beyond localhost."
    )


def banner(settings: Settings, port: int) -> str:
    """What a user needs first: the base URL, links that answer, and two things to try; with several workers or
    a shared state, how many and where (its password hidden)."""
    host = "localhost" if loopback_only(settings.host) else settings.host
    host = f"[{host}]" if ":" in host else host
    base = f"http://{host}:{port}"
    processes = "1 process" if settings.workers == 1 else f"{settings.workers} processes on one port"
    shared = (
        [f"  workers:       {processes}, state in {settings_module.redact(settings.state)}"]
        if settings.workers > 1 or settings.state != "memory"
        else []
    )
    return "\n".join(
        [
            f"mockglot {__version__} serving the Kallglot API at {base}  (REST under /v1, streams on ws://{host}:{port})",
            *shared,
            f"  health:        {base}/_mockglot/health",
            f"  API (OpenAPI): {base}/openapi.json   control plane: {base}/_mockglot/openapi.json",
            "  try it:",
            f"  curl -s {base}/v1/sessions -H 'Authorization: Bearer sk_test_mockglot123' "
            "-H 'Content-Type: application/json' "
            '-d \'{"mode": "bidirectional_translation", "source_language": "de", "target_language": "en"}\'',
            f"  mockglot stream fixtures/audio/de_order_change.ulaw --url {base}   # a call, from a checkout",
        ]
    )


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from mockglot.app import create_app
    from mockglot.logs import uvicorn_log_config
    from mockglot.shared import connect
    from mockglot.transport import run_workers, uvicorn_config

    overrides = {
        name: value for name, value in vars(args).items() if name in {f.name for f in msgspec.structs.fields(Settings)}
    }
    try:
        settings = settings_module.from_env(**overrides)
        if settings.state != "memory":
            connect.check(settings.state)
        app = create_app(settings)  # with workers, each builds its own: this one only proves the settings work
    except ValueError as exc:
        print(f"mockglot: {exc}", file=sys.stderr)
        return 2
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP: asyncio sets TCP_NODELAY
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.host, settings.port))
    except OSError as exc:
        print(f"mockglot: cannot listen on {settings.host}:{settings.port}: {exc.strerror}", file=sys.stderr)
        return 2
    port = settings.port = sock.getsockname()[1]  # so URLs built from settings name the real port
    sock.listen(2048)  # from here on, a client that read the banner waits in the backlog instead of being refused
    if (warning := exposure_warning(settings)) is not None:
        print(warning, file=sys.stderr, flush=True)
    print(banner(settings, port), flush=True)
    if settings.workers > 1:
        del app
        return run_workers(settings, sock, log_config=uvicorn_log_config(settings.log_format))
    config = uvicorn_config(app, settings, log_config=uvicorn_log_config(settings.log_format))
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again for the handler it found: make that
    # one a no-op, so a clean stop exits 0 (what `docker stop` and process supervisors expect).
    signal.signal(signal.SIGTERM, lambda *_: None)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def _subcommand(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sub: argparse.ArgumentParser = action.choices[name]
    return sub


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["models"]:
        from mockglot import models

        return models.run(argv[1:])
    parser = build_parser(serve_only=argv[:1] == ["serve"])
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # argparse would report them with the top-level usage; the subcommand's own is the useful one
        _subcommand(parser, args.command).error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command == "serve":
        return serve(args)
    from mockglot import conformance, stream_cli
    from mockglot.proxy import cli as proxy_cli

    if args.command == "stream":
        return stream_cli.run(args)
    if args.command == "proxy":
        return proxy_cli.run_proxy(args)
    if args.command == "scenario":
        return proxy_cli.run_scenario(args)
    if args.command == "conform":
        return conformance.main(args)
    return 2
