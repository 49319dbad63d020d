"""Energy voice-activity detection: where each utterance of a speaker's audio starts and ends.

It looks at fixed 20 ms frames and carries leftovers between calls, so the same audio gives the same
boundaries however it is chunked, and every offset is counted in samples, never read from a clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from mockglot.speech.codec import SAMPLE_RATE_HZ, SAMPLE_WIDTH, rms

FRAME_MS = 20
FRAME_BYTES = SAMPLE_RATE_HZ * FRAME_MS // 1000 * SAMPLE_WIDTH
SPEECH_RMS = 500  # about -36 dBFS: well above line noise, well below speech
MIN_SPEECH_MS = 100  # shorter bursts are clicks, not words


@dataclass(frozen=True, slots=True)
class SpeechProgress:
    """Inside an utterance: `speech_ms` of it so far (from its start to the end of this frame)."""

    start_ms: int
    speech_ms: int


@dataclass(frozen=True, slots=True)
class SpeechEnd:
    start_ms: int
    end_ms: int


VadEvent = SpeechProgress | SpeechEnd


class EnergyVad:
    def __init__(self, silence_ms: int = 500, threshold: int = SPEECH_RMS) -> None:
        self.silence_ms = silence_ms
        self.threshold = threshold
        self._pending = b""
        self._position_ms = 0  # end of the last frame processed
        self._start_ms: int | None = None  # start of the utterance in progress
        self._last_voice_ms = 0  # end of its last voiced frame
        self._voiced_ms = 0

    @property
    def in_utterance(self) -> bool:
        return self._start_ms is not None

    def feed(self, pcm: bytes) -> list[VadEvent]:
        data = self._pending + pcm if self._pending else pcm
        usable = len(data) - len(data) % FRAME_BYTES
        self._pending = data[usable:]
        events: list[VadEvent] = []
        for offset in range(0, usable, FRAME_BYTES):
            event = self._frame(data[offset : offset + FRAME_BYTES])
            if event is not None:
                events.append(event)
        return events

    def _frame(self, frame: bytes) -> VadEvent | None:
        """One 20 ms frame: at most one event."""
        frame_start = self._position_ms
        position = self._position_ms = frame_start + FRAME_MS
        voiced = rms(frame) >= self.threshold
        start = self._start_ms
        if start is None:
            if not voiced:
                return None
            start = self._start_ms = frame_start
            self._voiced_ms = 0
        if voiced:
            self._last_voice_ms = position
            self._voiced_ms += FRAME_MS
            return SpeechProgress(start, position - start)
        if position - self._last_voice_ms >= self.silence_ms:
            return self._close()
        return SpeechProgress(start, position - start)

    def _close(self) -> SpeechEnd | None:
        start, self._start_ms = self._start_ms, None
        if start is None or self._voiced_ms < MIN_SPEECH_MS:
            return None
        return SpeechEnd(start, self._last_voice_ms)

    def flush(self) -> list[VadEvent]:
        """End of stream: close the utterance in progress at its last voiced frame."""
        self._pending = b""
        end = self._close()
        return [] if end is None else [end]
