"""The stream protocol (kallglot-api.md §7) against a real uvicorn server and a real WebSocket client."""

from __future__ import annotations

import asyncio
import base64
import random

import httpx
import pytest
from websockets.asyncio.client import connect

from mockglot.settings import Settings
from mockglot.testing.client import Client, audio_frame
from mockglot.testing.server import ServerThread
from tests.audio import parse_wav, silence, tone, utterance

KEY = "sk_test_streamtests1"


@pytest.fixture
async def client(live):
    async with Client(live.base_url, KEY) as c:
        yield c


def types(frames):
    return [f["type"] for f in frames]


def without_ids(frames):
    return [{k: v for k, v in f.items() if k != "session_id"} for f in frames]


async def rejected(url: str):
    """Connect, expect one session.error and a close; return (error, close code)."""
    async with connect(url) as ws:
        error = await asyncio.wait_for(ws.recv(), 5)
        await asyncio.wait_for(ws.wait_closed(), 5)
        import msgspec

        return msgspec.json.decode(error), ws.close_code


# --- connect failures: the close-code table -----------------------------------------------------------


async def test_missing_token_is_4001(client):
    session = await client.create_session()
    error, code = await rejected(session["stream"]["url"])
    assert (error["type"], error["error"]["code"], code) == ("session.error", "invalid_token", 4001)


async def test_token_of_another_session_is_4001(client):
    one, two = await client.create_session(), await client.create_session()
    error, code = await rejected(f"{one['stream']['url']}?token={two['stream']['token']}")
    assert (error["error"]["code"], code) == ("invalid_token", 4001)


async def test_expired_token_is_4001_and_a_fresh_one_works(live, client):
    session = await client.create_session()
    live.call(live.state.clock.advance, 6 * 60)
    try:
        error, code = await rejected(f"{session['stream']['url']}?token={session['stream']['token']}")
        assert (error["error"]["code"], code) == ("expired_token", 4001)
        fresh = await client.get_session(session["id"])
        assert fresh["stream"]["token"] != session["stream"]["token"]
        stream = await client.open_stream(fresh)
        assert (await stream.recv())["type"] == "session.ready"
        await stream.ws.close()
    finally:
        live.call(live.state.clock.reset)


async def test_unknown_session_is_4004(live, client):
    session = await client.create_session()
    url = f"{live.ws_url}/v1/sessions/sess_00000000000000000000000000/connect?token={session['stream']['token']}"
    error, code = await rejected(url)
    assert (error["error"]["code"], code) == ("session_not_found", 4004)


async def test_ended_session_is_4009(client):
    session = await client.create_session()
    await client.end_session(session["id"])
    error, code = await rejected(f"{session['stream']['url']}?token={session['stream']['token']}")
    assert (error["error"]["code"], code) == ("session_ended", 4009)


async def test_second_socket_is_4009(client):
    session = await client.create_session()
    first = await client.open_stream(session)
    await first.until("session.ready")
    error, code = await rejected(f"{session['stream']['url']}?token={session['stream']['token']}")
    assert (error["error"]["code"], code) == ("session_already_connected", 4009)
    await first.ws.send('{"type": "ping"}')
    assert (await first.until("pong"))["session_id"] == session["id"]
    await first.ws.close()


async def test_token_as_bearer_header(client):
    session = await client.create_session()
    headers = {"Authorization": f"Bearer {session['stream']['token']}"}
    async with connect(session["stream"]["url"], additional_headers=headers) as ws:
        import msgspec

        assert msgspec.json.decode(await ws.recv())["type"] == "session.ready"


async def test_api_key_is_not_a_stream_token(client):
    session = await client.create_session()
    error, code = await rejected(f"{session['stream']['url']}?token={KEY}")
    assert (error["error"]["code"], code) == ("invalid_token", 4001)


