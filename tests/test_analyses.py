"""Analyses (kallglot-api.md §6 "Other documented endpoints"): 202 `processing`, then `completed` with summary,
sentiment, compliance and performance after 5 s of the server clock (or `failed`); 1 credit; idempotent; needs
a transcript; `analysis.complete` / `analysis.failed` webhooks.

In-process tests write the transcript through the state (what the stream does); the end-to-end test streams
speech to the real server and receives the signed `analysis.complete`."""

from __future__ import annotations

import re

import msgspec
import pytest

from mockglot import wire
from mockglot.state.analyses import PROCESSING_SECONDS
from mockglot.state.clock import isoformat
from mockglot.state.sessions import Turn
from mockglot.testing.client import Client, utterance
from tests.checks import BASIC, expect_error

ULID = r"[0-9A-HJKMNP-TV-Z]{26}"
CALL = [  # (speaker, text, translation, confidence, start_ms, end_ms)
    ("customer", "Ich habe ein Problem mit meiner Bestellung", "I have a problem with my order", 0.9, 0, 2000),
    ("agent", "Of course, what is your card number?", "Natürlich, wie lautet Ihre Kartennummer?", 0.95, 0, 1500),
    ("customer", "Die Nummer ist 4111 1111 1111 1111", "The number is 4111 1111 1111 1111", 0.8, 2500, 5500),
    ("agent", "Thank you, that is resolved. Great!", "Danke, das ist erledigt. Super!", 0.95, 2000, 3000),
]
RESULTS = {
    "summary": 'The customer said: "Ich habe ein Problem mit meiner Bestellung" ("I have a problem with my order"). '
    "4 turns (2 customer, 2 agent); sentiment positive.",
    "sentiment": {"customer": "negative", "agent": "positive"},
    "compliance": {"status": "flagged", "flags": [{"code": "card_number", "turn": 3, "speaker": "customer"}]},
    "keywords": [
        "problem",
        "number",
        "bestellung",
        "order",
        "course",
        "card",
        "natürlich",
        "lautet",
        "kartennummer",
        "nummer",
    ],
    "performance": {
        "score": 0.74,  # 0.6 x 0.9 confidence + 0.4 x a positive agent - 0.2 for the flag
        "total_turns": 4,
        "turns_by_speaker": {"customer": 2, "agent": 2},
        "talk_time_seconds": {"customer": 5.0, "agent": 2.5},
        "talk_ratio": {"customer": 0.67, "agent": 0.33},
        "average_confidence": 0.9,
    },
}
ANALYSIS_KEYS = [
    "id", "object", "session_id", "call_id", "profile", "status", "summary", "sentiment", "compliance", "keywords",
    "performance", "error", "created_at", "completed_at",
]  # fmt: skip
NO_RESULTS = dict.fromkeys(RESULTS)


def say(state, session_id: str, lines=CALL) -> None:
    record = state.sessions.find(session_id)
    for speaker, text, translation, confidence, start_ms, end_ms in lines:
        language = "de" if speaker == "customer" else "en"
        turn = Turn(
            record.reserve_turn(), speaker, language, text, confidence, state.clock.now(), start_ms, end_ms,
            "en" if language == "de" else "de", translation,
        )  # fmt: skip
        state.sessions.add_turn(record, turn)


async def session_with_call(client, state, lines=CALL, **body) -> dict:
    session = (await client.post("/v1/sessions", json={**BASIC, **body})).json()
    say(state, session["id"], lines)
    return session


# --- the lifecycle ------------------------------------------------------------------------------------------


