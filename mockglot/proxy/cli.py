"""`mockglot proxy` and `mockglot scenario from-recording`."""

from __future__ import annotations

import argparse
import os
import re
import socket
import sys
from pathlib import Path
from urllib.parse import urlsplit

EXIT_OK, EXIT_USAGE = 0, 2


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "proxy",
        help="forward the API to an upstream server, check it on the wire, record sessions",
        description="Forward the public Kallglot API (REST and the stream) to UPSTREAM, report every difference "
        "from the contract (GET /_mockglot/proxy/report), and optionally record each session for replay.",
    )
    p.add_argument("--upstream", required=True, help="the upstream, e.g. https://api.kallglot.com or another mockglot")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8081, help="port (default 8081, 0 picks a free one)")
    p.add_argument("--record", metavar="DIR", help="write each session as a recording under DIR")
    p.add_argument("--strict", action="store_true", help="turn each difference into an error for the client")
    p.add_argument("--report", metavar="FILE", help="also write the drift report to FILE (JSON)")

    s = sub.add_parser("scenario", help="work with scenarios", description="Work with scenarios.")
    scenario_sub = s.add_subparsers(dest="scenario_command", required=True)
    c = scenario_sub.add_parser(
        "from-recording",
        help="turn a recording into an editable scenario",
        description="Write a scenario YAML (and its audio files) from a recording folder made by `mockglot proxy "
        "--record`.",
    )
    c.add_argument("recording", help="the recording's folder (it holds recording.json)")
    c.add_argument("-o", "--out", default=".", help="folder for the scenario and its audio (default .)")
    c.add_argument("--name", help="the scenario's name (default: the recording's folder name)")


def run_proxy(args: argparse.Namespace) -> int:
    import uvicorn

    from mockglot.logs import uvicorn_log_config
    from mockglot.proxy.app import ProxySettings, create_proxy_app

    if (problem := _problem(args)) is not None:
        print(f"mockglot proxy: {problem}", file=sys.stderr)
        return EXIT_USAGE
    settings = ProxySettings(
        upstream=args.upstream,
        record=Path(args.record) if args.record else None,
        strict=args.strict,
        report_file=Path(args.report) if args.report else None,
    )
    sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as exc:
        print(f"mockglot proxy: cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    sock.listen(2048)
    port = sock.getsockname()[1]
    print(
        f"mockglot proxy on http://{args.host}:{port} -> {settings.base}"
        + (f", recording into {settings.record}" if settings.record else "")
        + f"\n  drift report: http://{args.host}:{port}/_mockglot/proxy/report",
        flush=True,
    )
    config = uvicorn.Config(
        create_proxy_app(settings), log_config=uvicorn_log_config("text"), ws_ping_interval=None,
        ws_per_message_deflate=False,
    )  # fmt: skip
    uvicorn.Server(config).run(sockets=[sock])
    return EXIT_OK


def _problem(args: argparse.Namespace) -> str | None:
    """What would otherwise surface later, one request or one write at a time (a 503 for every call, a recording
    lost to the log), or as a traceback: said once, before the proxy listens."""
    split = urlsplit(args.upstream)
    if split.scheme not in ("http", "https") or not split.hostname:
        return f"--upstream must be an http:// or https:// URL with a host, not {args.upstream!r}"
    if not 0 <= args.port <= 65535:
        return f"--port {args.port}: expected a port number from 0 to 65535"
    for flag, folder in (("--record", args.record), ("--report", args.report and Path(args.report).parent)):
        if folder is None:
            continue
        try:
            Path(folder).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return f"{flag}: cannot create {folder}: {exc.strerror}"
        if not os.access(folder, os.W_OK | os.X_OK):
            return f"{flag}: cannot write into {folder}"
    return None


def run_scenario(args: argparse.Namespace) -> int:
    from mockglot.proxy import recording, to_scenario
    from mockglot.scenarios import NAME_PATTERN

    try:
        loaded = recording.load(Path(args.recording))
    except recording.RecordingError as exc:
        print(f"mockglot scenario: {exc}", file=sys.stderr)
        return EXIT_USAGE
    name = args.name or loaded.name
    if not re.match(NAME_PATTERN, name):
        print(
            f"mockglot scenario: {name!r} cannot name a scenario: 1 to 64 letters, digits, `_`, `.` or `-`, starting "
            "with a letter or digit" + ("" if args.name else " (the recording's folder name; give --name)"),
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        path = to_scenario.write(loaded, Path(args.out), name)
    except OSError as exc:
        print(f"mockglot scenario: cannot write the scenario into {args.out}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    print(path)
    return EXIT_OK
