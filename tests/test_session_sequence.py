"""One "session ended" (and "started") sequence: what follows a session's end happens in one documented order
(`SessionStore.end`), so every listener to the lifecycle events (the inspector's feed, the webhooks, anything
added later) hears the same order, whenever it subscribed."""

from __future__ import annotations

from mockglot import wire
from mockglot.errors import ApiError
from mockglot.settings import Settings
from mockglot.state.server import ServerState
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
