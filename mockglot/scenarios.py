"""Scenarios: what the scripted engine says, turn by turn, and what goes wrong.

A scenario file (YAML or JSON) lists each speaker's turns in order. Files are validated when loaded, and an
error names the file and the field. Audio for a turn may be a raw 8 kHz mu-law file (.ulaw, .raw) or a mono
16-bit PCM WAV at any rate, relative to the scenario file.
"""

from __future__ import annotations

import base64
import binascii
import functools
import io
import os
import stat
import wave
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from mockglot import validation
from mockglot.errors import ApiError
from mockglot.faults import stream_fault_problem
from mockglot.speech import codec
from mockglot.state.replica import DocTracker, SharedDocs
from mockglot.wire import WAV_RATES_HZ, Language, StreamFault

if TYPE_CHECKING:
    import yaml

    from mockglot.proxy.recording import LoadedRecording

BUILTIN_DIR = Path(__file__).parent / "builtin" / "scenarios"
SUFFIXES = (".yaml", ".yml", ".json")
ScriptSpeaker = Literal["customer", "agent", "ai_agent"]


class ScriptedTurn(Struct, kw_only=True, forbid_unknown_fields=True):
    text: Annotated[str, Meta(min_length=1)]
    translation: str | None = None
    confidence: Annotated[float, Meta(ge=0, le=1)] = 0.95
    partials: list[str] | None = None
    audio: str | None = None  # a file next to the scenario, inside its fixtures folder
    audio_base64: str | None = None  # or inline: raw 8 kHz mu-law, or a mono 16-bit WAV


NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"  # a scenario's name: also a file name, in YAML and in URLs


class Scenario(Struct, kw_only=True, forbid_unknown_fields=True):
    name: Annotated[str, Meta(pattern=NAME_PATTERN)]
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
        return next((turns for who, turns in self.scenario.turns.items() if who == speaker), [])


MAX_DOCUMENT_BYTES = 512 * 1024  # a scenario file or uploaded YAML (the request body limit is higher)
MAX_AUDIO_BYTES = 16 * 1024 * 1024  # a turn's audio file (about 30 minutes of mu-law)


@functools.cache
def _no_alias_loader() -> type[yaml.SafeLoader]:
    """The YAML loader, made on first use: YAML is imported by the first scenario parsed, not at server start."""
    import yaml

    class NoAliasLoader(yaml.SafeLoader):
        """YAML without anchors and aliases: a 15 KB document of `&a` / `*a` can expand to gigabytes."""

        def compose_node(self, parent: Any, index: Any) -> Any:
            event = self.peek_event()  # type: ignore[no-untyped-call,unused-ignore]
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
                raise yaml.composer.ComposerError(
                    None, None, "anchors (&name) and aliases (*name) are not accepted in scenarios", event.start_mark
                )
            return super().compose_node(parent, index)

    return NoAliasLoader


def load_yaml(text: str, source: str) -> object:
    """A scenario document (YAML or JSON) from text, size-limited, without aliases; errors name the source."""
    import yaml

    if len(text) > MAX_DOCUMENT_BYTES // 4 and len(text.encode()) > MAX_DOCUMENT_BYTES:
        raise ValueError(f"scenario {source} is larger than {MAX_DOCUMENT_BYTES // 1024} KiB")
    try:
        return yaml.load(text, Loader=_no_alias_loader())
    except yaml.YAMLError as exc:
        raise ValueError(f"scenario {source} does not parse: {exc}") from None
    except RecursionError:
        raise ValueError(f"scenario {source} does not parse: it nests too deeply") from None


def audio_path(root: Path, base: Path, name: str) -> Path:
    """`name` (relative to `base`) as a path inside `root`, or ValueError saying only that it is not there:
    no absolute paths, no `..`, no link out of the folder, and nothing about what exists outside it."""
    relative = Path(name)
    not_there = ValueError(
        f"no audio file {name!r} in the scenario's fixtures folder (a path relative to the scenario file, inside "
        "its fixtures folder: no absolute paths, no `..`, no links out of it)"
    )
    if relative.is_absolute() or ".." in relative.parts or not name.strip():
        raise not_there
    try:
        path = (base / relative).resolve(strict=True)
        path.relative_to(root.resolve())
    except (OSError, ValueError, RuntimeError):
        raise not_there from None
    return path


