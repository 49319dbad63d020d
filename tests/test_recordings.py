"""Recordings (kallglot-api.md §6 "Other documented endpoints"): one per session with recording enabled, made
when it ends from the audio the server received; list, retrieve, download; `recording.ready` / `recording.failed`.

In-process tests feed audio through the state (what the stream does); the end-to-end test streams real audio to
the real server and checks the recording's bytes against it, and the signed `recording.ready` webhook."""

from __future__ import annotations

import re
import struct

import httpx
import msgspec

from mockglot import wire
from mockglot.state.sessions import IDLE_TIMEOUT_SECONDS
from mockglot.testing.client import Client, silence, tone, utterance
from tests.checks import expect_error

ULID = r"[0-9A-HJKMNP-TV-Z]{26}"
RECORDED = {"mode": "bidirectional_translation", "source_language": "de", "target_language": "en",
            "recording": {"enabled": True}}  # fmt: skip
WAVE_FORMAT_MULAW = 7


def parse_wav(content: bytes) -> tuple[tuple[int, ...], bytes]:
    """(format, channels, rate, byte rate, block align, bits) and the data chunk of a RIFF/WAVE file."""
    assert content[:4] == b"RIFF" and content[8:12] == b"WAVE"
    assert int.from_bytes(content[4:8], "little") == len(content) - 8
    chunks, position = {}, 12
    while position + 8 <= len(content):
        size = int.from_bytes(content[position + 4 : position + 8], "little")
        chunks[content[position : position + 4]] = content[position + 8 : position + 8 + size]
        position += 8 + size + (size & 1)
    return struct.unpack("<HHIIHH", chunks[b"fmt "][:16]), chunks[b"data"]


def channel(data: bytes, index: int, length: int) -> bytes:
    return data[index::2][:length]


async def recorded_session(client, state, audio: dict[str, bytes], **body) -> dict:
    """A session with recording on that received `audio` (speaker -> mu-law), then ended over REST."""
    session = (await client.post("/v1/sessions", json={**RECORDED, **body})).json()
    record = state.sessions.find(session["id"])
    for speaker, data in audio.items():
        state.sessions.add_audio(record, speaker, data)
    assert (await client.post(f"/v1/sessions/{session['id']}/end")).status_code == 200
    return session


# --- in-process --------------------------------------------------------------------------------------------


async def test_a_recorded_session_has_one_recording_after_it_ends_and_none_before(client, state):
    session = (await client.post("/v1/sessions", json=RECORDED)).json()
    assert session["recording"] == {"enabled": True}
    path = f"/v1/sessions/{session['id']}/recordings"
    assert (await client.get(path)).json() == {"object": "list", "data": [], "has_more": False}
    state.sessions.add_audio(state.sessions.find(session["id"]), "customer", tone(300))
    assert (await client.get(path)).json()["data"] == []  # still live
    ended = (await client.post(f"/v1/sessions/{session['id']}/end")).json()

    listed = await client.get(path)
    assert listed.status_code == 200
    msgspec.json.decode(listed.content, type=wire.RecordingList)
    [recording] = listed.json()["data"]
    assert re.fullmatch("rec_" + ULID, recording["id"])
    assert recording == {
        "id": recording["id"], "object": "recording", "session_id": session["id"], "status": "ready",
        "duration_seconds": 0.3, "format": "wav", "encoding": "mulaw", "sample_rate_hz": 8000,
        "channels": ["customer", "agent"], "size_bytes": recording["size_bytes"], "created_at": ended["ended_at"],
        "url": f"http://testserver/v1/recordings/{recording['id']}/audio",
    }  # fmt: skip
    fetched = await client.get(f"/v1/recordings/{recording['id']}")
    assert fetched.json() == recording
    await client.post(f"/v1/sessions/{session['id']}/end")  # ending again makes no second recording
    assert len((await client.get(path)).json()["data"]) == 1


