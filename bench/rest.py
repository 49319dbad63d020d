"""REST throughput: mockglot's sessions API against a bare Starlette JSON endpoint, same uvicorn, same client.

    python bench/rest.py                       # 3 repeats of 3000 round trips each, 8 connections
    python bench/rest.py --round-trips 5000 --concurrency 16 --repeats 5
    python bench/rest.py --profile /tmp/mockglot.prof   # cProfile the mockglot server while it is loaded

Each server runs in its own process (`python bench/rest.py serve mockglot|bare`) under the same uvicorn Config,
the one `mockglot serve` runs with (`mockglot.transport.uvicorn_config`: its HTTP protocol, which gathers a
turn's writes, and its limits), with access log off and log level warning; uvloop/httptools when installed.
`--transport uvicorn` serves both under uvicorn's own defaults instead (the baseline of the figures before
2026-12-04 13:00 UTC). This process is the
client: `--concurrency` asyncio workers, each with one keep-alive HTTP/1.1 connection written by hand so the
client costs far less than the servers and the ratio measures the servers, not httpx.

A round trip is three requests. mockglot: create a session, retrieve it, end it. Bare: the same three request
shapes (POST with the same JSON body, GET, POST with an empty body) to its one endpoint. The runs alternate
bare/mockglot so drift on the machine hits both alike; the median of the repeats is reported. Loopback only;
every loop is bounded by --round-trips.

With two or more CPUs the client is pinned to one and both servers to another (`--no-pin` to let the scheduler
choose): otherwise the scheduler sometimes puts client and server on one core, and a server's rate swings by
half from one repeat to the next.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import platform
import secrets
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import uvicorn

BODY = json.dumps({"mode": "bidirectional_translation", "source_language": "de", "target_language": "en"}).encode()
GOAL = 0.5
TRANSPORTS = ("mockglot", "uvicorn")  # mockglot.transport.uvicorn_config, or uvicorn's defaults


# --- the servers ------------------------------------------------------------------------------------------


def bare_app():
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def ping(request):
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/ping", ping, methods=["GET", "POST"])])


def mockglot_app():
    from mockglot.app import create_app
    from mockglot.settings import Settings

    return create_app(Settings())


def serve(which: str, profile: str | None, transport: str) -> None:
    from mockglot.settings import Settings
    from mockglot.transport import uvicorn_config

    app = mockglot_app() if which == "mockglot" else bare_app()
    # IPPROTO_TCP, so that asyncio sets TCP_NODELAY on each accepted socket as uvloop does anyway (a socket
    # made without it has proto 0, and asyncio leaves Nagle on); set on the listener too, which Linux copies
    # to accepted sockets. Both servers get it alike.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)  # before the port is announced: the client may connect before uvicorn is up
    options: dict[str, object] = {"log_level": "warning", "access_log": False}
    if transport == "mockglot":
        config = uvicorn_config(app, Settings(), **options)
    else:
        config = uvicorn.Config(app, lifespan="on", ws_ping_interval=None, **options)  # type: ignore[arg-type]
    server = uvicorn.Server(config)
    print(f"PORT {sock.getsockname()[1]}", flush=True)

    def stop_when_stdin_closes() -> None:  # not a signal: uvicorn re-raises those, and the profile is lost
        sys.stdin.read()
        server.should_exit = True

    threading.Thread(target=stop_when_stdin_closes, daemon=True).start()
    if profile:
        profiler = cProfile.Profile()
        profiler.runcall(server.run, sockets=[sock])
        profiler.dump_stats(profile)
    else:
        server.run(sockets=[sock])


class Process:
    def __init__(self, which: str, profile: str | None = None, transport: str = "mockglot") -> None:
        command = [sys.executable, __file__, "serve", which, "--transport", transport]
        command += ["--profile", profile] if profile else []
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not line.startswith("PORT "):
            self.proc.kill()
            raise RuntimeError(f"{which} server did not start: {line!r}")
        self.port = int(line.split()[1])

    def stop(self) -> None:
        self.proc.stdin.close()  # type: ignore[union-attr]
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --- the client -------------------------------------------------------------------------------------------


class Connection:
    """One keep-alive HTTP/1.1 connection; just enough of the protocol for these two servers."""

    def __init__(self, port: int, key: str) -> None:
        self.port = port
        self.prefix = f"Host: 127.0.0.1:{port}\r\nAuthorization: Bearer {key}\r\n"

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    async def request(self, method: str, path: str, body: bytes = b"", headers: str = "") -> tuple[int, bytes]:
        """One request; `headers`: more header lines, each ending in CRLF."""
        head = f"{method} {path} HTTP/1.1\r\n{self.prefix}{headers}Content-Length: {len(body)}\r\n"
        if body:
            head += "Content-Type: application/json\r\n"
        self.writer.write(head.encode() + b"\r\n" + body)
        response = await self.reader.readuntil(b"\r\n\r\n")
        status = int(response[9:12])
        lower = response.lower()
        start = lower.index(b"content-length:") + 15
        length = int(lower[start : lower.index(b"\r\n", start)])
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


def expect(status: int, wanted: int, body: bytes) -> None:
    if status != wanted:
        raise RuntimeError(f"expected {wanted}, got {status}: {body[:200]!r}")


async def mockglot_round_trip(conn: Connection) -> None:
    status, body = await conn.request("POST", "/v1/sessions", BODY)
    expect(status, 201, body)
    session_id = json.loads(body)["id"]
    status, body = await conn.request("GET", f"/v1/sessions/{session_id}")
    expect(status, 200, body)
    status, body = await conn.request("POST", f"/v1/sessions/{session_id}/end")
    expect(status, 200, body)


async def bare_round_trip(conn: Connection) -> None:
    for method, body in (("POST", BODY), ("GET", b""), ("POST", b"")):
        status, answer = await conn.request(method, "/ping", body)
        expect(status, 200, answer)


async def load(port: int, which: str, round_trips: int, concurrency: int) -> float:
    """Run `round_trips` round trips over `concurrency` connections; returns round trips per second."""
    one = mockglot_round_trip if which == "mockglot" else bare_round_trip
    connections = [Connection(port, f"sk_test_bench{secrets.token_hex(8)}") for _ in range(concurrency)]
    for conn in connections:
        await conn.open()
    remaining = round_trips

    async def worker(conn: Connection) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await one(conn)

    started = time.perf_counter()
    await asyncio.gather(*(worker(conn) for conn in connections))
    elapsed = time.perf_counter() - started
    for conn in connections:
        conn.close()
    return round_trips / elapsed


# --- the run ----------------------------------------------------------------------------------------------


@dataclass
class Result:
    """Per repeat: round trips per wall second, and per CPU second the server process spent on them."""

    rate: dict[str, list[float]]
    cpu_rate: dict[str, list[float]]

    def ratio(self, series: dict[str, list[float]]) -> float:
        return statistics.median(series["mockglot"]) / statistics.median(series["bare"])

    def paired(self, series: dict[str, list[float]]) -> list[float]:
        """Each repeat's own ratio: the two runs of a repeat are seconds apart, so drift hits both alike."""
        return [m / b for m, b in zip(series["mockglot"], series["bare"], strict=False)]


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (Linux /proc), robust to other load on the machine."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pinned_cpus(pin: bool) -> tuple[int, int] | None:
    """(client CPU, server CPU), or None when not pinning."""
    cpus = sorted(os.sched_getaffinity(0)) if pin and hasattr(os, "sched_getaffinity") else []
    return (cpus[0], cpus[1]) if len(cpus) >= 2 else None


