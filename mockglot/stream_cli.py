"""`mockglot stream FILE`: play an audio file into a new session, print what the server says, then the transcript.

It speaks only the public API (through `mockglot.testing.client`), so it works against mockglot or any server that
speaks Kallglot. Exit codes: 0 the session ran and ended cleanly; 1 the server refused or broke something (an HTTP
error, a `session.error`, an abnormal close, no answer); 2 the file or the arguments are unusable; 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import msgspec

from mockglot.speech import codec
from mockglot.wire import MALFORMED, MODES, WAV_RATES_HZ

if TYPE_CHECKING:  # the client side (httpx, websockets) loads when the command runs, not for `mockglot serve`
    from mockglot.testing.client import Stream

DEFAULT_MODE = MODES[0]  # bidirectional_translation, as `mockglot.testing.client`

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_API_KEY = "sk_test_mockglotcli1"
RAW_MULAW_SUFFIXES = (".ulaw", ".mulaw", ".ul")
WAVE_FORMAT_PCM, WAVE_FORMAT_MULAW, WAVE_FORMAT_EXTENSIBLE = 1, 7, 0xFFFE
IDLE_TIMEOUT_SECONDS = 60.0  # no frame for this long: the server is stuck, give up
AUDIO_GAP_SECONDS = 0.3  # no audio.output for this long (frames are 100 ms, paced at real time): the turn's ended
NORMAL_CLOSE = 1000
EXAMPLE_AGENT = """'{"system_prompt": "You take orders.", "voice": "nova"}'"""
EXAMPLE_OVERRIDES = """'{"voice": "alloy"}'"""


class CliError(Exception):
    """A failure reported as one line on stderr with an exit code, never as a traceback."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "stream",
        help="stream an audio file to a server and print the events",
        description="Create a session, stream FILE into it in 100 ms frames, print every event as it arrives, "
        "end the session and print its transcript. Uses only the public Kallglot API.",
        epilog="exit codes: 0 ok, 1 the server refused or broke the session, 2 unusable file or arguments",
    )
    p.add_argument("file", help="a WAV (mono 16-bit PCM at any rate, or mu-law) or raw 8 kHz mu-law (.ulaw)")
    p.add_argument("--url", default=os.environ.get("MOCKGLOT_URL") or DEFAULT_URL, type=server_url,
                   help=f"the server; a trailing /v1 is fine (default MOCKGLOT_URL or {DEFAULT_URL})")  # fmt: skip
    p.add_argument("--api-key", default=os.environ.get("MOCKGLOT_API_KEY") or DEFAULT_API_KEY,
                   help=f"API key (default MOCKGLOT_API_KEY or {DEFAULT_API_KEY})")  # fmt: skip
    p.add_argument("--mode", default=DEFAULT_MODE, help=f"session mode (default {DEFAULT_MODE})")
    p.add_argument("--source-language", help="the customer's language, e.g. de (default: auto-detect)")
    p.add_argument("--target-language", help="the agent's language, e.g. en (default: auto-detect)")
    p.add_argument("--speaker", choices=["customer", "agent"], default="customer", help="who speaks in FILE")
    p.add_argument("--scenario", help="the session's scenario on mockglot (sent as metadata.mockglot_scenario)")
    p.add_argument("--ai-agent", metavar="JSON",
                   help=f"an ai_agent session's AI agent, the API's `ai_agent` object: {EXAMPLE_AGENT}")  # fmt: skip
    p.add_argument("--agent-id", metavar="ID",
                   help="instead of --ai-agent: a saved agent (agt_..., made with POST /v1/agents)")  # fmt: skip
    p.add_argument("--overrides", metavar="JSON",
                   help=f"with --agent-id: the saved agent's fields to change for this session (the API's "
                        f"`overrides`), e.g. {EXAMPLE_OVERRIDES}")  # fmt: skip
    p.add_argument("--speed", choices=["realtime", "full"], default="realtime",
                   help="send at the pace of a call (default) or as fast as the socket takes it")  # fmt: skip


def server_url(url: str) -> str:
    """The server's root: `http://host:8080/v1` (the API's own prefix, as a banner or a client config has it)
    means `http://host:8080`, since the client adds `/v1` itself."""
    return url.rstrip("/").removesuffix("/v1")


