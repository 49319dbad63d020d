"""Retention and bounds (#10): ended sessions are forgotten oldest first past a count, an age or a byte budget,
and then answer the documented 404 everywhere; live sessions stay; journals and received audio are capped with
exact counts; one organization's reset leaves the others alone."""

from __future__ import annotations

import httpx
import pytest

from mockglot.api.stream import MAX_FRAME_BYTES
from mockglot.settings import Settings
from mockglot.speech.codec import SAMPLE_RATE_HZ
from mockglot.state import auth, journal, requests
from mockglot.state.sessions import MAX_AUDIO_BYTES, Turn
from mockglot.testing.client import Client, tone
from mockglot.testing.server import ServerThread
from tests.checks import expect_error
from tests.conftest import new_key

BODY = {"mode": "bidirectional_translation", "source_language": "de", "target_language": "en"}
RECORDED = {**BODY, "recording": {"enabled": True}}


async def ended_session(client, state, body=RECORDED, audio_ms: int = 300) -> dict:
    """A session that received some audio and a turn, with a recording and an analysis, then ended."""
    session = (await client.post("/v1/sessions", json=body)).json()
    record = state.sessions.find(session["id"])
    state.sessions.add_audio(record, "customer", tone(audio_ms))
    turn = Turn(record.reserve_turn(), "customer", "de", "Hallo", 0.9, state.clock.now(), 0, audio_ms)
    state.sessions.add_turn(record, turn)
    return (await client.post(f"/v1/sessions/{session['id']}/end")).json()


async def assert_forgotten(client, control, session_id: str, recording_id: str | None) -> None:
    """The documented 404 on every path that names the session, and on its recording."""
    for path in (f"/v1/sessions/{session_id}", f"/v1/sessions/{session_id}/transcript",
                 f"/v1/sessions/{session_id}/recordings"):  # fmt: skip
        expect_error(await client.get(path), 404, "session_not_found")
    expect_error(await client.post(f"/v1/sessions/{session_id}/end"), 404, "session_not_found")
    expect_error(await client.post(f"/v1/sessions/{session_id}/analysis"), 404, "session_not_found")
    for path in ("", "/frames", "/audio/customer"):
        expect_error(await control.get(f"/_mockglot/sessions/{session_id}{path}"), 404, "session_not_found")
    if recording_id is not None:
        expect_error(await client.get(f"/v1/recordings/{recording_id}"), 404, "recording_not_found")
        expect_error(await client.get(f"/v1/recordings/{recording_id}/audio"), 404, "recording_not_found")


async def test_ended_sessions_past_the_count_are_forgotten_oldest_first_and_answer_404(make_app, make_client, api_key):
    app = make_app(retain_sessions=2)
    state = app.state.mockglot
    client, control = make_client(app, api_key), make_client(app)
    ended = [await ended_session(client, state) for _ in range(4)]
    recordings = [(await client.get(f"/v1/sessions/{s['id']}/recordings")).json()["data"] for s in ended[2:]]
    assert [len(r) for r in recordings] == [1, 1]

    for session in ended[:2]:
        await assert_forgotten(client, control, session["id"], None)
    for session in ended[2:]:
        assert (await client.get(f"/v1/sessions/{session['id']}")).json()["status"] == "ended"
    listed = (await control.get("/_mockglot/sessions", params={"api_key": api_key})).json()["data"]
    assert [s["id"] for s in listed] == [s["id"] for s in ended[2:]]
    assert (await control.get("/_mockglot/health")).json()["sessions"] == 2

    # the next end pushes out the oldest kept one, recording and analysis with it
    oldest_recording = recordings[0][0]["id"]
    analysis = await client.post(f"/v1/sessions/{ended[2]['id']}/analysis")
    assert analysis.status_code == 202, analysis.text
    await ended_session(client, state)
    await assert_forgotten(client, control, ended[2]["id"], oldest_recording)
    expect_error(await client.get(f"/v1/analyses/{analysis.json()['id']}"), 404, "analysis_not_found")


async def test_live_sessions_are_never_evicted(make_app, make_client, api_key):
    app = make_app(retain_sessions=1)
    state = app.state.mockglot
    client = make_client(app, api_key)
    live = [(await client.post("/v1/sessions", json=BODY)).json() for _ in range(5)]
    for _ in range(3):
        await ended_session(client, state)
    for session in live:
        assert (await client.get(f"/v1/sessions/{session['id']}")).json()["status"] == "created"
    assert state.sessions.count() == 5 + 1


