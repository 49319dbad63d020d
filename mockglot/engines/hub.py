"""What every stream shares: scenarios, the translator, the synthesizer, the engines, and each session's
pipeline (kept between connections so a client can reconnect where it left off)."""

from __future__ import annotations

import asyncio
import binascii
import functools
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from mockglot.engines.base import Recognizer
from mockglot.engines.pipeline import SessionPipeline
from mockglot.engines.scripted import ScriptedRecognizer
from mockglot.faults import ArmedFault
from mockglot.scenarios import ScenarioLibrary
from mockglot.speech.synth import Synthesizer, default_synthesizer
from mockglot.speech.translate import Translator
from mockglot.state.server import ServerState
from mockglot.state.sessions import SessionRecord
from mockglot.state.streams import LiveStreams

if TYPE_CHECKING:
    from mockglot.engines.vosk import VoskEngine

BUILTIN_PHRASEBOOK = Path(__file__).parent.parent / "builtin" / "phrasebook"
PAYLOAD_CLIPS = 256  # clips whose frames' base64 the hub keeps, the most recently played...
PAYLOAD_CHARS = 8 * 1024 * 1024  # ...and at most this much base64 in all (a longer clip is encoded each time)


def phrases_from_metadata(metadata: dict[str, str]) -> list[str] | None:
    """`mockglot_phrases`: a JSON array of strings, or phrases separated by `|`."""
    raw = metadata.get("mockglot_phrases")
    if not raw:
        return None
    try:
        value = msgspec.json.decode(raw, type=list[str])
    except msgspec.MsgspecError:
        value = raw.split("|")
    return [phrase.strip() for phrase in value if phrase.strip()] or None


