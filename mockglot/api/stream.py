"""The stream: `/v1/sessions/{id}/connect` (kallglot-api.md §7).

One `Connection` per socket: a reader that validates client frames and feeds the session's pipeline, and one
player per listener that paces translated speech. Frames are journaled and sent in the order they are made, at
once, by whoever makes them (`run_now`); only while the socket's buffer is full does a task finish the send in
progress and those queued behind it. Bad frames get a `session.error` and the stream goes on.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import time
from collections import deque
from collections.abc import Coroutine
from typing import Any, get_args

import msgspec
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from mockglot import transport, validation, wire
from mockglot.engines.hub import StreamHub
from mockglot.engines.pipeline import SessionPipeline, SpeechJob
from mockglot.errors import STREAM_CLOSE_CODES, ApiError
from mockglot.faults import ArmedFault
from mockglot.speech import codec
from mockglot.state.auth import Credentials
from mockglot.state.feed import FEED_FRAME_CHARS, Frame, session_data
from mockglot.state.journal import Direction
from mockglot.state.server import ServerState
from mockglot.state.sessions import SessionRecord

log = logging.getLogger("mockglot.stream")

OUTPUT_FRAME_MS = 100
OUTPUT_FRAME_BYTES = codec.SAMPLE_RATE_HZ * OUTPUT_FRAME_MS // 1000
MAX_PAYLOAD_BYTES = 64 * 1024
MAX_PAYLOAD_B64 = (MAX_PAYLOAD_BYTES + 2) // 3 * 4
MAX_FRAME_BYTES = 256 * 1024  # a client frame past this gets a session.error unread (the transport's limit is higher)
SPEAKERS = ("customer", "agent")
RECONNECT_GRACE_SECONDS = 1.0  # how long a new socket waits for the session's old one to finish closing
PACING_SLACK_MS = 2000  # with pacing checks on, audio may run this far ahead of real time, plus 2x


def frame_error(session_id: str, exc: ApiError) -> wire.SessionError:
    error = wire.FrameError(type=exc.type, code=exc.code, message=exc.message, param=exc.param)
    return wire.SessionError(session_id=session_id, error=error)


_client_frame_decoder = msgspec.json.Decoder(wire.ClientFrame)


# Each frame's `type` tag, as its wire type declares it.
FRAME_TYPES: dict[type, str] = {
    kind: str(kind.__struct_config__.tag) for kind in (*get_args(wire.ClientFrame), *get_args(wire.ServerFrame))
}


def run_now(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
    """Run `coro` here until it first waits: None if it finished without waiting, else a task that finishes it.

    Sending a frame through uvicorn waits only while the socket's buffer is full, so a frame sent this way costs
    no task switch. Until `coro` first waits, an exception is raised here, as from a plain call."""
    try:
        waiting_on = coro.send(None)
    except StopIteration:
        return None
    return asyncio.ensure_future(_finish(coro, waiting_on))


async def _finish(coro: Coroutine[Any, Any, None], waiting_on: asyncio.Future[Any] | None) -> None:
    """Drive a started coroutine as a task would: wait until what it waits on is done (None: it only yielded),
    then resume it; it reads the outcome itself. (Never cancelled: the connection awaits it to the end.)"""
    while True:
        if waiting_on is None:
            await asyncio.sleep(0)
        else:
            await asyncio.wait((waiting_on,))
        try:
            waiting_on = coro.send(None)
        except StopIteration:
            return


def parse_client_frame(text: str) -> wire.ClientFrame:
    """Decode and validate one client frame; every failure is an ApiError naming the field.

    A well-formed frame decodes in one typed pass; anything else takes the two-step path below, which names
    what is wrong (both accept exactly the same frames)."""
    if len(text) > MAX_FRAME_BYTES // 4 and len(text.encode()) > MAX_FRAME_BYTES:
        raise ApiError(
            "invalid_message",
            f"The frame is larger than {MAX_FRAME_BYTES // 1024} KiB: send audio in 20-200 ms frames.",
        )
    try:
        return _client_frame_decoder.decode(text)
    except msgspec.MsgspecError:
        pass
    except RecursionError:
        raise _too_deep() from None
    try:
        raw = msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise ApiError(
            "invalid_message", f"Frames must be JSON text: {validation.malformed_json(text, exc)}."
        ) from None
    except RecursionError:
        raise _too_deep() from None
    if not isinstance(raw, dict):
        raise ApiError("invalid_message", f"A frame must be a JSON object, not {type(raw).__name__}.")
    kind = raw.get("type")
    if kind not in ("audio.input", "ping", "session.end"):
        raise ApiError(
            "invalid_message",
            f"Unknown frame type {kind!r}: send audio.input, ping or session.end.",
            param="type",
        )
    try:
        frame: wire.ClientFrame = msgspec.convert(raw, wire.ClientFrame)
    except msgspec.ValidationError as exc:
        path = validation.finding(exc).param
        code = "invalid_audio_format" if path and path.startswith("audio") else "invalid_message"
        if path == "speaker":
            code = "invalid_speaker"
        raise ApiError(code, f"Invalid {kind} frame: {exc}.", param=path) from None
    return frame


def _too_deep() -> ApiError:
    return ApiError(
        "invalid_message",
        "The frame nests JSON deeper than the decoder follows: a frame is one object with at most one nested "
        "object (audio).",
    )


def unknown_frame_fields(frame: wire.ClientFrame, text: str) -> list[str]:
    """The fields of a valid frame that its type does not define (a misspelling is otherwise silently ignored)."""
    try:
        raw = msgspec.json.decode(text)
    except (msgspec.DecodeError, RecursionError):  # an unknown field nested past the decoder's depth
        return []
    return [f for f in validation.unknown_fields(raw, type(frame)) if f != "type"]


_base64_decoder = msgspec.json.Decoder(bytes)


def decode_base64(payload: str) -> bytes:
    """`base64.b64decode(payload, validate=True)`, at a quarter of its cost for a canonical payload: msgspec's
    base64 decoder (the payload quoted as a JSON string, when it holds nothing JSON would unescape) or else the
    strict decoder; what either accepts, the validating one decodes alike, and the rest gets its say."""
    if '"' not in payload and "\\" not in payload:
        try:
            return _base64_decoder.decode(f'"{payload}"')
        except msgspec.DecodeError:
            pass
    try:
        return binascii.a2b_base64(payload, strict_mode=True)
    except (binascii.Error, ValueError):
        return base64.b64decode(payload, validate=True)


def audio_bytes(frame: wire.AudioInput) -> bytes:
    """The frame's mu-law audio, after every check §7 names."""
    audio = frame.audio
    if frame.speaker not in SPEAKERS:
        raise ApiError("invalid_speaker", f"Unknown speaker {frame.speaker!r}: use customer or agent.", param="speaker")
    if audio.encoding != "mulaw":
        raise ApiError(
            "invalid_audio_format",
            f"Unsupported encoding {audio.encoding!r}: send 8 kHz mono mu-law (encoding: mulaw).",
            param="audio.encoding",
        )
    if audio.sample_rate_hz != codec.SAMPLE_RATE_HZ:
        raise ApiError(
            "invalid_audio_format",
            f"Unsupported sample rate {audio.sample_rate_hz}: send 8000 Hz mu-law.",
            param="audio.sample_rate_hz",
        )
    if len(audio.payload) > MAX_PAYLOAD_B64 + 4:
        raise ApiError(
            "invalid_audio_format",
            f"The payload is larger than {MAX_PAYLOAD_BYTES} bytes: send 20-200 ms frames.",
            param="audio.payload",
        )
    try:
        data = decode_base64(audio.payload)
    except (binascii.Error, ValueError):
        raise ApiError("invalid_audio_format", "The payload is not valid base64.", param="audio.payload") from None
    if not data:
        raise ApiError("invalid_audio_format", "The payload is empty.", param="audio.payload")
    if len(data) > MAX_PAYLOAD_BYTES:
        raise ApiError(
            "invalid_audio_format",
            f"The payload is larger than {MAX_PAYLOAD_BYTES} bytes: send 20-200 ms frames.",
            param="audio.payload",
        )
    return data


