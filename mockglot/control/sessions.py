"""Sessions as the server sees them: state, the frame journal (with a blocking wait), received audio, inject."""

from __future__ import annotations

import msgspec

from mockglot import wire
from mockglot.control.endpoint import ControlContext, Endpoint, Reply, query_float
from mockglot.errors import ApiError
from mockglot.speech import codec
from mockglot.speech.wav import wav
from mockglot.state.auth import redact
from mockglot.state.clock import isoformat
from mockglot.state.journal import JournalEntry
from mockglot.state.sessions import SessionRecord


def find(ctx: ControlContext) -> SessionRecord:
    session_id = ctx.path("session_id")
    record = ctx.state.sessions.find(session_id)
    if record is None:
        raise ApiError("session_not_found", f"No session {session_id!r} on this server.", param="session_id")
    return record


def describe(record: SessionRecord, now: float) -> wire.ControlSession:
    return wire.ControlSession(
        id=record.id,
        organization=record.owner[0],
        environment=record.owner[1],
        api_key=redact(record.api_key),
        status=record.status,
        mode=record.request.mode,
        scenario=record.scenario,
        engine=record.engine,
        connected=record.connected,
        end_reason=record.end_reason,
        turns=len(record.turns),
        audio_ms={speaker: codec.ms_of_samples(size) for speaker, size in record.audio_received.items()},
        frames_in=record.journal.count("in"),
        frames_out=record.journal.count("out"),
        created_at=isoformat(record.created_at),
        source_language=record.request.source_language,
        target_language=record.request.target_language,
        duration_seconds=record.duration_seconds(now),
        metadata=record.metadata,
    )


async def list_sessions(ctx: ControlContext) -> Reply:
    key = ctx.query("api_key")
    organization = ctx.query("organization")
    if key is not None:
        found = ctx.state.keys.get(key)
        organization = found.organization if found else "(no such key)"
    return Reply(
        200, wire.ListOf(data=[describe(r, ctx.state.clock.now()) for r in ctx.state.sessions.all(organization)])
    )


async def get_session(ctx: ControlContext) -> Reply:
    record = find(ctx)
    ctx.state.sessions.read_where_streamed(record)
    return Reply(200, describe(record, ctx.state.clock.now()))


def _direction(ctx: ControlContext) -> str | None:
    direction = ctx.query("direction")
    if direction not in (None, "in", "out"):
        raise ApiError("invalid_field_value", "`direction` is `in` (client to server) or `out`.", param="direction")
    return direction


async def frames(ctx: ControlContext) -> Reply:
    """The journal; `?wait_for=N` blocks until N matching frames exist (or `timeout` seconds pass)."""
    record = find(ctx)
    ctx.state.sessions.read_where_streamed(record)
    direction = _direction(ctx)
    type_ = ctx.query("type")
    wait_for = int(query_float(ctx, "wait_for", 0, 0, 1_000_000))
    timeout = query_float(ctx, "timeout", 10, 0, 300)
    complete = True
    if wait_for:
        waiting = record.journal.wait_for(wait_for, timeout, direction, type_)  # type: ignore[arg-type]
        complete = await ctx.state.coordinator.outside(waiting)
    entries = [
        e
        for e in record.journal.entries
        if (direction is None or e.direction == direction) and (type_ is None or e.type == type_)
    ]
    return Reply(
        200,
        wire.FrameJournal(
            session_id=record.id,
            count=len(entries),
            complete=complete,
            dropped=record.journal.dropped,
            frames=[_frame(e) for e in entries],
        ),
    )


def _frame(entry: JournalEntry) -> wire.JournalFrame:
    cut = entry.length != len(entry.text)
    return wire.JournalFrame(
        index=entry.index,
        direction=entry.direction,
        at=isoformat(entry.at),
        type=entry.type,
        frame=entry.text if cut else _decoded(entry.text),
        truncated=cut,
        unix=round(entry.at, 3),
    )


def _decoded(text: str) -> object:
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError:
        return text


async def audio(ctx: ControlContext) -> Reply:
    record = find(ctx)
    ctx.state.sessions.read_where_streamed(record)
    speaker = ctx.path("speaker")
    if speaker not in ("customer", "agent"):
        raise ApiError("invalid_field_value", "The speaker is `customer` or `agent`.", param="speaker")
    encoding = ctx.query("encoding", "mulaw")
    if encoding not in ("mulaw", "pcm"):
        raise ApiError("invalid_field_value", "`encoding` is `mulaw` (as received) or `pcm`.", param="encoding")
    data = bytes(record.audio.get(speaker, b""))  # the first MAX_AUDIO_SECONDS of it
    body = wav(data if encoding == "mulaw" else codec.mulaw_to_pcm(data), mulaw=encoding == "mulaw")
    headers = {"Content-Disposition": f'attachment; filename="{record.id}-{speaker}.wav"'}
    return Reply(200, body, media_type="audio/wav", headers=headers)


async def inject(ctx: ControlContext) -> Reply:
    record = find(ctx)
    ctx.state.sessions.read_where_streamed(record)
    request = ctx.parse(wire.InjectRequest)
    if (request.frame is None) == (request.raw is None):
        raise ApiError("invalid_field_value", "Give exactly one of `frame` (a JSON object) or `raw` (text).")
    connection = ctx.state.streams.connections.get(record.id)
    if connection is None:
        raise ApiError("session_not_connected", f"Session {record.id} has no open stream to inject into.")
    if request.frame is not None:
        frame = {"session_id": record.id, **request.frame}
        connection.send_raw(str(frame.get("type", "(injected)")), msgspec.json.encode(frame).decode())
    elif request.raw is not None:  # always, by the check above
        connection.send_raw("(injected)", request.raw)
    return Reply(202, wire.Injected())


ENDPOINTS = [
    Endpoint(
        "GET", "/_mockglot/sessions", list_sessions, "", "List sessions",
        response=wire.ListOf, query={"api_key": str, "organization": str},
    ),
    Endpoint(
        "GET", "/_mockglot/sessions/{session_id}", get_session, "", "Inspect a session", response=wire.ControlSession
    ),
    Endpoint(
        "GET", "/_mockglot/sessions/{session_id}/frames", frames, "", "Read the frame journal",
        response=wire.FrameJournal, query={"wait_for": int, "timeout": float, "type": str, "direction": str},
    ),
    Endpoint(
        "GET", "/_mockglot/sessions/{session_id}/audio/{speaker}", audio, "", "Download received audio as WAV",
        query={"encoding": str}, media_types=("audio/wav",),
    ),
    Endpoint(
        "POST", "/_mockglot/sessions/{session_id}/inject", inject, "", "Inject a frame into a live stream",
        request=wire.InjectRequest, response=wire.Injected, status=202, body_required=True,
    ),
]  # fmt: skip
