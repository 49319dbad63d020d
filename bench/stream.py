"""Stream concurrency: how many real-time calls mockglot carries before its lag passes 100 ms.

    python bench/stream.py            # full run: about 10 minutes of steps, writes bench/RESULTS.md
    python bench/stream.py --quick    # a small run (about 2 minutes); add --write to record it

Each step of the search runs N concurrent calls against a server started afresh in its own process:
mockglot (`python -m mockglot serve --port 0 --output-pace realtime`, scripted engine) and, as a baseline, a
bare Starlette WebSocket echo endpoint served by uvicorn with the same options and WebSocket transport
(`--serve-echo PORT`, below), so the CPU ratio measures mockglot's own work. `--interleave --repeats R` runs
both servers at each N in turn, R rounds in alternating order, and reports each round's CPU ratio.
The calls come from separate load-generator processes (`--worker`, 2 by default), each one uvloop event loop
with a WebSocket client of its own (`Call`, an asyncio Protocol: no extensions offered, every frame's bytes built
once per process, sends from timer callbacks), so that the load generator costs far less CPU than the servers.
Servers and load generators run at a raised priority in sessions of their own (`--nice`), and each step first
waits for the rest of the machine to be quiet; what other processes used meanwhile is measured and shown.

One call: create a session over REST, connect, wait for `session.ready`, then stream the customer's audio as
100 ms mu-law `audio.input` frames at real time for `--duration` seconds (frame k is due at start + k*100 ms;
starts are spread over 2 s), speech bursts of 1.2 s tone + 0.8 s silence, so the VAD closes an utterance
every 2 s. A `ping` follows every 5th frame. Then `session.end` and read to the close.

Lag, measured on the load generator's monotonic clock (the same clock as the due times):
- ping lag: `pong` arrival minus the due time of the frame the ping followed (both servers);
- event lag: for mockglot, each `transcript.partial` / `transcript.final` arrival minus the due time of the frame
  that caused it. Which frame that is comes from running mockglot's own EnergyVad over the same audio: a final
  is caused by the frame in which the VAD's end of utterance falls (500 ms of silence after the last voiced
  20 ms frame), the p-th partial of an utterance by the frame in which its speech reaches p * 400 ms.
  For the echo, each echoed `audio.input` arrival minus that frame's due time.
Percentiles cover the steady window (frames due while all N calls stream); the whole-run p99 is shown too.
A step passes when the p99 of both lags is under 100 ms, every call connected and finished, and every
expected final arrived. The search climbs a ladder of N to the first failure, then bisects. The late-send and
CPU columns show whether the load generator, rather than the server, was the limit. Last, a long-call check
runs mockglot at N=300 with 60 s calls, since its tail grows with call length.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime
import gc
import hashlib
import json
import math
import os
import platform
import random
import re
import resource
import shlex
import signal
import struct
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import msgspec

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FRAME_MS = 100
RATE = 8000
FRAME_BYTES = RATE * FRAME_MS // 1000
TONE_MS, PAUSE_MS = 1200, 800  # one utterance every 2 s
PING_EVERY = 5  # frames
STAGGER_S = 2.0  # call starts are spread uniformly over this window
LAG_LIMIT_MS = 100.0
API_KEY = "sk_test_mockglotbench01"
SETUP_CONCURRENCY = 50
NOISY_CPU = 25.0  # % of a core used by other processes during a step that makes a failure worth a re-run
LOADGEN_SATURATED = 90.0  # % of a core per load-generator process
NOISY_RERUNS = 1  # at most; the step kept is the one that passed, or else the quieter
END_TIMEOUT_S = 20.0

FULL_LADDER = [50, 100, 200, 300, 400, 600, 800, 1000, 1200, 1500]
QUICK_LADDER = [25, 50, 100, 200]
MAX_N = 1500
GOAL_N = 300  # the goal: at least this many concurrent real-time streams
CPU_GOAL = 1.3  # and at most this much server CPU per stream-second as the echo's at the same N
SERVERS = ("mockglot", "echo")
MAX_CONNECTIONS = 4 * MAX_N  # both servers' --max-connections: the ladder measures CPU and lag, not the cap


# --- the audio and what mockglot's VAD makes of it ------------------------------------------------------


def tone_frame() -> bytes:
    """100 ms of 440 Hz at amplitude 8000 as mu-law: 44 whole periods, so every tone frame is the same."""
    from mockglot.speech.codec import pcm_to_mulaw

    pcm = struct.pack(
        f"<{FRAME_BYTES}h", *(int(8000 * math.sin(2 * math.pi * 440 * i / RATE)) for i in range(FRAME_BYTES))
    )
    return pcm_to_mulaw(pcm)


SILENCE_FRAME = b"\xff" * FRAME_BYTES


def is_tone(k: int) -> bool:
    return (k * FRAME_MS) % (TONE_MS + PAUSE_MS) < TONE_MS


@dataclass
class Schedule:
    """Which frame causes which event, from mockglot's own VAD and partial cadence."""

    end_frames: list[int]  # utterance u's final is caused by frame end_frames[u]
    partial_frames: list[list[int]]  # utterance u's p-th partial (0-based) by frame partial_frames[u][p]
    final_frames: list[list[int]] = field(init=False)  # end_frames as partial_frames' kind of table

    def __post_init__(self) -> None:
        self.final_frames = [[k] for k in self.end_frames]


def vad_schedule(frames: int) -> Schedule:
    from mockglot.engines.scripted import PARTIAL_EVERY_MS
    from mockglot.engines.vad import EnergyVad, SpeechEnd
    from mockglot.settings import Settings
    from mockglot.speech.codec import mulaw_to_pcm

    tone = tone_frame()
    vad = EnergyVad(silence_ms=Settings().vad_silence_ms)
    ends: list[int] = []
    partials: list[list[int]] = [[]]
    for k in range(frames):
        for event in vad.feed(mulaw_to_pcm(tone if is_tone(k) else SILENCE_FRAME)):
            if isinstance(event, SpeechEnd):
                ends.append(k)
                partials.append([])
            else:
                current = partials[-1]
                while event.speech_ms >= (len(current) + 1) * PARTIAL_EVERY_MS:
                    current.append(k)
    if vad.flush():  # `session.end` right after the last frame closes the utterance in progress
        ends.append(frames - 1)
    return Schedule(ends, partials)


