"""The telephony leg of a routed session: `session.provider.connected` / `session.provider.disconnected`.

[emulator] A session with `routing` connects its provider leg when `POST /v1/sessions/{id}/dial` places the
outbound call, or, for a call that was not dialed, when its first audio arrives (the call's media flows
through the provider). The leg disconnects when the session ends. Each leg connects at most once, and every
`connected` is followed by exactly one `disconnected`; a session without routing has no leg. Whether it is up is
the session's own `provider_leg`, so with several workers a leg dialed on one is up on all.
"""

from __future__ import annotations

from collections.abc import Callable

from mockglot.state.events import Event, EventBus
from mockglot.state.sessions import SessionRecord


class ProviderLegs:
    def __init__(self, events: EventBus, changed: Callable[[SessionRecord], None]) -> None:
        self.events = events
        self.changed = changed  # the session store's: a session whose leg changed is shared again

    def connect(self, session: SessionRecord) -> bool:
        """Connect the session's leg; False if it was connected already (or the session has no routing)."""
        if session.provider is None or session.provider_leg or session.status == "ended":
            return False
        session.provider_leg = True
        self.changed(session)
        self.events.publish(Event("session.provider.connected", session))
        return True

    def session_started(self, session: SessionRecord) -> None:
        """First audio: the call's media flows through the provider, so its leg is up."""
        self.connect(session)

    def session_ended(self, session: SessionRecord) -> None:
        """(Within the end, which shares the session.)"""
        if session.provider_leg:
            session.provider_leg = False
            self.events.publish(Event("session.provider.disconnected", session))