async def test_processing_then_completed_after_five_seconds_of_the_server_clock(client, state):
    session = await session_with_call(client, state)
    response = await client.post(f"/v1/sessions/{session['id']}/analysis")
    assert response.status_code == 202, response.text
    assert response.headers["x-api-credits-used"] == "2"  # the session, then the analysis
    accepted = response.json()
    assert list(accepted) == ["id", "object", "session_id", "status"]  # the documented 202
    assert re.fullmatch("anl_" + ULID, accepted["id"])
    assert (accepted["object"], accepted["session_id"], accepted["status"]) == ("analysis", session["id"], "processing")

    path = f"/v1/analyses/{accepted['id']}"
    processing = (await client.get(path)).json()
    assert list(processing) == ANALYSIS_KEYS
    assert processing == {**accepted, "call_id": None, "profile": "default", **NO_RESULTS, "error": None,
                          "created_at": processing["created_at"], "completed_at": None}  # fmt: skip
    state.clock.advance(PROCESSING_SECONDS - 0.1)
    assert (await client.get(path)).json()["status"] == "processing"
    state.clock.advance(0.1)  # the clock's listeners finish it at once, without a read
    assert state.analyses.find(accepted["id"]).status == "completed"

    response = await client.get(path)
    assert response.status_code == 200
    msgspec.json.decode(response.content, type=wire.Analysis)
    completed = response.json()
    assert list(completed) == ANALYSIS_KEYS
    assert completed == {**processing, "status": "completed", "completed_at": completed["completed_at"], **RESULTS}
    created = state.analyses.find(accepted["id"]).created_at
    assert completed["completed_at"] == isoformat(created + PROCESSING_SECONDS)  # on the clock, not when read


@pytest.mark.parametrize(
    ("body", "shown"),
    [
        ({"include": ["summary"]}, ["summary"]),
        ({"include": ["keywords", "sentiment"]}, ["sentiment", "keywords"]),
        ({"include": ["performance", "performance"]}, ["performance"]),
        ({"include": []}, []),
        ({"profile": "sales-qa"}, list(RESULTS)),
        ({"profile": "default", "include": list(RESULTS)}, list(RESULTS)),
    ],
)
async def test_profile_and_include_choose_what_is_computed(client, state, body, shown):
    """(r2) `include` (default all) says which results to compute; the others are null. `profile` is echoed."""
    session = await session_with_call(client, state)
    accepted = await client.post(f"/v1/sessions/{session['id']}/analysis", json=body)
    assert accepted.status_code == 202, accepted.text
    state.clock.advance(PROCESSING_SECONDS)
    result = (await client.get(f"/v1/analyses/{accepted.json()['id']}")).json()
    assert result["profile"] == body.get("profile", "default")
    assert {name: result[name] for name in RESULTS} == {**NO_RESULTS, **{name: RESULTS[name] for name in shown}}


@pytest.mark.parametrize(
    ("body", "param", "advice"),
    [
        ({"include": ["summary", "mood"]}, "include[1]", "summary, sentiment, compliance, keywords, performance"),
        ({"include": ["Summary"]}, "include[0]", "summary, sentiment, compliance, keywords, performance"),
        ({"include": "summary"}, "include", "expected `array"),
        ({"include": [1]}, "include[0]", "expected `str`"),
        ({"profile": ""}, "profile", "1-64 characters"),
        ({"profile": "p" * 65}, "profile", "1-64 characters"),
        ({"profile": 7}, "profile", "expected `str`"),
    ],
)
async def test_a_bad_profile_or_include_is_a_422_naming_it(client, state, body, param, advice):
    session = await session_with_call(client, state)
    response = await client.post(f"/v1/sessions/{session['id']}/analysis", json=body)
    error = expect_error(response, 422, "invalid_field_value", param)
    assert advice in error["message"]
    assert response.headers["x-api-credits-used"] == "1"  # only the session: a refused analysis costs nothing
    assert state.analyses.all() == []


async def test_the_same_transcript_always_gives_the_same_analysis(client, state):
    results = []
    for _ in range(2):
        session = await session_with_call(client, state)
        analysis = (await client.post(f"/v1/sessions/{session['id']}/analysis")).json()
        say(state, session["id"], [("customer", "Scheiße, das ist schlecht", "Crap, that is bad", 0.9, 6000, 7000)])
        state.clock.advance(PROCESSING_SECONDS)
        body = (await client.get(f"/v1/analyses/{analysis['id']}")).json()
        results.append({k: body[k] for k in RESULTS})
    assert results[0] == results[1] == RESULTS  # the turn said after the request is not in it


