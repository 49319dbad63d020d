"""Live streams: each streaming session's pipeline and open connection, indexed by organization.

The engines build pipelines (`engines/hub.py`) and the WebSocket handler opens connections (`api/stream.py`);
what is live is kept here, in the state, so `ServerState.reset()` closes what it forgets, and one organization's
reset costs only that organization's live streams.
"""

from __future__ import annotations

from typing import Any, Generic, Protocol, TypeVar

from mockglot.state.sessions import SessionRecord

RESET_CLOSE_CODE = 4004
RESET_MESSAGE = "The session was removed by a reset of the mockglot control plane."


class Pipeline(Protocol):
    def close(self) -> None: ...


class Stream(Protocol):
    """An open client socket on a session (`api/stream.py: Connection`)."""

    record: SessionRecord

    def abort(self, code: int, message: str) -> None: ...

    def session_ended(self) -> None: ...

    def send_raw(self, kind: str, text: str) -> None: ...


P = TypeVar("P", bound=Pipeline)


class LiveStreams(Generic[P]):
    """Pipelines live from a session's first connect until it ends or is reset (kept between connections so a
    client can reconnect where it left off); at most one connection per session, while its socket is open."""

    def __init__(self) -> None:
        self.pipelines: dict[str, P] = {}
        self.connections: dict[str, Stream] = {}
        self.scenario_faults: dict[str, list[Any]] = {}  # session id -> its scenario's armed faults
        self._by_org: dict[str, set[str]] = {}  # organization -> its sessions with a pipeline

    def add_pipeline(self, record: SessionRecord, pipeline: P) -> P:
        self.pipelines[record.id] = pipeline
        self._by_org.setdefault(record.owner[0], set()).add(record.id)
        return pipeline

    def connect(self, record: SessionRecord, stream: Stream) -> None:
        self.connections[record.id] = stream

    def disconnect(self, record: SessionRecord, stream: Stream) -> None:
        if self.connections.get(record.id) is stream:
            del self.connections[record.id]

    def ended(self, record: SessionRecord) -> None:
        """The session ended: free its pipeline (a Vosk recognizer holds tens of megabytes), then tell its open
        stream, if any."""
        self.release(record)
        connection = self.connections.get(record.id)
        if connection is not None and connection.record is record:
            connection.session_ended()

    def release(self, record: SessionRecord) -> None:
        pipeline = self.pipelines.pop(record.id, None)
        if pipeline is not None:
            pipeline.close()
            sessions = self._by_org.get(record.owner[0])
            if sessions is not None:
                sessions.discard(record.id)
                if not sessions:
                    del self._by_org[record.owner[0]]
        self.scenario_faults.pop(record.id, None)

    def reset(self, organization: str | None = None) -> None:
        """Close the streams and drop the pipelines of the sessions a reset forgets: everything, or one
        organization's (at the cost of that organization's live streams only)."""
        if organization is None:
            session_ids = [s for sessions in self._by_org.values() for s in sessions]
        else:
            session_ids = list(self._by_org.get(organization, ()))
        for session_id in session_ids:
            pipeline = self.pipelines.pop(session_id, None)
            connection = self.connections.get(session_id)
            if connection is not None:
                connection.abort(RESET_CLOSE_CODE, RESET_MESSAGE)
            if pipeline is not None:
                pipeline.close()
            self.scenario_faults.pop(session_id, None)
        if organization is None:
            self._by_org.clear()
            self.scenario_faults.clear()
        else:
            self._by_org.pop(organization, None)