def audio_json(sequence: int, payload: str) -> str:
    return (
        f'{{"type":"audio.input","sequence":{sequence},"timestamp_ms":{(sequence - 1) * FRAME_MS},'
        f'"speaker":"customer","audio":{{"encoding":"mulaw","sample_rate_hz":8000,"payload":"{payload}"}}}}'
    )


class Frame(msgspec.Struct):
    """What the load generator reads of a server frame."""

    type: str
    sequence: int = 0


# --- the echo baseline ----------------------------------------------------------------------------------


def echo_app() -> Any:
    """A bare echo: every text frame straight back. POST /v1/sessions hands out a stream URL, so the load
    generator's setup is the same as against mockglot."""
    import itertools

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    ids = itertools.count(1)

    async def create(request: Request) -> JSONResponse:
        session_id = f"sess_echo{next(ids)}"
        host = request.headers.get("host", "127.0.0.1")
        url = f"ws://{host}/v1/sessions/{session_id}/connect"
        return JSONResponse({"id": session_id, "stream": {"url": url, "token": "echo"}}, status_code=201)

    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                await websocket.send_text(await websocket.receive_text())
        except WebSocketDisconnect:
            pass

    return Starlette(
        routes=[
            Route("/v1/sessions", create, methods=["POST"]),
            WebSocketRoute("/v1/sessions/{session_id}/connect", echo),
        ]
    )


