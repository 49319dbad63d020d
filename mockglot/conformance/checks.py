"""The checks, in the order they run: REST, idempotency, the stream, then what needs mockglot's control plane.

Each asserts one rule of the contract (kallglot-api.md, revision 2) on the wire, and names its source.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
from datetime import datetime
from typing import Any

from mockglot.conformance.receiver import Receiver
from mockglot.conformance.runner import (
    Conformance,
    Failed,
    body_of,
    check,
    expect,
    expect_error,
    expect_request_id,
    expect_status,
)
from mockglot.conformance.stream import FRAME_BYTES, audio_frame, connect_refused, open_socket, speech

ULID = r"[0-9A-HJKMNP-TV-Z]{26}"
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
USAGE_HEADERS = (
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "x-api-credits-remaining",
    "x-api-credits-used",
)
QUICK_START: dict[str, Any] = {
    "mode": "bidirectional_translation",
    "source_language": "de",
    "target_language": "en",
    "metadata": {"external_call_id": "call_abc123"},
}
SESSION_FIELDS = {
    "id", "object", "status", "mode", "provider", "phone_number", "source_language", "target_language", "stream",
    "call", "recording", "metadata", "created_at", "started_at", "ended_at",
}  # fmt: skip
JSON = {"Content-Type": "application/json"}


def unknown_id(prefix: str) -> str:
    return f"{prefix}_{'0' * 26}"


def expect_id(value: Any, prefix: str, what: str) -> None:
    expect(
        isinstance(value, str) and re.fullmatch(f"{prefix}_{ULID}", value),
        f"{what} is {value!r}, expected {prefix}_ + 26 ULID characters",
    )


def expect_timestamp(value: Any, what: str) -> None:
    expect(isinstance(value, str) and TIMESTAMP.match(value), f"{what} is {value!r}, expected 2026-03-10T11:55:00Z")


# --- authentication ---------------------------------------------------------------------------------------


@check("auth.missing", "documented")
async def auth_missing(ctx: Conformance) -> None:
    """No key: 401 invalid_api_key in the error envelope, with the request ID."""
    expect_error(await ctx.http.get(f"/v1/sessions/{unknown_id('sess')}"), 401, "invalid_api_key")


@check("auth.malformed", "documented")
async def auth_malformed(ctx: Conformance) -> None:
    """A malformed key, or another scheme than Bearer: 401 invalid_api_key."""
    path = f"/v1/sessions/{unknown_id('sess')}"
    expect_error(await ctx.request("GET", path, key="not-a-key"), 401, "invalid_api_key")
    expect_error(await ctx.http.get(path, headers={"Authorization": "Basic c2tfdGVzdA=="}), 401, "invalid_api_key")


@check("auth.x_api_key", "documented")
async def auth_x_api_key(ctx: Conformance) -> None:
    """The key is accepted as `X-API-Key` too."""
    response = await ctx.http.get(f"/v1/sessions/{unknown_id('sess')}", headers={"X-API-Key": ctx.api_key})
    expect_error(response, 404, "session_not_found")


@check("auth.stream_token_on_rest", "documented")
async def auth_stream_token(ctx: Conformance) -> None:
    """A stream token is never accepted on REST: 401 invalid_api_key."""
    session = await ctx.create_session()
    response = await ctx.request("GET", f"/v1/sessions/{session['id']}", key=session["stream"]["token"])
    expect_error(response, 401, "invalid_api_key")


# --- sessions ---------------------------------------------------------------------------------------------


@check("sessions.create", "seed")
async def sessions_create(ctx: Conformance) -> None:
    """The Quick Start's create: 201 and the session object, `call: null` (r2), the usage headers."""
    response = await ctx.request("POST", "/v1/sessions", json=QUICK_START, headers={"Idempotency-Key": _key()})
    expect_status(response, 201)
    session = body_of(response)
    missing = SESSION_FIELDS - set(session)
    expect(not missing, f"the session lacks {sorted(missing)}")
    expect_id(session["id"], "sess", "id")
    for name, value in {"object": "session", "status": "created", "mode": QUICK_START["mode"], "provider": None,
                        "phone_number": None, "source_language": "de", "target_language": "en", "call": None,
                        "recording": {"enabled": False}, "metadata": QUICK_START["metadata"],
                        "started_at": None, "ended_at": None}.items():  # fmt: skip
        expect(session[name] == value, f"`{name}` is {session[name]!r}, expected {value!r}")
    expect_timestamp(session["created_at"], "created_at")
    stream = session["stream"]
    expect(isinstance(stream, dict), f"`stream` is {stream!r}")
    expect(
        stream["url"].endswith(f"/v1/sessions/{session['id']}/connect") and stream["url"].startswith(("ws", "wss")),
        f"stream.url is {stream['url']!r}",
    )
    expect(re.fullmatch(r"kst_(live|test)_\w+", stream["token"] or ""), f"stream.token is {stream['token']!r}")
    expect_timestamp(stream["expires_at"], "stream.expires_at")
    _expect_usage_headers(response)


@check("sessions.metadata_null", "documented")
async def sessions_metadata_null(ctx: Conformance) -> None:
    """(r2) Optional objects a request left out come back null: `metadata` is null, not {}."""
    session = await ctx.create_session()
    expect(session.get("metadata", "absent") is None, f"`metadata` is {session.get('metadata', 'absent')!r}")


@check("sessions.retrieve", "documented")
async def sessions_retrieve(ctx: Conformance) -> None:
    """GET /v1/sessions/{id}: 200, the same session, with its stream."""
    session = await ctx.create_session(**QUICK_START)
    response = await ctx.request("GET", f"/v1/sessions/{session['id']}")
    expect_status(response, 200)
    got = body_of(response)
    expect(got["id"] == session["id"] and got["status"] == "created", f"got {got['id']} in status {got['status']}")
    expect(got.get("stream"), "a live session has no `stream`")
    _expect_usage_headers(response)


