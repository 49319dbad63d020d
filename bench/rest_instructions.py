"""Instructions per REST request, in-process: the figure that other load on the machine does not change.

    python bench/rest_instructions.py                      # mockglot and bare, under valgrind's callgrind
    python bench/rest_instructions.py --app mockglot --keep /tmp/cg   # keep the callgrind files to annotate
    python bench/rest_instructions.py --time               # no valgrind: wall µs per request, in-process
    python bench/rest_instructions.py --uvicorn            # the whole server process under uvicorn, over loopback

The app is driven as uvicorn drives it (the same ASGI scope, `receive` and `send`), without uvicorn or sockets:
the same round trip as `bench/rest.py` (create a session, retrieve it, end it; bare Starlette: the same three
request shapes to its one JSON endpoint), over 8 keys in turn, after `--warmup` round trips. Each app runs twice
under `valgrind --tool=callgrind`, for `--round-trips` A and B round trips; the difference of the two totals over
3 × (B - A) requests is the cost of one request, start-up and warm-up cancelled out. A null ASGI app (answers
at once) shows what this driver itself costs a request; it is in both apps' figures.

`--app redis` is mockglot on shared state (`--state redis://...`, a `redis-server` this bench starts on a free
port and empties before each run; the app's lifespan runs, as the coordinator needs): the same round trip, with
each create and end saved to Redis before it is answered. Its ratio to `mockglot` is what the shared state
costs a request in instructions, which a busy machine does not change (bench/shared.py measures CPU time).

With `--uvicorn`, the server process of `bench/rest.py` (`rest.py serve mockglot|bare`: uvicorn, uvloop,
httptools) runs under callgrind instead, driven by `bench/rest.py`'s client over 8 keep-alive connections: the
same difference of two runs, with uvicorn's and the event loop's share of a request in it (the null app has no
server of its own there).

`callgrind_annotate --inclusive=yes FILE` on a kept file shows the C functions; the Python functions are seen
with `--profile` (cProfile over the measured round trips, sorted by own time), and with `--opcodes N` (the
opcodes each function runs a request, N round trips at once, by `sys.settrace`: exact, where cProfile's times are
not). `--app redis --app mockglot --opcodes 8` shows what shared state adds, function by function.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import callgrind, heading, instructions, timings  # noqa: E402

BODY = json.dumps({"mode": "bidirectional_translation", "source_language": "de", "target_language": "en"}).encode()
KEYS = [f"sk_test_bench{index:016x}" for index in range(8)]
APPS = ("mockglot", "redis", "bare", "null")
REDIS_URL_VARIABLE = "MOCKGLOT_BENCH_REDIS_URL"  # how the measured process is told where the bench's Redis is

ASGI = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


def build(which: str) -> ASGI:
    if which in ("mockglot", "redis"):
        from mockglot.app import create_app
        from mockglot.settings import Settings

        state = os.environ[REDIS_URL_VARIABLE] if which == "redis" else "memory"
        return create_app(Settings(state=state))  # type: ignore[return-value]
    if which == "bare":
        from starlette.applications import Starlette
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        async def ping(request: Any) -> JSONResponse:
            return JSONResponse({"ok": True})

        return Starlette(routes=[Route("/ping", ping, methods=["GET", "POST"])])  # type: ignore[return-value]

    async def null(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"11")]})
        await send({"type": "http.response.body", "body": b'{"ok":true}'})

    return null


async def call(app: ASGI, method: str, path: str, key: str, body: bytes = b"") -> tuple[int, bytes]:
    """One request as uvicorn (httptools) hands it to the app: the same scope keys, one body message."""
    headers = [(b"host", b"127.0.0.1:8000"), (b"authorization", b"Bearer " + key.encode())]
    headers.append((b"content-length", b"%d" % len(body)))
    if body:
        headers.append((b"content-type", b"application/json"))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
        "method": method,
        "root_path": "",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": headers,
        "state": {},
    }
    answer: dict[str, Any] = {}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]
        else:
            answer["body"] = message.get("body", b"")

    await app(scope, receive, send)
    return answer["status"], answer["body"]


def expect(got: tuple[int, bytes], status: int) -> bytes:
    if got[0] != status:
        raise RuntimeError(f"expected {status}, got {got[0]}: {got[1][:200]!r}")
    return got[1]


@contextlib.asynccontextmanager
async def lifespan(app: ASGI) -> AsyncIterator[None]:
    """The app started and stopped as uvicorn does it (shared state connects to Redis at start)."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    running = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, inbox.get, outbox.put)
    )
    await inbox.put({"type": "lifespan.startup"})
    started = await outbox.get()
    if started["type"] != "lifespan.startup.complete":
        raise RuntimeError(f"the app did not start: {started}")
    try:
        yield
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await outbox.get()
        await running


