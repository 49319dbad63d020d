"""A plain WebSocket client for the stream checks, and audio the scripted engine hears as speech."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from mockglot.conformance.runner import Conformance, Failed, expect
from mockglot.testing.client import silence, tone

FRAME_BYTES = 800  # 100 ms of 8 kHz mu-law


def speech() -> bytes:
    """1.2 s of tone, then 0.7 s of silence: one utterance for an energy VAD."""
    return tone(1200) + silence(700)


def audio_frame(speaker: str, sequence: float, mulaw: bytes, **audio: Any) -> dict[str, Any]:
    return {
        "type": "audio.input",
        "sequence": sequence,
        "timestamp_ms": 0,
        "speaker": speaker,
        "audio": {"encoding": "mulaw", "sample_rate_hz": 8000, "payload": base64.b64encode(mulaw).decode(), **audio},
    }


class Socket:
    """One stream: every frame received is kept, in order."""

    def __init__(self, ws: ClientConnection, timeout: float) -> None:
        self.ws = ws
        self.timeout = timeout
        self.frames: list[dict[str, Any]] = []

    async def send(self, frame: Any) -> None:
        await self.ws.send(frame if isinstance(frame, str | bytes) else json.dumps(frame))

    async def recv(self) -> dict[str, Any]:
        try:
            text = await asyncio.wait_for(self.ws.recv(), self.timeout)
        except TimeoutError:
            seen = [f["type"] for f in self.frames]
            raise Failed(f"no frame within {self.timeout:g} s (so far: {seen})") from None
        try:
            frame: dict[str, Any] = json.loads(text)
        except ValueError:
            raise Failed(f"the server sent a frame that is not JSON: {str(text)[:120]!r}") from None
        expect(isinstance(frame, dict) and isinstance(frame.get("type"), str), f"a frame without a type: {text!r}")
        self.frames.append(frame)
        return frame

    async def until(self, type_: str) -> dict[str, Any]:
        while True:
            try:
                frame = await self.recv()
            except ConnectionClosed:
                seen = [f["type"] for f in self.frames]
                raise Failed(f"the stream closed ({self.close_code}) before a {type_} frame; got {seen}") from None
            if frame["type"] == type_:
                return frame

    async def drain(self) -> list[dict[str, Any]]:
        """Read until the server closes; every frame read."""
        start = len(self.frames)
        try:
            while True:
                await self.recv()
        except ConnectionClosed:
            return self.frames[start:]

    async def answered_ping(self) -> None:
        """The stream is still open and answering."""
        await self.send({"type": "ping"})
        await self.until("pong")

    @property
    def close_code(self) -> int | None:
        return self.ws.close_code

    async def close(self) -> None:
        await self.ws.close()


async def open_socket(ctx: Conformance, session: dict[str, Any], token: str | None = "") -> Socket:
    """Connect to the session's stream.url; token "" means the session's own, None means none."""
    url = session["stream"]["url"]
    if token is not None:
        url += f"?token={token or session['stream']['token']}"
    ws = await connect(url, max_size=None, max_queue=None, ping_interval=None, open_timeout=ctx.timeout)
    return Socket(ws, ctx.timeout)


async def connect_refused(
    ctx: Conformance, session: dict[str, Any], token: str | None, close_code: int, codes: set[str]
) -> None:
    """A refused connect: one `session.error` with one of `codes`, then the close code of the table."""
    socket = await open_socket(ctx, session, token)
    frames = await socket.drain()
    expect(frames, f"no session.error before the close ({socket.close_code})")
    error = frames[0]
    expect(error["type"] == "session.error", f"the first frame is {error['type']}, expected session.error")
    code = (error.get("error") or {}).get("code")
    expect(code in codes, f"session.error code {code!r}, expected {'/'.join(sorted(codes))}")
    expect(socket.close_code == close_code, f"closed with {socket.close_code}, expected {close_code}")
