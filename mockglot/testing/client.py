"""A small Kallglot client for tests and the `mockglot stream` command: REST with httpx, the stream with
`websockets`. It speaks only the public API, so it works against mockglot and any server that speaks it.

`Client` is async (REST and the stream); `SyncClient` is its blocking REST half for sync tests. Both raise
`KallglotError` (an `httpx.HTTPStatusError` carrying the error envelope's code, message and param) on 4xx/5xx.
`tone`, `silence` and `utterance` make mu-law audio that the scripted engine hears as speech.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import math
import socket
import ssl
import struct
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from mockglot.speech.codec import pcm_to_mulaw
from mockglot.wire import MALFORMED

FRAME_MS = 100
SAMPLE_RATE_HZ = 8000
DEFAULT_MODE = "bidirectional_translation"


def tone(ms: int, hz: float = 440.0, amplitude: int = 8000) -> bytes:
    """A sine burst as 8 kHz mu-law: loud enough for the energy VAD to call it speech."""
    samples = SAMPLE_RATE_HZ * ms // 1000
    pcm = struct.pack(
        f"<{samples}h", *(int(amplitude * math.sin(2 * math.pi * hz * i / SAMPLE_RATE_HZ)) for i in range(samples))
    )
    return pcm_to_mulaw(pcm)


def silence(ms: int) -> bytes:
    return b"\xff" * (SAMPLE_RATE_HZ * ms // 1000)


def utterance(speech_ms: int = 1200, pause_ms: int = 700) -> bytes:
    """Speech, then enough silence to end the utterance (the VAD waits 500 ms): one scripted turn."""
    return tone(speech_ms) + silence(pause_ms)


class KallglotError(httpx.HTTPStatusError):
    """A 4xx/5xx from the API, with the envelope's `code`, `message` and `param` (None when not an envelope)."""

    def __init__(self, response: httpx.Response) -> None:
        try:
            error = response.json().get("error") or {}
        except (ValueError, AttributeError):
            error = {}
        self.status = response.status_code
        self.code: str | None = error.get("code")
        self.param: str | None = error.get("param")
        self.error_message: str = error.get("message") or response.text[:200]
        where = f"{response.request.method} {response.request.url.path}"
        param = f" (param {self.param})" if self.param else ""
        super().__init__(
            f"{where} -> {self.status} {self.code or ''}{param}: {self.error_message}",
            request=response.request,
            response=response,
        )


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One certificate store per process: httpx loads it anew for every client (20-55 ms), even for plain HTTP."""
    return httpx.create_ssl_context()


NO_DELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]  # a request's header and body writes go out at once


class SharedTransport(httpx.BaseTransport):
    """One connection pool that clients come and go on: closing a client leaves the pool (and its keep-alive
    connections) to the next one. `close_pool()` closes it for good."""

    def __init__(self) -> None:
        self._pool = httpx.HTTPTransport(verify=tls_context(), socket_options=NO_DELAY)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self._pool.handle_request(request)

    def close(self) -> None:
        """A client closing: the pool stays."""

    def close_pool(self) -> None:
        self._pool.close()


def idempotency_key() -> dict[str, str]:
    """A create carries a fresh Idempotency-Key, as the contract advises: a retried create makes no second session."""
    return {"Idempotency-Key": f"mockglot-{uuid.uuid4()}"}


def bearer(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


def checked(response: httpx.Response) -> dict[str, Any]:
    """The decoded JSON object of a 2xx response; `KallglotError` otherwise."""
    if response.is_error:
        raise KallglotError(response)
    body: dict[str, Any] = response.json()
    return body


def chunks(mulaw: bytes, frame_ms: int = FRAME_MS) -> list[bytes]:
    size = SAMPLE_RATE_HZ * frame_ms // 1000
    return [mulaw[i : i + size] for i in range(0, len(mulaw), size)]


def audio_frame(speaker: str, sequence: int, mulaw: bytes, timestamp_ms: int = 0) -> str:
    return msgspec.json.encode(
        {
            "type": "audio.input",
            "sequence": sequence,
            "timestamp_ms": timestamp_ms,
            "speaker": speaker,
            "audio": {
                "encoding": "mulaw",
                "sample_rate_hz": SAMPLE_RATE_HZ,
                "payload": base64.b64encode(mulaw).decode(),
            },
        }
    ).decode()


@dataclass
class Stream:
    """One open stream: send audio, read frames, remember everything received."""

    ws: ClientConnection
    received: list[dict[str, Any]] = field(default_factory=list)
    sequences: dict[str, int] = field(default_factory=dict)
    sent_ms: dict[str, int] = field(default_factory=dict)

    async def send_json(self, value: Any) -> None:
        await self.ws.send(value if isinstance(value, str) else msgspec.json.encode(value).decode())

    async def send_audio(self, speaker: str, mulaw: bytes, *, frame_ms: int = FRAME_MS, realtime: bool = False) -> None:
        """Stream `mulaw` as `audio.input` frames, at real time or as fast as the socket takes them."""
        loop = asyncio.get_running_loop()
        due = loop.time()
        for chunk in chunks(mulaw, frame_ms):
            sequence = self.sequences.get(speaker, 0) + 1
            self.sequences[speaker] = sequence
            timestamp = self.sent_ms.get(speaker, 0)
            self.sent_ms[speaker] = timestamp + len(chunk) * 1000 // SAMPLE_RATE_HZ
            await self.ws.send(audio_frame(speaker, sequence, chunk, timestamp))
            if realtime:
                due += len(chunk) / SAMPLE_RATE_HZ
                await asyncio.sleep(max(due - loop.time(), 0))

    async def recv(self, timeout: float | None = 10) -> dict[str, Any]:
        """The next frame (None: wait as long as it takes); `ConnectionClosed` once the server has closed, and
        a `TimeoutError` that says what did arrive when nothing comes in time."""
        try:
            message = await asyncio.wait_for(self.ws.recv(), timeout)
        except TimeoutError:
            raise TimeoutError(f"no frame from the server within {timeout:g} s; {self._history()}") from None
        frame = _decoded(message)
        self.received.append(frame)
        return frame

    async def until(self, type_: str, timeout: float = 10) -> dict[str, Any]:
        """Read frames until one of `type_` arrives; returns it. A `TimeoutError` names what came instead."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        start = len(self.received)
        while True:
            try:
                frame = await self.recv(max(deadline - loop.time(), 0.001))
            except TimeoutError:
                raise TimeoutError(f"no {type_} within {timeout:g} s; {self._history(start)}") from None
            if frame["type"] == type_:
                return frame

    def _history(self, start: int = 0) -> str:
        """The types of the frames received (since `start`), the last 20, for a timeout's message."""
        types = [frame.get("type", "?") for frame in self.received[start:]]
        shown = ", ".join(map(str, types[-20:])) or "nothing"
        return f"received {len(types)} frame(s): {'..., ' if len(types) > 20 else ''}{shown}"

    async def drain(self, timeout: float = 10) -> list[dict[str, Any]]:
        """Read until the server closes the socket; returns every frame read."""
        frames = []
        try:
            while True:
                frames.append(await self.recv(timeout))
        except ConnectionClosed:
            return frames

    @property
    def close_code(self) -> int | None:
        return self.ws.close_code

    async def end(self, timeout: float = 30) -> list[dict[str, Any]]:
        """`session.end`, then every frame up to the close."""
        await self.send_json({"type": "session.end"})
        return await self.drain(timeout)


