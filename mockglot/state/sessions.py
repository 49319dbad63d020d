"""Sessions and their state machine: created -> active (first audio) -> ended.

The store holds everything the stream feeds it (audio per speaker, finals as turns) and everything REST reads
back, scoped by owner so one organization never sees another's sessions.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import msgspec

from mockglot.errors import ApiError
from mockglot.speech.codec import SAMPLE_RATE_HZ
from mockglot.state.auth import Owner
from mockglot.state.clock import Clock
from mockglot.state.events import Event, EventBus
from mockglot.state.journal import Journal
from mockglot.state.randomness import Randomness
from mockglot.state.replica import DocTracker, Elsewhere, SharedDocs
from mockglot.wire import EndReason, Provider, SessionCreate, Status

TOKEN_LIFETIME_SECONDS = 5 * 60
SAME_SEQUENCE_MEMORY = 64  # payloads remembered per speaker at its last sequence, to spot a redelivery
# (as digests; alone, the newest as itself: at most one frame's payload, 64 KiB, per speaker)
IDLE_TIMEOUT_SECONDS = 30 * 60
MAX_AUDIO_SECONDS = 10 * 60  # per speaker and session: what the audio dump and the recording keep
MAX_AUDIO_BYTES = MAX_AUDIO_SECONDS * SAMPLE_RATE_HZ  # 8 kHz mu-law: one byte a sample
MAX_PAST_TOKENS = 4  # expired tokens a session remembers (so they answer expired_token, not invalid_token)


class Retention(msgspec.Struct, frozen=True):
    """How long ended sessions stay readable: evicted oldest first once any limit is passed.

    `minutes` counts real (monotonic) time since the end, not the server clock: a test that moves the clock
    must never evict another tenant's sessions. Live sessions are never evicted.
    """

    sessions: int = 1000
    minutes: float = 60.0
    megabytes: float = 256.0


@dataclass(slots=True)
class Turn:
    sequence: int
    speaker: str
    language: str | None
    text: str
    confidence: float
    timestamp: float
    start_ms: int
    end_ms: int
    translation_language: str | None = None
    translation_text: str | None = None
    source: Literal["ai"] | None = None  # (r2) an AI agent's reply, spoken as `agent`


class StreamToken(msgspec.Struct, frozen=True):  # untracked by the GC: only strings and a float
    token: str
    session_id: str
    expires_at: float


class SessionRecord(msgspec.Struct, gc=False):
    """Untracked by the garbage collector, as a long-running server keeps every session: tracked, each one would
    lengthen every full collection. Nothing a record holds points back to it, so it is never part of a cycle."""

    id: str
    owner: Owner
    api_key: str
    request: SessionCreate
    provider: Provider | None
    created_at: float
    last_activity: float
    token: StreamToken
    status: Status = "created"
    started_at: float | None = None
    ended_at: float | None = None
    end_reason: EndReason | None = None
    turns: tuple[Turn, ...] = ()  # replaced on each final, never appended to: an empty tuple costs the GC nothing
    next_turn: int = 1
    audio: dict[str, bytearray] = msgspec.field(default_factory=dict)  # speaker -> mu-law bytes kept (capped)
    audio_received: dict[str, int] = msgspec.field(default_factory=dict)  # speaker -> bytes received (exact)
    # speaker -> (last accepted sequence, digests of the payloads accepted at it, at most SAME_SEQUENCE_MEMORY;
    # alone, the newest is the payload itself: `SessionStore._remembered`)
    last_sequence: dict[str, tuple[int, tuple[bytes, ...]]] = msgspec.field(default_factory=dict)
    connected: bool = False
    worker: str = ""  # with several workers (`--state redis://`): the one holding its socket while connected
    scenario: str = "order-change"
    engine: str = "scripted"
    provider_leg: bool = False  # its telephony leg is up (state/provider.py): shared, so any worker may end it
    past_tokens: tuple[str, ...] = ()  # expired tokens still answering expired_token; forgotten with the session
    ended_wall: float = 0.0  # monotonic seconds at the end: what retention counts from
    retained_bytes: int = 0  # kept_bytes() when it ended: what it counts against the retention budget
    origin: str = ""  # the WebSocket origin it was created through: webhooks' stream URL, as the client reaches it
    _journal: Journal | None = None

    @property
    def journal(self) -> Journal:
        """Made on first use: a session that never streams (most, in a REST test) keeps none."""
        if self._journal is None:
            self._journal = Journal()
        return self._journal

    @property
    def mode(self) -> str:
        return self.request.mode

    @property
    def metadata(self) -> dict[str, str]:
        return self.request.metadata or {}

    def audio_seconds(self) -> float:
        """The longest speaker's audio: what the session lasted by the audio the server received."""
        return max(self.audio_received.values(), default=0) / SAMPLE_RATE_HZ

    def kept_bytes(self) -> int:
        """Roughly what the session holds in memory beyond its fixed part: its audio (twice with a recording,
        which is a copy of it) and the frame journal's text."""
        audio = sum(len(data) for data in self.audio.values()) if self.audio else 0
        if self.request.recording is not None and self.request.recording.enabled:
            audio *= 2
        return audio + (self._journal.bytes if self._journal is not None else 0)

    def duration_seconds(self, now: float) -> float:
        """From the first audio to the end (or now), and never shorter than the audio received.

        A client that streams at full speed sends a minute of audio in a second; the audio is what the
        call lasted.
        """
        if self.started_at is None:
            return 0.0
        until = self.ended_at if self.ended_at is not None else now
        return round(max(until - self.started_at, self.audio_seconds()), 1)

    def reserve_turn(self) -> int:
        sequence = self.next_turn
        self.next_turn += 1
        return sequence


