"""Webhooks (kallglot-api.md §8): signed deliveries of every lifecycle event to a real local HTTP receiver,
retried on the server clock, from the real app under uvicorn; plus sign/verify and the registry as units."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import math
import re
import secrets
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from mockglot import wire
from mockglot.cli import build_parser
from mockglot.settings import Settings, from_env
from mockglot.state.clock import Clock
from mockglot.state.randomness import Randomness
from mockglot.state.server import ServerState
from mockglot.testing.client import Client
from mockglot.testing.webhooks import WebhookReceiver
from mockglot.webhooks import WebhookSignatureError, sign, verify
from mockglot.webhooks.dispatcher import MAX_CONCURRENT_ATTEMPTS, Dispatcher
from mockglot.webhooks.state import MAX_ATTEMPTS, RETRY_DELAYS_SECONDS, RETRY_JITTER
from tests.audio import utterance
from tests.ports import free_port

ULID = r"[0-9A-HJKMNP-TV-Z]{26}"
SECRET = "whsec_test_secret_0123456789"
ENVELOPE_KEYS = ["id", "type", "api_version", "created_at", "data"]


# --- fixtures and helpers ------------------------------------------------------------------------------


@pytest.fixture
async def ctl(live) -> AsyncIterator[httpx.AsyncClient]:
    """The control plane; after each test: the clock, the dispatcher's timeout and all state back to normal."""
    async with httpx.AsyncClient(base_url=live.base_url) as client:
        yield client
        live.call(setattr, live.app.state.webhooks, "attempt_timeout", 30.0)
        await client.post("/_mockglot/clock", json={"reset": True})
        await client.post("/_mockglot/reset", json={})


@pytest.fixture
def key() -> str:
    return f"sk_test_{secrets.token_hex(10)}"


@pytest.fixture
async def api(live, key) -> AsyncIterator[Client]:
    async with Client(live.base_url, key) as client:
        yield client


async def register(ctl: httpx.AsyncClient, url: str, **body: Any) -> dict[str, Any]:
    response = await ctl.post("/_mockglot/webhooks", json={"url": url, **body})
    assert response.status_code == 201, response.text
    return response.json()


async def advance(ctl: httpx.AsyncClient, seconds: float) -> None:
    response = await ctl.post("/_mockglot/clock", json={"advance": seconds})
    assert response.status_code == 200, response.text


async def set_clock(ctl: httpx.AsyncClient, iso: str, seconds_after: float = 0) -> None:
    """Set the server clock to a moment relative to a timestamp it reported: unlike `advance`, wall time that
    passes while a loaded machine runs the test cannot add up with the jump."""
    response = await ctl.post("/_mockglot/clock", json={"set": parse_iso(iso).timestamp() + seconds_after})
    assert response.status_code == 200, response.text


async def delivery(ctl: httpx.AsyncClient, delivery_id: str) -> dict[str, Any]:
    response = await ctl.get(f"/_mockglot/webhooks/deliveries/{delivery_id}")
    assert response.status_code == 200, response.text
    return response.json()


async def deliveries(ctl: httpx.AsyncClient, **filters: str) -> list[dict[str, Any]]:
    response = await ctl.get("/_mockglot/webhooks/deliveries", params=filters)
    assert response.status_code == 200, response.text
    return response.json()["data"]


