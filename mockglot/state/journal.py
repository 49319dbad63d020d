"""The frame journal: every frame of a session's streams, both directions, in order, with a blocking wait.

Bounded: it keeps the most recent `MAX_FRAMES` frames and `MAX_BYTES` of their text, and each frame's first
`MAX_FRAME_CHARS` characters (every valid frame fits whole). The counts stay exact past the caps, and the
journal says how many of the oldest frames it dropped.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Literal

import msgspec

Direction = Literal["in", "out"]
MAX_FRAMES = 10_000
MAX_BYTES = 4 * 1024 * 1024
MAX_FRAME_CHARS = 96 * 1024  # above the largest valid frame (64 KiB of audio as base64, ~87 KiB)


class JournalEntry(msgspec.Struct, frozen=True, gc=False):
    """One frame. Untracked by the garbage collector: a long call journals thousands of these, and tracked
    ones make every full collection (a pause for every stream at once) grow with the length of the calls."""

    index: int
    direction: Direction
    at: float  # server clock
    type: str  # the frame's `type`, or "(binary)" / "(invalid)"
    text: str  # the frame as sent (binary frames as a note of their size); cut at MAX_FRAME_CHARS
    length: int  # the frame's length in characters as sent: more than len(text) when it was cut


class Journal:
    def __init__(self) -> None:
        self.entries: deque[JournalEntry] = deque()
        self.dropped = 0  # the oldest frames forgotten past the caps
        self.bytes = 0  # characters of text kept
        self._next_index = 0
        # Frames by (direction, type), not a Counter (one is made per session): one update per frame, and the
        # other counts are sums over these few keys, made when asked.
        self._counts: dict[tuple[Direction, str], int] = {}
        self._changed: asyncio.Event | None = None

    def append(self, direction: Direction, at: float, type_: str, text: str) -> JournalEntry:
        length = len(text)
        if length > MAX_FRAME_CHARS:
            text = text[:MAX_FRAME_CHARS]
        entries = self.entries
        entry = JournalEntry(self._next_index, direction, at, type_, text, length)
        entries.append(entry)
        self._next_index += 1
        self.bytes += len(text)
        while len(entries) > MAX_FRAMES or self.bytes > MAX_BYTES:
            self.bytes -= len(entries.popleft().text)
            self.dropped += 1
        key = (direction, type_)
        self._counts[key] = self._counts.get(key, 0) + 1
        if self._changed is not None:
            self._changed.set()
            self._changed = None
        return entry

    def count(self, direction: Direction | None = None, type_: str | None = None) -> int:
        if direction is not None and type_ is not None:
            return self._counts.get((direction, type_), 0)
        if direction is None and type_ is None:
            return self._next_index
        return sum(n for (d, t), n in self._counts.items() if direction in (None, d) and type_ in (None, t))

    async def wait_for(
        self, count: int, timeout: float, direction: Direction | None = None, type_: str | None = None
    ) -> bool:
        """Wait until the journal holds `count` matching frames; False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.count(direction, type_) < count:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            if self._changed is None:
                self._changed = asyncio.Event()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return self.count(direction, type_) >= count
        return True
