"""Recordings (kallglot-api.md §6, r2): one per session with recording enabled, made when it ends from the audio
the server received; an MP3 (decoded here with miniaudio); list with cursors, retrieve, download, delete;
`recording.ready` / `recording.failed`.

In-process tests feed audio through the state (what the stream does); the end-to-end test streams real audio to
the real server and checks the recording against it, and the signed `recording.ready` webhook."""

from __future__ import annotations

import array
import math
import re
from datetime import UTC, datetime, timedelta

import httpx
import miniaudio
import msgspec
import pytest

from mockglot import wire
from mockglot.state.sessions import IDLE_TIMEOUT_SECONDS
from mockglot.testing.client import Client, silence, tone, utterance
from tests.checks import expect_error

ULID = r"[0-9A-HJKMNP-TV-Z]{26}"
RECORDED = {"mode": "bidirectional_translation", "source_language": "de", "target_language": "en",
            "recording": {"enabled": True}}  # fmt: skip
RECORDING_KEYS = [
    "id", "object", "session_id", "channel", "status", "duration", "format", "size", "sample_rate", "bit_depth",
    "download_url", "created_at", "expires_at",
]  # fmt: skip
MP3_DELAY_SECONDS = 0.25  # what an MP3 adds at most: the encoder's delay and its last frame's padding
DELAY = 1105  # LAME's encoder delay in samples: decoded audio starts this late


def decode_mp3(content: bytes) -> tuple[float, array.array, array.array]:
    """(seconds, left samples, right samples) of an MP3, decoded at 8 kHz stereo."""
    decoded = miniaudio.decode(content, nchannels=2, sample_rate=8000)
    samples = decoded.samples
    return decoded.num_frames / 8000, samples[0::2], samples[1::2]


def rms(samples) -> float:
    return math.sqrt(sum(s * s for s in samples) / max(len(samples), 1))


