"""One "session ended" (and "started") sequence: what follows a session's end happens in one documented order
(`SessionStore.end`), so every listener to the lifecycle events (the inspector's feed, the webhooks, anything
added later) hears the same order, whenever it subscribed."""

from __future__ import annotations

import random

import pytest

from mockglot import wire
from mockglot.errors import ApiError
from mockglot.settings import Settings
from mockglot.state.server import ServerState
from mockglot.state.sessions import SAME_SEQUENCE_MEMORY
from mockglot.testing.client import tone

ROUTED_AND_RECORDED = wire.SessionCreate(
    mode="bidirectional_translation",
    routing=wire.Routing(phone_number="+14155550100"),
    recording=wire.RecordingOptions(enabled=True),
)


def lifecycle(state: ServerState, audio: bytes) -> list[str]:
    heard: list[str] = []
    state.events.subscribe(lambda event: heard.append(event.type))  # the last to subscribe
    record = state.sessions.create(("org_a", "test"), "sk_test_sequence", ROUTED_AND_RECORDED, "twilio")
    if audio:
        state.sessions.add_audio(record, "customer", audio)
    state.sessions.end(record, "api_end")
    return heard


def test_a_late_listener_hears_the_lifecycle_in_order():
    assert lifecycle(ServerState(Settings()), tone(200)) == [
        "session.created",
        "session.started",
        "session.provider.connected",  # the leg follows the start it answers
        "session.ended",
        "session.provider.disconnected",  # then what the end causes, in the order SessionStore.end documents
        "recording.ready",  # encoded at once here: no event loop
        "transcript.ready",
    ]


def test_a_session_without_audio_ends_with_a_failed_recording_before_the_transcript():
    assert lifecycle(ServerState(Settings()), b"") == [
        "session.created",
        "session.ended",
        "recording.failed",
        "transcript.ready",
    ]


def test_the_feed_shows_the_same_order():
    state = ServerState(Settings())
    lifecycle(state, tone(200))
    shown = [event.type for event in state.feed.backlog if event.type.startswith(("session.", "recording."))]
    assert shown == [
        "session.created",
        "session.started",
        "session.provider.connected",
        "session.ended",
        "session.provider.disconnected",
        "recording.ready",
    ]


def test_the_store_refuses_a_redelivered_or_late_frame_and_counts_it_nowhere():
    state = ServerState(Settings())
    record = state.sessions.create(("org_a", "test"), "sk_test_sequence", ROUTED_AND_RECORDED, "twilio")
    frame = tone(100)
    state.sessions.accept_audio(record, "customer", 1, frame)
    refusals = []
    for sequence, audio in ((1, frame), (0, tone(100, 880)), (1.5, frame)):
        try:
            state.sessions.accept_audio(record, "customer", sequence, audio)
        except ApiError as exc:
            refusals.append(exc.code)
    state.sessions.end(record, "api_end")
    try:
        state.sessions.accept_audio(record, "customer", 2, frame)
    except ApiError as exc:
        refusals.append(exc.code)
    assert refusals == ["duplicate_sequence", "duplicate_sequence", "invalid_message", "session_ended"]
    assert record.audio_received == {"customer": len(frame)}


@pytest.mark.parametrize("shared", [False, True], ids=["alone", "shared"])
def test_redeliveries_are_refused_exactly_by_the_rule(shared):
    """The rule a client relies on, against a model of it that keeps whole payloads: per speaker, a frame below
    the last accepted sequence, or equal to it with a payload among the last 64 accepted at it, is a redelivery;
    anything else is kept. Alone the store remembers the newest payload itself and digests the others; shared
    with other workers, digests only."""
    state = ServerState(Settings())
    if shared:
        state.sessions.share("worker-1")
    record = state.sessions.create(("org_a", "test"), "sk_test_sequence", ROUTED_AND_RECORDED, "twilio")
    run = [bytes([n]) * 160 for n in range(SAME_SEQUENCE_MEMORY + 1)]
    pool = [*run[:4], b"\xff" * 320, b"\xff" * 160 + b"\x7f" * 160]
    rng = random.Random(7)
    model: dict[str, tuple[int, list[bytes]]] = {}
    kept = {"customer": 0, "agent": 0}
    for step in range(6000):
        speaker = "customer" if step % 1000 < 200 else rng.choice(("customer", "agent"))
        last, accepted = model.get(speaker, (0, []))
        if step % 1000 < 200:  # a long run at one sequence: as many payloads as are remembered, or one more
            sequence, payload = last, run[step % 1000 % (SAME_SEQUENCE_MEMORY + step // 1000 % 2)]
        else:
            sequence, payload = last + rng.choice((-1, 0, 0, 0, 1)), rng.choice(pool)
        redelivery = sequence < last or (sequence == last and payload in accepted)
        try:
            state.sessions.accept_audio(record, speaker, sequence, payload)
        except ApiError as exc:
            assert (exc.code, redelivery) == ("duplicate_sequence", True), (step, sequence, last)
            continue
        assert not redelivery, (step, sequence, last)
        accepted = [*accepted, payload][-SAME_SEQUENCE_MEMORY:] if sequence == last else [payload]
        model[speaker] = (sequence, accepted)
        kept[speaker] += len(payload)
    assert record.audio_received == kept
