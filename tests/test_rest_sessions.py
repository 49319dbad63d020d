"""Sessions over REST (kallglot-api.md §6): create, retrieve, end, transcript, and the state machine."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from mockglot.app import create_app
from mockglot.settings import Settings
from mockglot.state.clock import Clock
from mockglot.state.server import ServerState
from mockglot.state.sessions import Turn
from tests.checks import BASIC, create

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
ULID_BODY = r"[0-9A-HJKMNP-TV-Z]{26}"
SESSION_KEYS = [
    "id", "object", "status", "mode", "provider", "phone_number", "source_language", "target_language",
    "stream", "call", "recording", "metadata", "created_at", "started_at", "ended_at",
]  # fmt: skip
SAMPLES_PER_SECOND = 8000  # mu-law 8 kHz: one byte a sample


def parse_iso(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def turn(sequence: int, speaker: str = "customer", **fields) -> Turn:
    values = {
        "sequence": sequence,
        "speaker": speaker,
        "language": "de",
        "text": f"Satz {sequence}",
        "confidence": 0.9,
        "timestamp": 1_767_225_600 + sequence,  # 2026-01-01T00:00:0NZ
        "start_ms": 1000 * sequence,
        "end_ms": 1000 * sequence + 500,
    }
    values.update(fields)
    return Turn(**values)


# --- create -----------------------------------------------------------------------------------------------


async def test_create_returns_the_documented_session_object(client, api_key):
    response = await client.post("/v1/sessions", json=BASIC)
    assert response.status_code == 201
    assert response.headers["content-type"] == "application/json"
    session = response.json()
    assert list(session) == SESSION_KEYS
    assert re.fullmatch("sess_" + ULID_BODY, session["id"])
    assert session["object"] == "session"
    assert session["status"] == "created"
    assert session["mode"] == "bidirectional_translation"
    assert session["provider"] is None
    assert session["phone_number"] is None
    assert (session["source_language"], session["target_language"]) == ("de", "en")
    assert session["call"] is None  # (r2) as the Quick Start shows
    assert session["recording"] == {"enabled": False}
    assert session["metadata"] is None  # (r2) null when the request had none, never {}
    assert ISO.match(session["created_at"])
    assert session["started_at"] is None
    assert session["ended_at"] is None
    stream = session["stream"]
    assert stream["url"] == f"ws://testserver/v1/sessions/{session['id']}/connect"
    assert stream["token"].startswith("kst_test_")
    lifetime = parse_iso(stream["expires_at"]) - parse_iso(session["created_at"])
    assert lifetime == timedelta(minutes=5)


async def test_omitted_languages_mean_auto_detect_and_come_back_null(client):
    session = await create(client, {"mode": "assistive_translation"})
    assert session["mode"] == "assistive_translation"
    assert session["source_language"] is None
    assert session["target_language"] is None


async def test_recording_and_metadata_are_echoed(client):
    metadata = {"external_call_id": "call_abc123", "team": "billing", "k" * 40: "v" * 500, "empty": ""}
    session = await create(client, {**BASIC, "recording": {"enabled": True}, "metadata": metadata})
    assert session["recording"] == {"enabled": True}
    assert session["metadata"] == metadata
    fetched = (await client.get(f"/v1/sessions/{session['id']}")).json()
    assert fetched["metadata"] == metadata
    assert fetched["recording"] == {"enabled": True}


async def test_absent_metadata_stays_null_on_every_read(client):
    session = await create(client)
    fetched = (await client.get(f"/v1/sessions/{session['id']}")).json()
    assert (session["metadata"], fetched["metadata"], fetched["call"]) == (None, None, None)


@pytest.mark.parametrize(
    "audio",
    [{}, {"encoding": "mulaw"}, {"encoding": "mulaw", "sample_rate_hz": 8000, "channels": 1}, {"channels": 1}],
)
async def test_the_audio_transport_hints_accept_the_documented_defaults(client, audio):
    session = await create(client, {**BASIC, "audio": audio})
    assert session["status"] == "created"


async def test_a_session_accepts_fifty_metadata_keys(client):
    metadata = {f"key{i}": str(i) for i in range(50)}
    session = await create(client, {**BASIC, "metadata": metadata})
    assert session["metadata"] == metadata


@pytest.mark.parametrize(
    ("routing", "provider", "phone_number"),
    [
        ({"phone_number": "+4930123456"}, "twilio", "+4930123456"),
        ({"phone_number": "+14155550100", "direction": "outbound"}, "twilio", "+14155550100"),
        ({"connection_id": "pcon_abc123", "direction": "inbound"}, "telnyx", None),
        ({"type": "sip"}, "sip", None),
        (
            {"type": "sip", "sip": {"from_uri": "sip:alice@example.com", "headers": {"X-Customer-Id": "42"}}},
            "sip",
            None,
        ),
        ({"type": "sip", "sip": {"from_uri": "sips:bob@example.com"}, "direction": "inbound"}, "sip", None),
    ],
)
async def test_routing_resolves_the_provider(client, routing, provider, phone_number):
    session = await create(client, {**BASIC, "routing": routing})
    assert session["provider"] == provider
    assert session["phone_number"] == phone_number
    fetched = (await client.get(f"/v1/sessions/{session['id']}")).json()
    assert (fetched["provider"], fetched["phone_number"]) == (provider, phone_number)


async def test_ai_agent_mode_takes_a_full_agent_description(client):
    agent = {
        "system_prompt": "You are a helpful order desk.",
        "voice": "nova",
        "temperature": 0.7,
        "knowledge_base_id": "kb_orders1",
        "tools": [
            {
                "name": "lookup_order",
                "description": "Find an order by number",
                "parameters": {"type": "object", "properties": {"number": {"type": "string"}}},
            }
        ],
    }
    session = await create(client, {"mode": "ai_agent", "source_language": "de", "ai_agent": agent})
    assert session["mode"] == "ai_agent"
    assert session["source_language"] == "de"


@pytest.mark.parametrize("voice", ["alloy", "echo", "fable", "onyx", "nova", "shimmer"])
async def test_every_documented_voice_is_accepted(client, voice):
    await create(client, {"mode": "ai_agent", "ai_agent": {"system_prompt": "hi", "voice": voice}})


async def test_help_chat_voice_mode(client):
    session = await create(client, {"mode": "help_chat_voice", "ai_agent": {"system_prompt": "Help desk."}})
    assert session["mode"] == "help_chat_voice"


async def test_stream_url_follows_the_origin_the_client_called(client):
    session = await create(client, headers={"Host": "calls.example.test:9000"})
    assert session["stream"]["url"] == f"ws://calls.example.test:9000/v1/sessions/{session['id']}/connect"


async def test_an_empty_host_header_gives_a_stream_url_with_the_server_s_address(client):
    """HTTP allows `Host:` empty; the stream URL was then `ws:///v1/...`, which no client can connect to."""
    session = await create(client, headers={"Host": ""})
    assert session["stream"]["url"] == f"ws://testserver/v1/sessions/{session['id']}/connect"


async def test_stream_url_behind_a_tls_proxy_is_wss(client):
    headers = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "api.example.com"}
    session = await create(client, headers=headers)
    assert session["stream"]["url"] == f"wss://api.example.com/v1/sessions/{session['id']}/connect"
    fetched = await client.get(f"/v1/sessions/{session['id']}", headers={"X-Forwarded-Proto": "https"})
    assert fetched.json()["stream"]["url"].startswith("wss://testserver/")


async def test_a_live_key_gets_a_live_stream_token(app, make_client, make_key):
    client = make_client(app, make_key("live"))
    session = await create(client)
    assert session["stream"]["token"].startswith("kst_live_")


async def test_a_seeded_server_repeats_its_ids_and_tokens(make_app, make_client, make_key):
    key = make_key()
    runs = []
    for _ in range(2):
        client = make_client(make_app(seed=7), key)
        first, second = await create(client), await create(client)
        runs.append([first["id"], first["stream"]["token"], second["id"], second["stream"]["token"]])
    assert runs[0] == runs[1]
    assert len(set(runs[0])) == 4


# --- retrieve ---------------------------------------------------------------------------------------------


async def test_retrieve_returns_the_created_session(client):
    created = await create(client, {**BASIC, "metadata": {"a": "b"}, "routing": {"connection_id": "pcon_x1"}})
    response = await client.get(f"/v1/sessions/{created['id']}")
    assert response.status_code == 200
    assert response.json() == created


async def test_the_stream_token_is_kept_while_valid_and_reissued_once_expired(client, state):
    created = await create(client)
    path = f"/v1/sessions/{created['id']}"
    state.clock.advance(4 * 60 + 59)
    still = (await client.get(path)).json()["stream"]
    assert still == created["stream"]

    state.clock.advance(2)
    fresh = (await client.get(path)).json()["stream"]
    assert fresh["token"] != created["stream"]["token"]
    assert fresh["token"].startswith("kst_test_")
    assert parse_iso(fresh["expires_at"]) > parse_iso(created["stream"]["expires_at"])
    assert parse_iso(fresh["expires_at"]) - timedelta(minutes=5) >= parse_iso(created["created_at"])
    again = (await client.get(path)).json()["stream"]
    assert again == fresh


# --- state machine and end --------------------------------------------------------------------------------


async def test_status_goes_created_active_ended(client, state):
    created = await create(client)
    path = f"/v1/sessions/{created['id']}"
    record = state.sessions.find(created["id"])

    state.clock.advance(3)
    state.sessions.add_audio(record, "customer", b"\xff" * 160)
    active = (await client.get(path)).json()
    assert active["status"] == "active"
    assert parse_iso(active["started_at"]) - parse_iso(active["created_at"]) in (
        timedelta(seconds=3),
        timedelta(seconds=4),  # created_at is truncated to the second
    )
    assert active["ended_at"] is None
    assert "stream" in active

    ended = await client.post(f"{path}/end")
    assert ended.status_code == 200
    final = (await client.get(path)).json()
    assert final["status"] == "ended"
    assert final["ended_at"] == ended.json()["ended_at"]
    assert final["started_at"] == active["started_at"]
    assert "stream" not in final


async def test_end_returns_the_summary_and_is_idempotent(client, state):
    created = await create(client)
    path = f"/v1/sessions/{created['id']}/end"
    first = await client.post(path)
    assert first.status_code == 200
    summary = first.json()
    assert list(summary) == ["id", "object", "status", "duration_seconds", "ended_at"]
    assert summary["id"] == created["id"]
    assert summary["object"] == "session"
    assert summary["status"] == "ended"
    assert summary["duration_seconds"] == 0
    assert ISO.match(summary["ended_at"])

    state.clock.advance(120)
    second = await client.post(path, json={})
    assert second.status_code == 200
    assert second.json() == summary


async def test_end_accepts_an_empty_body_without_content_type(client):
    created = await create(client)
    response = await client.post(f"/v1/sessions/{created['id']}/end", content=b"")
    assert response.status_code == 200
    assert response.json()["status"] == "ended"


async def test_duration_runs_from_first_audio_to_end_with_one_decimal(make_client, api_key):
    """On a stopped wall clock, so a loaded machine's pauses between the steps cannot add a tenth."""
    settings = Settings()
    state = ServerState(settings, clock=Clock(wall=lambda: 1_767_225_600.0))
    client = make_client(create_app(settings, state), api_key)
    created = await create(client)
    record = state.sessions.find(created["id"])
    state.clock.advance(10)  # waiting before the first audio does not count
    state.sessions.add_audio(record, "customer", b"\xff" * 160)
    state.clock.advance(12.34)
    summary = (await client.post(f"/v1/sessions/{created['id']}/end")).json()
    assert summary["duration_seconds"] == 12.3
    transcript = (await client.get(f"/v1/sessions/{created['id']}/transcript")).json()
    assert transcript["metadata"]["duration_seconds"] == 12.3