class SessionStore(SharedDocs):
    """Sessions by id, by organization (so one organization's reset costs only its own sessions), the live
    ones (all the idle sweep looks at) and the ended ones in the order they ended (what retention evicts)."""

    def __init__(
        self,
        clock: Clock,
        randomness: Randomness,
        events: EventBus,
        retention: Retention | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clock = clock
        self.randomness = randomness
        self.events = events
        self.retention = retention or Retention()
        self._monotonic = monotonic
        self._sessions: dict[str, SessionRecord] = {}
        self._by_org: dict[str, dict[str, SessionRecord]] = {}
        self._live: dict[str, SessionRecord] = {}  # not yet ended: all the idle sweep has to look at
        self._ended: dict[str, SessionRecord] = {}  # in the order they ended: retention evicts from the front
        self._ended_bytes = 0
        self._tokens: dict[str, StreamToken] = {}
        self._evict_listeners: list[Callable[[list[SessionRecord]], None]] = []
        # What follows a session's start and end, in this order (ServerState sets them; see `end`).
        self.after_start: tuple[Callable[[SessionRecord], None], ...] = ()
        self.after_end: tuple[Callable[[SessionRecord], None], ...] = ()
        self.evicted = 0  # since start: how many ended sessions retention has forgotten
        # Shared between workers (`share()`); alone these stay None and cost nothing.
        self.tracker: DocTracker | None = None
        self.worker = ""  # this worker's name
        self.alive: Callable[[str], bool] = lambda worker: True  # whether a worker still holds its sockets
        self.on_change: Callable[[], None] = lambda: None  # a stream changed a session: share it soon

    # --- shared between workers (see state/replica.py) ---------------------------------------------------

    name = "sessions"

    def share(self, worker: str) -> None:
        """Track what changes, for a state shared between workers; `worker` names this one."""
        self.worker = worker
        self.tracker = DocTracker(self._encode)

    def _encode(self, session_id: str) -> bytes | None:
        """A session as other workers see it: all but its audio and frame journal (they stay where the stream
        ran)."""
        record = self._sessions.get(session_id)
        if record is None:
            return None
        return _ENCODER.encode(msgspec.structs.replace(record, audio={}, _journal=None))

    def _touch(self, record: SessionRecord) -> None:
        if self.tracker is not None:
            self.tracker.touch(record.id)

    def streaming_here(self, record: SessionRecord) -> bool:
        return record.connected and record.worker == self.worker

    def held_elsewhere(self, record: SessionRecord) -> bool:
        """Streamed on another worker that is still alive: that worker has the session as it is now (the stream
        changes it between the moments it is saved), and only it can act on the stream."""
        return self.tracker is not None and record.worker not in ("", self.worker) and self.alive(record.worker)

    def load(self, doc: str, data: bytes | None) -> None:
        """Another worker's version of a session. One whose stream this worker holds stays this worker's own
        (it alone changes it), except for its stream token, which any worker may reissue."""
        if self.tracker is not None:
            self.tracker.loaded(doc, data)
        record = self._sessions.get(doc)
        if data is None:
            if record is not None:
                self._remove(record)
            return
        new = _DECODER.decode(data)
        if record is not None and record.worker == new.worker == self.worker:
            for token in (record.token.token, *record.past_tokens):
                self._tokens.pop(token, None)
            record.token, record.past_tokens = new.token, new.past_tokens
            self._index_tokens(record)
            return
        if record is not None:
            new.audio, new._journal = record.audio, record._journal  # kept by the worker the stream ran on
            self._remove(record)
        self._sessions[new.id] = new
        self._by_org.setdefault(new.owner[0], {})[new.id] = new
        if new.status == "ended":
            new.ended_wall = self._monotonic()
            new.retained_bytes = new.kept_bytes()
            self._ended[new.id] = new
            self._ended_bytes += new.retained_bytes
        else:
            self._live[new.id] = new
        self._index_tokens(new)

    def _index_tokens(self, record: SessionRecord) -> None:
        self._tokens[record.token.token] = record.token
        now = record.token.expires_at - TOKEN_LIFETIME_SECONDS
        for past in record.past_tokens:
            self._tokens[past] = StreamToken(past, record.id, now)  # expired: answers expired_token

    def _remove(self, record: SessionRecord) -> None:
        self._forget(record)
        by_org = self._by_org.get(record.owner[0])
        if by_org is not None:
            by_org.pop(record.id, None)
            if not by_org:
                del self._by_org[record.owner[0]]

    def read_where_streamed(self, record: SessionRecord) -> None:
        """With several workers, what stays with a stream (its frame journal, its audio, the open socket) is read
        on the worker it ran on, while that worker lives."""
        if self.held_elsewhere(record):
            raise Elsewhere(record.worker)

    def attach(self, record: SessionRecord) -> None:
        """A stream opened on this worker."""
        record.connected = True
        record.worker = self.worker
        self._touch(record)

    def detach(self, record: SessionRecord) -> None:
        record.connected = False
        self._touch(record)

    def streaming_sessions(self) -> list[SessionRecord]:
        """The live sessions whose streams this worker holds (what it writes back while they run)."""
        return [record for record in self._live.values() if self.streaming_here(record)]

    def on_evict(self, listener: Callable[[list[SessionRecord]], None]) -> None:
        """Called with the sessions retention forgot, so what hangs off them (recordings, analyses) goes too."""
        self._evict_listeners.append(listener)

    def reset(self, organization: str | None = None) -> None:
        """Forget every session, or one organization's (at the cost of that organization's sessions only)."""
        if organization is None:
            self._sessions.clear()
            self._by_org.clear()
            self._live.clear()
            self._ended.clear()
            self._ended_bytes = 0
            self._tokens.clear()
            return
        for record in self._by_org.pop(organization, {}).values():
            self._forget(record)

    def _forget(self, record: SessionRecord) -> None:
        self._touch(record)
        self._sessions.pop(record.id, None)
        self._live.pop(record.id, None)
        if self._ended.pop(record.id, None) is not None:
            self._ended_bytes -= record.retained_bytes
        for token in (record.token.token, *record.past_tokens):
            self._tokens.pop(token, None)

    def count(self) -> int:
        self.evict()
        return len(self._sessions)

    def all(self, organization: str | None = None) -> list[SessionRecord]:
        records = list(self._sessions.values() if organization is None else self._by_org.get(organization, {}).values())
        if self.tracker is not None:
            for record in records:
                self.tracker.touch(record.id)
        return records

    def evict(self) -> None:
        """Forget ended sessions, oldest first, while any retention limit is passed."""
        ended, limits = self._ended, self.retention
        if not ended:
            return
        max_bytes = limits.megabytes * 1024 * 1024
        oldest_kept = self._monotonic() - limits.minutes * 60
        gone: list[SessionRecord] = []
        for record in ended.values():  # oldest first
            left = len(ended) - len(gone)
            if left <= 1:  # the newest always stays: a budget smaller than one session still keeps the last
                break
            if left <= limits.sessions and self._ended_bytes <= max_bytes and record.ended_wall > oldest_kept:
                break
            gone.append(record)
            self._ended_bytes -= record.retained_bytes
        if not gone:
            return
        for record in gone:
            del ended[record.id]
            self._remove(record)
        self.evicted += len(gone)
        for listener in self._evict_listeners:
            listener(gone)

    def create(
        self,
        owner: Owner,
        api_key: str,
        request: SessionCreate,
        provider: Provider | None,
        scenario: str = "order-change",
        engine: str = "scripted",
        origin: str = "",
    ) -> SessionRecord:
        now = self.clock.now()
        session_id = self.randomness.new_id("sess", "session", now, api_key)
        while session_id in self._sessions:  # seeded, after a reset of the key's organization: draw on
            session_id = self.randomness.new_id("sess", "session", now, api_key)
        record = SessionRecord(
            id=session_id,
            owner=owner,
            api_key=api_key,
            request=request,
            provider=provider,
            created_at=now,
            last_activity=now,
            token=self._new_token(session_id, owner, api_key, now),
            scenario=scenario,
            engine=engine,
            origin=origin,
        )
        self._sessions[session_id] = self._live[session_id] = record
        self._by_org.setdefault(owner[0], {})[session_id] = record
        self._touch(record)
        self.events.publish(Event("session.created", record))
        self.evict()
        return record

    def get(self, owner: Owner, session_id: str) -> SessionRecord:
        """The owner's session, or 404: another owner's session is indistinguishable from none."""
        record = self._sessions.get(session_id)
        if record is not None:  # (not touched: what changes it from here shares it, a read shares nothing)
            if record.owner == owner and self.held_elsewhere(record):
                raise Elsewhere(record.worker)  # that worker has it as it is now, and alone may change it
            self._expire_if_idle(record)
        if record is None or record.owner != owner:
            raise ApiError(
                "session_not_found",
                f"No session {session_id!r} for this API key. Sessions are visible only to keys of the "
                "organization and environment (live/test) that created them.",
                param="id",
            )
        return record

    def lookup(self, session_id: str) -> SessionRecord | None:
        """The session, for another store (no change to share)."""
        return self._sessions.get(session_id)

    def find(self, session_id: str) -> SessionRecord | None:
        record = self._sessions.get(session_id)
        if record is not None:
            self._touch(record)
        return record

    def for_token(self, token: str) -> SessionRecord | None:
        """The session a stream token was issued for (expired or not)."""
        issued = self._tokens.get(token)
        return self.find(issued.session_id) if issued is not None else None

    # --- stream tokens ---------------------------------------------------------------------------------

    def _new_token(self, session_id: str, owner: Owner, api_key: str, now: float) -> StreamToken:
        """Seeded, from the key's own sequence: another key cannot compute it from the seed."""
        randomness = self.randomness
        body = randomness.ulid("token", int(now * 1000), api_key) + randomness.hex("token", 8, api_key)
        while f"kst_{owner[1]}_{body}" in self._tokens:  # as for session IDs
            body = randomness.ulid("token", int(now * 1000), api_key) + randomness.hex("token", 8, api_key)
        token = StreamToken(f"kst_{owner[1]}_{body}", session_id, now + TOKEN_LIFETIME_SECONDS)
        self._tokens[token.token] = token
        return token

    def current_token(self, record: SessionRecord) -> StreamToken:
        """The session's stream token, reissued once the old one has expired so a client can reconnect."""
        now = self.clock.now()
        if record.token.expires_at <= now:
            past = (*record.past_tokens, record.token.token)
            for forgotten in past[:-MAX_PAST_TOKENS]:
                self._tokens.pop(forgotten, None)
            record.past_tokens = past[-MAX_PAST_TOKENS:]
            record.token = self._new_token(record.id, record.owner, record.api_key, now)
            self._touch(record)
        return record.token

    def check_token(self, session_id: str, token: str | None) -> SessionRecord:
        """Admit a stream connection: the token must be this session's and unexpired."""
        if not token:
            raise ApiError(
                "invalid_token",
                "No stream token. Connect to stream.url with `?token=<stream.token>` from the session object.",
                param="token",
            )
        issued = self._tokens.get(token)
        record = self.find(session_id)
        if record is None:
            raise ApiError("session_not_found", f"No session {session_id!r}.", status=4004)
        self._expire_if_idle(record)
        if issued is None or issued.session_id != session_id:
            raise ApiError(
                "invalid_token",
                "This stream token is unknown or belongs to another session. Use stream.token from "
                f"GET /v1/sessions/{session_id}.",
                param="token",
            )
        if issued.expires_at <= self.clock.now():
            raise ApiError(
                "expired_token",
                "This stream token has expired (tokens live 5 minutes). GET /v1/sessions/"
                f"{session_id} returns a fresh one.",
                param="token",
            )
        if record.status == "ended":
            raise ApiError("session_ended", f"Session {session_id} has ended.", status=4009)
        if record.connected and (record.worker == self.worker or self.alive(record.worker)):
            raise ApiError(
                "session_already_connected",
                "Another stream is already open on this session. Close it before connecting again.",
            )
        return record

    # --- what the stream feeds --------------------------------------------------------------------------

    def touch(self, record: SessionRecord) -> None:
        record.last_activity = self.clock.now()

    def _check_sequence(self, record: SessionRecord, speaker: str, sequence: float, mulaw: bytes) -> int:
        """(r2) The frame's `sequence` as an integer, or why the frame is refused.

        Any JSON number with an integer value is a sequence (`1.0` too). Per speaker, sequences must not go
        down: below the last accepted, or equal to it with a payload already accepted at it, is a redelivery
        (`duplicate_sequence`, dropped, never counted twice). Equal with other audio is new audio: the Quick
        Start's client sends `sequence: Date.now()`, which repeats within a millisecond."""
        if isinstance(sequence, float) and not sequence.is_integer():
            raise ApiError(
                "invalid_message",
                f"`sequence` must be a whole number (got {sequence!r}); the frame was dropped.",
                param="sequence",
            )
        number = int(sequence)
        last = record.last_sequence.get(speaker)
        if last is not None and (number < last[0] or (number == last[0] and self._seen(last[1], mulaw))):
            how = "below" if number < last[0] else "equal to, with the same audio as,"
            raise ApiError(
                "duplicate_sequence",
                f"Sequence {number} for {speaker} is {how} the last accepted ({last[0]}): a redelivery, so the "
                "frame was dropped. Give each frame a sequence at least as high as the one before.",
                param="sequence",
            )
        return number

    def accept_audio(self, record: SessionRecord, speaker: str, sequence: float, mulaw: bytes) -> None:
        """A stream's `audio.input` frame: kept, or refused with the error the stream reports (an invalid or
        duplicate `sequence`, or a session that has ended); a refused frame is never counted."""
        number = self._check_sequence(record, speaker, sequence, mulaw)
        if record.status == "ended":
            raise ApiError("session_ended", "The session has ended; this audio was not recorded.", param="sequence")
        self.add_audio(record, speaker, mulaw, number)

    def add_audio(self, record: SessionRecord, speaker: str, mulaw: bytes, sequence: int | None = None) -> None:
        """Append a speaker's audio; with its frame's `sequence` (from `accept_audio`), remember it."""
        now = self.clock.now()
        record.last_activity = now
        if sequence is not None:
            last = record.last_sequence.get(speaker)
            if last is not None and last[0] == sequence:
                *older, newest = last[1]
                seen = (*older, newest if self.tracker is not None else _digest(newest))[-(SAME_SEQUENCE_MEMORY - 1) :]
            else:
                seen = ()
            record.last_sequence[speaker] = (sequence, (*seen, self._remembered(mulaw)))
        received = record.audio_received.get(speaker, 0)
        record.audio_received[speaker] = received + len(mulaw)
        if received < MAX_AUDIO_BYTES:
            kept = record.audio.get(speaker)
            if kept is None:
                kept = record.audio[speaker] = bytearray()
            kept.extend(mulaw[: MAX_AUDIO_BYTES - received])
        if record.status == "created":
            self._changed(record)
            record.status = "active"
            record.started_at = now
            self.events.publish(Event("session.started", record))
            for step in self.after_start:
                step(record)

    def _remembered(self, mulaw: bytes) -> bytes:
        """How the newest payload accepted at a speaker's sequence is remembered: alone, as itself (a redelivery
        is compared with it, and most payloads never are: a digest was 4% of what a streamed frame cost); shared
        with other workers, as its digest, which they compare."""
        return mulaw if self.tracker is None else _digest(mulaw)

    def _seen(self, remembered: tuple[bytes, ...], mulaw: bytes) -> bool:
        """Whether `mulaw` was accepted at the last sequence (`remembered`: what `add_audio` keeps of it)."""
        *older, newest = remembered
        return self._remembered(mulaw) == newest or (bool(older) and _digest(mulaw) in older)

    def add_turn(self, record: SessionRecord, turn: Turn) -> None:
        record.turns = tuple(sorted((*record.turns, turn), key=lambda t: t.sequence))
        self._changed(record)
        self.events.publish(Event("transcript.segment", record, turn))

    def end(self, record: SessionRecord, reason: EndReason, at: float | None = None) -> bool:
        """End the session; False if it had already ended (ending is idempotent).

        The one "session ended" sequence, in a fixed order (what webhooks and the stream see follows it):
        `session.ended` is announced (feed, webhooks), then each of `after_end` runs in turn (ServerState's:
        the provider leg disconnects, the recording is made, the live stream is released and told), then
        `transcript.ready` is announced, and the session counts against retention."""
        if record.status == "ended":
            return False
        if self.held_elsewhere(record):
            raise Elsewhere(record.worker)  # only the worker holding its stream can end it
        self._changed(record)
        record.status = "ended"
        record.ended_at = self.clock.now() if at is None else at
        self._live.pop(record.id, None)
        record.end_reason = reason
        self.events.publish(Event("session.ended", record))
        for step in self.after_end:
            step(record)
        self.events.publish(Event("transcript.ready", record))
        if self._sessions.get(record.id) is record:  # not forgotten by a reset meanwhile
            record.ended_wall = self._monotonic()
            record.retained_bytes = record.kept_bytes()
            self._ended[record.id] = record
            self._ended_bytes += record.retained_bytes
            self.evict()
        return True

    def _changed(self, record: SessionRecord) -> None:
        """A change to share now: it may come from a stream, outside any request."""
        if self.tracker is not None:
            self.tracker.touch(record.id)
            self.on_change()

    def sweep(self) -> None:
        """End every session idle for 30 minutes of the server clock."""
        for record in list(self._live.values()):
            if not self.held_elsewhere(record):  # that worker's own sweep ends it
                self._expire_if_idle(record)

    def _expire_if_idle(self, record: SessionRecord) -> None:
        if record.status != "ended" and self.clock.now() - record.last_activity >= IDLE_TIMEOUT_SECONDS:
            self.end(record, "idle_timeout", at=record.last_activity + IDLE_TIMEOUT_SECONDS)


def _digest(mulaw: bytes) -> bytes:
    return hashlib.blake2b(mulaw, digest_size=16).digest()


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(SessionRecord)