class StreamHub:
    def __init__(self, state: ServerState, scenarios: ScenarioLibrary, synthesizer: Synthesizer | None = None) -> None:
        self.state = state
        self.settings = state.settings
        self.scenarios = scenarios
        folders = [BUILTIN_PHRASEBOOK, *(Path(f) / "phrasebook" for f in self.settings.fixtures)]
        self.translator = Translator([f for f in folders if f.is_dir()])
        self._synthesizer = synthesizer  # the default is found (espeak-ng probed) on first use, not at start
        self.streams: LiveStreams[SessionPipeline] = state.streams  # what is live: kept in the state, reset with it
        self._vosk: VoskEngine | None = None
        self._rendering: dict[tuple[str, str], asyncio.Future[bytes]] = {}  # clips being synthesized now
        self._payloads: OrderedDict[tuple[bytes, int], tuple[str, ...]] = OrderedDict()  # see `frame_payloads`
        self._payload_chars = 0
        if self.settings.engine == "vosk" or self.settings.vosk_models:
            models = self.vosk().models  # a missing or broken model path fails at start, naming the path
            if self.settings.engine == "vosk" and (missing := models.missing()) is not None:
                raise ValueError(f"--engine vosk (MOCKGLOT_ENGINE): {missing}")

    def pipeline(self, record: SessionRecord) -> SessionPipeline:
        """The session's pipeline: the one it had (a reconnect goes on where it left off) or a new one."""
        pipeline = self.streams.pipelines.get(record.id)
        if pipeline is None:
            scenario = self.scenarios.get(record.scenario, record.owner[0])
            parts = (record, self.state.sessions, scenario, self.translator, self.make_recognizer)
            if scenario.recording is not None:
                from mockglot.engines.replay import ReplayPipeline

                pipeline = ReplayPipeline(scenario.recording, *parts, silence_ms=self.settings.vad_silence_ms)
            else:
                pipeline = SessionPipeline(*parts, silence_ms=self.settings.vad_silence_ms)
            self.streams.add_pipeline(record, pipeline)
        return pipeline

    def faults_for(self, record: SessionRecord) -> list[ArmedFault]:
        """The scenario's faults (counted per session) and the control plane's (counted across sessions)."""
        scenario_faults: list[ArmedFault] | None = self.streams.scenario_faults.get(record.id)
        if scenario_faults is None:
            scenario_faults = self.streams.scenario_faults[record.id] = [
                ArmedFault(f"scenario:{index}", "stream", fault)
                for index, fault in enumerate(self.scenarios.get(record.scenario, record.owner[0]).scenario.faults)
            ]
        return [*scenario_faults, *self.state.faults.stream_faults(record.api_key, record.id)]

    def make_recognizer(self, record: SessionRecord, speaker: str, language: str | None) -> Recognizer:
        scenario = self.scenarios.get(record.scenario, record.owner[0])
        if record.engine == "vosk":
            phrases = phrases_from_metadata(record.metadata) or scenario.scenario.phrases
            return self.vosk().recognizer(language, phrases)
        return ScriptedRecognizer(scenario, speaker, silence_ms=self.settings.vad_silence_ms)

    def vosk(self) -> VoskEngine:
        """The Vosk engine, built on first use: a scripted-only server never imports vosk."""
        if self._vosk is None:
            from mockglot.engines.vosk import VoskEngine, VoskModels

            models = VoskModels.from_specs(self.settings.vosk_models)
            models.validate()
            self._vosk = VoskEngine(models)
        return self._vosk

    @property
    def synthesizer(self) -> Synthesizer:
        if self._synthesizer is None:
            self._synthesizer = default_synthesizer()
        return self._synthesizer

    def cached_clip(self, text: str, language: str | None) -> bytes | None:
        """The clip `synthesize` would return, if it is at hand now (no thread, no await)."""
        return self.synthesizer.cached(text, language or "en")

    async def synthesize(self, text: str, language: str | None) -> bytes:
        """A cached clip at once; a new one in a thread (a render takes milliseconds, the loop must not wait).

        Streams that want the same new clip at once share one render: hundreds of calls on one script reach
        each new line together, and the renders would otherwise queue up on espeak-ng's lock, each a miss."""
        language = language or "en"
        audio = self.synthesizer.cached(text, language)
        if audio is not None:
            return audio
        key = (text, language)
        rendering = self._rendering.get(key)
        if rendering is None:
            rendering = self._rendering[key] = asyncio.ensure_future(
                asyncio.to_thread(functools.partial(self.synthesizer.synthesize, text, language))
            )
            rendering.add_done_callback(functools.partial(self._rendered, key))
        return await asyncio.shield(rendering)

    def frame_payloads(self, audio: bytes, frame_bytes: int) -> tuple[str, ...]:
        """The base64 of each `frame_bytes` frame of a clip, as `audio.output` carries it. Every call on a script
        says the same lines, and encoding a frame cost as much as the rest of sending it: the hub keeps the most
        recently played clips' (at most `PAYLOAD_CLIPS`, `PAYLOAD_CHARS` in all)."""
        key = (audio, frame_bytes)  # a clip is hashed once: the synthesizer's cache hands out the same bytes
        payloads = self._payloads.get(key)
        if payloads is not None:
            self._payloads.move_to_end(key)
            return payloads
        payloads = tuple(
            binascii.b2a_base64(audio[offset : offset + frame_bytes], newline=False).decode()
            for offset in range(0, len(audio), frame_bytes)
        )
        chars = sum(map(len, payloads))
        if chars <= PAYLOAD_CHARS:
            self._payloads[key] = payloads
            self._payload_chars += chars
            while len(self._payloads) > PAYLOAD_CLIPS or self._payload_chars > PAYLOAD_CHARS:
                self._payload_chars -= sum(map(len, self._payloads.popitem(last=False)[1]))
        return payloads

    def _rendered(self, key: tuple[str, str], rendering: asyncio.Future[bytes]) -> None:
        del self._rendering[key]
        if not rendering.cancelled():
            rendering.exception()  # a failure reaches every waiter; none left is no "never retrieved" warning
