"""The frame journal: every frame of a session's streams, both directions, in order, with a blocking wait."""

from __future__ import annotations

import asyncio
from typing import Literal

import msgspec

Direction = Literal["in", "out"]


class JournalEntry(msgspec.Struct, frozen=True, gc=False):
    """One frame. Untracked by the garbage collector: a long call journals thousands of these, and tracked
    ones make every full collection (a pause for every stream at once) grow with the length of the calls."""

    index: int
    direction: Direction
    at: float  # server clock
    type: str  # the frame's `type`, or "(binary)" / "(invalid)"
    text: str  # the frame as sent (binary frames as a note of their size)


class Journal:
    def __init__(self) -> None:
        self.entries: list[JournalEntry] = []
        self._counts: dict[tuple[Direction | None, str | None], int] = {}  # not a Counter: one is made per session
        self._changed: asyncio.Event | None = None

    def append(self, direction: Direction, at: float, type_: str, text: str) -> None:
        self.entries.append(JournalEntry(len(self.entries), direction, at, type_, text))
        for key in ((None, None), (direction, None), (None, type_), (direction, type_)):
            self._counts[key] = self._counts.get(key, 0) + 1
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def count(self, direction: Direction | None = None, type_: str | None = None) -> int:
        return self._counts.get((direction, type_), 0)

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
