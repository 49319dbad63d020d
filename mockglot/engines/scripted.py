"""The scripted engine: an energy VAD finds each utterance, and each utterance says the speaker's next
scripted turn. Partials reveal the turn a piece at a time as the utterance's audio arrives."""

from __future__ import annotations

from mockglot.engines.base import Final, Partial, Recognition
from mockglot.engines.vad import EnergyVad, SpeechEnd, SpeechProgress
from mockglot.scenarios import LoadedScenario, ScriptedTurn

PARTIAL_EVERY_MS = 400
UNSCRIPTED_CONFIDENCE = 0.5


def default_partials(text: str) -> list[str]:
    """Growing word prefixes, never the whole text (that is the final's)."""
    words = text.split()
    return [" ".join(words[:n]) for n in range(1, len(words))]


class ScriptedRecognizer:
    def __init__(self, scenario: LoadedScenario, speaker: str, *, silence_ms: int = 500) -> None:
        self.scenario = scenario
        self.speaker = speaker
        self.script = scenario.script(speaker)
        self.vad = EnergyVad(silence_ms=silence_ms)
        self._played = 0  # utterances that consumed a turn (or asked for one past the end)
        self._partials_sent = 0
        self._current: tuple[int, ScriptedTurn | None, list[str]] | None = None  # (index, turn, its partials)

    def _turn(self, index: int) -> ScriptedTurn | None:
        if index < len(self.script):
            return self.script[index]
        policy = self.scenario.scenario.when_exhausted
        if policy == "loop" and self.script:
            return self.script[index % len(self.script)]
        if policy == "unscripted":
            return ScriptedTurn(
                text=f"(unscripted {self.speaker} utterance {index + 1})", confidence=UNSCRIPTED_CONFIDENCE
            )
        return None

    def _turn_and_partials(self, index: int) -> tuple[ScriptedTurn | None, list[str]]:
        """`_turn(index)` and its partials, worked out once per utterance rather than once per 20 ms frame."""
        current = self._current
        if current is None or current[0] != index:
            turn = self._turn(index)
            if turn is None:
                partials = []
            else:
                partials = turn.partials if turn.partials is not None else default_partials(turn.text)
            current = self._current = (index, turn, partials)
        return current[1], current[2]

    def _recognize(self, events: list[SpeechProgress | SpeechEnd]) -> list[Recognition]:
        out: list[Recognition] = []
        for event in events:
            turn, partials = self._turn_and_partials(self._played)
            if isinstance(event, SpeechProgress):
                if turn is None:
                    continue
                due = min(event.speech_ms // PARTIAL_EVERY_MS, len(partials))
                while self._partials_sent < due:
                    out.append(Partial(partials[self._partials_sent]))
                    self._partials_sent += 1
                continue
            self._played += 1
            self._partials_sent = 0
            if turn is None:
                continue
            out.append(
                Final(
                    text=turn.text,
                    confidence=turn.confidence,
                    start_ms=event.start_ms,
                    end_ms=event.end_ms,
                    translation=turn.translation,
                    output_audio=self.scenario.audio.get(turn.audio) if turn.audio else None,
                )
            )
        return out

    def accept(self, pcm: bytes) -> list[Recognition]:
        return self._recognize(self.vad.feed(pcm))

    async def flush(self) -> list[Recognition]:
        return self._recognize(self.vad.flush())

    def close(self) -> None:
        pass

    def next_reply(self) -> ScriptedTurn | None:
        """For the AI agent's script: the next reply, consumed without audio."""
        turn = self._turn(self._played)
        self._played += 1
        return turn
