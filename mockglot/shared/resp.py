"""The held path's own Redis connection: the scripts that take the lock, save a request's changes and catch up.

Every request that changes anything makes one of these calls, and through redis-py (its connection pool, retry
wrapper, timeouts and stream reader) each cost about three times the CPU of the call written here, which is an
`asyncio.Protocol` with hiredis packing commands and parsing replies (bench/RESULTS.md, "Shared state on Redis").
redis-py still does everything else (pub/sub, heartbeats, forwarding) and says where and how to connect: host or
socket, TLS, credentials and database come from its reading of the URL. The coordinator's local lock makes the
calls one at a time; a reply is matched to its call in order all the same.

A call on a connection that is gone (Redis restarted) reconnects first; a call whose connection breaks or that
gets no answer in time fails (the coordinator answers 503 and reloads), and the next call reconnects.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
from typing import TYPE_CHECKING, Any, cast

import hiredis

if TYPE_CHECKING:
    import redis.asyncio


class Script:
    """A Lua script, called by its SHA1 and loaded when Redis does not know it (new, or restarted)."""

    def __init__(self, source: str) -> None:
        self.source = source.encode()
        self.sha = hashlib.sha1(self.source).hexdigest().encode()  # Redis names scripts so


class Call:
    """A script with its keys: every call sends the same command head, only the arguments vary."""

    def __init__(self, script: Script, keys: list[str]) -> None:
        self.script = script
        self.head: tuple[bytes | str | int, ...] = (b"EVALSHA", script.sha, len(keys), *keys)


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # (uvloop's are not asyncio's subclasses)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            waiter = self.waiting.popleft()
            if not waiter.done():
                waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        while self.waiting:
            waiter = self.waiting.popleft()
            if not waiter.done():
                waiter.set_exception(ConnectionError(f"connection to Redis lost ({exc or 'closed'})"))


class Connection:
    """One connection to the Redis that `client` (redis-py) is configured for."""

    def __init__(self, client: redis.asyncio.Redis, timeout: float) -> None:
        self.client = client
        self.timeout = timeout
        self._protocol: _Protocol | None = None
        self._connecting = asyncio.Lock()

    @property
    def connected(self) -> bool:
        """Whether the connection made last is still open (a Redis restart closes it)."""
        return self._protocol is not None and not self._protocol.lost

    async def evalsha(self, call: Call, args: list[bytes | str | int]) -> Any:
        command = hiredis.pack_command((*call.head, *args))  # type: ignore[arg-type]  # (its stub: a 1-tuple)
        reply = await self._send(command)
        if isinstance(reply, hiredis.ReplyError) and str(reply).startswith("NOSCRIPT"):  # it did not run
            await self.call(b"SCRIPT", b"LOAD", call.script.source)
            reply = await self._send(command)
        if isinstance(reply, hiredis.ReplyError):
            raise reply
        return reply

    async def call(self, *args: bytes | str | int) -> Any:
        """The reply (an error reply as a `hiredis.ReplyError` value), or ConnectionError or TimeoutError."""
        return await self._send(hiredis.pack_command(args))  # type: ignore[arg-type]  # (its stub: a 1-tuple)

    async def _send(self, command: bytes) -> Any:
        protocol = self._protocol
        if protocol is None or protocol.lost:
            protocol = await self._connect()
        assert protocol.transport is not None
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Any] = loop.create_future()
        protocol.waiting.append(waiter)
        protocol.transport.write(command)
        timer = loop.call_later(self.timeout, self._timed_out, protocol, waiter)
        try:
            return await waiter
        finally:
            timer.cancel()

    def _timed_out(self, protocol: _Protocol, waiter: asyncio.Future[Any]) -> None:
        """No answer in time: the connection's replies can no longer be matched to calls; drop it."""
        if not waiter.done():
            waiter.set_exception(TimeoutError(f"Redis did not answer in {self.timeout} s"))
        if protocol.transport is not None:
            protocol.transport.abort()

    async def _connect(self) -> _Protocol:
        async with self._connecting:
            if self._protocol is not None and not self._protocol.lost:
                return self._protocol
            # redis-py's reading of the URL (and of the client's settings), not connected
            where: Any = self.client.connection_pool.make_connection()  # type: ignore[no-untyped-call]
            loop = asyncio.get_running_loop()
            async with asyncio.timeout(self.timeout):
                path = getattr(where, "path", None)
                if path:
                    _, protocol = await loop.create_unix_connection(_Protocol, path)
                else:
                    tls = getattr(where, "ssl_context", None)
                    _, protocol = await loop.create_connection(
                        _Protocol,
                        where.host,
                        where.port,
                        ssl=tls.get() if tls is not None else None,
                    )
                self._protocol = protocol
                if where.password:
                    login = (where.username, where.password) if where.username else (where.password,)
                    await self._checked(b"AUTH", *login)
                if where.db:
                    await self._checked(b"SELECT", where.db)
            return protocol

    async def _checked(self, command: bytes, *args: bytes | str | int) -> None:
        reply = await self.call(command, *args)
        if isinstance(reply, hiredis.ReplyError):
            self.close()
            raise ConnectionError(f"Redis refused {command.decode()}: {reply}")

    def close(self) -> None:
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()
        self._protocol = None
