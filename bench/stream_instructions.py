"""Instructions per streamed audio frame, in-process: the stream's figure that other load does not change.

    python bench/stream_instructions.py                    # mockglot and the echo, under valgrind's callgrind
    python bench/stream_instructions.py --app mockglot --keep /tmp/cg   # keep the callgrind files to annotate
    python bench/stream_instructions.py --time             # no valgrind: in-process µs per frame (best of 3)
    python bench/stream_instructions.py --profile /tmp/p   # cProfile of mockglot's measured calls, by own time

Each app is driven as uvicorn drives it, without uvicorn or sockets: `bench/stream.py`'s calls one after the
other, each a REST `POST /v1/sessions` (`bench/rest_instructions.py: call`), then the stream over a websocket
scope as uvicorn's websockets-sansio protocol builds it, with the session's token: `websocket.connect`, then
`--seconds` of the load generator's `audio.input` frames (100 ms of mu-law, 1.2 s tone + 0.8 s silence, the
same JSON), a `ping` after every 5th, and `session.end` (the echo: the client's close, as `bench/stream.py`'s
load generator does). Everything the app sends is read. The echo is `bench/stream.py`'s (`echo_app`).

Time is virtual: the event loop's clock (asyncio's, with a selector that moves the clock to the next timer
instead of sleeping while nothing is ready) paces the frames at 100 ms and the replies as mockglot's players
pace them, so a call's frames interleave as on a real socket, in a fraction of a second and the same way in
every run. Each app runs twice under `valgrind --tool=callgrind`, for A and B calls (`--calls`) after
`--warmup` calls (which also fill the synthesis cache: every call speaks the same lines, as in
`bench/stream.py`); the difference of the two totals over (B - A) x frames per call is the cost of one audio
frame, with its share of the pings, the call's REST create, connect and end, and of this driver; start-up and
warm-up cancel out.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import cProfile
import json
import os
import pstats
import selectors
import subprocess
import sys
import time
from collections import Counter
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import rest_instructions  # noqa: E402  (the REST driver)
import stream  # noqa: E402  (the load generator's frames and the echo)
from rest_instructions import ASGI  # noqa: E402

from bench.common import callgrind, heading, instructions, timings  # noqa: E402

APPS = ("mockglot", "echo")
CREATE_BODY = json.dumps({"mode": "bidirectional_translation"}).encode()  # what the load generator creates


class VirtualSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """Polls without waiting; when nothing is ready, moves the clock to the next timer instead of sleeping
    (and waits for real only when no timer is set: a thread's result, such as a clip being synthesized)."""

    def __init__(self) -> None:
        super().__init__()
        self.now = time.monotonic()

    def select(self, timeout: float | None = None) -> list[Any]:
        ready: list[Any] = super().select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:
            return super().select(None)  # type: ignore[no-any-return]
        self.now += timeout
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self.clock = VirtualSelector()
        super().__init__(self.clock)

    def time(self) -> float:
        return self.clock.now


def build(which: str) -> ASGI:
    if which == "mockglot":
        from mockglot.app import create_app
        from mockglot.settings import Settings

        return create_app(Settings(output_pace="realtime"))  # type: ignore[return-value]
    return stream.echo_app()  # type: ignore[no-any-return]


def websocket_scope(path: str, token: str) -> dict[str, Any]:
    """The scope uvicorn's websockets-sansio protocol builds for the load generator's connect."""
    return {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "scheme": "ws",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "root_path": "",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"token=" + token.encode(),
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"upgrade", b"websocket"),
            (b"connection", b"Upgrade"),
            (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
            (b"sec-websocket-version", b"13"),
            (b"user-agent", b"Python/3.11 websockets/15.0"),
        ],
        "subprotocols": [],
        "state": {},
        "extensions": {"websocket.http.response": {}},
    }


async def one_call(app: ASGI, which: str, frames: int, payloads: tuple[str, str], seen: Counter[str]) -> None:
    """One call of the load generator's: create, connect, frames at real (virtual) time, end, read to the close."""
    loop = asyncio.get_running_loop()
    created = json.loads(
        rest_instructions.expect(
            await rest_instructions.call(app, "POST", "/v1/sessions", stream.API_KEY, CREATE_BODY), 201
        )
    )
    path = f"/v1/sessions/{created['id']}/connect"
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()  # uvicorn's queue of what the client sent
    closed = False

    async def send(message: dict[str, Any]) -> None:
        nonlocal closed
        kind = message["type"]
        if kind == "websocket.send":
            text = message["text"]
            seen[text[9 : text.index('"', 9)]] += 1  # {"type":"...": the frame's type, no JSON parser here
        elif kind == "websocket.close":
            closed = True
            inbox.put_nowait({"type": "websocket.disconnect", "code": message.get("code", 1000)})

    async def client() -> None:
        tone, silence = payloads
        start = loop.time()
        for k in range(frames):
            await asyncio.sleep(start + k * stream.FRAME_MS / 1000 - loop.time())
            inbox.put_nowait(
                {"type": "websocket.receive", "text": stream.audio_json(k + 1, tone if stream.is_tone(k) else silence)}
            )
            if k % stream.PING_EVERY == stream.PING_EVERY - 1:
                inbox.put_nowait({"type": "websocket.receive", "text": '{"type":"ping"}'})
        if which == "mockglot":
            inbox.put_nowait({"type": "websocket.receive", "text": '{"type":"session.end"}'})
        else:
            await asyncio.sleep(0.5)  # the last echoes, then the client closes
            if not closed:
                inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})

    inbox.put_nowait({"type": "websocket.connect"})
    sender = asyncio.ensure_future(client())
    await app(websocket_scope(path, created["stream"]["token"]), inbox.get, send)
    await sender