def read_regular(path: Path, limit: int) -> bytes:
    """A regular file of at most `limit` bytes, opened without blocking (a FIFO is refused, never waited on)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)
    with os.fdopen(os.open(path, flags), "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"{path.name} is not a regular file")
        data = file.read(limit + 1)
    if info.st_size > limit or len(data) > limit:
        size = f"{limit // (1024 * 1024)} MiB" if limit >= 1024 * 1024 else f"{limit // 1024} KiB"
        raise ValueError(f"{path.name} is larger than {size}")
    return data


def read_audio(path: Path) -> bytes:
    """8 kHz mu-law from a raw mu-law file or a mono 16-bit PCM WAV."""
    return decode_audio(read_regular(path, MAX_AUDIO_BYTES), wav=path.suffix.lower() == ".wav")


def decode_audio(data: bytes, *, wav: bool) -> bytes:
    if not wav:
        return data
    with wave.open(io.BytesIO(data), "rb") as reader:
        if reader.getnchannels() != 1 or reader.getsampwidth() != 2:
            raise ValueError("WAV audio must be mono 16-bit PCM")
        low, high = WAV_RATES_HZ
        if not low <= reader.getframerate() <= high:  # a broken header: resampling would fail on it
            raise ValueError(f"the WAV says {reader.getframerate()} samples a second: give {low:,} to {high:,} Hz")
        pcm = reader.readframes(reader.getnframes())
        return codec.pcm_to_mulaw(codec.resample(pcm, reader.getframerate(), codec.SAMPLE_RATE_HZ))


def parse(raw: object, source: str, base: Path | None = None, root: Path | None = None) -> LoadedScenario:
    """Validate a decoded scenario document; errors name the source and the field.

    Turn audio is `audio: FILE` inside `root` (relative to `base`, the scenario file's folder), or inline as
    `audio_base64` (raw 8 kHz mu-law, or a WAV). Without `root` only inline audio is accepted."""
    if not isinstance(raw, dict):  # the converter would speak of a request body
        raise ValueError(f"scenario {source}: the document must be a mapping with `name:` and `turns:`, not a list "
                         "or a single value")  # fmt: skip
    try:
        scenario, _ = validation.convert(raw, Scenario, strict=True)
    except ApiError as exc:
        raise ValueError(f"scenario {source}: {exc.message}") from None
    except RecursionError:
        raise ValueError(f"scenario {source}: the document nests too deeply") from None
    for index, fault in enumerate(scenario.faults):
        if (why := stream_fault_problem(fault)) is not None:
            raise ValueError(f"scenario {source}: faults[{index}]: {why}")
    audio: dict[str, bytes] = {}
    for speaker, turns in scenario.turns.items():
        for index, turn in enumerate(turns):
            where = f"scenario {source}: turns.{speaker}[{index}]"
            if turn.audio is not None and turn.audio_base64 is not None:
                raise ValueError(f"{where}: give `audio` (a file) or `audio_base64`, not both")
            try:
                if turn.audio_base64 is not None:
                    data = base64.b64decode(turn.audio_base64, validate=True)
                    if len(data) > MAX_AUDIO_BYTES:
                        raise ValueError(f"larger than {MAX_AUDIO_BYTES // (1024 * 1024)} MiB")
                    turn.audio = f"inline:{speaker}:{index}"
                    audio[turn.audio] = decode_audio(data, wav=data[:4] == b"RIFF")
                elif turn.audio is not None:
                    if root is None:
                        raise ValueError(
                            "an uploaded scenario names no files: send the audio inline as `audio_base64`, or put "
                            "the scenario and its audio in a --fixtures folder"
                        )
                    audio[turn.audio] = read_audio(audio_path(root, base or root, turn.audio))
            except (OSError, ValueError, EOFError, wave.Error, binascii.Error) as exc:
                field = "audio_base64" if turn.audio_base64 is not None else "audio"
                message = str(exc) if isinstance(exc, ValueError) else "cannot be read"
                raise ValueError(f"{where}.{field}: {message}") from None
    return LoadedScenario(scenario, source, audio)


def load_file(path: Path, root: Path | None = None) -> LoadedScenario:
    """An operator's scenario file (`--scenario`, `--fixtures`); its audio stays inside `root` (default: the
    file's own folder)."""
    try:
        data = read_regular(path, MAX_DOCUMENT_BYTES)
    except OSError as exc:
        raise ValueError(f"cannot read scenario {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ValueError(f"scenario {path}: {exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"scenario {path} is not UTF-8 text") from None
    return parse(load_yaml(text, str(path)), str(path), path.parent, root or path.parent)


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


class ScenarioLibrary(SharedDocs):
    """Built-in scenarios, those in fixtures folders, and uploads; uploads go away on reset.

    Sessions name scenarios, never files: files are the operator's (`--scenario PATH`, `--fixtures`). An upload
    may be scoped to one organization (only its sessions see it) and never takes a built-in or fixtures name,
    so no upload changes what another tenant's `order-change` says."""

    def __init__(self, folders: Sequence[str | Path] = ()) -> None:
        self._files: dict[str, LoadedScenario] = {}
        # Built-ins, parsed on first use (a start parses no YAML); each file is named after its scenario.
        self._builtin: dict[str, Path] = {
            path.stem: path for path in sorted(BUILTIN_DIR.iterdir()) if path.suffix.lower() in SUFFIXES
        }
        self.roots: list[Path] = [BUILTIN_DIR.parent]  # folders whose audio files an upload may name
        for root in (Path(f) for f in folders):
            folder = root / "scenarios" if (root / "scenarios").is_dir() else root
            if not folder.is_dir():
                why = "is not a folder" if folder.exists() else "does not exist"
                raise ValueError(f"fixtures folder {root} {why}")
            self.roots.append(root)
            for path in sorted(folder.iterdir()):
                if path.suffix.lower() in SUFFIXES:
                    loaded = load_file(path, root)
                    self._files[loaded.name] = loaded
            for loaded in load_recordings(folder):
                self._files[loaded.name] = loaded
        for name in self._files:  # an operator's scenario of a built-in's name replaces it
            self._builtin.pop(name, None)
        self._uploads: dict[tuple[str | None, str], LoadedScenario] = {}  # (organization or None, name)
        self._next_for_key: dict[str, tuple[str, int | None]] = {}  # key -> (scenario, sessions left or None)
        self.tracker: DocTracker | None = None  # shared between workers: `next:KEY` and `upload:["org","name"]`

    # --- shared between workers (see state/replica.py) ---------------------------------------------------

    name = "scenarios"

    def share(self) -> None:
        """Share the keys' choices and the uploads. Files (built-in, fixtures, --scenario) are every worker's
        own, from the same settings. An upload's document is its scenario and its decoded audio: at most a
        MAX_DOCUMENT_BYTES document and MAX_AUDIO_BYTES of audio per turn (an upload may name fixtures files),
        written once per upload."""
        self.tracker = DocTracker(self._encode)

    def _encode(self, doc: str) -> bytes | None:
        kind, _, name = doc.partition(":")
        if kind == "next":
            chosen = self._next_for_key.get(name)
            return None if chosen is None else _ENCODER.encode(chosen)
        loaded = self._uploads.get(_UPLOAD_ID_DECODER.decode(name))
        return None if loaded is None else _ENCODER.encode(_UploadDoc(loaded.scenario, loaded.source, loaded.audio))

    def load(self, doc: str, data: bytes | None) -> None:
        if self.tracker is not None:
            self.tracker.loaded(doc, data)
        kind, _, name = doc.partition(":")
        if kind == "next":
            if data is None:
                self._next_for_key.pop(name, None)
            else:
                self._next_for_key[name] = _NEXT_DECODER.decode(data)
            return
        scope = _UPLOAD_ID_DECODER.decode(name)
        if data is None:
            self._uploads.pop(scope, None)
        else:
            upload = _UPLOAD_DECODER.decode(data)
            self._uploads[scope] = LoadedScenario(upload.scenario, upload.source, upload.audio)

    def _touch_upload(self, scope: tuple[str | None, str]) -> None:
        if self.tracker is not None:
            self.tracker.touch("upload:" + msgspec.json.encode(scope).decode())

    def _file(self, name: str) -> LoadedScenario | None:
        """A built-in or operator's scenario; a built-in is parsed here the first time it is asked for."""
        if (found := self._files.get(name)) is None and (path := self._builtin.pop(name, None)) is not None:
            found = self._files[name] = load_file(path, BUILTIN_DIR.parent)
            if found.name != name:
                raise ValueError(f"built-in scenario {path.name} is named {found.name!r}: name the file after it")
        return found

    def add_file(self, path: Path) -> str:
        """The operator's `--scenario PATH`: loaded once, then known by its name."""
        loaded = load_file(path)
        self._files[loaded.name] = loaded
        self._builtin.pop(loaded.name, None)
        return loaded.name

    def reset(self, api_keys: set[str] | None = None, organization: str | None = None) -> None:
        """Forget uploads and choices; with `api_keys` (and `organization`), only those keys' choices and that
        organization's uploads."""
        if api_keys is None:
            if self.tracker is not None:
                self.tracker.touched.update(self.tracker.known())
                self.tracker.touched.update("next:" + key for key in self._next_for_key)
                for scope in self._uploads:
                    self._touch_upload(scope)
            self._uploads.clear()
            self._next_for_key.clear()
            return
        for key in api_keys:
            if self.tracker is not None:
                self.tracker.touch("next:" + key)
            self._next_for_key.pop(key, None)
        if organization is not None:
            for scope in [scope for scope in self._uploads if scope[0] == organization]:
                self._touch_upload(scope)
                del self._uploads[scope]

    def names(self, organization: str | None = None) -> list[str]:
        """The names a session of `organization` can choose."""
        visible = {name for (owner, name) in self._uploads if owner is None or owner == organization}
        return sorted({*self._files, *self._builtin, *visible})

    def all(self) -> list[tuple[str | None, LoadedScenario]]:
        """Every scenario with the organization it is scoped to (None: every organization)."""
        uploads = sorted(self._uploads.items(), key=lambda item: (item[0][1], item[0][0] or ""))
        files = [self._file(name) for name in sorted({*self._files, *self._builtin})]
        return [(None, loaded) for loaded in files if loaded is not None] + [
            (owner, loaded) for (owner, _), loaded in uploads
        ]

    def get(self, name: str, organization: str | None = None) -> LoadedScenario:
        """The scenario `name` as a session of `organization` sees it; KeyError when there is none (a name is
        never read as a path)."""
        found = (
            self._file(name)
            or (self._uploads.get((organization, name)) if organization is not None else None)
            or self._uploads.get((None, name))
        )
        if found is None:
            raise KeyError(name)
        return found

    def upload(self, loaded: LoadedScenario, organization: str | None = None) -> None:
        if loaded.name in self._files or loaded.name in self._builtin:
            raise ValueError(
                f"{loaded.name!r} is a built-in or fixtures scenario, and uploads never replace those "
                "(other tests and tenants rely on them): give the upload another name"
            )
        self._uploads[(organization, loaded.name)] = loaded
        self._touch_upload((organization, loaded.name))

    def use_next(self, api_key: str, name: str, sessions: int | None = 1, organization: str | None = None) -> None:
        """The key's next `sessions` sessions (None: all, until reset) use this scenario."""
        self._next_for_key[api_key] = (self.get(name, organization).name, sessions)
        if self.tracker is not None:
            self.tracker.touch("next:" + api_key)

    def choose(self, api_key: str, metadata: dict[str, str], default: str, organization: str | None = None) -> str:
        """Most specific first: the session's metadata, the key's next-session choice, the server default."""
        requested = metadata.get("mockglot_scenario")
        if requested is not None:
            try:
                return self.get(requested, organization).name
            except KeyError:
                hint = (
                    " Sessions choose scenarios by name; files are for the server's operator (--scenario, --fixtures)."
                    if "/" in requested or "\\" in requested or requested.lower().endswith(SUFFIXES)
                    else ""
                )
                raise ApiError(
                    "invalid_field_value",
                    f"Unknown scenario {requested!r} in metadata.mockglot_scenario. Known: "
                    f"{', '.join(self.names(organization))}.{hint} Upload one through the control plane or add it "
                    "with --fixtures.",
                    param="metadata.mockglot_scenario",
                ) from None
        chosen = self._next_for_key.get(api_key)
        if chosen is None:
            return self.get(default).name
        name, left = chosen
        if left is not None:
            if self.tracker is not None:
                self.tracker.touch("next:" + api_key)
            if left <= 1:
                del self._next_for_key[api_key]
            else:
                self._next_for_key[api_key] = (name, left - 1)
        return name


class _UploadDoc(Struct, array_like=True):
    """An uploaded scenario as workers share it (never a recording: those come from fixtures folders)."""

    scenario: Scenario
    source: str
    audio: dict[str, bytes]


_ENCODER = msgspec.msgpack.Encoder()
_NEXT_DECODER = msgspec.msgpack.Decoder(tuple[str, int | None])
_UPLOAD_DECODER = msgspec.msgpack.Decoder(_UploadDoc)
_UPLOAD_ID_DECODER = msgspec.json.Decoder(tuple[str | None, str])
