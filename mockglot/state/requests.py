"""The HTTP request journal: what clients sent to the public API.

Entries keep the request as it came (raw headers and body); credentials are redacted when the journal is read,
so recording costs the request path next to nothing. Bounded: each entry keeps at most `MAX_BODY_BYTES` of body,
`MAX_HEADERS` headers and `MAX_HEADER_BYTES` of each value (an entry that lost anything says `truncated`), and
the journal keeps the newest `MAX_REQUESTS` entries within `MAX_BYTES`, forgetting the oldest first. Entries are
kept per presented key, so forgetting one organization's keys costs only their entries.
"""

from __future__ import annotations

from collections import deque

import msgspec

MAX_REQUESTS = 10_000
MAX_BYTES = 32 * 1024 * 1024
MAX_BODY_BYTES = 16 * 1024
MAX_HEADERS = 64
MAX_HEADER_BYTES = 1024  # per header value
ENTRY_OVERHEAD_BYTES = 256  # what an entry costs besides its headers and body, roughly


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
    truncated: bool = False  # the body, a header value or some headers were cut to the journal's limits


def _bounded(entry: RequestEntry) -> tuple[RequestEntry, int]:
    """The entry within the per-entry limits, and its size in bytes (what `append` does not know at a glance)."""
    headers, body = entry.headers, entry.body
    query = entry.query
    cut = len(headers) > MAX_HEADERS or len(body) > MAX_BODY_BYTES or len(query) > MAX_HEADER_BYTES
    size = ENTRY_OVERHEAD_BYTES + len(body) + len(query)
    for name, value in headers:
        size += len(name) + len(value)
        if len(value) > MAX_HEADER_BYTES or len(name) > MAX_HEADER_BYTES:
            cut = True
    if not cut:
        return entry, size
    headers = tuple((name[:MAX_HEADER_BYTES], value[:MAX_HEADER_BYTES]) for name, value in headers[:MAX_HEADERS])
    body, query = body[:MAX_BODY_BYTES], query[:MAX_HEADER_BYTES]
    bounded = msgspec.structs.replace(entry, headers=headers, body=body, query=query, truncated=True)
    size = ENTRY_OVERHEAD_BYTES + len(body) + len(query) + sum(len(n) + len(v) for n, v in headers)
    return bounded, size


class RequestJournal:
    def __init__(self) -> None:
        self._sequence = 0
        self._bytes = 0
        self._by_key: dict[str | None, deque[tuple[int, int, RequestEntry]]] = {}  # (sequence, size, entry)
        self._order: deque[tuple[int, str | None]] = deque()  # every entry's (sequence, key), oldest first

    def reset(self, api_keys: set[str] | None = None) -> None:
        if api_keys is None:
            self._by_key.clear()
            self._order.clear()
            self._bytes = 0
            return
        for key in api_keys:  # their places in `_order` go stale, and are skipped when they reach the front
            for _, size, _ in self._by_key.pop(key, ()):
                self._bytes -= size

    def append(self, entry: RequestEntry, header_bytes: int | None = None) -> RequestEntry:
        """Keep the entry, cut to the limits; returns what is kept. `header_bytes`: the size of the entry's header
        names and values, when the caller knows it."""
        body, query = entry.body, entry.query
        if (  # headers that small cannot have a value over the limit: as nearly every request is
            header_bytes is not None
            and header_bytes <= MAX_HEADER_BYTES
            and len(entry.headers) <= MAX_HEADERS
            and len(body) <= MAX_BODY_BYTES
            and len(query) <= MAX_HEADER_BYTES
        ):
            size = ENTRY_OVERHEAD_BYTES + len(body) + len(query) + header_bytes
        else:
            entry, size = _bounded(entry)
        self._sequence = sequence = self._sequence + 1
        key = entry.api_key
        by_key = self._by_key
        entries = by_key.get(key)
        if entries is None:
            entries = by_key[key] = deque()
        entries.append((sequence, size, entry))
        order = self._order
        order.append((sequence, key))
        self._bytes += size
        while len(order) > MAX_REQUESTS or self._bytes > MAX_BYTES:  # forget the oldest
            sequence, key = order.popleft()
            entries = by_key.get(key)
            if entries and entries[0][0] == sequence:
                self._bytes -= entries.popleft()[1]
                if not entries:
                    del by_key[key]
        return entry

    def entries(
        self, api_key: str | None = None, limit: int = 100, session_id: str | None = None
    ) -> list[RequestEntry]:
        """The newest `limit` entries, oldest first: of one key, or of every key (and none); of one session."""
        if api_key is not None:
            keyed = [entry for _, _, entry in self._by_key.get(api_key, ())]
            if session_id is not None:
                keyed = [entry for entry in keyed if entry.session_id == session_id]
            return keyed[-limit:]
        positions = {key: {seq: entry for seq, _, entry in entries} for key, entries in self._by_key.items()}
        found: list[RequestEntry] = []
        for sequence, key in reversed(self._order):
            entry = positions.get(key, {}).get(sequence)
            if entry is not None and (session_id is None or entry.session_id == session_id):
                found.append(entry)
                if len(found) >= limit:
                    break
        found.reverse()
        return found
