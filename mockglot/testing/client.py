"""A small Kallglot client for tests and the `mockglot stream` command: REST with httpx, the stream with
`websockets`. It speaks only the public API, so it works against mockglot and any server that speaks it."""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

FRAME_MS = 100
SAMPLE_RATE_HZ = 8000


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

    async def recv(self, timeout: float = 10) -> dict[str, Any]:
        frame = msgspec.json.decode(await asyncio.wait_for(self.ws.recv(), timeout))
        self.received.append(frame)
        return frame

    async def until(self, type_: str, timeout: float = 10) -> dict[str, Any]:
        """Read frames until one of `type_` arrives; returns it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            frame = await self.recv(max(deadline - loop.time(), 0.001))
            if frame["type"] == type_:
                return frame

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


class Client:
    """REST and stream access with one API key."""

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 30) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = httpx.AsyncClient(
            base_url=self.base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=timeout
        )

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()

    async def create_session(self, **body: Any) -> dict[str, Any]:
        body.setdefault("mode", "bidirectional_translation")
        response = await self.http.post("/v1/sessions", json=body)
        response.raise_for_status()
        return response.json()

    async def get_session(self, session_id: str) -> dict[str, Any]:
        response = await self.http.get(f"/v1/sessions/{session_id}")
        response.raise_for_status()
        return response.json()

    async def end_session(self, session_id: str) -> dict[str, Any]:
        response = await self.http.post(f"/v1/sessions/{session_id}/end")
        response.raise_for_status()
        return response.json()

    async def transcript(self, session_id: str) -> dict[str, Any]:
        response = await self.http.get(f"/v1/sessions/{session_id}/transcript")
        response.raise_for_status()
        return response.json()

    async def open_stream(self, session: dict[str, Any], token: str | None = None) -> Stream:
        url = f"{session['stream']['url']}?token={token or session['stream']['token']}"
        return Stream(await connect(url, max_size=None, ping_interval=None))