@check("sessions.not_found", "documented")
async def sessions_not_found(ctx: Conformance) -> None:
    """Unknown ids are 404 with the resource's code."""
    for path, code in (
        (f"/v1/sessions/{unknown_id('sess')}", "session_not_found"),
        (f"/v1/sessions/{unknown_id('sess')}/end", "session_not_found"),
        (f"/v1/sessions/{unknown_id('sess')}/transcript", "session_not_found"),
        (f"/v1/recordings/{unknown_id('rec')}", "recording_not_found"),
        (f"/v1/analyses/{unknown_id('anl')}", "analysis_not_found"),
        (f"/v1/agents/{unknown_id('agt')}", "agent_not_found"),
    ):
        method = "POST" if path.endswith("/end") else "GET"
        expect_error(await ctx.request(method, path), 404, code)


@check("sessions.other_environment", "documented")
async def sessions_other_environment(ctx: Conformance) -> None:
    """A session is invisible (404) to keys of another organization or environment."""
    session = await ctx.create_session()
    other = f"sk_{'live' if ctx.api_key.startswith('sk_test_') else 'test'}_conform{secrets.token_hex(8)}"
    if ctx.has_control:
        other = await ctx.new_key()
    response = await ctx.request("GET", f"/v1/sessions/{session['id']}", key=other)
    if response.status_code == 401:
        return  # a server that does not know the other key cannot show it anything either
    expect_error(response, 404, "session_not_found")


@check("sessions.end", "documented")
async def sessions_end(ctx: Conformance) -> None:
    """POST end: 200 with the summary (0 s without audio); ending again returns the same summary."""
    session = await ctx.create_session()
    response = await ctx.request("POST", f"/v1/sessions/{session['id']}/end")  # an empty body is allowed
    expect_status(response, 200)
    summary = body_of(response)
    expected = {"id": session["id"], "object": "session", "status": "ended", "duration_seconds": 0}
    for name, value in expected.items():
        expect(summary.get(name) == value, f"`{name}` is {summary.get(name)!r}, expected {value!r}")
    expect_timestamp(summary.get("ended_at"), "ended_at")
    again = await ctx.request("POST", f"/v1/sessions/{session['id']}/end")
    expect_status(again, 200)
    expect(body_of(again) == summary, f"ending again gave {again.text}, not the first summary")
    got = body_of(await ctx.request("GET", f"/v1/sessions/{session['id']}"))
    expect(got["status"] == "ended" and got["ended_at"] == summary["ended_at"], f"after end: {got['status']}")


@check("sessions.list_not_allowed", "emulator")
async def sessions_list(ctx: Conformance) -> None:
    """There is no list endpoint: GET /v1/sessions is 405 method_not_allowed with `Allow`."""
    response = await ctx.request("GET", "/v1/sessions")
    expect_error(response, 405, "method_not_allowed")
    expect("POST" in response.headers.get("allow", ""), f"Allow is {response.headers.get('allow')!r}")


@check("route.not_found", "emulator")
async def route_not_found(ctx: Conformance) -> None:
    """An unknown path is 404 route_not_found in the envelope."""
    expect_error(await ctx.request("GET", "/v1/no-such-thing"), 404, "route_not_found")


@check("transcript.shape", "seed")
async def transcript_shape(ctx: Conformance) -> None:
    """The transcript: `trn_` + the session id's body (r2), in_progress until the end, then completed."""
    session = await ctx.create_session(**QUICK_START)
    response = await ctx.request("GET", f"/v1/sessions/{session['id']}/transcript")
    expect_status(response, 200)
    transcript = body_of(response)
    expected_id = "trn_" + session["id"].removeprefix("sess_")
    expect(transcript.get("id") == expected_id, f"id is {transcript.get('id')!r}, expected {expected_id!r}")
    for name, value in {"object": "transcript", "session_id": session["id"], "status": "in_progress",
                        "turns": []}.items():  # fmt: skip
        expect(transcript.get(name) == value, f"`{name}` is {transcript.get(name)!r}, expected {value!r}")
    metadata = transcript.get("metadata") or {}
    expect(metadata.get("total_turns") == 0, f"metadata is {metadata!r}")
    await ctx.end_session(session["id"])
    done = body_of(await ctx.request("GET", f"/v1/sessions/{session['id']}/transcript"))
    expect(done.get("status") == "completed", f"after the end the status is {done.get('status')!r}")


# --- bad requests -----------------------------------------------------------------------------------------


@check("request.invalid_json", "documented")
async def request_invalid(ctx: Conformance) -> None:
    """A body that is not JSON, not an object, or not application/json: 400 invalid_request."""
    for content, headers in (
        (b"{not json", JSON),
        (b"[1, 2]", JSON),
        (b'{"mode": "bidirectional_translation"}', {"Content-Type": "text/plain"}),
    ):
        response = await ctx.request("POST", "/v1/sessions", content=content, headers=headers)
        expect_error(response, 400, "invalid_request")


VALIDATION_CASES: list[tuple[dict[str, Any], str, str]] = [
    ({}, "missing_required_field", "mode"),
    ({"mode": "conference"}, "invalid_mode", "mode"),
    ({"mode": "bidirectional_translation", "source_language": "xx"}, "invalid_language_code", "source_language"),
    ({"mode": "bidirectional_translation", "target_language": "EN"}, "invalid_language_code", "target_language"),
    ({"mode": "bidirectional_translation", "routing": {"phone_number": "12345"}}, "invalid_routing",
     "routing.phone_number"),
    ({"mode": "bidirectional_translation", "provider": "twilio"}, "invalid_field_value", "provider"),
    ({"mode": "ai_agent", "agent_id": unknown_id("agt")}, "ai_agent_not_found", "agent_id"),
    ({"mode": "bidirectional_translation", "recording": {"enabled": "yes"}}, "invalid_field_value",
     "recording.enabled"),
]  # fmt: skip