def serve_echo(port: int) -> int:
    """Serve the echo the way `mockglot serve` serves mockglot: a bound socket, and uvicorn under the same Config
    (`mockglot.transport.uvicorn_config`): its HTTP protocol (writes gathered per loop turn), uvicorn's
    websockets-sansio protocol, no WS pings, the same message size limit, and no permessage-deflate. With
    uvicorn's defaults the echo accepted a client's deflate offer (the load generator made one while it was built
    on `websockets`), which mockglot refuses, and spent CPU compressing that mockglot never does."""
    import socket

    import uvicorn

    from mockglot.logs import uvicorn_log_config
    from mockglot.settings import Settings
    from mockglot.transport import uvicorn_config

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    print(f"echo serving on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    settings = Settings(max_connections=MAX_CONNECTIONS)
    config = uvicorn_config(echo_app(), settings, log_config=uvicorn_log_config("text"))
    uvicorn.Server(config).run(sockets=[sock])
    return 0


# --- the load generator (one process) -------------------------------------------------------------------


@dataclass
class CallResult:
    # (due time of the causing frame, lag in ms)
    ping_lag: list[tuple[float, float]] = field(default_factory=list)
    event_lag: list[tuple[float, float]] = field(default_factory=list)
    late_send: list[tuple[float, float]] = field(default_factory=list)
    finals: int = 0
    expected_finals: int = 0
    partials: int = 0
    audio_out: int = 0
    unmapped: int = 0
    errors: int = 0
    ended: bool = False
    failure: str | None = None


# The WebSocket client is written here (RFC 6455, only what these calls need) rather than taken from `websockets`,
# whose client cost the load generator about as much CPU as mockglot spends (1.2-1.4 ms per stream-second at N=300
# in two processes, against 0.53-0.75 ms for this one): on two cores that left too little for the servers measured.
# What is left is mostly the socket calls (a write per frame, a read per server message, the wake-ups between),
# which any client makes.
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x8, 0x9, 0xA
CLOSE_NORMAL = struct.pack("!H", 1000)
DECODE = msgspec.json.Decoder(Frame).decode


def client_frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    """One whole client frame, masked with the all-zero key.

    A client must mask its frames (RFC 6455 5.3); XOR with a zero key leaves the payload as it is, so a frame's
    bytes are the same for every call and are built once per process. A fixed key is fine here: a server unmasks
    whatever key a frame carries, and the key only guards caching proxies against script in a browser choosing
    the bytes on the wire; this load generator talks straight to a local server, through no proxy."""
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
    elif size < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
    return head + b"\0\0\0\0" + payload


@dataclass
class Script:
    """What every call of a process sends, as bytes on the wire, built once."""

    audio: list[bytes]  # frame k's `audio.input` (sequence k + 1)
    ping: bytes
    end: bytes  # `session.end`
    close: bytes  # a close frame, 1000

    @classmethod
    def build(cls, frames: int) -> Script:
        tone = base64.b64encode(tone_frame()).decode()
        silence = base64.b64encode(SILENCE_FRAME).decode()
        audio = [client_frame(audio_json(k + 1, tone if is_tone(k) else silence).encode()) for k in range(frames)]
        return cls(
            audio=audio,
            ping=client_frame(b'{"type":"ping"}'),
            end=client_frame(b'{"type":"session.end"}'),
            close=client_frame(CLOSE_NORMAL, OP_CLOSE),
        )


class Call(asyncio.Protocol):
    """One call, as its socket's protocol: no coroutine per frame. Its frames leave from timer callbacks, each
    scheduling the next; the server's frames are parsed in `data_received`, where they arrived."""

    def __init__(self, kind: str, schedule: Schedule, script: Script) -> None:
        self.kind = kind
        self.schedule = schedule
        self.script = script
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.start = 0.0
        self.result = CallResult()
        self.pings: deque[float] = deque()
        self.utterance = 0
        self.partials_in_utterance = 0
        self.key = base64.b64encode(os.urandom(16)).decode()
        self.upgraded = False
        self.buffer = bytearray()  # what has arrived of a frame (or of the upgrade response) not yet whole
        self.fragments: bytearray | None = None  # a fragmented message so far (uvicorn sends none, but may)
        self.close_sent = False
        self.hung_up = False  # the socket is closing or closed: read no further
        self.opened: asyncio.Future[None] = self.loop.create_future()  # upgraded and, from mockglot, ready
        self.sent: asyncio.Future[None] = self.loop.create_future()  # the last frame (or the socket gone first)
        self.closed: asyncio.Future[None] = self.loop.create_future()  # the socket is gone

    def due(self, k: int) -> float:
        return self.start + k * FRAME_MS / 1000

    # --- setup -----------------------------------------------------------------------------------------

    async def connect(self, http: Any, base_url: str) -> None:
        """Create a session over REST, connect and upgrade, and for mockglot wait for `session.ready`."""
        response = await http.post(f"{base_url}/v1/sessions", json={"mode": "bidirectional_translation"})
        response.raise_for_status()
        stream = response.json()["stream"]
        url = urllib.parse.urlsplit(stream["url"])
        await asyncio.wait_for(self.loop.create_connection(lambda: self, url.hostname, url.port or 80), 30)
        assert self.transport is not None
        self.transport.write(
            f"GET {url.path}?token={stream['token']} HTTP/1.1\r\nHost: {url.netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {self.key}\r\nSec-WebSocket-Version: 13\r\n"
            "User-Agent: mockglot-bench\r\n\r\n".encode()
        )
        try:
            await asyncio.wait_for(self.opened, 30)
        except BaseException:
            self.transport.abort()
            raise

    def _upgrade(self) -> bool:
        """Read the upgrade response from the buffer, once whole; whether it is."""
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = self.buffer[:end].decode("latin-1")
        del self.buffer[: end + 4]
        status, *lines = head.split("\r\n")
        accept = base64.b64encode(hashlib.sha1((self.key + WS_GUID).encode()).digest()).decode()
        fields = (line.partition(":") for line in lines)
        accepted = any(
            name.strip().lower() == "sec-websocket-accept" and value.strip() == accept for name, _, value in fields
        )
        if status.split()[1:2] != ["101"] or not accepted:
            raise RuntimeError(f"upgrade refused: {status}")
        self.upgraded = True
        if self.kind != "mockglot" and not self.opened.done():
            self.opened.set_result(None)
        return True

    # --- sending ---------------------------------------------------------------------------------------

    async def run(self, start: float) -> None:
        self.start = start
        self.loop.call_later(max(self.due(0) - time.monotonic(), 0), self._send, 0)
        await self.sent
        if self.kind == "echo":
            await asyncio.sleep(0.5)  # the last echoes
            self._write(self.script.close)
            self.close_sent = True
        try:
            await asyncio.wait_for(self.closed, END_TIMEOUT_S)
        except Exception as exc:
            self.result.failure = self.result.failure or f"end: {type(exc).__name__}: {exc}"
            self._hang_up(abort=True)
        self.result.expected_finals = len(self.schedule.end_frames) if self.kind == "mockglot" else 0

    def _send(self, k: int) -> None:
        """Send frame k (and its ping), then any frames already due; schedule the next one not yet due."""
        transport = self.transport
        audio = self.script.audio
        late = self.result.late_send
        while True:
            if transport is None or transport.is_closing():
                self.result.failure = self.result.failure or "send: the connection closed"
                break
            due = self.due(k)
            late.append((due, (time.monotonic() - due) * 1000))
            transport.write(audio[k])
            if k % PING_EVERY == PING_EVERY - 1:
                self.pings.append(due)
                transport.write(self.script.ping)
            k += 1
            if k == len(audio):
                if self.kind == "mockglot":
                    transport.write(self.script.end)
                break
            wait = self.due(k) - time.monotonic()
            if wait > 0:
                self.loop.call_later(wait, self._send, k)
                return
        if not self.sent.done():
            self.sent.set_result(None)

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _hang_up(self, abort: bool = False) -> None:
        """Close the socket (`abort`: at once, unsent data dropped); nothing more is read."""
        self.hung_up = True
        if self.transport is not None:
            if abort:
                self.transport.abort()
            else:
                self.transport.close()

    # --- receiving -------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def connection_lost(self, exc: Exception | None) -> None:
        """The end of the call, or a failure in setup (a frame due after it fails the call: `_send`)."""
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"connection lost: {exc}"))
        self.hung_up = True
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()  # one arrival time for everything that came in this read
        try:
            if self.buffer or not self.upgraded:  # the rest of a frame, or of the upgrade response
                self.buffer += data
                if self.upgraded or self._upgrade():
                    del self.buffer[: self._frames(self.buffer, now)]
            else:  # the usual case: whole frames, read where they arrived
                used = self._frames(data, now)
                if used < len(data):
                    self.buffer += memoryview(data)[used:]
        except Exception as exc:
            if not self.opened.done():
                self.opened.set_exception(exc)
            self.result.failure = self.result.failure or f"read: {type(exc).__name__}: {exc}"
            self._hang_up(abort=True)

    def _frames(self, data: bytes | bytearray, now: float) -> int:
        """Handle every whole frame at the start of `data`; the number of bytes they take. Payloads are views of
        `data`, which must not outlive this call (a bytearray cannot be resized while one does)."""
        size, at = len(data), 0
        with memoryview(data) as view:
            while size - at >= 2 and not self.hung_up:
                first, length = data[at], data[at + 1]
                if length > 125:
                    if length & 0x80:
                        raise RuntimeError("the server masked a frame")
                    if length == 126:
                        if size - at < 4:
                            break
                        length, head = data[at + 2] << 8 | data[at + 3], 4
                    else:
                        if size - at < 10:
                            break
                        length, head = int.from_bytes(view[at + 2 : at + 10]), 10
                else:
                    head = 2
                end = at + head + length
                if end > size:
                    break
                if first == 0x80 | OP_TEXT:  # a whole text message: all uvicorn sends but the close
                    self._message(view[at + head : end], now)
                else:
                    self._frame(first, view[at + head : end], now)
                at = end
        return size if self.hung_up else at  # hung up: whatever follows is not read

    def _frame(self, first: int, payload: memoryview, now: float) -> None:
        opcode = first & 0x0F
        if opcode == OP_CLOSE:
            if not self.close_sent:  # answer with the same code, then hang up
                self._write(client_frame(payload[:2].tobytes(), OP_CLOSE))
                self.close_sent = True
            self._hang_up()
        elif opcode == OP_PING:
            self._write(client_frame(payload.tobytes(), OP_PONG))
        elif opcode == OP_PONG:
            pass
        elif first & 0x80 and opcode != OP_CONT:  # a whole message in one frame
            self._message(payload, now)
        else:
            if opcode != OP_CONT:
                self.fragments = bytearray()
            assert self.fragments is not None
            self.fragments += payload
            if first & 0x80:
                message, self.fragments = self.fragments, None
                self._message(message, now)

    def _message(self, payload: memoryview | bytearray, now: float) -> None:
        frame = DECODE(payload)
        kind = frame.type
        result = self.result
        if not self.opened.done():  # mockglot's first message
            if kind == "session.ready":
                self.opened.set_result(None)
            else:
                self.opened.set_exception(RuntimeError(f"expected session.ready, got {kind}"))
        elif kind in ("pong", "ping"):  # the echo sends our ping back
            due = self.pings.popleft()
            result.ping_lag.append((due, (now - due) * 1000))
        elif kind == "audio.input":
            due = self.due(frame.sequence - 1)
            result.event_lag.append((due, (now - due) * 1000))
        elif kind == "transcript.partial":
            result.partials += 1
            partials = self.schedule.partial_frames
            self._event(now, partials, self.partials_in_utterance)
            self.partials_in_utterance += 1
        elif kind == "transcript.final":
            result.finals += 1
            self._event(now, self.schedule.final_frames, 0)
            self.utterance += 1
            self.partials_in_utterance = 0
        elif kind == "audio.output":
            result.audio_out += 1
        elif kind == "session.error":
            result.errors += 1
        elif kind == "session.ended":
            result.ended = True

    def _event(self, now: float, table: list[list[int]], index: int) -> None:
        if self.utterance < len(table) and index < len(table[self.utterance]):
            due = self.due(table[self.utterance][index])
            self.result.event_lag.append((due, (now - due) * 1000))
        else:
            self.result.unmapped += 1


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def worker_main(args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    frames = int(args.duration * 1000 / FRAME_MS)
    schedule = vad_schedule(frames)
    script = Script.build(frames)
    calls = [Call(args.kind, schedule, script) for _ in range(args.sessions)]
    limit = asyncio.Semaphore(SETUP_CONCURRENCY)
    failures: list[str] = []
    async with httpx.AsyncClient(
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=30,
        trust_env=False,
        limits=httpx.Limits(max_connections=SETUP_CONCURRENCY),
    ) as http:

        async def setup(call: Call) -> Call | None:
            async with limit:
                try:
                    await call.connect(http, args.base_url)
                    return call
                except Exception as exc:
                    failures.append(f"{type(exc).__name__}: {exc}")
                    return None

        ready = [c for c in await asyncio.gather(*(setup(c) for c in calls)) if c is not None]
    print(json.dumps({"ready": len(ready), "failed": len(failures)}), flush=True)
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    t0 = float(line.split()[1])
    rng = random.Random(args.seed)
    # No garbage collection while the calls stream: they make no garbage that needs it, and the collector would
    # walk the lists of lags as they grow.
    gc.collect()
    gc.freeze()
    gc.disable()
    cpu0 = cpu_seconds()
    wall0 = time.monotonic()
    await asyncio.gather(*(c.run(t0 + rng.uniform(0, STAGGER_S)) for c in ready))
    cpu = cpu_seconds() - cpu0
    wall = time.monotonic() - wall0
    gc.enable()
    results = [c.result for c in ready]
    return {
        "connected": len(ready),
        "connect_failures": failures[:5],
        "failed_calls": sum(1 for r in results if r.failure),
        "failures": [r.failure for r in results if r.failure][:5],
        # [seconds from t0 to the causing frame's due time, lag in ms]
        **{
            name: [(round(due - t0, 3), round(lag, 2)) for r in results for due, lag in getattr(r, name)]
            for name in ("ping_lag", "event_lag", "late_send")
        },
        "finals": sum(r.finals for r in results),
        "expected_finals": sum(r.expected_finals for r in results),
        "partials": sum(r.partials for r in results),
        "audio_out": sum(r.audio_out for r in results),
        "unmapped": sum(r.unmapped for r in results),
        "errors": sum(r.errors for r in results),
        "not_ended": sum(1 for r in results if args.kind == "mockglot" and not r.ended),
        "cpu_s": cpu,
        "wall_s": wall,
    }


def run_worker(args: argparse.Namespace) -> int:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(worker_main(args))
    # A file, not stdout: the results run to megabytes, and a pipe would have to be drained meanwhile.
    Path(args.result_file).write_text(json.dumps(result), encoding="utf-8")
    return 0


# --- the orchestrator ----------------------------------------------------------------------------------


class Server:
    """One server process; its URL is the first line it prints."""

    def __init__(self, kind: str, args: argparse.Namespace, logdir: Path) -> None:
        self.kind = kind
        self.priority = priority(args.nice, args.server_cpus)
        if kind == "mockglot":
            prefix = shlex.split(args.mockglot_command) if args.mockglot_command else [sys.executable, "-m", "mockglot"]
            self.command = [*prefix, "serve", "--port", "0", "--output-pace", args.output_pace]
            self.command += ["--max-connections", str(MAX_CONNECTIONS)]
        else:
            self.command = [sys.executable, str(Path(__file__).resolve()), "--serve-echo", "0"]
        self.log = logdir / f"{kind}-{time.strftime('%H%M%S')}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.base_url = ""

    def __enter__(self) -> Server:
        out = self.log.open("wb")
        self.proc = subprocess.Popen(
            self.command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, preexec_fn=self.priority
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            first = self.log.read_text(errors="replace").split("\n", 1)
            if len(first) > 1:
                port = re.search(r"http://\S+?:(\d+)", first[0])[1]  # type: ignore[index]
                self.base_url = f"http://127.0.0.1:{port}"
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.kind} did not start: {self.log.read_text(errors='replace')[-2000:]}")

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def cpu_seconds(self) -> float:
        """The server's CPU time, its child processes' included (`mockglot serve --workers N` serves from
        children of a supervisor)."""
        assert self.proc is not None
        return tree_cpu_seconds(self.proc.pid)


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its live descendants (Linux /proc; a process gone meanwhile
    counts nothing)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            total += sum(tree_cpu_seconds(int(child)) for child in task.read_text().split())
    return total


def priority(nice: int, cpus: set[int] | None = None) -> Any:
    """A preexec_fn that runs a child at niceness `nice` (below 0 needs root, so it is best effort), on `cpus`.

    With the kernel's autogroup scheduling on, CPU is shared fairly between sessions first and niceness only
    counts inside a session: so the child gets a session of its own, and that session's autogroup the niceness.
    """

    def apply() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)
        if nice == 0:
            return
        with contextlib.suppress(OSError):
            os.setsid()
            Path("/proc/self/autogroup").write_text(str(nice))
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, nice)

    return apply


