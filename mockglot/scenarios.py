"""Scenarios: what the scripted engine says, turn by turn, and what goes wrong.

A scenario file (YAML or JSON) lists each speaker's turns in order. Files are validated when loaded, and an
error names the file and the field. Audio for a turn may be a raw 8 kHz mu-law file (.ulaw, .raw) or a mono
16-bit PCM WAV at any rate, relative to the scenario file.
"""

from __future__ import annotations

import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import msgspec
import yaml
from msgspec import Meta, Struct

from mockglot import validation
from mockglot.errors import ApiError
from mockglot.faults import StreamFault
from mockglot.speech import codec
from mockglot.wire import Language

if TYPE_CHECKING:
    from mockglot.proxy.recording import LoadedRecording

BUILTIN_DIR = Path(__file__).parent / "builtin" / "scenarios"
SUFFIXES = (".yaml", ".yml", ".json")
ScriptSpeaker = Literal["customer", "agent", "ai_agent"]


class ScriptedTurn(Struct, kw_only=True, forbid_unknown_fields=True):
    text: Annotated[str, Meta(min_length=1)]
    translation: str | None = None
    confidence: Annotated[float, Meta(ge=0, le=1)] = 0.95
    partials: list[str] | None = None
    audio: str | None = None


class Scenario(Struct, kw_only=True, forbid_unknown_fields=True):
    name: Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    description: str = ""
    source_language: Language | None = None
    target_language: Language | None = None
    when_exhausted: Literal["stop", "loop", "unscripted"] = "unscripted"
    turns: dict[ScriptSpeaker, list[ScriptedTurn]] = msgspec.field(default_factory=dict)
    phrases: list[str] | None = None
    faults: list[StreamFault] = msgspec.field(default_factory=list)


@dataclass(frozen=True, slots=True)
class LoadedScenario:
    scenario: Scenario
    source: str  # the file it came from, or "upload"
    audio: dict[str, bytes] = field(default_factory=dict)  # turn.audio -> 8 kHz mu-law
    recording: LoadedRecording | None = None  # a recorded session: replayed instead of scripted

    @property
    def name(self) -> str:
        return self.scenario.name

    def script(self, speaker: str) -> list[ScriptedTurn]:
        return self.scenario.turns.get(speaker, [])  # type: ignore[call-overload]


def read_audio(path: Path) -> bytes:
    """8 kHz mu-law from a raw mu-law file or a mono 16-bit PCM WAV."""
    if path.suffix.lower() == ".wav":
        with wave.open(str(path), "rb") as wav:
            if wav.getnchannels() != 1 or wav.getsampwidth() != 2:
                raise ValueError(f"{path}: WAV audio must be mono 16-bit PCM")
            pcm = wav.readframes(wav.getnframes())
            return codec.pcm_to_mulaw(codec.resample(pcm, wav.getframerate(), codec.SAMPLE_RATE_HZ))
    return path.read_bytes()


def parse(raw: object, source: str, base: Path | None = None) -> LoadedScenario:
    """Validate a decoded scenario document; errors name the source and the field."""
    try:
        scenario, _ = validation.convert(raw, Scenario, strict=True)
    except ApiError as exc:
        raise ValueError(f"scenario {source}: {exc.message}") from None
    for index, fault in enumerate(scenario.faults):
        if (why := fault.check()) is not None:
            raise ValueError(f"scenario {source}: faults[{index}]: {why}")
    audio: dict[str, bytes] = {}
    for speaker, turns in scenario.turns.items():
        for index, turn in enumerate(turns):
            if turn.audio is None:
                continue
            path = Path(turn.audio) if base is None else base / turn.audio
            try:
                audio[turn.audio] = read_audio(path)
            except (OSError, ValueError, wave.Error) as exc:
                raise ValueError(f"scenario {source}: turns.{speaker}[{index}].audio: {exc}") from None
    return LoadedScenario(scenario, source, audio)