async def test_the_audio_is_a_two_channel_mulaw_wav_of_what_each_speaker_sent(client, state):
    customer, agent = tone(700, hz=300) + silence(200), tone(400, hz=900)  # different lengths
    session = await recorded_session(client, state, {"customer": customer, "agent": agent})
    [recording] = (await client.get(f"/v1/sessions/{session['id']}/recordings")).json()["data"]

    response = await client.get(f"/v1/recordings/{recording['id']}/audio")
    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/wav"
    assert response.headers["content-disposition"] == f'attachment; filename="{recording["id"]}.wav"'
    assert "x-api-credits-used" in response.headers
    fmt, data = parse_wav(response.content)
    assert fmt == (WAVE_FORMAT_MULAW, 2, 8000, 16000, 2, 8)
    assert len(response.content) == recording["size_bytes"]
    assert len(data) == 2 * len(customer)
    assert channel(data, 0, len(customer)) == customer
    assert channel(data, 1, len(agent)) == agent
    assert set(data[1::2][len(agent) :]) == {0xFF}  # the shorter channel is padded with mu-law silence
    assert recording["duration_seconds"] == 0.9


async def test_a_session_without_recording_has_none(client, state):
    session = await recorded_session(client, state, {"customer": tone(200)}, recording={"enabled": False})
    listed = (await client.get(f"/v1/sessions/{session['id']}/recordings")).json()
    assert listed == {"object": "list", "data": [], "has_more": False}
    plain = (await client.post("/v1/sessions", json={"mode": "bidirectional_translation"})).json()
    await client.post(f"/v1/sessions/{plain['id']}/end")
    assert (await client.get(f"/v1/sessions/{plain['id']}/recordings")).json()["data"] == []


async def test_a_recorded_session_without_audio_gets_a_failed_recording(client, state):
    session = await recorded_session(client, state, {})
    [recording] = (await client.get(f"/v1/sessions/{session['id']}/recordings")).json()["data"]
    assert (recording["status"], recording["url"], recording["size_bytes"]) == ("failed", None, 0)
    assert recording["duration_seconds"] == 0.0
    assert "without receiving any audio" in recording["failure_reason"]
    error = expect_error(await client.get(f"/v1/recordings/{recording['id']}/audio"), 404, "recording_not_found")
    assert "failed" in error["message"]


async def test_an_idle_timeout_also_makes_the_recording(client, state):
    session = (await client.post("/v1/sessions", json=RECORDED)).json()
    state.sessions.add_audio(state.sessions.find(session["id"]), "agent", tone(200))
    state.clock.advance(IDLE_TIMEOUT_SECONDS)
    [recording] = (await client.get(f"/v1/sessions/{session['id']}/recordings")).json()["data"]
    assert recording["status"] == "ready"
    _, data = parse_wav((await client.get(f"/v1/recordings/{recording['id']}/audio")).content)
    assert channel(data, 1, 1600) == tone(200)


async def test_recording_events_are_published_with_the_recording_as_data(app, client, state, api_key, make_client):
    control = make_client(app)
    hook = await control.post("/_mockglot/webhooks", json={"url": "http://127.0.0.1:9/hooks", "api_key": api_key})
    assert hook.status_code == 201, hook.text
    ready = await recorded_session(client, state, {"customer": tone(200)})
    failed = await recorded_session(client, state, {})
    for session, event_type in ((ready, "recording.ready"), (failed, "recording.failed")):
        deliveries = (await control.get("/_mockglot/webhooks/deliveries", params={"session_id": session["id"]})).json()
        types = [d["event_type"] for d in deliveries["data"]]
        assert types == ["session.created", *(["session.started"] if session is ready else []),
                         "session.ended", event_type, "transcript.ready"]  # fmt: skip
        [event] = [d["event"] for d in deliveries["data"] if d["event_type"] == event_type]
        [recording] = (await client.get(f"/v1/sessions/{session['id']}/recordings")).json()["data"]
        if recording["url"] is not None:  # a webhook has no request to take a host from: the configured one
            recording["url"] = recording["url"].replace("http://testserver", "http://127.0.0.1:8080")
        assert event["data"] == recording


