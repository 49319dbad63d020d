"""Recordings (`rec_`): made when a session with `recording.enabled` ends, from the audio the server received.

[emulator] one recording per session: a WAV of 8 kHz mu-law with one channel per speaker (customer first,
then agent), each channel that speaker's audio byte for byte as received, back to back from its first sample;
the shorter channel is padded with silence. A session that ended without any audio gets a `failed` recording
(and `recording.failed`) instead of an empty file; otherwise `recording.ready`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mockglot.errors import ApiError
from mockglot.speech.codec import SAMPLE_RATE_HZ
from mockglot.speech.wav import interleave_mulaw, wav
from mockglot.state.auth import Owner
from mockglot.state.clock import Clock
from mockglot.state.events import Event, EventBus
from mockglot.state.randomness import Randomness
from mockglot.state.sessions import SessionRecord

CHANNELS = ("customer", "agent")
NO_AUDIO = "The session ended without receiving any audio, so there was nothing to record."


@dataclass(slots=True)
class RecordingRecord:
    id: str
    session: SessionRecord
    status: Literal["ready", "failed"]
    audio: bytes  # the WAV file; empty when failed
    duration_seconds: float
    created_at: float
    failure_reason: str | None = None

    @property
    def owner(self) -> Owner:
        return self.session.owner


class RecordingStore:
    def __init__(self, clock: Clock, randomness: Randomness, events: EventBus) -> None:
        self.clock = clock
        self.randomness = randomness
        self.events = events
        self._recordings: dict[str, RecordingRecord] = {}
        self._by_session: dict[str, list[RecordingRecord]] = {}
        events.subscribe(self._on_event)

    def reset(self, organization: str | None = None) -> None:
        if organization is None:
            self._recordings.clear()
            self._by_session.clear()
            return
        self._recordings = {k: v for k, v in self._recordings.items() if v.owner[0] != organization}
        self._by_session = {k: v for k, v in self._by_session.items() if any(r.owner[0] != organization for r in v)}

    def for_session(self, session: SessionRecord) -> list[RecordingRecord]:
        return list(self._by_session.get(session.id, ()))

    def get(self, owner: Owner, recording_id: str) -> RecordingRecord:
        record = self._recordings.get(recording_id)
        if record is None or record.owner != owner:
            raise ApiError(
                "recording_not_found",
                f'No recording {recording_id!r} for this API key. A session with `recording: {{"enabled": '
                "true}` gets its recording when it ends; list them with GET /v1/sessions/{id}/recordings.",
                param="id",
            )
        return record

    def delete(self, owner: Owner, recording_id: str) -> RecordingRecord:
        """[emulator] Forget a recording (and its audio); its id is a 404 from then on."""
        record = self.get(owner, recording_id)
        del self._recordings[record.id]
        remaining = [r for r in self._by_session.get(record.session.id, ()) if r is not record]
        self._by_session[record.session.id] = remaining
        return record

    def _on_event(self, event: Event) -> None:
        session = event.session
        if event.type != "session.ended" or session.id in self._by_session:
            return
        options = session.request.recording
        if options is None or not options.enabled:
            return
        channels = [bytes(session.audio.get(speaker, b"")) for speaker in CHANNELS]
        longest = max(len(c) for c in channels)
        at = session.ended_at if session.ended_at is not None else self.clock.now()
        recording_id = self.randomness.new_id("rec", "recording", at)
        if longest == 0:
            record = RecordingRecord(recording_id, session, "failed", b"", 0.0, at, NO_AUDIO)
        else:
            audio = wav(interleave_mulaw(channels), mulaw=True, channels=len(CHANNELS))
            record = RecordingRecord(recording_id, session, "ready", audio, round(longest / SAMPLE_RATE_HZ, 1), at)
        self._recordings[record.id] = record
        self._by_session[session.id] = [record]
        self.events.publish(Event(f"recording.{record.status}", session, resource=record))
