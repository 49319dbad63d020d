"""The inspector's feed: what happens on the server (sessions, frames, requests, webhook attempts, faults fired)
as numbered events, for `/_mockglot/events` and the inspector UI.

Publishing costs a small struct and a deque append (the payload is built lazily: frames are kept as the text the
journal already holds, requests as their request-journal entry), so a server nobody watches pays next to
nothing. Every event goes into a bounded backlog (`BACKLOG_EVENTS`) so a client that reconnects with
`Last-Event-ID` misses nothing that is still in it. Each subscriber has a bounded queue
(`SUBSCRIBER_QUEUE_EVENTS`): a consumer that falls behind loses the oldest events and is told so (a `lagged`
event), and never slows a stream or a request down. With several workers, a worker's events are relayed to the
others only while one of them has a subscriber (`relay`, `watching`, `receive`; see mockglot/shared/coordinator.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import msgspec

from mockglot.state.auth import redact
from mockglot.state.requests import RequestEntry

BACKLOG_EVENTS = 2048
SUBSCRIBER_QUEUE_EVENTS = 1024
MAX_SUBSCRIBERS = 64
RECEIVED_REMEMBERED = 2 * BACKLOG_EVENTS  # other workers' events known by their number there, against repeats
FEED_FRAME_CHARS = 16 * 1024  # of a frame's text the feed keeps: a full backlog stays under ~32 MiB


@lru_cache(maxsize=1024)
def key_hash(api_key: str) -> str:
    """What the feed keeps of a key for filtering: a hash, never the key."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:24]


@lru_cache(maxsize=1024)
def _shown(api_key: str) -> tuple[str, str]:
    return redact(api_key), key_hash(api_key)


_NO_KEY = (None, None)


class FeedEvent(msgspec.Struct, gc=False):
    """One thing that happened. `data` is JSON-ready, or rendered at encoding time: a frame (the text as sent,
    wrapped), a request (its journal entry)."""

    id: int
    type: str
    at: float
    session_id: str | None
    organization: str | None
    key: str | None  # redacted
    key_hash: str | None
    data: Any
    origin: str | None = None  # the worker it happened on, when another (relayed here)
    origin_id: int = 0  # its number there


@dataclass(frozen=True, slots=True)
class Filter:
    """Which events a subscriber wants: every given criterion must hold."""

    session_id: str | None = None
    organization: str | None = None
    api_key: str | None = None  # a full key (compared by hash) or its redacted form as the inspector shows it
    types: frozenset[str] | None = None  # exact types, or prefixes ending in "." ("session.")

    def matches(self, event: FeedEvent) -> bool:
        if self.session_id is not None and event.session_id != self.session_id:
            return False
        if self.organization is not None and event.organization != self.organization:
            return False
        if self.api_key is not None:
            if "…" in self.api_key:
                if event.key != self.api_key:
                    return False
            elif event.key_hash != key_hash(self.api_key):
                return False
        if self.types is not None and event.type not in self.types:
            return any(t.endswith(".") and event.type.startswith(t) for t in self.types)
        return True


class Subscription:
    def __init__(self, feed: Feed, filter: Filter) -> None:
        self.feed = feed
        self.filter = filter
        self.queue: deque[FeedEvent] = deque()
        self.dropped = 0  # events lost since the client last heard, because it read too slowly
        self.changed = asyncio.Event()

    def offer(self, event: FeedEvent) -> None:
        if not self.filter.matches(event):
            return
        if len(self.queue) >= SUBSCRIBER_QUEUE_EVENTS:
            self.queue.popleft()
            self.dropped += 1
        self.queue.append(event)
        self.changed.set()

    def take(self) -> tuple[list[FeedEvent], int]:
        """What is queued, and how many events were dropped before it (then both start over)."""
        events, dropped = list(self.queue), self.dropped
        self.queue.clear()
        self.dropped = 0
        self.changed.clear()
        return events, dropped

    def close(self) -> None:
        self.feed.unsubscribe(self)