def load_file(path: Path) -> LoadedScenario:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read scenario {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"scenario {path} does not parse: {exc}") from None
    return parse(raw, str(path), path.parent)


def load_recordings(folder: Path) -> list[LoadedScenario]:
    """The proxy's recordings in a fixtures folder, each a scenario named after its folder."""
    from mockglot.proxy import recording

    found = []
    for path in recording.find(folder):
        try:
            loaded = recording.load(path)
        except recording.RecordingError as exc:
            raise ValueError(str(exc)) from None
        header = loaded.recording.header
        scenario = Scenario(
            name=loaded.name,
            description=f"recording of {header.session_id} from {header.upstream} ({header.recorded_at})",
        )
        found.append(LoadedScenario(scenario, str(path), recording=loaded))
    return found


class ScenarioLibrary:
    """Built-in scenarios, those in fixtures folders, and uploads; uploads go away on reset."""

    def __init__(self, folders: list[str | Path] = ()) -> None:  # type: ignore[assignment]
        self._files: dict[str, LoadedScenario] = {}
        for folder in [BUILTIN_DIR, *(Path(f) for f in folders)]:
            folder = folder / "scenarios" if (folder / "scenarios").is_dir() else folder
            if not folder.is_dir():
                raise ValueError(f"fixtures folder {folder} does not exist")
            for path in sorted(folder.iterdir()):
                if path.suffix.lower() in SUFFIXES:
                    loaded = load_file(path)
                    self._files[loaded.name] = loaded
            for loaded in load_recordings(folder):
                self._files[loaded.name] = loaded
        self._uploads: dict[str, LoadedScenario] = {}
        self._next_for_key: dict[str, tuple[str, int | None]] = {}  # key -> (scenario, sessions left or None)

    def reset(self, api_keys: set[str] | None = None) -> None:
        """Forget uploads and choices; with `api_keys`, only those keys' choices."""
        if api_keys is None:
            self._uploads.clear()
            self._next_for_key.clear()
        for key in api_keys or ():
            self._next_for_key.pop(key, None)

    def names(self) -> list[str]:
        return sorted({loaded.name for loaded in (*self._files.values(), *self._uploads.values())})

    def all(self) -> list[LoadedScenario]:
        return [self.get(name) for name in self.names()]

    def get(self, name_or_path: str) -> LoadedScenario:
        found = self._uploads.get(name_or_path) or self._files.get(name_or_path)
        if found is not None:
            return found
        path = Path(name_or_path)
        if path.suffix.lower() in SUFFIXES and path.is_file():
            loaded = load_file(path)
            self._files[name_or_path] = self._files[loaded.name] = loaded  # sessions refer to it by name
            return loaded
        raise KeyError(name_or_path)

    def upload(self, loaded: LoadedScenario) -> None:
        self._uploads[loaded.name] = loaded

    def use_next(self, api_key: str, name: str, sessions: int | None = 1) -> None:
        """The key's next `sessions` sessions (None: all, until reset) use this scenario."""
        self._next_for_key[api_key] = (self.get(name).name, sessions)

    def choose(self, api_key: str, metadata: dict[str, str], default: str) -> str:
        """Most specific first: the session's metadata, the key's next-session choice, the server default."""
        requested = metadata.get("mockglot_scenario")
        if requested is not None:
            try:
                return self.get(requested).name
            except (KeyError, ValueError):
                raise ApiError(
                    "invalid_field_value",
                    f"Unknown scenario {requested!r} in metadata.mockglot_scenario. Known: "
                    f"{', '.join(self.names())}. Upload one through the control plane or add it with --fixtures.",
                    param="metadata.mockglot_scenario",
                ) from None
        chosen = self._next_for_key.get(api_key)
        if chosen is None:
            return self.get(default).name
        name, left = chosen
        if left is not None:
            if left <= 1:
                del self._next_for_key[api_key]
            else:
                self._next_for_key[api_key] = (name, left - 1)
        return name
