"""Recordings (`rec_`): made when a session with `recording.enabled` ends, from the audio the server received.

(r2) One recording per session, an MP3 (`mockglot.speech.mp3`): stereo, customer left and agent right
(`channel: "mixed"`), each channel that speaker's audio as received, from its first sample; the shorter channel
is padded with silence. A session that ended without any audio gets a `failed` recording (and
`recording.failed`) instead of an empty file; otherwise `recording.ready` once the MP3 is made.

[emulator] The MP3 is encoded off the event loop (`processing` meanwhile); the REST views wait for it, so to a
client a recording is `ready` as soon as it is listed. A recording expires (is gone: 404) 30 days after it was
made, on the server clock.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import msgspec

from mockglot.errors import ApiError
from mockglot.speech.codec import SAMPLE_RATE_HZ
from mockglot.speech.mp3 import encode_stereo
from mockglot.state.auth import Owner
from mockglot.state.clock import Clock
from mockglot.state.events import Event, EventBus
from mockglot.state.pagination import Page, paginate
from mockglot.state.randomness import Randomness
from mockglot.state.replica import DocTracker, Elsewhere, SharedDocs
from mockglot.state.sessions import SessionRecord

CHANNELS = ("customer", "agent")  # left, right
RETENTION_SECONDS = 30 * 24 * 3600
NO_AUDIO = "The session ended without receiving any audio, so there was nothing to record."


@dataclass(slots=True)
class RecordingRecord:
    id: str
    session: SessionRecord
    status: Literal["processing", "ready", "failed"]
    audio: bytes  # the MP3 file; empty until ready, and when failed
    duration_seconds: float
    created_at: float
    failure_reason: str | None = None
    encoding: asyncio.Future[bytes] | None = None  # the MP3 being made off the loop
    worker: str = ""  # with several workers: the one making the MP3

    @property
    def owner(self) -> Owner:
        return self.session.owner

    @property
    def expires_at(self) -> float:
        return self.created_at + RETENTION_SECONDS


class RecordingStore(SharedDocs):
    def __init__(self, clock: Clock, randomness: Randomness, events: EventBus) -> None:
        self.clock = clock
        self.randomness = randomness
        self.events = events
        self._recordings: dict[str, RecordingRecord] = {}
        self._by_session: dict[str, list[RecordingRecord]] = {}
        self._by_org: dict[str, dict[str, RecordingRecord]] = {}  # so one organization's reset costs only its own
        self.tracker: DocTracker | None = None  # shared between workers (`share()`)
        self.worker = ""

    # --- shared between workers (see state/replica.py): a document per recording, its MP3 included ------

    name = "recordings"

    def share(
        self,
        worker: str,
        session: Callable[[str], SessionRecord | None],
        alive: Callable[[str], bool],
        on_change: Callable[[], None],
    ) -> None:
        self.tracker = DocTracker(self._encode)
        self.worker, self._session, self._alive, self._on_change = worker, session, alive, on_change

    def _made_elsewhere(self, record: RecordingRecord) -> bool:
        """Still being made by another worker, alive (only it will have the MP3 when it is done)."""
        mine = record.worker == self.worker or record.encoding is not None
        return not mine and record.status == "processing" and self._alive(record.worker)

    def _touch(self, record: RecordingRecord) -> None:
        if self.tracker is not None:
            self.tracker.touch(record.id)

    def _encode(self, recording_id: str) -> bytes | None:
        record = self._recordings.get(recording_id)
        if record is None:
            return None
        doc = _RecordingDoc(
            record.id, record.session.id, record.status, record.audio, record.duration_seconds,
            record.created_at, record.failure_reason, record.worker,
        )  # fmt: skip
        return _RECORDING_ENCODER.encode(doc)

    def load(self, doc: str, data: bytes | None) -> None:
        if self.tracker is not None:
            self.tracker.loaded(doc, data)
        old = self._recordings.pop(doc, None)
        if old is not None:
            self._unindex(old)
            self._by_session[old.session.id] = [r for r in self._by_session.get(old.session.id, ()) if r is not old]
        if data is None:
            return
        loaded = _RECORDING_DECODER.decode(data)
        session = self._session(loaded.session_id)
        if session is None:  # its session is gone here (evicted): so is the recording
            return
        record = RecordingRecord(
            loaded.id, session, loaded.status, loaded.audio, loaded.duration_seconds, loaded.created_at,
            loaded.failure_reason, None, loaded.worker,
        )  # fmt: skip
        if old is not None and old.encoding is not None and loaded.status == "processing":
            record.encoding = old.encoding  # still being made here
        self._recordings[record.id] = record
        self._by_session.setdefault(session.id, []).append(record)
        self._by_org.setdefault(session.owner[0], {})[record.id] = record

    def reset(self, organization: str | None = None) -> None:
        if organization is None:
            self._recordings.clear()
            self._by_session.clear()
            self._by_org.clear()
            return
        for record in self._by_org.pop(organization, {}).values():
            self._touch(record)
            self._recordings.pop(record.id, None)
            self._by_session.pop(record.session.id, None)

    def evict(self, sessions: list[SessionRecord]) -> None:
        """Forget the recordings of sessions that retention forgot."""
        for session in sessions:
            for record in self._by_session.pop(session.id, ()):
                self._touch(record)
                self._recordings.pop(record.id, None)
                self._unindex(record)

    def _unindex(self, record: RecordingRecord) -> None:
        by_org = self._by_org.get(record.owner[0])
        if by_org is not None:
            by_org.pop(record.id, None)
            if not by_org:
                del self._by_org[record.owner[0]]

    def for_session(self, session: SessionRecord) -> list[RecordingRecord]:
        now = self.clock.now()
        return [r for r in self._by_session.get(session.id, ()) if r.expires_at > now]

    def page(
        self, session: SessionRecord, limit: int, starting_after: str | None, ending_before: str | None
    ) -> Page[RecordingRecord]:
        newest_first = list(reversed(self.for_session(session)))
        listed_by = f"GET /v1/sessions/{session.id}/recordings"
        return paginate(newest_first, lambda r: r.id, limit, starting_after, ending_before, listed_by)

    def get(self, owner: Owner, recording_id: str) -> RecordingRecord:
        record = self._recordings.get(recording_id)
        if record is None or record.owner != owner or record.expires_at <= self.clock.now():
            raise ApiError(
                "recording_not_found",
                f'No recording {recording_id!r} for this API key. A session with `recording: {{"enabled": '
                "true}` gets its recording when it ends (kept 30 days); list them with GET "
                "/v1/sessions/{id}/recordings.",
                param="id",
            )
        return record

    async def settled(self, records: list[RecordingRecord]) -> None:
        """Wait until none of `records` is still being encoded."""
        for record in records:
            if self.tracker is not None and self._made_elsewhere(record):
                raise Elsewhere(record.worker)  # being made there: that worker answers once it is made
            if record.encoding is not None:
                with contextlib.suppress(Exception):  # a failed encoding has already marked the record
                    await asyncio.shield(record.encoding)
                self._encoded(record, record.encoding)

    def delete(self, owner: Owner, recording_id: str) -> RecordingRecord:
        """[emulator] Forget a recording (and its audio); its id is a 404 from then on."""
        record = self.get(owner, recording_id)
        self._touch(record)
        del self._recordings[record.id]
        remaining = [r for r in self._by_session.get(record.session.id, ()) if r is not record]
        self._by_session[record.session.id] = remaining
        self._unindex(record)
        return record

    def session_ended(self, session: SessionRecord) -> None:
        """Make the session's recording, if it asked for one: encoded off the loop, `recording.ready` (or
        `recording.failed`, at once when there is no audio) when done."""
        if session.id in self._by_session:
            return
        options = session.request.recording
        if options is None or not options.enabled:
            return
        left, right = (bytes(session.audio.get(speaker, b"")) for speaker in CHANNELS)
        longest = max(len(left), len(right))
        at = session.ended_at if session.ended_at is not None else self.clock.now()
        recording_id = self.randomness.new_id("rec", "recording", at, session.api_key)
        duration = round(longest / SAMPLE_RATE_HZ, 1)
        record = RecordingRecord(recording_id, session, "processing", b"", duration, at)
        if self.tracker is not None:
            record.worker = self.worker
            self.tracker.touch(record.id)
        self._recordings[record.id] = record
        self._by_session[session.id] = [record]
        self._by_org.setdefault(session.owner[0], {})[record.id] = record
        if longest == 0:
            self._finish(record, None, NO_AUDIO)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (the state used on its own): encode here
            self._finish(record, encode_stereo(left, right), None)
            return
        record.encoding = loop.run_in_executor(None, encode_stereo, left, right)
        record.encoding.add_done_callback(lambda done: self._encoded(record, done))

    def _encoded(self, record: RecordingRecord, done: asyncio.Future[bytes]) -> None:
        if record.status != "processing" or not done.done():
            return
        if done.cancelled() or done.exception() is not None:
            self._finish(record, None, f"The MP3 encoder failed: {done.exception()!r}.")
        else:
            self._finish(record, done.result(), None)

    def _finish(self, record: RecordingRecord, mp3: bytes | None, failure: str | None) -> None:
        record.encoding = None
        if mp3 is None:
            record.status, record.failure_reason = "failed", failure
        else:
            record.status, record.audio = "ready", mp3
        if self.tracker is not None:  # made off the loop, outside any request: share it now
            self.tracker.touch(record.id)
            self._on_change()
        self.events.publish(Event(f"recording.{record.status}", record.session, resource=record))


class _RecordingDoc(msgspec.Struct, array_like=True):
    id: str
    session_id: str
    status: Literal["processing", "ready", "failed"]
    audio: bytes
    duration_seconds: float
    created_at: float
    failure_reason: str | None
    worker: str


_RECORDING_ENCODER = msgspec.msgpack.Encoder()
_RECORDING_DECODER = msgspec.msgpack.Decoder(_RecordingDoc)