# --- audio files --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Wav:
    format: int  # WAVE_FORMAT_PCM or WAVE_FORMAT_MULAW (the sub-format of an extensible file)
    channels: int
    rate_hz: int
    bits: int
    data: bytes


def parse_wav(content: bytes) -> Wav:
    """The fmt and data chunks of a RIFF/WAVE file; other chunks (LIST, fact, ...) are skipped."""
    if len(content) < 12 or content[:4] != b"RIFF" or content[8:12] != b"WAVE":
        raise ValueError("not a WAV file (no RIFF/WAVE header)")
    fmt = data = None
    position = 12
    while position + 8 <= len(content):
        chunk_id = content[position : position + 4]
        size = int.from_bytes(content[position + 4 : position + 8], "little")
        chunk = content[position + 8 : position + 8 + size]
        if chunk_id == b"fmt ":
            fmt = chunk
        elif chunk_id == b"data":
            data = chunk
        position += 8 + size + (size & 1)
    if fmt is None or len(fmt) < 16:
        raise ValueError("the WAV file has no fmt chunk")
    if data is None:
        raise ValueError("the WAV file has no data chunk")
    tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", fmt[:16])
    if tag == WAVE_FORMAT_EXTENSIBLE and len(fmt) >= 26:
        tag = int.from_bytes(fmt[24:26], "little")  # the sub-format GUID starts with the format tag
    return Wav(tag, channels, rate, bits, data)


def wav_to_mulaw(wav: Wav) -> bytes:
    """8 kHz mono mu-law, the only audio the stream takes."""
    if wav.channels != 1:
        raise ValueError(f"the WAV file has {wav.channels} channels: the stream takes mono audio")
    low, high = WAV_RATES_HZ
    if not low <= wav.rate_hz <= high:  # a broken header: resampling would fail on it
        raise ValueError(f"the WAV file says {wav.rate_hz} samples a second: give audio of {low:,} to {high:,} Hz")
    if wav.format == WAVE_FORMAT_MULAW and wav.bits == 8:
        if wav.rate_hz == codec.SAMPLE_RATE_HZ:
            return wav.data
        pcm = codec.mulaw_to_pcm(wav.data)
    elif wav.format == WAVE_FORMAT_PCM and wav.bits == 16:
        pcm = wav.data[: len(wav.data) // 2 * 2]
    else:
        raise ValueError(
            f"unsupported WAV encoding (format {wav.format}, {wav.bits}-bit): use 16-bit PCM or 8-bit mu-law"
        )
    return codec.pcm_to_mulaw(codec.resample(pcm, wav.rate_hz, codec.SAMPLE_RATE_HZ))


def read_audio(path: Path) -> bytes:
    """The file as 8 kHz mu-law: raw `.ulaw` as it is, a WAV converted. Errors are `CliError`s (exit 2)."""
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}", EXIT_USAGE) from None
    if path.suffix.lower() in RAW_MULAW_SUFFIXES:
        mulaw = content
    else:
        try:
            mulaw = wav_to_mulaw(parse_wav(content))
        except ValueError as exc:
            raise CliError(f"{path}: {exc} (raw 8 kHz mu-law must be named *.ulaw)", EXIT_USAGE) from None
    if not mulaw:
        raise CliError(f"{path} holds no audio", EXIT_USAGE)
    return mulaw


# --- events -------------------------------------------------------------------------------------------------