@check("validation.session_fields", "documented")
async def validation_fields(ctx: Conformance) -> None:
    """A wrong field is 422 with its code and `param` naming it (mode, languages, routing, provider, agent)."""
    for body, code, param in VALIDATION_CASES:
        expect_error(await ctx.request("POST", "/v1/sessions", json=body), 422, code, param)


@check("validation.audio_hints", "emulator")
async def validation_audio(ctx: Conformance) -> None:
    """(r2) `audio` transport hints: the defaults are accepted, any other value is 422 naming the field."""
    defaults = {"encoding": "mulaw", "sample_rate_hz": 8000, "channels": 1}
    response = await ctx.request("POST", "/v1/sessions", json={"mode": "bidirectional_translation", "audio": defaults})
    expect_status(response, 201)
    for name, wrong in (("encoding", "pcm16"), ("sample_rate_hz", 16000), ("channels", 2)):
        body = {"mode": "bidirectional_translation", "audio": {name: wrong}}
        expect_error(await ctx.request("POST", "/v1/sessions", json=body), 422, "invalid_field_value", f"audio.{name}")


@check("validation.metadata_limits", "emulator")
async def validation_metadata(ctx: Conformance) -> None:
    """`metadata`: at most 50 keys, string values: 422 invalid_field_value with param metadata..."""
    body = {"mode": "bidirectional_translation", "metadata": {f"k{i}": "v" for i in range(51)}}
    error = expect_error(await ctx.request("POST", "/v1/sessions", json=body), 422, "invalid_field_value")
    expect((error["param"] or "").startswith("metadata"), f"param is {error['param']!r}")


@check("conflict.dial_ended", "emulator")
async def dial_ended(ctx: Conformance) -> None:
    """An action that needs a live session, on an ended one: 409 session_ended."""
    session = await ctx.create_session(routing={"phone_number": "+4930123456"})
    await ctx.end_session(session["id"])
    expect_error(await ctx.request("POST", f"/v1/sessions/{session['id']}/dial"), 409, "session_ended")


@check("conflict.analysis_without_turns", "emulator")
async def analysis_empty(ctx: Conformance) -> None:
    """Analysing a session without transcript turns: 409 transcript_empty."""
    session = await ctx.create_session()
    await ctx.end_session(session["id"])
    response = await ctx.request("POST", f"/v1/sessions/{session['id']}/analysis", json={})
    expect_error(response, 409, "transcript_empty")


# --- idempotency ------------------------------------------------------------------------------------------


def _key() -> str:
    return f"conform-{secrets.token_hex(8)}"


@check("idempotency.replay", "documented")
async def idempotency_replay(ctx: Conformance) -> None:
    """The same Idempotency-Key and body returns the first response: same status, same body."""
    headers = {"Idempotency-Key": _key()}
    first = await ctx.request("POST", "/v1/sessions", json=QUICK_START, headers=headers)
    expect_status(first, 201)
    second = await ctx.request("POST", "/v1/sessions", json=QUICK_START, headers=headers)
    expect_status(second, 201)
    expect(body_of(second) == body_of(first), "the replay's body differs from the first response")


@check("idempotency.replayed_header", "emulator")
async def idempotency_header(ctx: Conformance) -> None:
    """A replay carries `Idempotent-Replayed: true`; the first response does not."""
    headers = {"Idempotency-Key": _key()}
    first = await ctx.request("POST", "/v1/sessions", json=QUICK_START, headers=headers)
    second = await ctx.request("POST", "/v1/sessions", json=QUICK_START, headers=headers)
    expect("idempotent-replayed" not in first.headers, "the first response says it was replayed")
    expect(second.headers.get("idempotent-replayed") == "true", "the replay lacks Idempotent-Replayed: true")


@check("idempotency.mismatch", "documented")
async def idempotency_mismatch(ctx: Conformance) -> None:
    """The same key with another body, or on another path: 400 idempotency_mismatch."""
    headers = {"Idempotency-Key": _key()}
    session = await ctx.request("POST", "/v1/sessions", json=QUICK_START, headers=headers)
    expect_status(session, 201)
    other = {**QUICK_START, "target_language": "fr"}
    expect_error(await ctx.request("POST", "/v1/sessions", json=other, headers=headers), 400, "idempotency_mismatch")
    end = await ctx.request("POST", f"/v1/sessions/{body_of(session)['id']}/end", headers=headers)
    expect_error(end, 400, "idempotency_mismatch")


@check("idempotency.errors_not_cached", "documented")
async def idempotency_errors(ctx: Conformance) -> None:
    """An error is not cached: the key may be retried, and the retry is served."""
    headers = {"Idempotency-Key": _key()}
    failed = await ctx.request("POST", "/v1/sessions", json={"mode": "conference"}, headers=headers)
    expect_error(failed, 422, "invalid_mode")
    expect_status(await ctx.request("POST", "/v1/sessions", json=QUICK_START, headers=headers), 201)


# --- the stream -------------------------------------------------------------------------------------------


@check("stream.ready_first", "seed")
async def stream_ready(ctx: Conformance) -> None:
    """Connecting with the token: `session.ready` first, with the session's mode, languages and audio format."""
    session = await ctx.create_session(**QUICK_START)
    socket = await open_socket(ctx, session)
    try:
        ready = await socket.recv()
        expect(ready["type"] == "session.ready", f"the first frame is {ready['type']}, expected session.ready")
        for name, value in {"session_id": session["id"], "mode": session["mode"], "source_language": "de",
                            "target_language": "en"}.items():  # fmt: skip
            expect(ready.get(name) == value, f"session.ready `{name}` is {ready.get(name)!r}, expected {value!r}")
        audio = ready.get("audio") or {}
        expect(audio.get("encoding") == "mulaw" and audio.get("sample_rate_hz") == 8000, f"ready.audio is {audio!r}")
    finally:
        await socket.close()


