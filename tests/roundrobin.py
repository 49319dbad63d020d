"""A load balancer for tests: each HTTP request and each WebSocket goes to the next of several servers in turn,
with no affinity, as the worst-behaved balancer in front of mockglot's workers would do."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import Any

import httpx
import websockets
from starlette.types import Receive, Scope, Send

HOP_BY_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"upgrade", b"host", b"content-length"}


class RoundRobin:
    def __init__(self, backends: list[str]) -> None:
        self.backends = [backend.rstrip("/") for backend in backends]
        self._next = itertools.cycle(range(len(backends)))
        self.sent: list[int] = []  # which backend each request went to, in order
        self._http: httpx.AsyncClient | None = None

    def _pick(self) -> str:
        index = next(self._next)
        self.sent.append(index)
        return self.backends[index]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            if self._http is not None:
                await self._http.aclose()
            await send({"type": "lifespan.shutdown.complete"})
        elif scope["type"] == "http":
            await self._http_request(scope, receive, send)
        else:
            await self._websocket(scope, receive, send)

    async def _http_request(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_keepalive_connections=0))
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        query = scope["query_string"].decode()
        url = self._pick() + scope["path"] + (f"?{query}" if query else "")
        headers = [(n, v) for n, v in scope["headers"] if n not in HOP_BY_HOP]
        upstream = await self._http.request(scope["method"], url, headers=headers, content=body)
        out = [(n, v) for n, v in upstream.headers.raw if n.lower() not in HOP_BY_HOP]
        out.append((b"content-length", b"%d" % len(upstream.content)))
        await send({"type": "http.response.start", "status": upstream.status_code, "headers": out})
        await send({"type": "http.response.body", "body": upstream.content})

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        await receive()  # websocket.connect
        query = scope["query_string"].decode()
        url = "ws" + self._pick().removeprefix("http") + scope["path"] + (f"?{query}" if query else "")
        headers = [(n.decode(), v.decode()) for n, v in scope["headers"] if n in (b"authorization", b"x-api-key")]
        async with websockets.connect(url, additional_headers=headers, max_size=None) as upstream:
            await send({"type": "websocket.accept"})

            async def down() -> None:
                with contextlib.suppress(websockets.ConnectionClosed):
                    async for message in upstream:
                        key = "text" if isinstance(message, str) else "bytes"
                        await send({"type": "websocket.send", key: message})
                code = upstream.close_code or 1000
                with contextlib.suppress(Exception):
                    await send({"type": "websocket.close", "code": code})

            task = asyncio.create_task(down())
            try:
                while True:
                    message: dict[str, Any] = await receive()
                    if message["type"] == "websocket.disconnect":
                        break
                    await upstream.send(message["text"] if message.get("text") is not None else message["bytes"])
            except websockets.ConnectionClosed:
                pass
            finally:
                await upstream.close()
                with contextlib.suppress(Exception):
                    await task