async def test_session_end_closes_1000_with_explicit_end(client):
    session = await client.create_session()
    stream = await client.open_stream(session)
    frames = await stream.end()
    assert frames[-1] == {"type": "session.ended", "session_id": session["id"], "reason": "explicit_end"}
    assert stream.close_code == 1000
    assert (await client.get_session(session["id"]))["status"] == "ended"


async def test_pacing_checks_close_1008():
    with ServerThread(Settings(port=0, pacing_checks=True, output_pace="instant")) as paced:
        async with Client(paced.base_url, KEY) as c:
            stream = await c.open_stream(await c.create_session())
            await stream.send_audio("customer", silence(10_000))
            frames = await stream.drain()
            assert "rate_limited" in [f["error"]["code"] for f in frames if f["type"] == "session.error"]
            assert stream.close_code == 1008


async def test_fault_close_1011(live, client):
    live.call(live.state.faults.add, "stream", _fault(action="close", after_frames=2, close_code=1011), 0)
    try:
        stream = await client.open_stream(await client.create_session())
        await stream.send_json({"type": "ping"})
        await stream.send_json({"type": "ping"})
        frames = await stream.drain()
        assert frames[-1]["type"] == "session.error" and frames[-1]["error"]["code"] == "internal_error"
        assert stream.close_code == 1011
    finally:
        live.call(live.state.faults.reset)


def _fault(**kwargs):
    from mockglot.faults import StreamFault

    return StreamFault(**kwargs)


# --- client frames ------------------------------------------------------------------------------------


def _audio(**overrides):
    frame = {
        "type": "audio.input",
        "sequence": 1,
        "timestamp_ms": 0,
        "speaker": "customer",
        "audio": {"encoding": "mulaw", "sample_rate_hz": 8000, "payload": base64.b64encode(b"\xff" * 160).decode()},
    }
    for key, value in overrides.items():
        if key.startswith("audio_"):
            frame["audio"][key.removeprefix("audio_")] = value
        else:
            frame[key] = value
    return frame


BAD_FRAMES = [
    ("not json", "invalid_message", None),
    ("[1, 2]", "invalid_message", None),
    ({"type": "dance"}, "invalid_message", "type"),
    ({"sequence": 1}, "invalid_message", "type"),
    (_audio(sequence="one"), "invalid_message", "sequence"),
    (_audio(audio_encoding="pcm16"), "invalid_audio_format", "audio.encoding"),
    (_audio(audio_sample_rate_hz=16000), "invalid_audio_format", "audio.sample_rate_hz"),
    (_audio(audio_payload="%%%not-base64"), "invalid_audio_format", "audio.payload"),
    (_audio(audio_payload=""), "invalid_audio_format", "audio.payload"),
    (_audio(audio_payload=base64.b64encode(b"\xff" * 70_000).decode()), "invalid_audio_format", "audio.payload"),
    (_audio(speaker="robot"), "invalid_speaker", "speaker"),
]


@pytest.mark.parametrize(("frame", "code", "param"), BAD_FRAMES)
async def test_bad_frame_gets_session_error_and_stream_goes_on(client, frame, code, param):
    session = await client.create_session()
    stream = await client.open_stream(session)
    await stream.until("session.ready")
    await stream.send_json(frame)
    error = await stream.until("session.error")
    assert (error["error"]["code"], error["error"]["param"]) == (code, param)
    assert error["error"]["message"]
    await stream.send_json({"type": "ping"})
    assert (await stream.until("pong"))["session_id"] == session["id"]
    await stream.ws.close()


