"""`/_mockglot/events` read with a plain HTTP client against a real server: order, filters, resume, auth."""

from __future__ import annotations

import asyncio
import secrets
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import msgspec
import pytest

from mockglot.settings import Settings
from mockglot.state.feed import SUBSCRIBER_QUEUE_EVENTS, Feed, Filter, RelayedEvent
from mockglot.testing.client import Client, tone
from mockglot.testing.server import ServerThread
from tests.checks import expect_error

TOKEN = "control-token-for-event-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def server():
    with ServerThread(Settings(port=0, output_pace="instant", control_token=TOKEN)) as running:
        yield running


def new_key() -> str:
    return f"sk_test_{secrets.token_hex(12)}"


class Events:
    """An open SSE response, read message by message."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.lines = response.aiter_lines()
        self.raw: list[str] = []

    async def next(self, timeout: float = 10) -> dict[str, Any]:
        """The next message (comments skipped): {"event", "id", "data"}."""
        message: dict[str, Any] = {}
        while True:
            line = await asyncio.wait_for(anext(self.lines), timeout)
            self.raw.append(line)
            if not line:
                if "data" in message:
                    return message
                message = {}
                continue
            if line.startswith(":"):
                continue
            field, _, value = line.partition(": ")
            message[field] = msgspec.json.decode(value) if field == "data" else value

    async def until(self, wanted: Callable[[dict[str, Any]], bool], timeout: float = 10) -> list[dict[str, Any]]:
        """Messages up to and including the first that is `wanted`."""
        seen = []
        while True:
            seen.append(await self.next(timeout))
            if wanted(seen[-1]):
                return seen


async def follow(http: httpx.AsyncClient, stack: list[Any], **params: Any) -> Events:
    headers = {**AUTH, **params.pop("headers", {})}
    context = http.stream("GET", "/_mockglot/events", params=params, headers=headers, timeout=20)
    response = await context.__aenter__()
    stack.append(context)
    assert response.status_code == 200, await response.aread()
    assert response.headers["content-type"].startswith("text/event-stream")
    return Events(response)


@pytest.fixture
async def http(server) -> AsyncIterator[tuple[httpx.AsyncClient, list[Any]]]:
    stack: list[Any] = []
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        yield client, stack
        for context in reversed(stack):
            await context.__aexit__(None, None, None)


def ended(session_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda m: m["event"] == "session.disconnected" and m["data"]["session_id"] == session_id


async def a_call(server: ServerThread, key: str) -> str:
    """Create a session, stream a ping and a second of tone, end it; the session ID."""
    async with Client(server.base_url, key) as client:
        session = await client.create_session()
        stream = await client.open_stream(session)
        await stream.until("session.ready")
        await stream.send_json({"type": "ping"})
        await stream.until("pong")
        await stream.send_audio("customer", tone(200))
        await stream.end()
        return session["id"]


async def test_a_call_arrives_in_order_with_keys_redacted(server, http):
    client, stack = http
    key = new_key()
    events = await follow(client, stack, api_key=key)
    session_id = await a_call(server, key)
    messages = await events.until(ended(session_id))
    ids = [int(m["id"]) for m in messages]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(m["data"]["id"] == int(m["id"]) and m["data"]["type"] == m["event"] for m in messages)

    def label(m: dict[str, Any]) -> str:
        data = m["data"]["data"]
        if m["event"] == "frame":
            return f"{data['direction']} {data['frame_type']}"
        if m["event"] == "request":
            return f"{data['method']} {data['path']} {data['status']}"
        return m["event"]

    labels = [label(m) for m in messages]
    expected = [
        "session.created",
        "POST /v1/sessions 201",
        "session.connected",
        "out session.ready",
        "in ping",
        "out pong",
        "in audio.input",
        "session.started",
        "in session.end",
        "session.ended",
        "out session.ended",
        "session.disconnected",
    ]
    positions = [labels.index(label) for label in expected]
    assert positions == sorted(positions), labels
    assert {m["data"]["session_id"] for m in messages} == {session_id}
    ping = next(m for m in messages if label(m) == "in ping")
    assert ping["data"]["data"]["frame"] == {"type": "ping"}
    raw = "\n".join(events.raw)
    assert key not in raw
    assert f"{key[:8]}…{key[-4:]}" in raw


async def test_filters_by_key_organization_session_and_type(server, http):
    client, stack = http
    one, two = new_key(), new_key()
    organization_two = server.call(lambda: server.state.keys.ensure(two).organization)
    by_key = await follow(client, stack, api_key=one)
    by_organization = await follow(client, stack, organization=organization_two)
    by_type = await follow(client, stack, api_key=one, types="session.,request")
    first = await a_call(server, one)
    second = await a_call(server, two)
    by_session = await follow(client, stack, session_id=first, last_event_id=0)

    one_messages = await by_key.until(ended(first))
    assert {m["data"]["session_id"] for m in one_messages} == {first}
    two_messages = await by_organization.until(ended(second))
    assert {m["data"]["organization"] for m in two_messages} == {organization_two}
    assert {m["data"]["session_id"] for m in two_messages} == {second}
    typed = await by_type.until(ended(first))
    assert {m["event"] for m in typed} <= {
        "session.created",
        "session.started",
        "session.ended",
        "session.connected",
        "session.disconnected",
        "request",
    }
    assert "frame" in {m["event"] for m in one_messages}
    replayed = await by_session.until(ended(first))
    assert [m["id"] for m in replayed] == [m["id"] for m in one_messages]
    redacted = await follow(client, stack, api_key=f"{two[:8]}…{two[-4:]}", last_event_id=0)
    assert {m["data"]["session_id"] for m in await redacted.until(ended(second))} == {second}


async def test_resume_after_a_dropped_connection_misses_nothing_and_repeats_nothing(server, http):
    client, stack = http
    key = new_key()
    events = await follow(client, stack, api_key=key)
    first = await a_call(server, key)
    before = await events.until(ended(first))
    await stack.pop().__aexit__(None, None, None)  # the connection drops
    second = await a_call(server, key)  # happens while nobody listens
    resumed = await follow(client, stack, api_key=key, headers={"Last-Event-ID": before[-1]["id"]})
    after = await resumed.until(ended(second))
    assert {m["data"]["session_id"] for m in after} == {second}
    assert int(after[0]["id"]) > int(before[-1]["id"])
    assert after[0]["event"] == "session.created"


async def test_resume_from_beyond_the_backlog_is_told_to_resync(server, http):
    client, stack = http
    key = new_key()
    server.call(server.state.feed.publish, "reset", None, None, None, {})
    oldest = server.call(lambda: server.state.feed.backlog[0].id)
    if oldest <= 1:  # a young server still holds everything: push the oldest event out
        server.call(lambda: [server.state.feed.publish("reset", None, None, None, {}) for _ in range(2100)])
    events = await follow(client, stack, api_key=key, last_event_id=0)
    resync = await events.next()
    assert resync["event"] == "resync" and resync["data"]["reason"] == "backlog"


async def test_a_slow_consumer_loses_the_oldest_and_is_told(server):
    feed = Feed(lambda: 0.0)
    subscription, _ = feed.subscribe(Filter())
    for _ in range(SUBSCRIBER_QUEUE_EVENTS + 10):
        feed.publish("reset", None, None, None, {})  # never waits for the reader
    events, dropped = subscription.take()
    assert dropped == 10
    assert [e.id for e in events] == list(range(11, SUBSCRIBER_QUEUE_EVENTS + 11))
    assert subscription.take() == ([], 0)


async def test_faults_requests_and_webhook_attempts_are_events(server, http):
    client, stack = http
    key = new_key()
    events = await follow(client, stack, api_key=key)
    fault = await client.post(
        "/_mockglot/faults/rest", headers=AUTH, json={"path": "/v1/sessions", "status": 503, "api_key": key, "times": 1}
    )
    assert fault.status_code == 201
    async with httpx.AsyncClient(base_url=server.base_url, headers={"Authorization": f"Bearer {key}"}) as api:
        assert (await api.post("/v1/sessions", json={"mode": "bidirectional_translation"})).status_code == 503
    messages = await events.until(lambda m: m["event"] == "request")
    fired = next(m for m in messages if m["event"] == "fault.fired")["data"]["data"]
    assert fired["fault_id"] == fault.json()["id"] and fired["fired"] == 1
    assert key not in str(fired)  # the rule's key, redacted
    assert messages[-1]["data"]["data"]["status"] == 503

    organization = server.call(lambda: server.state.keys.ensure(key).organization)
    hooks = await follow(client, stack, organization=organization, types="webhook.attempt")
    endpoint = await client.post(
        "/_mockglot/webhooks", headers=AUTH, json={"url": "http://127.0.0.1:9/nowhere", "api_key": key}
    )
    assert endpoint.status_code == 201
    async with Client(server.base_url, key) as api:
        session = await api.create_session()
    attempt = (await hooks.next())["data"]
    assert attempt["session_id"] == session["id"]
    assert attempt["data"]["event_type"] == "session.created" and attempt["data"]["error"]
    await client.delete(f"/_mockglot/webhooks/{endpoint.json()['id']}", headers=AUTH)


async def test_needs_the_control_token_and_checks_its_parameters(server, http):
    client, _ = http
    expect_error(await client.get("/_mockglot/events"), 401, "invalid_api_key")
    wrong = {"Authorization": "Bearer nope"}
    expect_error(await client.get("/_mockglot/events", headers=wrong), 401, "invalid_api_key")
    bad = await client.get("/_mockglot/events", headers={**AUTH, "Last-Event-ID": "yesterday"})
    expect_error(bad, 422, "invalid_field_value", "last_event_id")
    superscript = await client.get("/_mockglot/events", headers=AUTH, params={"last_event_id": "²"})  # isdigit(): yes
    expect_error(superscript, 422, "invalid_field_value", "last_event_id")
    long = await client.get("/_mockglot/events", headers=AUTH, params={"session_id": "x" * 500})
    expect_error(long, 422, "invalid_field_value", "session_id")
    expect_error(await client.post("/_mockglot/events", headers=AUTH), 405, "method_not_allowed")


async def test_documented_in_the_control_plane_openapi(server, http):
    client, _ = http
    document = (await client.get("/_mockglot/openapi.json", headers=AUTH)).json()
    operation = document["paths"]["/_mockglot/events"]["get"]
    assert "text/event-stream" in operation["responses"]["200"]["content"]
    assert "Last-Event-ID" in operation["description"] and "2048" in operation["description"]
    assert {p["name"] for p in operation["parameters"]} >= {"session_id", "organization", "api_key", "types"}


def test_nobody_listening_costs_a_bounded_backlog():
    feed = Feed(lambda: 0.0)
    for _ in range(5000):
        feed.publish("reset", None, None, None, {})
    assert isinstance(feed.backlog, deque) and len(feed.backlog) == feed.backlog.maxlen


def test_a_long_frame_is_kept_cut_and_shown_as_cut():
    from mockglot.state.feed import FEED_FRAME_CHARS, Frame, encode

    feed = Feed(lambda: 0.0)
    text = '{"type": "ping", "pad": "' + "x" * (2 * FEED_FRAME_CHARS) + '"}'
    feed.publish("frame", "sess_1", "org_1", None, Frame(0, "in", "ping", text[:FEED_FRAME_CHARS], len(text)))
    message = encode(feed.backlog[0])
    assert len(message) < FEED_FRAME_CHARS + 1000
    data = msgspec.json.decode(message.split(b"data: ", 1)[1])["data"]
    assert data["truncated"] is True and isinstance(data["frame"], str)


async def test_a_frame_with_line_breaks_stays_one_event(server, http):
    client, stack = http
    key = new_key()
    events = await follow(client, stack, api_key=key, types="frame")
    async with Client(server.base_url, key) as api:
        session = await api.create_session()
        stream = await api.open_stream(session)
        await stream.until("session.ready")
        await stream.ws.send('{"type":\n"ping"\r\n}')
        await stream.until("pong")
        await stream.ws.send("not json\nat all")
        await stream.until("session.error")
        await stream.end()
    messages = await events.until(lambda m: m["data"]["data"]["frame_type"] == "(invalid)")
    ping = next(m for m in messages if m["data"]["data"]["frame_type"] == "ping")
    assert ping["data"]["data"]["frame"] == {"type": "ping"}
    assert messages[-1]["data"]["data"]["frame"] == "not json\nat all"


def test_an_event_another_worker_tells_twice_is_kept_once() -> None:
    """A worker that starts watching is sent the others' backlogs, which may hold events it already has."""
    feed = Feed(lambda: 0.0)
    feed.publish("session.created", "sess_1", "org_1", None, {"id": "sess_1"})
    relayed = RelayedEvent.of(feed.backlog[0])
    other = Feed(lambda: 0.0)
    other.publish("session.created", "sess_2", "org_1", None, {"id": "sess_2"})
    for _ in range(2):
        other.receive(relayed, "worker-a")
    assert [(event.session_id, event.origin) for event in other.backlog] == [("sess_2", None), ("sess_1", "worker-a")]
    assert [event.session_id for event in other.own()] == ["sess_2"]
