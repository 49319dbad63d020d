"""The HTTP request journal: what clients sent to the public API, with credentials redacted."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

MAX_REQUESTS = 10_000
MAX_BODY_CHARS = 64 * 1024


@dataclass(frozen=True, slots=True)
class RequestEntry:
    request_id: str
    at: float
    method: str
    path: str
    query: str
    status: int
    api_key: str | None  # redacted
    headers: dict[str, str]
    body: str
    duration_ms: float


class RequestJournal:
    def __init__(self) -> None:
        self._entries: deque[RequestEntry] = deque(maxlen=MAX_REQUESTS)

    def reset(self, redacted_keys: set[str] | None = None) -> None:
        if redacted_keys is None:
            self._entries.clear()
        else:
            kept = [e for e in self._entries if e.api_key not in redacted_keys]
            self._entries = deque(kept, maxlen=MAX_REQUESTS)

    def append(self, entry: RequestEntry) -> None:
        self._entries.append(entry)

    def entries(self, redacted_key: str | None = None, limit: int = 100) -> list[RequestEntry]:
        matching = [e for e in self._entries if redacted_key is None or e.api_key == redacted_key]
        return matching[-limit:]
