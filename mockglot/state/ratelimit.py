"""Per-key request rate limits in fixed one-minute windows of the server clock."""

from __future__ import annotations

import math
from dataclasses import dataclass

import msgspec

from mockglot.errors import ApiError
from mockglot.state.replica import DocTracker, SharedDocs

NOMINAL_LIMIT = 1000  # reported in the headers when no limit is configured
WINDOW_SECONDS = 60


@dataclass(slots=True)  # not frozen: frozen init is slow, and this is made per request or frame
class RateStatus:
    limit: int
    remaining: int
    reset: int  # unix seconds at which the window ends


class RateLimiter(SharedDocs):
    def __init__(self, default_limit: int | None = None) -> None:
        self.default_limit = default_limit
        self._windows: dict[str, tuple[int, int]] = {}  # key -> (window index, requests in it)
        self._window = 0  # the newest window seen: a new one forgets the counts of older ones (bounded by the
        # keys that made requests within one minute). Per key, not all at once: a count another worker made in
        # the current window (`load`) must survive this worker's own move to it.
        self.tracker: DocTracker | None = None  # shared between workers: one document per API key

    # --- shared between workers (see state/replica.py) ---------------------------------------------------

    name = "ratelimit"
    deferrable = True  # a request that changes nothing else (a GET) need not wait for Redis to count it

    def share(self) -> None:
        self.tracker = DocTracker(self._encode)

    def _encode(self, key: str) -> bytes | None:
        entry = self._windows.get(key)
        return None if entry is None else _ENCODER.encode(entry)

    def load(self, key: str, data: bytes | None) -> None:
        if self.tracker is not None:
            self.tracker.loaded(key, data)
        if data is None:
            self._windows.pop(key, None)
        else:
            self._windows[key] = _DECODER.decode(data)

    def _touch_all(self) -> None:
        if self.tracker is not None:
            self.tracker.touched.update(self._windows)
            self.tracker.touched.update(self.tracker.known())

    def reset(self, keys: set[str] | None = None) -> None:
        if keys is None:
            self._touch_all()
            self._windows.clear()
        else:
            for key in keys:
                if self.tracker is not None:
                    self.tracker.touch(key)
                self._windows.pop(key, None)

    def hit(self, key: str, key_limit: int | None, now: float) -> RateStatus:
        """Count one request; refuse it with 429 when a configured limit is exceeded."""
        limit = key_limit if key_limit is not None else self.default_limit
        window = int(now // WINDOW_SECONDS)
        if window != self._window:
            self._new_window(window)
        if self.tracker is not None:
            self.tracker.touch(key)
        entry = self._windows.get(key)
        count = entry[1] + 1 if entry is not None and entry[0] == window else 1
        self._windows[key] = (window, count)
        reset = (window + 1) * WINDOW_SECONDS
        shown = limit if limit is not None else NOMINAL_LIMIT
        status = RateStatus(shown, shown - count if count < shown else 0, reset)  # (positional: the fastest init)
        if limit is not None and count > limit:
            retry_after = max(math.ceil(reset - now), 1)
            raise RateLimited(status, retry_after)
        return status

    def _new_window(self, window: int) -> None:
        """Forget the counts of windows before `window` (a clock set back: of windows other than it)."""
        if window > self._window:
            stale = [key for key, (current, _) in self._windows.items() if current < window]
        else:
            stale = [key for key, (current, _) in self._windows.items() if current != window]
        for key in stale:
            del self._windows[key]
            if self.tracker is not None:
                self.tracker.touch(key)
        self._window = window


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(tuple[int, int])


class RateLimited(ApiError):
    def __init__(self, status: RateStatus, retry_after: int) -> None:
        super().__init__(
            "rate_limit_exceeded",
            f"Too many requests: this key may make {status.limit} requests a minute. Retry after {retry_after} s.",
            retry_after=retry_after,
        )
        self.rate = status