async def eventually(read: Callable[[], Any], done: Callable[[Any], bool], timeout: float = 10) -> Any:
    """Poll `read()` until `done(value)`: deliveries happen in the background."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await read()
        if done(value):
            return value
        assert loop.time() < deadline, f"condition not met within {timeout} s: {value}"
        await asyncio.sleep(0.02)


def settled(count: int) -> Callable[[dict[str, Any]], bool]:
    """A delivery with `count` attempts, the last one finished."""
    return lambda d: len(d["attempts"]) == count and d["attempts"][-1]["latency_ms"] is not None


def parse_iso(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def signature_time(header: str) -> int:
    return int(re.match(r"t=(\d+),", header)[1])  # type: ignore[index]


# --- a session's events, end to end ------------------------------------------------------------------------


async def test_every_event_of_a_session_arrives_in_order_signed_with_the_rest_data(ctl, api, key, webhook_receiver):
    endpoint = await register(ctl, webhook_receiver.url, api_key=key)
    created = await api.create_session(source_language="de", target_language="en")
    stream = await api.open_stream(created)
    await stream.until("session.ready")
    for speaker in ("customer", "agent"):
        await stream.send_audio(speaker, utterance())
        await stream.until("transcript.final")
    await stream.end()

    requests = await webhook_receiver.wait_async(6)
    events = [r.json() for r in requests]
    assert [e["type"] for e in events] == [
        "session.created", "session.started", "transcript.segment", "transcript.segment",
        "session.ended", "transcript.ready",
    ]  # fmt: skip
    for request, event in zip(requests, events, strict=True):
        assert request.method == "POST"
        assert request.header("content-type") == "application/json"
        assert request.header("kallglot-retry-count") == "0"
        assert re.fullmatch("wh_del_" + ULID, request.header("kallglot-webhook-id"))
        signature = request.header("kallglot-signature")
        assert re.fullmatch(r"t=\d+,v1=[0-9a-f]{64}", signature)
        assert request.header("kallglot-original-timestamp") == str(signature_time(signature))
        request.verify(endpoint["secret"])
        with pytest.raises(WebhookSignatureError) as failed:
            verify(request.body.replace(b'"data"', b'"data" '), signature, endpoint["secret"])
        assert failed.value.reason == "mismatch"
        assert list(event) == ENVELOPE_KEYS
        assert re.fullmatch("evt_" + ULID, event["id"])
        assert event["api_version"] == "v1"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", event["created_at"])
    assert len({e["id"] for e in events}) == 6
    assert len({r.header("kallglot-webhook-id") for r in requests}) == 6

    # The data is the resource as REST returns it, at the moment of the event.
    ended = await api.get_session(created["id"])
    transcript = await api.transcript(created["id"])
    data = [e["data"] for e in events]
    assert data[0] == created
    assert data[1] == {**created, "status": "active", "started_at": ended["started_at"]}
    assert [{k: v for k, v in d.items() if k != "session_id"} for d in data[2:4]] == transcript["turns"]
    assert {d["session_id"] for d in data[2:4]} == {created["id"]}
    # (r2) session.ended: the session object plus `duration` (seconds, one decimal), as the docs' example shows
    summary = await api.end_session(created["id"])
    assert data[4] == {**ended, "duration": summary["duration_seconds"]} and "stream" not in ended
    assert data[4]["duration"] > 0 and list(data[4])[-1] == "duration"
    assert data[5] == transcript and transcript["status"] == "completed"

    # The control plane saw the same: six deliveries, each delivered at the first attempt.
    seen = await eventually(
        lambda: deliveries(ctl, session_id=created["id"]), lambda ds: all(d["status"] == "succeeded" for d in ds)
    )
    assert [d["event_id"] for d in seen] == [e["id"] for e in events]
    assert [[a["status_code"] for a in d["attempts"]] for d in seen] == [[200]] * 6
    assert [d["event"] for d in seen] == events


async def test_the_stream_url_in_a_webhook_is_the_one_the_client_reached(ctl, live, key, webhook_receiver):
    """Behind a port mapping or a proxy the server's own --host/--port are not what the client can reach: the
    session's `stream.url` in its events is built from the origin it was created through, as REST's is."""
    await register(ctl, webhook_receiver.url, api_key=key, events=["session.created"])
    headers = {"Authorization": f"Bearer {key}", "Host": "mockglot.example:18080"}
    async with httpx.AsyncClient(base_url=live.base_url, headers=headers) as client:
        created = (
            await client.post(
                "/v1/sessions",
                json={"mode": "bidirectional_translation", "source_language": "de", "target_language": "en"},
            )
        ).json()
    assert created["stream"]["url"].startswith("ws://mockglot.example:18080/v1/sessions/")
    (request,) = await webhook_receiver.wait_async(1)
    assert request.json()["data"] == created


async def test_an_endpoint_gets_only_its_events_and_its_organization(ctl, api, live, key, webhook_receiver):
    await register(ctl, webhook_receiver.url, api_key=key, events=["session.ended"])
    async with Client(live.base_url, f"sk_test_{secrets.token_hex(10)}") as stranger:
        other = await stranger.create_session()
        await stranger.end_session(other["id"])  # another organization: never sent to this endpoint
    mine = await api.create_session()
    await api.end_session(mine["id"])
    first = (await webhook_receiver.wait_async(1))[0].json()
    assert (first["type"], first["data"]["id"]) == ("session.ended", mine["id"])


# --- retries on the server clock ----------------------------------------------------------------------------


async def test_a_failing_receiver_gets_the_same_delivery_again_after_each_retry_delay(
    ctl, api, live, key, webhook_receiver
):
    webhook_receiver.fail(2)
    endpoint = await register(ctl, webhook_receiver.url, api_key=key, events=["session.created"])
    await api.create_session()

    (first,) = await webhook_receiver.wait_async(1)
    delivery_id = first.header("kallglot-webhook-id")
    pending = await eventually(lambda: delivery(ctl, delivery_id), settled(1))
    assert pending["status"] == "pending"
    assert pending["attempts"][0]["status_code"] == 500
    due = parse_iso(pending["next_attempt_at"]) - parse_iso(pending["attempts"][0]["at"])
    assert 0.9 * RETRY_DELAYS_SECONDS[0] - 1 <= due.total_seconds() <= 1.1 * RETRY_DELAYS_SECONDS[0] + 1  # jitter

    await set_clock(ctl, pending["next_attempt_at"], -30)
    assert len((await delivery(ctl, delivery_id))["attempts"]) == 1  # not due yet: nothing was sent
    await set_clock(ctl, pending["next_attempt_at"])
    (*_, second) = await webhook_receiver.wait_async(2)
    second.verify(endpoint["secret"], now=live.state.clock.now())  # signed on the server's (advanced) clock
    retried = await eventually(lambda: delivery(ctl, delivery_id), settled(2))
    await set_clock(ctl, retried["next_attempt_at"])
    requests = await webhook_receiver.wait_async(3)
    requests[2].verify(endpoint["secret"], now=live.state.clock.now())
    with pytest.raises(WebhookSignatureError, match="s ago, beyond the tolerance of 300 s"):  # stale by now
        first.verify(endpoint["secret"], now=live.state.clock.now())

    assert [r.header("kallglot-retry-count") for r in requests] == ["0", "1", "2"]
    assert {r.header("kallglot-webhook-id") for r in requests} == {delivery_id}
    assert {r.json()["id"] for r in requests} == {first.json()["id"]}
    assert {r.body for r in requests} == {first.body}
    assert {r.header("kallglot-original-timestamp") for r in requests} == {first.header("kallglot-original-timestamp")}
    times = [signature_time(r.header("kallglot-signature")) for r in requests]
    # (r2) the delays are between attempts: the third comes ~5 min after the second, not after the first
    assert 0.9 * RETRY_DELAYS_SECONDS[0] - 1 <= times[1] - times[0] <= 1.1 * RETRY_DELAYS_SECONDS[0] + 1
    assert 0.9 * RETRY_DELAYS_SECONDS[1] - 1 <= times[2] - times[1] <= 1.1 * RETRY_DELAYS_SECONDS[1] + 1
    done = await eventually(lambda: delivery(ctl, delivery_id), settled(3))
    assert done["status"] == "succeeded" and done["next_attempt_at"] is None
    assert [a["status_code"] for a in done["attempts"]] == [500, 500, 200]
    assert [a["retry_count"] for a in done["attempts"]] == [0, 1, 2]


async def test_a_dead_receiver_fails_after_the_eighth_attempt(ctl, api, key):
    await register(ctl, f"http://127.0.0.1:{free_port()}/hooks", api_key=key, events=["session.created"])
    session = await api.create_session()
    (pending,) = await eventually(lambda: deliveries(ctl, session_id=session["id"]), lambda ds: settled(1)(ds[0]))
    state = pending
    for attempts in range(2, MAX_ATTEMPTS + 1):
        await set_clock(ctl, state["next_attempt_at"], -1)
        assert len((await delivery(ctl, pending["id"]))["attempts"]) == attempts - 1  # not a second early
        await set_clock(ctl, state["next_attempt_at"])
        state = await eventually(lambda: delivery(ctl, pending["id"]), settled(attempts))
    assert MAX_ATTEMPTS == 8
    assert state["status"] == "failed" and state["next_attempt_at"] is None
    attempts = state["attempts"]
    assert [a["retry_count"] for a in attempts] == list(range(8))
    assert all(a["status_code"] is None and "ConnectError" in a["error"] for a in attempts)
    # (r2) each documented delay lies between one attempt and the next, ±10% jitter (whole seconds shown)
    times = [parse_iso(a["at"]) for a in attempts]
    gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(times)]
    for gap, delay in zip(gaps, RETRY_DELAYS_SECONDS, strict=True):
        assert 0.9 * delay - 1 <= gap <= 1.1 * delay + 1, (gap, delay)
    assert any(abs(gap - delay) > 1 for gap, delay in zip(gaps, RETRY_DELAYS_SECONDS, strict=True))  # jittered
    total_hours = sum(gaps) / 3600
    assert 0.9 * 41.6 <= total_hours <= 1.1 * 41.6  # about 41.5 h in all, not 24 h

    await advance(ctl, 48 * 3600)
    assert len((await delivery(ctl, pending["id"]))["attempts"]) == 8  # failed is final
    assert [d["id"] for d in await deliveries(ctl, status="failed")] == [pending["id"]]


async def test_no_2xx_within_the_timeout_is_a_failed_attempt(ctl, api, live, key, webhook_receiver):
    live.call(setattr, live.app.state.webhooks, "attempt_timeout", 0.2)
    webhook_receiver.hang()
    await register(ctl, webhook_receiver.url, api_key=key, events=["session.created"])
    session = await api.create_session()
    (pending,) = await eventually(lambda: deliveries(ctl, session_id=session["id"]), lambda ds: settled(1)(ds[0]))
    attempt = pending["attempts"][0]
    assert (attempt["status_code"], attempt["error"]) == (None, "no response within 0.2 s")
    assert pending["status"] == "pending" and pending["next_attempt_at"] is not None


# --- a receiver that hangs costs the API nothing ------------------------------------------------------------


async def test_a_hanging_receiver_blocks_neither_the_api_nor_other_endpoints(ctl, api, key, webhook_receiver):
    webhook_receiver.hang()
    stuck = await register(ctl, webhook_receiver.url, api_key=key, events=["session.created"])
    with WebhookReceiver() as healthy:
        await register(ctl, healthy.url, api_key=key, events=["session.created"])
        first = await api.create_session()
        await webhook_receiver.wait_async(1)  # held: the receiver has it and does not answer

        created = [first]
        for _ in range(5):  # the API is served as usual while the delivery hangs
            session = await api.create_session()
            assert (await api.get_session(session["id"]))["status"] == "created"
            assert (await api.end_session(session["id"]))["status"] == "ended"
            created.append(session)
        healthy_events = [r.json() for r in await healthy.wait_async(6)]
        assert [e["data"]["id"] for e in healthy_events] == [s["id"] for s in created]

        held = await deliveries(ctl, endpoint_id=stuck["id"])
        assert held[0]["attempts"][0]["latency_ms"] is None  # in flight
        assert [len(d["attempts"]) for d in held[1:]] == [0] * 5  # queued behind it: one endpoint, in order

        webhook_receiver.release()
        arrived = [r.json()["data"]["id"] for r in await webhook_receiver.wait_async(6)]
        assert arrived == [s["id"] for s in created]


async def test_retries_held_by_a_hanging_receiver_leave_room_for_other_endpoints(ctl, api, key, webhook_receiver):
    """More retries fall due at once (a clock move) than the dispatcher sends at a time: while a hanging receiver
    holds its own, another endpoint's events still arrive."""
    many = MAX_CONCURRENT_ATTEMPTS + 1
    webhook_receiver.fail(many)
    await register(ctl, webhook_receiver.url, api_key=key, events=["session.created"])
    for _ in range(many):
        await api.create_session()
    failed = await eventually(
        lambda: deliveries(ctl, status="pending"), lambda ds: len(ds) == many and all(settled(1)(d) for d in ds)
    )
    webhook_receiver.hang()
    with WebhookReceiver() as healthy:
        await register(ctl, healthy.url, api_key=key, events=["session.created"])
        await set_clock(ctl, max(d["next_attempt_at"] for d in failed))
        await webhook_receiver.wait_async(many + 1)  # some retries are held by the receiver
        session = await api.create_session()
        (arrived,) = await healthy.wait_async(1)
        assert arrived.json()["data"]["id"] == session["id"]
        webhook_receiver.release()