class Connection:
    """One client socket on one session."""

    def __init__(self, websocket: WebSocket, record: SessionRecord, pipeline: SessionPipeline, hub: StreamHub) -> None:
        self.websocket = websocket
        self.record = record
        self.pipeline = pipeline
        self.hub = hub
        self.state = hub.state
        # Frames made while a send waits for the socket's buffer to drain, and the task finishing that send;
        # None in the queue: close the socket after what is before it. `closed`: nothing more goes out.
        self.backlog: deque[tuple[str, str] | None] = deque()
        self.writer: asyncio.Task[None] | None = None
        self.closed = False
        self.players: dict[str, Player] = {}
        self.instant = hub.settings.output_pace == "instant"
        self.close_code: int | None = None
        self.frames_in = 0
        self.faults: list[ArmedFault] = hub.faults_for(record)
        self.first_audio_wall: dict[str, float] = {}
        self.ended = False
        self.observer = self.state.contract.stream(record.owner[0], record.id)  # the contract report
        self.journal = record.journal
        self.clock = self.state.clock
        self.feed = self.state.feed
        self.pong: str | None = None  # the session's `pong`, encoded once

    # --- Sink ---------------------------------------------------------------------------------------

    def send(self, frame: wire.ServerFrame) -> None:
        self.send_encoded(FRAME_TYPES[type(frame)], wire.encode(frame).decode())

    def send_encoded(self, kind: str, text: str) -> None:
        """Send a server frame as `wire.encode` writes it: what `send` encodes, or a frame filled in from one
        (`pong`, `audio.output`). tests/frame_schema.py checks each against the AsyncAPI document."""
        self._out((kind, text))

    def send_raw(self, kind: str, text: str) -> None:
        """Send text as it is (the control plane's inject, a malformed-frame fault)."""
        self._out((kind, text))

    def abort(self, code: int, message: str) -> None:
        self._error(ApiError("session_not_found", message))
        self.close_code = code
        self._out(None)

    async def speak(self, job: SpeechJob) -> None:
        """Say a turn's translated speech. At instant pace it is sent here and now, so every turn's audio
        follows its final before anything else happens; at real time a player per listener paces it."""
        if self.instant:
            await self._say(job)
            return
        player = self.players.get(job.listener)
        if player is None:
            player = self.players[job.listener] = Player(self)
        player.add(job)

    def _journal(self, direction: Direction, at: float, kind: str, text: str) -> None:
        """Journal a frame and show it to the inspector's feed."""
        record = self.record
        entry = self.journal.append(direction, at, kind, text)
        frame = Frame(entry.index, direction, kind, entry.text[:FEED_FRAME_CHARS], entry.length)
        self.feed.publish("frame", record.id, record.owner[0], record.api_key, frame, at)

    # --- tasks --------------------------------------------------------------------------------------

    def _out(self, item: tuple[str, str] | None) -> None:
        """Journal and send a frame now (None: close the socket), or queue it behind a send that waits."""
        if self.writer is not None:
            self.backlog.append(item)
            return
        if self.closed:
            return
        try:
            if item is None:
                self.closed = True
                if self.websocket.client_state != WebSocketState.CONNECTED:
                    return
                sending = self.websocket.close(self.close_code or 1000)
            else:
                kind, text = item
                self._journal("out", self.clock.now(), kind, text)
                self.observer.frame_out(kind)
                sending = self.websocket.send({"type": "websocket.send", "text": text})
            self.writer = run_now(sending)
        except Exception:  # the socket is gone: nothing more goes out
            self.closed = True
        if self.writer is not None:
            self.writer.add_done_callback(self._written)

    def _written(self, task: asyncio.Task[None]) -> None:
        """A send that had to wait is done: send what queued behind it, in order."""
        self.writer = None
        if not task.cancelled() and task.exception() is not None:
            self.closed = True
        while self.backlog and self.writer is None:
            self._out(self.backlog.popleft())

    async def _sent(self) -> None:
        """Wait until every frame made so far is written (and the socket closed, if that was asked)."""
        while self.writer is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.writer)

    async def _say(self, job: SpeechJob) -> None:
        """Send the job's audio in 100 ms frames, all at once (instant pace)."""
        audio = job.audio if job.audio is not None else await self.hub.synthesize(job.text, job.language)
        frame = self.output_frame(job)
        for payload in self.hub.frame_payloads(audio, OUTPUT_FRAME_BYTES):
            self.send_audio(job, frame, payload)

    def output_frame(self, job: SpeechJob) -> tuple[str, str]:
        """The job's `audio.output` frame as `wire.encode` writes it, cut around its `sequence` and `payload` (the
        last fields): a job's 100 ms frames differ only there, and filling them in (`send_audio`) costs a fifth
        of building and encoding each one."""
        frame = wire.AudioOutput(
            session_id=self.record.id,
            turn=job.turn,
            speaker=job.speaker,  # type: ignore[arg-type]
            listener=job.listener,  # type: ignore[arg-type]
            language=job.language,
            sequence=0,
            audio=wire.OutputAudio(payload=""),
        )
        text = wire.encode(frame).decode()
        at = text.rindex('"sequence":0,') + len('"sequence":')  # keys are the only unescaped quotes
        return text[:at], text[at + 1 : -len('"}}')]

    def send_audio(self, job: SpeechJob, frame: tuple[str, str], payload: str) -> None:
        """One `audio.output` frame of `job` (`frame`: its `output_frame`): `payload`, 100 ms of its audio in
        base64 (`StreamHub.frame_payloads`), with the listener's next sequence."""
        head, middle = frame
        sequence = self.pipeline.next_output_sequence(job.listener)
        self.send_encoded("audio.output", f'{head}{sequence}{middle}{payload}"}}}}')

    async def _drain_players(self) -> None:
        """Send what is left to say, at once: the stream is ending."""
        self.ended = True
        for player in list(self.players.values()):
            await player.drained()

    def _stop_players(self) -> None:
        for player in self.players.values():
            player.stop()

    # --- lifecycle ----------------------------------------------------------------------------------

    async def run(self) -> None:
        record = self.record
        record.connected = True
        self.state.streams.connect(record, self)
        self.state.feed.publish("session.connected", record.id, record.owner[0], record.api_key, session_data(record))
        self.pipeline.sink = self
        try:
            self.send(
                wire.SessionReady(
                    session_id=record.id,
                    mode=record.request.mode,
                    source_language=self.pipeline.languages["customer"],
                    target_language=self.pipeline.languages["agent"],
                )
            )
            await self._read()
        finally:
            self.state.sessions.detach(record)
            self.state.coordinator.changed()
            self.state.streams.disconnect(record, self)
            self.pipeline.sink = None
            if not self.ended:
                self._stop_players()
            self._out(None)
            await self._sent()
            self.state.feed.publish(  # after the last frame written
                "session.disconnected", record.id, record.owner[0], record.api_key, session_data(record)
            )
            self.observer.closed(self.close_code, self.ended)

    async def _read(self) -> None:
        """Read frames until the socket or the session ends, then wait for the events of the audio read."""
        try:
            await self._read_frames()
        finally:
            await self.pipeline.settled()

    async def _read_frames(self) -> None:
        """Handle each frame in order. Audio goes on to the next frame while its decode runs in a thread; what
        any other frame (or an error, or a fault) does waits for the events of the audio before it, so a
        client sees the same frames in the same order however fast it sends."""
        while self.close_code is None:
            try:
                message = await self.websocket.receive()
            except (WebSocketDisconnect, RuntimeError):
                return
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:  # shutdown, bad UTF-8 or a binary frame (a text frame carries neither mark)
                await self.pipeline.settled()
                if message.get(transport.SHUTDOWN):
                    self._shutting_down()
                    continue
                now = self.state.clock.now()
                if (complaint := message.get(transport.INVALID_UTF8)) is not None:
                    size = len(message.get("bytes") or b"")
                    self._journal("in", now, "(invalid)", f"<{size} bytes, not UTF-8>")
                    self._error(ApiError("invalid_message", f"Text frames must be UTF-8 JSON ({complaint})."))
                    await self._faults()
                    continue
                size = len(message.get("bytes") or b"")
                self._journal("in", now, "(binary)", f"<{size} bytes>")
                self.observer.invalid_frame("")
                self._error(ApiError("invalid_message", "Binary frames are not accepted: send JSON text frames."))
                continue
            try:
                frame = parse_client_frame(text)
            except ApiError as exc:
                await self.pipeline.settled()
                oversized = len(text) > MAX_FRAME_BYTES // 4 and len(text.encode()) > MAX_FRAME_BYTES
                self._journal(
                    "in", self.state.clock.now(), "(invalid)", f"<{len(text)} characters>" if oversized else text
                )
                if not oversized:
                    self.observer.invalid_frame(text)
                self._error(exc)
                await self._faults()
                continue
            if not isinstance(frame, wire.AudioInput):
                await self.pipeline.settled()
            kind = FRAME_TYPES[type(frame)]
            self._journal("in", self.clock.now(), kind, text)
            self.observer.frame_in(kind, unknown_frame_fields(frame, text) if self.observer.wants_check(kind) else None)
            self.frames_in += 1
            if isinstance(frame, wire.AudioInput):
                await self._audio(frame)
            else:
                self.state.sessions.touch(self.record)  # (audio that is kept touches the session itself)
                if isinstance(frame, wire.Ping):
                    if self.pong is None:
                        self.pong = wire.encode(wire.Pong(session_id=self.record.id)).decode()
                    self.send_encoded("pong", self.pong)
                else:
                    await self._finish()
                    return
            if self.faults:  # fixed at connect; most streams have none, and this runs for every frame
                await self.pipeline.settled()  # a fault may count finals
                await self._faults()

    async def _audio(self, frame: wire.AudioInput) -> None:
        try:
            data = audio_bytes(frame)
        except ApiError as exc:
            self.state.sessions.touch(self.record)
            await self._audio_error(exc)
            return
        self.observer.audio(len(data))
        try:
            self.state.sessions.accept_audio(self.record, frame.speaker, frame.sequence, data)
        except ApiError as exc:
            self.state.sessions.touch(self.record)
            await self._audio_error(exc)
            return
        if self.hub.settings.pacing_checks and self._too_fast(frame.speaker):
            await self._audio_error(
                ApiError("rate_limited", "Audio is arriving much faster than real time; send it at real time.")
            )
            self.close_code = 1008
            return
        await self.pipeline.audio(frame.speaker, codec.mulaw_to_pcm(data))

    async def _audio_error(self, exc: ApiError) -> None:
        """An `audio.input` refused: its error comes after the events of the audio before it."""
        await self.pipeline.settled()
        self._error(exc)

    def _too_fast(self, speaker: str) -> bool:
        wall = time.monotonic()
        started = self.first_audio_wall.setdefault(speaker, wall)
        audio_ms = self.record.audio_received[speaker] * 1000 / codec.SAMPLE_RATE_HZ
        return audio_ms > 2 * (wall - started) * 1000 + PACING_SLACK_MS

    async def _faults(self) -> None:
        """Act on the stream faults that fire now (which ones: `faults.py`)."""
        record = self.record
        for rule in self.state.faults.firing_on_stream(
            self.faults, self.frames_in, lambda: self.pipeline.finals, (record.id, record.owner[0], record.api_key)
        ):
            message = rule.message or f"Injected fault: {rule.action}."
            if rule.action == "close":
                if rule.close_code == 1011:
                    self._error(ApiError("internal_error", message))
                self.close_code = rule.close_code
            elif rule.action == "error":
                self._error(ApiError(rule.error_code, message))
            elif rule.action == "malformed":
                self.send_raw("(malformed)", '{"type": "transcript.final", "text": ')
            elif rule.action == "stall":
                await asyncio.sleep(rule.stall_ms / 1000)

    def _error(self, exc: ApiError | None) -> None:
        if exc is not None:
            self.observer.error(exc.code)
            self.send(frame_error(self.record.id, exc))

    def _shutting_down(self) -> None:
        """SIGTERM. Alone, the server takes its sessions with it: they end (`server_shutdown`). Sharing its state,
        it is one worker of several (a rolling restart): the session stays live for the client to reconnect to,
        and the socket closes with 1012 (service restart) after a `session.error` saying so."""
        if not self.state.shared:
            self.state.sessions.end(self.record, "server_shutdown")
            return
        self._error(
            ApiError(
                "service_unavailable",
                "This mockglot worker is shutting down. The session is still live: reconnect to its stream URL "
                "(with a fresh token from GET /v1/sessions/{id} if yours expired) and another worker serves it.",
            )
        )
        self.close_code = 1012

    async def _finish(self) -> None:
        """`session.end`: flush speech in progress, say what is left, then `session.ended`."""
        await self.pipeline.flush()
        await self._drain_players()
        self.state.sessions.end(self.record, "explicit_end")

    def session_ended(self) -> None:
        """The hub's word that this session ended (by `session.end`, the REST end, idle, reset or shutdown)."""
        self.ended = True
        self._stop_players()
        reason = self.record.end_reason or "api_end"
        self.send(wire.SessionEnded(session_id=self.record.id, reason=reason))
        self.close_code = 1001 if reason == "server_shutdown" else 1000  # 1001: going away
        self._out(None)


