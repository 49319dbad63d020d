"""The test-double toolkit's "Done when", through the plugin's `mockglot` fixture (active in this repo's run):
journals with a blocking wait, faults, the clock, received audio, inject, and a validated, protectable control
plane."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import yaml

import mockglot as package
from mockglot.settings import Settings
from mockglot.speech import codec
from mockglot.stream_cli import WAVE_FORMAT_MULAW, WAVE_FORMAT_PCM, parse_wav
from mockglot.testing.client import Client, KallglotError, bearer, utterance
from mockglot.testing.plugin import Mockglot, WaitTimeout, new_api_key
from mockglot.testing.server import ServerThread

ORDER_CHANGE = yaml.safe_load(
    (Path(package.__file__).parent / "builtin" / "scenarios" / "order-change.yaml").read_text(encoding="utf-8")
)


async def test_waits_for_the_third_final_of_a_live_stream_without_sleeping(mockglot):
    async with mockglot.async_client() as client:
        session = await client.create_session(source_language="de", target_language="en")
        stream = await client.open_stream(session)
        await stream.send_audio("customer", utterance() * 3)  # as fast as the socket takes it
        finals = await mockglot.frames_async(session["id"], type="transcript.final", wait_for=3)
        assert [f["text"] for f in finals] == [turn["text"] for turn in ORDER_CHANGE["turns"]["customer"][:3]]
        assert [f["turn"] for f in finals] == [1, 2, 3]
        assert mockglot.sessions()[0]["connected"]  # the stream is still live: nothing was ended to get there
        await stream.end()


def test_a_wait_that_is_not_met_fails_with_what_did_arrive(mockglot):
    session = mockglot.client.create_session()
    with pytest.raises(WaitTimeout, match=r"waited for 1 transcript.final on sess_\w+, got 0"):
        mockglot.frames(session["id"], type="transcript.final", wait_for=1, timeout=0.2)


async def test_a_stream_read_that_times_out_says_what_did_arrive(mockglot):
    """`until` and `recv` raised a bare TimeoutError: the test's failure said nothing of what the server sent."""
    async with mockglot.async_client() as client:
        stream = await client.open_stream(await client.create_session())
        with pytest.raises(TimeoutError) as waited:
            await stream.until("transcript.final", timeout=0.2)
        assert str(waited.value) == "no transcript.final within 0.2 s; received 1 frame(s): session.ready"
        with pytest.raises(TimeoutError, match=r"^no frame from the server within 0.1 s; received 1 frame\(s\): "):
            await stream.recv(timeout=0.1)
        await stream.end()


async def test_the_test_client_reads_on_past_a_frame_that_is_not_json(mockglot):
    """A `malformed` fault made `recv`, `until` and `drain` raise msgspec.DecodeError: a test could not read past
    the very fault it armed."""
    mockglot.stream_fault(action="malformed", after_frames=1)
    async with mockglot.async_client() as client:
        stream = await client.open_stream(await client.create_session())
        await stream.send_json({"type": "ping"})
        await stream.until("(malformed)")
        frames = await stream.end()
    [malformed] = [f for f in stream.received if f["type"] == "(malformed)"]
    assert malformed["raw"].startswith('{"type": "transcript.final"')
    assert frames[-1]["type"] == "session.ended"


def test_rest_fault_fails_the_next_create_with_503_and_the_one_after_succeeds(mockglot):
    mockglot.fault(method="POST", path="/v1/sessions", status=503)
    failed = mockglot.client.http.post("/v1/sessions", json={"mode": "bidirectional_translation"})
    assert (failed.status_code, failed.json()["error"]["code"]) == (503, "service_unavailable")
    assert failed.headers["Retry-After"] == "1"
    assert mockglot.client.create_session()["status"] == "created"
    assert [r["status"] for r in mockglot.requests()] == [503, 201]


def test_a_fault_for_one_key_leaves_other_keys_alone(mockglot, mockglot_server):
    mockglot.fault(method="POST", path="/v1/sessions", status=503, times=None)
    other = Mockglot(mockglot_server)
    try:
        assert other.client.create_session()["status"] == "created"
    finally:
        other.close()
    with pytest.raises(KallglotError) as refused:
        mockglot.client.create_session()
    assert refused.value.status == 503


