"""The one clock: every time-based behaviour reads it, so tests can set and advance it."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from datetime import UTC, datetime

import msgspec

from mockglot.state.replica import DocTracker, SharedDocs

EARLIEST = 946_684_800.0  # 2000-01-01T00:00:00Z: the server clock never goes before this...
LATEST = 4_102_444_800.0  # 2100-01-01T00:00:00Z: ...nor past this, so every timestamp and ID stays representable


class Clock(SharedDocs):
    """Wall time plus an offset that tests move.

    Advancing never sleeps: listeners (the sweeper that ends idle sessions, the webhook retrier) are told at
    once, so whatever became due by the jump happens straight away.
    """

    def __init__(self, wall: Callable[[], float] = time.time) -> None:
        self._wall = wall
        self._offset = 0.0
        self._listeners: list[Callable[[], None]] = []
        self.tracker: DocTracker | None = None  # shared between workers: one document, `offset`

    # --- shared between workers (see state/replica.py) ---------------------------------------------------

    name = "clock"

    def share(self) -> None:
        self.tracker = DocTracker(self._encode)

    def _encode(self, doc: str) -> bytes | None:
        return msgspec.msgpack.encode(self._offset) if doc == "offset" else None

    def load(self, doc: str, data: bytes | None) -> None:
        """Another worker moved the clock: what became due happens here too, as after a local move."""
        if self.tracker is not None:
            self.tracker.loaded(doc, data)
        if doc == "offset":
            self._offset = 0.0 if data is None else msgspec.msgpack.decode(data, type=float)
            self._notify()

    def _changed(self) -> None:
        if self.tracker is not None:
            self.tracker.touch("offset")
        self._notify()

    def now(self) -> float:
        """Unix seconds on the server's clock."""
        return self._wall() + self._offset

    def set(self, unix_seconds: float) -> None:
        """Raises ValueError (and changes nothing) for a time outside EARLIEST..LATEST."""
        self._check(unix_seconds)
        self._offset = unix_seconds - self._wall()
        self._changed()

    def advance(self, seconds: float) -> None:
        """Raises ValueError (and changes nothing) when the clock would leave EARLIEST..LATEST."""
        self._check(self.now() + seconds)
        self._offset += seconds
        self._changed()

    @staticmethod
    def _check(unix_seconds: float) -> None:
        if not EARLIEST <= unix_seconds <= LATEST:  # False for NaN too
            raise ValueError(
                f"the server clock stays between {isoformat(EARLIEST)} and {isoformat(LATEST)}; "
                f"{unix_seconds!r} is outside"
            )

    def reset(self) -> None:
        self._offset = 0.0
        self._changed()

    @property
    def offset(self) -> float:
        return self._offset

    def on_change(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def _notify(self) -> None:
        for listener in self._listeners:
            listener()


@functools.lru_cache(maxsize=1024)
def _iso_second(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def isoformat(unix_seconds: float) -> str:
    """The API's timestamp form: ISO-8601 UTC, second precision, with a Z."""
    return _iso_second(int(unix_seconds))