async def test_ended_sessions_are_forgotten_after_the_retention_window_of_real_time(make_app, make_client, api_key):
    app = make_app(retain_minutes=10)
    state = app.state.mockglot
    wall = [1000.0]
    state.sessions._monotonic = lambda: wall[0]
    client = make_client(app, api_key)
    old = [await ended_session(client, state) for _ in range(2)]
    wall[0] += 9 * 60
    newer = await ended_session(client, state)
    state.clock.advance(24 * 3600)  # the server clock does not count: moving it evicts nobody
    assert (await client.get(f"/v1/sessions/{old[0]['id']}")).status_code == 200
    wall[0] += 61
    await client.post("/v1/sessions", json=BODY)  # any create or end applies retention
    for session in old:
        expect_error(await client.get(f"/v1/sessions/{session['id']}"), 404, "session_not_found")
    assert (await client.get(f"/v1/sessions/{newer['id']}")).status_code == 200


async def test_the_byte_budget_forgets_the_oldest_sessions_audio_first(make_app, make_client, api_key):
    app = make_app(retain_mb=0.1)  # 104,857 bytes: a recorded 3 s session counts 2 x 24,000
    state = app.state.mockglot
    client = make_client(app, api_key)
    ended = [await ended_session(client, state, audio_ms=3000) for _ in range(4)]
    kept = [s for s in ended if (await client.get(f"/v1/sessions/{s['id']}")).status_code == 200]
    assert kept == ended[-2:]


async def test_one_organizations_reset_leaves_the_others_sessions_and_keys_alone(app, make_client):
    state = app.state.mockglot
    mine, theirs = new_key(), new_key()
    client, other, control = make_client(app, mine), make_client(app, theirs), make_client(app)
    kept = [await ended_session(other, state) for _ in range(3)]
    gone = [await ended_session(client, state) for _ in range(3)]
    assert (await control.post("/_mockglot/reset", json={"api_key": mine})).status_code == 200
    assert state.keys.get(mine) is None and state.keys.get(theirs) is not None  # the key is forgotten too
    for session in gone:
        expect_error(await client.get(f"/v1/sessions/{session['id']}"), 404, "session_not_found")
    for session in kept:
        assert (await other.get(f"/v1/sessions/{session['id']}")).status_code == 200
        assert len((await other.get(f"/v1/sessions/{session['id']}/recordings")).json()["data"]) == 1