async def test_profanity_is_flagged_and_sentiment_can_be_negative(client, state):
    lines = [
        ("customer", "This is crap, my parcel came broken", "Das ist Mist, mein Paket kam kaputt an", 0.9, 0, 1000),
        ("agent", "I am sorry to hear that", "Das tut mir leid", 0.9, 0, 800),
    ]
    session = await session_with_call(client, state, lines)
    analysis = (await client.post(f"/v1/sessions/{session['id']}/analysis")).json()
    state.clock.advance(PROCESSING_SECONDS)
    body = (await client.get(f"/v1/analyses/{analysis['id']}")).json()
    assert body["compliance"] == {
        "status": "flagged",
        "flags": [{"code": "profanity", "turn": 1, "speaker": "customer"}],
    }
    assert body["sentiment"] == {"customer": "negative", "agent": "neutral"}
    assert "crap" not in body["keywords"] and "parcel" in body["keywords"]
    assert body["performance"]["talk_ratio"] == {"customer": 0.56, "agent": 0.44}


async def test_metadata_can_make_an_analysis_fail(client, state):
    session = await session_with_call(client, state, metadata={"mockglot_analysis": "fail"})
    analysis = (await client.post(f"/v1/sessions/{session['id']}/analysis")).json()
    assert analysis["status"] == "processing"
    state.clock.advance(PROCESSING_SECONDS)
    body = (await client.get(f"/v1/analyses/{analysis['id']}")).json()
    assert body["status"] == "failed"
    assert "mockglot_analysis" in body["error"]
    assert {name: body[name] for name in RESULTS} == NO_RESULTS
    assert body["completed_at"] is not None


async def test_analysis_events_carry_the_analysis(app, client, state, api_key, make_client):
    control = make_client(app)
    await control.post("/_mockglot/webhooks", json={"url": "http://127.0.0.1:9/hooks", "api_key": api_key})
    done = await session_with_call(client, state)
    failing = await session_with_call(client, state, metadata={"mockglot_analysis": "fail"})
    ids = [(await client.post(f"/v1/sessions/{s['id']}/analysis")).json()["id"] for s in (done, failing)]
    state.clock.advance(PROCESSING_SECONDS)
    for session, analysis_id, event_type in ((done, ids[0], "analysis.complete"), (failing, ids[1], "analysis.failed")):
        deliveries = (await control.get("/_mockglot/webhooks/deliveries", params={"session_id": session["id"]})).json()
        [event] = [d["event"] for d in deliveries["data"] if d["event_type"].startswith("analysis.")]
        assert event["type"] == event_type
        assert event["data"] == (await client.get(f"/v1/analyses/{analysis_id}")).json()


# --- what it needs: a transcript, credits, scopes, the owner's session ---------------------------------------


async def test_a_session_without_transcript_turns_is_a_409_that_costs_nothing(client, state):
    session = (await client.post("/v1/sessions", json=BASIC)).json()
    response = await client.post(f"/v1/sessions/{session['id']}/analysis")
    error = expect_error(response, 409, "transcript_empty")
    assert error["type"] == "conflict_error"
    assert "retry_after" not in error
    assert response.headers["x-api-credits-used"] == "1"  # only the session
    await client.post(f"/v1/sessions/{session['id']}/end")
    expect_error(await client.post(f"/v1/sessions/{session['id']}/analysis"), 409, "transcript_empty")


async def test_an_ended_session_can_be_analysed(client, state):
    session = await session_with_call(client, state)
    await client.post(f"/v1/sessions/{session['id']}/end")
    assert (await client.post(f"/v1/sessions/{session['id']}/analysis")).status_code == 202


async def test_the_body_is_empty_or_an_object(client, state):
    session = await session_with_call(client, state)
    path = f"/v1/sessions/{session['id']}/analysis"
    assert (await client.post(path, json={})).status_code == 202
    expect_error(await client.post(path, content=b"[]", headers={"Content-Type": "application/json"}), 400,
                 "invalid_request")  # fmt: skip
    lenient = await client.post(path, json={"depth": "full"})
    assert lenient.status_code == 202
    assert "depth" in lenient.headers["x-mockglot-warning"]


async def test_out_of_credits_is_a_402_and_a_replay_is_free(make_app, make_client):
    app = make_app(keys=[{"key": "sk_test_budget000001", "organization": "acme", "credits": 2}])
    client, state = make_client(app, "sk_test_budget000001"), app.state.mockglot
    session = await session_with_call(client, state)
    path = f"/v1/sessions/{session['id']}/analysis"
    first = await client.post(path, headers={"Idempotency-Key": "analyse-1"})
    assert first.status_code == 202
    assert first.headers["x-api-credits-remaining"] == "0"
    replay = await client.post(path, headers={"Idempotency-Key": "analyse-1"})
    assert (replay.status_code, replay.content) == (202, first.content)
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.headers["x-api-credits-used"] == "2"
    error = expect_error(await client.post(path), 402, "insufficient_api_credits")
    assert error["type"] == "permission_error"
    assert len(state.analyses.all()) == 1