class Feed:
    def __init__(self, clock: Callable[[], float]) -> None:
        self._now = clock
        self._ids = itertools.count(1)
        self.last_id = 0
        self.backlog: deque[FeedEvent] = deque(maxlen=BACKLOG_EVENTS)
        self._subscribers: list[Subscription] = []
        self.relay: Callable[[FeedEvent], None] | None = None  # with several workers, while one watches: tells it
        self.watching: Callable[[], None] | None = None  # with several workers: told of the first subscriber
        self._received: dict[tuple[str, int], None] = {}  # relayed events kept, by origin (in arrival order)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def publish(
        self,
        type_: str,
        session_id: str | None,
        organization: str | None,
        api_key: str | None,
        data: Any,
        at: float | None = None,
    ) -> None:
        """`at`: the server clock's time of what happened, when the caller has just read it (a journaled frame)."""
        self.last_id = last_id = next(self._ids)
        shown, hashed = _NO_KEY if api_key is None else _shown(api_key)
        event = FeedEvent(
            last_id, type_, self._now() if at is None else at, session_id, organization, shown, hashed, data
        )
        self.backlog.append(event)  # `_add`, inline: this runs twice a request
        for subscriber in self._subscribers:
            subscriber.offer(event)
        if self.relay is not None:
            self.relay(event)

    def _add(self, event: FeedEvent) -> None:
        self.backlog.append(event)
        for subscriber in self._subscribers:
            subscriber.offer(event)

    def receive(self, relayed: RelayedEvent, origin: str) -> None:
        """Another worker's event (`relayed`): numbered here, so `Last-Event-ID` works against this worker. One
        told again (a worker sends its backlog to a worker that starts watching) is kept once."""
        seen = (origin, relayed.origin_id)
        if seen in self._received:
            return
        self._received[seen] = None
        if len(self._received) > RECEIVED_REMEMBERED:
            del self._received[next(iter(self._received))]
        self.last_id = next(self._ids)
        self._add(
            FeedEvent(
                self.last_id, relayed.type, relayed.at, relayed.session_id, relayed.organization, relayed.key,
                relayed.key_hash, msgspec.Raw(relayed.data), origin, relayed.origin_id,
            )
        )  # fmt: skip

    def own(self) -> list[FeedEvent]:
        """The events in the backlog that happened here (for a worker that starts watching)."""
        return [event for event in self.backlog if event.origin is None]

    def subscribe(self, filter: Filter, last_id: int | None = None) -> tuple[Subscription, bool]:
        """A subscription, first filled with the backlog after `last_id`; the flag says events after `last_id`
        were already gone from the backlog (the client must resync)."""
        subscription = Subscription(self, filter)
        gap = False
        if last_id is not None:
            if last_id > self.last_id:  # an ID from before this server started: everything is new
                gap, last_id = True, 0
            oldest = self.backlog[0].id if self.backlog else self.last_id + 1
            gap = gap or (last_id < oldest - 1 and last_id < self.last_id)
            for event in self._since(last_id):
                subscription.offer(event)
        self._subscribers.append(subscription)
        if len(self._subscribers) == 1 and self.watching is not None:
            self.watching()
        return subscription, gap

    def unsubscribe(self, subscription: Subscription) -> None:
        if subscription in self._subscribers:
            self._subscribers.remove(subscription)

    def _since(self, last_id: int) -> Iterable[FeedEvent]:
        return (event for event in self.backlog if event.id > last_id)


class RelayedEvent(msgspec.Struct, array_like=True):
    """An event as one worker tells the others (its data JSON-ready)."""

    type: str
    at: float
    session_id: str | None
    organization: str | None
    key: str | None
    key_hash: str | None
    data: bytes  # JSON (a frame's data holds raw JSON, which only JSON can carry as it is)
    origin_id: int  # its number on the worker it happened on

    @classmethod
    def of(cls, event: FeedEvent) -> RelayedEvent:
        data = msgspec.json.encode(_data(event.data))
        return cls(
            event.type, event.at, event.session_id, event.organization, event.key, event.key_hash, data, event.id
        )


def encode(event: FeedEvent) -> bytes:
    """The event as one SSE message."""
    body = msgspec.json.encode(
        {
            "id": event.id,
            "type": event.type,
            "at": round(event.at, 3),
            "session_id": event.session_id,
            "organization": event.organization,
            "api_key": event.key,
            "data": _data(event.data),
        }
    )
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event.id, event.type.encode(), body)


def _data(value: Any) -> Any:
    """What an event says, made JSON-ready when a subscriber reads it."""
    if isinstance(value, Frame):
        return _frame(value)
    if isinstance(value, RequestEntry):
        return _request(value)
    if isinstance(value, SessionState):
        return _session(value)
    return value


def _request(entry: RequestEntry) -> dict[str, Any]:
    """A request event points at its journal entry (publishing copies nothing); this is what it shows."""
    return {
        "request_id": entry.request_id,
        "method": entry.method,
        "path": entry.path,
        "status": entry.status,
        "duration_ms": round(entry.duration_ms, 3),
    }


class Frame(msgspec.Struct, gc=False):
    """A journalled frame, encoded only when a subscriber reads it."""

    index: int
    direction: str
    frame_type: str
    text: str  # cut at FEED_FRAME_CHARS
    length: int  # characters as sent


def _frame(value: Frame) -> dict[str, Any]:
    """A frame the stream parsed, or one the server encoded, is JSON already and goes in as it is (no decoding
    per subscriber); anything else (invalid, binary, injected raw text) or a cut frame goes in as a string."""
    text = value.text
    frame: Any = text
    if value.length == len(text) and not value.frame_type.startswith("("):
        # JSON may have line breaks between tokens, and an SSE data line may not: those are re-encoded.
        frame = msgspec.Raw(text) if "\n" not in text and "\r" not in text else msgspec.json.decode(text)
    cut = value.length > len(text)
    return {
        "index": value.index,
        "direction": value.direction,
        "frame_type": value.frame_type,
        "frame": frame,
        "truncated": cut,
    }


class SessionState(msgspec.Struct, gc=False):
    """A session as it was when an event about it was published, made JSON when a subscriber reads it: a
    struct the collector does not track instead of a dict per event."""

    status: str
    mode: str
    connected: bool
    end_reason: str | None


def session_data(record: Any) -> SessionState:
    return SessionState(record.status, record.request.mode, record.connected, record.end_reason)


def _session(value: SessionState) -> dict[str, Any]:
    return {"status": value.status, "mode": value.mode, "connected": value.connected, "end_reason": value.end_reason}


def lifecycle_listener(feed: Feed) -> Callable[[Any], None]:
    """Lifecycle events (the ones webhooks announce) into the feed."""

    def listen(event: Any) -> None:
        record = event.session
        data: Any
        if event.turn is not None:
            turn = event.turn
            data = {
                "turn": turn.sequence,
                "speaker": turn.speaker,
                "language": turn.language,
                "text": turn.text,
                "translation": turn.translation_text,
            }
        elif event.resource is not None:
            data = {"resource_id": getattr(event.resource, "id", None)}
        else:
            data = session_data(record)
        feed.publish(event.type, record.id, record.owner[0], record.api_key, data)

    return listen
