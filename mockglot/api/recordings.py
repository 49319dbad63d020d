"""Recordings: a session's list (cursor pagination), one recording, its MP3, delete (kallglot-api.md §6).

[emulator] What a recording holds, and when it fails, is decided in `mockglot.state.recordings`.
"""

from __future__ import annotations

from mockglot import render, wire
from mockglot.api import pagination
from mockglot.api.endpoint import Context, Endpoint, Reply
from mockglot.api.pagination import page_query
from mockglot.errors import ApiError


async def list_recordings(ctx: Context) -> Reply:
    session = ctx.state.sessions.get(ctx.key.owner, ctx.path("session_id"))
    page = ctx.state.recordings.page(session, *page_query(ctx))
    await ctx.state.recordings.settled(page.items)
    return Reply(200, wire.RecordingList(data=[render.recording(r) for r in page.items], has_more=page.has_more))


async def get_recording(ctx: Context) -> Reply:
    record = ctx.state.recordings.get(ctx.key.owner, ctx.path("recording_id"))
    await ctx.state.recordings.settled([record])
    return Reply(200, render.recording(record))


async def get_audio(ctx: Context) -> Reply:
    record = ctx.state.recordings.get(ctx.key.owner, ctx.path("recording_id"))
    await ctx.state.recordings.settled([record])
    if record.status != "ready":
        raise ApiError(
            "recording_not_found",
            f"Recording {record.id} failed and has no audio: {record.failure_reason}",
            param="id",
        )
    headers = {"Content-Disposition": f'attachment; filename="recording-{record.session.id}.mp3"'}
    return Reply(200, record.audio, media_type="audio/mpeg", headers=headers)


async def delete_recording(ctx: Context) -> Reply:
    record = ctx.state.recordings.delete(ctx.key.owner, ctx.path("recording_id"))
    return Reply(200, wire.RecordingDeleted(id=record.id))


ENDPOINTS = [
    Endpoint(
        "GET", "/v1/sessions/{session_id}/recordings", list_recordings, "recordings:read",
        "List a session's recordings", response=wire.RecordingList, query=pagination.QUERY,
    ),
    Endpoint(
        "GET", "/v1/recordings/{recording_id}", get_recording, "recordings:read", "Retrieve a recording",
        response=wire.Recording,
    ),
    Endpoint(
        "DELETE", "/v1/recordings/{recording_id}", delete_recording, "recordings:delete", "Delete a recording",
        response=wire.RecordingDeleted,
    ),
    Endpoint(
        "GET", "/v1/recordings/{recording_id}/audio", get_audio, "recordings:read", "Download a recording's audio",
        media_types=("audio/mpeg",),
    ),
]  # fmt: skip
