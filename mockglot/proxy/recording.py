"""Recordings of real sessions: what the proxy's `--record DIR` writes and what replay reads.

A recording is a folder named after it (`DIR/<session id>/`, rename it freely):
- `recording.json`: a header (format version, mockglot version, upstream, mode, languages), the session's REST
  exchanges, and every frame in both directions with its time offset and the point in the client's audio
  (milliseconds per speaker) that the server had received when the frame passed;
- `customer.ulaw`, `agent.ulaw`: the audio the client sent, byte for byte (8 kHz mu-law); frames point into them;
- `output-customer.ulaw`, `output-agent.ulaw`: the translated speech the server sent to each listener.

No secret is ever written: API keys, stream tokens, webhook secrets and `Authorization` values are replaced
by `<redacted>` wherever they appear (headers are not recorded at all). Ids are kept; replay mints fresh ones.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import msgspec

from mockglot import __version__
from mockglot.wire import LANGUAGES, Language

FORMAT = "mockglot-recording"
VERSION = 1
RECORDING_FILE = "recording.json"
SPEAKERS = ("customer", "agent")
MAX_FRAMES = 100_000  # per recording: a longer session keeps its first this many frames [emulator limit]
MAX_AUDIO_BYTES = 64 * 1024 * 1024  # per side file (about 2 h 20 min of 8 kHz mu-law)
MAX_RECORDING_BYTES = 64 * 1024 * 1024  # recording.json larger than this is refused at load
SECRET = re.compile(r"\b(?:sk_(?:live|test)_|kst_(?:live_|test_)?|whsec_)[A-Za-z0-9_\-]+")
REDACTED = "<redacted>"


class Header(msgspec.Struct, kw_only=True):
    format: Literal["mockglot-recording"] = "mockglot-recording"
    version: int = VERSION
    mockglot_version: str = __version__
    upstream: str
    recorded_at: str  # ISO-8601 UTC
    session_id: str
    mode: str | None = None
    source_language: Language | None = None
    target_language: Language | None = None


class RestExchange(msgspec.Struct, kw_only=True):
    at_ms: int  # since the recording started
    method: str
    path: str
    query: str = ""
    status: int
    request: Any = None  # the JSON body, secrets redacted; None when there was none
    response: Any = None  # the JSON body, secrets redacted; None when not JSON


class AudioRef(msgspec.Struct, kw_only=True):
    file: str  # one of the side files
    offset: int
    length: int


class Frame(msgspec.Struct, kw_only=True):
    at_ms: int  # since the stream opened
    direction: Literal["client", "server"]
    type: str
    frame: Any  # the decoded frame (an `audio` payload emptied: see `audio`), or the raw text when not JSON
    audio: AudioRef | None = None
    position: dict[str, int] = msgspec.field(default_factory=dict)  # client audio ms per speaker received so far
    after_end: bool = False  # the client had sent `session.end`


class Recording(msgspec.Struct, kw_only=True):
    header: Header
    rest: list[RestExchange] = msgspec.field(default_factory=list)
    frames: list[Frame] = msgspec.field(default_factory=list)
    truncated: bool = False  # frames past MAX_FRAMES were not kept


class RecordingError(ValueError):
    """A recording that cannot be used; the message names the file and the field."""


def redact(value: Any) -> Any:
    """`value` with every secret-looking string replaced; JSON shapes only (dict, list, scalars)."""
    if isinstance(value, str):
        return SECRET.sub(REDACTED, value)
    if isinstance(value, dict):
        return {key: REDACTED if key in ("token", "secret") and value[key] else redact(item)
                for key, item in value.items()}  # fmt: skip
    if isinstance(value, list):
        return [redact(item) for item in value]
    return value


def write_atomic(path: Path, content: bytes) -> None:
    """Readers (a replaying server, a person) never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(content)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class LoadedRecording(msgspec.Struct, kw_only=True):
    name: str
    folder: str
    recording: Recording
    audio: dict[str, bytes]  # side file name -> its bytes

    def audio_of(self, ref: AudioRef) -> bytes:
        return self.audio.get(ref.file, b"")[ref.offset : ref.offset + ref.length]

    def client_audio(self, speaker: str) -> bytes:
        return self.audio.get(f"{speaker}.ulaw", b"")


