"""The one clock: every time-based behaviour reads it, so tests can set and advance it."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from datetime import UTC, datetime


class Clock:
    """Wall time plus an offset that tests move.

    Advancing never sleeps: listeners (the sweeper that ends idle sessions, the webhook retrier) are told at
    once, so whatever became due by the jump happens straight away.
    """

    def __init__(self, wall: Callable[[], float] = time.time) -> None:
        self._wall = wall
        self._offset = 0.0
        self._listeners: list[Callable[[], None]] = []

    def now(self) -> float:
        """Unix seconds on the server's clock."""
        return self._wall() + self._offset

    def set(self, unix_seconds: float) -> None:
        self._offset = unix_seconds - self._wall()
        self._notify()

    def advance(self, seconds: float) -> None:
        self._offset += seconds
        self._notify()

    def reset(self) -> None:
        self._offset = 0.0
        self._notify()

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