def _decoded(message: str | bytes) -> dict[str, Any]:
    """A frame as a dict; one that is not a JSON object (a `malformed` fault sends such) is `{"type": MALFORMED,
    "raw": its text}`, so reading goes on and a test can assert on it."""
    try:
        frame = msgspec.json.decode(message)
    except (msgspec.DecodeError, RecursionError):
        frame = None
    if isinstance(frame, dict):
        return frame
    return {"type": MALFORMED, "raw": message if isinstance(message, str) else message.decode("utf-8", "replace")}


class Client:
    """REST and stream access with one API key."""

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 30) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = httpx.AsyncClient(
            base_url=self.base_url, headers=bearer(api_key), timeout=timeout, verify=tls_context()
        )

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()

    async def create_session(self, **body: Any) -> dict[str, Any]:
        body.setdefault("mode", DEFAULT_MODE)
        return checked(await self.http.post("/v1/sessions", json=body, headers=idempotency_key()))

    async def get_session(self, session_id: str) -> dict[str, Any]:
        return checked(await self.http.get(f"/v1/sessions/{session_id}"))

    async def end_session(self, session_id: str) -> dict[str, Any]:
        return checked(await self.http.post(f"/v1/sessions/{session_id}/end"))

    async def transcript(self, session_id: str) -> dict[str, Any]:
        return checked(await self.http.get(f"/v1/sessions/{session_id}/transcript"))

    async def open_stream(self, session: dict[str, Any], token: str | None = None) -> Stream:
        url = f"{session['stream']['url']}?token={token or session['stream']['token']}"
        # An unbounded queue: with a bounded one, a burst of audio.output frames the caller has not read yet
        # stops the socket reading, and a close() then waits for a close frame stuck behind them.
        return Stream(await connect(url, max_size=None, max_queue=None, ping_interval=None))


class SyncClient:
    """The REST half of `Client`, blocking: for sync tests (the stream needs `Client`)."""

    def __init__(
        self, base_url: str, api_key: str, *, timeout: float = 30, transport: httpx.BaseTransport | None = None
    ) -> None:
        """`transport`: a pool to share (the pytest plugin's `SharedTransport`); by default a pool of its own."""
        self.base_url = base_url.rstrip("/")
        if transport is None:
            transport = httpx.HTTPTransport(verify=tls_context(), socket_options=NO_DELAY)
        self.http = httpx.Client(base_url=self.base_url, headers=bearer(api_key), timeout=timeout, transport=transport)

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def create_session(self, **body: Any) -> dict[str, Any]:
        body.setdefault("mode", DEFAULT_MODE)
        return checked(self.http.post("/v1/sessions", json=body, headers=idempotency_key()))

    def get_session(self, session_id: str) -> dict[str, Any]:
        return checked(self.http.get(f"/v1/sessions/{session_id}"))

    def end_session(self, session_id: str) -> dict[str, Any]:
        return checked(self.http.post(f"/v1/sessions/{session_id}/end"))

    def transcript(self, session_id: str) -> dict[str, Any]:
        return checked(self.http.get(f"/v1/sessions/{session_id}/transcript"))