@check("stream.ping", "documented")
async def stream_ping(ctx: Conformance) -> None:
    """`ping` is answered by `pong` carrying the session id."""
    session = await ctx.create_session()
    socket = await open_socket(ctx, session)
    try:
        await socket.until("session.ready")
        await socket.send({"type": "ping"})
        pong = await socket.until("pong")
        expect(pong.get("session_id") == session["id"], f"pong is {pong}")
    finally:
        await socket.close()


BAD_FRAMES: list[tuple[str, Any, str, str | None]] = [
    ("not JSON", "{oops", "invalid_message", None),
    ("not an object", "[1]", "invalid_message", None),
    ("unknown type", {"type": "audio"}, "invalid_message", None),
    ("wrong encoding", audio_frame("customer", 1, b"\xff" * 160, encoding="pcm16"), "invalid_audio_format",
     "audio.encoding"),
    ("wrong rate", audio_frame("customer", 1, b"\xff" * 160, sample_rate_hz=16000), "invalid_audio_format",
     "audio.sample_rate_hz"),
    ("bad base64", audio_frame("customer", 1, b"", payload="%%%"), "invalid_audio_format", "audio.payload"),
    ("empty payload", audio_frame("customer", 1, b""), "invalid_audio_format", "audio.payload"),
    ("unknown speaker", audio_frame("caller", 1, b"\xff" * 160), "invalid_speaker", "speaker"),
]  # fmt: skip


@check("stream.bad_frames", "documented")
async def stream_bad_frames(ctx: Conformance) -> None:
    """Bad frames get a `session.error` with the code (and `param`) of the table, and the stream goes on."""
    session = await ctx.create_session()
    socket = await open_socket(ctx, session)
    try:
        await socket.until("session.ready")
        for what, frame, code, param in BAD_FRAMES:
            await socket.send(frame)
            error = (await socket.until("session.error")).get("error") or {}
            expect(error.get("code") == code, f"{what}: error code {error.get('code')!r}, expected {code}")
            if param is not None:
                expect(error.get("param") == param, f"{what}: param {error.get('param')!r}, expected {param}")
            await socket.answered_ping()
    finally:
        await socket.close()


@check("stream.binary_frame", "emulator")
async def stream_binary(ctx: Conformance) -> None:
    """A binary frame gets `session.error` invalid_message, and the stream goes on."""
    session = await ctx.create_session()
    socket = await open_socket(ctx, session)
    try:
        await socket.until("session.ready")
        await socket.send(b"\x00\x01")
        error = (await socket.until("session.error")).get("error") or {}
        expect(error.get("code") == "invalid_message", f"error code {error.get('code')!r}")
        await socket.answered_ping()
    finally:
        await socket.close()


Call = tuple[dict[str, Any], list[dict[str, Any]], int | None]


async def _call(ctx: Conformance, sequences: list[float] | None = None, **body: Any) -> Call:
    """A Quick Start call: one utterance of customer audio, then `session.end`; every frame up to the close."""
    session = await ctx.create_session(**{**QUICK_START, **body})
    socket = await open_socket(ctx, session)
    audio = speech()
    chunks = [audio[i : i + FRAME_BYTES] for i in range(0, len(audio), FRAME_BYTES)]
    for index, chunk in enumerate(chunks):
        sequence: float = index + 1
        if sequences:  # equal sequences: each frame's audio differs (equal sequence and audio is a redelivery)
            sequence, chunk = sequences[index], chunk[:-1] + bytes([0xFF - index % 3])
        await socket.send(audio_frame("customer", sequence, chunk))
    await socket.send({"type": "session.end"})
    await socket.drain()
    return session, socket.frames, socket.close_code


@check("stream.turn_order", "documented")
async def stream_turn_order(ctx: Conformance) -> None:
    """A call: ready first; per turn partials, one final, then its audio.output in sequence order; then
    `session.ended` (explicit_end) and close 1000; every final is a transcript turn with the same text."""
    session, frames, close_code = await _call(ctx)
    types = [f["type"] for f in frames]
    expect(types and types[0] == "session.ready", f"the first frame is {types[:1]}, expected session.ready")
    expect(types[-1] == "session.ended", f"the last frame is {types[-1:]}, expected session.ended")
    expect(frames[-1].get("reason") == "explicit_end", f"session.ended reason {frames[-1].get('reason')!r}")
    expect(close_code == 1000, f"closed with {close_code}, expected 1000")
    expect("session.error" not in types, f"a session.error: {[f for f in frames if f['type'] == 'session.error']}")
    expect(all(f.get("session_id") == session["id"] for f in frames), "a frame without this session's session_id")
    finals: dict[Any, int] = {}
    last_sequence: dict[Any, Any] = {}
    for index, frame in enumerate(frames):
        turn = frame.get("turn")
        if frame["type"] == "transcript.partial":
            expect(turn not in finals, f"a partial of turn {turn} after its final")
        elif frame["type"] == "transcript.final":
            expect(turn not in finals, f"two finals for turn {turn}")
            finals[turn] = index
            expect(0 <= frame.get("confidence", -1) <= 1, f"final confidence {frame.get('confidence')!r}")
        elif frame["type"] == "audio.output":
            expect(turn in finals, f"audio.output of turn {turn} before its final")
            listener = frame.get("listener")
            sequence = frame.get("sequence")
            expect(isinstance(sequence, int) and sequence > last_sequence.get(listener, -1),
                   f"audio.output sequence {sequence} for {listener} after {last_sequence.get(listener)}")  # fmt: skip
            last_sequence[listener] = sequence
            audio = frame.get("audio") or {}
            expect(audio.get("encoding") == "mulaw" and audio.get("payload"), f"audio.output audio is {audio!r}")
    transcript = body_of(await ctx.request("GET", f"/v1/sessions/{session['id']}/transcript"))
    said = [frames[i]["text"] for i in finals.values()]
    turns = [t["text"] for t in transcript.get("turns", [])]
    expect(said == turns, f"finals {said} differ from the transcript's turns {turns}")