# --- the control plane --------------------------------------------------------------------------------------

GOOD_URL = "http://127.0.0.1:9/hooks"


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({}, "missing_required_field", "url"),
        ({"url": "not a url"}, "invalid_field_value", "url"),
        ({"url": "ftp://example.com/hooks"}, "invalid_field_value", "url"),
        ({"url": "http://"}, "invalid_field_value", "url"),
        ({"url": "http://127.0.0.1:99999/hooks"}, "invalid_field_value", "url"),
        ({"url": "http://127.0.0.1:0/hooks"}, "invalid_field_value", "url"),
        ({"url": "http://receiver host/hooks"}, "invalid_field_value", "url"),
        ({"url": 42}, "invalid_field_value", "url"),
        ({"url": GOOD_URL, "events": ["session.nope"]}, "invalid_field_value", "events[0]"),
        ({"url": GOOD_URL, "events": ["session.created", "bogus"]}, "invalid_field_value", "events[1]"),
        ({"url": GOOD_URL, "events": "session.created"}, "invalid_field_value", "events"),
        ({"url": GOOD_URL, "events": [1]}, "invalid_field_value", "events[0]"),
        ({"url": GOOD_URL, "events": []}, "invalid_field_value", "events"),
        ({"url": GOOD_URL, "secret": 5}, "invalid_field_value", "secret"),
        ({"url": GOOD_URL, "secret": ""}, "invalid_field_value", "secret"),
        ({"url": GOOD_URL, "colour": "red"}, "invalid_field_value", "colour"),
        ({"url": GOOD_URL, "api_key": "nope"}, "invalid_field_value", "api_key"),
        ({"url": GOOD_URL, "api_key": "sk_test_abcdefgh12", "organization": "org"}, "invalid_field_value", "api_key"),
    ],
)
async def test_malformed_registrations_are_422_naming_the_field(ctl, body, code, param):
    response = await ctl.post("/_mockglot/webhooks", json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("validation_error", code, param)


async def test_an_unknown_event_is_rejected_with_the_list_of_known_ones(ctl):
    response = await ctl.post("/_mockglot/webhooks", json={"url": GOOD_URL, "events": ["session.create"]})
    message = response.json()["error"]["message"]
    assert all(name in message for name in wire.WEBHOOK_EVENTS)


async def test_the_secret_is_returned_once_and_endpoints_can_be_listed_and_deleted(ctl):
    generated = await register(ctl, GOOD_URL)
    assert re.fullmatch(r"whsec_[0-9a-f]{48}", generated["secret"])
    assert re.fullmatch("wh_ep_" + ULID, generated["id"])
    given_secret = await register(ctl, GOOD_URL + "/2", secret=SECRET, events=["transcript.ready", "session.ended"])
    assert given_secret["secret"] == SECRET
    assert given_secret["events"] == ["session.ended", "transcript.ready"]  # in the contract's order

    listed = (await ctl.get("/_mockglot/webhooks")).json()["data"]
    assert [e["id"] for e in listed] == [generated["id"], given_secret["id"]]
    assert all("secret" not in e for e in listed)
    assert listed[0] == {k: v for k, v in generated.items() if k != "secret"}

    assert (await ctl.delete(f"/_mockglot/webhooks/{generated['id']}")).json() == {
        "id": generated["id"], "deleted": True,
    }  # fmt: skip
    assert [e["id"] for e in (await ctl.get("/_mockglot/webhooks")).json()["data"]] == [given_secret["id"]]
    again = await ctl.delete(f"/_mockglot/webhooks/{generated['id']}")
    assert again.status_code == 404 and again.json()["error"]["param"] == "endpoint_id"


async def test_redeliver_sends_the_same_event_as_a_new_delivery(ctl, api, key, webhook_receiver):
    endpoint = await register(ctl, webhook_receiver.url, api_key=key, events=["session.created"])
    await api.create_session()
    (first,) = await webhook_receiver.wait_async(1)
    original_id = first.header("kallglot-webhook-id")
    await eventually(lambda: delivery(ctl, original_id), settled(1))

    response = await ctl.post(f"/_mockglot/webhooks/deliveries/{original_id}/redeliver")
    assert response.status_code == 202, response.text
    copy = response.json()
    assert copy["id"] != original_id and copy["redelivery_of"] == original_id
    assert copy["event_id"] == first.json()["id"]
    _, second = await webhook_receiver.wait_async(2)
    assert second.body == first.body
    assert second.header("kallglot-webhook-id") == copy["id"]
    assert second.header("kallglot-retry-count") == "0"
    second.verify(endpoint["secret"])
    assert (await eventually(lambda: delivery(ctl, copy["id"]), settled(1)))["status"] == "succeeded"

    missing = await ctl.post("/_mockglot/webhooks/deliveries/wh_del_nope/redeliver")
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "delivery_id"


async def test_deliveries_filter_by_endpoint_event_type_status_and_session(ctl, api, key, webhook_receiver):
    everything = await register(ctl, webhook_receiver.url, api_key=key)
    ends = await register(ctl, webhook_receiver.url, api_key=key, events=["session.ended"])
    session = await api.create_session()
    await api.end_session(session["id"])
    await webhook_receiver.wait_async(4)  # created, ended, ready for one endpoint; ended for the other

    assert [d["event_type"] for d in await deliveries(ctl, endpoint_id=everything["id"])] == [
        "session.created", "session.ended", "transcript.ready",
    ]  # fmt: skip
    assert {d["endpoint_id"] for d in await deliveries(ctl, event_type="session.ended")} == {
        everything["id"], ends["id"],
    }  # fmt: skip
    assert len(await deliveries(ctl, session_id=session["id"])) == 4
    assert await deliveries(ctl, session_id="sess_other") == []
    await eventually(lambda: deliveries(ctl, status="succeeded"), lambda ds: len(ds) == 4)
    for name, value in (("status", "done"), ("event_type", "session.nope"), ("limit", "0")):
        response = await ctl.get("/_mockglot/webhooks/deliveries", params={name: value})
        assert response.status_code == 422 and response.json()["error"]["param"] == name


async def test_resetting_an_organization_drops_its_endpoints_and_deliveries(ctl, api, key, webhook_receiver):
    scoped = await register(ctl, webhook_receiver.url, api_key=key)
    everyone = await register(ctl, webhook_receiver.url)
    await api.create_session()
    await webhook_receiver.wait_async(2)

    assert (await ctl.post("/_mockglot/reset", json={"api_key": key})).status_code == 200
    assert [e["id"] for e in (await ctl.get("/_mockglot/webhooks")).json()["data"]] == [everyone["id"]]
    assert await deliveries(ctl) == []
    assert scoped["id"] not in {e["id"] for e in (await ctl.get("/_mockglot/webhooks")).json()["data"]}


# --- configuration and determinism, without a server ---------------------------------------------------------


def test_endpoints_come_from_the_environment_and_the_command_line():
    settings = from_env({"MOCKGLOT_WEBHOOKS": "http://127.0.0.1:9/a, http://127.0.0.1:9/b#s3cret"})
    assert settings.webhooks == ["http://127.0.0.1:9/a", "http://127.0.0.1:9/b#s3cret"]
    args = build_parser().parse_args(["serve", "--webhook", "http://h/x#k", "--webhook", "https://h/y"])
    assert args.webhooks == ["http://h/x#k", "https://h/y"]

    state = ServerState(Settings(webhooks=settings.webhooks))
    first, second = state.webhooks.endpoints.values()
    assert (first.url, second.url, second.secret) == ("http://127.0.0.1:9/a", "http://127.0.0.1:9/b", "s3cret")
    assert first.secret.startswith("whsec_") and {first.source, second.source} == {"settings"}
    state.webhooks.register("http://127.0.0.1:9/c", None, None, None)
    state.reset()  # a full reset forgets the control plane's endpoints, never the configured ones
    assert list(state.webhooks.endpoints.values()) == [first, second]

    with pytest.raises(ValueError, match="invalid webhook 'ftp://h/x'"):
        ServerState(Settings(webhooks=["ftp://h/x#k"]))


def run_seeded(state: ServerState) -> list[object]:
    """Register, create and end a session: everything random that webhooks produce."""
    endpoint = state.webhooks.register("http://127.0.0.1:9/hooks", None, None, None)
    record = state.sessions.create(("org_a", "test"), "sk_test_abcdefgh12", wire.SessionCreate(mode="ai_agent"), None)
    state.sessions.end(record, "api_end")
    found = state.webhooks.deliveries()
    return [endpoint.id, endpoint.secret, *((d.id, d.event_id, d.body) for d in found)]


def dispatching(state: ServerState) -> Dispatcher:
    """The dispatcher `create_app` builds around the state: it records deliveries at once, sends once started."""
    return Dispatcher(state.settings, state.clock, state.events, state.webhooks, state.feed)


def seeded(seed: int) -> ServerState:
    state = ServerState(Settings(seed=seed), clock=Clock(lambda: T))  # the bodies carry timestamps: fix the clock
    dispatching(state)
    return state


def test_a_seeded_server_gives_the_same_ids_secrets_and_bodies():
    one = seeded(7)
    first = run_seeded(one)
    assert len(first) == 2 + 3  # created, ended, transcript.ready: recorded even before the server starts
    assert first == run_seeded(seeded(7))
    one.reset()
    assert run_seeded(one) == first
    assert run_seeded(seeded(8))[:2] != first[:2]


@pytest.mark.parametrize("seed", [5, 6])
async def test_the_retry_jitter_comes_from_the_seeded_randomness(seed):
    """(r2) ±10% jitter on each delay, drawn from the server's one seedable source: a seeded server's retries
    are due at the same offsets run after run."""
    state = ServerState(Settings(seed=seed))
    webhooks = dispatching(state)
    expected = Randomness(seed).random("webhook-retry")  # the first draw of the retry stream
    state.webhooks.register(f"http://127.0.0.1:{free_port()}/hooks", ["session.created"], SECRET, None)
    webhooks.start()
    try:
        state.sessions.create(("org_a", "test"), "sk_test_abcdefgh12", wire.SessionCreate(mode="ai_agent"), None)
        (pending,) = state.webhooks.deliveries()

        async def read() -> object:
            return pending.next_attempt_at

        due = await eventually(read, lambda value: value is not None)
        at = pending.attempts[0].at
        assert due == math.ceil(at + RETRY_DELAYS_SECONDS[0] * (1 + (2 * expected - 1) * RETRY_JITTER))
        assert 0.9 * RETRY_DELAYS_SECONDS[0] <= due - at <= 1.1 * RETRY_DELAYS_SECONDS[0] + 1
    finally:
        await webhooks.stop()


async def test_deliveries_recorded_before_start_and_retries_across_a_restart_are_sent(webhook_receiver):
    state = ServerState(Settings())
    webhooks = dispatching(state)
    webhook_receiver.fail(1)
    state.webhooks.register(webhook_receiver.url, ["session.created"], SECRET, None)
    request = wire.SessionCreate(mode="bidirectional_translation")
    state.sessions.create(("org_a", "test"), "sk_test_abcdefgh12", request, None)  # no loop yet: only recorded
    (pending,) = state.webhooks.deliveries()
    assert pending.attempts == []
    webhooks.start()
    try:
        await webhook_receiver.wait_async(1)

        async def read() -> object:
            return pending.next_attempt_at

        await eventually(read, lambda due: due is not None)
        await webhooks.stop()  # a retry is scheduled: it must survive the restart
        webhooks.start()
        state.clock.advance(RETRY_DELAYS_SECONDS[0])
        _, retried = await webhook_receiver.wait_async(2)
        assert retried.header("kallglot-retry-count") == "1"
        retried.verify(SECRET, now=state.clock.now())
    finally:
        await webhooks.stop()


# --- sign and verify ----------------------------------------------------------------------------------------

BODY = b'{"id":"evt_1","type":"session.created"}'
T = 1_767_225_600


def test_sign_is_hmac_sha256_of_timestamp_dot_body_in_lowercase_hex():
    expected = hmac.new(SECRET.encode(), f"{T}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign(BODY, SECRET, T) == f"t={T},v1={expected}"
    assert verify(BODY, sign(BODY, SECRET, T), SECRET, now=T) is None
    assert verify(BODY.decode(), sign(BODY, SECRET, T).encode(), SECRET, now=T) is None  # text forms too


@pytest.mark.parametrize(
    ("body", "secret"), [(BODY + b" ", SECRET), (BODY.replace(b"1", b"2"), SECRET), (BODY, SECRET + "x")]
)
def test_a_tampered_body_or_another_secret_is_a_mismatch(body, secret):
    with pytest.raises(WebhookSignatureError) as failed:
        verify(body, sign(BODY, SECRET, T), secret, now=T)
    assert failed.value.reason == "mismatch"


@pytest.mark.parametrize(("now", "ok"), [(T + 300, True), (T - 300, True), (T + 301, False), (T - 301, False)])
def test_the_timestamp_must_be_within_the_tolerance_either_way(now, ok):
    header = sign(BODY, SECRET, T)
    if ok:
        verify(BODY, header, SECRET, now=now)
    else:
        with pytest.raises(WebhookSignatureError) as failed:
            verify(BODY, header, SECRET, now=now)
        assert failed.value.reason == "timestamp"
    verify(BODY, header, SECRET, tolerance=None, now=now + 10**6)  # None: no age check
    verify(BODY, header, SECRET, tolerance=10**9)  # default now: the wall clock


def test_a_stale_timestamp_is_checked_after_the_signature():
    with pytest.raises(WebhookSignatureError) as failed:
        verify(BODY, sign(BODY, "another", T), SECRET, now=T + 10**6)
    assert failed.value.reason == "mismatch"  # a forger learns nothing about the clock


def test_any_of_several_v1_signatures_may_match_and_other_schemes_are_ignored():
    right = sign(BODY, SECRET, T).split(",")[1]
    wrong = sign(BODY, "old-secret", T).split(",")[1]
    for header in (
        f"t={T},{wrong},{right}",
        f"{right}, t={T} ,{wrong}",
        f"t={T},v0=abc,{right},scheme=x",
        f"t={T},{right},",
    ):
        verify(BODY, header, SECRET, now=T)


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "missing"),
        ("", "missing"),
        (b"", "missing"),
        ("garbage", "malformed"),
        (f"t=abc,v1={'0' * 64}", "malformed"),
        (f"v1={'0' * 64}", "malformed"),
        (f"t={T},t={T},v1={'0' * 64}", "malformed"),
        (f"t={T}", "malformed"),
        (f"t={T},v1", "malformed"),
        (f"t=-{T},v1={'0' * 64}", "malformed"),
        (f"t={'9' * 40},v1={'0' * 64}", "malformed"),
        (f"t=١٢٣,v1={'0' * 64}", "malformed"),
        (f"t={T},v1=XYZ", "mismatch"),
        (f"t={T},v1={'0' * 64}", "mismatch"),
        (f"t={T},v1=é{'0' * 63}", "mismatch"),
        (12345, "malformed"),
        (b"\xff\xfe", "malformed"),
    ],
)
def test_malformed_headers_are_a_signature_error_never_anything_else(header, reason):
    with pytest.raises(WebhookSignatureError) as failed:
        verify(BODY, header, SECRET, now=T)
    assert failed.value.reason == reason
    assert isinstance(failed.value, ValueError) and str(failed.value)


def test_uppercase_hex_is_not_the_documented_form():
    header = sign(BODY, SECRET, T)
    with pytest.raises(WebhookSignatureError):
        verify(BODY, header[: header.index("v1=") + 3] + header[header.index("v1=") + 3 :].upper(), SECRET, now=T)


FRAGMENTS = st.sampled_from(["t=", "v1=", ",", "=", " ", str(T), "0" * 64, "v0=", "\x00", "é", "t"])


@hypothesis_settings(max_examples=300, deadline=None)
@given(header=st.one_of(st.text(), st.lists(st.one_of(FRAGMENTS, st.text(max_size=5))).map("".join)), body=st.binary())
def test_any_header_and_body_verify_or_raise_the_documented_error(header, body):
    try:
        verify(body, header, SECRET, now=T)
    except WebhookSignatureError as exc:
        assert exc.reason in ("missing", "malformed", "mismatch", "timestamp")