async def test_advancing_the_clock_six_minutes_expires_a_fresh_stream_token(mockglot):
    async with mockglot.async_client() as client:
        session = await client.create_session()
        before = mockglot.clock.now()
        assert mockglot.clock.advance(6 * 60) - before >= timedelta(minutes=6)
        stream = await client.open_stream(session)
        frames = await stream.drain()
        assert [f["type"] for f in frames] == ["session.error"]
        assert (frames[0]["error"]["code"], stream.close_code) == ("expired_token", 4001)


async def test_the_audio_a_client_sent_comes_back_byte_for_byte_as_wav(mockglot):
    sent = utterance(900, 600) + bytes((i * 37) % 256 for i in range(2345))  # odd length: a padded data chunk
    async with mockglot.async_client() as client:
        session = await client.create_session()
        stream = await client.open_stream(session)
        await stream.send_audio("agent", sent)
        await stream.end()
    mulaw = parse_wav(mockglot.received_audio(session["id"], "agent"))
    assert (mulaw.format, mulaw.channels, mulaw.rate_hz, mulaw.bits) == (WAVE_FORMAT_MULAW, 1, 8000, 8)
    assert mulaw.data == sent
    pcm = parse_wav(mockglot.received_audio(session["id"], "agent", encoding="pcm"))
    assert (pcm.format, pcm.bits, pcm.data) == (WAVE_FORMAT_PCM, 16, codec.mulaw_to_pcm(sent))
    assert parse_wav(mockglot.received_audio(session["id"], "customer")).data == b""


async def test_an_injected_frame_reaches_the_client(mockglot):
    async with mockglot.async_client() as client:
        session = await client.create_session()
        with pytest.raises(KallglotError) as not_live:
            mockglot.inject(session["id"], {"type": "pong"})
        assert not_live.value.code == "session_not_connected"
        stream = await client.open_stream(session)
        await stream.until("session.ready")
        partial = {"type": "transcript.partial", "turn": 7, "speaker": "customer", "language": "de", "text": "hallo"}
        mockglot.inject(session["id"], partial)
        assert await stream.recv() == {**partial, "session_id": session["id"]}
        mockglot.inject(session["id"], raw="{not json")
        assert await stream.ws.recv() == "{not json"
        await stream.end()
    assert mockglot.frames(session["id"], direction="out", type="transcript.partial") == [
        {**partial, "session_id": session["id"]}
    ]


def test_the_request_journal_shows_requests_with_the_key_redacted(mockglot):
    session = mockglot.client.create_session(metadata={"external_call_id": "call_abc123"})
    mockglot.client.http.get("/v1/sessions/sess_unknown", headers={"X-API-Key": mockglot.api_key})
    entries = mockglot.requests()
    assert [(e["method"], e["path"], e["status"]) for e in entries] == [
        ("POST", "/v1/sessions", 201),
        ("GET", "/v1/sessions/sess_unknown", 404),
    ]
    assert json.loads(entries[0]["body"])["metadata"] == {"external_call_id": "call_abc123"}
    assert session["id"] not in entries[0]["body"]
    redacted = f"{mockglot.api_key[:8]}…{mockglot.api_key[-4:]}"
    assert {e["api_key"] for e in entries} == {redacted}
    assert entries[0]["headers"]["authorization"] == redact_bearer(mockglot.api_key)
    assert entries[1]["headers"]["x-api-key"] == redacted
    assert mockglot.api_key not in json.dumps(entries)


def redact_bearer(key: str) -> str:
    bearer_value = f"Bearer {key}"
    return f"{bearer_value[:8]}…{bearer_value[-4:]}"


def test_keys_that_share_their_last_four_characters_keep_separate_journals(mockglot_server):
    """Redaction keeps a key's last 4 characters; the journal must still tell such keys apart."""
    tail = new_api_key()[-4:]
    one = Mockglot(mockglot_server, new_api_key()[:-4] + tail)
    two = Mockglot(mockglot_server, new_api_key()[:-4] + tail)
    try:
        one.client.create_session()
        two.client.create_session()
        two.client.create_session()
        assert [r["status"] for r in one.requests()] == [201]
        one.reset()
        assert one.requests() == []
        assert [r["status"] for r in two.requests()] == [201, 201]
    finally:
        one.close()
        two.close()


