"""A local webhook receiver for the conformance run: records every request, answers 204 (h11 parses HTTP)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import h11

from mockglot.conformance.runner import Failed

MAX_REQUEST_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


UNREACHED = (
    "none did: can the server reach this machine at that address? A server in a container or on another machine "
    "needs --receiver-host with this machine's address as the server sees it (e.g. the container network's gateway)"
)


class Receiver:
    """`async with Receiver(host) as r:` listens on a free port of `host`; `r.url` is what to register."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.deliveries: list[Delivery] = []
        self._arrived = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://{self.host}:{port}/webhooks"

    async def __aenter__(self) -> Receiver:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:  # the server's keep-alive connections
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def wait(self, count: int, timeout: float) -> list[Delivery]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.deliveries) < count:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), max(deadline - loop.time(), 0.001))
            except TimeoutError:
                hint = "" if self.deliveries else f"; {UNREACHED}"
                raise Failed(f"{len(self.deliveries)} of {count} webhook deliveries arrived within {timeout:g} s "
                             f"at {self.url}{hint}") from None  # fmt: skip
        return self.deliveries[:count]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except asyncio.CancelledError:
            pass
        finally:
            self._tasks.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_BYTES)
        request: h11.Request | None = None
        body = bytearray()
        try:
            while True:
                event = connection.next_event()
                if event is h11.NEED_DATA:
                    data = await reader.read(65536)
                    connection.receive_data(data)
                    if not data:
                        return
                elif isinstance(event, h11.Request):
                    request, body = event, bytearray()
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage) and request is not None:
                    headers = {k.decode().lower(): v.decode("latin-1") for k, v in request.headers}
                    self.deliveries.append(Delivery(request.target.decode(), headers, bytes(body)))
                    self._arrived.set()
                    reply = connection.send(h11.Response(status_code=204, headers=[]))
                    writer.write(reply + connection.send(h11.EndOfMessage()))
                    await writer.drain()
                    connection.start_next_cycle()
                else:  # ConnectionClosed, or a protocol error
                    return
        except (h11.RemoteProtocolError, ConnectionError):
            return
        finally:
            writer.close()
