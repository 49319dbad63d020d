"""Replay: a recorded session's server frames, played back to a new client.

The recorded partials, finals and translated speech go out again, with fresh ids and turn numbers, and every
final becomes a transcript turn as in any session. Pacing (`metadata.mockglot_replay_pace`):
- `audio` (default): a frame goes out once the client's audio has reached, for every speaker, the point the
  recorded server had heard when it sent that frame; so the same audio replays the same events in the same
  order at any sending speed. Frames the server sent after the client's `session.end` go out at its end.
- `as_recorded`: by the recorded time offsets from the first audio, divided by `mockglot_replay_speed`.
Matching (`metadata.mockglot_replay_match`): `lenient` (default) ignores how the client's audio differs from
the recording; `strict` compares it sample for sample and, at the first difference, sends one
`session.error` (`replay_mismatch`) and replays nothing more.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from typing import Any

from mockglot import wire
from mockglot.engines.base import Final
from mockglot.engines.pipeline import SessionPipeline
from mockglot.errors import ApiError
from mockglot.proxy.recording import Frame, LoadedRecording
from mockglot.speech import codec

REPLAYED = ("transcript.partial", "transcript.final", "audio.output")
PACES = ("audio", "as_recorded")
MATCHES = ("lenient", "strict")
MAX_SPEED = 100.0


class ReplayOptions:
    def __init__(self, metadata: dict[str, str]) -> None:
        self.problems: list[ApiError] = []
        self.pace = self._choice(metadata, "mockglot_replay_pace", PACES)
        self.match = self._choice(metadata, "mockglot_replay_match", MATCHES)
        self.speed = 1.0
        raw = metadata.get("mockglot_replay_speed")
        if raw is not None:
            try:
                speed = float(raw)
            except ValueError:
                speed = 0.0
            if 0 < speed <= MAX_SPEED:
                self.speed = speed
            else:
                self._problem("mockglot_replay_speed", f"a number above 0 and at most {MAX_SPEED:g}", raw)

    def _choice(self, metadata: dict[str, str], name: str, allowed: tuple[str, ...]) -> str:
        value = metadata.get(name, allowed[0])
        if value not in allowed:
            self._problem(name, " or ".join(allowed), value)
            return allowed[0]
        return value

    def _problem(self, name: str, wanted: str, got: str) -> None:
        self.problems.append(
            ApiError("invalid_field_value", f"metadata.{name} must be {wanted}, not {got!r}; using the default.",
                     param=f"metadata.{name}")
        )  # fmt: skip


class ReplayPipeline(SessionPipeline):
    """A session pipeline whose events come from a recording instead of a recognizer."""

    def __init__(self, recording: LoadedRecording, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.recording = recording
        header = recording.recording.header
        request = self.record.request
        self.languages = {
            "customer": request.source_language or header.source_language,
            "agent": request.target_language or header.target_language,
        }
        self.options = ReplayOptions(self.record.metadata)
        self.frames: list[Frame] = [
            f for f in recording.recording.frames if f.direction == "server" and f.type in REPLAYED
        ]
        self.next = 0
        self.received: dict[str, int] = {}  # mu-law bytes per speaker
        self.turns: dict[int, int] = {}  # recorded turn -> this session's turn
        self.failed = False
        self.timer: asyncio.Task[None] | None = None
        first_audio = next((f.at_ms for f in recording.recording.frames if f.type == "audio.input"), 0)
        self.first_audio_ms = first_audio
        self.reported = False

    async def audio(self, speaker: str, pcm: bytes) -> None:
        if self.closed or self.failed:
            return
        self._report_options()
        size = len(pcm) // 2
        offset = self.received.get(speaker, 0)
        self.received[speaker] = offset + size
        if self.options.match == "strict":
            expected = self.recording.client_audio(speaker)[offset : offset + size]
            if len(expected) != size or codec.mulaw_to_pcm(expected) != pcm:
                self._mismatch(speaker, offset)
                return
        if self.options.pace == "as_recorded":
            if self.timer is None:
                self.timer = asyncio.create_task(self._play_as_recorded())
            return
        position = {name: count * 1000 // codec.SAMPLE_RATE_HZ for name, count in self.received.items()}
        while self.next < len(self.frames):
            frame = self.frames[self.next]
            if frame.after_end or any(position.get(name, 0) < ms for name, ms in frame.position.items()):
                break
            self.next += 1
            await self._replay(frame)

    async def flush(self) -> None:
        """The client's `session.end`: everything the recording has left goes out now, in order."""
        self._report_options()
        if self.timer is not None:
            self.timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.timer
        while not self.failed and self.next < len(self.frames):
            self.next += 1
            await self._replay(self.frames[self.next - 1])

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        super().close()

    async def _play_as_recorded(self) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        while not self.failed and self.next < len(self.frames):
            frame = self.frames[self.next]
            if frame.after_end:
                return
            delay = (frame.at_ms - self.first_audio_ms) / 1000 / self.options.speed
            await asyncio.sleep(max(started + delay - loop.time(), 0))
            self.next += 1
            await self._replay(frame)

    def _report_options(self) -> None:
        if not self.reported:
            self.reported = True
            for problem in self.options.problems:
                self._error(problem)

    def _mismatch(self, speaker: str, offset: int) -> None:
        self.failed = True
        error = ApiError(
            "replay_mismatch",
            f"The {speaker} audio differs from the recording {self.recording.name!r} at byte {offset} "
            f"({offset * 1000 // codec.SAMPLE_RATE_HZ} ms); nothing more is replayed. Send the recorded audio, or "
            "set metadata.mockglot_replay_match to lenient.",
            param="audio.payload",
        )
        self._error(error)

    def _turn(self, recorded: Any) -> int:
        key = recorded if isinstance(recorded, int) else -1
        turn = self.turns.get(key)
        if turn is None:
            turn = self.turns[key] = self.record.reserve_turn()
        return turn

    async def _replay(self, frame: Frame) -> None:
        if self.record.status == "ended":
            return
        raw = frame.frame if isinstance(frame.frame, dict) else {}
        turn = self._turn(raw.get("turn"))
        speaker = str(raw.get("speaker", "customer"))
        language = raw.get("language")
        if frame.type == "transcript.partial":
            self._send(
                wire.TranscriptPartial(
                    session_id=self.record.id, turn=turn, speaker=speaker, language=language,  # type: ignore[arg-type]
                    text=str(raw.get("text", "")),
                )
            )  # fmt: skip
        elif frame.type == "transcript.final":
            translation = raw.get("translation") if isinstance(raw.get("translation"), dict) else None
            result = Final(
                text=str(raw.get("text", "")),
                confidence=float(raw.get("confidence", 1.0)),
                start_ms=int(raw.get("start_ms", 0)),
                end_ms=int(raw.get("end_ms", 0)),
            )
            self.finals_recorded(turn, speaker, language, result, translation)
        elif frame.type == "audio.output" and frame.audio is not None and self.sink is not None:
            listener = str(raw.get("listener", "customer"))
            self.sink.send(
                wire.AudioOutput(
                    session_id=self.record.id, turn=turn, speaker=speaker, listener=listener,  # type: ignore[arg-type]
                    language=language, sequence=self.next_output_sequence(listener),
                    audio=wire.OutputAudio(payload=base64.b64encode(self.recording.audio_of(frame.audio)).decode()),
                )
            )  # fmt: skip

    def finals_recorded(
        self, turn: int, speaker: str, language: str | None, result: Final, translation: dict[str, Any] | None
    ) -> None:
        """A recorded final: a frame to the client and a turn in the transcript, as in any session."""
        translated_to = translation.get("language") if translation else None
        text = translation.get("text") if translation else None
        self._record_final(
            turn, speaker, language, result,
            translated_to if isinstance(translated_to, str) else None, text if isinstance(text, str) else None,
        )  # fmt: skip