def load(folder: Path) -> LoadedRecording:
    """Read and check a recording folder; every problem is a RecordingError naming the file and field."""
    path = folder / RECORDING_FILE
    try:
        size = path.stat().st_size
        if size > MAX_RECORDING_BYTES:
            raise RecordingError(f"recording {path}: larger than {MAX_RECORDING_BYTES} bytes")
        recording = msgspec.json.decode(path.read_bytes(), type=Recording)
    except OSError as exc:
        raise RecordingError(f"cannot read recording {path}: {exc.strerror}") from None
    except msgspec.ValidationError as exc:
        raise RecordingError(f"recording {path}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise RecordingError(f"recording {path} does not parse: {exc}") from None
    if recording.header.version != VERSION:
        raise RecordingError(
            f"recording {path}: header.version {recording.header.version} is not supported by mockglot "
            f"{__version__} (it reads version {VERSION}); record it again with this version's proxy"
        )
    audio: dict[str, bytes] = {}
    for index, frame in enumerate(recording.frames):
        ref = frame.audio
        if ref is None:
            continue
        if ref.file not in audio:
            side = folder / ref.file
            if Path(ref.file).name != ref.file or not side.is_file():
                raise RecordingError(f"recording {path}: frames[{index}].audio.file: missing audio file {ref.file!r}")
            if side.stat().st_size > MAX_AUDIO_BYTES:
                raise RecordingError(f"recording {path}: {ref.file} is larger than {MAX_AUDIO_BYTES} bytes")
            audio[ref.file] = side.read_bytes()
        if ref.offset < 0 or ref.length < 0 or ref.offset + ref.length > len(audio[ref.file]):
            raise RecordingError(f"recording {path}: frames[{index}].audio: past the end of {ref.file}")
    return LoadedRecording(name=folder.name, folder=str(folder), recording=recording, audio=audio)


def find(folder: Path) -> list[Path]:
    """Recording folders in a fixtures folder: `recordings/*/` or `*/` holding a recording.json."""
    found = []
    for base in (folder / "recordings", folder):
        if base.is_dir():
            found += sorted(p for p in base.iterdir() if (p / RECORDING_FILE).is_file())
    return found


class Recorder:
    """Builds one session's recording as it passes through the proxy, and writes it (again) when asked."""

    def __init__(self, root: Path, header: Header, started: float) -> None:
        self.folder = root / header.session_id
        self.recording = Recording(header=header)
        self.started = started
        self.stream_started: float | None = None
        self.side: dict[str, bytearray] = {}
        self.received: dict[str, int] = {}  # client audio bytes per speaker
        self.ended = False
        self.confirmed = False  # the upstream knows the session (a 2xx about it, or its stream's session.ready)

    @classmethod
    def resume(
        cls, root: Path, loaded: LoadedRecording, started: float | None, stream_started: float | None
    ) -> Recorder:
        """A written recording read back to go on with it. Without its time bases (`started`, `stream_started`),
        what comes next is placed right after what was recorded."""
        saved = loaded.recording
        now = time.time()
        if started is None:
            started = now - max((exchange.at_ms for exchange in saved.rest), default=0) / 1000
        if stream_started is None and saved.frames:
            stream_started = now - saved.frames[-1].at_ms / 1000
        recorder = cls(root, saved.header, started)
        recorder.recording = saved
        recorder.stream_started = stream_started
        recorder.side = {name: bytearray(data) for name, data in loaded.audio.items()}
        recorder.received = {s: len(loaded.audio[f"{s}.ulaw"]) for s in SPEAKERS if f"{s}.ulaw" in loaded.audio}
        recorder.ended = any(frame.after_end for frame in saved.frames)
        recorder.confirmed = True
        return recorder

    def rest(self, now: float, method: str, path: str, query: str, status: int, request: Any, response: Any) -> None:
        self.recording.rest.append(
            RestExchange(
                at_ms=int((now - self.started) * 1000), method=method, path=path, query=redact(query), status=status,
                request=redact(request), response=redact(response),
            )
        )  # fmt: skip

    def frame(self, now: float, direction: Literal["client", "server"], text: str) -> None:
        if self.stream_started is None:
            self.stream_started = now
        if len(self.recording.frames) >= MAX_FRAMES:
            self.recording.truncated = True
            return
        try:
            value: Any = msgspec.json.decode(text)
        except (msgspec.DecodeError, RecursionError):
            value = redact(text)
        kind = value.get("type") if isinstance(value, dict) else None
        ref = None
        if isinstance(value, dict) and kind in ("audio.input", "audio.output"):
            ref = self._audio(direction, value)
        if direction == "client" and kind == "session.end":
            self.ended = True
        if direction == "server" and kind == "session.ready" and isinstance(value, dict):
            self._ready(value)
        self.recording.frames.append(
            Frame(
                at_ms=int((now - self.stream_started) * 1000),
                direction=direction,
                type=kind if isinstance(kind, str) else "(invalid)",
                frame=redact(value),
                audio=ref,
                position={speaker: size * 1000 // 8000 for speaker, size in self.received.items()},
                after_end=self.ended,
            )
        )

    def _ready(self, frame: dict[str, Any]) -> None:
        """The upstream accepted the stream; the languages it chose (an auto-detected session has none on REST)
        are the recording's, so a replay's `session.ready` says what the recorded one said."""
        self.confirmed = True
        header = self.recording.header
        for field in ("source_language", "target_language"):
            if getattr(header, field) is None and frame.get(field) in LANGUAGES:
                setattr(header, field, frame[field])
        if header.mode is None and isinstance(frame.get("mode"), str):
            header.mode = frame["mode"]

    def _audio(self, direction: str, value: dict[str, Any]) -> AudioRef | None:
        """Move the payload into its side file; the frame keeps a reference."""
        audio = value.get("audio")
        who = value.get("speaker") if direction == "client" else value.get("listener")
        if not isinstance(audio, dict) or who not in SPEAKERS or not isinstance(audio.get("payload"), str):
            return None
        try:
            data = base64.b64decode(audio["payload"], validate=True)
        except (binascii.Error, ValueError):
            return None
        name = f"{who}.ulaw" if direction == "client" else f"output-{who}.ulaw"
        side = self.side.setdefault(name, bytearray())
        if len(side) + len(data) > MAX_AUDIO_BYTES:
            return None
        ref = AudioRef(file=name, offset=len(side), length=len(data))
        side += data
        audio["payload"] = ""
        if direction == "client":
            self.received[who] = self.received.get(who, 0) + len(data)
        return ref

    def write(self) -> Path:
        for name, data in self.side.items():
            write_atomic(self.folder / name, bytes(data))
        write_atomic(self.folder / RECORDING_FILE, msgspec.json.format(msgspec.json.encode(self.recording)))
        return self.folder