async def calls(app: ASGI, which: str, count: int, frames: int, seen: Counter[str]) -> None:
    payloads = (base64.b64encode(stream.tone_frame()).decode(), base64.b64encode(stream.SILENCE_FRAME).decode())
    for _ in range(count):
        await one_call(app, which, frames, payloads, seen)


def inner(which: str, warmup: int, count: int, frames: int, profile: str | None) -> None:
    """The measured process: build the app, `warmup` calls, then `count` calls; prints what the app sent."""
    app = build(which)
    seen: Counter[str] = Counter()

    async def main() -> None:
        await calls(app, which, warmup, frames, seen)
        seen.clear()
        profiler = cProfile.Profile() if profile else None
        if profiler is not None:
            profiler.enable()
        started = time.perf_counter()
        await calls(app, which, count, frames, seen)
        elapsed = time.perf_counter() - started
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile)
        print(f"SENT {json.dumps(dict(sorted(seen.items())))}", flush=True)
        print(f"ELAPSED {elapsed}", flush=True)

    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        runner.run(main())


def inner_command(which: str, warmup: int, count: int, frames: int, *extra: str) -> list[str]:
    return [sys.executable, __file__, "inner", which, str(warmup), str(count), str(frames), *extra]


def callgrind_total(which: str, warmup: int, count: int, frames: int, keep: str | None) -> tuple[int, str]:
    """Instructions the whole process executes (valgrind's callgrind), and what the app sent."""
    valgrind, out = callgrind(f"{which}.{count}", keep)
    command = [*valgrind, *inner_command(which, warmup, count, frames)]
    run = subprocess.run(command, check=True, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
    sent = next(line[5:] for line in run.stdout.splitlines() if line.startswith("SENT "))
    return instructions(out, keep), sent


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["inner"]:
        inner(argv[1], int(argv[2]), int(argv[3]), int(argv[4]), argv[5] if len(argv) > 5 else None)
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--app", action="append", choices=APPS, help="repeatable; default: mockglot, echo")
    parser.add_argument("--calls", default="1,5", help="A,B: the two runs whose difference is measured")
    parser.add_argument("--warmup", type=int, default=2, help="calls before the measured ones")
    parser.add_argument("--seconds", type=float, default=12.0, help="audio per call (bench/stream.py --duration)")
    parser.add_argument("--keep", help="keep the callgrind files in this directory")
    parser.add_argument("--time", action="store_true", help="no valgrind: in-process µs per frame (best of 3)")
    parser.add_argument("--profile", help="cProfile mockglot's B measured calls to this file, print by own time")
    args = parser.parse_args(argv)
    apps = args.app or ["mockglot", "echo"]
    low, high = (int(n) for n in args.calls.split(","))
    frames = int(args.seconds * 1000 / stream.FRAME_MS)
    print(f"{heading('stream_instructions.py')}; calls {low},{high} of {frames} frames after {args.warmup}")
    if args.profile:
        subprocess.run(inner_command(apps[0], args.warmup, high, frames, args.profile), check=True)
        pstats.Stats(args.profile).sort_stats("tottime").print_stats(45)
        return 0
    per_frame: dict[str, float] = {}
    for which in apps:
        if args.time:
            command = inner_command(which, args.warmup, high, frames)
            print(f"{which:9s} an audio frame in-process: {timings(command, 3, high * frames)}")
            continue
        (total_high, sent), (total_low, _) = (
            callgrind_total(which, args.warmup, n, frames, args.keep) for n in (high, low)
        )
        per_frame[which] = (total_high - total_low) / ((high - low) * frames)
        print(
            f"{which:9s} {per_frame[which] / 1000:7.1f}k instructions an audio frame; sent in {high} calls: {sent}",
            flush=True,
        )
    if len(per_frame) == 2:
        print(
            f"mockglot / echo: {per_frame['mockglot'] / per_frame['echo']:.2f}; "
            f"mockglot's own: {(per_frame['mockglot'] - per_frame['echo']) / 1000:.1f}k an audio frame"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
