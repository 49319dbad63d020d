"""The telephony leg of a routed session: `session.provider.connected` / `session.provider.disconnected`.

[emulator] A session with `routing` connects its provider leg when `POST /v1/sessions/{id}/dial` places the
outbound call, or, for a call that was not dialed, when its first audio arrives (the call's media flows
through the provider). The leg disconnects when the session ends. Each leg connects at most once, and every
`connected` is followed by exactly one `disconnected`; a session without routing has no leg.
"""

from __future__ import annotations

from mockglot.state.events import Event, EventBus
from mockglot.state.sessions import SessionRecord


class ProviderLegs:
    def __init__(self, events: EventBus) -> None:
        self.events = events
        self._connected: dict[str, str] = {}  # session id -> organization

    def reset(self, organization: str | None = None) -> None:
        if organization is None:
            self._connected.clear()
        else:
            self._connected = {k: v for k, v in self._connected.items() if v != organization}

    def connected(self, session: SessionRecord) -> bool:
        return session.id in self._connected

    def connect(self, session: SessionRecord) -> bool:
        """Connect the session's leg; False if it was connected already (or the session has no routing)."""
        if session.provider is None or session.id in self._connected or session.status == "ended":
            return False
        self._connected[session.id] = session.owner[0]
        self.events.publish(Event("session.provider.connected", session))
        return True

    def session_started(self, session: SessionRecord) -> None:
        """First audio: the call's media flows through the provider, so its leg is up."""
        self.connect(session)

    def session_ended(self, session: SessionRecord) -> None:
        if self._connected.pop(session.id, None) is not None:
            self.events.publish(Event("session.provider.disconnected", session))