def busy_seconds() -> float:
    """CPU time spent by everything on the machine so far (all cores), from /proc/stat."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def wait_for_quiet(limit: float = 25.0, patience: float = 180.0) -> float:
    """Wait (up to `patience` s) until the rest of the machine uses under `limit` % of a core, measured over
    2 s; return the seconds waited. Other processes' CPU during a step is measured and shown either way."""
    started = time.monotonic()
    said = False
    while True:
        before = busy_seconds()
        time.sleep(2.0)
        load = (busy_seconds() - before) / 2 * 100
        waited = time.monotonic() - started
        if load < limit or waited > patience:
            return waited
        if not said:
            print(
                f"  (other processes use {load:.0f}% of a core: waiting up to {patience:.0f} s for quiet)", flush=True
            )
            said = True


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


@dataclass
class Step:
    server: str
    n: int
    connected: int = 0
    ping_p50: float = math.nan
    ping_p99: float = math.nan
    event_p50: float = math.nan
    event_p99: float = math.nan
    max_lag: float = math.nan
    all_p99: float = math.nan  # whole run, ramp-up and the calls' ends included
    late_p99: float = math.nan
    server_cpu: float = math.nan  # % of one core over the streaming window
    client_cpu: float = math.nan  # % of one core, all load-generator processes together
    other_cpu: float = math.nan  # % of one core used by every other process on the machine meanwhile
    finals: int = 0
    expected_finals: int = 0
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0  # the step itself
    waited: float = 0.0  # waiting for the machine to be quiet, before it
    clients: int = 1  # load-generator processes
    duration: float = 0.0  # seconds of audio per call
    long: bool = False  # the long-call check, outside the search
    repeat: int = 0  # which repeat of this N (--repeats), counted from 0
    reruns: int = 0  # runs of this N before it, thrown away because other processes loaded the machine

    @property
    def passed(self) -> bool:
        return not self.problems and self.ping_p99 < LAG_LIMIT_MS and self.event_p99 < LAG_LIMIT_MS