def parse_iso(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


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
    assert list(recording) == RECORDING_KEYS
    assert recording == {
        "id": recording["id"], "object": "recording", "session_id": session["id"], "channel": "mixed",
        "status": "ready", "duration": 0.3, "format": "mp3", "size": recording["size"], "sample_rate": 8000,
        "bit_depth": 16, "download_url": f"/v1/recordings/{recording['id']}/audio", "created_at": ended["ended_at"],
        "expires_at": recording["expires_at"],
    }  # fmt: skip
    assert parse_iso(recording["expires_at"]) - parse_iso(recording["created_at"]) == timedelta(days=30)
    fetched = await client.get(f"/v1/recordings/{recording['id']}")
    assert fetched.json() == recording
    await client.post(f"/v1/sessions/{session['id']}/end")  # ending again makes no second recording
    assert len((await client.get(path)).json()["data"]) == 1


async def test_the_audio_is_a_stereo_mp3_customer_left_agent_right(client, state):
    customer, agent = tone(1700, hz=300) + silence(200), tone(400, hz=900)  # different lengths
    session = await recorded_session(client, state, {"customer": customer, "agent": agent})
    [recording] = (await client.get(f"/v1/sessions/{session['id']}/recordings")).json()["data"]

    response = await client.get(recording["download_url"])
    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/mpeg"
    assert response.headers["content-disposition"] == f'attachment; filename="recording-{session["id"]}.mp3"'
    assert int(response.headers["content-length"]) == len(response.content) == recording["size"]
    assert "x-api-credits-used" in response.headers
    assert recording["duration"] == 1.9
    seconds, left, right = decode_mp3(response.content)
    assert recording["duration"] <= seconds <= recording["duration"] + MP3_DELAY_SECONDS
    # the customer spoke 1.7 s, the agent 0.4 s: the right channel falls silent after the agent's tone
    assert rms(left[DELAY + 4000 : DELAY + 13000]) > 1000 and rms(right[DELAY + 4000 : DELAY + 13000]) < 100
    assert rms(right[DELAY : DELAY + 3000]) > 1000


async def test_the_mp3_lasts_as_long_as_the_longest_speaker(client, state):
    session = await recorded_session(client, state, {"customer": tone(5000, hz=440), "agent": tone(100)})
    [recording] = (await client.get(f"/v1/sessions/{session['id']}/recordings")).json()["data"]
    seconds, _, _ = decode_mp3((await client.get(recording["download_url"])).content)
    assert recording["duration"] == 5.0
    assert 5.0 <= seconds <= 5.0 + MP3_DELAY_SECONDS


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
    assert (recording["status"], recording["download_url"], recording["size"]) == ("failed", None, 0)
    assert recording["duration"] == 0.0
    assert "without receiving any audio" in recording["failure_reason"]
    error = expect_error(await client.get(f"/v1/recordings/{recording['id']}/audio"), 404, "recording_not_found")
    assert "failed" in error["message"]


async def test_an_idle_timeout_also_makes_the_recording(client, state):
    session = (await client.post("/v1/sessions", json=RECORDED)).json()
    state.sessions.add_audio(state.sessions.find(session["id"]), "agent", tone(200))
    state.clock.advance(IDLE_TIMEOUT_SECONDS)
    [recording] = (await client.get(f"/v1/sessions/{session['id']}/recordings")).json()["data"]
    assert recording["status"] == "ready"
    _, left, right = decode_mp3((await client.get(recording["download_url"])).content)
    assert rms(right[DELAY : DELAY + 1600]) > 1000 and rms(left) < 100


async def test_a_recording_expires_thirty_days_after_it_was_made(client, state):
    session = await recorded_session(client, state, {"customer": tone(200)})
    [recording] = (await client.get(f"/v1/sessions/{session['id']}/recordings")).json()["data"]
    state.clock.advance(30 * 24 * 3600 - 1)
    assert (await client.get(f"/v1/recordings/{recording['id']}")).status_code == 200
    state.clock.advance(1)
    error = expect_error(await client.get(f"/v1/recordings/{recording['id']}"), 404, "recording_not_found", "id")
    assert "30 days" in error["message"]
    expect_error(await client.get(recording["download_url"]), 404, "recording_not_found")
    assert (await client.get(f"/v1/sessions/{session['id']}/recordings")).json()["data"] == []


async def test_a_deleted_recording_is_gone(client, state):
    session = await recorded_session(client, state, {"customer": tone(200)})
    [recording] = (await client.get(f"/v1/sessions/{session['id']}/recordings")).json()["data"]
    deleted = await client.delete(f"/v1/recordings/{recording['id']}")
    assert deleted.status_code == 200
    assert deleted.json() == {"id": recording["id"], "object": "recording", "deleted": True}
    expect_error(await client.get(f"/v1/recordings/{recording['id']}"), 404, "recording_not_found", "id")
    expect_error(await client.delete(f"/v1/recordings/{recording['id']}"), 404, "recording_not_found", "id")
    assert (await client.get(f"/v1/sessions/{session['id']}/recordings")).json()["data"] == []


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"starting_after": "rec_01HXMISSING"}, "starting_after"),
        ({"ending_before": "rec_01HXMISSING"}, "ending_before"),
        ({"starting_after": "{id}", "ending_before": "{id}"}, "ending_before"),
    ],
)
async def test_the_list_takes_the_cursor_parameters(client, state, params, param):
    """(r2) The recordings list pages like the agents list: `limit` 1-100, `starting_after`, `ending_before`."""
    session = await recorded_session(client, state, {"customer": tone(200)})
    path = f"/v1/sessions/{session['id']}/recordings"
    [recording] = (await client.get(path)).json()["data"]
    assert (await client.get(path, params={"limit": 1})).json()["has_more"] is False
    assert (await client.get(path, params={"starting_after": recording["id"]})).json() == {
        "object": "list", "data": [], "has_more": False,
    }  # fmt: skip
    assert (await client.get(path, params={"ending_before": recording["id"]})).json()["data"] == []
    filled = {name: value.format(id=recording["id"]) for name, value in params.items()}
    error = expect_error(await client.get(path, params=filled), 422, "invalid_field_value", param)
    assert param in error["message"]