async def test_an_idempotent_request_makes_one_analysis(client, state):
    session = await session_with_call(client, state)
    path = f"/v1/sessions/{session['id']}/analysis"
    first = await client.post(path, headers={"Idempotency-Key": "a"})
    again = await client.post(path, headers={"Idempotency-Key": "a"})
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    other = await client.post(path)  # no key: a new analysis
    assert other.json()["id"] != first.json()["id"]
    assert other.headers["x-api-credits-used"] == "3"
    mismatch = await client.post(f"/v1/sessions/{session['id']}/end", headers={"Idempotency-Key": "a"})
    expect_error(mismatch, 400, "idempotency_mismatch")


async def test_scopes_analyses_write_and_analyses_read(make_app, make_client):
    app = make_app(keys=[
        {"key": "sk_test_caller000001", "organization": "acme", "scopes": ["sessions:write", "analysis:write"]},
        {"key": "sk_test_reader000001", "organization": "acme", "scopes": ["analysis:read"]},
    ])  # fmt: skip
    caller, reader = make_client(app, "sk_test_caller000001"), make_client(app, "sk_test_reader000001")
    session = await session_with_call(caller, app.state.mockglot)
    error = expect_error(await reader.post(f"/v1/sessions/{session['id']}/analysis"), 403, "insufficient_permissions")
    assert "analysis:write" in error["message"]
    analysis = (await caller.post(f"/v1/sessions/{session['id']}/analysis")).json()
    error = expect_error(await caller.get(f"/v1/analyses/{analysis['id']}"), 403, "insufficient_permissions")
    assert "analysis:read" in error["message"]
    assert (await reader.get(f"/v1/analyses/{analysis['id']}")).status_code == 200


async def test_another_organizations_session_and_analysis_are_not_found(client, state, app, make_client, make_key):
    session = await session_with_call(client, state)
    analysis = (await client.post(f"/v1/sessions/{session['id']}/analysis")).json()
    suffix = make_key().removeprefix("sk_test_")
    for stranger in (make_client(app, f"sk_test_{suffix}"), make_client(app, f"sk_live_{suffix}")):
        expect_error(await stranger.post(f"/v1/sessions/{session['id']}/analysis"), 404, "session_not_found")
        expect_error(await stranger.get(f"/v1/analyses/{analysis['id']}"), 404, "analysis_not_found", "id")
    expect_error(await client.get("/v1/analyses/anl_01HXMISSING"), 404, "analysis_not_found", "id")
    expect_error(await client.post("/v1/sessions/sess_missing/analysis"), 404, "session_not_found")


# --- end to end: streamed speech, the real server, a signed webhook ----------------------------------------------


async def test_analysis_complete_arrives_signed_when_the_clock_reaches_it(live, control, api_key, webhook_receiver):
    hook = (await control.post("/_mockglot/webhooks", json={
        "url": webhook_receiver.url, "events": ["analysis.complete"], "api_key": api_key,
    })).json()  # fmt: skip
    async with Client(live.base_url, api_key) as api:
        session = await api.create_session(**BASIC)
        stream = await api.open_stream(session)
        await stream.until("session.ready")
        await stream.send_audio("customer", utterance())
        await stream.until("transcript.final")
        await stream.end()
        response = await api.http.post(f"/v1/sessions/{session['id']}/analysis")
        assert response.status_code == 202, response.text
        analysis = response.json()
        await control.post("/_mockglot/clock", json={"advance": PROCESSING_SECONDS})

        (request,) = await webhook_receiver.wait_async(1)
        now = (await control.get("/_mockglot/clock")).json()["unix"]
        request.verify(hook["secret"], now=now)
        event = request.json()
        assert event["type"] == "analysis.complete"
        completed = (await api.http.get(f"/v1/analyses/{analysis['id']}")).json()
    assert event["data"] == completed
    assert completed["status"] == "completed"
    assert completed["summary"].startswith('The customer said: "Ich möchte meine Bestellung ändern" ("I want to')
    assert completed["performance"]["turns_by_speaker"] == {"customer": 1}