def rerun_if_noisy(measure: Callable[[], Step], noisy_cpu: float | None) -> Step:
    """A step, run again (up to NOISY_RERUNS times) when it failed while other processes used more than `noisy_cpu`
    % of a core (None: whatever they used): the one kept is the one that passed, or else the quieter."""
    step = measure()
    for _ in range(NOISY_RERUNS):
        if step.passed or (noisy_cpu is not None and step.other_cpu <= noisy_cpu):
            break
        print(f"  other processes used {step.other_cpu:.0f}% of a core: running N={step.n} again", flush=True)
        again = measure()
        again.reruns = step.reruns + 1
        if again.passed or again.other_cpu < step.other_cpu:
            step = again
        else:
            step.reruns = again.reruns
    return step


def run_step(
    kind: str,
    n: int,
    args: argparse.Namespace,
    logdir: Path,
    duration: float | None = None,
    server_class: type[Server] = Server,
) -> Step:
    """One step: N calls against a fresh `server_class` server (bench/shared.py passes its own, started with a
    shared state)."""
    waited = wait_for_quiet(patience=args.patience)
    started = time.monotonic()
    duration = duration or args.duration
    step = Step(kind, n, waited=waited, duration=duration)
    workers = step.clients = min(args.clients, n)
    shares = [n // workers + (1 if i < n % workers else 0) for i in range(workers)]
    with server_class(kind, args, logdir) as server:
        procs = []
        for index, share in enumerate(shares):
            command = [
                sys.executable, str(Path(__file__).resolve()), "--worker", "--kind", kind,
                "--base-url", server.base_url, "--sessions", str(share), "--duration", str(duration),
                "--seed", str(1000 * n + index),
                "--result-file", str(logdir / f"result-{kind}-{n}-{index}.json"),
            ]  # fmt: skip
            procs.append(
                subprocess.Popen(
                    command,
                    cwd=ROOT,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    preexec_fn=priority(args.nice, args.client_cpus),
                )
            )
        try:
            for proc in procs:
                assert proc.stdout is not None
                ready = json.loads(proc.stdout.readline() or "{}")
                step.connected += ready.get("ready", 0)
            t0 = time.monotonic() + 0.5
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write(f"go {t0}\n")
                proc.stdin.flush()
            time.sleep(max(t0 - time.monotonic(), 0))
            # CPU is measured over the steady window, while all N calls stream.
            time.sleep(max(t0 + STAGGER_S - time.monotonic(), 0))
            cpu0, busy0, wall0 = server.cpu_seconds(), busy_seconds(), time.monotonic()
            time.sleep(max(t0 + duration - time.monotonic(), 0))
            window = time.monotonic() - wall0
            busy = busy_seconds() - busy0
            server_cpu = server.cpu_seconds() - cpu0
            step.server_cpu = server_cpu / window * 100
            outputs = []
            for proc in procs:
                proc.communicate(timeout=END_TIMEOUT_S + 60)
                result_file = logdir / f"result-{kind}-{n}-{procs.index(proc)}.json"
                outputs.append(json.loads(result_file.read_text(encoding="utf-8")))
                result_file.unlink()
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()

    def steady(name: str) -> list[float]:
        return [lag for o in outputs for due, lag in o[name] if STAGGER_S <= due < duration]

    ping, event, late = steady("ping_lag"), steady("event_lag"), steady("late_send")
    step.ping_p50, step.ping_p99 = percentile(ping, 50), percentile(ping, 99)
    step.event_p50, step.event_p99 = percentile(event, 50), percentile(event, 99)
    step.max_lag = max(ping + event) if ping or event else math.nan
    step.late_p99 = percentile(late, 99)
    everything = [lag for o in outputs for name in ("ping_lag", "event_lag") for _, lag in o[name]]
    step.all_p99 = percentile(everything, 99)
    step.client_cpu = sum(o["cpu_s"] / o["wall_s"] for o in outputs) * 100
    client_cpu = sum(o["cpu_s"] / o["wall_s"] for o in outputs) * window
    step.other_cpu = max(busy - server_cpu - client_cpu, 0) / window * 100
    if args.timeline:
        print(f"  timeline {kind} N={n}: second of due time -> p99 lag (ping + event), ms")
        for second in range(int(STAGGER_S + duration) + 1):
            lags = [
                lag
                for o in outputs
                for name in ("ping_lag", "event_lag")
                for due, lag in o[name]
                if second <= due < second + 1
            ]
            print(f"    {second:3d}s {percentile(lags, 99):8.1f}  (n={len(lags)})")
    step.finals = sum(o["finals"] for o in outputs)
    step.expected_finals = sum(o["expected_finals"] for o in outputs)
    if step.connected < n:
        step.problems.append(f"{n - step.connected} calls failed to connect")
    failed = sum(o["failed_calls"] for o in outputs)
    if failed:
        step.problems.append(f"{failed} calls failed ({next(f for o in outputs for f in o['failures'])})")
    if kind == "mockglot":
        if step.finals < step.expected_finals:
            step.problems.append(f"{step.expected_finals - step.finals} finals missing")
        for key, label in (("unmapped", "unexpected events"), ("errors", "session.errors"), ("not_ended", "no end")):
            count = sum(o[key] for o in outputs)
            if count:
                step.problems.append(f"{count} {label}")
    step.seconds = time.monotonic() - started
    return step


def fmt(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.1f}"


HEADER = (
    "| server | N | calls | ping lag p50 / p99 (ms) | event lag p50 / p99 (ms) | max (ms) | whole-run p99 (ms) "
    "| late send p99 (ms) | server CPU | load-gen CPU | other CPU | finals | result |"
)


def row(step: Step) -> str:
    finals = f"{step.finals}/{step.expected_finals}" if step.server == "mockglot" else "-"
    verdict = "pass" if step.passed else "FAIL"
    notes = list(step.problems)
    if step.reruns:
        notes.append(f"{step.reruns} noisy run(s) before")
    if notes:
        verdict += " (" + "; ".join(notes) + ")"
    n = f"{step.n} ({step.duration:g} s calls)" if step.long else str(step.n)
    if step.repeat:
        n += f" (repeat {step.repeat + 1})"
    return (
        f"| {step.server} | {n} | {step.connected} | {fmt(step.ping_p50)} / {fmt(step.ping_p99)} "
        f"| {fmt(step.event_p50)} / {fmt(step.event_p99)} | {fmt(step.max_lag)} | {fmt(step.all_p99)} "
        f"| {fmt(step.late_p99)} "
        f"| {step.server_cpu:.0f}% | {step.client_cpu:.0f}% | {step.other_cpu:.0f}% | {finals} | {verdict} |"
    )


def search(kind: str, ladder: list[int], args: argparse.Namespace, logdir: Path, spent: list[Step]) -> list[Step]:
    """Climb the ladder until a step fails, then bisect between the last pass and that failure.
    `spent`: every step run so far (both servers), for the time budget, which leaves out waits for quiet."""
    steps: list[Step] = []

    def attempt(n: int) -> Step | None:
        # A step takes about the call duration plus setup that grows with N: allow for the growth.
        estimate = max((s.seconds + max(n - s.n, 0) / 100 for s in spent), default=0)
        if sum(s.seconds for s in spent) + estimate > args.budget:
            print(f"  {kind} N={n}: skipped, out of time budget", flush=True)
            return None

        def measure() -> Step:
            step = run_step(kind, n, args, logdir)
            spent.append(step)
            print(row(step), f"  [{step.seconds:.0f} s]", flush=True)
            return step

        step = rerun_if_noisy(measure, NOISY_CPU)
        steps.append(step)
        return step

    low, high = 0, None
    for n in ladder:
        step = attempt(n)
        if step is None:
            break
        if not step.passed:
            high = n
            break
        low = n
    for _ in range(args.refine if high is not None else 0):
        n = (low + high) // 2 // 25 * 25
        if n <= low or n >= high:
            break
        step = attempt(n)
        if step is None:
            break
        if step.passed:
            low = n
        else:
            high = n
    return steps


def interleaved(ladder: list[int], args: argparse.Namespace, logdir: Path) -> list[Step]:
    """Both servers in lockstep: at each N, `--repeats` rounds of one step per server, the order alternating
    from round to round, so that whatever else loads the machine meanwhile falls on both alike. A server stops
    climbing at the first N it fails (most of its repeats fail); the ladder ends when both have stopped."""
    steps: list[Step] = []
    climbing = list(args.servers)
    for n in ladder:
        if not climbing:
            break
        for repeat in range(args.repeats):
            order = climbing if repeat % 2 == 0 else climbing[::-1]
            for kind in order:
                step = run_step(kind, n, args, logdir)
                step.repeat = repeat
                steps.append(step)
                print(row(step), f"  [{step.seconds:.0f} s, repeat {repeat + 1}]", flush=True)
        climbing = [kind for kind in climbing if passed_at(n, [s for s in steps if s.server == kind])]
    return steps


def passed_at(n: int, steps: list[Step]) -> bool:
    """Whether most of the runs at `n` passed (a tie fails)."""
    runs = [s.passed for s in steps if s.n == n]
    return bool(runs) and 2 * sum(runs) > len(runs)


def max_passing(steps: list[Step]) -> int:
    """The largest N that passed (most of its repeats), below every N that failed."""
    ns = {s.n for s in steps}
    failed = [n for n in ns if not passed_at(n, steps)]
    bound = min(failed) if failed else math.inf
    return max((n for n in ns if n < bound and passed_at(n, steps)), default=0)


def machine() -> str:
    model = "unknown CPU"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores ({model}), Linux {platform.release()}, Python {platform.python_version()}"


def verdict(kind: str, steps: list[Step]) -> tuple[int, str]:
    """The largest passing N, and what to know about it."""
    mine = [s for s in steps if s.server == kind and not s.long]
    best = max_passing(mine)
    failed = sorted((s for s in mine if not s.passed and not passed_at(s.n, mine)), key=lambda s: s.n)
    if not failed:
        return best, f"at least {best}: no N tested failed"
    first = failed[0]
    note = f"first failure at N={first.n}"
    if first.client_cpu / first.clients >= LOADGEN_SATURATED or first.late_p99 >= LAG_LIMIT_MS / 2:
        note += " with the load generator saturated (late sends): a lower bound, set by this 2-core machine"
    elif first.server_cpu >= 90:
        note += f" with the server at {first.server_cpu:.0f}% of a core"
    return best, note


def report(steps: list[Step], args: argparse.Namespace, command: str, elapsed: float) -> str:
    verdicts = {kind: verdict(kind, steps) for kind in args.servers}
    lines = [
        "## Stream concurrency",
        "",
        f"- Date: {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Machine: {machine()}",
        f"- Command: `{command}` ({elapsed / 60:.1f} min, waits for a quiet machine included)",
        f"- Each call: REST create, connect, {args.duration:g} s of customer audio as 100 ms mu-law frames at real "
        f"time (1.2 s tone + 0.8 s silence: an utterance every 2 s), a ping after every {PING_EVERY}th frame, then "
        f"`session.end`. Call starts are spread over {STAGGER_S:g} s. mockglot: `python -m mockglot serve --port 0 "
        f"--output-pace {args.output_pace}`, scripted engine, bidirectional_translation (each final also sends "
        "its translation as paced `audio.output`). Echo: a bare Starlette WebSocket echo under uvicorn with "
        "mockglot's WebSocket transport (websockets-sansio, no WS pings, no permessage-deflate). Each server is a "
        "fresh process per step. Load generator: "
        f"{args.clients} separate process(es), each a uvloop event loop with a hand-written WebSocket client "
        "(no extensions offered, frames built once per process). Servers and load generators run at niceness "
        f"{args.nice} in their own sessions "
        "(autogroups), so that other work on the machine takes little of the CPU a step needs. Pinned: "
        + (
            f"servers on CPU {sorted(args.server_cpus)}, load generators on {sorted(args.client_cpus)}."
            if args.server_cpus
            else "no."
        ),
        "- Lag, on the load generator's monotonic clock: ping lag = `pong` arrival minus the due time of the "
        "frame the ping followed; event lag = for mockglot each `transcript.partial`/`transcript.final` arrival "
        "minus the due time of the frame that caused it (from mockglot's own VAD run over the same audio: a "
        "final by the frame where the end of utterance falls, the p-th partial by the frame where speech "
        "reaches p x 400 ms); for the echo, each echoed frame minus its due time.",
        f"- The percentiles cover the steady window, frames due from {STAGGER_S:g} s to {args.duration:g} s after "
        "the start, when all N calls stream at once; 'whole-run p99' adds the ramp-up and the calls' ends (all "
        f"within {STAGGER_S:g} s of each other, each flushing its backlog of translated audio). A step passes when "
        "the steady p99 of both lags is under 100 ms, every call connects and finishes, and every expected final "
        "arrives. CPU: % of one core over the steady window; 'other' is every other process on the machine.",
        f"- N tested: {', '.join(dict.fromkeys(f'{s.server} {s.n}' for s in steps if not s.long))}"
        + (
            f"; then the long-call check: mockglot {GOAL_N} with {args.long_check:g} s calls"
            if any(s.long for s in steps)
            else ""
        ),
        "",
        HEADER,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *(row(s) for s in steps),
        "",
    ]
    lines += cpu_per_stream(steps)
    for kind in args.servers:
        best, note = verdicts[kind]
        lines.append(f"- Largest N with p99 < {LAG_LIMIT_MS:.0f} ms, {kind}: **{best}** ({note})")
    if "mockglot" in verdicts and "echo" in verdicts and verdicts["echo"][0]:
        ratio = verdicts["mockglot"][0] / verdicts["echo"][0]
        echo_note = verdicts["echo"][1]
        bound = "at most " if echo_note.startswith("at least") or "lower bound" in echo_note else ""
        lines.append(f"- Ratio mockglot / echo: {bound}{ratio:.2f}")
    if "mockglot" in verdicts:
        met = verdicts["mockglot"][0] >= GOAL_N
        long = next((s for s in steps if s.long), None)
        tested = max((s.n for s in steps if s.server == "mockglot" and not s.long), default=0)
        if not met and tested < GOAL_N and all(s.passed for s in steps if s.server == "mockglot"):
            verdict_text = f"not assessed: the largest N tested was {tested}"
        elif long is None:
            verdict_text = "met" if met else "NOT met"
        else:
            verdict_text = (
                f"{'met' if met else 'NOT met'} with {args.duration:g} s calls; with {long.duration:g} s calls "
                f"{GOAL_N} streams {'pass' if long.passed else 'FAIL'} (p99 {fmt(max(long.ping_p99, long.event_p99))} "
                f"ms): {'met' if met and long.passed else 'NOT met'} overall"
            )
        lines.append(f"- Goal (at least {GOAL_N} concurrent real-time streams): **{verdict_text}**")
    return "\n".join(lines) + "\n"


def cpu_per_stream(steps: list[Step]) -> list[str]:
    """Server CPU per stream-second, mockglot over the echo, at every N both ran (steady window, same run)."""
    by_n: dict[int, dict[int, dict[str, Step]]] = {}
    for step in steps:
        if not step.long:
            by_n.setdefault(step.n, {}).setdefault(step.repeat, {})[step.server] = step
    per_n = []
    for n, rounds in sorted(by_n.items()):
        pairs = [
            tuple(pair[k].server_cpu * 10 / n for k in ("mockglot", "echo"))  # ms of CPU per stream-second
            for _, pair in sorted(rounds.items())
            if {"mockglot", "echo"} <= pair.keys()
        ]
        if pairs:
            per_n.append((n, pairs))
    if not per_n:
        return []

    def median(values: list[float]) -> float:
        ordered = sorted(values)
        middle = len(ordered) // 2
        return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2

    parts, medians = [], []
    for n, pairs in per_n:
        ratios = [mine / echo for mine, echo in pairs]
        medians.append(median(ratios))
        mine, echo = median([p[0] for p in pairs]), median([p[1] for p in pairs])
        each = f" (repeats {', '.join(f'{r:.2f}' for r in ratios)})" if len(ratios) > 1 else ""
        parts.append(f"N={n}: {mine:.2f} / {echo:.2f} ms = **{medians[-1]:.2f}**{each}")
    overall = median(medians)
    return [
        f"- Server CPU per stream-second, mockglot / echo (goal at most {CPU_GOAL:g}): {'; '.join(parts)}; median "
        f"ratio **{overall:.2f}** ({'met' if overall <= CPU_GOAL else 'NOT met'})"
    ]


SECTION = "## Stream concurrency\n"


def write_results(section: str, path: Path) -> None:
    """Replace this benchmark's section of RESULTS.md, or append it; every other section stays as it is."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    at = text.find("\n" + SECTION)
    if at >= 0:
        end = text.find("\n## ", at + 1)
        tail = text[end:] if end >= 0 else ""
        text = text[: at + 1] + section.rstrip("\n") + "\n" + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text, encoding="utf-8")


def orchestrate(args: argparse.Namespace) -> int:
    if args.nice < 0 and os.geteuid() != 0:
        print("not root: running at the default priority (--nice 0)", flush=True)
        args.nice = 0
    started = time.monotonic()
    ladder = args.ns or (QUICK_LADDER if args.quick else FULL_LADDER)
    ladder = [n for n in ladder if n <= MAX_N]
    command = "python bench/stream.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    print(HEADER, flush=True)
    steps: list[Step] = []
    spent: list[Step] = []
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp:
        logdir = Path(args.logs or tmp)
        logdir.mkdir(parents=True, exist_ok=True)
        if args.repeats > 1 or args.interleave:
            steps += interleaved(ladder, args, logdir)
        else:
            for kind in args.servers:
                steps += search(kind, ladder, args, logdir, spent)
        if "mockglot" in args.servers and args.long_check:
            step = run_step("mockglot", GOAL_N, args, logdir, duration=args.long_check)
            step.long = True
            steps.append(step)
            print(row(step), f"  [{step.seconds:.0f} s]", flush=True)
    elapsed = time.monotonic() - started
    section = report(steps, args, command.strip(), elapsed)
    print()
    print(section)
    if args.write or (not args.quick and not args.no_write):
        write_results(section, ROOT / "bench" / "RESULTS.md")
        print("written to bench/RESULTS.md")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small run: N up to 200, 8 s calls")
    parser.add_argument("--servers", type=lambda s: s.split(","), default=list(SERVERS), help="mockglot,echo")
    parser.add_argument("--ns", type=lambda s: [int(x) for x in s.split(",")], help="the ladder of N to climb")
    parser.add_argument("--duration", type=float, help="seconds of audio per call (default 20, quick 8)")
    parser.add_argument("--clients", type=int, default=2, help="load-generator processes (default 2)")
    parser.add_argument("--output-pace", choices=["realtime", "instant"], default="realtime")
    parser.add_argument(
        "--long-check",
        type=float,
        help=f"after the search, run mockglot at N={GOAL_N} with calls this many seconds long "
        "(default 60, quick 0 = skip)",
    )
    parser.add_argument(
        "--interleave",
        action="store_true",
        help="climb the ladder with both servers in lockstep (each N: echo, mockglot), no bisection or budget",
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help="with --interleave: rounds per N, the order alternating (default 1)"
    )
    parser.add_argument("--refine", type=int, help="bisection steps after the first failure (default 2, quick 0)")
    parser.add_argument(
        "--budget",
        type=float,
        help="seconds of steps (waits for quiet aside) before the search stops (default 570, quick 180)",
    )
    parser.add_argument("--write", action="store_true", help="write bench/RESULTS.md (the default without --quick)")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument(
        "--patience", type=float, default=180.0, help="seconds to wait for a quiet machine before each step"
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=-10,
        help="niceness of the servers and load generators (default -10, which needs root: on a shared machine "
        "it keeps other processes from taking the CPU a step needs; their use is still measured)",
    )
    parser.add_argument("--timeline", action="store_true", help="print each step's p99 lag second by second")
    parser.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="leave CPU placement to the scheduler (default: with 2+ CPUs, servers on the last, load generators "
        "on the others)",
    )
    parser.add_argument("--logs", metavar="DIR", help="keep the servers' logs here")
    parser.add_argument(
        "--mockglot-command", metavar="CMD", help="run mockglot as CMD serve ... (default: python -m mockglot)"
    )
    # internal
    parser.add_argument("--serve-echo", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--kind", choices=SERVERS, help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--sessions", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--result-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_echo is not None:
        return serve_echo(args.serve_echo)
    if args.duration is None:
        args.duration = 8.0 if args.quick else 20.0
    if args.worker:
        return run_worker(args)
    cpus = sorted(os.sched_getaffinity(0)) if args.pin and hasattr(os, "sched_getaffinity") else []
    args.server_cpus = {cpus[-1]} if len(cpus) >= 2 else None
    args.client_cpus = set(cpus[:-1]) if len(cpus) >= 2 else None
    if args.refine is None:
        args.refine = 0 if args.quick else 2
    if args.long_check is None:
        args.long_check = 0.0 if args.quick else 60.0
    if args.budget is None:
        args.budget = 180.0 if args.quick else 570.0
    unknown = set(args.servers) - set(SERVERS)
    if unknown:
        parser.error(f"unknown server {sorted(unknown)}: choose from {', '.join(SERVERS)}")
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