async def test_received_audio_is_capped_per_speaker_and_the_counts_stay_exact(client, state, make_client, app):
    session = (await client.post("/v1/sessions", json=BODY)).json()
    record = state.sessions.find(session["id"])
    second = SAMPLE_RATE_HZ
    for _ in range(MAX_AUDIO_BYTES // second + 5):
        state.sessions.add_audio(record, "customer", b"\xff" * second)
    assert len(record.audio["customer"]) == MAX_AUDIO_BYTES
    info = (await make_client(app).get(f"/_mockglot/sessions/{session['id']}")).json()
    assert info["audio_ms"]["customer"] == (MAX_AUDIO_BYTES // second + 5) * 1000
    ended = (await client.post(f"/v1/sessions/{session['id']}/end")).json()
    assert ended["duration_seconds"] >= MAX_AUDIO_BYTES // second + 5


def bearer(key: str) -> auth.Credentials:
    return auth.Credentials.read({"authorization": f"Bearer {key}"})


def test_open_mode_remembers_a_bounded_number_of_keys(monkeypatch):
    monkeypatch.setattr(auth, "MAX_SEEN_KEYS", 3)
    store = auth.KeyStore()
    keys = [new_key() for _ in range(5)]
    for key in keys:
        store.authenticate(bearer(key))
    assert [store.get(k) is not None for k in keys] == [False, False, True, True, True]
    assert store.authenticate(bearer(keys[0])).organization == auth.KeyStore().ensure(keys[0]).organization
    pinned = store.ensure(keys[1])
    store.pin(pinned, "acme")
    for _ in range(5):
        store.authenticate(bearer(new_key()))
    assert store.get(keys[1]) is pinned and store.of("acme") == {keys[1]}


async def test_a_reset_by_a_key_the_server_forgot_for_space_still_resets_its_sessions(app, make_client, monkeypatch):
    """Open mode forgets the oldest keys past `MAX_SEEN_KEYS`, not their sessions: a reset by such a key must
    still reach them (its organization is its own, derived from the key)."""
    monkeypatch.setattr(auth, "MAX_SEEN_KEYS", 2)
    state = app.state.mockglot
    forgotten = new_key()
    client, control = make_client(app, forgotten), make_client(app)
    session = (await client.post("/v1/sessions", json=BODY)).json()
    for _ in range(3):
        assert (await make_client(app, new_key()).post("/v1/sessions", json=BODY)).status_code == 201
    assert state.keys.get(forgotten) is None  # pushed out by the newer keys
    reply = await control.post("/_mockglot/reset", json={"api_key": forgotten})
    assert reply.json() == {"reset": "organization", "organization": auth.open_organization(forgotten)}
    expect_error(await client.get(f"/v1/sessions/{session['id']}"), 404, "session_not_found")


# --- journals ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small() -> ServerThread:
    with ServerThread(Settings(port=0, output_pace="instant")) as running:
        yield running


async def test_a_large_text_frame_is_not_kept_whole_and_the_journal_says_so(small):
    """Under the stream's frame limit (a bigger one is journaled as a note of its size; a 15 MiB one never gets
    past the transport)."""
    key = new_key()
    async with Client(small.base_url, key) as client:
        session = await client.create_session(**BODY)
        stream = await client.open_stream(session)
        await stream.ws.send("x" * (MAX_FRAME_BYTES - 1024))
        error = await stream.until("session.error")
        assert error["error"]["code"] == "invalid_message"
        await stream.end()
    async with httpx.AsyncClient(base_url=small.base_url) as control:
        frames = await control.get(f"/_mockglot/sessions/{session['id']}/frames", params={"type": "(invalid)"})
        [frame] = frames.json()["frames"]
    assert frame["truncated"] is True
    assert len(frame["frame"]) == journal.MAX_FRAME_CHARS


async def test_a_flood_of_pings_keeps_the_newest_frames_and_exact_counts(small, monkeypatch):
    monkeypatch.setattr(journal, "MAX_FRAMES", 50)
    key = new_key()
    async with Client(small.base_url, key) as client:
        session = await client.create_session(**BODY)
        stream = await client.open_stream(session)
        for _ in range(200):
            await stream.send_json({"type": "ping"})
        await stream.end()
    async with httpx.AsyncClient(base_url=small.base_url) as control:
        path = f"/_mockglot/sessions/{session['id']}"
        info = (await control.get(path)).json()
        frames = (await control.get(f"{path}/frames")).json()
    assert info["frames_in"] == 201  # 200 pings and session.end: every one counted
    assert info["frames_out"] >= 202  # session.ready, 200 pongs, session.ended (and the transcript)
    assert len(frames["frames"]) == 50
    assert frames["dropped"] == info["frames_in"] + info["frames_out"] - 50
    assert [f["index"] for f in frames["frames"]] == list(range(frames["dropped"], frames["dropped"] + 50))
    assert frames["frames"][-1]["type"] == "session.ended" or frames["frames"][-1]["direction"] == "out"


async def test_the_request_journal_cuts_large_headers_and_bodies_and_marks_them(app, make_client, api_key):
    client, control = make_client(app, api_key), make_client(app)
    huge = "h" * (8 * 1024)  # over the journal's per-value limit, under the server's header limit
    await client.post("/v1/sessions", json={**BODY, "metadata": {"note": "b" * (100 * 1024)}}, headers={"X-Big": huge})
    await client.get("/v1/nothing-here", headers={"X-Big": huge})
    [created, missing] = (await control.get("/_mockglot/requests", params={"api_key": api_key})).json()["data"]
    for entry in (created, missing):
        assert entry["truncated"] is True
        assert entry["headers"]["x-big"] == "h" * requests.MAX_HEADER_BYTES
    assert len(created["body"]) == requests.MAX_BODY_BYTES
    small_one = await client.get("/v1/sessions/sess_nope")
    assert small_one.status_code == 404
    assert (await control.get("/_mockglot/requests", params={"api_key": api_key})).json()["data"][-1][
        "truncated"
    ] is False


async def test_the_request_journal_stays_within_its_byte_budget(app, make_client, monkeypatch):
    monkeypatch.setattr(requests, "MAX_BYTES", 200 * 1024)
    state = app.state.mockglot
    control = make_client(app)
    anonymous = make_client(app, headers={"X-Big": "h" * 1000})
    for _ in range(300):
        await anonymous.get("/v1/nowhere")
    assert state.requests._bytes <= 200 * 1024
    entries = (await control.get("/_mockglot/requests", params={"limit": 10_000})).json()["data"]
    assert 100 < len(entries) < 300  # the newest that fit
    keyed = new_key()
    await make_client(app, keyed).get("/v1/sessions/sess_x")
    await control.post("/_mockglot/reset", json={"api_key": keyed})
    assert (await control.get("/_mockglot/requests", params={"api_key": keyed})).json()["data"] == []
    assert len((await control.get("/_mockglot/requests", params={"limit": 10_000})).json()["data"]) == len(entries)