def run(args: argparse.Namespace) -> Result:
    servers = {
        "bare": Process("bare", transport=args.transport),
        "mockglot": Process("mockglot", args.profile, args.transport),
    }
    if args.cpus is not None:
        os.sched_setaffinity(0, {args.cpus[0]})
        for server in servers.values():
            os.sched_setaffinity(server.proc.pid, {args.cpus[1]})
    result = Result(rate={"bare": [], "mockglot": []}, cpu_rate={"bare": [], "mockglot": []})
    try:
        for which, server in servers.items():  # warm-up: imports, first connections, caches
            asyncio.run(load(server.port, which, args.warmup, args.concurrency))
        for repeat in range(args.repeats):
            for which in ("bare", "mockglot"):
                pid = servers[which].proc.pid
                before = cpu_seconds(pid)
                rate = asyncio.run(load(servers[which].port, which, args.round_trips, args.concurrency))
                after = cpu_seconds(pid)
                result.rate[which].append(rate)
                line = f"  repeat {repeat + 1}: {which:8s} {rate:7.0f} round trips/s ({3 * rate:6.0f} requests/s)"
                if before is not None and after is not None and after > before:
                    result.cpu_rate[which].append(args.round_trips / (after - before))
                    line += f"; {result.cpu_rate[which][-1]:7.0f} round trips per server CPU second"
                print(line, flush=True)
    finally:
        for server in servers.values():
            server.stop()
    return result


def report(args: argparse.Namespace, result: Result) -> str:
    def series(values: list[float]) -> str:
        return f"{statistics.median(values):.0f} (median of {', '.join(f'{v:.0f}' for v in values)})"

    ratio = result.ratio(result.rate)
    lines = [
        f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; machine: {os.cpu_count()} cores, "
        f"{platform.platform()}, Python {platform.python_version()}",
        f"command: python bench/rest.py --round-trips {args.round_trips} --concurrency {args.concurrency} "
        f"--repeats {args.repeats} --transport {args.transport}",
        "pinned: " + (f"client on CPU {args.cpus[0]}, servers on CPU {args.cpus[1]}" if args.cpus else "no"),
        f"round trips/s          bare: {series(result.rate['bare'])}",
        f"                   mockglot: {series(result.rate['mockglot'])}",
        f"ratio mockglot/bare: {ratio:.2f} ({'meets' if ratio >= GOAL else 'MISSES'} the goal of >= {GOAL})",
        f"  per repeat: {', '.join(f'{r:.2f}' for r in result.paired(result.rate))}",
    ]
    if result.cpu_rate["bare"] and result.cpu_rate["mockglot"]:
        lines += [
            f"round trips per server CPU second  bare: {series(result.cpu_rate['bare'])}",
            f"                               mockglot: {series(result.cpu_rate['mockglot'])}",
            f"CPU-efficiency ratio mockglot/bare: {result.ratio(result.cpu_rate):.2f}",
            f"  per repeat: {', '.join(f'{r:.2f}' for r in result.paired(result.cpu_rate))}",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:
        parser = argparse.ArgumentParser(prog="rest.py serve")
        parser.add_argument("which", choices=["mockglot", "bare"])
        parser.add_argument("--profile")
        parser.add_argument("--transport", choices=TRANSPORTS, default="mockglot")
        args = parser.parse_args(argv[1:])
        serve(args.which, args.profile, args.transport)
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--round-trips", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--profile", help="cProfile the mockglot server into this file")
    parser.add_argument(
        "--transport", choices=TRANSPORTS, default="mockglot", help="whose uvicorn Config both servers run under"
    )
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="leave CPU placement to the scheduler")
    args = parser.parse_args(argv)
    args.cpus = pinned_cpus(args.pin)
    print(report(args, run(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