async def test_recording_events_are_published_with_the_recording_as_data(app, client, state, api_key, make_client):
    control = make_client(app)
    hook = await control.post("/_mockglot/webhooks", json={"url": "http://127.0.0.1:9/hooks", "api_key": api_key})
    assert hook.status_code == 201, hook.text
    ready = await recorded_session(client, state, {"customer": tone(200)})
    failed = await recorded_session(client, state, {})
    for session, event_type in ((ready, "recording.ready"), (failed, "recording.failed")):
        [recording] = (await client.get(f"/v1/sessions/{session['id']}/recordings")).json()["data"]
        deliveries = (await control.get("/_mockglot/webhooks/deliveries", params={"session_id": session["id"]})).json()
        types = [d["event_type"] for d in deliveries["data"]]
        started = ["session.started"] if session is ready else []
        assert types[:-2] == ["session.created", *started, "session.ended"]
        assert sorted(types[-2:]) == sorted([event_type, "transcript.ready"])  # the MP3 is made off the loop
        [event] = [d["event"] for d in deliveries["data"] if d["event_type"] == event_type]
        assert event["data"] == recording


async def test_another_organizations_recordings_are_not_found(client, state, app, make_client, make_key):
    session = await recorded_session(client, state, {"customer": tone(200)})
    [recording] = (await client.get(f"/v1/sessions/{session['id']}/recordings")).json()["data"]
    suffix = make_key().removeprefix("sk_test_")
    for stranger in (make_client(app, f"sk_test_{suffix}"), make_client(app, f"sk_live_{suffix}")):
        expect_error(await stranger.get(f"/v1/recordings/{recording['id']}"), 404, "recording_not_found", "id")
        expect_error(await stranger.get(f"/v1/recordings/{recording['id']}/audio"), 404, "recording_not_found")
        expect_error(await stranger.delete(f"/v1/recordings/{recording['id']}"), 404, "recording_not_found")
        expect_error(await stranger.get(f"/v1/sessions/{session['id']}/recordings"), 404, "session_not_found")
    expect_error(await client.get("/v1/recordings/rec_01HXMISSING"), 404, "recording_not_found", "id")
    expect_error(await client.get("/v1/sessions/sess_missing/recordings"), 404, "session_not_found")


async def test_recordings_need_the_recordings_scopes(make_app, make_client):
    app = make_app(keys=[
        {"key": "sk_test_sessions0001", "organization": "acme", "scopes": ["sessions:read", "sessions:write"]},
        {"key": "sk_test_listener0001", "organization": "acme", "scopes": ["recordings:read"]},
        {"key": "sk_test_deleter00001", "organization": "acme", "scopes": ["recordings:delete"]},
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
    error = expect_error(await listener.delete(f"/v1/recordings/{recording['id']}"), 403, "insufficient_permissions")
    assert "recordings:delete" in error["message"]
    assert (
        await make_client(app, "sk_test_deleter00001").delete(f"/v1/recordings/{recording['id']}")
    ).status_code == 200


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
        assert recording["download_url"] == f"/v1/recordings/{recording['id']}/audio"  # relative, as documented

        audio = await api.http.get(recording["download_url"])
        assert audio.status_code == 200
    seconds, left, right = decode_mp3(audio.content)
    assert recording["duration"] == round(len(customer) / 8000, 1)
    assert recording["duration"] <= seconds <= recording["duration"] + MP3_DELAY_SECONDS
    assert rms(left[DELAY : DELAY + 8000]) > 1000 and rms(right[DELAY : DELAY + 4000]) > 1000
    assert rms(right[DELAY + 5000 :]) < 100  # the agent's tone is over
    for speaker, sent in (("customer", customer), ("agent", agent)):
        received = await control.get(f"/_mockglot/sessions/{session['id']}/audio/{speaker}")
        assert received.status_code == 200 and len(received.content) > len(sent)


def checked(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()