async def round_trips(app: ASGI, which: str, count: int, start: int = 0) -> None:
    for index in range(start, start + count):
        key = KEYS[index % len(KEYS)]
        if which in ("mockglot", "redis"):
            created = expect(await call(app, "POST", "/v1/sessions", key, BODY), 201)
            session_id = created[7 : created.index(b'"', 7)].decode()  # {"id":"sess_...": no JSON parser here
            expect(await call(app, "GET", f"/v1/sessions/{session_id}", key), 200)
            expect(await call(app, "POST", f"/v1/sessions/{session_id}/end", key), 200)
        else:
            path = "/ping" if which == "bare" else "/"
            for method, body in (("POST", BODY), ("GET", b""), ("POST", b"")):
                expect(await call(app, method, path, key, body), 200)


def inner(which: str, warmup: int, count: int, profile: str | None, opcodes: str | None = None) -> None:
    """The measured process: build the app, warm it up, run `count` round trips (`opcodes`: "<concurrency>:<file>",
    counted by function into the file)."""
    app = build(which)

    async def main() -> None:
        async with lifespan(app) if which == "redis" else contextlib.nullcontext():
            await measured()

    async def measured() -> None:
        await round_trips(app, which, warmup)
        if opcodes:
            await counted(*opcodes.split(":", 1))
            return
        if profile:
            profiler = cProfile.Profile()
            profiler.enable()
        started = time.perf_counter()
        await round_trips(app, which, count, warmup)
        elapsed = time.perf_counter() - started
        if profile:
            profiler.disable()
            profiler.dump_stats(profile)
        print(f"ELAPSED {elapsed}", flush=True)

    async def counted(concurrency: str, path: str) -> None:
        import asyncio.base_events
        import asyncio.events
        import asyncio.runners
        import asyncio.selector_events
        import selectors

        # The event loop's own Python (asyncio's; `mockglot serve` runs uvloop's C instead) is not counted.
        loop_files = {m.__file__ for m in (asyncio.base_events, asyncio.events, asyncio.runners, selectors)}
        loop_files.add(asyncio.selector_events.__file__)
        each = count // int(concurrency)
        counts: dict[str, int] = {}

        def opcode(frame: Any, event: str, arg: Any) -> Any:
            if event == "opcode" and frame.f_code.co_filename not in loop_files:
                code = frame.f_code
                name = f"{'/'.join(code.co_filename.split('/')[-2:])}:{code.co_firstlineno}({code.co_name})"
                counts[name] = counts.get(name, 0) + 1
            return opcode

        def call(frame: Any, event: str, arg: Any) -> Any:
            frame.f_trace_opcodes, frame.f_trace_lines = True, False
            return opcode

        sys.settrace(call)
        await asyncio.gather(*(round_trips(app, which, each, warmup + i * each) for i in range(int(concurrency))))
        sys.settrace(None)
        requests = 3 * each * int(concurrency)
        Path(path).write_text(json.dumps({name: n / requests for name, n in counts.items()}))

    asyncio.run(main())


def opcodes_per_request(apps: list[str], warmup: int, count: int, concurrency: int) -> int:
    """Python opcodes a request runs, by function (the first app's, less the second's when there are two)."""
    found = []
    with tempfile.TemporaryDirectory() as directory:
        for which in apps[:2]:
            path = f"{directory}/{which}.json"
            command = [sys.executable, __file__, "inner", which, str(warmup), str(count), "", f"{concurrency}:{path}"]
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            counts = json.loads(Path(path).read_text())
            found.append(counts)
    for which, counts in zip(apps, found, strict=False):
        print(f"{which:9s} {sum(counts.values()):7.0f} opcodes a request (the event loop's own not counted)")
    other = found[1] if len(found) > 1 else {}
    rows = sorted(((n - other.get(k, 0.0), k) for k, n in found[0].items()), reverse=True)
    title = f"{apps[0]} - {apps[1]}" if other else apps[0]
    print(f"by function, {title}, opcodes a request:")
    for n, name in rows[:30]:
        print(f"{n:8.1f}  {name}")
    return 0


