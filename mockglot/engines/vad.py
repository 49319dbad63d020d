"""Energy voice-activity detection: where each utterance of a speaker's audio starts and ends.

It looks at fixed 20 ms frames and carries leftovers between calls, so the same audio gives the same
boundaries however it is chunked, and every offset is counted in samples, never read from a clock. Within one
`feed`, a run of frames inside an utterance gives one `SpeechProgress`, the furthest (what a recognizer reads of
progress is how far the speech has got, and a 100 ms chunk would otherwise make five).
"""

from __future__ import annotations

from dataclasses import dataclass

from mockglot.speech.codec import SAMPLE_RATE_HZ, SAMPLE_WIDTH, rms_of_frames

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
        levels = rms_of_frames(data, FRAME_BYTES)
        if not levels:
            return []
        threshold, start = self.threshold, self._start_ms
        # A chunk all silent between utterances, or all voiced inside one (most chunks): what the loop below
        # would make of it, at once.
        if start is None and max(levels) < threshold:
            self._position_ms += FRAME_MS * len(levels)
            return []
        if start is not None and min(levels) >= threshold:
            self._position_ms = self._last_voice_ms = position = self._position_ms + FRAME_MS * len(levels)
            self._voiced_ms += FRAME_MS * len(levels)
            return [SpeechProgress(start, position - start)]
        events: list[VadEvent] = []
        silence_ms = self.silence_ms
        position, last_voice = self._position_ms, self._last_voice_ms
        progress: int | None = None  # speech_ms of the utterance in progress, not yet reported
        for level in levels:
            frame_start = position
            position += FRAME_MS
            voiced = level >= threshold
            if start is None:
                if not voiced:
                    continue
                start = frame_start
                self._voiced_ms = 0
            if voiced:
                last_voice = position
                self._voiced_ms += FRAME_MS
            elif position - last_voice >= silence_ms:
                if progress is not None:
                    events.append(SpeechProgress(start, progress))
                    progress = None
                self._start_ms, self._last_voice_ms = start, last_voice
                start = None
                end = self._close()
                if end is not None:
                    events.append(end)
                continue
            progress = position - start
        if progress is not None and start is not None:
            events.append(SpeechProgress(start, progress))
        self._position_ms, self._start_ms, self._last_voice_ms = position, start, last_voice
        return events

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