async def test_another_organizations_recordings_are_not_found(client, state, app, make_client, make_key):
    session = await recorded_session(client, state, {"customer": tone(200)})
    [recording] = (await client.get(f"/v1/sessions/{session['id']}/recordings")).json()["data"]
    suffix = make_key().removeprefix("sk_test_")
    for stranger in (make_client(app, f"sk_test_{suffix}"), make_client(app, f"sk_live_{suffix}")):
        expect_error(await stranger.get(f"/v1/recordings/{recording['id']}"), 404, "recording_not_found", "id")
        expect_error(await stranger.get(f"/v1/recordings/{recording['id']}/audio"), 404, "recording_not_found")
        expect_error(await stranger.get(f"/v1/sessions/{session['id']}/recordings"), 404, "session_not_found")
    expect_error(await client.get("/v1/recordings/rec_01HXMISSING"), 404, "recording_not_found", "id")
    expect_error(await client.get("/v1/sessions/sess_missing/recordings"), 404, "session_not_found")


async def test_recordings_need_the_recordings_read_scope(make_app, make_client):
    app = make_app(keys=[
        {"key": "sk_test_sessions0001", "organization": "acme", "scopes": ["sessions:read", "sessions:write"]},
        {"key": "sk_test_listener0001", "organization": "acme", "scopes": ["recordings:read"]},
    ])  # fmt: skip
    sessions, listener = make_client(app, "sk_test_sessions0001"), make_client(app, "sk_test_listener0001")
    state = app.state.mockglot
    session = await recorded_session(sessions, state, {"customer": tone(200)})
    error = expect_error(
        await sessions.get(f"/v1/sessions/{session['id']}/recordings"), 403, "insufficient_permissions"
    )
    assert "recordings:read" in error["message"]
    [recording] = (await listener.get(f"/v1/sessions/{session['id']}/recordings")).json()["data"]
    expect_error(await sessions.get(f"/v1/recordings/{recording['id']}"), 403, "insufficient_permissions")
    expect_error(await sessions.get(f"/v1/recordings/{recording['id']}/audio"), 403, "insufficient_permissions")
    assert (await listener.get(f"/v1/recordings/{recording['id']}/audio")).status_code == 200


async def test_the_url_follows_the_origin_the_client_called(client, state):
    session = await recorded_session(client, state, {"customer": tone(100)})
    headers = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "api.example.com"}
    listed = (await client.get(f"/v1/sessions/{session['id']}/recordings", headers=headers)).json()
    assert listed["data"][0]["url"].startswith("https://api.example.com/v1/recordings/rec_")


# --- end to end: streamed audio, the real server, a signed webhook -----------------------------------------------


async def test_the_recording_holds_the_streamed_audio_and_recording_ready_is_signed(
    live, control, api_key, webhook_receiver
):
    hook = (await control.post("/_mockglot/webhooks", json={
        "url": webhook_receiver.url, "events": ["recording.ready"], "api_key": api_key,
    })).json()  # fmt: skip
    customer, agent = utterance(), tone(500) + silence(300)
    async with Client(live.base_url, api_key) as api:
        session = await api.create_session(**RECORDED)
        stream = await api.open_stream(session)
        await stream.until("session.ready")
        await stream.send_audio("customer", customer)
        await stream.send_audio("agent", agent, frame_ms=20)
        await stream.end()

        (request,) = await webhook_receiver.wait_async(1)
        request.verify(hook["secret"])
        event = request.json()
        assert event["type"] == "recording.ready"
        recording = event["data"]
        assert recording["session_id"] == session["id"]
        assert recording == checked(await api.http.get(f"/v1/recordings/{recording['id']}"))
        assert recording["url"] == f"{live.base_url}/v1/recordings/{recording['id']}/audio"

        audio = await api.http.get(recording["url"])
        assert audio.status_code == 200
    _, data = parse_wav(audio.content)
    assert channel(data, 0, len(customer)) == customer
    assert channel(data, 1, len(agent)) == agent
    for speaker, index, sent in (("customer", 0, customer), ("agent", 1, agent)):
        received = await control.get(f"/_mockglot/sessions/{session['id']}/audio/{speaker}")
        assert parse_wav(received.content)[1] == sent == channel(data, index, len(sent))


def checked(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()
