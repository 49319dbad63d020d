"""The HTTP request journal: what clients sent to the public API.

Entries keep the request as it came (raw headers and body); credentials are redacted when the journal is read,
so recording costs the request path next to nothing.
"""

from __future__ import annotations

from collections import deque

import msgspec

MAX_REQUESTS = 10_000
MAX_BODY_BYTES = 64 * 1024


class RequestEntry(msgspec.Struct, gc=False):
    """Untracked by the garbage collector (the headers are a tuple of tuples of bytes, which holds no cycle): the
    journal keeps thousands, and tracked ones would make every full collection longer."""

    request_id: str
    at: float
    method: str
    path: str
    query: bytes
    status: int
    api_key: str | None  # as presented; only ever shown redacted
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    duration_ms: float
    session_id: str | None = None  # the session in its path, or the one it created


class RequestJournal:
    def __init__(self) -> None:
        self._entries: deque[RequestEntry] = deque(maxlen=MAX_REQUESTS)

    def reset(self, api_keys: set[str] | None = None) -> None:
        if api_keys is None:
            self._entries.clear()
        else:
            kept = [e for e in self._entries if e.api_key not in api_keys]
            self._entries = deque(kept, maxlen=MAX_REQUESTS)

    def append(self, entry: RequestEntry) -> None:
        self._entries.append(entry)

    def entries(
        self, api_key: str | None = None, limit: int = 100, session_id: str | None = None
    ) -> list[RequestEntry]:
        matching = [
            e
            for e in self._entries
            if (api_key is None or e.api_key == api_key) and (session_id is None or e.session_id == session_id)
        ]
        return matching[-limit:]
