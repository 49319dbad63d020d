"""Per-key request rate limits in fixed one-minute windows of the server clock."""

from __future__ import annotations

import math
from dataclasses import dataclass

from mockglot.errors import ApiError

NOMINAL_LIMIT = 1000  # reported in the headers when no limit is configured
WINDOW_SECONDS = 60


@dataclass(slots=True)  # not frozen: frozen init is slow, and this is made per request or frame
class RateStatus:
    limit: int
    remaining: int
    reset: int  # unix seconds at which the window ends


class RateLimiter:
    def __init__(self, default_limit: int | None = None) -> None:
        self.default_limit = default_limit
        self._windows: dict[str, tuple[int, int]] = {}  # key -> (window index, requests in it)
        self._window = 0  # the window the counts are for: a new one forgets every count (bounded by the keys
        # that made requests within one minute)

    def reset(self, keys: set[str] | None = None) -> None:
        if keys is None:
            self._windows.clear()
        else:
            for key in keys:
                self._windows.pop(key, None)

    def hit(self, key: str, key_limit: int | None, now: float) -> RateStatus:
        """Count one request; refuse it with 429 when a configured limit is exceeded."""
        limit = key_limit if key_limit is not None else self.default_limit
        window = int(now // WINDOW_SECONDS)
        if window != self._window:
            self._windows.clear()
            self._window = window
        current, count = self._windows.get(key, (window, 0))
        if current != window:
            count = 0
        count += 1
        self._windows[key] = (window, count)
        reset = (window + 1) * WINDOW_SECONDS
        shown = limit if limit is not None else NOMINAL_LIMIT
        status = RateStatus(limit=shown, remaining=max(shown - count, 0), reset=reset)
        if limit is not None and count > limit:
            retry_after = max(math.ceil(reset - now), 1)
            raise RateLimited(status, retry_after)
        return status


class RateLimited(ApiError):
    def __init__(self, status: RateStatus, retry_after: int) -> None:
        super().__init__(
            "rate_limit_exceeded",
            f"Too many requests: this key may make {status.limit} requests a minute. Retry after {retry_after} s.",
            retry_after=retry_after,
        )
        self.rate = status