FRAME_FIELDS = {
    "session.ready": {"session_id", "mode", "source_language", "target_language", "audio"},
    "transcript.partial": {"session_id", "turn", "speaker", "language", "text"},
    "transcript.final": {"session_id", "turn", "speaker", "language", "text", "confidence", "start_ms", "end_ms"},
    "audio.output": {"session_id", "turn", "speaker", "listener", "language", "sequence", "audio"},
    "session.ended": {"session_id", "reason"},
}


@check("stream.frame_fields", "emulator")
async def stream_frame_fields(ctx: Conformance) -> None:
    """Server frames carry the contract's field sets; a customer's turn is heard by the agent, translated."""
    _, frames, _ = await _call(ctx)
    for frame in frames:
        missing = FRAME_FIELDS.get(frame["type"], set()) - set(frame)
        expect(not missing, f"{frame['type']} lacks {sorted(missing)}")
        if frame["type"] == "transcript.final":
            expect(frame["speaker"] == "customer" and frame["language"] == "de", f"final {frame}"[:200])
            translation = frame.get("translation") or {}
            expect(translation.get("language") == "en" and translation.get("text"), f"translation {translation}")
            expect(0 <= frame["start_ms"] <= frame["end_ms"], f"start_ms {frame['start_ms']} end_ms {frame['end_ms']}")
        if frame["type"] == "audio.output":
            heard = f"{frame['speaker']} -> {frame['listener']}"
            expect(heard == "customer -> agent", f"audio.output of the customer's turn goes {heard}, not to the agent")
            expect(frame["language"] == "en", f"audio.output language {frame['language']!r}, expected en")
    expect(any(f["type"] == "transcript.final" for f in frames), "the call produced no final")


@check("stream.float_sequence", "documented")
async def stream_float_sequence(ctx: Conformance) -> None:
    """(r2) `sequence` is any JSON number with an integer value: 1.0 and 1729481920 are accepted."""
    session = await ctx.create_session()
    socket = await open_socket(ctx, session)
    try:
        await socket.until("session.ready")
        await socket.send(audio_frame("customer", 1.0, b"\xff" * FRAME_BYTES))
        await socket.send(audio_frame("customer", 1_729_481_920, b"\xfe" * FRAME_BYTES))
        await socket.answered_ping()
        errors = [f["error"] for f in socket.frames if f["type"] == "session.error"]
        expect(not errors, f"refused: {errors}")
    finally:
        await socket.close()


