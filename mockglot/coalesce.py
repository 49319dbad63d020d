"""Socket writes gathered per event-loop turn, the way Redis writes its replies just before it sleeps.

uvicorn writes each response as two `transport.write` calls (head, then body), and each is a `send` system call
that, over loopback, may wake a client sleeping on the other CPU: a cross-CPU wake-up, which a virtual machine
makes dear. Held until the loop's current turn has run, what every request handled in that turn wrote leaves
together at the start of the next turn, before any new input is read: one write a response, and one wake-up for
a client that waits on several connections. A connection that has gathered `FLUSH_BYTES` writes at once, so a
large body still meets the real transport's flow control (`pause_writing` at its high-water mark) as before.
Closing, or `write_eof`, writes what is waiting first; `abort` drops it, as aborting does.
"""

from __future__ import annotations

import asyncio
from typing import Any

FLUSH_BYTES = 64 * 1024


class TurnFlusher:
    """The connections of one server with writes waiting; flushed once per turn of the server's event loop."""

    def __init__(self) -> None:
        self._waiting: list[CoalescingTransport] = []

    def wait(self, transport: CoalescingTransport) -> None:
        if not self._waiting:
            asyncio.get_running_loop().call_soon(self._flush)
        self._waiting.append(transport)

    def _flush(self) -> None:
        waiting, self._waiting = self._waiting, []
        for transport in waiting:
            transport.flush()


class CoalescingTransport(asyncio.Transport):
    """A connection's transport whose writes wait for the end of the loop's turn (see the module)."""

    def __init__(self, transport: asyncio.Transport, flusher: TurnFlusher) -> None:
        super().__init__()
        self._transport = transport
        self._flusher = flusher
        self._chunks: list[bytes] = []
        self._size = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._chunks:
            self._flusher.wait(self)
        self._chunks.append(bytes(data) if not isinstance(data, bytes) else data)
        self._size += len(data)
        if self._size >= FLUSH_BYTES:
            self.flush()

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def flush(self) -> None:
        """Write what is waiting now (the flusher calls it once a turn)."""
        chunks = self._chunks
        if not chunks:
            return
        self._chunks = []
        self._size = 0
        if not self._transport.is_closing():
            self._transport.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._chunks = []
        self._size = 0
        self._transport.abort()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + self._size

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)