@dataclass
class EventPrinter:
    """One line per event; runs of `audio.output` frames become one line with their count per turn, printed when
    the run ends (another turn's audio, a pause of `AUDIO_GAP_SECONDS`, the end), not when other events come."""

    out: TextIO
    errors: int = 0
    audio_frames: dict[tuple[int, str], int] = field(default_factory=dict)
    _run: tuple[int, str] | None = None  # the (turn, listener) whose audio frames are being counted
    _run_frames: int = 0

    def line(self, kind: str, text: str) -> None:
        print(f"{kind:<8} {text}", file=self.out, flush=True)

    def show(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "audio.output":
            self._count_audio((frame.get("turn", 0), frame.get("listener", "?")))
            return
        if kind not in ("transcript.partial", "transcript.final"):
            self.flush()  # the stream is ending or failing: the audio before it has ended
        if kind == "session.ready":
            source, target = frame.get("source_language") or "auto", frame.get("target_language") or "auto"
            self.line("ready", f"{frame.get('session_id')} {frame.get('mode')} {source} -> {target}")
        elif kind == "transcript.partial":
            self.line("partial", f"{_who(frame)}  {frame.get('text')} ...")
        elif kind == "transcript.final":
            self.line("final", f"{_who(frame)}  {frame.get('text')}{_translated(frame)}  {_timing(frame)}")
        elif kind == "session.error":
            self.errors += 1
            error = frame.get("error") or {}
            param = f" (param {error['param']})" if error.get("param") else ""
            self.line("error", f"{error.get('code')}{param}: {error.get('message')}")
        elif kind == "session.ended":
            self.line("ended", f"reason {frame.get('reason')}")
        elif kind == "pong":
            self.line("pong", "")
        elif kind == MALFORMED:
            self.errors += 1
            self.line("error", f"a frame that is not a JSON object: {str(frame.get('raw'))[:80]!r}")
        else:
            self.line(str(kind), str({k: v for k, v in frame.items() if k not in ("type", "session_id")}))

    def _count_audio(self, key: tuple[int, str]) -> None:
        if key != self._run:
            self.flush()
            self._run = key
        self._run_frames += 1
        self.audio_frames[key] = self.audio_frames.get(key, 0) + 1

    @property
    def pending(self) -> bool:
        return self._run is not None

    def flush(self) -> None:
        """Print the pending run of audio frames, if any."""
        if self._run is None:
            return
        (turn, listener), frames = self._run, self._run_frames
        total = self.audio_frames[self._run]
        so_far = f", {total} so far" if total != frames else ""
        self.line("audio", f"#{turn} -> {listener}  {frames} audio.output frames{so_far}")
        self._run, self._run_frames = None, 0


def _who(frame: dict[str, Any]) -> str:
    return f"{frame.get('speaker')} #{frame.get('turn')}"


def _translated(frame: dict[str, Any]) -> str:
    translation = frame.get("translation")
    return f"  => {_tagged(translation)}" if translation else ""


def _tagged(translation: dict[str, Any]) -> str:
    """`[en] text`, once: a pseudo-translation's text already starts with its `[en]`."""
    tag, text = f"[{translation.get('language')}]", str(translation.get("text"))
    return text if text.startswith(tag + " ") else f"{tag} {text}"


def _timing(frame: dict[str, Any]) -> str:
    start, end = frame.get("start_ms"), frame.get("end_ms")
    span = f", {start / 1000:.1f}-{end / 1000:.1f} s" if start is not None and end is not None else ""
    confidence = frame.get("confidence")
    shown = round(confidence, 2) if isinstance(confidence, float) else confidence
    return f"({shown}{span})"


def print_transcript(transcript: dict[str, Any], out: TextIO) -> None:
    turns = transcript.get("turns") or []
    count = f"{len(turns)} turn{'' if len(turns) == 1 else 's'}"
    print(f"\ntranscript {transcript.get('id')} ({transcript.get('status')}, {count})", file=out)
    for turn in turns:
        print(f"  [{turn.get('speaker')}] {turn.get('text')}", file=out)
        if turn.get("translation"):
            print(f"      {_tagged(turn['translation'])}", file=out)
    out.flush()


# --- the session --------------------------------------------------------------------------------------------


def session_body(args: argparse.Namespace) -> dict[str, Any]:
    """The create body. What the contract requires that the flags leave out is a usage error, before any request."""
    body: dict[str, Any] = {"mode": args.mode}
    if args.ai_agent is not None:
        body["ai_agent"] = _json_object("--ai-agent", args.ai_agent, EXAMPLE_AGENT)
    if args.agent_id:
        body["agent_id"] = args.agent_id
    if args.overrides is not None:
        if not args.agent_id:
            raise CliError("--overrides changes a saved agent's fields: give its --agent-id agt_... too", EXIT_USAGE)
        body["overrides"] = _json_object("--overrides", args.overrides, EXAMPLE_OVERRIDES)
    if args.mode == "ai_agent" and "ai_agent" not in body and "agent_id" not in body:
        raise CliError(
            f"--mode ai_agent needs its AI agent: --ai-agent {EXAMPLE_AGENT} (the API's `ai_agent` object), or "
            "--agent-id agt_... (a saved agent)",
            EXIT_USAGE,
        )
    if args.source_language:
        body["source_language"] = args.source_language
    if args.target_language:
        body["target_language"] = args.target_language
    if args.scenario:
        body["metadata"] = {"mockglot_scenario": args.scenario}
    return body


def _json_object(flag: str, text: str, example: str) -> dict[str, Any]:
    try:
        value = msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise CliError(f"{flag} is not JSON ({exc}): give an object, e.g. {example}", EXIT_USAGE) from None
    if not isinstance(value, dict):
        raise CliError(f"{flag} must be a JSON object, e.g. {example}", EXIT_USAGE)
    return value


async def _send(stream: Stream, speaker: str, mulaw: bytes, realtime: bool) -> None:
    """All the audio, then `session.end`; a server that closed early just stops it."""
    from websockets.exceptions import ConnectionClosed

    try:
        await stream.send_audio(speaker, mulaw, realtime=realtime)
        await stream.send_json({"type": "session.end"})
    except ConnectionClosed:
        pass


async def _receive(stream: Stream, printer: EventPrinter) -> None:
    """Print frames until the server closes the socket; a run of audio frames as soon as it pauses."""
    from websockets.exceptions import ConnectionClosed

    clock = asyncio.get_running_loop().time
    last_audio = clock()
    try:
        while True:
            if printer.pending:
                try:
                    frame = await stream.recv(max(0.0, last_audio + AUDIO_GAP_SECONDS - clock()))
                except TimeoutError:
                    printer.flush()
                    continue
            else:
                frame = await stream.recv(IDLE_TIMEOUT_SECONDS)
            if frame.get("type") == "audio.output":
                last_audio = clock()
            printer.show(frame)
    except ConnectionClosed:
        printer.flush()
    except TimeoutError:
        printer.flush()
        raise CliError(f"no frame from the server for {IDLE_TIMEOUT_SECONDS:g} s; giving up") from None


async def stream_file(args: argparse.Namespace, body: dict[str, Any], mulaw: bytes, out: TextIO) -> int:
    from mockglot.testing.client import Client

    async with Client(args.url, args.api_key) as client:
        session = await client.create_session(**body)
        seconds = len(mulaw) / codec.SAMPLE_RATE_HZ
        print(f"session  {session['id']} created; streaming {seconds:.1f} s of {args.speaker} audio "
              f"({args.speed})", file=out, flush=True)  # fmt: skip
        printer = EventPrinter(out)
        try:
            stream = await client.open_stream(session)
            sender = asyncio.create_task(_send(stream, args.speaker, mulaw, args.speed == "realtime"))
            try:
                await _receive(stream, printer)
            finally:
                sender.cancel()
                await stream.ws.close()
        finally:
            summary = await client.end_session(session["id"])  # the CLI made the session: it always ends it
        print(f"session  {summary['id']} ended after {summary.get('duration_seconds')} s", file=out, flush=True)
        print_transcript(await client.transcript(session["id"]), out)
    if stream.close_code != NORMAL_CLOSE:
        raise CliError(f"the stream closed with code {stream.close_code}")
    if printer.errors:
        raise CliError(f"the server reported {printer.errors} error(s) on the stream")
    return EXIT_OK


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """The `mockglot stream` command; every failure is one line on stderr and an exit code."""
    import httpx
    from websockets.exceptions import InvalidHandshake

    from mockglot.testing.client import KallglotError

    out, err = out or sys.stdout, err or sys.stderr  # looked up now: callers (and pytest) may have replaced them
    try:
        mulaw = read_audio(Path(args.file))
        return asyncio.run(stream_file(args, session_body(args), mulaw, out))
    except CliError as exc:
        message, code = str(exc), exc.exit_code
    except KallglotError as exc:
        message, code = str(exc), EXIT_FAILED
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        message, code = f"bad --url {args.url!r}: {exc}", EXIT_USAGE
    except httpx.TransportError as exc:
        reason = str(exc) or type(exc).__name__
        message, code = (
            f"cannot reach {args.url}: {reason} (is a server running? set --url or MOCKGLOT_URL)",
            EXIT_FAILED,
        )
    except (InvalidHandshake, OSError) as exc:
        message, code = f"cannot open the stream: {exc}", EXIT_FAILED
    except KeyboardInterrupt:
        message, code = "interrupted", EXIT_INTERRUPTED
    print(f"mockglot stream: {message}", file=err, flush=True)
    return code
