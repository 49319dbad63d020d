"""What every stream shares: scenarios, the translator, the synthesizer, the engines, and each session's
pipeline (kept between connections so a client can reconnect where it left off)."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path

import msgspec

from mockglot.engines.base import Recognizer
from mockglot.engines.pipeline import SessionPipeline
from mockglot.engines.scripted import ScriptedRecognizer
from mockglot.faults import StreamFault
from mockglot.scenarios import ScenarioLibrary
from mockglot.speech.synth import Synthesizer, default_synthesizer
from mockglot.speech.translate import Translator
from mockglot.state.server import ServerState
from mockglot.state.sessions import SessionRecord

BUILTIN_PHRASEBOOK = Path(__file__).parent.parent / "builtin" / "phrasebook"


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
        self.synthesizer = synthesizer or default_synthesizer()
        self.pipelines: dict[str, SessionPipeline] = {}
        self.stream_faults: list[StreamFault] = []
        self._vosk = None

    def reset(self) -> None:
        for pipeline in self.pipelines.values():
            pipeline.close()
        self.pipelines.clear()
        self.stream_faults.clear()
        self.scenarios.reset()

    def pipeline(self, record: SessionRecord) -> SessionPipeline:
        pipeline = self.pipelines.get(record.id)
        if pipeline is None:
            pipeline = self.pipelines[record.id] = SessionPipeline(
                record,
                self.state.sessions,
                self.scenarios.get(record.scenario),
                self.translator,
                self.make_recognizer,
                silence_ms=self.settings.vad_silence_ms,
            )
        return pipeline

    def faults_for(self, record: SessionRecord) -> list[StreamFault]:
        return [*self.scenarios.get(record.scenario).scenario.faults, *self.stream_faults]

    def make_recognizer(self, record: SessionRecord, speaker: str, language: str | None) -> Recognizer:
        scenario = self.scenarios.get(record.scenario)
        if record.engine == "vosk":
            phrases = phrases_from_metadata(record.metadata) or scenario.scenario.phrases
            return self.vosk().recognizer(language, phrases)
        return ScriptedRecognizer(scenario, speaker, silence_ms=self.settings.vad_silence_ms)

    def vosk(self):
        if self._vosk is None:
            from mockglot.engines.vosk import VoskEngine, VoskModels, parse_model_specs

            self._vosk = VoskEngine(VoskModels(parse_model_specs(self.settings.vosk_models)))
        return self._vosk

    async def synthesize(self, text: str, language: str | None) -> bytes:
        return await asyncio.to_thread(functools.partial(self.synthesizer.synthesize, text, language or "en"))