def test_control_plane_bodies_are_validated_like_the_public_api(mockglot):
    public = mockglot.client.http.post("/v1/sessions", json={"mode": 5})
    with pytest.raises(KallglotError) as bad_body:
        mockglot.fault(method="POST", status="soon")
    assert (bad_body.value.status, bad_body.value.code, bad_body.value.param) == (422, "invalid_field_value", "status")
    assert set(bad_body.value.response.json()["error"]) == set(public.json()["error"])  # the same envelope
    assert public.status_code == 422 and public.json()["error"]["param"] == "mode"

    with pytest.raises(KallglotError) as unknown_field:
        mockglot.fault(status=503, when="always")
    assert (unknown_field.value.status, unknown_field.value.param) == (422, "when")

    with pytest.raises(KallglotError) as never_matches:
        mockglot.fault(path="/_mockglot/health", status=503)
    assert never_matches.value.status == 422
    assert "never matches: faults apply to the public API under /v1" in never_matches.value.error_message

    with pytest.raises(KallglotError) as never_fires:
        mockglot.stream_fault(action="close", close_code=1006)
    assert "close code 1006 is reserved" in never_fires.value.error_message

    with pytest.raises(KallglotError) as unparsable:
        mockglot.upload_scenario("name: broken\nturns: [unclosed")
    assert (unparsable.value.status, unparsable.value.param) == (422, "yaml")
    assert "does not parse" in unparsable.value.error_message and "line 2" in unparsable.value.error_message

    with pytest.raises(KallglotError) as invalid:
        mockglot.upload_scenario({"name": "broken", "turns": {"customer": [{"txt": "hello"}]}})
    assert invalid.value.param == "scenario" and "txt" in invalid.value.error_message
    assert mockglot.sessions() == []  # nothing above created anything


def test_control_token_protects_the_control_plane_except_health():
    token = "s3cret-control-token"
    with ServerThread(Settings(port=0, control_token=token)) as server, httpx.Client(base_url=server.base_url) as http:
        assert http.get("/_mockglot/health").status_code == 200
        for method, path in [("GET", "/_mockglot/sessions"), ("POST", "/_mockglot/reset"), ("GET", "/_mockglot/clock")]:
            refused = http.request(method, path, json={})
            assert (refused.status_code, refused.json()["error"]["code"]) == (401, "invalid_api_key"), path
            assert "--control-token" in refused.json()["error"]["message"]
        assert http.get("/_mockglot/sessions", headers=bearer("wrong-token")).status_code == 401
        assert http.get("/_mockglot/sessions", headers=bearer(token)).status_code == 200
        created = http.post("/v1/sessions", headers=bearer(new_api_key()), json={"mode": "bidirectional_translation"})
        assert created.status_code == 201  # the public API is not behind the control token


def test_a_chosen_scenario_covers_the_tests_sessions_until_reset(mockglot):
    mockglot.upload_scenario({"name": "short-call", "turns": {"customer": [{"text": "Hallo"}]}})
    mockglot.use_scenario("short-call")
    for _ in range(3):
        mockglot.client.create_session()
    assert [s["scenario"] for s in mockglot.sessions()] == ["short-call"] * 3
    mockglot.use_scenario("short-call", sessions=1)
    mockglot.client.create_session()
    mockglot.client.create_session()  # the one-session choice is spent: the server default again
    assert [s["scenario"] for s in mockglot.sessions()][-2:] == ["short-call", "order-change"]
    mockglot.use_scenario("short-call")
    mockglot.reset()
    mockglot.client.create_session()
    assert [s["scenario"] for s in mockglot.sessions()] == ["order-change"]


def test_a_faulted_request_is_journaled_with_its_body(mockglot):
    mockglot.fault(method="POST", path="/v1/sessions", error_code="service_unavailable")
    body = {"mode": "bidirectional_translation", "metadata": {"marker": "faulted"}}
    assert mockglot.client.http.post("/v1/sessions", json=body).status_code == 503
    journaled = mockglot.requests()[-1]
    assert journaled["status"] == 503 and '"faulted"' in journaled["body"]


async def test_health_counts_sessions_and_the_streams_open_right_now():
    with ServerThread(Settings(port=0)) as server:
        async with Client(server.base_url, new_api_key()) as client, httpx.AsyncClient(base_url=server.base_url) as ctl:

            async def health() -> tuple[int, int]:
                body = (await ctl.get("/_mockglot/health")).json()
                return body["sessions"], body["live_streams"]

            assert await health() == (0, 0)
            first = await client.create_session()
            await client.create_session()
            stream = await client.open_stream(first)
            await stream.until("session.ready")
            assert await health() == (2, 1)
            await stream.end()
            assert await health() == (2, 0)