async def test_duration_is_never_shorter_than_the_audio_received(client, state):
    created = await create(client)
    record = state.sessions.find(created["id"])
    state.sessions.add_audio(record, "customer", b"\xff" * (20 * SAMPLES_PER_SECOND))
    state.sessions.add_audio(record, "agent", b"\xff" * (5 * SAMPLES_PER_SECOND))
    summary = (await client.post(f"/v1/sessions/{created['id']}/end")).json()
    assert summary["duration_seconds"] == 20.0


async def test_an_idle_session_ends_after_thirty_minutes(client, state):
    created = await create(client)
    path = f"/v1/sessions/{created['id']}"
    state.clock.advance(30 * 60 - 2)
    assert (await client.get(path)).json()["status"] == "created"

    state.clock.advance(3)
    session = (await client.get(path)).json()
    assert session["status"] == "ended"
    assert parse_iso(session["ended_at"]) == parse_iso(created["created_at"]) + timedelta(minutes=30)
    assert state.sessions.find(created["id"]).end_reason == "idle_timeout"
    summary = (await client.post(f"{path}/end")).json()
    assert summary["ended_at"] == session["ended_at"]
    assert state.sessions.find(created["id"]).end_reason == "idle_timeout"


async def test_idle_end_counts_from_the_last_activity(client, state):
    created = await create(client)
    path = f"/v1/sessions/{created['id']}"
    record = state.sessions.find(created["id"])
    state.clock.advance(20 * 60)
    state.sessions.add_audio(record, "customer", b"\xff" * 160)
    last_activity = (await client.get(path)).json()["started_at"]

    state.clock.advance(25 * 60)  # 45 minutes after creation, 25 after the audio
    assert (await client.get(path)).json()["status"] == "active"

    state.clock.advance(6 * 60)
    session = (await client.get(path)).json()
    assert session["status"] == "ended"
    assert parse_iso(session["ended_at"]) == parse_iso(last_activity) + timedelta(minutes=30)


