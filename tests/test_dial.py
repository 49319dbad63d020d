"""`POST /v1/sessions/{id}/dial` (kallglot-api.md §6, idempotent per §4) and the provider leg's webhook events,
`session.provider.connected` / `session.provider.disconnected`."""

from __future__ import annotations

import pytest

from mockglot.testing.client import tone
from tests.checks import expect_error

ROUTED = {"mode": "bidirectional_translation", "routing": {"phone_number": "+4930123456", "direction": "outbound"}}


@pytest.fixture
async def events(app, api_key, make_client):
    """`await events(session_id)`: the webhook event types recorded for the session, in order."""
    control = make_client(app)
    hook = await control.post("/_mockglot/webhooks", json={"url": "http://127.0.0.1:9/hooks", "api_key": api_key})
    assert hook.status_code == 201

    async def read(session_id: str) -> list[str]:
        response = await control.get("/_mockglot/webhooks/deliveries", params={"session_id": session_id})
        return [d["event_type"] for d in response.json()["data"]]

    return read


async def test_dialing_a_routed_session_connects_its_provider_leg(client, events):
    session = (await client.post("/v1/sessions", json=ROUTED)).json()
    response = await client.post(f"/v1/sessions/{session['id']}/dial")
    assert response.status_code == 202, response.text
    assert response.json() == {
        "object": "dial", "session_id": session["id"], "status": "dialing", "provider": "twilio", "to": "+4930123456",
    }  # fmt: skip
    assert await events(session["id"]) == ["session.created", "session.provider.connected"]
    again = await client.post(f"/v1/sessions/{session['id']}/dial")
    assert (again.status_code, again.json()) == (202, response.json())
    assert await events(session["id"]) == ["session.created", "session.provider.connected"]  # connected once
    await client.post(f"/v1/sessions/{session['id']}/end")
    assert await events(session["id"]) == [
        "session.created", "session.provider.connected", "session.ended", "session.provider.disconnected",
        "transcript.ready",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("routing", "provider", "to"),
    [({"connection_id": "pcon_abc123"}, "telnyx", "pcon_abc123"), ({"type": "sip"}, "sip", None)],
)
async def test_the_dial_names_the_provider_and_destination(client, routing, provider, to):
    session = (await client.post("/v1/sessions", json={"mode": "ai_agent", "ai_agent": {}, "routing": routing})).json()
    dialed = (await client.post(f"/v1/sessions/{session['id']}/dial", json={})).json()
    assert (dialed["provider"], dialed["to"]) == (provider, to)


async def test_a_session_without_routing_cannot_dial(client, events):
    session = (await client.post("/v1/sessions", json={"mode": "bidirectional_translation"})).json()
    error = expect_error(await client.post(f"/v1/sessions/{session['id']}/dial"), 422, "invalid_routing", "routing")
    assert "`routing`" in error["message"]
    assert await events(session["id"]) == ["session.created"]


async def test_an_ended_session_cannot_dial(client):
    session = (await client.post("/v1/sessions", json=ROUTED)).json()
    await client.post(f"/v1/sessions/{session['id']}/end")
    expect_error(await client.post(f"/v1/sessions/{session['id']}/dial"), 409, "session_ended")


async def test_a_routed_call_that_was_not_dialed_connects_at_its_first_audio(client, state, events):
    session = (await client.post("/v1/sessions", json={**ROUTED, "recording": {"enabled": True}})).json()
    record = state.sessions.find(session["id"])
    state.sessions.add_audio(record, "customer", tone(100))
    state.sessions.add_audio(record, "agent", tone(100))
    await client.post(f"/v1/sessions/{session['id']}/end")
    await client.get(f"/v1/sessions/{session['id']}/recordings")  # waits for the MP3, made off the event loop
    assert await events(session["id"]) == [
        "session.created", "session.started", "session.provider.connected", "session.ended",
        "session.provider.disconnected", "transcript.ready", "recording.ready",
    ]  # fmt: skip


async def test_sessions_without_a_connected_leg_announce_no_provider_events(client, state, events):
    routed_silent = (await client.post("/v1/sessions", json=ROUTED)).json()
    unrouted = (await client.post("/v1/sessions", json={"mode": "bidirectional_translation"})).json()
    state.sessions.add_audio(state.sessions.find(unrouted["id"]), "customer", tone(100))
    for session in (routed_silent, unrouted):
        await client.post(f"/v1/sessions/{session['id']}/end")
        assert not [e for e in await events(session["id"]) if e.startswith("session.provider.")]


async def test_dial_is_idempotent(client):
    session = (await client.post("/v1/sessions", json=ROUTED)).json()
    path = f"/v1/sessions/{session['id']}/dial"
    first = await client.post(path, headers={"Idempotency-Key": "dial-1"})
    replay = await client.post(path, headers={"Idempotency-Key": "dial-1"})
    assert (replay.status_code, replay.content) == (202, first.content)
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.headers["x-api-credits-used"] == "1"  # dialing costs nothing


async def test_dial_needs_the_owner_and_the_write_scope(client, app, make_app, make_client, make_key):
    session = (await client.post("/v1/sessions", json=ROUTED)).json()
    expect_error(
        await make_client(app, make_key()).post(f"/v1/sessions/{session['id']}/dial"), 404, "session_not_found"
    )
    limited = make_app(keys=[{"key": "sk_test_readonly0001", "organization": "acme", "scopes": ["sessions:read"]}])
    response = await make_client(limited, "sk_test_readonly0001").post("/v1/sessions/sess_x/dial")
    expect_error(response, 403, "insufficient_permissions")
