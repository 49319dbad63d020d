"""A session's pipeline: recognizer -> translator -> synthesizer, shaped by the session's mode.

It outlives any one WebSocket (a client may reconnect), keeps each speaker's recognizer and turn numbering,
writes every final to the transcript, and hands frames to whichever connection is attached now.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from msgspec import UNSET

from mockglot import wire
from mockglot.engines.base import Final, Partial, Recognition, Recognizer
from mockglot.engines.scripted import ScriptedRecognizer
from mockglot.errors import ApiError
from mockglot.scenarios import LoadedScenario
from mockglot.speech import codec
from mockglot.speech.translate import Translator
from mockglot.state.sessions import SessionRecord, SessionStore, Turn

AI_MODES = ("ai_agent", "help_chat_voice")
# At most this much audio (2 s) is read ahead of its events; past it the connection waits for them.
BACKLOG_BYTES = 2 * codec.SAMPLE_RATE_HZ * codec.SAMPLE_WIDTH


@dataclass(frozen=True, slots=True)
class SpeechJob:
    """Words for a listener to hear: pre-rendered audio, or text to synthesize in `language`."""

    turn: int
    speaker: str
    listener: str
    language: str | None
    text: str
    audio: bytes | None = None


class Sink(Protocol):
    def send(self, frame: wire.ServerFrame) -> None: ...

    async def speak(self, job: SpeechJob) -> None: ...


RecognizerFactory = Callable[[SessionRecord, str, str | None], Recognizer]


class SessionPipeline:
    def __init__(
        self,
        record: SessionRecord,
        sessions: SessionStore,
        scenario: LoadedScenario,
        translator: Translator,
        make_recognizer: RecognizerFactory,
        silence_ms: int = 500,
    ) -> None:
        self.record = record
        self.sessions = sessions
        self.scenario = scenario
        self.translator = translator
        self.make_recognizer = make_recognizer
        self.silence_ms = silence_ms
        self.sink: Sink | None = None
        self.recognizers: dict[str, Recognizer | None] = {}
        # Audio whose decode was still running when it came, in order, and the task handling its events.
        self._backlog: deque[tuple[str, Awaitable[list[Recognition]], int]] = deque()
        self._backlog_bytes = 0
        self._handling: asyncio.Task[None] | None = None
        self.pending_turn: dict[str, int] = {}
        self.ai_script = ScriptedRecognizer(scenario, "ai_agent", silence_ms=silence_ms)
        self.output_sequence: dict[str, int] = {}
        self.finals = 0
        self.closed = False
        request = record.request
        self.languages = {
            "customer": request.source_language or scenario.scenario.source_language,
            "agent": request.target_language or scenario.scenario.target_language,
        }

    # --- what the connection calls -----------------------------------------------------------------

    async def audio(self, speaker: str, pcm: bytes) -> None:
        """Recognize a speaker's audio. A recognizer's future (a decode in a thread) is not waited for: the
        connection reads on, and its events follow those of the audio before it, in order (`settled` waits)."""
        recognizer = self.recognizers.get(speaker)
        if recognizer is None and (recognizer := self._recognizer(speaker)) is None:  # a new or unheard speaker
            return
        results = recognizer.accept(pcm)
        if isinstance(results, list):  # recognized at the call (the scripted engine)
            if self._handling is None:
                if results:  # most frames complete nothing
                    await self._handle(speaker, results)
                return
            recognized: asyncio.Future[list[Recognition]] = asyncio.get_running_loop().create_future()
            recognized.set_result(results)
            results = recognized  # behind the backlog, in order
        if isinstance(results, asyncio.Future):
            if results.done() and results.exception() is None and not results.result():
                return  # most frames complete nothing
        elif self._handling is None:
            await self._recognized(speaker, results)  # any other awaitable: waited for right here
            return
        self._backlog.append((speaker, results, len(pcm)))
        self._backlog_bytes += len(pcm)
        if self._handling is None:
            self._handling = asyncio.get_running_loop().create_task(self._handle_backlog())
        if self._backlog_bytes >= BACKLOG_BYTES:  # a client far ahead of the decoding waits here, not in memory
            await self.settled()

    async def settled(self) -> None:
        """Wait until the events of all audio handed over so far are handled: before anything else the
        connection does is seen, so it comes after them, as if every decode had been waited for."""
        while (handling := self._handling) is not None:
            await asyncio.shield(handling)

    async def flush(self) -> None:
        await self.settled()
        for speaker, recognizer in list(self.recognizers.items()):
            if recognizer is None:
                continue
            try:
                results = await recognizer.flush()
            except ApiError as exc:
                self._unrecognizable(speaker, exc)
                continue
            await self._handle(speaker, results)

    def close(self) -> None:
        """The session is over (or forgotten): release every recognizer; audio arriving late is not recognized."""
        self.closed = True
        for recognizer in self.recognizers.values():
            if recognizer is not None:
                recognizer.close()
        self.recognizers.clear()

    async def _recognized(self, speaker: str, results: Awaitable[list[Recognition]]) -> None:
        try:
            events = await results
        except ApiError as exc:  # e.g. a Vosk model that fails to load at the first audio
            self._unrecognizable(speaker, exc)
            return
        if events:  # most frames complete nothing
            await self._handle(speaker, events)

    async def _handle_backlog(self) -> None:
        """Handle the backlog's events in order; a failure stays in `_handling` for `settled` to raise, so the
        connection fails with it as it would have waiting for the decode itself."""
        while self._backlog:
            speaker, results, size = self._backlog[0]
            await self._recognized(speaker, results)
            self._backlog.popleft()
            self._backlog_bytes -= size
        self._handling = None

    def next_output_sequence(self, listener: str) -> int:
        sequence = self.output_sequence.get(listener, 0) + 1
        self.output_sequence[listener] = sequence
        return sequence

    # --- inside ------------------------------------------------------------------------------------

    def _send(self, frame: wire.ServerFrame) -> None:
        if self.sink is not None:
            self.sink.send(frame)

    def _recognizer(self, speaker: str) -> Recognizer | None:
        if self.closed:
            return None
        if speaker not in self.recognizers:
            try:
                self.recognizers[speaker] = self.make_recognizer(self.record, speaker, self.languages[speaker])
            except ApiError as exc:
                self._unrecognizable(speaker, exc)
        return self.recognizers[speaker]

    def _unrecognizable(self, speaker: str, exc: ApiError) -> None:
        """This speaker cannot be recognized: say so once; the audio is still journaled, nothing more is heard."""
        recognizer = self.recognizers.get(speaker)
        if recognizer is not None:
            recognizer.close()
        self.recognizers[speaker] = None
        self._error(exc)

    def _error(self, exc: ApiError) -> None:
        error = wire.FrameError(type=exc.type, code=exc.code, message=exc.message, param=exc.param)
        self._send(wire.SessionError(session_id=self.record.id, error=error))

    async def _handle(self, speaker: str, results: list[Partial | Final]) -> None:
        for result in results:
            if self.record.status == "ended":  # a decode that finished after the end adds nothing
                return
            turn = self.pending_turn.get(speaker)
            if turn is None:
                turn = self.pending_turn[speaker] = self.record.reserve_turn()
            if isinstance(result, Partial):
                self._send(
                    wire.TranscriptPartial(
                        session_id=self.record.id,
                        turn=turn,
                        speaker=speaker,  # type: ignore[arg-type]
                        language=self.languages[speaker],
                        text=result.text,
                    )
                )
                continue
            del self.pending_turn[speaker]
            await self._final(turn, speaker, result)
            if speaker == "customer" and self.record.mode in AI_MODES:
                await self._ai_reply(result)

    async def _final(self, turn: int, speaker: str, result: Final) -> None:
        mode = self.record.mode
        language = self.languages[speaker]
        listener = "agent" if speaker == "customer" else "customer"
        target = self.languages[listener]
        translated = mode not in AI_MODES and target is not None
        translation = (
            self.translator.translate(result.text, language, target, result.translation)
            if translated and target is not None
            else None
        )
        self._record_final(turn, speaker, language, result, target if translated else None, translation)
        audible = translated and (mode == "bidirectional_translation" or speaker == "agent")
        if audible and self.sink is not None and translation is not None:
            await self.sink.speak(SpeechJob(turn, speaker, listener, target, translation, result.output_audio))

    async def _ai_reply(self, after: Final) -> None:
        reply = self.ai_script.next_reply()
        if reply is None:
            return
        turn = self.record.reserve_turn()
        language = self.languages["customer"]
        duration_ms = max(len(reply.text) * 60, 300)
        result = Final(
            text=reply.text,
            confidence=1.0,
            start_ms=after.end_ms,
            end_ms=after.end_ms + duration_ms,
            output_audio=self.scenario.audio.get(reply.audio) if reply.audio else None,
        )
        # (r2) the AI speaks as `agent` (the documentation knows only customer and agent), marked `source: "ai"`
        self._record_final(turn, "agent", language, result, None, None, source="ai")
        if self.sink is not None:
            await self.sink.speak(SpeechJob(turn, "agent", "customer", language, reply.text, result.output_audio))

    def _record_final(
        self,
        turn: int,
        speaker: str,
        language: str | None,
        result: Final,
        translation_language: str | None,
        translation: str | None,
        source: Literal["ai"] | None = None,
    ) -> None:
        """One final: a frame to the client and a turn in the transcript, with the same text."""
        self.finals += 1
        self.sessions.add_turn(
            self.record,
            Turn(
                sequence=turn,
                speaker=speaker,
                language=language,
                text=result.text,
                confidence=result.confidence,
                timestamp=self.sessions.clock.now(),
                start_ms=result.start_ms,
                end_ms=result.end_ms,
                translation_language=translation_language,
                translation_text=translation,
                source=source,
            ),
        )
        self._send(
            wire.TranscriptFinal(
                session_id=self.record.id,
                turn=turn,
                speaker=speaker,  # type: ignore[arg-type]
                language=language,
                text=result.text,
                confidence=result.confidence,
                translation=(
                    wire.Translation(language=translation_language, text=translation)
                    if translation is not None and translation_language is not None
                    else UNSET
                ),
                start_ms=result.start_ms,
                end_ms=result.end_ms,
                source=UNSET if source is None else source,
            )
        )