# --- transcript -------------------------------------------------------------------------------------------


async def test_a_new_session_has_an_empty_in_progress_transcript(client):
    created = await create(client)
    response = await client.get(f"/v1/sessions/{created['id']}/transcript")
    assert response.status_code == 200
    assert response.json() == {
        "id": "trn_" + created["id"].removeprefix("sess_"),  # (r2) the Quick Start's transcript id
        "object": "transcript",
        "session_id": created["id"],
        "status": "in_progress",
        "turns": [],
        "metadata": {"total_turns": 0, "duration_seconds": 0.0, "languages_detected": []},
    }


async def test_transcript_turns_come_in_sequence_order(client, state):
    created = await create(client)
    record = state.sessions.find(created["id"])
    state.sessions.add_turn(
        record, turn(2, "agent", language="en", text="Of course.", translation_language="de",
                     translation_text="Natürlich.", confidence=0.88)
    )  # fmt: skip
    state.sessions.add_turn(
        record, turn(1, text="Ich möchte meine Bestellung ändern", translation_language="en",
                     translation_text="I want to change my order", confidence=0.96)
    )  # fmt: skip
    state.sessions.add_turn(record, turn(3, "agent", language="de", text="Einen Moment.", source="ai"))

    body = (await client.get(f"/v1/sessions/{created['id']}/transcript")).json()
    assert [t["sequence"] for t in body["turns"]] == [1, 2, 3]
    assert body["turns"][0] == {
        "sequence": 1,
        "speaker": "customer",
        "language": "de",
        "text": "Ich möchte meine Bestellung ändern",
        "translation": {"language": "en", "text": "I want to change my order"},
        "confidence": 0.96,
        "timestamp": "2026-01-01T00:00:01Z",
    }
    assert body["turns"][1]["speaker"] == "agent"
    assert body["turns"][1]["translation"] == {"language": "de", "text": "Natürlich."}
    assert "translation" not in body["turns"][2]
    assert (body["turns"][2]["speaker"], body["turns"][2]["source"]) == ("agent", "ai")  # (r2)
    assert "source" not in body["turns"][0]
    assert body["metadata"]["total_turns"] == 3
    assert body["metadata"]["languages_detected"] == ["de", "en"]
    assert body["status"] == "in_progress"

    await client.post(f"/v1/sessions/{created['id']}/end")
    ended = (await client.get(f"/v1/sessions/{created['id']}/transcript")).json()
    assert ended["status"] == "completed"
    assert ended["turns"] == body["turns"]