class Player:
    """Paces one listener's translated speech at real time: its jobs in order, each as 100 ms frames, one per
    100 ms of audio from when the job starts (or the one before it ends). Each frame is sent from a timer
    callback, so a paced frame costs no task switch; only a clip not synthesized yet is awaited, in a task.
    Once the connection has `ended`, what is left goes out at once."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.loop = asyncio.get_running_loop()
        self.jobs: deque[SpeechJob] = deque()
        self.due = self.loop.time()  # loop time the next frame is due
        self.job: SpeechJob | None = None  # the job playing, with its audio and the next frame's offset
        self.audio = b""
        self.payloads: tuple[str, ...] = ()  # the job's audio as `audio.output` payloads
        self.frame = ("", "")  # the job's `Connection.output_frame`
        self.offset = 0
        self.timer: asyncio.TimerHandle | None = None
        self.rendering: asyncio.Task[None] | None = None
        self.stopped = False
        self.idle: asyncio.Future[None] | None = None  # for `drained`: done when nothing is left to say

    def add(self, job: SpeechJob) -> None:
        self.jobs.append(job)
        if self.job is None and self.rendering is None and not self.stopped:
            self._next()

    def _next(self) -> None:
        """Start the next job (its first frame when due), or become idle."""
        self.job = None
        while self.jobs and not self.stopped:
            job = self.jobs.popleft()
            if not self.connection.ended:
                self.due = max(self.due, self.loop.time())
            audio = job.audio if job.audio is not None else self.connection.hub.cached_clip(job.text, job.language)
            if audio is None:
                self.rendering = asyncio.ensure_future(self._render(job))
                return
            if audio:
                self._start(job, audio)
                return
        if self.idle is not None and not self.idle.done():
            self.idle.set_result(None)

    async def _render(self, job: SpeechJob) -> None:
        try:
            audio = await self.connection.hub.synthesize(job.text, job.language)
        except BaseException:
            self.stopped = True  # as when a player task failed: nothing more is said to this listener
            self._next()
            raise
        self.rendering = None
        if audio:
            self._start(job, audio)
        else:
            self._next()

    def _start(self, job: SpeechJob, audio: bytes) -> None:
        self.job, self.audio, self.offset = job, audio, 0
        self.payloads = self.connection.hub.frame_payloads(audio, OUTPUT_FRAME_BYTES)
        self.frame = self.connection.output_frame(job)
        self.timer = self.loop.call_at(self.due, self._play)

    def _play(self) -> None:
        """The next frame is due: send it, and set a timer for the one after (once ended: send them all)."""
        self.timer = None
        job, audio, connection = self.job, self.audio, self.connection
        assert job is not None
        while True:
            offset = self.offset
            self.offset += OUTPUT_FRAME_BYTES
            if not connection.ended:
                self.due += min(OUTPUT_FRAME_BYTES, len(audio) - offset) / codec.SAMPLE_RATE_HZ
            connection.send_audio(job, self.frame, self.payloads[offset // OUTPUT_FRAME_BYTES])
            if self.offset >= len(audio):
                self._next()
                return
            if not connection.ended:
                self.timer = self.loop.call_at(self.due, self._play)
                return

    async def drained(self) -> None:
        """Wait until every job added so far has been said (the connection has `ended`: no more waiting)."""
        if self.stopped or (self.job is None and self.rendering is None):
            return
        if self.idle is None or self.idle.done():
            self.idle = self.loop.create_future()
        await self.idle

    def stop(self) -> None:
        """Say nothing more."""
        self.stopped = True
        self.jobs.clear()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.rendering is not None:
            self.rendering.cancel()
        if self.idle is not None and not self.idle.done():
            self.idle.set_result(None)


async def reject(websocket: WebSocket, session_id: str, exc: ApiError) -> None:
    """A failed connect: one `session.error`, then the close code of the table."""
    await websocket.send_text(wire.encode(frame_error(session_id, exc)).decode())
    await websocket.close(STREAM_CLOSE_CODES.get(exc.code, 1011))


def observe_refused(state: ServerState, session_id: str, exc: ApiError) -> None:
    """A refused connect counts in its session's organization's contract report (none: no such session)."""
    record = state.sessions.find(session_id)
    if record is not None:
        observer = state.contract.stream(record.owner[0], session_id)
        observer.error(exc.code)
        observer.closed(STREAM_CLOSE_CODES.get(exc.code, 1011), True)


def presented_token(websocket: WebSocket) -> str | None:
    return Credentials.read(websocket.headers, websocket.query_params).stream_token


async def admit(hub: StreamHub, session_id: str, token: str | None) -> SessionRecord:
    """Check the token; a reconnect that races its own old socket's close waits for that close to land."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RECONNECT_GRACE_SECONDS
    while True:
        try:
            record: SessionRecord = hub.state.sessions.check_token(session_id, token)
            return record
        except ApiError as exc:
            if exc.code != "session_already_connected" or loop.time() >= deadline:
                raise
        await hub.state.coordinator.outside(asyncio.sleep(0.02))  # the old socket's close may need the state


async def connect(websocket: WebSocket) -> None:
    hub: StreamHub = websocket.app.state.hub
    session_id = websocket.path_params["session_id"]
    await websocket.accept()
    try:
        async with hub.state.coordinator.hold():  # with several workers: the session is connected here, once
            record = await admit(hub, session_id, presented_token(websocket))
            hub.state.sessions.attach(record)
    except ApiError as exc:
        await reject(websocket, session_id, exc)
        observe_refused(hub.state, session_id, exc)
        return
    try:
        await Connection(websocket, record, hub.pipeline(record), hub).run()
    except Exception:
        log.exception("stream on session %s failed", session_id)
        hub.state.sessions.detach(record)
        if websocket.client_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await reject(websocket, session_id, ApiError("internal_error", "mockglot hit an internal error."))