async def test_binary_frame_is_invalid_message(client):
    stream = await client.open_stream(await client.create_session())
    await stream.ws.send(b"\x00\x01")
    assert (await stream.until("session.error"))["error"]["code"] == "invalid_message"
    await stream.send_json({"type": "ping"})
    await stream.until("pong")
    await stream.ws.close()


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('\ufeff{"type": "ping"}', "starts with a byte order mark (U+FEFF"),  # a BOM names itself ("byte 0" did not)
        ('{"type": "ping", "note": "\\ud83d"}', "the escape \\ud83d (at byte 26) is half of a UTF-16 surrogate pair"),
        ('{"type": "ping", "note": "\\ude00x"}', "the escape \\ude00 (at byte 26) is half of a UTF-16 surrogate pair"),
    ],
)
async def test_a_frame_with_a_bom_or_a_lone_surrogate_escape_is_told_what_is_wrong(client, text, says):
    """They were "invalid character (byte 0)" and "Input data was truncated"."""
    stream = await client.open_stream(await client.create_session())
    await stream.until("session.ready")
    await stream.ws.send(text)
    error = (await stream.until("session.error"))["error"]
    assert error["code"] == "invalid_message" and says in error["message"], error["message"]
    await stream.send_json({"type": "ping"})
    await stream.until("pong")
    await stream.ws.close()


async def test_duplicate_sequence_is_dropped_not_counted_twice(live, client):
    session = await client.create_session()
    stream = await client.open_stream(session)
    await stream.ws.send(audio_frame("customer", 5, b"\x00" * 800))
    await stream.ws.send(audio_frame("customer", 5, b"\x00" * 800))
    await stream.ws.send(audio_frame("customer", 4, b"\x00" * 800))
    await stream.ws.send(audio_frame("agent", 1, b"\x00" * 800))  # sequences are per speaker
    errors = [await stream.until("session.error"), await stream.until("session.error")]
    assert [e["error"]["code"] for e in errors] == ["duplicate_sequence", "duplicate_sequence"]
    await stream.end()
    record = live.call(live.state.sessions.find, session["id"])
    assert len(record.audio["customer"]) == 800 and len(record.audio["agent"]) == 800


async def test_equal_sequence_with_other_audio_is_accepted(live, client):
    """(r2) Equal `sequence`: other audio is new audio; the same audio again is a redelivery (dropped)."""
    session = await client.create_session()
    stream = await client.open_stream(session)
    first, second = b"\x01" * 160, b"\x02" * 160
    await stream.ws.send(audio_frame("customer", 7, first))
    await stream.ws.send(audio_frame("customer", 7, second))  # same millisecond, other audio: kept
    await stream.ws.send(audio_frame("customer", 7, first))  # a redelivery of the first: dropped
    error = await stream.until("session.error")
    assert (error["error"]["code"], error["error"]["param"]) == ("duplicate_sequence", "sequence")
    assert "same audio" in error["error"]["message"]
    await stream.end()
    record = live.call(live.state.sessions.find, session["id"])
    assert bytes(record.audio["customer"]) == first + second


@pytest.mark.parametrize(("sequence", "accepted"), [(1.0, True), (1729481920.0, True), (1e3, True), (2.5, False)])
async def test_a_sequence_is_any_number_with_an_integer_value(live, client, sequence, accepted):
    session = await client.create_session()
    stream = await client.open_stream(session)
    await stream.ws.send(audio_frame("customer", sequence, b"\x03" * 160))
    await stream.send_json({"type": "ping"})
    frames = [await stream.recv()]
    while frames[-1]["type"] != "pong":
        frames.append(await stream.recv())
    errors = [f["error"] for f in frames if f["type"] == "session.error"]
    if accepted:
        assert errors == []
    else:
        assert [(e["code"], e["param"]) for e in errors] == [("invalid_message", "sequence")]
        assert "whole number" in errors[0]["message"]
    await stream.end()
    record = live.call(live.state.sessions.find, session["id"])
    assert len(record.audio.get("customer", b"")) == (160 if accepted else 0)