@pytest.fixture
async def two_turns(client, state) -> str:
    created = await create(client)
    record = state.sessions.find(created["id"])
    state.sessions.add_turn(
        record, turn(2, "agent", language="en", text="Of course.", start_ms=3_723_004, end_ms=3_725_000)
    )
    state.sessions.add_turn(
        record, turn(1, text="Hallo", translation_language="en", translation_text="Hello", start_ms=0,
                     end_ms=1_250)
    )  # fmt: skip
    return created["id"]


async def test_transcript_as_text(client, two_turns):
    response = await client.get(f"/v1/sessions/{two_turns}/transcript", params={"format": "text"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.text == "[customer] Hallo\n[customer → en] Hello\n[agent] Of course.\n"


async def test_transcript_as_srt(client, two_turns):
    response = await client.get(f"/v1/sessions/{two_turns}/transcript", params={"format": "srt"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-subrip; charset=utf-8"
    assert response.text == (
        "1\n00:00:00,000 --> 00:00:01,250\n[customer] Hallo\n[customer → en] Hello\n"
        "\n"
        "2\n01:02:03,004 --> 01:02:05,000\n[agent] Of course.\n"
    )


async def test_transcript_as_vtt(client, two_turns):
    response = await client.get(f"/v1/sessions/{two_turns}/transcript", params={"format": "vtt"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/vtt; charset=utf-8"
    assert response.text == (
        "WEBVTT\n"
        "\n"
        "turn-1\n00:00:00.000 --> 00:00:01.250\n<v customer>Hallo\n<v customer>Hello\n"
        "\n"
        "turn-2\n01:02:03.004 --> 01:02:05.000\n<v agent>Of course.\n"
    )


async def test_transcript_json_is_the_default_format(client, two_turns):
    default = await client.get(f"/v1/sessions/{two_turns}/transcript")
    explicit = await client.get(f"/v1/sessions/{two_turns}/transcript", params={"format": "json"})
    assert default.json() == explicit.json()
    assert [t["text"] for t in default.json()["turns"]] == ["Hallo", "Of course."]


async def test_subtitle_formats_survive_line_breaks_and_markup_in_turn_text(client, state):
    created = await create(client)
    record = state.sessions.find(created["id"])
    state.sessions.add_turn(
        record, turn(1, text="AT&T <b>bills</b>\n\nlater --> now", translation_language="en",
                     translation_text="line one\nline two", start_ms=0, end_ms=900)
    )  # fmt: skip
    path = f"/v1/sessions/{created['id']}/transcript"
    text = (await client.get(path, params={"format": "text"})).text
    assert text == "[customer] AT&T <b>bills</b> later --> now\n[customer → en] line one line two\n"
    srt = (await client.get(path, params={"format": "srt"})).text
    assert srt == "1\n00:00:00,000 --> 00:00:00,900\n[customer] AT&T <b>bills</b> later --> now\n" + (
        "[customer → en] line one line two\n"
    )
    vtt = (await client.get(path, params={"format": "vtt"})).text
    assert vtt == (
        "WEBVTT\n\nturn-1\n00:00:00.000 --> 00:00:00.900\n"
        "<v customer>AT&amp;T &lt;b&gt;bills&lt;/b&gt; later --&gt; now\n<v customer>line one line two\n"
    )
    body = (await client.get(path)).json()
    assert body["turns"][0]["text"] == "AT&T <b>bills</b>\n\nlater --> now"  # JSON keeps the text as it was


@pytest.mark.parametrize(("fmt", "expected"), [("text", ""), ("srt", ""), ("vtt", "WEBVTT\n")])
async def test_an_empty_transcript_in_each_format(client, fmt, expected):
    created = await create(client)
    response = await client.get(f"/v1/sessions/{created['id']}/transcript", params={"format": fmt})
    assert response.status_code == 200
    assert response.text == expected


async def test_an_unknown_transcript_format_is_422(client, two_turns):
    response = await client.get(f"/v1/sessions/{two_turns}/transcript", params={"format": "docx"})
    assert response.status_code == 422
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("invalid_field_value", "format")
    assert "text, srt or vtt" in error["message"]


# --- routes, request IDs, usage headers -------------------------------------------------------------------


async def test_there_is_no_list_endpoint(client):
    response = await client.get("/v1/sessions")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "method_not_allowed"
    assert "/openapi.json" in error["message"]


@pytest.mark.parametrize("path", ["/v2/sessions", "/v1/recordingz", "/v1/sessions/abc/nope", "/"])
async def test_an_unknown_path_is_route_not_found(client, path):
    response = await client.get(path)
    assert response.status_code == 404
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("not_found_error", "route_not_found", None)
    assert path in error["message"]
    assert error["request_id"] == response.headers["x-request-id"]


async def test_a_trailing_slash_is_an_unknown_route_not_a_redirect(client):
    response = await client.post("/v1/sessions/", json=BASIC)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "route_not_found"


async def test_every_response_has_a_request_id_and_errors_repeat_it(client, make_client, app):
    created = await create(client)
    responses = [
        await client.post("/v1/sessions", json=BASIC),
        await client.get(f"/v1/sessions/{created['id']}"),
        await client.get(f"/v1/sessions/{created['id']}/transcript", params={"format": "text"}),
        await client.post(f"/v1/sessions/{created['id']}/end"),
        await client.get("/openapi.json"),
        await client.get("/v1/sessions/sess_missing"),
        await client.post("/v1/sessions", json={}),
        await client.get("/v1/sessions"),
        await client.get("/nowhere"),
        await make_client(app).get(f"/v1/sessions/{created['id']}"),
    ]
    ids = [r.headers["x-request-id"] for r in responses]
    assert all(re.fullmatch("req_" + ULID_BODY, rid) for rid in ids)
    assert len(set(ids)) == len(ids)
    for response in responses:
        if response.status_code >= 400:
            assert response.json()["error"]["request_id"] == response.headers["x-request-id"]
    assert [r.status_code for r in responses] == [201, 200, 200, 200, 200, 404, 422, 405, 404, 401]


USAGE = ["x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset", "x-api-credits-remaining",
         "x-api-credits-used"]  # fmt: skip


async def test_authenticated_responses_carry_usage_headers(client, state):
    first = await client.post("/v1/sessions", json=BASIC)
    second = await client.get(f"/v1/sessions/{first.json()['id']}")
    missing = await client.get("/v1/sessions/sess_missing")
    invalid = await client.post("/v1/sessions", json={"mode": "nope"})
    for response in (first, second, missing, invalid):
        assert all(name in response.headers for name in USAGE), response.headers
    assert first.headers["x-api-credits-used"] == "1"
    assert int(first.headers["x-ratelimit-remaining"]) == int(first.headers["x-ratelimit-limit"]) - 1
    assert int(second.headers["x-ratelimit-remaining"]) == int(first.headers["x-ratelimit-remaining"]) - 1
    assert int(first.headers["x-ratelimit-reset"]) > state.clock.now() - 1
    assert invalid.headers["x-api-credits-used"] == "1"  # a failed create costs nothing
    remaining = int(first.headers["x-api-credits-remaining"])
    again = await client.post("/v1/sessions", json=BASIC)
    assert again.headers["x-api-credits-used"] == "2"
    assert int(again.headers["x-api-credits-remaining"]) == remaining - 1


async def test_unauthenticated_responses_carry_no_usage_headers(app, make_client):
    response = await make_client(app).post("/v1/sessions", json=BASIC)
    assert response.status_code == 401
    assert not any(name in response.headers for name in USAGE)