@check("stream.quick_start_sequences", "emulator")
async def stream_equal_sequences(ctx: Conformance) -> None:
    """(r2) `sequence: Date.now()` repeats within a millisecond: frames with an equal sequence and other audio are
    all kept, none lost (received audio equals sent audio in length)."""
    sent = len(speech())
    stamp = 1_729_481_920_000
    frames_sent = -(-sent // FRAME_BYTES)
    sequences: list[float] = [1.0, *(stamp + i // 3 for i in range(1, frames_sent))]  # three frames a millisecond
    session, frames, _ = await _call(ctx, sequences)
    errors = [f["error"]["code"] for f in frames if f["type"] == "session.error"]
    expect(not errors, f"frames were refused: {errors}")
    if ctx.has_control:
        heard = await ctx.control("GET", f"/sessions/{session['id']}")
        received_ms = (heard.get("audio_ms") or {}).get("customer")
        expect(received_ms == sent // 8, f"the server kept {received_ms} ms of the {sent // 8} ms sent")


@check("stream.api_end", "documented")
async def stream_api_end(ctx: Conformance) -> None:
    """Ending over REST closes the live stream: `session.ended` with reason api_end, then the close."""
    session = await ctx.create_session()
    socket = await open_socket(ctx, session)
    await socket.until("session.ready")
    await ctx.end_session(session["id"])
    ended = await socket.until("session.ended")
    expect(ended.get("reason") == "api_end", f"reason {ended.get('reason')!r}, expected api_end")
    await socket.drain()
    expect(socket.close_code == 1000, f"closed with {socket.close_code}, expected 1000")


@check("stream.status_active", "documented")
async def stream_active(ctx: Conformance) -> None:
    """The first audio makes the session `active` with `started_at` set."""
    session = await ctx.create_session()
    socket = await open_socket(ctx, session)
    try:
        await socket.until("session.ready")
        await socket.send(audio_frame("customer", 1, b"\xff" * 800))
        await socket.answered_ping()  # the audio before it has been taken
        got = body_of(await ctx.request("GET", f"/v1/sessions/{session['id']}"))
        expect(got["status"] == "active", f"status {got['status']!r} after audio, expected active")
        expect_timestamp(got["started_at"], "started_at")
    finally:
        await socket.close()


@check("stream.connect_bad_token", "emulator")
async def stream_bad_token(ctx: Conformance) -> None:
    """A missing or wrong token: `session.error` invalid_token, then close 4001."""
    session = await ctx.create_session()
    await connect_refused(ctx, session, None, 4001, {"invalid_token"})
    await connect_refused(ctx, session, "kst_test_" + "0" * 40, 4001, {"invalid_token"})
    other = await ctx.create_session()
    await connect_refused(ctx, session, other["stream"]["token"], 4001, {"invalid_token"})


@check("stream.connect_unknown_session", "emulator")
async def stream_unknown_session(ctx: Conformance) -> None:
    """Connecting to a session that does not exist: `session.error` session_not_found, then close 4004."""
    session = await ctx.create_session()
    ghost = {
        "stream": {**session["stream"], "url": session["stream"]["url"].replace(session["id"], unknown_id("sess"))}
    }
    await connect_refused(ctx, ghost, session["stream"]["token"], 4004, {"session_not_found"})


@check("stream.connect_ended", "emulator")
async def stream_connect_ended(ctx: Conformance) -> None:
    """Connecting to an ended session: `session.error` session_ended, then close 4009."""
    session = await ctx.create_session()
    await ctx.end_session(session["id"])
    await connect_refused(ctx, session, "", 4009, {"session_ended"})


@check("stream.connect_twice", "emulator")
async def stream_connect_twice(ctx: Conformance) -> None:
    """A second socket while one is open: `session.error` session_already_connected, then close 4009."""
    session = await ctx.create_session()
    first = await open_socket(ctx, session)
    try:
        await first.until("session.ready")
        await connect_refused(ctx, session, "", 4009, {"session_already_connected"})
        await first.answered_ping()
    finally:
        await first.close()


@check("recordings.mp3", "documented")
async def recordings_mp3(ctx: Conformance) -> None:
    """(r2) A recorded call's recording: listed with pagination, the documented fields, MP3 audio to download."""
    session, _, _ = await _call(ctx, recording={"enabled": True})
    listed = await ctx.request("GET", f"/v1/sessions/{session['id']}/recordings", params={"limit": 1})
    expect_status(listed, 200)
    page = body_of(listed)
    expect(page.get("object") == "list" and page.get("has_more") is False, f"the list is {page!r}"[:200])
    expect(len(page.get("data") or []) == 1, f"{len(page.get('data') or [])} recordings listed, expected 1")
    recording = page["data"][0]
    expect_id(recording.get("id"), "rec", "recording id")
    for name, value in {"object": "recording", "session_id": session["id"], "format": "mp3", "sample_rate": 8000,
                        "bit_depth": 16}.items():  # fmt: skip
        expect(recording.get(name) == value, f"recording `{name}` is {recording.get(name)!r}, expected {value!r}")
    expect(isinstance(recording.get("channel"), str), f"channel is {recording.get('channel')!r}")
    expect(recording.get("status") in ("processing", "ready", "failed"), f"status is {recording.get('status')!r}")
    expect(isinstance(recording.get("duration"), int | float), f"duration is {recording.get('duration')!r}")
    expect(isinstance(recording.get("size"), int), f"size is {recording.get('size')!r}")
    expect_timestamp(recording.get("created_at"), "created_at")
    expect_timestamp(recording.get("expires_at"), "expires_at")
    same = await ctx.request("GET", f"/v1/recordings/{recording['id']}")
    expect_status(same, 200)
    expect(body_of(same)["id"] == recording["id"], "GET /v1/recordings/{id} is another recording")
    recording = await _ready(ctx, recording)
    audio = await ctx.request("GET", recording["download_url"])
    expect_status(audio, 200)
    expect(audio.headers.get("content-type", "").startswith("audio/mpeg"), f"type {audio.headers.get('content-type')}")
    disposition = audio.headers.get("content-disposition", "")
    expected = f'attachment; filename="recording-{session["id"]}.mp3"'
    expect(disposition == expected, f"Content-Disposition is {disposition!r}, expected {expected!r}")
    expect(
        len(audio.content) == recording["size"], f"{len(audio.content)} bytes, the recording says {recording['size']}"
    )
    head = audio.content[:3]
    frame_sync = len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0  # 11 set bits (MPEG 1, 2 or 2.5)
    expect(head == b"ID3" or frame_sync, f"the audio does not start like MP3 (an ID3 tag or a frame sync): {head!r}")


async def _ready(ctx: Conformance, recording: dict[str, Any]) -> dict[str, Any]:
    """The recording once it is no longer processing (polled; mockglot's is ready at once)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ctx.timeout
    while recording["status"] == "processing" and loop.time() < deadline:
        await asyncio.sleep(0.5)
        recording = body_of(await ctx.request("GET", f"/v1/recordings/{recording['id']}"))
    expect(recording["status"] == "ready", f"the recording is {recording['status']!r}, not ready")
    return recording


@check("recordings.ready_at_once", "emulator")
async def recordings_emulated(ctx: Conformance) -> None:
    """A recording is ready as soon as the session ends: one stereo file (`channel: "mixed"`), expiring 30 days
    after it was made."""
    session, _, _ = await _call(ctx, recording={"enabled": True})
    listed = body_of(await ctx.request("GET", f"/v1/sessions/{session['id']}/recordings"))
    recording = (listed.get("data") or [{}])[0]
    expect(recording.get("status") == "ready", f"status is {recording.get('status')!r} right after the end")
    expect(recording.get("channel") == "mixed", f"channel is {recording.get('channel')!r}, expected 'mixed'")
    created = datetime.fromisoformat(recording["created_at"].replace("Z", "+00:00"))
    expires = datetime.fromisoformat(recording["expires_at"].replace("Z", "+00:00"))
    expect((expires - created).days == 30, f"expires {expires - created} after it was made, expected 30 days")


@check("analysis.shape", "documented")
async def analysis_shape(ctx: Conformance) -> None:
    """(r2) Analysis takes `profile` and `include` (202 processing); the result has the documented shape, and
    what `include` left out is null; an unknown `include` is 422 naming it."""
    session, _, _ = await _call(ctx)
    path = f"/v1/sessions/{session['id']}/analysis"
    wrong = await ctx.request("POST", path, json={"include": ["summary", "mood"]})
    expect_error(wrong, 422, "invalid_field_value")
    body = {"profile": "default", "include": ["summary", "sentiment"]}
    started = await ctx.request("POST", path, json=body, headers={"Idempotency-Key": _key()})
    expect_status(started, 202)
    analysis = body_of(started)
    expect_id(analysis.get("id"), "anl", "analysis id")
    expected = {"object": "analysis", "session_id": session["id"], "status": "processing"}
    for name, value in expected.items():
        expect(analysis.get(name) == value, f"`{name}` is {analysis.get(name)!r}, expected {value!r}")
    result = await _finished(ctx, analysis["id"])
    for name, value in {"object": "analysis", "call_id": None, "profile": "default", "status": "completed",
                        "error": None, "compliance": None, "keywords": None, "performance": None}.items():  # fmt: skip
        expect(result.get(name, "absent") == value, f"`{name}` is {result.get(name, 'absent')!r}, expected {value!r}")
    expect(isinstance(result.get("summary"), str), f"summary is {result.get('summary')!r}")
    sentiment = result.get("sentiment")
    expect(isinstance(sentiment, dict) and {"customer", "agent"} <= set(sentiment), f"sentiment is {sentiment!r}")
    expect_timestamp(result.get("completed_at"), "completed_at")


async def _finished(ctx: Conformance, analysis_id: str) -> dict[str, Any]:
    """The analysis once it is no longer processing: on mockglot the clock moves; elsewhere, poll."""
    if ctx.has_control:
        async with ctx.clock_moved(60):
            result: dict[str, Any] = body_of(await ctx.request("GET", f"/v1/analyses/{analysis_id}"))
        return result
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ctx.timeout
    while True:
        result = body_of(await ctx.request("GET", f"/v1/analyses/{analysis_id}"))
        if result.get("status") != "processing" or loop.time() > deadline:
            return result
        await asyncio.sleep(0.5)


# --- with the control plane: keys, limits, faults, the clock, webhooks ------------------------------------


@check("usage.credits", "documented", control=True)
async def usage_credits(ctx: Conformance) -> None:
    """A create costs 1 credit and a replay nothing (X-API-Credits-*); out of credits: 402."""
    key = await ctx.new_key(credits=1)
    headers = {"Idempotency-Key": _key()}
    first = await ctx.request("POST", "/v1/sessions", key=key, json=QUICK_START, headers=headers)
    expect_status(first, 201)
    expect(first.headers.get("x-api-credits-remaining") == "0", "credits remaining after 1 of 1 is not 0")
    expect(first.headers.get("x-api-credits-used") == "1", "credits used after one create is not 1")
    replay = await ctx.request("POST", "/v1/sessions", key=key, json=QUICK_START, headers=headers)
    expect_status(replay, 201)
    spent = await ctx.request("POST", "/v1/sessions", key=key, json=QUICK_START)
    expect_error(spent, 402, "insufficient_api_credits")
    _expect_usage_headers(spent)


@check("auth.revoked", "documented", control=True)
async def auth_revoked(ctx: Conformance) -> None:
    """A revoked key: 401 revoked_api_key."""
    key = await ctx.new_key(revoked=True)
    expect_error(await ctx.request("POST", "/v1/sessions", key=key, json=QUICK_START), 401, "revoked_api_key")


@check("auth.organization_inactive", "documented", control=True)
async def auth_inactive(ctx: Conformance) -> None:
    """A key of an inactive organization: 403 organization_inactive."""
    key = await ctx.new_key(inactive=True)
    expect_error(await ctx.request("POST", "/v1/sessions", key=key, json=QUICK_START), 403, "organization_inactive")


@check("auth.scopes", "documented", control=True)
async def auth_scopes(ctx: Conformance) -> None:
    """A key without the scope: 403 insufficient_permissions; `sessions:read` may read but not create."""
    key = await ctx.new_key(scopes=["sessions:read"])
    expect_error(await ctx.request("POST", "/v1/sessions", key=key, json=QUICK_START), 403, "insufficient_permissions")
    expect_error(await ctx.request("GET", f"/v1/sessions/{unknown_id('sess')}", key=key), 404, "session_not_found")


@check("ratelimit.exceeded", "documented", control=True)
async def rate_limited(ctx: Conformance) -> None:
    """Over the request rate: 429 rate_limit_exceeded with `Retry-After` and `retry_after`."""
    key = await ctx.new_key(rate_limit=1)
    first = await ctx.request("GET", f"/v1/sessions/{unknown_id('sess')}", key=key)
    expect_error(first, 404, "session_not_found")
    expect(first.headers.get("x-ratelimit-limit") == "1", f"X-RateLimit-Limit {first.headers.get('x-ratelimit-limit')}")
    second = await ctx.request("GET", f"/v1/sessions/{unknown_id('sess')}", key=key)
    error = expect_error(second, 429, "rate_limit_exceeded")
    retry = second.headers.get("retry-after", "")
    expect(retry.isascii() and retry.isdigit() and int(retry) >= 1, f"Retry-After is {retry!r}")
    expect(isinstance(error.get("retry_after"), int | float), f"error.retry_after is {error.get('retry_after')!r}")


@check("idempotency.conflict", "documented", control=True)
async def idempotency_conflict(ctx: Conformance) -> None:
    """(r2) The same key while the first request is held in flight: 409 idempotency_conflict, Retry-After: 1."""
    key = await ctx.new_key()
    await ctx.fault(method="POST", path="/v1/sessions", api_key=key, latency_ms=1500, times=1)
    headers = {"Idempotency-Key": _key()}
    first = asyncio.create_task(ctx.request("POST", "/v1/sessions", key=key, json=QUICK_START, headers=headers))
    try:
        await asyncio.sleep(0.3)  # the first is held by the latency fault for 1.5 s; this one lands meanwhile
        second = await ctx.request("POST", "/v1/sessions", key=key, json=QUICK_START, headers=headers)
    finally:
        held = await first
    expect_status(held, 201)
    expect_error(second, 409, "idempotency_conflict")
    expect(second.headers.get("retry-after") == "1", f"Retry-After is {second.headers.get('retry-after')!r}")


@check("faults.service_unavailable", "emulator", control=True)
async def fault_503(ctx: Conformance) -> None:
    """An injected fault answers 503 service_unavailable once, then the API serves again."""
    key = await ctx.new_key()
    await ctx.fault(method="POST", path="/v1/sessions", api_key=key, status=503)
    expect_error(await ctx.request("POST", "/v1/sessions", key=key, json=QUICK_START), 503, "service_unavailable")
    expect_status(await ctx.request("POST", "/v1/sessions", key=key, json=QUICK_START), 201)


@check("clock.token_expiry", "documented", control=True)
async def token_expiry(ctx: Conformance) -> None:
    """Stream tokens live 5 minutes: later, connecting is refused (4001 expired_token) and GET issues a new one."""
    key = await ctx.new_key()
    session = await ctx.create_session(key)
    async with ctx.clock_moved(6 * 60):
        await connect_refused(ctx, session, "", 4001, {"expired_token"})
        fresh = body_of(await ctx.request("GET", f"/v1/sessions/{session['id']}", key=key))
        expect(fresh["stream"]["token"] != session["stream"]["token"], "GET did not issue a fresh token")
        socket = await open_socket(ctx, fresh)
        try:
            await socket.until("session.ready")
        finally:
            await socket.close()


@check("clock.idempotency_ttl", "documented", control=True)
async def idempotency_ttl(ctx: Conformance) -> None:
    """Idempotency keys live 24 hours, then behave as new."""
    key = await ctx.new_key()
    headers = {"Idempotency-Key": _key()}
    first = body_of(await ctx.request("POST", "/v1/sessions", key=key, json=QUICK_START, headers=headers))
    async with ctx.clock_moved(24 * 3600 + 60):
        later = await ctx.request("POST", "/v1/sessions", key=key, json=QUICK_START, headers=headers)
        expect_status(later, 201)
        expect(body_of(later)["id"] != first["id"], "a 24-hour-old key still replayed")


@check("clock.idle_timeout", "documented", control=True)
async def idle_timeout(ctx: Conformance) -> None:
    """A session with no activity for 30 minutes ends by itself; its open stream gets reason idle_timeout."""
    key = await ctx.new_key()
    session = await ctx.create_session(key)
    socket = await open_socket(ctx, session)
    try:
        await socket.until("session.ready")
        async with ctx.clock_moved(31 * 60):
            ended = await socket.until("session.ended")
            expect(ended.get("reason") == "idle_timeout", f"reason {ended.get('reason')!r}, expected idle_timeout")
            got = body_of(await ctx.request("GET", f"/v1/sessions/{session['id']}", key=key))
            expect(got["status"] == "ended", f"status {got['status']!r}")
    finally:
        await socket.close()


@check("webhooks.signed", "documented", control=True)
async def webhooks_signed(ctx: Conformance) -> None:
    """Deliveries are signed (HMAC-SHA256 of "t.body"), carry the delivery headers, and `session.ended`'s data has
    `duration` (r2)."""
    key = await ctx.new_key()
    secret = "whsec_conform_" + secrets.token_hex(8)
    async with Receiver(ctx.receiver_host) as receiver:
        await ctx.control(
            "POST",
            "/webhooks",
            json={
                "url": receiver.url,
                "events": ["session.created", "session.ended"],
                "api_key": key,
                "secret": secret,
            },
        )
        session = await ctx.create_session(key)
        await ctx.end_session(session["id"], key)
        deliveries = await receiver.wait(2, ctx.timeout)
    seen = []
    for delivery in deliveries:
        signature = delivery.headers.get("kallglot-signature", "")
        match = re.fullmatch(r"t=(\d+),v1=([0-9a-f]{64})", signature)
        expect(match, f"Kallglot-Signature is {signature!r}")
        assert match is not None
        digest = hmac.new(secret.encode(), match[1].encode() + b"." + delivery.body, hashlib.sha256).hexdigest()
        expect(hmac.compare_digest(digest, match[2]), "the signature does not match the body and secret")
        expect_id(delivery.headers.get("kallglot-webhook-id"), "wh_del", "Kallglot-Webhook-Id")
        expect(delivery.headers.get("kallglot-retry-count") == "0", "Kallglot-Retry-Count is not 0 on the first try")
        expect(delivery.headers.get("kallglot-original-timestamp") == match[1], "Kallglot-Original-Timestamp != t")
        event = delivery.json()
        expect_id(event.get("id"), "evt", "event id")
        expect(event.get("api_version") == "v1", f"api_version is {event.get('api_version')!r}")
        expect_timestamp(event.get("created_at"), "event created_at")
        expect(event["data"].get("id") == session["id"], f"{event['type']} is about {event['data'].get('id')}")
        if event["type"] == "session.ended":
            expect(isinstance(event["data"].get("duration"), int | float), "session.ended data lacks `duration`")
        seen.append(event["type"])
    expect(seen == ["session.created", "session.ended"], f"events {seen}, expected session.created, session.ended")


def _expect_usage_headers(response: Any) -> None:
    expect_request_id(response)
    values = {h: response.headers.get(h, "") for h in USAGE_HEADERS}
    missing = [h for h, value in values.items() if not (value.isascii() and value.isdigit())]
    if missing:
        raise Failed(f"usage headers missing or not integers: {missing}")