async def test_a_quick_start_client_with_date_now_sequences_loses_no_audio(live, client):
    """The Quick Start's JavaScript client sends `sequence: Date.now()`; a fast client sends several frames in
    one millisecond. Every byte it sent is what the server received (the control plane's WAV of each speaker)."""
    rng = random.Random(12)
    sent = {speaker: bytearray() for speaker in ("customer", "agent")}
    now_ms = 1_764_700_000_000  # Date.now(): advances by one millisecond every third frame

    session = await client.create_session()
    stream = await client.open_stream(session)
    for index in range(90):
        speaker = ("customer", "agent")[index % 2]
        chunk = rng.randbytes(160)  # 20 ms; audio differs from frame to frame, as speech does
        sent[speaker].extend(chunk)
        date_now = now_ms + index // 3
        await stream.ws.send(audio_frame(speaker, date_now, chunk, timestamp_ms=date_now))
    frames = await stream.end()
    assert [f for f in frames if f["type"] == "session.error"] == []
    assert [f for f in stream.received if f["type"] == "session.error"] == []
    async with httpx.AsyncClient(base_url=live.base_url) as control:
        for speaker, audio in sent.items():
            response = await control.get(f"/_mockglot/sessions/{session['id']}/audio/{speaker}")
            assert response.status_code == 200
            assert parse_wav(response.content)[1] == bytes(audio)  # byte for byte


# --- the scripted engine and the modes ------------------------------------------------------------------


async def _converse(client, mode: str, **body):
    """Customer says one utterance, then the agent one; returns (session, frames to the end)."""
    if mode == "ai_agent":
        body.setdefault("ai_agent", {"system_prompt": "You help with orders."})
    session = await client.create_session(mode=mode, source_language="de", target_language="en", **body)
    stream = await client.open_stream(session)
    await stream.send_audio("customer", utterance())
    await stream.send_audio("agent", utterance())
    await stream.end()
    return session, stream.received


def finals(frames):
    return [f for f in frames if f["type"] == "transcript.final"]


def outputs(frames):
    return [f for f in frames if f["type"] == "audio.output"]


async def test_bidirectional_translates_and_speaks_both_ways(client):
    _, frames = await _converse(client, "bidirectional_translation")
    assert frames[0]["type"] == "session.ready"
    customer, agent = finals(frames)
    assert customer["text"] == "Ich möchte meine Bestellung ändern"
    assert customer["translation"] == {"language": "en", "text": "I want to change my order"}
    assert agent["speaker"] == "agent" and agent["translation"]["language"] == "de"
    assert {(o["speaker"], o["listener"], o["language"]) for o in outputs(frames)} == {
        ("customer", "agent", "en"),
        ("agent", "customer", "de"),
    }


async def test_assistive_gives_subtitles_and_speaks_only_to_the_customer(client):
    _, frames = await _converse(client, "assistive_translation")
    customer, agent = finals(frames)
    assert customer["translation"]["text"] == "I want to change my order"
    assert agent["translation"]["language"] == "de"
    assert {(o["speaker"], o["listener"]) for o in outputs(frames)} == {("agent", "customer")}


@pytest.mark.parametrize("mode", ["ai_agent", "help_chat_voice"])
async def test_ai_modes_reply_after_each_customer_final(client, mode):
    _, frames = await _converse(client, mode)
    speakers = [(f["speaker"], "translation" in f, f.get("source")) for f in finals(frames)]
    # (r2) the AI speaks as `agent`, its finals marked `source: "ai"`; the human agent's final has no source
    assert speakers[:2] == [("customer", False, None), ("agent", False, "ai")]
    assert [s for s in speakers[2:] if s[2] is None] == [("agent", False, None)]
    assert all(f.get("speaker") != "ai_agent" for f in frames)
    reply = finals(frames)[1]
    assert reply["text"] == "Gern helfe ich Ihnen dabei. Wie lautet Ihre Bestellnummer?"
    assert {(o["speaker"], o["listener"], o["turn"]) for o in outputs(frames)} == {("agent", "customer", reply["turn"])}


