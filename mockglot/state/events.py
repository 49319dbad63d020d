"""Lifecycle events: the state announces what happened; webhooks and live streams listen."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from mockglot.state.sessions import SessionRecord, Turn


class Event(msgspec.Struct, gc=False):
    """Made in C (a dataclass's `__init__` is Python), several a REST round trip. Untracked: it lives only while
    it is announced, and nothing it holds points back to it."""

    type: str  # the webhook event type: session.created, session.started, transcript.segment, ...
    session: SessionRecord
    turn: Turn | None = None
    resource: Any = None  # recording.* / analysis.*: the RecordingRecord or AnalysisRecord


Listener = Callable[[Event], None]


class EventBus:
    def __init__(self) -> None:
        self._listeners: tuple[Listener, ...] = ()  # replaced, never changed: a listener may unsubscribe meanwhile

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners = (*self._listeners, listener)
        return lambda: self._unsubscribe(listener)

    def _unsubscribe(self, listener: Listener) -> None:
        listeners = list(self._listeners)
        listeners.remove(listener)
        self._listeners = tuple(listeners)

    def publish(self, event: Event) -> None:
        for listener in self._listeners:
            listener(event)