def callgrind_total(which: str, warmup: int, count: int, keep: str | None, redis: Any = None) -> int:
    """Instructions the whole process executes (valgrind's callgrind); `redis` is emptied first."""
    if redis is not None:
        redis.flush()
    valgrind, out = callgrind(f"{which}.{count}", keep)
    command = [*valgrind, sys.executable, __file__, "inner", which, str(warmup), str(count)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return instructions(out, keep)


def uvicorn_total(which: str, warmup: int, count: int, keep: str | None) -> int:
    """Instructions the `bench/rest.py` server process executes for `warmup` + `count` round trips and its start
    and stop (callgrind), driven by that bench's client."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import rest

    valgrind, out = callgrind(f"uvicorn.{which}.{count}", keep)
    command = [*valgrind, sys.executable, rest.__file__]
    server = subprocess.Popen(
        [*command, "serve", which], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    port = int(server.stdout.readline().split()[1])  # type: ignore[union-attr]  # listening before uvicorn is up
    asyncio.run(rest.load(port, which, warmup, 8))
    asyncio.run(rest.load(port, which, count, 8))
    server.stdin.close()  # type: ignore[union-attr]  # the server stops when its stdin closes
    server.wait()
    return instructions(out, keep)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["inner"]:
        profile = argv[4] if len(argv) > 4 and argv[4] else None
        inner(argv[1], int(argv[2]), int(argv[3]), profile, argv[5] if len(argv) > 5 else None)
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--app", action="append", choices=APPS, help="repeatable; default: mockglot, bare, null")
    parser.add_argument("--round-trips", default="50,350", help="A,B: the two runs whose difference is measured")
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--keep", help="keep the callgrind files in this directory")
    parser.add_argument("--time", action="store_true", help="no valgrind: in-process µs per request (5 runs)")
    parser.add_argument("--profile", help="cProfile the measured round trips of --app (the first) to this file")
    parser.add_argument("--uvicorn", action="store_true", help="the bench/rest.py server process, under uvicorn")
    parser.add_argument(
        "--opcodes",
        type=int,
        metavar="CONCURRENCY",
        help="no valgrind: Python opcodes a request by function (sys.settrace), the first --app less the second, "
        "with CONCURRENCY round trips at once",
    )
    args = parser.parse_args(argv)
    apps = args.app or ["mockglot", "bare", "null"]
    low, high = (int(n) for n in args.round_trips.split(","))
    print(f"{heading('rest_instructions.py')}; round trips {low},{high} after {args.warmup}")
    with contextlib.ExitStack() as stack:
        redis = stack.enter_context(bench_redis()) if "redis" in apps and not args.uvicorn else None
        return measure(args, apps, low, high, redis)


@contextlib.contextmanager
def bench_redis() -> Iterator[Any]:
    """A redis-server for `--app redis`, its URL handed to the measured processes."""
    from tests.redis_server import RedisServer

    with tempfile.TemporaryDirectory(prefix="rest_instructions_redis_") as directory:
        server = RedisServer(Path(directory))
        server.start()
        os.environ[REDIS_URL_VARIABLE] = server.url
        try:
            yield server
        finally:
            server.stop()


def measure(args: argparse.Namespace, apps: list[str], low: int, high: int, redis: Any) -> int:
    if args.opcodes:
        return opcodes_per_request(apps, args.warmup, high, args.opcodes)
    if args.profile:
        command = [sys.executable, __file__, "inner", apps[0], str(args.warmup), str(high), args.profile]
        subprocess.run(command, check=True)
        pstats.Stats(args.profile).sort_stats("tottime").print_stats(40)
        return 0
    per_request: dict[str, float] = {}
    for which in apps:
        if args.time:
            command = [sys.executable, __file__, "inner", which, str(args.warmup), str(high)]
            print(f"{which:9s} a request in-process: {timings(command, 5, 3 * high)}")
            continue
        if args.uvicorn and which in ("null", "redis"):
            continue  # (bench/shared.py measures shared state under uvicorn, by CPU time)
        if args.uvicorn:
            difference = uvicorn_total(which, args.warmup, high, args.keep) - uvicorn_total(
                which, args.warmup, low, args.keep
            )
        else:
            difference = callgrind_total(which, args.warmup, high, args.keep, redis) - callgrind_total(
                which, args.warmup, low, args.keep, redis
            )
        where = "under uvicorn" if args.uvicorn else "in-process"
        per_request[which] = difference / (3 * (high - low))
        print(f"{which:9s} {per_request[which] / 1000:7.1f}k instructions a request {where}", flush=True)
    if "redis" in per_request and "mockglot" in per_request:
        print(f"shared state on Redis / in memory: {per_request['redis'] / per_request['mockglot']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