async def test_turn_order_partials_final_then_audio(client):
    _, frames = await _converse(client, "bidirectional_translation")
    by_turn: dict[int, list[str]] = {}
    for f in frames:
        if "turn" in f:
            by_turn.setdefault(f["turn"], []).append(f["type"])
    for kinds in by_turn.values():
        final_at = kinds.index("transcript.final")
        assert all(k == "transcript.partial" for k in kinds[:final_at])
        assert all(k == "audio.output" for k in kinds[final_at + 1 :])
        assert kinds.count("transcript.final") == 1
    assert by_turn[1][:2] == ["transcript.partial", "transcript.partial"]
    sequences = [o["sequence"] for o in outputs(frames) if o["listener"] == "agent"]
    assert sequences == sorted(sequences) == list(range(1, len(sequences) + 1))


async def test_transcript_holds_every_final_with_the_same_text(client):
    session, frames = await _converse(client, "bidirectional_translation")
    transcript = await client.transcript(session["id"])
    assert transcript["status"] == "completed"
    assert [(t["sequence"], t["speaker"], t["text"]) for t in transcript["turns"]] == [
        (f["turn"], f["speaker"], f["text"]) for f in finals(frames)
    ]
    assert transcript["turns"][0]["translation"] == finals(frames)[0]["translation"]


async def test_offsets_come_from_the_audio(client):
    session = await client.create_session(source_language="de", target_language="en")
    stream = await client.open_stream(session)
    await stream.send_audio("customer", silence(1000) + tone(1500) + silence(700))
    final = await stream.until("transcript.final")
    assert (final["start_ms"], final["end_ms"]) == (1000, 2500)
    await stream.end()


async def test_session_end_flushes_speech_in_progress(client):
    session = await client.create_session(source_language="de", target_language="en")
    stream = await client.open_stream(session)
    await stream.send_audio("customer", tone(1500))  # no trailing silence: the utterance is still open
    frames = await stream.end()
    assert [f["text"] for f in finals(frames)] == ["Ich möchte meine Bestellung ändern"]
    assert types(frames)[-1] == "session.ended"
    assert outputs(frames), "the flushed turn's translated audio is sent before session.ended"


async def test_same_audio_gives_same_events_at_real_time_and_full_speed(client):
    audio = utterance(900, 600) + utterance(1300, 600)

    async def run(realtime: bool):
        session = await client.create_session(source_language="de", target_language="en")
        stream = await client.open_stream(session)
        await stream.send_audio("customer", audio, realtime=realtime)
        await stream.end()
        events = without_ids([f for f in stream.received if f["type"] != "session.ready"])
        # Frames of different turns may interleave differently; within a turn the order is the contract's.
        return sorted(events, key=lambda f: f.get("turn", 1_000))

    realtime, full_speed = await run(realtime=True), await run(realtime=False)
    assert len(finals(realtime)) == 2
    assert realtime == full_speed


async def test_active_and_duration_follow_the_audio(client):
    session = await client.create_session()
    stream = await client.open_stream(session)
    await stream.send_audio("customer", utterance(2000, 1000))
    await stream.until("transcript.final")
    active = await client.get_session(session["id"])
    assert active["status"] == "active" and active["started_at"] is not None
    await stream.end()
    summary = await client.end_session(session["id"])
    assert summary["duration_seconds"] >= 3.0


async def test_script_exhausted_gives_unscripted_placeholder(client):
    session = await client.create_session(source_language="de", target_language="en")
    stream = await client.open_stream(session)
    for _ in range(5):
        await stream.send_audio("customer", utterance(500, 600))
    frames = await stream.end()
    assert finals(frames)[-1]["text"] == "(unscripted customer utterance 5)"


# --- lifecycle across REST and reconnects -----------------------------------------------------------------


async def test_rest_end_closes_live_stream_with_api_end(client):
    session = await client.create_session()
    stream = await client.open_stream(session)
    await stream.until("session.ready")
    await client.end_session(session["id"])
    frames = await stream.drain()
    assert frames[-1] == {"type": "session.ended", "session_id": session["id"], "reason": "api_end"}
    assert stream.close_code == 1000


async def test_idle_timeout_ends_live_stream(live, client):
    session = await client.create_session()
    stream = await client.open_stream(session)
    await stream.until("session.ready")
    try:
        live.call(live.state.clock.advance, 31 * 60)
        frames = await stream.drain()
        assert frames[-1]["reason"] == "idle_timeout"
    finally:
        live.call(live.state.clock.reset)


async def test_reconnect_continues_the_session(client):
    session = await client.create_session(source_language="de", target_language="en")
    first = await client.open_stream(session)
    await first.send_audio("customer", utterance())
    assert (await first.until("transcript.final"))["turn"] == 1
    await first.ws.close()  # and reconnect at once: the server may not have seen the close yet
    second = await client.open_stream(await client.get_session(session["id"]))
    second.sequences = dict(first.sequences)
    await second.send_audio("customer", utterance())
    final = await second.until("transcript.final")
    assert (final["turn"], final["text"]) == (2, "Meine Bestellnummer ist 12345")
    await second.end()


async def test_other_sessions_are_served_while_one_is_flooded(client):
    flooded = await client.open_stream(await client.create_session())
    await asyncio.gather(*(flooded.ws.send("garbage") for _ in range(500)))
    calm_session = await client.create_session()
    calm = await client.open_stream(calm_session)
    await calm.send_json({"type": "ping"})
    assert (await calm.until("pong"))["session_id"] == calm_session["id"]
    await flooded.send_json({"type": "ping"})
    await flooded.until("pong", timeout=30)
    await calm.ws.close()
    await flooded.ws.close()


async def test_quick_start_flow(live):
    """The Quick Start: create with the documented body, connect, stream, end, read the transcript."""
    async with httpx.AsyncClient(base_url=live.base_url) as http:
        created = await http.post(
            "/v1/sessions",
            headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
            json={
                "mode": "bidirectional_translation",
                "source_language": "de",
                "target_language": "en",
                "metadata": {"external_call_id": "call_abc123"},
            },
        )
        assert created.status_code == 201
        session = created.json()
        async with Client(live.base_url, KEY) as client:
            stream = await client.open_stream(session)
            ready = await stream.recv()
            assert ready["type"] == "session.ready" and ready["audio"] == {"encoding": "mulaw", "sample_rate_hz": 8000}
            await stream.send_audio("customer", utterance(), realtime=False)
            final = await stream.until("transcript.final")
            assert final["translation"]["text"] == "I want to change my order"
            await stream.until("audio.output")
            await stream.ws.close()
        ended = await http.post(f"/v1/sessions/{session['id']}/end", headers={"X-API-Key": KEY})
        assert ended.json()["status"] == "ended"
        transcript = (await http.get(f"/v1/sessions/{session['id']}/transcript", headers={"X-API-Key": KEY})).json()
        assert transcript["turns"][0]["text"] == "Ich möchte meine Bestellung ändern"
        assert transcript["metadata"]["languages_detected"] == ["de"]


async def test_realtime_output_pace_spreads_audio_over_its_duration():
    with ServerThread(Settings(port=0, output_pace="realtime")) as paced:
        async with Client(paced.base_url, KEY) as c:
            session = await c.create_session(source_language="de", target_language="en")
            stream = await c.open_stream(session)
            await stream.send_audio("customer", utterance())
            await stream.until("transcript.final")
            received = 0
            while received < 10:  # the first second of "I want to change my order"
                frame = await stream.recv()
                if frame["type"] == "audio.output":
                    assert len(base64.b64decode(frame["audio"]["payload"])) == 800
                    received += 1
            await stream.ws.close()
            journal = httpx.get(f"{paced.base_url}/_mockglot/sessions/{session['id']}/frames").json()
    # Paced at real time, the tenth 100 ms frame is not sent before the nine before it have played. The times
    # are the server's own (when it sent each frame), so a client slow to read cannot squeeze them together.
    sent = [f["unix"] for f in journal["frames"] if f["type"] == "audio.output"][:10]
    assert len(sent) == 10 and sent[-1] - sent[0] >= 0.9 * 0.9  # (a late first frame shortens the span)
